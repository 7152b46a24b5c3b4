"""``select: weighted``: weights decide *which* members are returned.

``count`` members (default 1) are drawn without replacement, each draw with
probability proportional to weight among those not yet drawn. With count 1 a
member of weight 3 is returned three times as often as one of weight 1.
Weight 0 members are never candidates (drained). The answer order is the
order of the draw; clients that pick the first address still follow weights.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

from gslb.answer.policies import CHOICE, Candidates, FirstPool, PickContext, Variants, one

T = TypeVar("T")


class Weighted(FirstPool):
    name = "weighted"
    default_count: int | None = 1
    doc = "weighted random choice of `count` distinct members"

    def pick(
        self, cands: Candidates[T], count: int | None, rng: random.Random, ctx: PickContext
    ) -> Sequence[T]:
        items = cands.items
        n = len(items)
        k = n if count is None else min(count, n)
        if k == 1:
            if n == 1:
                return items
            return (rng.choices(items, cum_weights=cands.cum_weights)[0],)
        if k >= n:
            # every member is returned; the draw still decides the order
            k = n
        # Efraimidis-Spirakis: key u**(1/w), the k largest keys are a weighted
        # sample without replacement.
        keyed = sorted(((rng.random() ** (1.0 / w), i) for i, w in enumerate(cands.weights)), reverse=True)
        return tuple(items[i] for _, i in keyed[:k])

    def variants(self, cands: Candidates[T], count: int | None) -> Variants[T] | None:
        items = cands.items
        n = len(items)
        if n == 1:
            return one(items)
        if count is None or count > 1:
            return None  # a draw per member: n! orders
        return Variants(CHOICE, tuple((i,) for i in items), cands.cum_weights)


POLICY: Weighted = Weighted()
