"""A zone file as a whole: zone, ttl, soa, nameservers, then the sections; whole-zone checks."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import dns.rdata
import dns.rdataclass
import dns.rdatatype

from gslb.dns import names
from gslb.dnssec import keys as dnssec_keys
from gslb.zones.errors import ConfigError, Problem
from gslb.zones.load.checks import _checks
from gslb.zones.load.ctx import DEFAULT_TTL, _Ctx, _join, _opt
from gslb.zones.load.pools import _defined, _pools, _used_checks
from gslb.zones.load.records import _merge_glue, _records
from gslb.zones.model import (
    TTL_MAX,
    RRset,
    Soa,
    Zone,
)
from gslb.zones.yamlsrc import Located, load, release


def load_zone(
    path: str | Path,
    text: str | None = None,
    geo_db: bool | None = None,
    asn_db: bool | None = None,
    gentle: bool = False,
) -> Zone:
    """Load and validate one zone file; raise ConfigError with every problem.

    ``geo_db`` / ``asn_db`` say whether the server has a GeoIP / ASN database:
    False makes rules that need one an error; None (offline checks) only checks syntax.
    ``gentle``: free the parsed document a piece at a time (a reload, running in a
    thread beside the answering event loop; see ``yamlsrc.release``).
    """
    p = str(path)
    if text is None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError([Problem(p, 1, 1, "", f"cannot read: {e}")]) from None
    doc = load(text, p)
    ctx = _Ctx(p, geo_db=geo_db, asn_db=asn_db)
    zone = _zone(ctx, doc, text)
    if gentle:
        release(doc)
    if ctx.problems or zone is None:
        raise ConfigError(ctx.problems or [Problem(p, 1, 1, "", "invalid zone")])
    return zone


def _zone(ctx: _Ctx, doc: Located, text: str) -> Zone | None:
    top = ctx.mapping(
        doc,
        "",
        ("zone", "nameservers"),
        ("ttl", "ns_ttl", "ecs", "quorum", "dnssec", "soa", "checks", "pools", "records"),
    )
    if top is None:
        return None
    origin = None
    if "zone" in top:
        zt = ctx.str_(top["zone"], "zone")
        if zt is not None:
            if not zt.endswith("."):
                ctx.err(top["zone"], "zone", f"must be an absolute name ending in '.', e.g. {zt}.")
            else:
                origin = ctx.name(top["zone"], "zone", None)
    ttl = _opt(top, "ttl", lambda v: ctx.int_(v, "ttl", 0, TTL_MAX), DEFAULT_TTL)
    if origin is None:
        return None  # every other name depends on the origin
    ttl_ = ttl if ttl is not None else DEFAULT_TTL

    ctx.ecs_default = _opt(top, "ecs", lambda v: ctx.bool_(v, "ecs"), True) is not False
    quorum = _opt(top, "quorum", lambda v: ctx.quorum(v, "quorum"), "majority")
    ns_ttl = _opt(top, "ns_ttl", lambda v: ctx.int_(v, "ns_ttl", 0, TTL_MAX), ttl_)
    ns_ttl_ = ns_ttl if ns_ttl is not None else ttl_
    ns_hosts, glue = _nameservers(ctx, top.get("nameservers"), origin, ttl_)
    soa = _soa(ctx, top.get("soa"), origin, ns_hosts, ttl_)
    checks = _checks(ctx, top.get("checks"))
    check_names = _defined(top.get("checks"))
    pools = _pools(ctx, top.get("pools"), checks, check_names, origin)
    pool_names = _defined(top.get("pools"))
    rrsets, balanced, used_pools = _records(ctx, top.get("records"), origin, ttl_, pools, pool_names)

    # glue for the apex name servers joins the static data (same RRset rules)
    rrsets = _merge_glue(ctx, rrsets, glue, ns_ttl_)
    dnssec_keys = _dnssec(ctx, top.get("dnssec"), origin, ns_ttl_, rrsets)

    pools_loc = top.get("pools")
    todo = list(used_pools)  # a pool another used pool requires is used too
    while todo:
        entry = pools.get(todo.pop())
        for req in entry[0].requires if entry is not None else ():
            r = req.partition("/")[0]
            if r not in used_pools:
                used_pools.add(r)
                todo.append(r)
    if pools_loc is not None and isinstance(pools_loc.value, dict):
        for name, loc in pools_loc.value.items():
            if name not in used_pools:
                ctx.err(loc, f"pools.{name}", "pool is not used by any record", at_key=True)
    used_checks = _used_checks(pools_loc)
    checks_loc = top.get("checks")
    if checks_loc is not None and isinstance(checks_loc.value, dict):
        for name, loc in checks_loc.value.items():
            if name not in used_checks:
                ctx.err(loc, f"checks.{name}", "check is not used by any pool", at_key=True)

    if ctx.problems or soa is None:
        return None
    return Zone(
        origin=origin,
        path=ctx.path,
        ttl=ttl_,
        ns_ttl=ns_ttl_,
        quorum=quorum or "majority",
        dnssec_keys=dnssec_keys,
        soa=soa,
        nameservers=tuple(ns_hosts),
        rrsets=tuple(rrsets),
        balanced=tuple(balanced),
        checks=tuple(c for c, _ in checks.values()),
        pools=tuple(p for p, _ in pools.values()),
        digest=hashlib.sha256(text.encode()).hexdigest(),
        warnings=tuple(ctx.warnings),
    )


T_DNSKEY = 48


def _dnssec(ctx: _Ctx, loc: Located | None, origin: bytes, ttl: int, rrsets: list[RRset]) -> tuple[str, ...]:
    """``dnssec: {key: PATH}``, or ``{keys: [PATH, PATH]}`` during a rollover: the keys are
    read now (a missing or unusable key is a positioned error; a relative path is
    relative to the zone file's directory), and their DNSKEYs join the apex. Returns
    the keys' paths."""
    if loc is None:
        return ()
    m = ctx.mapping(loc, "dnssec", (), ("key", "keys"))
    if m is None:
        return ()
    if ("key" in m) == ("keys" in m):
        ctx.err(loc, "dnssec", "give 'key' (one key) or 'keys' (two, during a rollover)")
        return ()
    items: list[tuple[Located, str]] = []
    if "key" in m:
        items = [(m["key"], "dnssec.key")]
    else:
        seq = ctx.seq(m["keys"], "dnssec.keys")
        if seq is None:
            return ()
        if not 1 <= len(seq) <= 2:
            ctx.err(m["keys"], "dnssec.keys", f"one or two keys (a rollover), got {len(seq)}")
            return ()
        items = [(it, f"dnssec.keys[{i}]") for i, it in enumerate(seq)]
    if any(r.name == origin and r.rtype == T_DNSKEY for r in rrsets):
        ctx.err(
            loc, "dnssec", "the zone has DNSKEY records of its own; gslb publishes its key's DNSKEY itself"
        )
        return ()
    paths, dnskeys = [], []
    for it, key_name in items:
        text = ctx.str_(it, key_name)
        if text is None:
            return ()
        path = Path(text) if Path(text).is_absolute() else Path(ctx.path).parent / text
        try:
            key = dnssec_keys.load(path)
        except dnssec_keys.KeyError_ as e:
            ctx.err(it, key_name, str(e))
            return ()
        if key.dnskey in dnskeys:
            ctx.err(it, key_name, "the same key twice")
            return ()
        paths.append(str(path))
        dnskeys.append(key.dnskey)
    texts = tuple(
        dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.DNSKEY, k, 0, len(k)).to_text() for k in dnskeys
    )
    rrsets.append(RRset(origin, T_DNSKEY, ttl, tuple(dnskeys), texts))
    return tuple(paths)


