"""``records:``: static data in presentation format, and the nameservers' glue."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from gslb.dns import names
from gslb.zones.load.balanced import _balanced
from gslb.zones.load.ctx import _Ctx, _kind, _name_wire, _opt, _tname
from gslb.zones.model import (
    TTL_MAX,
    Balanced,
    Pool,
    RRset,
)
from gslb.zones.yamlsrc import Located

# Types a zone may carry in `records`. SOA and apex NS come from `soa` and
# `nameservers`; DNSKEY, RRSIG and NSEC come from signing (`dnssec:`); DS only at a
# delegation point, beside its NS (the child's key, for a signed delegation).
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
        "DS",
    )
)
# rdata names that deserve additional-section processing (address records)
_TARGET_ATTR = {
    dns.rdatatype.NS: "target",
    dns.rdatatype.MX: "exchange",
    dns.rdatatype.SRV: "target",
}


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
    _check_loops(ctx, origin, acc, balanced, pools)
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


def _merge_glue(
    ctx: _Ctx, rrsets: list[RRset], glue: list[tuple[Located, bytes, int, str]], ttl: int
) -> list[RRset]:
    """Address records of in-zone name servers become static RRsets (``ns_ttl``). A host
    listed with no addresses (rtype 0 here) has them in ``records``, with their own TTL."""
    index = {(r.name, r.rtype) for r in rrsets}
    grouped: dict[tuple[bytes, int], list[tuple[bytes, str]]] = {}
    for loc, owner, rtype, text in glue:
        if rtype == 0:
            if (owner, 1) not in index and (owner, 28) not in index:
                host = names.to_text(owner)
                ctx.err(loc, f"nameservers.{host}",
                        "host is inside the zone: list its addresses (glue), or give its A/AAAA in 'records'",
                        at_key=True)  # fmt: skip
            continue
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


def _check_loops(
    ctx: _Ctx,
    origin: bytes,
    acc: dict[tuple[bytes, int], _RRsetAcc],
    balanced: list[tuple[Balanced, Located, str]],
    pools: dict[str, tuple[Pool, Located]],
) -> None:
    """In-zone CNAME chains must end: a loop (static CNAMEs, or a balanced CNAME whose
    target leads back) is an error at each CNAME in it, with the loop spelled out."""
    edges: dict[bytes, list[tuple[bytes, Located, str]]] = {}
    for (name, rtype), a in acc.items():
        if rtype == dns.rdatatype.CNAME and a.targets:
            edges.setdefault(name, []).append((a.targets[0], a.loc, a.key))
    for b, loc, key in balanced:
        if b.cname:
            for rule in b.rules:
                for pn in rule.pools:
                    for mem in pools[pn][0].members if pn in pools else ():
                        if mem.target is not None:
                            edges.setdefault(b.name, []).append((mem.target, loc, key))
    edges = {n: [e for e in es if names.is_subdomain(e[0], origin)] for n, es in edges.items()}
    done: set[bytes] = set()  # names whose every chain is known to end
    for start in edges:
        if start in done:
            continue
        # depth-first, iteratively: the path so far, and each step's remaining edges
        path: list[bytes] = [start]
        on_path = {start}
        stack = [iter(edges[start])]
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                name = path.pop()
                on_path.discard(name)
                done.add(name)
                continue
            target, loc, key = step
            if target in on_path:
                loop = path[path.index(target) :]
                text = " -> ".join(names.to_text(n) for n in [*loop, target])
                ctx.err(loc, key, f"CNAME loop: {text} (the chain never reaches data)")
            elif target not in done and target in edges:
                path.append(target)
                on_path.add(target)
                stack.append(iter(edges[target]))


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
        cn = dns.rdatatype.CNAME
        bal_cname = [(loc, key) for t, loc, key in entries if t == cn and (name, t) not in acc]
        if bal_cname:  # a balanced CNAME (types: [CNAME]): alone at its name as a static one
            loc, key = bal_cname[0]
            others = sorted({_tname(t) for t in types if t != dns.rdatatype.CNAME})
            if others:
                ctx.err(
                    loc,
                    key,
                    f"a balanced CNAME beside other data at the same name ({', '.join(others)}): "
                    "a name with a CNAME has nothing else (RFC 1034 3.6.2)",
                )
            if name == origin:
                ctx.err(
                    loc,
                    key,
                    "a CNAME at the zone apex (the apex has SOA and NS): answer the apex with "
                    "an address pool",
                )
        elif dns.rdatatype.CNAME in types:
            a = acc[(name, dns.rdatatype.CNAME)]
            if len(a.rdatas) > 1:
                ctx.err(a.loc, a.key, "a name has at most one CNAME")
            if len(set(types)) > 1:
                ctx.err(a.loc, a.key, "CNAME beside other data at the same name (RFC 1034 3.6.2)")
            if name == origin:
                ctx.err(a.loc, a.key, "CNAME at the zone apex (the apex has SOA and NS)")
        if name in cuts:
            for t, loc, key in entries:
                if t not in (dns.rdatatype.NS, dns.rdatatype.DS):
                    ctx.err(loc, key, f"{_tname(t)} at a delegation point (only NS and DS belong there)")
        elif dns.rdatatype.DS in types:
            a = acc[(name, dns.rdatatype.DS)]
            ctx.err(a.loc, a.key, "DS belongs at a delegation point, beside the delegation's NS records")
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
