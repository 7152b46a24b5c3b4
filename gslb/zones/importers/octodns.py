"""``gslb import octodns``: an octoDNS zone config as a zone YAML, written for people.

The input is octoDNS's ``YamlProvider`` format: one file per zone (``unit.tests.yaml``,
record name -> record or list of records), found directly, in a directory, or
through an octoDNS main config (its ``YamlProvider`` ``directory``). It is read
with gslb's own position-keeping YAML loader, not with octoDNS: every problem is
reported with its ``file:line:col`` (octoDNS's loader keeps no positions for values),
and gslb does not take on octoDNS and its providers as dependencies. What was
written is loaded by gslb's zone loader before the command says so.

How octoDNS's semantics are carried over (docs/migration.md):

- **static records** keep their type, values and TTL (octoDNS's default TTL is
  3600); ``value`` dicts (MX, SRV, CAA, NAPTR, LOC, SSHFP, TLSA, DS, SVCB/HTTPS)
  become presentation format; TXT's ``\\;`` escapes are undone and long strings
  split at 255 octets; the apex NS becomes ``nameservers:``;
- **dynamic A/AAAA records** become balanced names. Each octoDNS pool becomes a
  gslb pool (``<name>-<pool>``), its values members with their weights and
  ``status``. Each rule keeps its order, ``geos`` and ``subnets``; its pools are
  the rule's pool and its ``fallback`` chain, then the record's ``values`` as a
  pool without health check (octoDNS's "backup/default pool"). The answer is one
  value, weighted (what Route 53 and NS1 give). A and AAAA records at one name with
  the same rules merge into one balanced name with ``types: [A, AAAA]``;
- **health checks**: ``octodns.healthcheck`` (default HTTPS, port 443, ``/_dns``)
  becomes a check on every pool of the record, except the default one. HTTPS checks
  do not verify certificates, as Route 53's do not: the probe goes to the value's
  address, which a certificate rarely names;
- **legacy ``geo``** records become balanced names with ``select: all`` (every value
  of the matched location, as octoDNS answered them), the most specific location
  first, the record's values as the catch-all;
- ``octodns.ignored`` records are left out; ``included``/``excluded`` provider lists
  and provider-specific settings are reported as notes, with their position;
- **dynamic CNAME records** become balanced CNAMEs (``types: [CNAME]``) the same way,
  their pools' values members given by name (``target:``). octoDNS gives dynamic CNAMEs
  no health check of its own: their pools get one only where ``octodns.healthcheck``
  says so (a probe of the target by name: Host and SNI);
- **ALIAS** records become balanced A/AAAA names over one pool whose member is an
  alias of the target (``alias:``; gslb resolves it and answers with its addresses);
  an ALIAS to a name of the zone itself is refused with its position;
- what gslb cannot serve (DNAME, URLFWD, dynamic records of other types, ICMP
  health checks) stops the import with its position, unless ``skip_unsupported`` (then
  the record is left out, or a dynamic record keeps its static value, with a note).
"""

from __future__ import annotations

import collections
import datetime
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gslb.zones.errors import ConfigError
from gslb.zones.importers.bind import ImportError_, Result
from gslb.zones.importers.yamlout import scalar
from gslb.zones.yamlsrc import Located, load

OCTODNS_TTL = 3600
STATIC = {
    "A", "AAAA", "CAA", "CNAME", "DS", "HTTPS", "LOC", "MX", "NAPTR", "NS", "PTR", "SPF", "SRV", "SSHFP",
    "SVCB", "TLSA", "TXT",
}  # fmt: skip
UNSUPPORTED = {
    "DNAME": "DNAME",
    "URLFWD": "HTTP redirects",
}
RECORD_KEYS = {"type", "ttl", "value", "values", "dynamic", "geo", "octodns"}
OCTODNS_KEYS = {"ignored", "excluded", "included", "healthcheck", "lenient"}


