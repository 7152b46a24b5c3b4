"""The health vocabulary shared by the prober, the answering side and the API.

A :class:`HealthView` is an immutable snapshot: which members the checks
consider down, and the runtime overrides. :meth:`HealthView.state_of` is the
one answer to "what is this member's state, and why"; answering
(``is_up``), ``gslb explain``, ``/v1/status`` and the status page all ask it,
so they cannot disagree.

Precedence (docs/health.md): ``status: up|down`` fixed in the zone file, then
a runtime override (drain and down take a member out, up keeps it in), then
the checks. A member the checks have no word on is up (fail-open).

This module sits below ``serving``: the prober process imports it without
loading the answering side.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, NamedTuple

from gslb.cluster.votes import Tally
from gslb.dns import names
from gslb.zones.model import Member, Zone

MemberKey = tuple[str, str, str]  # (zone origin text, pool name, member address)

# persisted / reported per-target state: {target ident: {"up": bool, "since": unix time}}
TargetStates = dict[str, dict[str, float | bool]]


def member_key(zone: Zone | bytes, pool: str, member: Member) -> MemberKey:
    origin = zone.origin if isinstance(zone, Zone) else zone
    return (names.to_text(origin), pool, member.ident)


def alias_key(zone: Zone | bytes, pool: str, member: Member, address: str) -> MemberKey:
    """One address an alias member's name resolves to: probed, voted on and taken out of
    the answers on its own (``lb.example.net. 192.0.2.7``)."""
    origin = zone.origin if isinstance(zone, Zone) else zone
    return (names.to_text(origin), pool, f"{member.ident} {address}")


def check_key(zone: Zone | bytes, pool: str, member: Member, check: str) -> MemberKey:
    """One child check of a calculated check, for one member: probed, voted on and kept
    down or up on its own (``192.0.2.10 check:web``); the member is up while enough of
    its children are (``HealthView.combined_up``)."""
    origin = zone.origin if isinstance(zone, Zone) else zone
    return (names.to_text(origin), pool, f"{member.ident} check:{check}")


class Resolved(NamedTuple):
    """An alias name's addresses as the answers use them (gslb.server.aliases keeps them
    fresh): serve them while ``gone`` is False; ``stale`` ones (past their TTL, refreshes
    failing, within the stale limit) are answered with EDE 3, Stale Answer."""

    v4: tuple[str, ...] = ()
    v6: tuple[str, ...] = ()
    stale: bool = False
    gone: bool = True  # nothing to serve: not resolved yet, no such name, or stale too long
    why: str = "not resolved yet"  # for explain and the status API

    def of(self, family: int) -> tuple[str, ...]:
        return self.v4 if family == 4 else self.v6


NOT_RESOLVED = Resolved()


@dataclass(frozen=True, slots=True)
class MemberState:
    """A member's state as the answers use it, and the reason."""

    state: Literal["up", "down", "drained"]
    why: str  # "health check", "status: down in the zone file", "override: drain", ...

    @property
    def in_rotation(self) -> bool:
        return self.state == "up"

    def __str__(self) -> str:
        return f"{self.state} ({self.why})"


_FIXED_UP = MemberState("up", "status: up in the zone file")
_FIXED_DOWN = MemberState("down", "status: down in the zone file")
_FORCED = {
    "up": MemberState("up", "override: up, whatever the checks say"),
    "down": MemberState("down", "override: down"),
    "drain": MemberState("drained", "override: drain"),
}
_CHECK_DOWN = MemberState("down", "health check")
_CHECK_UP = MemberState("up", "health check")


@dataclass(frozen=True, slots=True)
class HealthView:
    """Which members the health checks consider down, and the runtime overrides.

    Members absent from ``down`` are up: unknown means up (fail-open), which is
    also the state before the first probe round when nothing was persisted.
    """

    down: frozenset[MemberKey] = frozenset()
    version: int = 0
    # runtime overrides (admin API): member -> "up" | "down" | "drain"
    forced: Mapping[MemberKey, str] = field(default_factory=dict)
    # cluster mode: the nodes' votes behind ``down`` (gslb.cluster), and a note when this
    # node decides from its own observations only (the store is out of reach too long)
    votes: Mapping[MemberKey, Tally] = field(default_factory=dict)
    alone: str = ""

    def state_of(self, key: MemberKey, member: Member) -> MemberState:
        """The member's state and why: the one place the precedence is written."""
        if member.status == "up":
            return _FIXED_UP
        if member.status == "down":
            return _FIXED_DOWN
        f = self.forced.get(key)
        if f is not None:
            return _FORCED[f]
        t = self.votes.get(key)
        if t is not None:
            return MemberState("down" if key in self.down else "up", f"cluster vote, {t}")
        if self.alone and key in self.down:
            return MemberState("down", f"health check ({self.alone})")
        return _CHECK_DOWN if key in self.down else _CHECK_UP

    def is_up(self, key: MemberKey, member: Member) -> bool:
        if member.status != "obey":
            return member.status == "up"
        f = self.forced.get(key)
        if f is not None:
            return f == "up"
        return key not in self.down

    def combined_up(self, key: MemberKey, member: Member, children: tuple[MemberKey, ...], need: int) -> bool:
        """A member of a pool with a calculated check: its fixed status and overrides
        first, as for any member, then ``need`` of its child checks' keys up."""
        if member.status != "obey":
            return member.status == "up"
        f = self.forced.get(key)
        if f is not None:
            return f == "up"
        return sum(c not in self.down for c in children) >= need

    def with_forced(self, forced: Mapping[MemberKey, str]) -> HealthView:
        return HealthView(self.down, self.version, forced, self.votes, self.alone)


ALL_UP = HealthView()


def changed_members(old: HealthView, new: HealthView) -> set[MemberKey]:
    """Members whose health or override differs between two views."""
    changed = set(old.down ^ new.down)
    for k in old.forced.keys() | new.forced.keys():
        if old.forced.get(k) != new.forced.get(k):
            changed.add(k)
    return changed


def down_from_states(
    targets: Iterable[tuple[str, Iterable[MemberKey]]], states: Mapping[str, Mapping[str, float | bool]]
) -> frozenset[MemberKey]:
    """The members that ``states`` (persisted or last reported per target ident) say are down.

    ``targets`` pairs each target's ident with the members it decides.
    """
    down: set[MemberKey] = set()
    for ident, keys in targets:
        saved = states.get(ident)
        if saved is not None and not saved["up"]:
            down.update(keys)
    return frozenset(down)
