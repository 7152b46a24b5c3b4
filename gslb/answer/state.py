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

import dataclasses
import ipaddress
import struct
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from gslb.answer.geo.lookup import UNKNOWN, GeoInfo, GeoLookup
from gslb.answer.policies import REGISTRY, Candidates, Policy
from gslb.dns import names
from gslb.dns.consts import FAMILY_OF_TYPE, T_A, T_AAAA, T_CNAME
from gslb.dns.wire import Query, RRw, member_fragment
from gslb.health.view import (
    ALL_UP,
    NOT_RESOLVED,
    HealthView,
    MemberKey,
    Resolved,
    alias_key,
    changed_members,
    check_key,
    member_key,
)
from gslb.zones.model import Balanced, GeoMatch, Member, Pool, RRset, Zone


@dataclass(frozen=True, slots=True)
class PoolChoice:
    """A pool that is up for one address family, with its candidate members."""

    name: str
    cands: Candidates[bytes]  # member_fragment() items, keyed by member address
    location: tuple[float, float] | None = None
    member_keys: tuple[MemberKey, ...] = ()  # aligned with cands.items (for load readings)
    # slow start: each candidate's share of its weight now (aligned with cands.items; empty
    # when none ramps): in the weights already, and dividing least_loaded's load readings
    shares: tuple[float, ...] = ()
    # select: fastest_from_nearest_node: the cluster node whose round trips ordered this
    # choice (its location is ``location``)
    via: str = ""


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one rule answers for one address family in the current health state."""

    kind: Literal["answer", "serve_all", "nodata", "servfail", "refuse"]
    pools: tuple[PoolChoice, ...] = ()  # "answer": the rule's up pools in order; "serve_all": one
    skipped: tuple[tuple[str, str], ...] = ()  # (pool, why) for pools passed over
    # pools whose candidates include an alias's stale addresses: their answers carry EDE 3
    # (Stale Answer) and are not kept in the reply cache
    stale: frozenset[str] = frozenset()

    @property
    def pool(self) -> str:
        return self.pools[0].name if self.pools else ""


@dataclass(frozen=True, slots=True)
class RuleMatch:
    """A rule's criteria, compiled: any one matching makes the rule match."""

    subnets: tuple[tuple[int, int, int], ...]  # (family, network as int, prefix length)
    geos: tuple[GeoMatch, ...]
    asns: frozenset[int]

    @property
    def catch_all(self) -> bool:
        return not (self.subnets or self.geos or self.asns)


@dataclass(frozen=True, slots=True)
class BalancedPlan:
    record: Balanced
    policy: Policy
    count: int | None
    outcomes: tuple[dict[int, Outcome], ...]  # rule index -> {qtype: Outcome}
    matchers: tuple[RuleMatch, ...]
    catch_all: int  # index of the catch-all rule
    client_prefixes: tuple[int, int]  # IPv4, IPv6: how the policy groups clients (PickContext)
    needs_client: bool  # rules or the policy look at the client at all
    needs_geo: bool  # a geo/asn rule or select: closest
    # every member of the pools its rules name: a health change elsewhere leaves the plan as is
    member_keys: frozenset[MemberKey] = frozenset()
    aliases: frozenset[bytes] = frozenset()  # the alias names its members answer with
    # the rules compiled against the GeoIP databases (gslb.answer.geo.tables.Compiled: typed
    # loosely, it sits above this module), shared by plans with the same rules and kept
    # across health changes; None: match_rule decides each query
    decisions: Any = field(default=None, compare=False)
    # results of deterministic choices (closest pool per location, hashed pick per client
    # subnet) for this health snapshot: a new plan starts empty
    memo: dict[tuple[object, ...], object] = field(default_factory=dict, compare=False)


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

NO_ALIASES: Mapping[bytes, Resolved] = {}

