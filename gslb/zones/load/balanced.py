"""Balanced names: types, answer (each policy checks its own keys), rules with subnets, geos, ASNs."""

from __future__ import annotations

import ipaddress
import re

from gslb.answer.policies import REGISTRY as POLICIES
from gslb.answer.policies import Policy
from gslb.dns.consts import FAMILY_OF_TYPE, T_A, T_AAAA, T_CNAME
from gslb.zones.load.ctx import DEFAULT_BALANCED_TTL, _Ctx, _opt
from gslb.zones.model import (
    CONTINENTS,
    TTL_MAX,
    Balanced,
    GeoMatch,
    IPNetwork,
    Pool,
    Rule,
)
from gslb.zones.yamlsrc import Located

WHEN_ALL_DOWN = ("serve_all", "nodata", "servfail", "refuse")


def _balanced(
    ctx: _Ctx,
    key: str,
    loc: Located,
    owner: bytes,
    pools: dict[str, tuple[Pool, Located]],
    pool_names: frozenset[str],
    used: set[str],
) -> Balanced | None:
    m = ctx.mapping(loc, key, ("types", "rules"), ("ttl", "answer", "when_all_down", "ecs"))
    if m is None:
        return None
    before = len(ctx.problems)
    types: list[int] = []
    tl = ctx.seq(m["types"], f"{key}.types") if "types" in m else None
    for i, t in enumerate(tl or []):
        s = ctx.str_(t, f"{key}.types[{i}]")
        if s is None:
            continue
        tv = {"A": T_A, "AAAA": T_AAAA, "CNAME": T_CNAME}.get(s.upper())
        if tv is None:
            ctx.err(t, f"{key}.types[{i}]", f"balanced records answer A and AAAA, or CNAME, not {s!r}")
        elif tv in types:
            ctx.err(t, f"{key}.types[{i}]", f"{s} listed twice")
        else:
            types.append(tv)
    if tl is not None and not tl:
        ctx.err(m["types"], f"{key}.types", "list at least one of A, AAAA (or CNAME, alone)")
    if T_CNAME in types and len(types) > 1:
        ctx.err(
            m["types"],
            f"{key}.types",
            "CNAME stands alone: a name with a CNAME has no other data (RFC 1034 3.6.2); "
            "types: [CNAME] answers every query type with the chosen target",
        )
        types = [T_CNAME]
    ttl = _opt(m, "ttl", lambda v: ctx.int_(v, f"{key}.ttl", 0, TTL_MAX), DEFAULT_BALANCED_TTL)
    select, count = "weighted", None
    params: dict[str, int] = {}
    ecs = _opt(m, "ecs", lambda v: ctx.bool_(v, f"{key}.ecs"), ctx.ecs_default) is not False
    if "answer" in m:
        am = ctx.mapping(m["answer"], f"{key}.answer", (), ("select", "count", *PARAM_KEYS))
        if am is not None:
            s = _opt(am, "select", lambda v: ctx.str_(v, f"{key}.answer.select"), "weighted")
            if s is not None and s not in POLICIES:
                ctx.err(
                    am["select"],
                    f"{key}.answer.select",
                    f"unknown select {s!r} (one of: {', '.join(sorted(POLICIES))})",
                )
            select = s or select
            count = _opt(am, "count", lambda v: ctx.int_(v, f"{key}.answer.count", 1, 64), None)
            policy = POLICIES.get(select)
            params = _params(ctx, am, f"{key}.answer", policy)
            if policy is not None and policy.uses_location and ctx.geo_db is False:
                ctx.err(
                    am["select"],
                    f"{key}.answer.select",
                    f"select: {select} needs client coordinates: give gslb --geoip-db (a City database)",
                )
    if T_CNAME in types and "answer" in m and isinstance(m["answer"].value, dict):
        am_ = m["answer"].value
        if select == "all":
            ctx.err(
                am_["select"],
                f"{key}.answer.select",
                "a name has one CNAME: select: all cannot answer with target names "
                "(weighted, first, hashed, closest or least_loaded picks one)",
            )
        if count is not None and count != 1 and "count" in am_:
            ctx.err(am_["count"], f"{key}.answer.count", f"a name has one CNAME: count is 1, not {count}")
    wad = _opt(m, "when_all_down", lambda v: ctx.str_(v, f"{key}.when_all_down"), "serve_all")
    if wad is not None and wad not in WHEN_ALL_DOWN:
        ctx.err(
            m["when_all_down"],
            f"{key}.when_all_down",
            f"must be one of {', '.join(WHEN_ALL_DOWN)}, got {wad!r}",
        )
    rules: list[Rule] = []
    rl = ctx.seq(m["rules"], f"{key}.rules") if "rules" in m else None
    if rl is not None and not rl:
        ctx.err(m["rules"], f"{key}.rules", "at least one rule is needed (a catch-all: {pools: [...]})")
    families: set[int] = set()
    for i, r in enumerate(rl or []):
        rk = f"{key}.rules[{i}]"
        rule = _rule(ctx, rk, r, pool_names, used)
        if rule is None:
            continue
        if rule.catch_all and i != len(rl or []) - 1:
            ctx.err(
                r, rk, "a catch-all rule (only 'pools') must be the last rule: rules after it never match"
            )
        for j, pn in enumerate(rule.pools):
            if pn in pools:
                pool = pools[pn][0]
                # an alias member answers with its name's addresses: either family
                for mem in pool.members:
                    families.update((4, 6) if mem.alias is not None else (mem.family,))
                _pool_kind(ctx, f"{rk}.pools[{j}]", r, j, pool, types)
        rules.append(rule)
    if rl and rules and len(rules) == len(rl) and not rules[-1].catch_all:
        ctx.err(
            rl[-1],
            f"{key}.rules[{len(rl) - 1}]",
            "the last rule must be a catch-all (only 'pools'), so every client gets an answer",
        )
    for qtype in types if T_CNAME not in types else ():
        fam = FAMILY_OF_TYPE[qtype]
        if families and fam not in families:
            tn = "A" if qtype == 1 else "AAAA"
            ctx.err(
                m["types"], f"{key}.types", f"{tn} is listed but no pool in the rules has an IPv{fam} member"
            )
    if len(ctx.problems) > before or not rules or ttl is None:
        return None
    _shadow_warnings(ctx, key, rules, rl or [])
    return Balanced(
        owner, tuple(types), ttl, select, count, tuple(rules), wad,  # type: ignore[arg-type]
        ecs=ecs, params=tuple(sorted(params.items())),
    )  # fmt: skip


