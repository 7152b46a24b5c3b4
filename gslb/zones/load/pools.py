"""``pools:``: groups of load-balancer instances and their members."""

from __future__ import annotations

import ipaddress
import re

from gslb.dns import names
from gslb.zones.load.ctx import _Ctx, _kind, _opt
from gslb.zones.model import (
    WEIGHT_MAX,
    Check,
    Location,
    Member,
    Pool,
)
from gslb.zones.yamlsrc import Located


def _defined(loc: Located | None) -> frozenset[str]:
    """Names defined under a mapping key, valid or not (no cascade of 'undefined')."""
    return frozenset(loc.value) if loc is not None and isinstance(loc.value, dict) else frozenset()


def _used_checks(pools_loc: Located | None) -> set[str]:
    """Check names referenced by any pool (alone or in a calculated check), valid or not."""
    out: set[str] = set()
    if pools_loc is not None and isinstance(pools_loc.value, dict):
        for pl in pools_loc.value.values():
            if isinstance(pl.value, dict) and "check" in pl.value:
                c = pl.value["check"].value
                if isinstance(c, dict):
                    for k in ("all", "any", "of"):
                        lst = c[k].value if k in c else None
                        if isinstance(lst, list):
                            out.update(str(i.value) for i in lst)
                else:
                    out.add(str(c))
    return out


def _calculated(
    ctx: _Ctx, loc: Located, key: str, checks: frozenset[str]
) -> tuple[tuple[str, ...], int] | None:
    """``check: {all: [a, b]}``, ``{any: [a, b]}`` or ``{at_least: 2, of: [a, b, c]}``:
    the child checks and how many of them must pass."""
    m = ctx.mapping(loc, key, (), ("all", "any", "at_least", "of"))
    if m is None:
        return None
    kinds = [k for k in ("all", "any", "of") if k in m]
    if len(kinds) != 1 or ("of" in m) != ("at_least" in m):
        ctx.err(loc, key, "a calculated check is {all: [...]}, {any: [...]} or {at_least: N, of: [...]}")
        return None
    seq = ctx.seq(m[kinds[0]], f"{key}.{kinds[0]}")
    names_: list[str] = []
    for i, c in enumerate(seq or []):
        s = ctx.str_(c, f"{key}.{kinds[0]}[{i}]")
        if s is None:
            continue
        if s not in checks:
            known = ", ".join(sorted(checks)) or "none defined"
            ctx.err(c, f"{key}.{kinds[0]}[{i}]", f"undefined check {s!r} (checks: {known})")
        elif s in names_:
            ctx.err(c, f"{key}.{kinds[0]}[{i}]", f"check {s!r} listed twice")
        else:
            names_.append(s)
    if seq is not None and len(seq) < 2:
        ctx.err(m[kinds[0]], f"{key}.{kinds[0]}", "a calculated check combines two checks or more")
        return None
    if len(names_) != len(seq or []):
        return None
    need = len(names_) if kinds[0] == "all" else 1
    if kinds[0] == "of":
        n = ctx.int_(m["at_least"], f"{key}.at_least", 1, len(names_))
        if n is None:
            return None
        need = n
    return tuple(names_), need


def _pools(
    ctx: _Ctx,
    loc: Located | None,
    checks: dict[str, tuple[Check, Located]],
    check_names: frozenset[str],
    origin: bytes,
) -> dict[str, tuple[Pool, Located]]:
    out: dict[str, tuple[Pool, Located]] = {}
    if loc is None:
        return out
    if not isinstance(loc.value, dict):
        ctx.err(loc, "pools", f"expected a mapping of pool name -> pool, got {_kind(loc)}")
        return out
    for name, pl in loc.value.items():
        p = _pool(ctx, name, pl, check_names, origin)
        if p is not None:
            out[name] = (p, pl)
    _check_requires(ctx, loc, out)
    return out


def _requires_locs(pl: Located) -> list[Located]:
    r = pl.value.get("requires") if isinstance(pl.value, dict) else None
    return r.value if r is not None and isinstance(r.value, list) else []