# query types a balanced CNAME (types: [CNAME]) answers from the precomputed table and the
# reply cache (others: the general lookup, which answers them the same)
CNAME_QTYPES = (T_A, T_AAAA, T_CNAME, 15, 16, 33, 64, 65, 257)  # and MX TXT SRV SVCB HTTPS CAA


def plan_balanced(
    cz: CompiledZone,
    rec: Balanced,
    health: HealthView,
    decisions: Any = None,
    aliases: Mapping[bytes, Resolved] = NO_ALIASES,
    ramps: Mapping[MemberKey, float] | None = None,
    now: float = 0.0,
    orders: Mapping[tuple[bytes, str], tuple[MemberKey, ...]] | None = None,
    vantages: Vantages = (),
) -> BalancedPlan:
    """The record's outcomes under ``health``; ``ramps``: when members with a slow start
    recovered (their weight's share at ``now`` follows, ``ramp_share``); ``orders``: for
    ``select: fastest``, each pool's members fastest first (gslb.server.runtime), and for
    ``fastest_from_nearest_node`` each vantage's (keys ``pool@node``, ``vantages``)."""
    policy = REGISTRY[rec.select]
    outcomes: list[dict[int, Outcome]] = []
    order = None
    if policy.uses_rtts and orders:
        order = _order_of(rec, orders, "")
    per_vantage = None
    if policy.uses_vantages and vantages:
        per_vantage = [(node, loc, _order_of(rec, orders or {}, "@" + node)) for node, loc in vantages]
    for rule in rec.rules:
        per_type: dict[int, Outcome] = {}
        for qtype in rec.types:
            if per_vantage is not None:
                per_type[qtype] = _vantage_outcome(cz, rec, rule.pools, qtype, health, aliases, ramps, now,
                                                   per_vantage)  # fmt: skip
                continue
            per_type[qtype] = _rule_outcome(cz, rec, rule.pools, qtype, health, aliases, ramps, now, order)
        if rec.cname:  # the one CNAME answers every type: the usual ones are looked up directly
            for qtype in CNAME_QTYPES:
                per_type[qtype] = per_type[T_CNAME]
        outcomes.append(per_type)
    matchers = tuple(
        RuleMatch(
            tuple((n.version, int(n.network_address), n.prefixlen) for n in rule.subnets),
            rule.geos,
            frozenset(rule.asns),
        )
        for rule in rec.rules
    )
    catch_all = next(i for i, r in enumerate(rec.rules) if r.catch_all)
    count = rec.count if rec.count is not None else policy.default_count
    criteria = any(not m.catch_all for m in matchers)
    needs_geo = any(m.geos or m.asns for m in matchers) or policy.uses_location
    needs_client = criteria or policy.uses_client or policy.uses_location
    keys: set[MemberKey] = set()
    alias_names: set[bytes] = set()
    # the rules' pools and the pools they require (their health decides these too)
    todo = [p for rule in rec.rules for p in rule.pools]
    pools_seen: set[str] = set()
    while todo:
        pname = todo.pop()
        if pname in pools_seen:
            continue
        pools_seen.add(pname)
        todo.extend(r.partition("/")[0] for r in cz.pools[pname].requires)
        pool = cz.pools[pname]
        for m in pool.members:
            keys.add(member_key(cz.origin, pname, m))
            keys.update(check_key(cz.origin, pname, m, c) for c in pool.checks)
            if m.alias is not None:
                alias_names.add(m.alias)
                r = aliases.get(m.alias, NOT_RESOLVED)
                keys.update(alias_key(cz.origin, pname, m, a) for a in (*r.v4, *r.v6))
    prefixes = policy.client_prefixes(dict(rec.params))
    return BalancedPlan(
        rec, policy, count, tuple(outcomes), matchers, catch_all, prefixes, needs_client, needs_geo,
        frozenset(keys), frozenset(alias_names), decisions=decisions,
    )  # fmt: skip


