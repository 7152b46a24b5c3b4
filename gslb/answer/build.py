"""Building a serving state: zones compiled, signers loaded, balanced plans made for
the health view, geo plans given their compiled tables, and every static answer
precomputed by the same lookup that answers queries (``static.resolve``)."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from typing import cast

from gslb.answer.geo.lookup import GeoLookup
from gslb.answer.geo.tables import LeafSource, compile_inline, compiled_rules
from gslb.answer.state import (
    CNAME_QTYPES,
    NO_ALIASES,
    BalancedPlan,
    BalancedRef,
    CompiledZone,
    ServingState,
    Static,
    compile_zone,
    plan_balanced,
)
from gslb.answer.static import Plan, resolve
from gslb.dns import names
from gslb.dns.consts import NOERROR, NXDOMAIN
from gslb.dns.wire import encode_sections
from gslb.dnssec import keys as dnssec_keys
from gslb.dnssec.signer import Signer
from gslb.health.view import ALL_UP, HealthView, Resolved
from gslb.zones.model import Balanced, Location, Zone


def build_state(
    zones: list[tuple[Zone, int]],
    health: HealthView = ALL_UP,
    generation: int = 0,
    geo: GeoLookup | None = None,
    aliases: Mapping[bytes, Resolved] = NO_ALIASES,
) -> ServingState:
    """Compile zones (with their serials) and precompute every static answer; alias
    members answer with ``aliases`` (their names' current addresses)."""
    compiled = {z.origin: compile_zone(z, serial) for z, serial in zones}
    fast: dict[tuple[bytes, int], Static | BalancedRef] = {}
    plans: dict[bytes, BalancedPlan] = {}
    state = ServingState(compiled, fast, plans, health, generation, geo, aliases=aliases)
    for cz in compiled.values():
        if cz.zone.dnssec_keys:
            loaded = [dnssec_keys.load(k) for k in cz.zone.dnssec_keys]
            state.signers[cz.origin] = Signer(loaded[0], cz.origin, extra=tuple(loaded[1:]))
    rng = random.Random(0)
    for cz in compiled.values():
        for b in cz.zone.balanced:
            plans[b.name] = plan_balanced(cz, b, health, aliases=aliases)
    if geo is not None and hasattr(geo, "leaves"):  # geo/asn rules: compiled against the databases
        state = with_decisions(state, compile_inline(geo))
    for cz in compiled.values():
        for name, node in cz.nodes.items():
            if names.is_wildcard(name) or state.find_zone(name) is not cz:
                continue
            # the types the name has; NODATA for the others takes the general lookup once and
            # then the reply cache (precomputing it doubled the load time of large zones)
            qtypes = set(node.rrsets)
            if node.balanced is not None:
                bal = node.balanced
                for t in CNAME_QTYPES if bal.cname else bal.types:
                    if not (bal.cname and _follows(cz, bal)):
                        fast[(name, t)] = BalancedRef(bal.name)
                    qtypes.discard(t)
            for qtype in qtypes:
                p = resolve(state, cz, name, qtype, None, None, rng)
                if p.dynamic or p.rcode not in (NOERROR, NXDOMAIN):
                    continue
                fast[(name, qtype)] = _static(name, p)
    return state


def _follows(cz: CompiledZone, bal: Balanced) -> bool:
    """A balanced CNAME with a target in the zone: its answers follow the chain (the
    general lookup), so they are not one pick spliced after the question."""
    return any(
        m.target is not None and names.is_subdomain(m.target, cz.origin)
        for rule in bal.rules
        for pn in rule.pools
        for m in cz.pools[pn].members
    )


def with_decisions(state: ServingState, build: bool = True) -> ServingState:
    """The state with its geo/asn plans given their compiled tables (gslb.answer.geo.tables):
    compiled now, or (``build`` False) those compiled already. Plans without one decide
    per query with a lookup, which gives the same answers."""
    geo = state.geo
    if geo is None or not hasattr(geo, "leaves"):
        return state
    source = cast(LeafSource, geo)
    plans = dict(state.plans)
    changed = False
    for name, bp in plans.items():
        if bp.decisions is None and _wants_table(bp):
            places = None
            if bp.policy.uses_vantages:  # one choice per vantage, located there
                if not state.vantages:
                    continue  # not steered yet: nothing to tell the vantages apart by
                here = tuple(loc for _, loc in state.vantages)
                places = tuple(here for _ in bp.record.rules)
            elif bp.policy.uses_location:  # the pools' locations: classes say which is nearest
                pools = state.zone_of(name).pools
                places = tuple(
                    tuple(_place(pools[p].location) for p in rule.pools) for rule in bp.record.rules
                )
            table = compiled_rules(bp.matchers, bp.catch_all, source, build, places, bp.policy)
            if table is not None:
                plans[name] = dataclasses.replace(bp, decisions=table)
                changed = True
    done = getattr(source, "compiled", None)
    if changed and build and callable(done):
        done()
    return dataclasses.replace(state, plans=plans) if changed else state


def _place(loc: Location | None) -> tuple[float, float] | None:
    return None if loc is None else (loc.lat, loc.lon)


def _wants_table(bp: BalancedPlan) -> bool:
    """A plan whose decision reads the databases: geo/asn rules, or a pick by coordinates."""
    return bp.policy.uses_location or any(m.geos or m.asns for m in bp.matchers)


def needs_decisions(state: ServingState) -> bool:
    """Whether some geo/asn plan still decides per query (its table not compiled yet)."""
    plans = state.plans.values()
    return state.geo is not None and any(
        p.decisions is None and _wants_table(p) and (state.vantages or not p.policy.uses_vantages)
        for p in plans
    )


def _static(name: bytes, p: Plan) -> Static:
    body, an, ns, ar = encode_sections(name, (p.answer, p.authority, p.additional))
    if p.additional and not p.additional_required:
        sbody, san, sns, sar = encode_sections(name, (p.answer, p.authority, []))
    else:
        sbody, san, sns, sar = body, an, ns, ar
    return Static(p.aa, p.rcode, body, (an, ns, ar), sbody, (san, sns, sar), p.additional_required)
