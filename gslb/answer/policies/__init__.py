"""Member-selection policies (``answer: {select: NAME}``), one module each.

A policy is a pure function of precomputed candidates, a count and an injected
RNG: no clock, no sockets, no global state. ``serving`` prepares the candidates
(healthy members of the query's address family with weight > 0) once per
health snapshot, so a pick costs one call. Adding a policy means adding a
module and one line in ``REGISTRY``; the engine and the zone loader do not
change: a policy declares its own ``answer:`` keys (``params``), which the
loader reads and checks with positions, and what it needs to run
(``uses_client``, ``uses_location``: the latter needs a City database).
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Generic, NamedTuple, Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Candidates(Generic[T]):
    """Eligible members (as opaque items) with their weights, in zone order."""

    items: tuple[T, ...]
    weights: tuple[int, ...]
    cum_weights: tuple[int, ...]
    keys: tuple[bytes, ...]  # stable identities (member addresses), for hashing

    @classmethod
    def of(cls, pairs: Sequence[tuple[T, int]], keys: Sequence[bytes] | None = None) -> Candidates[T]:
        items = tuple(i for i, _ in pairs)
        weights = tuple(w for _, w in pairs)
        if any(w <= 0 for w in weights):
            raise ValueError("candidates need positive weights")
        ks = tuple(keys) if keys is not None else tuple(repr(i).encode() for i in items)
        if len(ks) != len(items):
            raise ValueError("one key per candidate")
        return cls(items, weights, tuple(accumulate(weights)), ks)


class PickContext(NamedTuple):
    """What a policy may know about the client (filled in only when it asks)."""

    family: int = 4
    addr: int = 0
    hash_prefix: int = 24  # for select: hashed, this family's prefix from the record
    lat: float | None = None
    lon: float | None = None
    loads: tuple[float | None, ...] = ()  # for select: least_loaded, aligned with the candidates


NO_CLIENT = PickContext()


# how Variants choose: the one answer; replies[bisect(cum_weights, rng.random() * total)]
# (random.choices with cum_weights); replies[rng.randrange(len(replies))]
ONE, CHOICE, ROTATE = 0, 1, 2


class Variants(NamedTuple, Generic[T]):
    """A pick as a short list of outcomes and the draw between them (Policy.variants)."""

    kind: int  # ONE, CHOICE or ROTATE
    answers: tuple[tuple[T, ...], ...]
    cum_weights: tuple[int, ...] = ()  # CHOICE: aligned with answers


def one(items: Sequence[T]) -> Variants[T]:
    return Variants(ONE, (tuple(items),))


class Param(NamedTuple):
    """An ``answer:`` key of one policy: a mapping of whole numbers, each in a range."""

    key: str  # e.g. "hash_prefix"
    fields: tuple[tuple[str, int, int, int], ...]  # (name, lowest, highest, default)
    doc: str


ParamValues = Mapping[str, int]  # "key.field" -> value, defaults filled in


class Policy(Protocol):
    name: str
    default_count: int | None  # None: every candidate
    doc: str
    uses_client: bool  # the pick depends on the client's address (ECS scope: hash prefix)
    uses_location: bool  # the pick depends on the client's coordinates (ECS scope: GeoIP network)
    uses_loads: bool  # the pick reads the members' reported loads
    uses_rtts: bool  # the plan orders the candidates by measured round trip (fastest first)
    # with uses_rtts: by the round trips measured from each cluster node (vantage); the
    # rule's outcome holds one choice per vantage, located there, and choose_pool takes
    # the one nearest the client
    uses_vantages: bool
    params: tuple[Param, ...]  # the answer: keys it takes besides select and count

    def client_prefixes(self, values: ParamValues) -> tuple[int, int]:
        """IPv4 and IPv6 prefix lengths by which the pick groups clients (PickContext.hash_prefix)."""
        ...

    def choose_pool(self, locations: Sequence[tuple[float, float] | None], ctx: PickContext) -> int:
        """Which of the rule's pools that are up answers (index; rule order is the default)."""
        ...

    def pick(
        self, cands: Candidates[T], count: int | None, rng: random.Random, ctx: PickContext
    ) -> Sequence[T]: ...

    def variants(self, cands: Candidates[T], count: int | None) -> Variants[T] | None:
        """Every answer ``pick`` can give for these candidates, and the one draw that
        chooses among them, or None when that is not a short list (several weighted
        draws, a client's hash, loads). The engine keeps a name's replies per routing
        decision this way (answer.cache.memo_hit) and draws exactly as ``pick`` would, from
        the same RNG: the same answers, one draw, no policy call."""
        ...


class FirstPool:
    """Mixin: the first pool of the rule that is up answers."""

    uses_client = False
    uses_location = False
    uses_loads = False
    uses_rtts = False
    uses_vantages = False
    params: tuple[Param, ...] = ()

    def client_prefixes(self, values: ParamValues) -> tuple[int, int]:
        return 24, 56

    def choose_pool(self, locations: Sequence[tuple[float, float] | None], ctx: PickContext) -> int:
        return 0

    def variants(self, cands: Candidates[T], count: int | None) -> Variants[T] | None:
        return None


from gslb.answer.policies import all as _all  # noqa: E402
from gslb.answer.policies import closest as _closest  # noqa: E402
from gslb.answer.policies import fastest as _fastest  # noqa: E402
from gslb.answer.policies import first as _first  # noqa: E402
from gslb.answer.policies import hashed as _hashed  # noqa: E402
from gslb.answer.policies import least_loaded as _least_loaded  # noqa: E402
from gslb.answer.policies import weighted as _weighted  # noqa: E402

REGISTRY: dict[str, Policy] = {
    p.name: p
    for p in (
        _weighted.POLICY,
        _all.POLICY,
        _first.POLICY,
        _hashed.POLICY,
        _closest.POLICY,
        _least_loaded.POLICY,
        _fastest.POLICY,
        _fastest.NEAREST_NODE,
    )
}