def _order_of(
    rec: Balanced, orders: Mapping[tuple[bytes, str], tuple[MemberKey, ...]], suffix: str
) -> dict[str, tuple[MemberKey, ...]]:
    """The record's pools' orders (``suffix``: ``@node`` for a vantage's), and under "*"
    every member of the record fastest first, which ranks the pools."""
    order = {
        p: orders[(rec.name, p + suffix)]
        for rule in rec.rules
        for p in rule.pools
        if (rec.name, p + suffix) in orders
    }
    if (rec.name, "*" + suffix) in orders:
        order["*"] = orders[(rec.name, "*" + suffix)]
    return order


def _vantage_outcome(
    cz: CompiledZone,
    rec: Balanced,
    pool_names: tuple[str, ...],
    qtype: int,
    health: HealthView,
    aliases: Mapping[bytes, Resolved],
    ramps: Mapping[MemberKey, float] | None,
    now: float,
    per_vantage: list[tuple[str, tuple[float, float] | None, dict[str, tuple[MemberKey, ...]]]],
) -> Outcome:
    """``fastest_from_nearest_node``: the rule's choice as each vantage orders it, one per
    vantage and located there (the pick takes the nearest to the client). Health is the
    same for every vantage, so every one answers or none does: the orders differ only."""
    outs = [
        _rule_outcome(cz, rec, pool_names, qtype, health, aliases, ramps, now, o) for _, _, o in per_vantage
    ]
    first = outs[0]
    if first.kind != "answer":
        return first
    pools = tuple(
        dataclasses.replace(o.pools[0], location=loc, via=node)
        for (node, loc, _), o in zip(per_vantage, outs, strict=True)
    )
    stale = frozenset().union(*(o.stale for o in outs))
    return Outcome("answer", pools, first.skipped, stale)


# a candidate: (rdata, weight, its member key) where the member is an address or a target, or
# one address of an alias member (its key: alias_key)
_Cand = tuple[bytes, int, MemberKey]


RAMP_FLOOR = 0.05  # a member's share of its weight when its slow start begins
RAMP_SCALE = 100  # a pool's weights are scaled by this while one of its members ramps


def ramp_share(start: float | None, now: float, seconds: float) -> float:
    """A member's share of its weight ``now``: from RAMP_FLOOR at ``start`` (its recovery)
    up to 1 after ``seconds``, linearly; 1 without slow start or recovery."""
    if start is None or seconds <= 0:
        return 1.0
    return min(1.0, max(RAMP_FLOOR, (now - start) / seconds))


def _choice(
    pool: Pool, cands: list[_Cand], qtype: int, ttl: int, weighted: bool, shares: list[float] | None = None
) -> PoolChoice:
    """The candidates as a pool choice; ``shares`` (slow start, aligned with ``cands``)
    scale the weights, unless no candidate has its full weight (then none ramps: a member
    that recovers while the others are down takes the traffic at once)."""
    ramping = (
        weighted and shares is not None and any(x < 1.0 for x in shares) and any(x >= 1.0 for x in shares)
    )
    if ramping and shares is not None:
        pairs = [
            (member_fragment(qtype, ttl, rd), max(1, round(w * RAMP_SCALE * x)))
            for (rd, w, _), x in zip(cands, shares, strict=True)
        ]
    else:
        pairs = [(member_fragment(qtype, ttl, rd), w if weighted else 1) for rd, w, _ in cands]
    loc = (pool.location.lat, pool.location.lon) if pool.location is not None else None
    keys = tuple(k for _, _, k in cands)
    cs = Candidates.of(pairs, [rd for rd, _, _ in cands])
    return PoolChoice(pool.name, cs, loc, keys, tuple(shares) if ramping and shares is not None else ())


