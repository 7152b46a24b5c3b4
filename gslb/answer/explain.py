"""``gslb explain``: how a name is answered for a client, and why.

Runs the real engine (``answer.static.resolve`` and the balanced pick) on a serving
state built from the zone files, with the persisted health state applied (or
members named down by hand), and reports the matched rule, the pools
considered and why earlier ones were skipped, member states, the answer, its
TTL and ECS scope, and the worst-case failover time of the record.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import struct
from pathlib import Path
from typing import Any

import dns.rdata
import dns.rdataclass
import dns.rdatatype

from gslb.answer.balanced import Pick
from gslb.answer.build import build_state
from gslb.answer.geo.lookup import GeoInfo
from gslb.answer.geo.maxmind import MaxMindGeo
from gslb.answer.policies import PickContext
from gslb.answer.reply import Client
from gslb.answer.state import ServingState, ramp_share
from gslb.answer.static import resolve
from gslb.dns import names
from gslb.dns.consts import EDNS_MAX_UDP, rcode_name
from gslb.dns.wire import Ecs, Edns, Query, RRw
from gslb.health.overrides import Overrides
from gslb.health.prober import load_state, targets_of
from gslb.health.view import (
    NOT_RESOLVED,
    HealthView,
    MemberKey,
    alias_key,
    check_key,
    down_from_states,
    member_key,
)
from gslb.zones.errors import ConfigError
from gslb.zones.load import iter_zone_files, load_zone
from gslb.zones.model import Balanced, Member, Zone


def _rr_text(rr: RRw) -> str:
    owner, rtype, ttl, rdata = rr
    try:
        rd = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.RdataType.make(rtype), rdata, 0, len(rdata))
        text = rd.to_text()
    except Exception:
        text = rdata.hex()
    return (
        f"{names.to_text(owner)} {ttl} IN {dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rtype))} {text}"
    )


def explain(
    state: ServingState,
    name: str,
    qtype_text: str,
    client: str,
    ecs: str | None,
    by_hand: frozenset[MemberKey] = frozenset(),
) -> dict[str, Any]:
    """``by_hand``: members the caller put down itself (``gslb explain --down``)."""
    key = names.from_text(name if name.endswith(".") else name + ".")
    qtype = int(dns.rdatatype.from_text(qtype_text.upper()))
    out: dict[str, Any] = {"name": names.to_text(key), "type": qtype_text.upper()}
    edns = None
    if ecs:
        net = ipaddress.ip_network(ecs, strict=False)
        packed = net.network_address.packed[: (net.prefixlen + 7) // 8]
        edns = Edns(EDNS_MAX_UDP, 0, False, Ecs(1 if net.version == 4 else 2, net.prefixlen, packed))
        out["client"] = {"ecs": str(net)}
    else:
        ipaddress.ip_address(client)
        out["client"] = {"address": client}
    zone = state.find_zone(key)
    if zone is None:
        out.update(rcode="REFUSED", why="the name is in no zone served here")
        return out
    out["zone"] = names.to_text(zone.origin)
    q = Query(0, 0, key, key, qtype, 1, key + struct.pack("!HH", qtype, 1), edns)
    plan = resolve(state, zone, key, qtype, q, Client(client, False), random.Random(), count=False)
    out["rcode"] = rcode_name(plan.rcode)
    out["authoritative"] = plan.aa
    out["answer"] = [_rr_text(rr) for rr in plan.answer]
    out["authority"] = [_rr_text(rr) for rr in plan.authority]
    if edns is not None:
        out["ecs_scope"] = plan.scope
    if plan.picks:
        first, *more = plan.picks
        out["balanced"] = _balanced(state, zone.zone, *first, by_hand)
        if more:  # a balanced CNAME to a balanced name of the zone: its pick too
            out["followed"] = [_balanced(state, zone.zone, n, pk, by_hand) for n, pk in more]
    return out


def _member_state(health: HealthView, key: MemberKey, member: Member, checked: bool, by_hand: bool) -> str:
    """The state the answers use (``HealthView.state_of``), for people."""
    st = health.state_of(key, member)
    why = st.why
    if why == "health check" and (by_hand or not checked):
        why = "given with --down" if by_hand and not st.in_rotation else "no health check"
    return f"{st.state} ({why})" + (
        ", weight 0: never picked" if member.weight == 0 and st.in_rotation else ""
    )


def _balanced(
    state: ServingState, zone: Zone, name: bytes, pk: Pick, by_hand: frozenset[MemberKey]
) -> dict[str, Any]:
    bplan = state.plans[name]
    rec: Balanced = bplan.record
    rule = rec.rules[pk.rule]
    crit = [str(n) for n in rule.subnets] + [g.text for g in rule.geos] + [f"AS{a}" for a in rule.asns]
    out: dict[str, Any] = {
        "record": names.to_text(rec.name),
        "select": rec.select,
        "count": bplan.count,
        "ttl": rec.ttl,
        "uses_ecs": rec.ecs,
        "rule": {"index": pk.rule, "matches": crit or ["everyone (catch-all)"], "pools": list(rule.pools)},
    }
    geo = pk.geo
    if geo is None and bplan.needs_geo and state.geo is not None and pk.client is not None:
        geo = state.geo.lookup(pk.client.family, pk.client.addr)  # decided by the compiled table
    if geo is not None:
        g: GeoInfo = geo
        out["geoip"] = {"continent": g.continent, "country": g.country, "subdivisions": list(g.subdivisions),
                        "asn": g.asn, "network_prefix": g.prefix, "asn_network_prefix": g.asn_prefix,
                        "lat": g.lat, "lon": g.lon}  # fmt: skip
    outcome = pk.outcome
    if outcome is not None:
        out["outcome"] = outcome.kind
        out["skipped_pools"] = [{"pool": p, "why": why} for p, why in outcome.skipped]
        out["up_pools"] = [p.name for p in outcome.pools] if outcome.kind == "answer" else []
    out["answered_by_pool"] = pk.pool or None
    if outcome is not None and outcome.kind == "answer" and bplan.policy.uses_vantages:
        # fastest_from_nearest_node: each node's choice, and the one nearest the client
        lat, lon = (geo.lat, geo.lon) if geo is not None else (None, None)
        nearest = bplan.policy.choose_pool([p.location for p in outcome.pools], PickContext(lat=lat, lon=lon))
        out["vantages"] = [
            {"node": p.via or "this node", "location": list(p.location) if p.location else None,
             "pool": p.name, "fastest_first": [k[2] for k in p.member_keys],
             "nearest_to_client": i == nearest}
            for i, p in enumerate(outcome.pools)
        ]  # fmt: skip
    pools = {p.name: p for p in zone.pools}
    checks = {c.name: c for c in zone.checks}
    members = []
    worst = 0.0
    for pname in rule.pools:
        pool = pools[pname]
        for c in (checks[n] for n in pool.check_names):
            worst = max(worst, c.interval * c.fall + c.timeout)
        for m in pool.members:
            k = member_key(zone, pname, m)
            text = _member_state(state.health, k, m, bool(pool.check_names), k in by_hand)
            calc: list[dict[str, str]] = []
            in_rotation = state.health.is_up(k, m)
            if pool.checks:  # calculated: each child's state, and what they make
                kids = tuple(check_key(zone, pname, m, c) for c in pool.checks)
                calc = [
                    {"check": c, "state": str(state.health.state_of(ck, m))}
                    for c, ck in zip(pool.checks, kids, strict=True)
                ]
                in_rotation = state.health.combined_up(k, m, kids, pool.checks_needed)
                n_up = sum(ck not in state.health.down for ck in kids)
                if m.status == "obey" and k not in state.health.forced:
                    text = (
                        f"{'up' if in_rotation else 'down'} (calculated: {n_up} of {len(kids)} checks up, "
                        f"{pool.checks_needed} needed)"
                    )
            where: dict[str, Any] = {"address": str(m.address)}
            if m.target is not None:
                where = {"target": m.ident}
            elif m.alias is not None:  # the name's addresses now, each with its own state
                r = state.aliases.get(m.alias, NOT_RESOLVED)
                addrs = [
                    {"address": a, "in_rotation": alias_key(zone, pname, m, a) not in state.health.down}
                    for a in (*r.v4, *r.v6)
                ]
                where = {"alias": m.ident, "addresses": addrs, "resolved": r.why, "stale": r.stale}
                if r.gone:
                    text = f"down (alias {r.why})"
            members.append({"pool": pname, "name": m.name, **where, "weight": m.weight,
                            "in_rotation": in_rotation, "state": text})  # fmt: skip
            if calc:
                members[-1]["checks"] = calc
            if k in state.rtts and bplan.policy.uses_rtts:  # select: fastest: what it measured
                members[-1]["rtt_ms"] = round(state.rtts[k] * 1000, 2)
            if k in state.ramps:  # slow start: its weight's share now
                share = ramp_share(state.ramps[k], state.ramp_now, pool.ramp_of(m))
                members[-1]["slow_start"] = {"share": round(share, 3), "seconds": pool.ramp_of(m)}
    out["members"] = members
    out["worst_case_failover_s"] = round(worst + rec.ttl, 3) if worst else None
    out["failover_formula"] = "interval x fall + timeout + ttl" if worst else "no health check on these pools"
    return out


def explain_offline(args: argparse.Namespace) -> dict[str, Any]:
    geo = MaxMindGeo(args.geoip_db, args.asn_db) if (args.geoip_db or args.asn_db) else None
    zones: list[Zone] = []
    skipped: list[str] = []  # files serve would refuse too: left out, and said so
    for path in iter_zone_files(args.zones):
        try:
            zones.append(load_zone(path, geo_db=bool(geo and geo.geo), asn_db=bool(geo and geo.asn)))
        except ConfigError as e:
            first = e.problems[0] if e.problems else None
            skipped.append(str(first) if first is not None else f"{path}: {e}")
    if not zones:
        if skipped:
            raise ValueError("no zone loads: " + "; ".join(skipped))
        raise ValueError(f"no zone files in {args.zones}")
    state_dir = Path(args.state_dir) if args.state_dir else None
    persisted = load_state(state_dir)
    down = set(down_from_states(((w.target.ident, w.members) for w in targets_of(zones).values()), persisted))
    by_hand: set[MemberKey] = set()
    if args.down:
        wanted = set(args.down)
        for z in zones:
            for p in z.pools:
                for m in p.members:
                    if m.ident in wanted or m.ident.rstrip(".") in wanted or m.name in wanted:
                        by_hand.add(member_key(z, p.name, m))
    down |= by_hand
    # the overrides a server with this state directory applies (drain, down, up)
    forced = Overrides(state_dir).active()
    health = HealthView(frozenset(down), 0, forced)
    state = build_state([(z, z.soa.serial or 1) for z in zones], health, geo=geo)
    out = explain(state, args.name, args.type, args.client, args.ecs, frozenset(by_hand))
    if skipped:
        out["skipped"] = skipped
    if any(m.alias is not None for z in zones for p in z.pools for m in p.members):
        out["notes"] = [
            "alias members are resolved by the running server only: here they have no addresses "
            "(ask the server: --api-url)"
        ]
    return out


def render(r: dict[str, Any]) -> str:
    c = r["client"]
    who = f"a client at {c['address']}" if "address" in c else f"ECS client subnet {c['ecs']}"
    lines = [f"{r['name']} {r['type']} for {who}"]
    for why in r.get("skipped", ()):
        lines.append(f"  (left out, as serve would refuse it: {why})")
    for note in r.get("notes", ()):
        lines.append(f"  (note: {note})")
    if "zone" not in r:
        return "\n".join([*lines, f"  {r['rcode']}: {r['why']}"])
    lines.append(f"  zone {r['zone']}: {r['rcode']}{' (authoritative)' if r['authoritative'] else ''}")
    for i, b in enumerate([r["balanced"], *r.get("followed", ())] if r.get("balanced") else []):
        rule = b["rule"]
        lead = "balanced record" if i == 0 else "then, its target: balanced record"
        lines.append(f"  {lead} {b['record']} (select: {b['select']}, count {b['count']}, ttl {b['ttl']})")
        if "geoip" in b:
            g = b["geoip"]
            lines.append(
                f"  GeoIP: {g['continent']}/{g['country']}/{','.join(g['subdivisions']) or '-'} "
                f"(network /{g['network_prefix']}), AS{g['asn']} (network /{g['asn_network_prefix']})"
            )
        lines.append(
            f"  rule {rule['index']} matched ({', '.join(rule['matches'])}): pools {', '.join(rule['pools'])}"
        )
        for s in b.get("skipped_pools", []):
            lines.append(f"    pool {s['pool']} skipped: {s['why']}")
        lines.append(f"    answered by pool {b['answered_by_pool']} ({b.get('outcome')})")
        for m in b["members"]:
            if "alias" in m:
                each = ", ".join(
                    a["address"] + ("" if a["in_rotation"] else " (down)") for a in m["addresses"]
                )
                where = f"alias {m['alias']} = [{each}] ({m['resolved']})"
            else:
                where = m["address"] if "address" in m else f"-> {m['target']}"
            ramp = m.get("slow_start")
            ramping = f", slow start: {ramp['share']:.0%} of its weight" if ramp else ""
            if "rtt_ms" in m:
                ramping += f", round trip {m['rtt_ms']:g} ms"
            lines.append(
                f"    member {m['pool']}/{m['name']} {where} weight {m['weight']}: {m['state']}{ramping}"
            )
            for c in m.get("checks", ()):
                lines.append(f"      check {c['check']}: {c['state']}")
        if b["worst_case_failover_s"] is not None:
            lines.append(f"  worst-case failover: {b['worst_case_failover_s']} s ({b['failover_formula']})")
    for rr in r["answer"]:
        lines.append(f"  answer    {rr}")
    for rr in r["authority"]:
        lines.append(f"  authority {rr}")
    if "ecs_scope" in r:
        lines.append(f"  ECS scope /{r['ecs_scope']}")
    return "\n".join(lines)
