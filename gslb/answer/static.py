"""The RFC 1034 4.3.2 lookup in one zone: delegations (referrals with glue), CNAME
chains inside the zone, wildcards and empty non-terminals, NXDOMAIN and NODATA, ANY
(RFC 8482), and balanced names picked on the way (``balanced``)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from gslb.answer.balanced import Pick, balanced_rcode, count_balanced, pick
from gslb.answer.reply import Client
from gslb.answer.state import CompiledZone, ServingState
from gslb.dns import names
from gslb.dns.consts import NOERROR, NXDOMAIN, T_A, T_AAAA, T_ANY, T_CNAME, T_DS, T_HINFO, T_NS
from gslb.dns.wire import Query, RRw

MAX_CHAIN = 8
HINFO_RFC8482 = b"\x07RFC8482\x00"


@dataclass(slots=True)
class Plan:
    """The content of one answer before encoding (RFC 1034 4.3.2 result)."""

    rcode: int = NOERROR
    aa: bool = True
    answer: list[RRw] = field(default_factory=list)
    authority: list[RRw] = field(default_factory=list)
    additional: list[RRw] = field(default_factory=list)
    additional_required: bool = False  # referral glue (RFC 9471)
    dynamic: bool = False  # depends on health or the client: never precompiled
    scope: int = 0  # ECS scope prefix
    pool: str = ""  # the pool that answered a balanced name (for explain/metrics)
    pick: Pick | None = None
    balanced: bytes = b""  # the balanced name that answered
    # every balanced name picked on the way, in order (a balanced CNAME, then its target's)
    picks: list[tuple[bytes, Pick]] = field(default_factory=list)
    stale: bool = False  # an alias's stale addresses answered (EDE 3)


def rrs(owner: bytes, rtype: int, ttl: int, rdatas: tuple[bytes, ...]) -> list[RRw]:
    return [(owner, rtype, ttl, rd) for rd in rdatas]


def _find_cut(zone: CompiledZone, qn: bytes, qtype: int) -> bytes | None:
    """The highest delegation point at or above qn (DS at the cut is the parent's)."""
    if not zone.cuts:
        return None
    found = None
    for anc in names.ancestors(qn, zone.origin):
        if anc in zone.cuts and not (anc == qn and qtype == T_DS):
            found = anc  # keep walking up: the highest cut wins
    return found


def _additional(zone: CompiledZone, targets: list[bytes], seen: set[bytes]) -> list[RRw]:
    out: list[RRw] = []
    for t in targets:
        if t in seen or not names.is_subdomain(t, zone.origin):
            continue
        seen.add(t)
        node = zone.nodes.get(t)
        if node is None:
            continue
        for rtype in (T_A, T_AAAA):
            rr = node.rrsets.get(rtype)
            if rr is not None:
                out += rrs(t, rtype, rr.ttl, rr.rdatas)
    return out


def resolve(
    state: ServingState,
    zone: CompiledZone,
    qname: bytes,
    qtype: int,
    q: Query | None,
    client: Client | None,
    rng: random.Random,
    count: bool = True,
) -> Plan:
    """RFC 1034 4.3.2 for one zone, following in-zone CNAMEs. ``count``: a balanced
    answer counts in the metrics (not for explain)."""
    plan = Plan()
    qn = qname
    seen = {qn}
    for _ in range(MAX_CHAIN + 1):
        cut = _find_cut(zone, qn, qtype)
        if cut is not None:
            ns = zone.nodes[cut].rrsets[T_NS]
            plan.aa = bool(plan.answer)
            plan.authority = rrs(cut, T_NS, ns.ttl, ns.rdatas)
            plan.additional = _additional(zone, list(ns.targets), set())
            plan.additional_required = True
            return plan
        node = zone.nodes.get(qn)
        owner = qn
        if node is None:
            if qn in zone.existing:  # empty non-terminal
                plan.authority = [zone.neg_soa_rr]
                return plan
            ce = names.parent(qn)
            while ce not in zone.existing:
                ce = names.parent(ce)
            node = zone.nodes.get(b"\x01*" + ce)
            if node is None:
                plan.rcode = NXDOMAIN
                plan.authority = [zone.neg_soa_rr]
                return plan
        if qtype == T_ANY:
            # RFC 8482 4.2: one synthesized HINFO instead of every RRset
            plan.answer.append((owner, T_HINFO, zone.hinfo_ttl, HINFO_RFC8482))
            return plan
        rr = node.rrsets.get(qtype)
        if rr is not None:
            plan.answer += rrs(owner, qtype, rr.ttl, rr.rdatas)
            if rr.targets and qtype != T_CNAME:
                plan.additional = _additional(zone, list(rr.targets), set())
            return plan
        bal = node.balanced
        if bal is not None and (qtype in bal.types or bal.cname):
            plan.dynamic = True
            if q is None or client is None:
                return plan
            ptype = T_CNAME if bal.cname else qtype
            pk = pick(state.plans[bal.name], ptype, q, client.host, rng, state.geo, state.loads)
            if count:
                count_balanced(state, bal.name, pk.pool, pk.outcome)
            # a chain through balanced names: the reply holds for the narrowest client subnet
            plan.scope, plan.pick, plan.balanced, plan.pool = max(plan.scope, pk.scope), pk, bal.name, pk.pool
            plan.picks.append((bal.name, pk))
            if pk.outcome is not None and pk.pool in pk.outcome.stale:
                plan.stale = True
            plan.rcode = balanced_rcode(pk.outcome)
            if plan.rcode == NOERROR:
                if pk.frags:
                    plan.answer += [(owner, ptype, bal.ttl, f[12:]) for f in pk.frags]
                else:
                    plan.authority = [zone.neg_soa_rr]
                    return plan
                if bal.cname and qtype != T_CNAME:  # follow the chosen target as a static CNAME
                    target = pk.frags[0][12:]
                    if target in seen or not names.is_subdomain(target, zone.origin):
                        return plan
                    if state.find_zone(target) is not zone:
                        return plan
                    seen.add(target)
                    qn = target
                    continue
            return plan
        cname = node.rrsets.get(T_CNAME)
        if cname is not None:
            plan.answer += rrs(owner, T_CNAME, cname.ttl, cname.rdatas)
            target = cname.targets[0]
            if target in seen or not names.is_subdomain(target, zone.origin):
                return plan
            if state.find_zone(target) is not zone:
                return plan  # a nested zone of ours: the resolver follows up
            seen.add(target)
            qn = target
            continue
        plan.authority = [zone.neg_soa_rr]
        return plan
    return plan  # chain longer than MAX_CHAIN: what we have