def _pool_kind(ctx: _Ctx, key: str, rule: Located, j: int, pool: Pool, types: list[int]) -> None:
    """A rule's pool must answer the record's types: addresses for A/AAAA, host names
    (target:) for CNAME; so one rule cannot mix the two."""
    if not types:
        return
    cname = T_CNAME in types
    if pool.holds_names == cname:
        return
    loc = rule
    if isinstance(rule.value, dict) and "pools" in rule.value:
        seq = rule.value["pools"]
        loc = seq.value[j] if isinstance(seq.value, list) and j < len(seq.value) else seq
    if cname:
        ctx.err(
            loc,
            key,
            f"pool {pool.name!r} holds addresses: types: [CNAME] answers with a target name, so its "
            "pools hold names (target:); for addresses list types: [A] or [A, AAAA]",
        )
    else:
        ctx.err(
            loc,
            key,
            f"pool {pool.name!r} holds host names (target:): it answers a CNAME, so list types: [CNAME] "
            "and keep address pools to other records",
        )


# every policy's own answer: keys, and which policies take each
PARAM_KEYS = tuple(sorted({p.key for pol in POLICIES.values() for p in pol.params}))


def _params(ctx: _Ctx, am: dict[str, Located], key: str, policy: Policy | None) -> dict[str, int]:
    """The policy's answer: keys, read as its declaration says (defaults filled in); the
    keys of other policies are errors that name who takes them."""
    values: dict[str, int] = {}
    for p in policy.params if policy is not None else ():
        pk = f"{key}.{p.key}"
        pm = ctx.mapping(am[p.key], pk, (), tuple(f for f, *_ in p.fields)) if p.key in am else {}
        for field, low, high, default in p.fields:

            def read(v: Located, fk: str = f"{pk}.{field}", lo: int = low, hi: int = high) -> int | None:
                return ctx.int_(v, fk, lo, hi)

            got = _opt(pm or {}, field, read, default)
            values[f"{p.key}.{field}"] = got if got is not None else default
    taken = {p.key for p in policy.params} if policy is not None else set()
    for k in PARAM_KEYS:
        if k in am and k not in taken:
            who = sorted(name for name, pol in POLICIES.items() if any(p.key == k for p in pol.params))
            ctx.err(am[k], f"{key}.{k}", f"only for select: {' or '.join(who)}", at_key=True)
    return values


