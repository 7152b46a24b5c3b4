"""``select: fastest``: the up members with the lowest measured round trip.

The prober keeps a smoothed round trip (an exponentially weighted average of its
passing probes) per member; the server orders each pool's members by it, keeping the
current fastest first until another one is faster by more than the hysteresis
(``hysteresis.ms`` and ``hysteresis.percent`` of the current one's round trip, both), so
two members about as fast do not take turns (gslb.server.runtime). The plan's
candidates come in that order, and the pick is the first ``count`` of them, as
``first`` picks in zone order: members without a measurement (no check, or not probed
yet) come last, in zone order.

``select: fastest_from_nearest_node`` (cluster mode): the same, by the round trips
measured from the cluster node nearest the client. Every node publishes its smoothed
round trips and its ``--location``; each node orders the members as each node sees
them (each with its own hysteresis), so a rule's outcome holds one choice per node
(vantage), located at that node, and the pick takes the one nearest the client's
GeoIP coordinates, as ``closest`` takes the nearest pool. A client without
coordinates, or a node alone, gets this node's own order (it comes first).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

from gslb.answer.policies import Candidates, FirstPool, Param, PickContext, Variants, one
from gslb.answer.policies.closest import POLICY as CLOSEST

T = TypeVar("T")
_NO_RNG = random.Random(0)


class Fastest(FirstPool):
    name = "fastest"
    default_count: int | None = 1
    doc = "the up members with the lowest smoothed probe round trip, with hysteresis"
    uses_rtts = True
    uses_vantages = False
    params: tuple[Param, ...] = (
        Param(
            "hysteresis",
            (("ms", 0, 60000, 2), ("percent", 0, 100, 10)),
            "the fastest member changes when another is faster by more than both of these",
        ),
    )

    def pick(
        self, cands: Candidates[T], count: int | None, rng: random.Random, ctx: PickContext
    ) -> Sequence[T]:
        return cands.items if count is None else cands.items[:count]

    def variants(self, cands: Candidates[T], count: int | None) -> Variants[T] | None:
        return one(self.pick(cands, count, _NO_RNG, PickContext()))


POLICY: Fastest = Fastest()


class FastestFromNearestNode(Fastest):
    name = "fastest_from_nearest_node"
    doc = "the up members with the lowest round trip as measured from the cluster node nearest the client"
    uses_location = True
    uses_vantages = True

    def choose_pool(self, locations: Sequence[tuple[float, float] | None], ctx: PickContext) -> int:
        return CLOSEST.choose_pool(locations, ctx)


NEAREST_NODE: FastestFromNearestNode = FastestFromNearestNode()
