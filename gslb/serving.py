"""Compiled, swappable serving state.

A :class:`CompiledZone` is built once per zone load: a lowercased name index,
the set of existing names (empty non-terminals included), delegation points,
and the SOA records. :class:`ServingState` joins the compiled zones with a
:class:`HealthView` and precomputes, per balanced name and address family, the
outcome of every rule for that health state (which pool answers, which members
are candidates, or the ``when_all_down`` action). Queries only read it; a
reload or a health transition builds a new state and swaps one reference.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass, field
from typing import Literal

from gslb import names
from gslb.model import FAMILY_OF_TYPE, Balanced, Member, Pool, RRset, Zone
from gslb.policies import REGISTRY, Candidates, Policy
from gslb.wire import RRw, member_fragment

MemberKey = tuple[str, str, str]  # (zone origin text, pool name, member address)


def member_key(zone: Zone | bytes, pool: str, member: Member) -> MemberKey:
    origin = zone.origin if isinstance(zone, Zone) else zone
    return (names.to_text(origin), pool, str(member.address))


@dataclass(frozen=True, slots=True)
class HealthView:
    """Which members the health checks (or runtime overrides) consider down.

    Members absent from ``down`` are up: unknown means up (fail-open), which
    is also the state before the first probe round. YAML ``status: up|down``
    always wins over this view.
    """

    down: frozenset[MemberKey] = frozenset()
    version: int = 0

    def is_up(self, key: MemberKey, member: Member) -> bool:
        if member.status == "up":
            return True
        if member.status == "down":
            return False
        return key not in self.down


ALL_UP = HealthView()


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one rule answers for one address family in the current health state."""

    kind: Literal["answer", "serve_all", "nodata", "servfail", "refuse"]
    cands: Candidates[bytes] | None = None  # member_fragment() items
    pool: str = ""
    skipped: tuple[str, ...] = ()  # pools passed over (below min_healthy / no member of the family)


@dataclass(frozen=True, slots=True)
class BalancedPlan:
    record: Balanced
    policy: Policy
    count: int | None
    # rule index -> {qtype: Outcome}
    outcomes: tuple[dict[int, Outcome], ...]
    # (family, network int, prefix len, rule index) for rules with subnets
    subnets: tuple[tuple[int, int, int, int], ...]
    catch_all: int  # index of the catch-all rule


@dataclass(frozen=True, slots=True)
class Static:
    """A precompiled answer for (qname, qtype): spliced after the question."""

    aa: bool
    rcode: int
    body: bytes
    counts: tuple[int, int, int]
    small_body: bytes  # without optional additional data, for tight UDP limits
    small_counts: tuple[int, int, int]
    additional_required: bool


@dataclass(frozen=True, slots=True)
class Node:
    rrsets: dict[int, RRset]
    balanced: Balanced | None = None


@dataclass(frozen=True, slots=True)
class CompiledZone:
    zone: Zone
    origin: bytes
    serial: int
    nodes: dict[bytes, Node]
    existing: frozenset[bytes]  # every name with data plus empty non-terminals
    cuts: frozenset[bytes]  # delegation points (names with NS, below the apex)
    soa_rr: RRw
    neg_soa_rr: RRw
    pools: dict[str, Pool]
    hinfo_ttl: int = field(default=3600)
    # the negative-answer SOA after its owner name: type, class, TTL, rdata
    neg_tail: bytes = b""


def soa_rdata(zone: Zone, serial: int) -> bytes:
    s = zone.soa
    return s.mname + s.rname + struct.pack("!IIIII", serial, s.refresh, s.retry, s.expire, s.minimum)


def compile_zone(zone: Zone, serial: int) -> CompiledZone:
    rrsets = list(zone.rrsets)
    ns_rdata = tuple(zone.nameservers)
    rrsets.append(
        RRset(zone.origin, 2, zone.ns_ttl, ns_rdata, tuple(names.to_text(n) for n in ns_rdata), ns_rdata)
    )
    soa_rd = soa_rdata(zone, serial)
    rrsets.append(RRset(zone.origin, 6, zone.soa.ttl, (soa_rd,), ("SOA",)))
    nodes: dict[bytes, Node] = {}
    for rr in rrsets:
        node = nodes.setdefault(rr.name, Node({}))
        node.rrsets[rr.rtype] = rr
    for b in zone.balanced:
        static = nodes.get(b.name)
        nodes[b.name] = Node(static.rrsets if static else {}, b)
    existing: set[bytes] = set()
    for name in nodes:
        existing.add(name)
        existing.update(names.ancestors(name, zone.origin))
    existing.add(zone.origin)
    cuts = frozenset(n for n, node in nodes.items() if 2 in node.rrsets and n != zone.origin)
    return CompiledZone(
        zone=zone,
        origin=zone.origin,
        serial=serial,
        nodes=nodes,
        existing=frozenset(existing),
        cuts=cuts,
        soa_rr=(zone.origin, 6, zone.soa.ttl, soa_rd),
        neg_soa_rr=(zone.origin, 6, min(zone.soa.ttl, zone.soa.minimum), soa_rd),
        pools={p.name: p for p in zone.pools},
        hinfo_ttl=zone.ttl,
        neg_tail=struct.pack("!HHIH", 6, 1, min(zone.soa.ttl, zone.soa.minimum), len(soa_rd)) + soa_rd,
    )