def _rule(ctx: _Ctx, key: str, loc: Located, pools: frozenset[str], used: set[str]) -> Rule | None:
    m = ctx.mapping(loc, key, ("pools",), ("subnets", "geos", "asns"))
    if m is None:
        return None
    before = len(ctx.problems)
    names_: list[str] = []
    pl = ctx.seq(m["pools"], f"{key}.pools") if "pools" in m else None
    if pl is not None and not pl:
        ctx.err(m["pools"], f"{key}.pools", "list at least one pool")
    for i, p in enumerate(pl or []):
        s = ctx.str_(p, f"{key}.pools[{i}]")
        if s is None:
            continue
        if s not in pools:
            known = ", ".join(sorted(pools)) or "none defined"
            ctx.err(p, f"{key}.pools[{i}]", f"undefined pool {s!r} (pools: {known})")
            continue
        if s in names_:
            ctx.err(p, f"{key}.pools[{i}]", f"pool {s!r} listed twice")
            continue
        used.add(s)
        names_.append(s)
    subnets: list[IPNetwork] = []
    if "subnets" in m:
        sl = ctx.seq(m["subnets"], f"{key}.subnets")
        if sl is not None and not sl:
            ctx.err(m["subnets"], f"{key}.subnets", "empty list: leave the key out for a catch-all rule")
        for i, sloc in enumerate(sl or []):
            text = ctx.str_(sloc, f"{key}.subnets[{i}]")
            if text is None:
                continue
            try:
                subnets.append(ipaddress.ip_network(text, strict=True))
            except ValueError as e:
                ctx.err(sloc, f"{key}.subnets[{i}]", f"bad subnet: {e}")
    geos: list[GeoMatch] = []
    if "geos" in m:
        gl = ctx.seq(m["geos"], f"{key}.geos")
        if gl is not None and not gl:
            ctx.err(m["geos"], f"{key}.geos", "empty list: leave the key out for a catch-all rule")
        for i, gloc in enumerate(gl or []):
            text = ctx.str_(gloc, f"{key}.geos[{i}]")
            if text is None:
                continue
            g = parse_geo(text)
            if isinstance(g, str):
                ctx.err(gloc, f"{key}.geos[{i}]", g)
            else:
                geos.append(g)
        if ctx.geo_db is False:
            ctx.err(
                m["geos"],
                f"{key}.geos",
                "geo rules need a GeoIP database: give gslb --geoip-db (serve, check, explain)",
                True,
            )
    asns: list[int] = []
    if "asns" in m:
        al = ctx.seq(m["asns"], f"{key}.asns")
        if al is not None and not al:
            ctx.err(m["asns"], f"{key}.asns", "empty list: leave the key out for a catch-all rule")
        for i, aloc in enumerate(al or []):
            v = aloc.value
            if isinstance(v, str) and re.fullmatch(r"(?i)AS\d+", v.strip()):
                v = int(v.strip()[2:])
            if isinstance(v, bool) or not isinstance(v, int) or not 0 < v < 2**32:
                ctx.err(
                    aloc,
                    f"{key}.asns[{i}]",
                    f"expected an AS number like 64500 or AS64500, got {aloc.value!r}",
                )
            else:
                asns.append(v)
        if ctx.asn_db is False:
            ctx.err(
                m["asns"],
                f"{key}.asns",
                "ASN rules need an ASN database: give gslb --asn-db (serve, check, explain)",
                True,
            )
    if len(ctx.problems) > before or not names_:
        return None
    return Rule(tuple(names_), tuple(subnets), tuple(geos), tuple(asns))


def parse_geo(text: str) -> GeoMatch | str:
    """``EU``, ``DE``, ``EU-DE``, ``US-CA``, ``NA-US-CA`` -> GeoMatch, or an error message."""
    parts = text.strip().upper().split("-")
    bad = (
        f"bad geo {text!r}: use a continent (EU), a country (DE or EU-DE) "
        "or a subdivision (US-CA or NA-US-CA), ISO codes"
    )
    if not all(re.fullmatch(r"[A-Z0-9]{1,3}", p) for p in parts):
        return bad
    cc = r"[A-Z]{2}"
    if len(parts) == 1:
        if parts[0] in CONTINENTS:
            return GeoMatch(text, continent=parts[0])
        return GeoMatch(text, country=parts[0]) if re.fullmatch(cc, parts[0]) else bad
    if len(parts) == 2:
        if parts[0] in CONTINENTS and re.fullmatch(cc, parts[1]):
            return GeoMatch(text, continent=parts[0], country=parts[1])
        if re.fullmatch(cc, parts[0]):
            return GeoMatch(text, country=parts[0], subdivision=parts[1])
        return bad
    if len(parts) == 3 and parts[0] in CONTINENTS and re.fullmatch(cc, parts[1]):
        return GeoMatch(text, continent=parts[0], country=parts[1], subdivision=parts[2])
    return bad


def _geo_covers(a: GeoMatch, b: GeoMatch) -> bool:
    """Every client matching ``b`` also matches ``a``."""
    return all(x is None or x == y for x, y in ((a.continent, b.continent), (a.country, b.country),
                                                 (a.subdivision, b.subdivision)))  # fmt: skip


def _shadow_warnings(ctx: _Ctx, key: str, rules: list[Rule], locs: list[Located]) -> None:
    """Warn where an earlier, broader rule takes every client a later criterion names."""
    for j, later in enumerate(rules):
        for i in range(j):
            early = rules[i]
            for net in later.subnets:
                for wide in early.subnets:
                    if net.version == wide.version and net.subnet_of(wide):  # type: ignore[arg-type]
                        ctx.warn(
                            locs[j],
                            f"{key}.rules[{j}].subnets",
                            f"{net} is shadowed by {wide} in rules[{i}]: those clients never reach this rule",
                        )
            for g in later.geos:
                for wide_g in early.geos:
                    if _geo_covers(wide_g, g):
                        ctx.warn(
                            locs[j],
                            f"{key}.rules[{j}].geos",
                            f"{g.text} is shadowed by {wide_g.text} in rules[{i}]: "
                            "those clients never reach this rule",
                        )
            for asn in set(later.asns) & set(early.asns):
                ctx.warn(locs[j], f"{key}.rules[{j}].asns", f"AS{asn} is already taken by rules[{i}]")
