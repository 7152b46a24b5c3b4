"""``select: least_loaded``: the members reporting the lowest load answer.

Members report their load through their health check (``load: {header: X-Load}``
or ``load: {json: stats.load}`` on an http/https check): each passing probe
records the number. The ``count`` (default 1) up members with the lowest fresh
reading answer; a reading older than 3 check intervals plus the timeout has
expired. Members without a fresh reading rank after all that have one, in
zone order, so the policy degrades to ``first`` when nobody reports.
Ties keep zone order. Readings reach the DNS process at most every 0.25 s.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TypeVar

from gslb.answer.policies import Candidates, FirstPool, PickContext

T = TypeVar("T")


class LeastLoaded(FirstPool):
    name = "least_loaded"
    default_count: int | None = 1
    doc = "the up members with the lowest reported load"
    uses_loads = True

    def pick(
        self, cands: Candidates[T], count: int | None, rng: random.Random, ctx: PickContext
    ) -> Sequence[T]:
        loads = ctx.loads
        order = sorted(
            range(len(cands.items)),
            key=lambda i: (loads[i] if i < len(loads) and loads[i] is not None else math.inf, i),
        )
        k = len(order) if count is None else min(count, len(order))
        return tuple(cands.items[i] for i in order[:k])


POLICY: LeastLoaded = LeastLoaded()
