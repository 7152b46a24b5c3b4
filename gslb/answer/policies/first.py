"""``select: first``: priority order (active/passive).

The first ``count`` (default 1) up members of the answering pool, in the order
the zone lists them, win; the others only answer when those are down. Weight
0 still means drained.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

from gslb.answer.policies import Candidates, FirstPool, PickContext, Variants, one

T = TypeVar("T")
_NO_RNG = random.Random(0)  # first draws nothing


class First(FirstPool):
    name = "first"
    default_count: int | None = 1
    doc = "the first up members in zone order (active/passive)"

    def pick(
        self, cands: Candidates[T], count: int | None, rng: random.Random, ctx: PickContext
    ) -> Sequence[T]:
        return cands.items if count is None else cands.items[:count]

    def variants(self, cands: Candidates[T], count: int | None) -> Variants[T] | None:
        return one(self.pick(cands, count, _NO_RNG, PickContext()))


POLICY: First = First()
