"""Zone YAML -> frozen model, collecting every problem with file:line:col.

``load_zone(path)`` returns a :class:`gslb.model.Zone` or raises
:class:`gslb.errors.ConfigError` listing all problems at once. Unknown keys,
duplicate keys, bad values, undefined or unused pools and checks, CNAMEs beside
other data and names outside the zone are all errors: nothing is dropped
silently. The format is documented key by key in docs/zone-format.md.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from gslb import names
from gslb.dnsconst import FAMILY_OF_TYPE, T_A, T_AAAA
from gslb.errors import ConfigError, Problem
from gslb.model import (
    CONTINENTS,
    TTL_MAX,
    WEIGHT_MAX,
    Balanced,
    Check,
    GeoMatch,
    IPAddress,
    IPNetwork,
    Location,
    Member,
    Pool,
    RRset,
    Rule,
    Soa,
    StatusRange,
    Zone,
)
from gslb.policies import REGISTRY as POLICIES
from gslb.yamlsrc import Located, load, release

T = TypeVar("T")

DEFAULT_TTL = 300
DEFAULT_BALANCED_TTL = 30

# Types a zone may carry in `records`. SOA and apex NS come from `soa` and
# `nameservers`; DNSSEC types need signing, which gslb does not do.
STATIC_TYPES = frozenset(
    dns.rdatatype.from_text(t)
    for t in (
        "A",
        "AAAA",
        "CNAME",
        "MX",
        "TXT",
        "NS",
        "SRV",
        "CAA",
        "PTR",
        "HTTPS",
        "SVCB",
        "NAPTR",
        "SSHFP",
        "TLSA",
        "LOC",
        "HINFO",
        "URI",
        "RP",
        "SPF",
    )
)
# rdata names that deserve additional-section processing (address records)
_TARGET_ATTR = {
    dns.rdatatype.NS: "target",
    dns.rdatatype.MX: "exchange",
    dns.rdatatype.SRV: "target",
}
WHEN_ALL_DOWN = ("serve_all", "nodata", "servfail", "refuse")
CHECK_TYPES = ("tcp", "http", "https")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


@dataclass
class _Ctx:
    """Problem collector bound to one file."""

    path: str
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    geo_db: bool | None = None  # None: not known (offline check); False: no GeoIP database loaded
    asn_db: bool | None = None
    ecs_default: bool = True

    def warn(self, loc: Located, key: str, message: str) -> None:
        self.warnings.append(Problem(self.path, loc.line, loc.col, key, message))

    def err(self, loc: Located, key: str, message: str, at_key: bool = False) -> None:
        line, col = (loc.key_line, loc.key_col) if at_key and loc.key_line else (loc.line, loc.col)
        self.problems.append(Problem(self.path, line, col, key, message))

    def mapping(
        self, loc: Located, key: str, required: tuple[str, ...], optional: tuple[str, ...]
    ) -> dict[str, Located] | None:
        """A mapping with known keys: report unknown and missing ones."""
        if not isinstance(loc.value, dict):
            self.err(loc, key, f"expected a mapping, got {_kind(loc)}")
            return None
        allowed = set(required) | set(optional)
        for k, v in loc.value.items():
            if k not in allowed:
                hint = _suggest(k, allowed)
                self.err(v, _join(key, k), "unknown key" + hint, at_key=True)
        for k in required:
            if k not in loc.value:
                self.err(loc, key, f"missing required key '{k}'")
        return {k: v for k, v in loc.value.items() if k in allowed}

    def seq(self, loc: Located, key: str) -> list[Located] | None:
        if not isinstance(loc.value, list):
            self.err(loc, key, f"expected a list, got {_kind(loc)}")
            return None
        return loc.value

    def str_(self, loc: Located, key: str) -> str | None:
        if isinstance(loc.value, str):
            return loc.value
        if isinstance(loc.value, bool):
            self.err(loc, key, f"expected a string, got {loc.value!r} (YAML reads it as a boolean: quote it)")
            return None
        if isinstance(loc.value, (int, float)) and not isinstance(loc.value, bool):
            return str(loc.value)
        self.err(loc, key, f"expected a string, got {_kind(loc)}")
        return None

    def int_(self, loc: Located, key: str, low: int, high: int) -> int | None:
        v = loc.value
        if isinstance(v, bool) or not isinstance(v, int):
            self.err(loc, key, f"expected an integer {low}..{high}, got {_kind(loc)}")
            return None
        if not low <= v <= high:
            self.err(loc, key, f"must be {low}..{high}, got {v}")
            return None
        return v

    def bool_(self, loc: Located, key: str) -> bool | None:
        if isinstance(loc.value, bool):
            return loc.value
        self.err(loc, key, f"expected true or false, got {_kind(loc)}")
        return None

    def float_(self, loc: Located, key: str, low: float, high: float) -> float | None:
        v = loc.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.err(loc, key, f"expected a number {low}..{high}, got {_kind(loc)}")
            return None
        if not low <= float(v) <= high:
            self.err(loc, key, f"must be {low}..{high}, got {v}")
            return None
        return float(v)

    def duration(self, loc: Located, key: str, low: float, high: float) -> float | None:
        v = loc.value
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            secs = float(v)
        elif isinstance(v, str) and (m := _DURATION.match(v)):
            secs = float(m.group(1)) * _UNITS[m.group(2)]
        else:
            self.err(loc, key, f"expected a duration like 5s, 500ms or 1m, got {loc.value!r}")
            return None
        if not low <= secs <= high:
            self.err(loc, key, f"must be {_fmt_secs(low)}..{_fmt_secs(high)}, got {_fmt_secs(secs)}")
            return None
        return secs

    def ip(self, loc: Located, key: str) -> IPAddress | None:
        text = self.str_(loc, key)
        if text is None:
            return None
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            self.err(loc, key, f"not an IPv4 or IPv6 address: {text!r}")
            return None

    def name(self, loc: Located, key: str, origin: bytes | None) -> bytes | None:
        text = self.str_(loc, key)
        if text is None:
            return None
        try:
            return names.from_text(text, origin)
        except ValueError as e:
            self.err(loc, key, f"bad name {text!r}: {e}")
            return None


def _tname(rtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rtype))


def _name_wire(name: dns.name.Name) -> bytes:
    wire = name.canonicalize().to_wire()
    assert wire is not None  # absolute names always have a wire form
    return wire


def _kind(loc: Located) -> str:
    v = loc.value
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if v is None:
        return "nothing (null)"
    return f"{type(v).__name__} {v!r}"


def _join(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key


def _suggest(key: str, allowed: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (expected one of: {', '.join(sorted(allowed))})"


def _fmt_secs(s: float) -> str:
    return f"{s * 1000:g}ms" if s < 1 else f"{s:g}s"


def _opt(m: dict[str, Located], key: str, fn: Callable[[Located], T | None], default: T) -> T | None:
    """Parse m[key] with fn if present; the default otherwise (None: invalid)."""
    return fn(m[key]) if key in m else default


# --------------------------------------------------------------------------- zone


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
        doc, "", ("zone", "nameservers"), ("ttl", "ns_ttl", "ecs", "soa", "checks", "pools", "records")
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
    ns_ttl = _opt(top, "ns_ttl", lambda v: ctx.int_(v, "ns_ttl", 0, TTL_MAX), ttl_)
    ns_ttl_ = ns_ttl if ns_ttl is not None else ttl_
    ns_hosts, glue = _nameservers(ctx, top.get("nameservers"), origin, ttl_)
    soa = _soa(ctx, top.get("soa"), origin, ns_hosts, ttl_)
    checks = _checks(ctx, top.get("checks"))
    check_names = _defined(top.get("checks"))
    pools = _pools(ctx, top.get("pools"), checks, check_names)
    pool_names = _defined(top.get("pools"))
    rrsets, balanced, used_pools = _records(ctx, top.get("records"), origin, ttl_, pools, pool_names)

    # glue for the apex name servers joins the static data (same RRset rules)
    rrsets = _merge_glue(ctx, rrsets, glue, ns_ttl_)

    pools_loc = top.get("pools")
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
        soa=soa,
        nameservers=tuple(ns_hosts),
        rrsets=tuple(rrsets),
        balanced=tuple(balanced),
        checks=tuple(c for c, _ in checks.values()),
        pools=tuple(p for p, _ in pools.values()),
        digest=hashlib.sha256(text.encode()).hexdigest(),
        warnings=tuple(ctx.warnings),
    )


def _defined(loc: Located | None) -> frozenset[str]:
    """Names defined under a mapping key, valid or not (no cascade of 'undefined')."""
    return frozenset(loc.value) if loc is not None and isinstance(loc.value, dict) else frozenset()


def _used_checks(pools_loc: Located | None) -> set[str]:
    """Check names referenced by any pool, valid or not."""
    out: set[str] = set()
    if pools_loc is not None and isinstance(pools_loc.value, dict):
        for pl in pools_loc.value.values():
            if isinstance(pl.value, dict) and "check" in pl.value:
                out.add(str(pl.value["check"].value))
    return out


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
        if inside and not items:
            ctx.err(addrs, key, "host is inside the zone: list its addresses (glue)", at_key=True)
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


# ------------------------------------------------------------------------- checks

_CHECK_KEYS = (
    "type", "port", "path", "host", "method", "headers", "expect",
    "tls_verify", "ca_file", "interval", "timeout", "fall", "rise", "send", "load",
)  # fmt: skip


def _checks(ctx: _Ctx, loc: Located | None) -> dict[str, tuple[Check, Located]]:
    out: dict[str, tuple[Check, Located]] = {}
    if loc is None:
        return out
    if not isinstance(loc.value, dict):
        ctx.err(loc, "checks", f"expected a mapping of check name -> check, got {_kind(loc)}")
        return out
    for name, cl in loc.value.items():
        c = _check(ctx, name, cl)
        if c is not None:
            out[name] = (c, cl)
    return out


def _check(ctx: _Ctx, name: str, loc: Located) -> Check | None:
    key = f"checks.{name}"
    m = ctx.mapping(loc, key, ("type",), tuple(k for k in _CHECK_KEYS if k != "type"))
    if m is None:
        return None
    before = len(ctx.problems)
    ctype = ctx.str_(m["type"], f"{key}.type") if "type" in m else None
    if ctype is not None and ctype not in CHECK_TYPES:
        ctx.err(m["type"], f"{key}.type", f"must be one of {', '.join(CHECK_TYPES)}, got {ctype!r}")
        ctype = None
    default_port = {"http": 80, "https": 443}.get(ctype or "")
    if "port" in m:
        port = ctx.int_(m["port"], f"{key}.port", 1, 65535)
    elif default_port is None and ctype == "tcp":
        ctx.err(loc, key, "a tcp check needs a 'port'")
        port = None
    else:
        port = default_port
    httpish = ctype in ("http", "https")
    for k in ("path", "host", "method", "headers", "tls_verify", "ca_file"):
        if k in m and ctype == "tcp":
            ctx.err(m[k], f"{key}.{k}", "only for http and https checks", at_key=True)
    for k in ("tls_verify", "ca_file"):
        if k in m and ctype == "http":
            ctx.err(m[k], f"{key}.{k}", "only for https checks", at_key=True)
    if "send" in m and httpish:
        ctx.err(m["send"], f"{key}.send", "only for tcp checks", at_key=True)
    path = _opt(m, "path", lambda v: ctx.str_(v, f"{key}.path"), "/")
    if path is not None and not path.startswith("/"):
        ctx.err(m["path"], f"{key}.path", "must start with '/'")
    host = _opt(m, "host", lambda v: ctx.str_(v, f"{key}.host"), None)
    method = _opt(m, "method", lambda v: ctx.str_(v, f"{key}.method"), "GET")
    if method not in (None, "GET", "HEAD"):
        ctx.err(m["method"], f"{key}.method", f"must be GET or HEAD, got {method!r}")
    headers: list[tuple[str, str]] = []
    if "headers" in m:
        hm = m["headers"]
        if isinstance(hm.value, dict):
            for hk, hv in hm.value.items():
                s = ctx.str_(hv, f"{key}.headers.{hk}")
                if s is not None:
                    headers.append((hk, s))
        else:
            ctx.err(hm, f"{key}.headers", "expected a mapping of header -> value")
    statuses: tuple[StatusRange, ...] = (StatusRange(200, 399),)
    body = regex = None
    if "expect" in m:
        em = ctx.mapping(m["expect"], f"{key}.expect", (), ("status", "body", "body_regex"))
        if em is not None:
            if "status" in em:
                if ctype == "tcp":
                    ctx.err(em["status"], f"{key}.expect.status", "only for http and https checks", True)
                statuses = _statuses(ctx, em["status"], f"{key}.expect.status") or statuses
            body = _opt(em, "body", lambda v: ctx.str_(v, f"{key}.expect.body"), None)
            regex = _opt(em, "body_regex", lambda v: ctx.str_(v, f"{key}.expect.body_regex"), None)
            for k in ("body", "body_regex"):
                if k in em and method == "HEAD":
                    ctx.err(em[k], f"{key}.expect.{k}", "a HEAD response has no body to check", True)
            if regex is not None:
                try:
                    re.compile(regex)
                except re.error as e:
                    ctx.err(em["body_regex"], f"{key}.expect.body_regex", f"bad regular expression: {e}")
    tls_verify = _opt(m, "tls_verify", lambda v: ctx.bool_(v, f"{key}.tls_verify"), True)
    ca_file = _opt(m, "ca_file", lambda v: ctx.str_(v, f"{key}.ca_file"), None)
    interval = _opt(m, "interval", lambda v: ctx.duration(v, f"{key}.interval", 0.1, 3600), 5.0)
    timeout = _opt(m, "timeout", lambda v: ctx.duration(v, f"{key}.timeout", 0.01, 3600), 2.0)
    if interval is not None and timeout is not None and timeout >= interval:
        where = m.get("timeout") or m.get("interval") or loc
        ctx.err(where, f"{key}.timeout", f"must be less than interval ({_fmt_secs(interval)})")
    fall = _opt(m, "fall", lambda v: ctx.int_(v, f"{key}.fall", 1, 100), 3)
    rise = _opt(m, "rise", lambda v: ctx.int_(v, f"{key}.rise", 1, 100), 2)
    send = _opt(m, "send", lambda v: ctx.str_(v, f"{key}.send"), None)
    load_header = load_json = None
    if "load" in m:
        lk = f"{key}.load"
        if ctype == "tcp":
            ctx.err(m["load"], lk, "only for http and https checks", at_key=True)
        lm = ctx.mapping(m["load"], lk, (), ("header", "json"))
        if lm is not None:
            if ("header" in lm) == ("json" in lm):
                ctx.err(m["load"], lk, "give exactly one of 'header' or 'json'")
            load_header = _opt(lm, "header", lambda v: ctx.str_(v, f"{lk}.header"), None)
            load_json = _opt(lm, "json", lambda v: ctx.str_(v, f"{lk}.json"), None)
            if "json" in lm and method == "HEAD":
                ctx.err(lm["json"], f"{lk}.json", "a HEAD response has no body to read", True)
    if len(ctx.problems) > before or ctype is None or port is None:
        return None
    assert interval is not None and timeout is not None and fall is not None and rise is not None
    return Check(
        name=name,
        type=ctype,  # type: ignore[arg-type]
        port=port,
        interval=interval,
        timeout=timeout,
        fall=fall,
        rise=rise,
        path=path or "/",
        host=host,
        method=method,  # type: ignore[arg-type]
        headers=tuple(headers),
        expect_status=statuses,
        expect_body=body,
        expect_body_regex=regex,
        tls_verify=bool(tls_verify),
        ca_file=ca_file,
        send=send.encode() if send is not None else None,
        load_header=load_header,
        load_json=load_json,
    )


def _statuses(ctx: _Ctx, loc: Located, key: str) -> tuple[StatusRange, ...] | None:
    items = loc.value if isinstance(loc.value, list) else [loc]
    out = []
    for i, it in enumerate(items):
        k = _join(key, i) if isinstance(loc.value, list) else key
        v = it.value
        if isinstance(v, int) and not isinstance(v, bool):
            lo = hi = v
        elif isinstance(v, str) and (m := re.fullmatch(r"\s*(\d{3})\s*(?:-\s*(\d{3})\s*)?", v)):
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        else:
            ctx.err(it, k, f'expected a status like 200, "200-399" or a list of them, got {v!r}')
            return None
        if not 100 <= lo <= hi <= 599:
            ctx.err(it, k, f"status range must lie within 100..599 with low <= high, got {v!r}")
            return None
        out.append(StatusRange(lo, hi))
    return tuple(out) if out else None


# -------------------------------------------------------------------------- pools


def _pools(
    ctx: _Ctx, loc: Located | None, checks: dict[str, tuple[Check, Located]], check_names: frozenset[str]
) -> dict[str, tuple[Pool, Located]]:
    out: dict[str, tuple[Pool, Located]] = {}
    if loc is None:
        return out
    if not isinstance(loc.value, dict):
        ctx.err(loc, "pools", f"expected a mapping of pool name -> pool, got {_kind(loc)}")
        return out
    for name, pl in loc.value.items():
        p = _pool(ctx, name, pl, check_names)
        if p is not None:
            out[name] = (p, pl)
    return out


def _pool(ctx: _Ctx, name: str, loc: Located, checks: frozenset[str]) -> Pool | None:
    key = f"pools.{name}"
    m = ctx.mapping(loc, key, ("members",), ("check", "min_healthy", "location"))
    if m is None:
        return None
    before = len(ctx.problems)
    check = _opt(m, "check", lambda v: ctx.str_(v, f"{key}.check"), None)
    if check is not None and check not in checks:
        known = ", ".join(sorted(checks)) or "none defined"
        ctx.err(m["check"], f"{key}.check", f"undefined check {check!r} (checks: {known})")
    members: list[Member] = []
    seen: dict[str, int] = {}
    items = ctx.seq(m["members"], f"{key}.members") if "members" in m else None
    if items is not None and not items:
        ctx.err(m["members"], f"{key}.members", "a pool needs at least one member")
    for i, ml in enumerate(items or []):
        mk = f"{key}.members[{i}]"
        mem = _member(ctx, mk, ml)
        if mem is None:
            continue
        a = str(mem.address)
        if a in seen:
            ctx.err(ml, mk, f"duplicate member address {a} (also members[{seen[a]}])")
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
    if len(ctx.problems) > before or not members:
        return None
    return Pool(name, tuple(members), check, min_count, min_pct, location)


def _member(ctx: _Ctx, key: str, loc: Located) -> Member | None:
    m = ctx.mapping(loc, key, ("address",), ("weight", "name", "status", "check_address", "check_port"))
    if m is None or "address" not in m:
        return None
    before = len(ctx.problems)
    addr = ctx.ip(m["address"], f"{key}.address")
    weight = _opt(m, "weight", lambda v: ctx.int_(v, f"{key}.weight", 0, WEIGHT_MAX), 1)
    name = _opt(m, "name", lambda v: ctx.str_(v, f"{key}.name"), None)
    status = _opt(m, "status", lambda v: ctx.str_(v, f"{key}.status"), "obey")
    if status not in (None, "up", "down", "obey"):
        ctx.err(m["status"], f"{key}.status", f"must be up, down or obey, got {status!r}")
    check_addr = _opt(m, "check_address", lambda v: ctx.ip(v, f"{key}.check_address"), None)
    check_port = _opt(m, "check_port", lambda v: ctx.int_(v, f"{key}.check_port", 1, 65535), None)
    if len(ctx.problems) > before or addr is None or weight is None:
        return None
    return Member(
        address=addr,
        name=name or str(addr),
        weight=weight,
        status=status,  # type: ignore[arg-type]
        check_address=check_addr,
        check_port=check_port,
    )


# ------------------------------------------------------------------------ records


@dataclass
class _RRsetAcc:
    loc: Located
    key: str
    ttl: int
    rdatas: list[bytes] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    targets: list[bytes] = field(default_factory=list)


def _records(
    ctx: _Ctx,
    loc: Located | None,
    origin: bytes,
    ttl: int,
    pools: dict[str, tuple[Pool, Located]],
    pool_names: frozenset[str],
) -> tuple[list[RRset], list[Balanced], set[str]]:
    used: set[str] = set()
    if loc is None:
        return [], [], used
    if not isinstance(loc.value, dict):
        ctx.err(loc, "records", f"expected a mapping of name -> list of records, got {_kind(loc)}")
        return [], [], used
    acc: dict[tuple[bytes, int], _RRsetAcc] = {}
    balanced: list[tuple[Balanced, Located, str]] = []
    owners: dict[bytes, tuple[str, Located]] = {}
    dorigin = dns.name.from_wire(origin, 0)[0]
    for owner_text, entries in loc.value.items():
        key = f"records.{owner_text}"
        owner = _owner(ctx, owner_text, entries, key, origin)
        if owner is None:
            continue
        if owner in owners:
            ctx.err(entries, key, f"same name as records.{owners[owner][0]}", at_key=True)
            continue
        owners[owner] = (owner_text, entries)
        items = ctx.seq(entries, key)
        if items is None:
            continue
        if not items:
            ctx.err(entries, key, "empty record list")
        for i, el in enumerate(items):
            ek = f"{key}[{i}]"
            if isinstance(el.value, dict) and "types" in el.value:
                b = _balanced(ctx, ek, el, owner, pools, pool_names, used)
                if b is not None:
                    balanced.append((b, el, ek))
            else:
                _static(ctx, ek, el, owner, dorigin, ttl, acc)

    _check_tree(ctx, origin, acc, balanced)
    rrsets = []
    while acc:  # emptied as it is read: a large zone's accumulators are freed a few at a time
        (name, rtype), a = acc.popitem()
        if a.rdatas:
            rrsets.append(RRset(name, rtype, a.ttl, tuple(a.rdatas), tuple(a.texts), tuple(a.targets)))
    rrsets.reverse()  # zone file order
    return rrsets, [b for b, _, _ in balanced], used


def _owner(ctx: _Ctx, text: str, loc: Located, key: str, origin: bytes) -> bytes | None:
    try:
        owner = names.from_text(text, origin)
    except ValueError as e:
        ctx.err(loc, key, f"bad name: {e}", at_key=True)
        return None
    if not names.is_subdomain(owner, origin):
        ctx.err(loc, key, f"name is outside the zone {names.to_text(origin)}", at_key=True)
        return None
    if b"\x01*" in owner[1:] and any(lb == b"*" for lb in names.labels(owner)[1:]):
        ctx.err(loc, key, "'*' is only allowed as the leftmost label", at_key=True)
        return None
    return owner


def _address_wire(rtype: int, text: str) -> bytes | None:
    """A/AAAA rdata of an address written the way dnspython would print it, else None.

    Large zones are mostly addresses; this skips building an rdata object for
    each. Anything else (other forms, other types, errors) takes dnspython's
    parser, which also words the error.
    """
    try:
        if rtype == dns.rdatatype.A:
            wire = socket.inet_pton(socket.AF_INET, text)
            return wire if socket.inet_ntop(socket.AF_INET, wire) == text else None
        if rtype == dns.rdatatype.AAAA:
            wire = socket.inet_pton(socket.AF_INET6, text)
            return wire if socket.inet_ntop(socket.AF_INET6, wire) == text else None
    except (OSError, ValueError):
        return None
    return None


def _static(
    ctx: _Ctx,
    key: str,
    loc: Located,
    owner: bytes,
    dorigin: dns.name.Name,
    ttl: int,
    acc: dict[tuple[bytes, int], _RRsetAcc],
) -> None:
    m = ctx.mapping(loc, key, ("type",), ("value", "values", "ttl"))
    if m is None or "type" not in m:
        return
    tname = ctx.str_(m["type"], f"{key}.type")
    if tname is None:
        return
    try:
        rtype = dns.rdatatype.from_text(tname.upper())
    except dns.rdatatype.UnknownRdatatype:
        ctx.err(m["type"], f"{key}.type", f"unknown record type {tname!r}")
        return
    if rtype == dns.rdatatype.SOA:
        ctx.err(m["type"], f"{key}.type", "the SOA comes from the zone's 'soa' key")
        return
    if rtype not in STATIC_TYPES:
        ctx.err(m["type"], f"{key}.type", f"record type {tname.upper()} is not supported")
        return
    if rtype == dns.rdatatype.NS and owner == _name_wire(dorigin):
        ctx.err(m["type"], f"{key}.type", "apex NS records come from the zone's 'nameservers' key")
        return
    if ("value" in m) == ("values" in m):
        ctx.err(loc, key, "give exactly one of 'value' or 'values'")
        return
    rttl = _opt(m, "ttl", lambda v: ctx.int_(v, f"{key}.ttl", 0, TTL_MAX), ttl)
    if rttl is None:
        return
    if "value" in m:
        values = [(m["value"], f"{key}.value")]
    else:
        vl = ctx.seq(m["values"], f"{key}.values")
        if vl is None:
            return
        if not vl:
            ctx.err(m["values"], f"{key}.values", "empty list")
        values = [(v, f"{key}.values[{j}]") for j, v in enumerate(vl)]
    a = acc.get((owner, rtype))
    if a is None:
        a = acc[(owner, rtype)] = _RRsetAcc(loc, key, rttl)
    elif a.ttl != rttl:
        where = m.get("ttl", loc)
        ctx.err(
            where,
            f"{key}.ttl",
            f"TTL {rttl} differs from {a.ttl} at {a.key} (one TTL per RRset, RFC 2181 5.2)",
        )
    for vloc, vkey in values:
        text = ctx.str_(vloc, vkey)
        if text is None:
            continue
        fast = _address_wire(rtype, text)
        if fast is not None:  # an address in its canonical form: no dnspython object needed
            wire, shown = fast, text
        else:
            try:
                rd = dns.rdata.from_text(dns.rdataclass.IN, rtype, text, origin=dorigin, relativize=False)
                wire = rd.to_wire() or b""
            except (dns.exception.DNSException, ValueError, TypeError) as e:
                msg = str(e).split("\n")[0] or type(e).__name__
                ctx.err(vloc, vkey, f"bad {_tname(rtype)} value {text!r}: {msg}")
                continue
            shown = rd.to_text()
        if wire in a.rdatas:
            ctx.err(vloc, vkey, f"duplicate record {_tname(rtype)} {shown}")
            continue
        a.rdatas.append(wire)
        a.texts.append(shown)
        if fast is not None:
            continue
        attr = _TARGET_ATTR.get(rtype)
        if attr is not None:
            a.targets.append(_name_wire(getattr(rd, attr)))
        elif rtype == dns.rdatatype.CNAME:
            a.targets.append(_name_wire(rd.target))  # type: ignore[attr-defined]


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
        tv = {"A": T_A, "AAAA": T_AAAA}.get(s.upper())
        if tv is None:
            ctx.err(t, f"{key}.types[{i}]", f"balanced records answer A and AAAA, not {s!r}")
        elif tv in types:
            ctx.err(t, f"{key}.types[{i}]", f"{s} listed twice")
        else:
            types.append(tv)
    if tl is not None and not tl:
        ctx.err(m["types"], f"{key}.types", "list at least one of A, AAAA")
    ttl = _opt(m, "ttl", lambda v: ctx.int_(v, f"{key}.ttl", 0, TTL_MAX), DEFAULT_BALANCED_TTL)
    select, count = "weighted", None
    hash4, hash6 = 24, 56
    ecs = _opt(m, "ecs", lambda v: ctx.bool_(v, f"{key}.ecs"), ctx.ecs_default) is not False
    if "answer" in m:
        am = ctx.mapping(m["answer"], f"{key}.answer", (), ("select", "count", "hash_prefix"))
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
            if "hash_prefix" in am:
                hk = f"{key}.answer.hash_prefix"
                hm = ctx.mapping(am["hash_prefix"], hk, (), ("ipv4", "ipv6"))
                if hm is not None:
                    hash4 = _opt(hm, "ipv4", lambda v: ctx.int_(v, f"{hk}.ipv4", 0, 32), 24) or 0
                    hash6 = _opt(hm, "ipv6", lambda v: ctx.int_(v, f"{hk}.ipv6", 0, 128), 56) or 0
                if select != "hashed":
                    ctx.err(am["hash_prefix"], hk, "only for select: hashed", at_key=True)
            if select == "closest" and ctx.geo_db is False:
                ctx.err(
                    am["select"],
                    f"{key}.answer.select",
                    "select: closest needs client coordinates: start gslb with --geoip-db (a City database)",
                )
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
        for pn in rule.pools:
            if pn in pools:
                families.update(mem.family for mem in pools[pn][0].members)
        rules.append(rule)
    if rl and rules and len(rules) == len(rl) and not rules[-1].catch_all:
        ctx.err(
            rl[-1],
            f"{key}.rules[{len(rl) - 1}]",
            "the last rule must be a catch-all (only 'pools'), so every client gets an answer",
        )
    for qtype in types:
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
        ecs=ecs, hash_prefix4=hash4, hash_prefix6=hash6,
    )  # fmt: skip


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
                m["geos"], f"{key}.geos", "geo rules need a GeoIP database: start gslb with --geoip-db", True
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
                m["asns"], f"{key}.asns", "ASN rules need an ASN database: start gslb with --asn-db", True
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


def _check_tree(
    ctx: _Ctx,
    origin: bytes,
    acc: dict[tuple[bytes, int], _RRsetAcc],
    balanced: list[tuple[Balanced, Located, str]],
) -> None:
    """Whole-zone rules: CNAME alone at its name, static vs balanced types, delegations."""
    by_name: dict[bytes, list[tuple[int, Located, str]]] = {}
    for (name, rtype), a in acc.items():
        by_name.setdefault(name, []).append((rtype, a.loc, a.key))
    for b, loc, key in balanced:
        for t in b.types:
            by_name.setdefault(b.name, []).append((t, loc, key))
    cuts = {name for (name, rtype) in acc if rtype == dns.rdatatype.NS}
    for name, entries in by_name.items():
        types = [t for t, _, _ in entries]
        dup = {t for t in types if types.count(t) > 1}
        for t in dup:
            # static + balanced for the same type (static duplicates merged already)
            for rt, loc, key in entries:
                if rt == t and isinstance(loc.value, dict) and "types" in loc.value:
                    ctx.err(loc, key, f"{_tname(t)} is both balanced and static at this name")
        if dns.rdatatype.CNAME in types:
            a = acc[(name, dns.rdatatype.CNAME)]
            if len(a.rdatas) > 1:
                ctx.err(a.loc, a.key, "a name has at most one CNAME")
            if len(set(types)) > 1:
                ctx.err(a.loc, a.key, "CNAME beside other data at the same name (RFC 1034 3.6.2)")
            if name == origin:
                ctx.err(a.loc, a.key, "CNAME at the zone apex (the apex has SOA and NS)")
        if name in cuts:
            for t, loc, key in entries:
                if t != dns.rdatatype.NS:
                    ctx.err(loc, key, f"{_tname(t)} at a delegation point (only NS belongs there)")
        for anc in names.ancestors(names.parent(name), origin) if name != origin else []:
            if anc in cuts:
                for t, loc, key in entries:
                    if t not in (dns.rdatatype.A, dns.rdatatype.AAAA) or (
                        isinstance(loc.value, dict) and "types" in loc.value
                    ):
                        ctx.err(
                            loc,
                            key,
                            f"below the delegation {names.to_text(anc)}: only glue A/AAAA may be here",
                        )
                break


def _merge_glue(
    ctx: _Ctx, rrsets: list[RRset], glue: list[tuple[Located, bytes, int, str]], ttl: int
) -> list[RRset]:
    """Address records of in-zone name servers become static RRsets (zone TTL)."""
    index = {(r.name, r.rtype) for r in rrsets}
    grouped: dict[tuple[bytes, int], list[tuple[bytes, str]]] = {}
    for loc, owner, rtype, text in glue:
        if (owner, rtype) in index:
            tn = "A" if rtype == 1 else "AAAA"
            ctx.err(
                loc, "nameservers", f"{names.to_text(owner)} {tn} is also in 'records': give it in one place"
            )
            continue
        wire = ipaddress.ip_address(text).packed
        lst = grouped.setdefault((owner, rtype), [])
        if any(w == wire for w, _ in lst):
            ctx.err(loc, "nameservers", f"duplicate address {text}")
            continue
        lst.append((wire, text))
    for (owner, rtype), lst in grouped.items():
        rrsets.append(RRset(owner, rtype, ttl, tuple(w for w, _ in lst), tuple(t for _, t in lst)))
    return rrsets


def iter_zone_files(directory: str | Path) -> Iterator[Path]:
    """Zone files in a directory, in a stable order (hidden files skipped)."""
    for p in sorted(Path(directory).glob("*.yaml")):
        if not p.name.startswith("."):
            yield p


def load_zones(paths: list[Path]) -> tuple[list[Zone], list[Problem]]:
    """Load several zones; each bad file is reported, good ones returned."""
    zones: list[Zone] = []
    problems: list[Problem] = []
    seen: dict[bytes, str] = {}
    for p in paths:
        try:
            z = load_zone(p)
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
