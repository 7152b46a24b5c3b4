"""Member-selection policies (``answer: {select: NAME}``), one module each.

A policy is a pure function of precomputed candidates, a count and an injected
RNG: no clock, no sockets, no global state. ``serving`` prepares the candidates
(healthy members of the query's address family with weight > 0) once per
health snapshot, so a pick costs one call. Adding a policy means adding a
module and one line in ``REGISTRY``; the engine does not change.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Generic, Protocol, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Candidates(Generic[T]):
    """Eligible members (as opaque items) with their weights, in zone order."""

    items: tuple[T, ...]
    weights: tuple[int, ...]
    cum_weights: tuple[int, ...]

    @classmethod
    def of(cls, pairs: Sequence[tuple[T, int]]) -> Candidates[T]:
        items = tuple(i for i, _ in pairs)
        weights = tuple(w for _, w in pairs)
        if any(w <= 0 for w in weights):
            raise ValueError("candidates need positive weights")
        return cls(items, weights, tuple(accumulate(weights)))


class Policy(Protocol):
    name: str
    default_count: int | None  # None: every candidate
    doc: str

    def pick(self, cands: Candidates[T], count: int | None, rng: random.Random) -> Sequence[T]: ...


from gslb.policies import all as _all  # noqa: E402
from gslb.policies import weighted as _weighted  # noqa: E402

REGISTRY: dict[str, Policy] = {p.name: p for p in (_weighted.POLICY, _all.POLICY)}