def _candidates(
    cz: CompiledZone,
    pool: Pool,
    fam: int,
    health: HealthView | None,
    aliases: Mapping[bytes, Resolved],
) -> tuple[int, list[_Cand], bool]:
    """(members up, the up candidates of family ``fam`` with weight > 0, whether an alias's
    stale addresses are among them); ``health`` None: every member, whatever its state
    (``serve_all``). An alias member is up while its name has addresses (not ``gone``) and
    one of them is up; each of its addresses of the family is a candidate with its weight."""
    up = 0
    out: list[_Cand] = []
    seen: set[bytes] = set()
    stale = False
    for m in pool.members:
        key = member_key(cz.origin, pool.name, m)
        if health is not None:
            if pool.checks:  # calculated: enough of its child checks up
                children = tuple(check_key(cz.origin, pool.name, m, c) for c in pool.checks)
                if not health.combined_up(key, m, children, pool.checks_needed):
                    continue
            elif not health.is_up(key, m):
                continue
        if m.alias is None:
            up += 1
            if m.family == fam and (m.weight > 0 or health is None) and m.rdata not in seen:
                seen.add(m.rdata)
                out.append((m.rdata, m.weight, key))
            continue
        r = aliases.get(m.alias, NOT_RESOLVED)
        if r.gone:
            continue
        live = [
            a
            for a in (*r.v4, *r.v6)
            if health is None or alias_key(cz.origin, pool.name, m, a) not in health.down
        ]
        if not live:
            continue
        up += 1
        for a in r.of(fam) if fam else ():
            packed = ipaddress.ip_address(a).packed
            if a in live and (m.weight > 0 or health is None) and packed not in seen:
                seen.add(packed)
                out.append((packed, m.weight, alias_key(cz.origin, pool.name, m, a)))
                stale = stale or r.stale
    return up, out, stale


def _requirement_down(
    cz: CompiledZone, pool: Pool, health: HealthView, aliases: Mapping[bytes, Resolved], seen: set[str]
) -> str:
    """The first pool (or member: ``db/primary``) that ``pool`` requires, and so on down,
    that is down, or "": a pool is up with ``min_healthy`` members up, a member as it is
    in its pool (the loader refused loops)."""
    for r in pool.requires:
        rp, _, rm = r.partition("/")
        if rp in seen:
            continue
        req = cz.pools[rp]
        if rm:  # one member: up as in its pool (its checks, status, overrides, alias)
            one = tuple(m for m in req.members if rm in (m.name, m.ident))[:1]
            up, _, _ = _candidates(cz, dataclasses.replace(req, members=one), 4, health, aliases)
            if up < 1:
                return f"member {rm} of pool {rp}"
        else:
            up, _, _ = _candidates(cz, req, 4, health, aliases)
            if up < req.needed():
                return f"pool {rp}"
        deeper = _requirement_down(cz, req, health, aliases, seen | {rp})
        if deeper:
            return deeper
    return ""


def _members_by_key(
    cz: CompiledZone, pool: Pool, aliases: Mapping[bytes, Resolved]
) -> dict[MemberKey, Member]:
    out: dict[MemberKey, Member] = {}
    for m in pool.members:
        out[member_key(cz.origin, pool.name, m)] = m
        if m.alias is not None:
            r = aliases.get(m.alias, NOT_RESOLVED)
            for a in (*r.v4, *r.v6):
                out[alias_key(cz.origin, pool.name, m, a)] = m
    return out