def _nameservers(
    ctx: _Ctx, loc: Located | None, origin: bytes, ttl: int
) -> tuple[list[bytes], list[tuple[Located, bytes, int, str]]]:
    hosts: list[bytes] = []
    glue: list[tuple[Located, bytes, int, str]] = []  # (loc, owner, rtype, address text)
    if loc is None:
        return hosts, glue
    if not isinstance(loc.value, dict) or not loc.value:
        ctx.err(loc, "nameservers", "expected a mapping of host name -> list of addresses")
        return hosts, glue
    for host_text, addrs in loc.value.items():
        key = f"nameservers.{host_text}"
        if not host_text.endswith("."):
            ctx.err(addrs, key, "name server host must be absolute (end with '.')", at_key=True)
            continue
        try:
            host = names.from_text(host_text)
        except ValueError as e:
            ctx.err(addrs, key, f"bad name: {e}", at_key=True)
            continue
        hosts.append(host)
        items = [] if addrs.value is None else ctx.seq(addrs, key)
        if items is None:
            continue
        inside = names.is_subdomain(host, origin)
        if inside and not items:  # its A/AAAA must then be in records (checked with them)
            glue.append((addrs, host, 0, ""))
        if not inside and items:
            ctx.err(addrs, key, "host is outside the zone: addresses are only given for hosts inside it")
            continue
        for i, a in enumerate(items):
            ip = ctx.ip(a, _join(key, i))
            if ip is not None:
                glue.append((a, host, 1 if ip.version == 4 else 28, str(ip)))
    return hosts, glue