# ------------------------------------------------------------------ balanced plans


def plan_balanced(cz: CompiledZone, rec: Balanced, health: HealthView) -> BalancedPlan:
    policy = REGISTRY[rec.select]
    outcomes: list[dict[int, Outcome]] = []
    for rule in rec.rules:
        per_type: dict[int, Outcome] = {}
        for qtype in rec.types:
            per_type[qtype] = _rule_outcome(cz, rec, rule.pools, qtype, health)
        outcomes.append(per_type)
    subnets = tuple(
        (net.version, int(net.network_address), net.prefixlen, i)
        for i, rule in enumerate(rec.rules)
        for net in rule.subnets
    )
    catch_all = next(i for i, r in enumerate(rec.rules) if r.catch_all)
    count = rec.count if rec.count is not None else policy.default_count
    return BalancedPlan(rec, policy, count, tuple(outcomes), subnets, catch_all)


def _fragment(m: Member, qtype: int, ttl: int) -> bytes:
    return member_fragment(qtype, ttl, m.address.packed)


def _rule_outcome(
    cz: CompiledZone, rec: Balanced, pool_names: tuple[str, ...], qtype: int, health: HealthView
) -> Outcome:
    fam = FAMILY_OF_TYPE[qtype]
    skipped: list[str] = []
    for pname in pool_names:
        pool = cz.pools[pname]
        up = [m for m in pool.members if health.is_up(member_key(cz.origin, pname, m), m)]
        cands = [(_fragment(m, qtype, rec.ttl), m.weight) for m in up if m.family == fam and m.weight > 0]
        if len(up) >= pool.needed() and cands:
            return Outcome("answer", Candidates.of(cands), pname, tuple(skipped))
        skipped.append(pname)
    if rec.when_all_down != "serve_all":
        return Outcome(rec.when_all_down, None, "", tuple(skipped))
    # fail open: every member of the first pool that has this family
    for pname in pool_names:
        fam_members = [m for m in cz.pools[pname].members if m.family == fam]
        if fam_members:
            cands = [(_fragment(m, qtype, rec.ttl), 1) for m in fam_members]
            return Outcome("serve_all", Candidates.of(cands), pname, tuple(skipped))
    return Outcome("nodata", None, "", tuple(skipped))


def match_rule(plan: BalancedPlan, family: int, addr: int, source: int) -> tuple[int, int]:
    """(rule index, ECS scope) for a client; first matching rule wins.

    The scope is the shortest prefix of the client address for which every
    address in it would pick the same rule: the matched subnet's length, or
    for earlier non-matching subnets one bit past the common prefix. It is
    capped at ``source`` (the client's ECS source prefix).
    """
    bits = 32 if family == 4 else 128
    rule = plan.catch_all
    scope = 0
    for fam, net, plen, idx in plan.subnets:
        if fam != family:
            continue
        if idx > rule:
            break
        shift = bits - plen
        if (addr >> shift) == (net >> shift):
            rule = idx
            scope = max(scope, plen)
            continue
        # disjoint: the client's network must be long enough to exclude `net`
        diff = (addr ^ net) >> shift
        common = plen - diff.bit_length()
        scope = max(scope, common + 1)
    return rule, min(scope, source)


_V4_MAPPED = bytes(10) + b"\xff\xff"


def parse_client(host: str) -> tuple[int, int]:
    """(family, integer address) of a socket peer address string.

    ``inet_pton`` rather than ``ipaddress``: this runs per query for names
    with subnet rules. IPv4-mapped IPv6 peers count as IPv4.
    """
    if ":" not in host:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, host), "big")
    packed = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
    if packed[:12] == _V4_MAPPED:
        return 4, int.from_bytes(packed[12:], "big")
    return 6, int.from_bytes(packed, "big")


# --------------------------------------------------------------------- the state


@dataclass(frozen=True, slots=True)
class ServingState:
    zones: dict[bytes, CompiledZone]
    fast: dict[tuple[bytes, int], Static | bytes]  # bytes: name of a balanced record
    plans: dict[bytes, BalancedPlan]
    health: HealthView = ALL_UP
    generation: int = 0

    def find_zone(self, key: bytes) -> CompiledZone | None:
        zones = self.zones
        pos = 0
        while True:
            z = zones.get(key[pos:] if pos else key)
            if z is not None:
                return z
            if key[pos] == 0:
                return None
            pos += 1 + key[pos]

    def with_health(self, health: HealthView) -> ServingState:
        plans = {name: plan_balanced(self.zone_of(name), p.record, health) for name, p in self.plans.items()}
        return ServingState(self.zones, self.fast, plans, health, self.generation)

    def zone_of(self, name: bytes) -> CompiledZone:
        z = self.find_zone(name)
        assert z is not None
        return z