def _rule_outcome(
    cz: CompiledZone,
    rec: Balanced,
    pool_names: tuple[str, ...],
    qtype: int,
    health: HealthView,
    aliases: Mapping[bytes, Resolved],
    ramps: Mapping[MemberKey, float] | None = None,
    now: float = 0.0,
    order: Mapping[str, tuple[MemberKey, ...]] | None = None,
) -> Outcome:
    fam = FAMILY_OF_TYPE.get(qtype, 0)  # 0: a CNAME, from target members
    skipped: list[tuple[str, str]] = []
    up_pools: list[PoolChoice] = []
    stale: set[str] = set()
    for pname in pool_names:
        pool = cz.pools[pname]
        up, usable, is_stale = _candidates(cz, pool, fam, health, aliases)  # fam 0: the targets
        if order is not None and pname in order:  # select: fastest, the fastest first
            rank = {k: i for i, k in enumerate(order[pname])}
            usable.sort(key=lambda c: rank.get(c[2], len(rank)))  # stable: the unmeasured in zone order
        by_key = _members_by_key(cz, pool, aliases) if ramps else {}
        missing = _requirement_down(cz, pool, health, aliases, {pname})
        if missing:
            skipped.append((pname, f"it requires {missing}, which is down"))
        elif up < pool.needed():
            skipped.append((pname, f"{up} of {len(pool.members)} members up, min_healthy is {pool.needed()}"))
        elif not usable:
            what = f"IPv{fam}" if fam else "target"
            skipped.append((pname, f"no up {what} member with weight > 0"))
        else:
            shares = (
                [ramp_share(ramps.get(k), now, pool.ramp_of(by_key[k])) for _, _, k in usable]
                if ramps
                else None
            )
            up_pools.append(_choice(pool, usable, qtype, rec.ttl, True, shares))
            if is_stale:
                stale.add(pname)
    if up_pools and order is not None and "*" in order and len(up_pools) > 1:
        # select: fastest chooses between the rule's up pools too: the one whose fastest
        # member is fastest (the record's order keeps its hysteresis), as closest ranks them
        # by distance; the unmeasured keep the rule's order
        everyone = {k: i for i, k in enumerate(order["*"])}
        up_pools.sort(
            key=lambda pc: min(
                (everyone.get(k, len(everyone)) for k in pc.member_keys), default=len(everyone)
            )
        )
    if up_pools:
        return Outcome("answer", tuple(up_pools), tuple(skipped), frozenset(stale))
    if rec.when_all_down != "serve_all":
        return Outcome(rec.when_all_down, (), tuple(skipped))
    # fail open: every member of the first pool that has this family
    for pname in pool_names:
        pool = cz.pools[pname]
        if rec.cname:  # one CNAME: the first pool's first target
            m = pool.members[0]
            cands = [(m.rdata, 1, member_key(cz.origin, pname, m))]
            is_stale = False
        else:
            _, cands, is_stale = _candidates(cz, pool, fam, None, aliases)
        if cands:
            return Outcome(
                "serve_all",
                (_choice(pool, cands, qtype, rec.ttl, False),),
                tuple(skipped),
                frozenset({pname} if is_stale else ()),
            )
    return Outcome("nodata", (), tuple(skipped))


def geo_hit(m: RuleMatch, info: GeoInfo) -> bool:
    if info.asn is not None and info.asn in m.asns:
        return True
    for g in m.geos:
        if (
            (g.continent is None or g.continent == info.continent)
            and (g.country is None or g.country == info.country)
            and (g.subdivision is None or g.subdivision in info.subdivisions)
        ):
            return True
    return False


def match_rule(
    plan: BalancedPlan, family: int, addr: int, source: int, geo: GeoLookup | None
) -> tuple[int, int, GeoInfo | None]:
    """(rule index, ECS scope, GeoIP data if it was looked up) for a client.

    Rules are tried in order; the first whose subnets, geos or asns match wins.
    The scope is the shortest prefix of the client address for which every
    address in it would pick the same rule: a matched subnet's length, one bit
    past the common prefix for subnets that did not match, and the GeoIP
    network's prefix once a geo/asn criterion was consulted. It is capped at
    ``source`` (the client's ECS source prefix).
    """
    bits = 32 if family == 4 else 128
    scope = 0
    info: GeoInfo | None = None
    for idx, m in enumerate(plan.matchers):
        if m.catch_all:
            return idx, min(scope, source), info
        hit = False
        for fam, net, plen in m.subnets:
            if fam != family:
                continue
            shift = bits - plen
            if (addr >> shift) == (net >> shift):
                hit = True
                scope = max(scope, plen)
            else:
                common = plen - ((addr ^ net) >> shift).bit_length()
                scope = max(scope, common + 1)
        if not hit and (m.geos or m.asns):
            if info is None:
                info = geo.lookup(family, addr) if geo is not None else UNKNOWN
            if m.geos:
                scope = max(scope, info.prefix)
            if m.asns:
                scope = max(scope, info.asn_prefix)
            hit = geo_hit(m, info)
        if hit:
            return idx, min(scope, source), info
    return plan.catch_all, min(scope, source), info


