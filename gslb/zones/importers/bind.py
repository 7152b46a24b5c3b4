"""``gslb import bind``: a BIND master file as a zone YAML, written for people.

dnspython reads the file ($ORIGIN, $TTL, $INCLUDE, $GENERATE, relative names,
parentheses): the same reader that checks rdata at zone load. Then:

- the SOA becomes ``soa:`` (its serial kept, so secondaries never see it go back);
- the apex NS records become ``nameservers:``, with the addresses of in-zone name
  servers (their A/AAAA records, which gslb serves as glue) taken from the file;
- DNSSEC records (RRSIG, NSEC, NSEC3, NSEC3PARAM, DNSKEY, CDS, CDNSKEY) are dropped
  with a note: gslb signs at answer time (docs/dnssec.md). DS stays at delegations;
- every other record goes to ``records:`` in the order of the file, under its name
  relative to the zone, with ``ttl`` only where it differs from the zone's default
  (the most common TTL of the file);
- types gslb does not serve are reported with their file:line, and the import fails
  unless ``skip_unsupported``;
- a walk over the lines first (:func:`_scan`) finds what dnspython would take silently
  or report without the source's line: records outside the zone (ignored, with a
  note at their line), TTLs past 2147483647 and malformed ``$TTL`` lines (refused there).
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.zone

from gslb.zones.importers.yamlout import scalar

SERVED = {
    "A", "AAAA", "CNAME", "MX", "TXT", "NS", "SOA", "SRV", "CAA", "PTR", "HTTPS", "SVCB", "NAPTR", "SSHFP",
    "TLSA", "LOC", "HINFO", "URI", "RP", "SPF", "DS",
}  # fmt: skip
DNSSEC = {"RRSIG", "NSEC", "NSEC3", "NSEC3PARAM", "DNSKEY", "CDS", "CDNSKEY"}


class ImportError_(ValueError):
    """What stops an import: one line per problem, positioned where it can be."""


@dataclass
class Result:
    yaml: str
    notes: list[str] = field(default_factory=list)  # what the importer chose or dropped


def _lines_of(path: Path, rtype: str) -> list[str]:
    """file:line of the records of ``rtype`` in the file and what it includes (a
    textual search: dnspython's zone keeps no positions)."""
    out: list[str] = []
    seen: set[Path] = set()

    def walk(p: Path) -> None:
        if p in seen or not p.is_file():
            return
        seen.add(p)
        for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            body = line.split(";", 1)[0]
            m = re.match(r"\s*\$INCLUDE\s+(\S+)", body, re.I)
            if m:
                inc = Path(m.group(1))
                walk(inc if inc.is_absolute() else p.parent / inc)
                continue
            if re.search(rf"(^|\s){re.escape(rtype)}(\s|$)", body, re.I):
                out.append(f"{p}:{i}")

    walk(path)
    return out


def _positioned(path: Path, text: str) -> str:
    """dnspython's "file:line: what" with the file's full path, and the line of the
    record: at the end of a line its tokenizer has already counted the newline."""
    m = re.match(r"(.+?):(\d+): (.*)", text, re.S)
    if not m:
        return f"{path}: {text}"
    name, line, what = m.group(1), int(m.group(2)), m.group(3)
    f = path.resolve().parent / name
    try:
        lines = f.read_text(errors="replace").splitlines()
    except OSError:
        lines = []
    if line > 1 and (line > len(lines) or not lines[line - 1].split(";", 1)[0].strip()):
        line -= 1
    vendor = re.match(r"unknown rdatatype '(ALIAS|ANAME)'", what)
    if vendor:  # PowerDNS, NS1, Route 53 exports: what gslb writes instead
        what += (
            f" ({vendor.group(1)} is a vendor type, not in master files: in gslb it is a balanced "
            "A/AAAA record over a pool with an alias: member, docs/routing.md)"
        )
    return f"{f if f.exists() else name}:{line}: {what}"


TTL_MAX = 2147483647  # RFC 2181 8
_TTL = re.compile(r"^(?:\d+|(?:\d+[wdhms])+)$", re.I)
_UNIT = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_CLASSES = {"IN", "CH", "HS", "CS", "ANY"}


def _ttl_value(tok: str) -> int:
    if tok.isdigit():
        return int(tok)
    return sum(int(n) * _UNIT[u.lower()] for n, u in re.findall(r"(\d+)([wdhms])", tok, re.I))


def _scan(path: Path, origin: dns.name.Name) -> tuple[list[str], list[str]]:
    """What dnspython's reader would take silently or report without the source's line:
    TTLs past 2147483647 (RFC 2181 8) and malformed $TTL lines (problems), and records
    outside the zone (notes: ignored, as named-checkzone says). A walk over the lines,
    with $INCLUDE, $ORIGIN, parentheses and the owner carried from line to line."""
    problems: list[str] = []
    notes: list[str] = []
    seen: set[Path] = set()

    def walk(p: Path, org: dns.name.Name) -> None:
        if p in seen or not p.is_file():
            return
        seen.add(p)
        owner: dns.name.Name | None = None
        depth = 0
        for i, line in enumerate(p.read_text(errors="replace").splitlines(), 1):
            body = re.sub(r'"(?:[^"\\]|\\.)*"', '""', line).split(";", 1)[0]
            toks = body.replace("(", " ( ").replace(")", " ) ").split()
            cont = depth > 0
            depth += toks.count("(") - toks.count(")")
            toks = [t for t in toks if t not in ("(", ")")]
            if cont or not toks:
                continue
            head = toks[0].upper()
            if head == "$ORIGIN" and len(toks) > 1:
                with contextlib.suppress(dns.exception.DNSException):
                    org = dns.name.from_text(toks[1], org)
                continue
            if head == "$TTL":
                if len(toks) < 2 or not _TTL.match(toks[1]):
                    problems.append(f"{p}:{i}: $TTL needs a TTL (seconds, or units such as 1h30m)")
                elif _ttl_value(toks[1]) > TTL_MAX:
                    problems.append(f"{p}:{i}: $TTL {toks[1]} is above {TTL_MAX} (RFC 2181 8)")
                continue
            if head == "$INCLUDE" and len(toks) > 1:
                inc = Path(toks[1])
                walk(inc if inc.is_absolute() else p.parent / inc, org)
                continue
            if head.startswith("$"):  # $GENERATE and others: dnspython's
                continue
            rest = toks
            if not line[:1].isspace():
                try:
                    owner = org if toks[0] == "@" else dns.name.from_text(toks[0], org)
                except dns.exception.DNSException:
                    owner = None
                rest = toks[1:]
            for t in rest[:2]:  # TTL and class, in either order, before the type
                if t.upper() in _CLASSES:
                    continue
                if _TTL.match(t) and _ttl_value(t) > TTL_MAX:
                    problems.append(f"{p}:{i}: TTL {t} is above {TTL_MAX} (RFC 2181 8)")
                break
            if owner is not None and not owner.is_subdomain(origin):
                notes.append(f"{p}:{i}: ignoring out-of-zone data ({owner})")

    walk(path, origin)
    return problems, notes


def import_bind(path: Path, zone: str, skip_unsupported: bool = False) -> Result:
    origin = dns.name.from_text(zone if zone.endswith(".") else zone + ".")
    if path.is_file():
        early, ignored = _scan(path, origin)
        if early:
            raise ImportError_("\n".join(early))
    else:
        ignored = []
    try:
        # $INCLUDE names are relative to the file's directory (as with BIND's usual
        # `directory`); dnspython opens them relative to the working directory
        with contextlib.chdir(path.resolve().parent):
            z = dns.zone.from_file(path.name, origin=origin, relativize=False, allow_include=True,
                                   check_origin=True)  # fmt: skip
    except OSError as e:
        raise ImportError_(f"{e.filename or path}: cannot read: {e.strerror or e}") from None
    except dns.exception.SyntaxError as e:
        raise ImportError_(_positioned(path, str(e))) from None
    except dns.zone.NoSOA:
        raise ImportError_(f"{path}: no SOA record at {origin}") from None
    except dns.zone.NoNS:
        raise ImportError_(f"{path}: no NS records at {origin}") from None
    except dns.exception.DNSException as e:
        raise ImportError_(f"{path}: {e}") from None
    notes: list[str] = list(ignored)
    problems: list[str] = []
    rows: list[tuple[dns.name.Name, str, int, str]] = []  # (owner, type, ttl, value) in file order
    ttls: collections.Counter[int] = collections.Counter()
    dropped: collections.Counter[str] = collections.Counter()
    for name, node in z.nodes.items():
        for rds in node.rdatasets:
            t = dns.rdatatype.to_text(rds.rdtype)
            if rds.rdclass != dns.rdataclass.IN:
                problems.append(f"{path}: {name} {t}: class {dns.rdataclass.to_text(rds.rdclass)} (only IN)")
                continue
            if t in DNSSEC:
                dropped[t] += len(rds)
                continue
            if t not in SERVED:
                where = ", ".join(_lines_of(path, t)) or str(path)
                msg = f"{where}: {t} at {name}: gslb does not serve this type"
                if skip_unsupported:
                    notes.append(msg + " (skipped)")
                else:
                    problems.append(msg)
                continue
            for rd in rds:
                rows.append((name, t, rds.ttl, rd.to_text(origin=origin, relativize=True)))
                ttls[rds.ttl] += 1
    if problems:
        raise ImportError_("\n".join([*problems, "(--skip-unsupported imports the rest)"]))
    if dropped:
        notes.append("dropped DNSSEC records (gslb signs at answer time, docs/dnssec.md): "
                     + ", ".join(f"{n} {t}" for t, n in sorted(dropped.items())))  # fmt: skip
    soa_rds = z.find_rdataset(origin, dns.rdatatype.SOA)
    soa = soa_rds[0]
    ns_rds = z.find_rdataset(origin, dns.rdatatype.NS)
    default_ttl = ttls.most_common(1)[0][0] if ttls else soa_rds.ttl
    hosts = [rd.target for rd in ns_rds]
    glue: dict[dns.name.Name, list[str]] = {h: [] for h in hosts}
    for h in hosts:
        if h.is_subdomain(origin):
            for rtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                found = z.get_rdataset(h, rtype)
                if found is not None:
                    glue[h] += [rd.to_text() for rd in found]
    in_zone = {h for h in hosts if h.is_subdomain(origin)}
    missing = [h for h in in_zone if not glue[h]]
    if missing:
        raise ImportError_(f"{path}: in-zone name server(s) without addresses: "
                           + ", ".join(h.to_text() for h in missing))  # fmt: skip

    def rel(n: dns.name.Name) -> str:
        return "@" if n == origin else n.relativize(origin).to_text()

    today = datetime.date.today().isoformat()
    out = [
        f"# Imported from {path} by `gslb import bind` on {today}.",
        f"zone: {origin.to_text()}",
        f"ttl: {default_ttl}   # the most common TTL in the source",
    ]
    if ns_rds.ttl != default_ttl:
        out.append(f"ns_ttl: {ns_rds.ttl}")
    out += [
        "soa:",
        f"  mname: {soa.mname.to_text()}",
        f"  rname: {soa.rname.to_text()}",
        f"  serial: {soa.serial}   # the source's: secondaries never see it go back (remove: file time)",
        f"  refresh: {soa.refresh}",
        f"  retry: {soa.retry}",
        f"  expire: {soa.expire}",
        f"  minimum: {soa.minimum}",
    ]
    if soa_rds.ttl != default_ttl:
        out.append(f"  ttl: {soa_rds.ttl}")
    # an in-zone name server whose addresses have the NS set's TTL lists them in
    # nameservers: (they are served with ns_ttl); one with a TTL of their own keeps
    # them in records: (nameservers: lists it with no addresses)
    own_ttl = {
        h for h in in_zone
        if any(n == h and t in ("A", "AAAA") and ttl != ns_rds.ttl for n, t, ttl, _ in rows)
    }  # fmt: skip
    out.append("nameservers:")
    for h in hosts:
        addrs = ", ".join(scalar(a) for a in glue[h])
        if h in own_ttl:
            out.append(f"  {h.to_text()}: []   # its addresses are in records, with their own TTL")
            continue
        note = "" if h in in_zone else "   # outside the zone: no glue"
        out.append(f"  {h.to_text()}: [{addrs}]{note}")
    out.append("records:")
    owner_rows: dict[dns.name.Name, list[tuple[str, int, str]]] = {}
    for name, t, ttl, value in rows:
        if t == "SOA" or (t == "NS" and name == origin):
            continue
        if name in in_zone and name not in own_ttl and t in ("A", "AAAA") and value in glue[name]:
            continue  # the name servers' addresses: from nameservers:
        owner_rows.setdefault(name, []).append((t, ttl, value))
    for name, items in owner_rows.items():
        out.append(f"  {scalar(rel(name))}:")
        for t, ttl, value in items:
            extra = "" if ttl == default_ttl else f", ttl: {ttl}"
            out.append(f"    - {{type: {t}, value: {scalar(value)}{extra}}}")
    if not owner_rows:
        out[-1] = "records: {}"
    return Result("\n".join(out) + "\n", notes)