def _check_requires(ctx: _Ctx, loc: Located, pools: dict[str, tuple[Pool, Located]]) -> None:
    """``requires:`` names pools of the zone (``db``), or one member of one (``db/primary``,
    by its name or address), and no pool depends on itself through them (the loop is
    spelled out at the pool whose requirement closes it)."""
    defined = _defined(loc)
    for name, (pool, pl) in list(pools.items()):
        for i, (r, rl) in enumerate(zip(pool.requires, _requires_locs(pl), strict=False)):
            rp, _, rm = r.partition("/")
            if rp not in defined:
                known = ", ".join(sorted(defined))
                ctx.err(rl, f"pools.{name}.requires[{i}]", f"undefined pool {rp!r} (pools: {known})")
            elif rp == name:
                ctx.err(rl, f"pools.{name}.requires[{i}]", "a pool cannot require itself")
            elif rm and rp in pools and not any(rm in (x.name, x.ident) for x in pools[rp][0].members):
                known = ", ".join(x.name for x in pools[rp][0].members)
                ctx.err(
                    rl, f"pools.{name}.requires[{i}]", f"pool {rp!r} has no member {rm!r} (members: {known})"
                )
    done: set[str] = set()

    def walk(name: str, path: list[str]) -> None:
        entry = pools.get(name)
        if entry is None or name in done:
            return
        pool, pl = entry
        for i, (req, rl) in enumerate(zip(pool.requires, _requires_locs(pl), strict=False)):
            r = req.partition("/")[0]  # a member's pool: its health depends on that pool's checks
            if r == name:
                continue  # said above
            if r in path:
                loop = " -> ".join([*path[path.index(r) :], r])
                ctx.err(rl, f"pools.{name}.requires[{i}]", f"requirement loop: {loop}")
            else:
                walk(r, [*path, r])
        done.add(name)

    for name in pools:
        walk(name, [name])


