"""Counting the nodes' votes on a member: pure functions, no I/O, no clock.

Every node probes every member and publishes what its own rise/fall decided
(an :class:`Obs`). A member is down when the down votes of the live nodes
reach the quorum of its check (or zone):

- ``majority`` (default): more than half of the voting nodes say down;
- ``any``: one down vote is enough;
- ``all``: every voting node says down;
- ``N%``: at least N percent of the voting nodes say down (Route 53's "healthy
  when more than 18% of the checkers say healthy" is ``82%``... strictly: down
  when at least 82% say down).

Nodes that have no observation of a member (it is not in their zones, or they
have not probed it yet) do not vote. A member nobody has voted on is up
(fail-open, as without a cluster). A node alone decides alone under every rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

QUORUMS = ("majority", "any", "all")


def parse_quorum(text: object) -> str:
    """``majority``, ``any``, ``all`` or ``N%`` (1..100); ValueError otherwise."""
    if isinstance(text, str):
        t = text.strip()
        if t in QUORUMS:
            return t
        m = re.fullmatch(r"(\d{1,3}(?:\.\d+)?)\s*%", t)
        if m and 0 < float(m.group(1)) <= 100:
            return f"{float(m.group(1)):g}%"
    raise ValueError(f"expected majority, any, all or a percentage like 60%, got {text!r}")


def needed(quorum: str, voters: int) -> int:
    """How many down votes out of ``voters`` take a member out (at least 1)."""
    if voters <= 0:
        return 1
    if quorum == "any":
        return 1
    if quorum == "all":
        return voters
    if quorum == "majority":
        return voters // 2 + 1
    pct = float(quorum.rstrip("%"))
    return max(1, math.ceil(voters * pct / 100 - 1e-9))


@dataclass(frozen=True, slots=True)
class Obs:
    """One node's word on one member: its rise/fall state and what it last saw."""

    up: bool
    reason: str  # the result that made the state: "HTTP 200", "timeout after 2s", ...
    since: float  # Unix time of the node's last transition (or first knowledge)
    rtt: float | None = None  # seconds the deciding probe took
    load: float | None = None

    def to_json(self) -> dict[str, object]:
        return {"up": self.up, "reason": self.reason, "since": self.since, "rtt": self.rtt, "load": self.load}

    @classmethod
    def from_json(cls, d: dict[str, object]) -> Obs:
        rtt, load, since = d.get("rtt"), d.get("load"), d.get("since")
        return cls(
            bool(d["up"]),
            str(d.get("reason", "")),
            float(since) if isinstance(since, (int, float)) else 0.0,
            float(rtt) if isinstance(rtt, (int, float)) else None,
            float(load) if isinstance(load, (int, float)) else None,
        )


@dataclass(frozen=True, slots=True)
class Tally:
    """The votes on one member and the decision."""

    down: bool
    votes: tuple[tuple[str, Obs], ...]  # (node, its observation), sorted by node
    quorum: str

    @property
    def down_votes(self) -> int:
        return sum(1 for _, o in self.votes if not o.up)

    def __str__(self) -> str:
        """``2 of 3 down (majority): n1 timeout after 2s, n2 HTTP 503; n3 up``."""
        downs = [f"{n} {o.reason}" for n, o in self.votes if not o.up]
        ups = [n for n, o in self.votes if o.up]
        head = f"{len(downs)} of {len(self.votes)} down ({self.quorum})"
        parts = [", ".join(downs)] if downs else []
        if ups:
            parts.append(", ".join(ups) + " up")
        return head + (": " + "; ".join(parts) if parts else "")


def tally(votes: Iterable[tuple[str, Obs]], quorum: str) -> Tally:
    vs = tuple(sorted(votes, key=lambda v: v[0]))
    down = sum(1 for _, o in vs if not o.up)
    return Tally(bool(vs) and down >= needed(quorum, len(vs)), vs, quorum)
