"""``select: closest``: the pool nearest to the client answers.

Among the rule's pools that are up, the one whose ``location`` has the
shortest great-circle distance to the client's GeoIP coordinates answers
(pools without a location come last); within it, ``count`` (default 1)
members are drawn by weight as in ``weighted``. A client whose address has no
coordinates in the database gets the rule's first pool that is up. Needs a
City database (``--geoip-db``); the ECS scope is the database network's prefix.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import TypeVar

from gslb.answer.policies import Candidates, Param, ParamValues, PickContext, Variants
from gslb.answer.policies.weighted import POLICY as WEIGHTED

T = TypeVar("T")
EARTH_KM = 6371.0088


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Haversine distance in kilometres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_KM * math.asin(min(1.0, math.sqrt(a)))


class Closest:
    name = "closest"
    default_count: int | None = 1
    doc = "the up pool nearest to the client's GeoIP coordinates"
    uses_client = False
    uses_location = True
    uses_loads = False
    uses_rtts = False
    uses_vantages = False
    params: tuple[Param, ...] = ()

    def client_prefixes(self, values: ParamValues) -> tuple[int, int]:
        return 24, 56  # unused: the pick does not look at the client's address

    def choose_pool(self, locations: Sequence[tuple[float, float] | None], ctx: PickContext) -> int:
        if ctx.lat is None or ctx.lon is None:
            return 0
        best, best_d = 0, math.inf
        for i, loc in enumerate(locations):
            if loc is None:
                continue
            d = great_circle_km(ctx.lat, ctx.lon, loc[0], loc[1])
            if d < best_d:
                best, best_d = i, d
        return best

    def pick(
        self, cands: Candidates[T], count: int | None, rng: random.Random, ctx: PickContext
    ) -> Sequence[T]:
        return WEIGHTED.pick(cands, count, rng, ctx)

    def variants(self, cands: Candidates[T], count: int | None) -> Variants[T] | None:
        return WEIGHTED.variants(cands, count)


POLICY: Closest = Closest()