def _pool(ctx: _Ctx, name: str, loc: Located, checks: frozenset[str], origin: bytes) -> Pool | None:
    key = f"pools.{name}"
    m = ctx.mapping(loc, key, ("members",), ("check", "min_healthy", "location", "slow_start", "requires"))
    if m is None:
        return None
    before = len(ctx.problems)
    check = None
    children: tuple[str, ...] = ()
    need = 0
    if "check" in m and isinstance(m["check"].value, dict):  # calculated health
        calc = _calculated(ctx, m["check"], f"{key}.check", checks)
        if calc is not None:
            children, need = calc
    else:
        check = _opt(m, "check", lambda v: ctx.str_(v, f"{key}.check"), None)
        if check is not None and check not in checks:
            known = ", ".join(sorted(checks)) or "none defined"
            ctx.err(m["check"], f"{key}.check", f"undefined check {check!r} (checks: {known})")
    requires: list[str] = []
    for i, r in enumerate(ctx.seq(m["requires"], f"{key}.requires") or [] if "requires" in m else []):
        s = ctx.str_(r, f"{key}.requires[{i}]")
        if s is not None:
            requires.append(s)
    members: list[Member] = []
    seen: dict[str, int] = {}
    items = ctx.seq(m["members"], f"{key}.members") if "members" in m else None
    if items is not None and not items:
        ctx.err(m["members"], f"{key}.members", "a pool needs at least one member")
    first_kind: tuple[bool, int] | None = None  # (a target name?, index) of the first member
    for i, ml in enumerate(items or []):
        mk = f"{key}.members[{i}]"
        mem = _member(ctx, mk, ml, origin)
        if mem is None:
            continue
        a = mem.ident
        if a in seen:
            what = "target" if mem.target is not None else "address"
            ctx.err(ml, mk, f"duplicate member {what} {a} (also members[{seen[a]}])")
            continue
        is_name = mem.target is not None
        if first_kind is None:
            first_kind = (is_name, i)
        elif first_kind[0] != is_name:
            first = "a target name" if first_kind[0] else "an address"
            ctx.err(
                ml,
                mk,
                f"members[{first_kind[1]}] is {first} and this one is not: a pool holds addresses "
                "(address:) or host names (target:), not both; make a pool of each",
            )
            continue
        seen[a] = i
        members.append(mem)
    min_count, min_pct = 1, None
    if "min_healthy" in m:
        v = m["min_healthy"]
        if isinstance(v.value, str) and (pm := re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*%\s*", v.value)):
            min_pct = float(pm.group(1))
            if not 0 < min_pct <= 100:
                ctx.err(v, f"{key}.min_healthy", f"percentage must be in (0%, 100%], got {v.value}")
        else:
            n = ctx.int_(v, f"{key}.min_healthy", 0, 100000)
            if n is not None:
                if items is not None and n > len(items):
                    ctx.err(v, f"{key}.min_healthy", f"is {n} but the pool has {len(items)} members")
                min_count = n
    location = None
    if "location" in m:
        lm = ctx.mapping(m["location"], f"{key}.location", ("lat", "lon"), ())
        if lm is not None and "lat" in lm and "lon" in lm:
            lat = ctx.float_(lm["lat"], f"{key}.location.lat", -90, 90)
            lon = ctx.float_(lm["lon"], f"{key}.location.lon", -180, 180)
            if lat is not None and lon is not None:
                location = Location(lat, lon)
    slow = _opt(m, "slow_start", lambda v: ctx.duration(v, f"{key}.slow_start", 0, 86400), 0.0)
    if children:
        for i, mem in enumerate(members):
            if mem.alias is not None:
                ctx.err(
                    m["check"],
                    f"{key}.check",
                    f"members[{i}] is an alias: its addresses are probed by one check each; give its "
                    "pool one check",
                )
                break
    if len(ctx.problems) > before or not members or slow is None:
        return None
    return Pool(
        name, tuple(members), check, min_count, min_pct, location, slow, children, need, tuple(requires)
    )


_LDH = re.compile(r"(?!-)[a-z0-9_-]{1,63}(?<!-)")


def _member(ctx: _Ctx, key: str, loc: Located, origin: bytes) -> Member | None:
    m = ctx.mapping(
        loc,
        key,
        (),
        (
            "address",
            "target",
            "alias",
            "weight",
            "name",
            "status",
            "check_address",
            "check_port",
            "slow_start",
        ),
    )
    if m is None:
        return None
    given = [k for k in ("address", "target", "alias") if k in m]
    if len(given) != 1:
        ctx.err(
            loc,
            key,
            "a member has one of: an address (address: 192.0.2.10), a host name to answer a CNAME "
            "to (target: www.cdn.example.net.), or a host name whose addresses answer for it "
            "(alias: lb-1.elb.example.net.)" + (f", not {' and '.join(given)}" if given else ""),
        )
        return None
    before = len(ctx.problems)
    addr = target = alias = None
    if "address" in m:
        addr = ctx.ip(m["address"], f"{key}.address")
    elif "target" in m:
        target = _target(ctx, m["target"], f"{key}.target", origin)
    else:
        alias = _target(ctx, m["alias"], f"{key}.alias", origin)
        if alias is not None and names.is_subdomain(alias, origin):
            ctx.err(
                m["alias"],
                f"{key}.alias",
                "an alias names a host outside the zone (gslb resolves it); for a name of this "
                "zone, use its records or a pool of its own",
            )
        if "check_address" in m:
            ctx.err(
                m["check_address"],
                f"{key}.check_address",
                "an alias member is probed at each address its name resolves to",
                at_key=True,
            )
    weight = _opt(m, "weight", lambda v: ctx.int_(v, f"{key}.weight", 0, WEIGHT_MAX), 1)
    name = _opt(m, "name", lambda v: ctx.str_(v, f"{key}.name"), None)
    status = _opt(m, "status", lambda v: ctx.str_(v, f"{key}.status"), "obey")
    if status not in (None, "up", "down", "obey"):
        ctx.err(m["status"], f"{key}.status", f"must be up, down or obey, got {status!r}")
    check_addr = _opt(m, "check_address", lambda v: ctx.ip(v, f"{key}.check_address"), None)
    check_port = _opt(m, "check_port", lambda v: ctx.int_(v, f"{key}.check_port", 1, 65535), None)
    slow = _opt(m, "slow_start", lambda v: ctx.duration(v, f"{key}.slow_start", 0, 86400), None)
    if "slow_start" in m and slow is None:
        return None
    named = target or alias
    if len(ctx.problems) > before or (addr is None and named is None) or weight is None:
        return None
    return Member(
        address=addr,
        target=target,
        alias=alias,
        name=name or (str(addr) if named is None else names.to_text(named).rstrip(".")),
        weight=weight,
        status=status,  # type: ignore[arg-type]
        check_address=check_addr,
        check_port=check_port,
        slow_start=slow,
    )


def _target(ctx: _Ctx, loc: Located, key: str, origin: bytes) -> bytes | None:
    """A member's target or alias: a host name (letters, digits, hyphens; ``_`` allowed,
    as in service names), absolute with a final dot or relative to the zone."""
    text = ctx.str_(loc, key)
    if text is None:
        return None
    try:
        ipaddress.ip_address(text)
    except ValueError:
        pass
    else:
        ctx.err(loc, key, f"{text!r} is an address: write it as address: {text}, in a pool of addresses")
        return None
    wire = ctx.name(loc, key, origin)
    if wire is None:
        return None
    bad = [lb for lb in names.labels(wire) if not _LDH.fullmatch(lb.decode("ascii", "replace"))]
    if bad or wire == names.ROOT:
        what = repr(bad[0].decode("ascii", "replace")) if bad else "the root"
        ctx.err(
            loc,
            key,
            f"not a host name: {text!r} ({what}: labels are letters, digits and hyphens, "
            "not starting or ending with a hyphen)",
        )
        return None
    return wire