# --------------------------------------------------------------------- the state

# what one reply counts under in gslb_queries: (zone origin or b"", qtype, rcode, "udp"/"tcp")
StatsKey = tuple[bytes, int, int, str]


class ClientAddr(NamedTuple):
    """Where a balanced answer's client is: the ECS address, or the socket peer."""

    family: int  # 4 or 6
    addr: int
    source: int  # prefix length known (the ECS source prefix; 32/128 for a peer)
    from_ecs: bool  # the reply echoes an ECS scope only then


class BalancedRef(NamedTuple):
    """A ``ServingState.fast`` value: (qname, qtype) is answered by this balanced record."""

    name: bytes


# A reply cache entry that depends only on the query bytes after the ID: (the reply after
# the ID, its stats key). A plain tuple, told apart by ``type(entry) is tuple``: CPython's
# specialised tuple indexing applies to exact tuples only, and a NamedTuple here cost 4% of
# a cached static answer (callgrind, 193 instructions of 4,482).
# A signed zone's reply (DO=1) carries a third item: the time its signatures are due for
# renewal (the signer's validity step ends), when it stops being served.
FixedReply = tuple[bytes, StatsKey] | tuple[bytes, StatsKey, float]


class BalancedEntry:
    """A reply cache entry for a balanced name: everything about the reply but the pick.

    The parsed query, the header flags and the question of a NOERROR answer, the
    client's ECS address, and the OPT record per ECS scope (filled as scopes occur).
    """

    __slots__ = (
        "ar",
        "ecs_client",
        "ecs_heads",
        "flags",
        "limit",
        "memo",
        "memo_plan",
        "name",
        "opts",
        "origin",
        "q",
        "qtype",
        "question",
        "sign",
        "sign_step",
        "skey",
        "tail",
    )

    def __init__(
        self, q: Query, name: bytes, origin: bytes, skey: StatsKey, flags: int, limit: int,
        ecs_client: ClientAddr | None,
    ) -> None:  # fmt: skip
        self.q, self.name, self.qtype, self.origin, self.skey = q, name, q.qtype, origin, skey
        self.flags, self.limit, self.ecs_client = flags, limit, ecs_client
        self.ar = 0 if q.edns is None else 1
        self.question = q.question
        self.opts: dict[int, bytes] = {}
        # for other clients' ECS queries (engine._balanced_ecs): the OPT record up to the
        # ECS address, per scope
        self.ecs_heads: dict[int, bytes] = {}
        # a signed zone's DO=1 query: (owner, fragments, now) -> the RRSIG RRs and their count
        self.sign: Callable[[bytes, list[bytes], float], tuple[bytes, int]] | None = None
        self.sign_step = 0  # the signer's validity step (s): kept signed replies end with it
        # whole replies (after the ID, before the last ``tail`` octets of the query: its
        # ECS address) per routing decision, for the plan ``memo_plan`` (answer.cache.memo_hit);
        # tail -1: none kept for this entry
        self.tail = -1
        self.memo: dict[int, Memo] = {}
        self.memo_plan: BalancedPlan | None = None


# answer.cache.memo_hit: (Variants kind, the replies, cum_weights, the balanced_counts key),
# and for a signed answer the time its signatures are due for renewal
Memo = (
    tuple[int, tuple[bytes, ...], tuple[int, ...], tuple[bytes, str, str]]
    | tuple[int, tuple[bytes, ...], tuple[int, ...], tuple[bytes, str, str], float]
)