def _soa(ctx: _Ctx, loc: Located | None, origin: bytes, ns: list[bytes], ttl: int) -> Soa | None:
    m: dict[str, Located] = {}
    if loc is not None:
        got = ctx.mapping(
            loc, "soa", (), ("mname", "rname", "serial", "refresh", "retry", "expire", "minimum", "ttl")
        )
        if got is None:
            return None
        m = got
    mname = ctx.name(m["mname"], "soa.mname", origin) if "mname" in m else (ns[0] if ns else origin)
    rname = (
        ctx.name(m["rname"], "soa.rname", origin) if "rname" in m else names.from_text("hostmaster", origin)
    )
    u32 = 4294967295
    serial = _opt(m, "serial", lambda v: ctx.int_(v, "soa.serial", 1, u32), None)
    vals: dict[str, int | None] = {}
    for key, default in (("refresh", 7200), ("retry", 3600), ("expire", 1209600), ("minimum", 300)):
        vals[key] = ctx.int_(m[key], f"soa.{key}", 0, TTL_MAX) if key in m else default
    sttl = _opt(m, "ttl", lambda v: ctx.int_(v, "soa.ttl", 0, TTL_MAX), ttl)
    if mname is None or rname is None or sttl is None or any(v is None for v in vals.values()):
        return None
    return Soa(
        mname=mname,
        rname=rname,
        serial=serial,
        refresh=vals["refresh"] or 0,
        retry=vals["retry"] or 0,
        expire=vals["expire"] or 0,
        minimum=vals["minimum"] or 0,
        ttl=sttl,
    )


def iter_zone_files(directory: str | Path) -> Iterator[Path]:
    """Zone files in a directory, in a stable order (hidden files skipped)."""
    for p in sorted(Path(directory).glob("*.yaml")):
        if not p.name.startswith("."):
            yield p


def load_zones(
    paths: list[Path], geo_db: bool | None = None, asn_db: bool | None = None
) -> tuple[list[Zone], list[Problem]]:
    """Load several zones; each bad file is reported, good ones returned. ``geo_db`` /
    ``asn_db``: as for :func:`load_zone` (False: rules that need the database are errors)."""
    zones: list[Zone] = []
    problems: list[Problem] = []
    seen: dict[bytes, str] = {}
    for p in paths:
        try:
            z = load_zone(p, geo_db=geo_db, asn_db=asn_db)
        except ConfigError as e:
            problems.extend(e.problems)
            continue
        if z.origin in seen:
            problems.append(
                Problem(
                    str(p),
                    1,
                    1,
                    "zone",
                    f"zone {names.to_text(z.origin)} is also defined in {seen[z.origin]}",
                )
            )
            continue
        seen[z.origin] = str(p)
        zones.append(z)
    return zones, problems