@dataclass
class _Check:
    name: str
    kind: str  # http, https, tcp
    port: int
    path: str
    host: str | None


@dataclass
class _Pool:
    name: str
    members: list[tuple[str, int, str]]  # address (or target name), weight, status
    check: str | None
    comment: str
    targets: bool = False  # members are names (a CNAME pool)
    alias: bool = False  # members are alias names (flattened: their addresses answer)


@dataclass
class _Static:
    rtype: str
    text: str
    ttl: int


@dataclass
class _Balanced:
    types: list[str]
    ttl: int
    select: str
    rules: list[tuple[list[str], list[str], list[str]]]  # geos, subnets, pools
    comment: str
    key: tuple[object, ...] = ()  # what must be equal for A and AAAA to merge


@dataclass
class _Out:
    zone: str
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    records: dict[str, list[_Static | _Balanced]] = field(default_factory=dict)  # owner -> entries
    pools: dict[str, _Pool] = field(default_factory=dict)
    checks: dict[str, _Check] = field(default_factory=dict)
    apex_ns: list[str] = field(default_factory=list)
    glue: dict[str, list[str]] = field(default_factory=dict)
    ttls: collections.Counter[int] = field(default_factory=collections.Counter)
    ns_ttl: int | None = None  # the apex NS record's TTL (None: from --ns)
    ns_where: str = ""  # the apex NS record's file:line:col ("": from --ns)
    own_ttl: set[str] = field(default_factory=set)  # in-zone name servers whose A/AAAA keep their TTL