# select: fastest_from_nearest_node: the cluster nodes whose round trips order the members,
# this node first, and each one's location (gslb.server.runtime)
Vantages = tuple[tuple[str, tuple[float, float] | None], ...]


# a reply cache entry: a fixed reply, or what a balanced name's reply needs but the pick
CacheEntry = FixedReply | BalancedEntry


@dataclass(frozen=True, slots=True)
class ServingState:
    zones: dict[bytes, CompiledZone]
    fast: dict[tuple[bytes, int], Static | BalancedRef]
    plans: dict[bytes, BalancedPlan]
    health: HealthView = ALL_UP
    generation: int = 0
    geo: GeoLookup | None = None
    loads: Mapping[MemberKey, float] = field(default_factory=dict)  # fresh reported loads
    # answers per (balanced name, pool, outcome): a counter the runtime owns and keeps across swaps
    balanced_counts: Counter[tuple[bytes, str, str]] | None = None
    # per query bytes after the ID: the fixed reply (static data, negative answers) or the
    # parsed query of a balanced name; kept across health and load changes (a balanced entry
    # is picked again against the current plans), new with every compiled state
    # (and, under ("ecs", the query up to its ECS address), a balanced entry for the same
    # query from any client subnet: engine._balanced_ecs)
    udp_cache: dict[bytes | tuple[str, bytes], CacheEntry] = field(default_factory=dict, compare=False)
    tcp_cache: dict[bytes | tuple[str, bytes], CacheEntry] = field(default_factory=dict, compare=False)
    # zone origin -> its gslb.dnssec.signer.Signer (signed zones only; typed loosely: the
    # signer sits above this module), kept across health and load changes with its cache
    signers: dict[bytes, Any] = field(default_factory=dict, compare=False)
    # alias name -> its current addresses (gslb.server.aliases), kept across reloads
    aliases: Mapping[bytes, Resolved] = field(default_factory=dict, compare=False)
    # slow start: members that recovered, and when; the plans' shares are for ``ramp_now``
    ramps: Mapping[MemberKey, float] = field(default_factory=dict, compare=False)
    ramp_now: float = field(default=0.0, compare=False)
    # select: fastest: (record name, pool) -> its members fastest first (gslb.server.runtime)
    orders: Mapping[tuple[bytes, str], tuple[MemberKey, ...]] = field(default_factory=dict, compare=False)
    rtts: Mapping[MemberKey, float] = field(
        default_factory=dict, compare=False
    )  # the round trips behind them
    vantages: Vantages = field(default=(), compare=False)  # and the nodes whose orders they are

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
        """The same compiled zones under another health view: only the balanced names
        whose pools hold a member that changed are planned again."""
        changed = changed_members(self.health, health)
        al, rp, now, od, va = self.aliases, self.ramps, self.ramp_now, self.orders, self.vantages
        plans = {
            name: plan_balanced(self.zone_of(name), p.record, health, p.decisions, al, rp, now, od, va)
            if p.member_keys & changed
            else p
            for name, p in self.plans.items()
        }
        return dataclasses.replace(self, plans=plans, health=health)

    def with_aliases(self, aliases: Mapping[bytes, Resolved]) -> ServingState:
        """The same compiled zones with alias names resolved anew: the balanced names
        whose members answer with a name that changed are planned again."""
        old = self.aliases
        changed = {n for n in old.keys() | aliases.keys() if old.get(n) != aliases.get(n)}
        if not changed:
            return self
        h, rp, now, od, va = self.health, self.ramps, self.ramp_now, self.orders, self.vantages
        plans = {
            name: plan_balanced(self.zone_of(name), p.record, h, p.decisions, aliases, rp, now, od, va)
            if p.aliases & changed
            else p
            for name, p in self.plans.items()
        }
        return dataclasses.replace(self, plans=plans, aliases=aliases)

    def with_orders(
        self,
        orders: Mapping[tuple[bytes, str], tuple[MemberKey, ...]],
        rtts: Mapping[MemberKey, float] | None = None,
        vantages: Vantages | None = None,
    ) -> ServingState:
        """``select: fastest``: each (record, pool)'s members fastest first (and the round
        trips behind the order, for explain); the records whose order changed are planned
        again. ``vantages`` (``fastest_from_nearest_node``): when the nodes or their
        locations change, those records are planned again without their compiled geo table
        (its classes are by nearest vantage: gslb.answer.build.with_decisions compiles it
        again; until then they decide with a lookup, the same answers)."""
        old = self.orders
        rtts = self.rtts if rtts is None else rtts
        vantages = self.vantages if vantages is None else vantages
        changed = {n for n, p in (old.keys() | orders.keys()) if old.get((n, p)) != orders.get((n, p))}
        moved = vantages != self.vantages
        if not changed and not moved:
            return dataclasses.replace(self, orders=orders, rtts=rtts)
        h, al, rp, now = self.health, self.aliases, self.ramps, self.ramp_now
        plans = {}
        for name, p in self.plans.items():
            anew = moved and p.policy.uses_vantages
            if name in changed or anew:
                decisions = None if anew else p.decisions
                p = plan_balanced(self.zone_of(name), p.record, h, decisions, al, rp, now, orders, vantages)
            plans[name] = p
        return dataclasses.replace(self, plans=plans, orders=orders, rtts=rtts, vantages=vantages)

    def with_ramps(self, ramps: Mapping[MemberKey, float], now: float) -> ServingState:
        """Slow start: members that recovered at ``ramps``' times, their weights' shares at
        ``now``. The names whose members ramp (or just stopped) are planned again."""
        touched = set(ramps) | set(self.ramps)
        if not touched:
            return self
        h, al, od, va = self.health, self.aliases, self.orders, self.vantages
        plans = {
            name: plan_balanced(self.zone_of(name), p.record, h, p.decisions, al, ramps, now, od, va)
            if not p.member_keys.isdisjoint(touched)
            else p
            for name, p in self.plans.items()
        }
        return dataclasses.replace(self, plans=plans, ramps=ramps, ramp_now=now)

    def with_loads(self, loads: Mapping[MemberKey, float]) -> ServingState:
        """The same state with new load readings (nothing is recompiled)."""
        return dataclasses.replace(self, loads=loads)

    def with_counts(self, counts: Counter[tuple[bytes, str, str]]) -> ServingState:
        return dataclasses.replace(self, balanced_counts=counts)

    def zone_of(self, name: bytes) -> CompiledZone:
        z = self.find_zone(name)
        assert z is not None
        return z


def dismantle(old: ServingState, new: ServingState) -> None:
    """Free a replaced state's large tables a few entries at a time.

    Dropping the last reference to the state of a large zone frees millions of
    objects in one C call that holds the interpreter lock throughout (about
    100 ms for 100,000 records), and answering would stop meanwhile. Called
    from a thread after the swap: the event loop reads the current state afresh
    for every query and request, so nothing else uses ``old`` any more. Zones
    that ``new`` still serves are left alone.
    """
    if old.fast is new.fast:
        return  # the same compiled zones (a health or load change): nothing was replaced
    keep = {id(cz.zone) for cz in new.zones.values()}
    tables: list[dict[Any, Any]] = [old.udp_cache, old.tcp_cache, old.fast, old.plans]
    for table in tables:
        while table:
            table.popitem()
    for cz in old.zones.values():
        nodes = cz.nodes
        while nodes:
            nodes.popitem()
        if id(cz.zone) not in keep:
            rrsets = list(cz.zone.rrsets)
            object.__setattr__(cz.zone, "rrsets", ())  # frozen, but nothing reads it any more
            while rrsets:
                rrsets.pop()
