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

Stale votes. After the store comes back (or a peer goes quiet), a peer's votes in
the store may be older than this node's own observations: written before an
outage, by a peer that has not re-published since. Such votes are *stale*
(``gslb.cluster.node`` says which) and count one way only: a stale down vote
still counts as down, a stale up vote waits. The member is down when the
current votes alone reach the quorum, or when all votes (stale included) do.
So a node's own fresh "down" wins over a peer's stale "up" (a member every node
now sees down is never answered again because of votes from before), and a
member the peers last saw down stays out until they say otherwise (the answers
never step backwards).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

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
    # the store's lease the vote was written under (the voter's session): not part of
    # the vote's value, set from the store's metadata when a peer's vote is read
    lease: int = field(default=0, compare=False)

    def to_json(self) -> dict[str, object]:
        return {"up": self.up, "reason": self.reason, "since": self.since, "rtt": self.rtt, "load": self.load}

    @classmethod
    def from_json(cls, d: dict[str, object], lease: int = 0) -> Obs:
        rtt, load, since = d.get("rtt"), d.get("load"), d.get("since")
        return cls(
            bool(d["up"]),
            str(d.get("reason", "")),
            float(since) if isinstance(since, (int, float)) else 0.0,
            float(rtt) if isinstance(rtt, (int, float)) else None,
            float(load) if isinstance(load, (int, float)) else None,
            lease,
        )


@dataclass(frozen=True, slots=True)
class Tally:
    """The votes on one member and the decision."""

    down: bool
    votes: tuple[tuple[str, Obs], ...]  # (node, its observation), sorted by node
    quorum: str
    stale: frozenset[str] = frozenset()  # nodes whose votes are stale (counted as down only)

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
        text = head + (": " + "; ".join(parts) if parts else "")
        if self.stale:
            text += f" [stale, not re-published yet: {', '.join(sorted(self.stale))}]"
        return text


def _reaches(votes: tuple[tuple[str, Obs], ...], quorum: str) -> bool:
    down = sum(1 for _, o in votes if not o.up)
    return bool(votes) and down >= needed(quorum, len(votes))


def tally(votes: Iterable[tuple[str, Obs]], quorum: str, stale: Iterable[str] = ()) -> Tally:
    """The decision on one member. ``stale``: the nodes whose votes are stale (module
    docstring): down when the current votes reach the quorum, or all of them do."""
    vs = tuple(sorted(votes, key=lambda v: v[0]))
    old = frozenset(stale) & {n for n, _ in vs}
    if not old:
        return Tally(_reaches(vs, quorum), vs, quorum)
    current = tuple(v for v in vs if v[0] not in old)
    return Tally(_reaches(current, quorum) or _reaches(vs, quorum), vs, quorum, old)