def find_zone_file(source: Path, zone: str) -> Path:
    """The zone's octoDNS YAML: ``source`` itself, ``source/<zone>.yaml``, or through an
    octoDNS main config's YamlProvider directory."""
    bare = zone.rstrip(".")
    if source.is_dir():
        for cand in (source / f"{bare}.yaml", source / f"{bare}..yaml"):
            if cand.is_file():
                return cand
        raise ImportError_(f"{source}: no {bare}.yaml in this directory")
    try:
        text = source.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ImportError_(f"{source}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    doc = _load(text, source)
    top = doc.value
    if isinstance(top, dict) and "providers" in top and "zones" in top:  # an octoDNS main config
        providers = top["providers"].value
        if isinstance(providers, dict):
            for p in providers.values():
                pv = p.value
                if isinstance(pv, dict) and "YamlProvider" in str(_plain(pv.get("class"))):
                    d = _plain(pv.get("directory"))
                    if isinstance(d, str):
                        base = Path(d) if Path(d).is_absolute() else source.parent / d
                        return find_zone_file(base, zone)
        raise ImportError_(f"{source}: an octoDNS config without a YamlProvider directory")
    return source


def _load(text: str, path: Path) -> Located:
    try:
        return load(text, str(path))
    except ConfigError as e:
        raise ImportError_(str(e)) from None


def _plain(loc: Located | None) -> Any:
    """A Located tree as plain Python values."""
    if loc is None:
        return None
    v = loc.value
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def import_octodns(
    source: Path, zone: str, skip_unsupported: bool = False, nameservers: tuple[str, ...] = ()
) -> Result:
    """The zone ``zone`` of the octoDNS config at ``source``. ``nameservers``: apex NS
    hosts for a source without apex NS records (octoDNS often leaves them to the
    provider)."""
    origin = zone if zone.endswith(".") else zone + "."
    path = find_zone_file(source, origin)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ImportError_(f"{path}: cannot read: {getattr(e, 'strerror', None) or e}") from None
    doc = _load(text, path)
    if not isinstance(doc.value, dict):
        raise ImportError_(f"{path}:{doc.line}:{doc.col}: expected a mapping of record name -> record(s)")
    out = _Out(origin)
    for name, loc in doc.value.items():
        items = loc.value if isinstance(loc.value, list) else [loc]
        owner = "@" if name == "" else name
        by_type: dict[str, Located] = {}
        for item in items:
            where = f"{path}:{item.line}:{item.col}"
            if not isinstance(item.value, dict):
                out.problems.append(f"{where}: {owner}: expected a record (a mapping with type:)")
                continue
            rtype = str(_plain(item.value.get("type")) or "").upper()
            if rtype in by_type:
                out.problems.append(
                    f"{where}: {owner}: a second {rtype} record (octoDNS allows one per type)"
                )
                continue
            by_type[rtype] = item
            _record(out, path, owner, rtype, item, skip_unsupported)
        _merge_families(out, owner)
    given: dict[str, list[str]] = {}
    if not out.apex_ns:
        if not nameservers:
            out.problems.append(f"{path}: no NS records at the apex: name the zone's name servers with --ns")
        for spec in nameservers:  # HOST or HOST=ADDR[,ADDR]
            host, _, addrs = spec.partition("=")
            host = host if host.endswith(".") else host + "."
            out.apex_ns.append(host)
            given[host] = [a for a in addrs.split(",") if a]
        out.notes.append("apex NS from --ns: " + ", ".join(out.apex_ns))
    _glue(out, given)
    if out.problems:
        tail = ["(--skip-unsupported leaves unsupported records out)"] if not skip_unsupported else []
        raise ImportError_("\n".join([*out.problems, *tail]))
    return Result(_render(out, path), out.notes)


def _ttl(out: _Out, where: str, owner: str, item: dict[str, Located]) -> int:
    ttl = _plain(item.get("ttl"))
    if ttl is None:
        return OCTODNS_TTL
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 0:
        out.problems.append(f"{where}: {owner}: ttl must be a whole number of seconds, got {ttl!r}")
        return OCTODNS_TTL
    return ttl


def _values(item: dict[str, Located]) -> list[Any]:
    if "values" in item:
        v = _plain(item["values"])
        return v if isinstance(v, list) else [v]
    if "value" in item:
        return [_plain(item["value"])]
    return []


def _record(out: _Out, path: Path, owner: str, rtype: str, loc: Located, skip: bool) -> None:
    item = loc.value
    assert isinstance(item, dict)
    where = f"{path}:{loc.line}:{loc.col}"
    for k, v in item.items():
        if k not in RECORD_KEYS:
            out.problems.append(f"{path}:{v.key_line}:{v.key_col}: {owner}: unknown key {k!r}")
    octo = item.get("octodns")
    if octo is not None and isinstance(octo.value, dict):
        o = octo.value
        if _plain(o.get("ignored")) is True:
            out.notes.append(f"{where}: {owner} {rtype}: octodns.ignored: left out")
            return
        for k in ("included", "excluded"):
            if k in o:
                out.notes.append(
                    f"{path}:{o[k].line}:{o[k].col}: {owner} {rtype}: octodns.{k} {_plain(o[k])} "
                    "(provider lists): imported as any other record"
                )
        for k, v in o.items():
            if k not in OCTODNS_KEYS:
                out.notes.append(
                    f"{path}:{v.key_line}:{v.key_col}: {owner} {rtype}: octodns.{k}: provider-specific "
                    "settings are not imported"
                )
    if rtype == "ALIAS" and "dynamic" not in item and "geo" not in item:
        _alias(out, path, owner, loc, _ttl(out, where, owner, item))
        return
    if rtype in UNSUPPORTED or rtype not in STATIC:
        what = UNSUPPORTED.get(rtype, "this type")
        msg = f"{where}: {owner} {rtype or '(no type)'}: gslb does not serve {what}"
        if skip and rtype:
            out.notes.append(msg + " (skipped)")
        else:
            out.problems.append(msg)
        return
    ttl = _ttl(out, where, owner, item)
    if "dynamic" in item:
        if rtype in ("A", "AAAA", "CNAME"):
            _dynamic(out, path, owner, rtype, loc, ttl)
            return
        d = item["dynamic"]
        msg = (
            f"{path}:{d.line}:{d.col}: {owner} {rtype}: dynamic {rtype} records cannot be expressed "
            "(balanced names answer A and AAAA, or a CNAME)"
        )
        if not skip:
            out.problems.append(msg)
            return
        out.notes.append(msg + "; imported as its static value")
    if "geo" in item:
        if rtype in ("A", "AAAA"):
            _legacy_geo(out, path, owner, rtype, loc, ttl)
            return
        out.problems.append(f"{where}: {owner} {rtype}: geo on a {rtype} record")
        return
    values = _values(item)
    if not values:
        out.problems.append(f"{where}: {owner} {rtype}: no value(s)")
        return
    texts = []
    for v in values:
        try:
            texts.append(_presentation(rtype, v))
        except (ValueError, KeyError, TypeError) as e:
            out.problems.append(f"{where}: {owner} {rtype}: bad value {v!r}: {e}")
    if rtype == "NS" and owner == "@":
        out.apex_ns += texts
        out.ns_ttl = ttl
        out.ns_where = where
        return
    out.ttls[ttl] += len(texts)
    out.records.setdefault(owner, []).extend(_Static(rtype, t, ttl) for t in texts)


# ------------------------------------------------------------------ value formats


def _q(s: Any) -> str:
    """A character-string in presentation format: quoted, ``"`` and ``\\`` escaped."""
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _txt(s: str) -> str:
    """octoDNS TXT text (``\\;`` escaped) as quoted strings of at most 255 octets."""
    raw = s.replace("\\;", ";").encode()
    if re.fullmatch(rb'(\s*"([^"\\]|\\.)*")+\s*', raw):  # already quoted chunks
        return raw.decode()
    chunks = [raw[i : i + 255] for i in range(0, len(raw), 255)] or [b""]
    return " ".join(_q(c.decode(errors="replace")) for c in chunks)


def _presentation(rtype: str, v: Any) -> str:
    if rtype in ("A", "AAAA"):
        return str(ipaddress.ip_address(str(v)))
    if rtype in ("CNAME", "NS", "PTR"):
        if not isinstance(v, str) or not v.endswith("."):
            raise ValueError("expected an absolute name ending in '.'")
        return v
    if rtype in ("TXT", "SPF"):
        return _txt(str(v))
    if not isinstance(v, dict):
        raise ValueError("expected a mapping")
    if rtype == "MX":
        return f"{v.get('preference', v.get('priority'))} {v.get('exchange', v.get('value'))}"
    if rtype == "SRV":
        return f"{v['priority']} {v['weight']} {v['port']} {v['target']}"
    if rtype == "CAA":
        return f"{v.get('flags', 0)} {v['tag']} {_q(v['value'])}"
    if rtype == "SSHFP":
        return f"{v['algorithm']} {v['fingerprint_type']} {v['fingerprint']}"
    if rtype == "TLSA":
        return (
            f"{v['certificate_usage']} {v['selector']} {v['matching_type']} "
            f"{v['certificate_association_data']}"
        )
    if rtype == "DS":
        return f"{v['key_tag']} {v['algorithm']} {v['digest_type']} {v['digest']}"
    if rtype == "NAPTR":
        return (
            f"{v['order']} {v['preference']} {_q(v['flags'])} {_q(v['service'])} {_q(v['regexp'])} "
            f"{v['replacement']}"
        )
    if rtype == "LOC":
        return (
            f"{v['lat_degrees']} {v['lat_minutes']} {float(v['lat_seconds']):.3f} {v['lat_direction']} "
            f"{v['long_degrees']} {v['long_minutes']} {float(v['long_seconds']):.3f} {v['long_direction']} "
            f"{v['altitude']}m {v['size']}m {v['precision_horz']}m {v['precision_vert']}m"
        )
    if rtype in ("SVCB", "HTTPS"):
        params = []
        for key, val in (v.get("svcparams") or {}).items():
            if val is None or val == "":
                params.append(str(key))
            else:
                text = ",".join(str(x) for x in val) if isinstance(val, list) else str(val)
                params.append(f"{key}={text}")
        return " ".join([str(v["svcpriority"]), str(v["targetname"]), *params])
    raise ValueError(f"no conversion for {rtype}")


# ------------------------------------------------------------------ dynamic records


def _pool_name(out: _Out, owner: str, pool: str) -> str:
    base = "apex" if owner == "@" else owner
    return re.sub(r"[^A-Za-z0-9_-]+", "-", f"{base}-{pool}").strip("-")


def _check_for(out: _Out, path: Path, owner: str, rtype: str, item: dict[str, Located]) -> str | None:
    octo = _plain(item.get("octodns")) or {}
    hc = octo.get("healthcheck") or {}
    where = item.get("octodns")
    proto = str(hc.get("protocol", "HTTPS")).upper()
    if proto not in ("HTTP", "HTTPS", "TCP"):
        pos = f"{path}:{where.line}:{where.col}" if where else str(path)
        out.problems.append(
            f"{pos}: {owner} {rtype}: healthcheck protocol {proto}: gslb checks HTTP, HTTPS, TCP"
        )
        return None
    port = int(hc.get("port", 443 if proto != "HTTP" else 80))
    chk = _Check("", proto.lower(), port, str(hc.get("path", "/_dns")), hc.get("host"))
    for c in out.checks.values():
        if (c.kind, c.port, c.path, c.host) == (chk.kind, chk.port, chk.path, chk.host):
            return c.name
    name = "octodns" if not out.checks else _pool_name(out, owner, "check")
    while name in out.checks:
        name += "-2"
    chk.name = name
    out.checks[name] = chk
    return name


def _members(values: Any, targets: bool = False) -> list[tuple[str, int, str]]:
    """A pool's values as (address, weight, status); ``targets``: host names (a dynamic
    CNAME's), absolute as octoDNS writes them."""

    def member(text: str) -> str:
        if not targets:
            return str(ipaddress.ip_address(text))
        if not text.endswith("."):
            raise ValueError(f"{text!r}: a CNAME target is an absolute name ending in '.'")
        return text.lower()

    out = []
    for v in values or []:
        if isinstance(v, dict):
            out.append((member(str(v["value"])), int(v.get("weight", 1)), str(v.get("status", "obey"))))
        else:
            out.append((member(str(v)), 1, "obey"))
    return out


def _dynamic(out: _Out, path: Path, owner: str, rtype: str, loc: Located, ttl: int) -> None:
    item = loc.value
    assert isinstance(item, dict)
    dyn = item["dynamic"]
    d = _plain(dyn)
    where = f"{path}:{dyn.line}:{dyn.col}"
    pools_src = d.get("pools") if isinstance(d, dict) else None
    rules_src = d.get("rules") if isinstance(d, dict) else None
    if not isinstance(pools_src, dict) or not isinstance(rules_src, list) or not rules_src:
        out.problems.append(f"{where}: {owner} {rtype}: dynamic needs pools (a mapping) and rules (a list)")
        return
    cname = rtype == "CNAME"
    octo = _plain(item.get("octodns")) or {}
    # octoDNS health-checks dynamic A/AAAA by default, dynamic CNAMEs not at all
    check = _check_for(out, path, owner, rtype, item) if not cname or octo.get("healthcheck") else None
    names: dict[str, str] = {}
    try:
        for pname, p in pools_src.items():
            members = _members(p.get("values"), cname)
            gname = _add_pool(
                out, _pool_name(out, owner, pname), members, check, f"octoDNS {owner} pool {pname}", rtype
            )
            names[pname] = gname
        default = _members(_values(item), cname)
    except (ValueError, KeyError, TypeError) as e:
        out.problems.append(f"{where}: {owner} {rtype}: bad pool value: {e}")
        return
    default_name = ""
    if default:
        # the record's values; named apart from a source pool called "default"
        base = _pool_name(out, owner, "default")
        default_name = _add_pool(
            out,
            base if base not in names.values() else _pool_name(out, owner, "values"),
            default,
            None,
            f"octoDNS {owner} values: the backup pool, not health checked",
            rtype,
        )
    rules: list[tuple[list[str], list[str], list[str]]] = []
    assert isinstance(dyn.value, dict)
    rule_locs = dyn.value["rules"].value
    assert isinstance(rule_locs, list)
    for i, r in enumerate(rules_src):
        pos = f"{path}:{rule_locs[i].line}:{rule_locs[i].col}"
        if not isinstance(r, dict) or r.get("pool") not in pools_src:
            out.problems.append(f"{pos}: {owner} {rtype}: rule {i}: pool {r.get('pool')!r} is not in pools")
            continue
        chain, p, seen = [], r["pool"], set()
        while p is not None and p not in seen:  # the fallback chain (octoDNS refuses loops)
            seen.add(p)
            chain.append(names[p])
            p = pools_src.get(p, {}).get("fallback")
        if default_name:
            chain.append(default_name)
        geos = [str(g) for g in r.get("geos") or []]
        subnets = [str(s) for s in r.get("subnets") or []]
        rules.append((geos, subnets, chain))
    if rules and (rules[-1][0] or rules[-1][1]):  # octoDNS wants a catch-all; gslb needs one
        rules.append(([], [], [default_name] if default_name else rules[-1][2]))
        out.notes.append(
            f"{where}: {owner} {rtype}: no catch-all rule: added one serving the record's values"
        )
    key = (tuple((tuple(g), tuple(s), tuple(c)) for g, s, c in rules), ttl, check)
    bal = _Balanced([rtype], ttl, "weighted", rules, f"octoDNS dynamic {rtype} ({len(pools_src)} pools)", key)
    out.records.setdefault(owner, []).append(bal)


def _add_pool(
    out: _Out, name: str, members: list[tuple[str, int, str]], check: str | None, comment: str, rtype: str
) -> str:
    """A pool; its name. The A and the AAAA record of one name share pools (each answer
    takes the members of its family), unless their health checks differ."""
    targets = rtype == "CNAME"
    if name in out.pools and (out.pools[name].check != check or out.pools[name].targets != targets):
        name = f"{name}-{rtype.lower()}"
    if name in out.pools:
        p = out.pools[name]
        have = {m[0] for m in p.members}
        p.members += [m for m in members if m[0] not in have]
        return name
    out.pools[name] = _Pool(name, members, check, comment, targets)
    return name


def _alias(out: _Out, path: Path, owner: str, loc: Located, ttl: int) -> None:
    """An ALIAS record: a balanced A/AAAA name whose one member is an alias of the target
    (gslb resolves it and answers with its addresses: flattening)."""
    item = loc.value
    assert isinstance(item, dict)
    where = f"{path}:{loc.line}:{loc.col}"
    values = _values(item)
    if len(values) != 1 or not isinstance(values[0], str) or not values[0].endswith("."):
        out.problems.append(f"{where}: {owner} ALIAS: one value, an absolute name ending in '.'")
        return
    target = values[0].lower()
    if _relative(target, out.zone) is not None:
        v = item.get("value") or item.get("values") or loc
        out.problems.append(
            f"{path}:{v.line}:{v.col}: {owner} ALIAS: {target} is in this zone: gslb resolves alias "
            "names elsewhere (give the name its own records, or a balanced record over its pool)"
        )
        return
    pname = _add_pool(out, _pool_name(out, owner, "alias"), [(target, 1, "obey")], None,
                      f"octoDNS {owner} ALIAS: {target}'s addresses, resolved by gslb", "ALIAS")  # fmt: skip
    out.pools[pname].alias = True
    key = (((), (), (pname,)), ttl, None)
    bal = _Balanced(["A", "AAAA"], ttl, "all", [([], [], [pname])], f"octoDNS ALIAS to {target}", key)
    out.records.setdefault(owner, []).append(bal)


def _legacy_geo(out: _Out, path: Path, owner: str, rtype: str, loc: Located, ttl: int) -> None:
    item = loc.value
    assert isinstance(item, dict)
    geo = _plain(item["geo"])
    where = f"{path}:{item['geo'].line}:{item['geo'].col}"
    if not isinstance(geo, dict) or not geo:
        out.problems.append(f"{where}: {owner} {rtype}: geo must map locations to values")
        return
    rules: list[tuple[list[str], list[str], list[str]]] = []
    # the most specific location first (NA-US-CA before NA-US before NA), then the source's order
    for code in sorted(geo, key=lambda c: -str(c).count("-")):
        try:
            pname = _add_pool(
                out,
                _pool_name(out, owner, f"geo-{code}".lower()),
                _members(geo[code]),
                None,
                f"octoDNS {owner} geo {code}",
                rtype,
            )
        except (ValueError, KeyError, TypeError) as e:
            out.problems.append(f"{where}: {owner} {rtype}: geo {code}: {e}")
            return
        rules.append(([str(code)], [], [pname]))
    dname = _add_pool(
        out,
        _pool_name(out, owner, "default"),
        _members(_values(item)),
        None,
        f"octoDNS {owner} values: clients of no listed location",
        rtype,
    )
    rules.append(([], [], [dname]))
    key = (tuple((tuple(g), tuple(s), tuple(c)) for g, s, c in rules), ttl, None)
    bal = _Balanced([rtype], ttl, "all", rules, "octoDNS legacy geo record: every value of the location", key)
    out.records.setdefault(owner, []).append(bal)
    out.notes.append(f"{where}: {owner} {rtype}: legacy geo record imported as a balanced name (select: all)")


def _merge_families(out: _Out, owner: str) -> None:
    """An A and an AAAA balanced entry at one name with the same rules: one entry."""
    entries = out.records.get(owner, [])
    bals = [e for e in entries if isinstance(e, _Balanced)]
    if len(bals) == 2 and bals[0].key == bals[1].key and bals[0].select == bals[1].select:
        bals[0].types = ["A", "AAAA"]
        bals[0].comment += " and AAAA with the same rules"
        entries.remove(bals[1])


# ------------------------------------------------------------------ writing


def _render(out: _Out, path: Path) -> str:
    today = datetime.date.today().isoformat()
    default_ttl = out.ttls.most_common(1)[0][0] if out.ttls else OCTODNS_TTL
    lines = [
        f"# Imported from {path} by `gslb import octodns` on {today}.",
        "# octoDNS leaves the SOA to the provider: gslb's defaults apply (docs/zone-format.md).",
        f"zone: {out.zone}",
        f"ttl: {default_ttl}   # the most common TTL of the static records (octoDNS's default: 3600)",
    ]
    if out.ns_ttl is not None and out.ns_ttl != default_ttl:
        lines.append(f"ns_ttl: {out.ns_ttl}   # the apex NS record's (and its glue's)")
    lines.append("nameservers:")
    for ns, addrs in out.glue.items():
        if ns in out.own_ttl:
            lines.append(f"  {ns}: []   # its addresses are in records, with their own TTL")
            continue
        note = "" if _relative(ns, out.zone) is not None else "   # outside the zone: no glue"
        lines.append(f"  {ns}: [{', '.join(scalar(a) for a in addrs)}]{note}")
    if out.checks:
        lines.append("checks:")
        for c in out.checks.values():
            lines.append(f"  {c.name}:   # octoDNS healthcheck: {c.kind.upper()} port {c.port} {c.path}")
            lines.append(f"    type: {c.kind}")
            lines.append(f"    port: {c.port}")
            if c.kind != "tcp":
                lines.append(f"    path: {scalar(c.path if c.path.startswith('/') else '/' + c.path)}")
                if c.host:
                    lines.append(f"    host: {scalar(str(c.host))}")
            if c.kind == "https":
                lines.append(
                    "    tls_verify: false   # as Route 53: the probe goes to an address, not a name"
                )
    used = {
        p
        for entries in out.records.values()
        for e in entries
        if isinstance(e, _Balanced)
        for r in e.rules
        for p in r[2]
    }
    pools = [p for p in out.pools.values() if p.name in used]
    if pools:
        lines.append("pools:")
        for p in pools:
            lines.append(f"  {p.name}:   # {p.comment}")
            if p.check:
                lines.append(f"    check: {p.check}")
            lines.append("    members:")
            for addr, weight, status in p.members:
                extra = f", weight: {weight}" if weight != 1 else ""
                extra += f", status: {status}" if status != "obey" else ""
                kind = "alias" if p.alias else "target" if p.targets else "address"
                lines.append(f"      - {{{kind}: {scalar(addr)}{extra}}}")
    lines.append("records:")
    if not out.records:
        lines[-1] = "records: {}"
    for owner, entries in out.records.items():
        lines.append(f"  {scalar(owner)}:")
        for e in entries:
            if isinstance(e, _Static):
                extra = "" if e.ttl == default_ttl else f", ttl: {e.ttl}"
                lines.append(f"    - {{type: {e.rtype}, value: {scalar(e.text)}{extra}}}")
                continue
            lines.append(f"    - types: [{', '.join(e.types)}]   # {e.comment}")
            lines.append(f"      ttl: {e.ttl}")
            lines.append(f"      answer: {{select: {e.select}}}")
            lines.append("      rules:")
            for geos, subnets, chain in e.rules:
                parts = []
                if geos:
                    parts.append(f"geos: [{', '.join(scalar(g) for g in geos)}]")
                if subnets:
                    parts.append(f"subnets: [{', '.join(scalar(s) for s in subnets)}]")
                parts.append(f"pools: [{', '.join(chain)}]")
                lines.append(f"        - {{{', '.join(parts)}}}")
    return "\n".join(lines) + "\n"


def _glue(out: _Out, given: dict[str, list[str]]) -> None:
    """Each apex name server's addresses: in the zone, from ``--ns HOST=ADDR`` or the
    host's A/AAAA records (which then leave ``records:``); outside it, none."""
    for ns in out.apex_ns:
        rel = _relative(ns, out.zone)
        addrs: list[str] = []
        if rel is not None:
            addrs = list(given.get(ns, []))
            own = [e for e in out.records.get(rel, []) if isinstance(e, _Static) and e.rtype in ("A", "AAAA")]
            if own and out.ns_ttl is not None and any(e.ttl != out.ns_ttl for e in own):
                # addresses with a TTL of their own: they stay in records: (nameservers: lists
                # the host with none), so each is served with its own TTL
                out.own_ttl.add(ns)
                out.glue[ns] = []
                continue
            for e in own:
                addrs.append(e.text)
                out.records[rel].remove(e)
                out.ttls[e.ttl] -= 1  # served as glue with ns_ttl: not one of records:' TTLs
            if rel in out.records and not out.records[rel]:
                del out.records[rel]
            if not addrs:
                at = f"{out.ns_where}: " if out.ns_where else ""
                out.problems.append(
                    f"{at}name server {ns} is inside the zone but has no address: "
                    f"give --ns {ns.rstrip('.')}=ADDR or an A record"
                )
            for a in addrs:
                try:
                    ipaddress.ip_address(a)
                except ValueError:
                    out.problems.append(f"name server {ns}: {a!r} is not an IP address")
        out.glue[ns] = addrs


def _relative(name: str, zone: str) -> str | None:
    """``name`` relative to ``zone`` ("@" for the apex), or None outside it."""
    n, z = name.lower(), zone.lower()
    if n == z:
        return "@"
    if n.endswith("." + z):
        return name[: -len(z) - 1]
    return None
