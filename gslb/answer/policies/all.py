"""``select: all``: every healthy member, order rotated per query.

The rotation start is drawn from the injected RNG, so successive answers
spread clients that take the first address (round robin in effect, without
shared counters between workers). ``count`` caps how many are returned
(default: all).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

from gslb.answer.policies import ROTATE, Candidates, FirstPool, PickContext, Variants, one

T = TypeVar("T")


class All(FirstPool):
    name = "all"
    default_count: int | None = None
    doc = "every healthy member, rotated per query"

    def pick(
        self, cands: Candidates[T], count: int | None, rng: random.Random, ctx: PickContext
    ) -> Sequence[T]:
        items = cands.items
        n = len(items)
        if n == 1:
            return items
        start = rng.randrange(n)
        rotated = items[start:] + items[:start]
        return rotated if count is None or count >= n else rotated[:count]

    def variants(self, cands: Candidates[T], count: int | None) -> Variants[T] | None:
        items = cands.items
        n = len(items)
        if n == 1:
            return one(items)
        k = n if count is None else min(count, n)
        return Variants(ROTATE, tuple((items[s:] + items[:s])[:k] for s in range(n)))


POLICY: All = All()
