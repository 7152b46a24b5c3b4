"""An octoDNS provider for gslb: ``octodns-sync`` plans and applies zones to a running
gslb through its zone API (``PUT /v1/zones/ZONE``), and ``octodns-dump`` (or a sync
with gslb as a source) reads back what it serves.

    providers:
      gslb:
        class: octodns_gslb.GslbProvider
        url: http://127.0.0.1:8053        # gslb's API
        token: env/GSLB_API_TOKEN

One mapping, both ways. To gslb: the desired zone is written in octoDNS's YAML format
and converted by ``gslb import octodns`` (gslb.zones.importers.octodns: static records,
dynamic records as balanced names with pools, rules, geos, subnets, weights, status
and ``octodns.healthcheck``; ALIAS as an alias member), then PUT whole, with
``If-Match`` on the version read by the plan: an edit made meanwhile (by hand, through
the API) fails the apply instead of being overwritten. From gslb: the zone as served
(``GET /v1/zones/ZONE``, loaded by gslb's own zone loader) is mapped back: static
RRsets to records, balanced names of the importer's shape back to dynamic records (and
ALIAS). A balanced name that octoDNS cannot express (``select: closest``, ``hashed``,
``count``...) is left out of what octoDNS sees, with a warning, and kept by the next
apply: octoDNS neither deletes nor rewrites what it cannot describe.
"""

from __future__ import annotations

import json
import logging
import tempfile
import urllib.error
import urllib.request
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Any

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import yaml
from octodns.provider.base import BaseProvider
from octodns.record import Record

from gslb.zones.errors import ConfigError
from gslb.zones.importers.bind import ImportError_
from gslb.zones.importers.octodns import import_octodns
from gslb.zones.load import load_zone
from gslb.zones.model import Balanced, Pool, Zone

__all__ = ["GslbError", "GslbProvider"]
__version__ = "0.1.0"

HEALTHCHECK_DEFAULTS = {"protocol": "HTTPS", "port": 443, "path": "/_dns", "host": None}
STATIC = {"A", "AAAA", "CAA", "CNAME", "DS", "HTTPS", "LOC", "MX", "NAPTR", "NS", "PTR", "SPF", "SRV",
          "SSHFP", "SVCB", "TLSA", "TXT"}  # fmt: skip


class GslbError(Exception):
    """The gslb API refused a request (one line, with its answer)."""


class GslbProvider(BaseProvider):  # type: ignore[misc]  # octoDNS has no type hints
    SUPPORTS_GEO = True  # octoDNS's legacy geo records (the importer maps them; read back as such)
    SUPPORTS_DYNAMIC = True
    SUPPORTS_POOL_VALUE_STATUS = True
    SUPPORTS_DYNAMIC_SUBNETS = True
    SUPPORTS_MULTIVALUE_PTR = True
    SUPPORTS_ROOT_NS = True
    SUPPORTS = STATIC | {"ALIAS"}

    def __init__(
        self,
        id: str,
        url: str,
        token: str,
        nameservers: list[str] | None = None,
        timeout: float = 60.0,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        """``nameservers``: the apex NS hosts (``HOST`` or ``HOST=ADDR[,ADDR]`` for glue) of
        zones whose config has no apex NS record (octoDNS often leaves them to the provider;
        gslb needs them)."""
        self.log = logging.getLogger(f"GslbProvider[{id}]")
        super().__init__(id, *args, **kwargs)
        self.nameservers = tuple(nameservers or ())
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._versions: dict[str, str | None] = {}  # zone -> the ETag populate read (None: absent)
        self._kept: dict[str, dict[str, Any]] = {}  # zone -> what octoDNS cannot express, as read

    # -- the API ------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:  # fmt: skip
        req = urllib.request.Request(f"{self.url}{path}", data=body, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as r:
                return r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            return e.code, e.read(), dict(e.headers)
        except OSError as e:
            raise GslbError(f"{self.id}: {method} {self.url}{path}: {e}") from None

    # -- source: what gslb serves ---------------------------------------------------------
    def populate(self, zone: Any, target: bool = False, lenient: bool = False) -> bool:
        name = zone.name
        status, body, headers = self._request("GET", f"/v1/zones/{name}?format=yaml")
        if status == 404:
            self._versions[name] = None
            self._kept[name] = {}
            return False
        if status != 200:
            raise GslbError(f"{self.id}: GET /v1/zones/{name}: {status} {_error(body)}")
        text = body.decode("utf-8")
        self._versions[name] = headers.get("ETag", "").strip('"') or None
        try:
            served = load_zone(f"{name}yaml", text)
        except ConfigError as e:
            raise GslbError(f"{self.id}: {name} as served does not load here: {e}") from None
        records, kept = _records_of(served, yaml.safe_load(text), self.log)
        self._kept[name] = kept
        glue = {h.partition("=")[0].rstrip(".").lower() + "." for h in self.nameservers if "=" in h}
        for rname, rtype, data in records:
            fqdn = f"{rname}.{name}" if rname else name
            if rtype in ("A", "AAAA") and fqdn.lower() in glue:
                continue  # the glue this provider's nameservers: option adds
            zone.add_record(Record.new(zone, rname, {**data, "type": rtype}, source=self, lenient=lenient),
                            lenient=lenient)  # fmt: skip
        return True

    def _extra_changes(self, existing: Any, desired: Any, changes: list[Any]) -> list[Any]:
        """octoDNS compares dynamic records without their health checks: a changed
        ``octodns.healthcheck`` is an update here (as Route 53's provider does)."""
        from octodns.record import Update

        have = {(r.name, r._type): r for r in existing.records}
        changed = {(c.new.name, c.new._type) for c in changes if getattr(c, "new", None) is not None}
        extra = []
        for r in desired.records:
            old = have.get((r.name, r._type))
            if old is None or (r.name, r._type) in changed or not getattr(r, "dynamic", None):
                continue
            if _healthcheck(r) != _healthcheck(old):
                extra.append(Update(old, r))
        return extra

    # -- target: the zone, whole, through the API ------------------------------------------
    def _apply(self, plan: Any) -> None:
        desired = plan.desired
        name = desired.name
        doc: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in desired.records:
            data = json.loads(json.dumps(r.data, default=str))  # octoDNS's own dict and str types: plain
            data["type"] = r._type
            doc[r.name].append(data)
        with tempfile.TemporaryDirectory() as tmp:
            src = Path(tmp) / f"{name}yaml"
            src.write_text(yaml.safe_dump(dict(doc), sort_keys=True))
            try:
                result = import_octodns(Path(tmp), name, nameservers=self.nameservers)
            except ImportError_ as e:
                raise GslbError(f"{self.id}: {name}: gslb cannot serve this zone:\n{e}") from None
        text = _with_kept(result.yaml, self._kept.get(name, {}))
        version = self._versions.get(name)
        headers = {"Content-Type": "application/yaml"}
        headers.update({"If-Match": f'"{version}"'} if version else {"If-None-Match": "*"})
        status, body, _ = self._request("PUT", f"/v1/zones/{name}", text.encode(), headers)
        if status not in (200, 201):
            raise GslbError(f"{self.id}: PUT /v1/zones/{name}: {status} {_error(body)}")
        self.log.info("_apply: %s: %s, serial %s", name, "created" if status == 201 else "replaced",
                      json.loads(body).get("serial"))  # fmt: skip
        self._versions[name] = json.loads(body).get("hash")


def _error(body: bytes) -> str:
    try:
        d = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace")[:500]
    out = str(d.get("error", d))
    for p in d.get("problems", [])[:20]:
        out += f"\n  {p['file']}:{p['line']}:{p['col']}: {p['key']}: {p['message']}"
    return out


def _healthcheck(r: Any) -> dict[str, Any]:
    hc = dict((getattr(r, "octodns", None) or {}).get("healthcheck") or {})
    out = {k: hc.get(k, d) for k, d in HEALTHCHECK_DEFAULTS.items()}
    out["protocol"] = str(out["protocol"]).upper()
    if "port" not in hc:
        out["port"] = 80 if out["protocol"] == "HTTP" else 443
    return out


# ------------------------------------------------------------------ gslb -> octoDNS


def _value_of(rtype: str, text: str) -> Any:
    """An rdata's presentation text as octoDNS's value (its own parser)."""
    vt = Record.registered_types()[rtype]._value_type
    if rtype in ("TXT", "SPF"):
        rd = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rtype), text)
        joined = b"".join(rd.strings).decode("utf-8", "replace")  # type: ignore[attr-defined]
        return joined.replace(";", "\\;")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        parse = getattr(vt, "from_rdata_text", None) or vt.parse_rdata_text
        return parse(text)


def _relative(owner: bytes, origin: bytes) -> str:
    n, o = dns.name.from_wire(owner, 0)[0], dns.name.from_wire(origin, 0)[0]
    return "" if n == o else n.relativize(o).to_text()


def _records_of(
    z: Zone, doc: Any, log: logging.Logger
) -> tuple[list[tuple[str, str, dict[str, Any]]], dict[str, Any]]:
    """The zone as octoDNS records ((name, type, data)), and the balanced names octoDNS
    cannot express (owner -> their entries in the document, kept as they are)."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    for rs in z.rrsets:
        rtype = dns.rdatatype.to_text(dns.rdatatype.RdataType(rs.rtype))
        if rtype not in STATIC:
            continue
        name = _relative(rs.name, z.origin)
        vals = [_value_of(rtype, t) for t in rs.texts]
        data: dict[str, Any] = {"ttl": rs.ttl}
        if rtype in ("CNAME", "PTR") and len(vals) == 1:
            data["value"] = vals[0]
        else:
            data["values"] = vals
        out.append((name, rtype, data))
    if z.nameservers:  # the apex NS: the zone's nameservers: (octoDNS's root NS record)
        ns = [dns.name.from_wire(n, 0)[0].to_text() for n in z.nameservers]
        out.append(("", "NS", {"ttl": z.ns_ttl, "values": ns}))
    pools = {p.name: p for p in z.pools}
    checks = {c.name: c for c in z.checks}
    kept: dict[str, Any] = {}
    doc = doc or {}
    records_doc = doc.get("records") or {}
    for b in z.balanced:
        name = _relative(b.name, z.origin)
        got = _dynamic_of(b, pools, checks, name)
        if got is None:
            log.warning("%s: balanced name %r has no octoDNS form (select %s); left as it is", z.path,
                        name or "@", b.select)  # fmt: skip
            key = name or "@"
            entries = [e for e in records_doc.get(key) or [] if isinstance(e, dict) and "rules" in e]
            kept.setdefault("records", {})[key] = entries
            for e in entries:
                for r in e.get("rules") or []:
                    for pn in r.get("pools") or []:
                        pd = (doc.get("pools") or {}).get(pn)
                        kept.setdefault("pools", {})[pn] = pd
                        chk = pd.get("check") if isinstance(pd, dict) else None
                        for c in [chk] if isinstance(chk, str) else []:
                            kept.setdefault("checks", {})[c] = (doc.get("checks") or {}).get(c)
            continue
        out.extend((name, t, d) for t, d in got)
    return out, kept


def _dynamic_of(
    b: Balanced, pools: dict[str, Pool], checks: dict[str, Any], name: str
) -> list[tuple[str, dict[str, Any]]] | None:
    """A balanced name of the importer's shape as octoDNS dynamic records (one per type),
    or ALIAS; None for one octoDNS cannot express."""
    base = "apex" if not name else name.replace(".", "-")
    prefix = f"{base}-"
    if b.select == "all" and len(b.rules) == 1 and len(b.rules[0].pools) == 1:
        p = pools[b.rules[0].pools[0]]
        if len(p.members) == 1 and p.members[0].alias is not None:  # an ALIAS
            target = dns.name.from_wire(p.members[0].alias, 0)[0].to_text()
            return [("ALIAS", {"ttl": b.ttl, "value": target})]
    if b.select == "all":
        return _legacy_geo_of(b, pools, prefix)
    if b.select != "weighted" or b.count not in (None, 1) or b.when_all_down != "serve_all":
        return None
    if any(r.asns for r in b.rules) or any(not pn.startswith(prefix) for r in b.rules for pn in r.pools):
        return None
    # the importer ends every rule's chain with the record's values (octoDNS's backup pool,
    # which is no octoDNS pool), and adds a catch-all rule of that pool alone where octoDNS
    # had none
    chains = [list(r.pools) for r in b.rules]
    last = {c[-1] for c in chains}
    if len(last) != 1:
        return None
    default = last.pop()
    rules = list(b.rules)
    if len(rules) > 1 and list(rules[-1].pools) == [default] and not (rules[-1].geos or rules[-1].subnets):
        rules = rules[:-1]
    fallback: dict[str, str | None] = {}
    for r in rules:
        c = [pn for pn in r.pools if pn != default]
        for i, pn in enumerate(c):
            nxt = c[i + 1] if i + 1 < len(c) else None
            if fallback.get(pn, nxt) != nxt:
                return None  # two rules disagree about a pool's fallback: not octoDNS's shape
            fallback[pn] = nxt
        if not c:
            return None
    check_names = {pools[pn].check for pn in fallback}
    if len(check_names) != 1:
        return None
    chk = checks.get(next(iter(check_names)) or "")
    out = []
    for rtype in [dns.rdatatype.to_text(dns.rdatatype.RdataType(t)) for t in b.types]:
        fam = {"A": 4, "AAAA": 6}.get(rtype)

        def values(p: Pool, fam: int | None = fam) -> list[dict[str, Any]]:
            vs = []
            for m in p.members:
                if m.target is not None:
                    v = dns.name.from_wire(m.target, 0)[0].to_text()
                elif m.address is not None and (fam is None or m.address.version == fam):
                    v = str(m.address)
                else:
                    continue
                item: dict[str, Any] = {"value": v}
                if m.weight != 1:
                    item["weight"] = m.weight
                if m.status != "obey":
                    item["status"] = m.status
                vs.append(item)
            return vs

        dyn_pools: dict[str, Any] = {}
        for pn, nxt in fallback.items():
            pd: dict[str, Any] = {"values": values(pools[pn])}
            if nxt is not None:
                pd["fallback"] = nxt[len(prefix) :]
            dyn_pools[pn[len(prefix) :]] = pd
        dyn_rules = []
        for r in rules:
            rd: dict[str, Any] = {"pool": r.pools[0][len(prefix) :]}
            if r.geos:
                rd["geos"] = [g.text for g in r.geos]
            if r.subnets:
                rd["subnets"] = [str(s) for s in r.subnets]
            dyn_rules.append(rd)
        data: dict[str, Any] = {"ttl": b.ttl, "dynamic": {"pools": dyn_pools, "rules": dyn_rules}}
        defaults = [v["value"] for v in values(pools[default])] if default else []
        if rtype == "CNAME":
            data["value"] = defaults[0] if defaults else next(iter(dyn_pools.values()))["values"][0]["value"]
        else:
            data["values"] = defaults or [v["value"] for v in next(iter(dyn_pools.values()))["values"]]
        if chk is not None:
            hc: dict[str, Any] = {}
            proto = chk.type.upper()
            if proto != "HTTPS":
                hc["protocol"] = proto
            if chk.port != (80 if proto == "HTTP" else 443):
                hc["port"] = chk.port
            if chk.path != "/_dns":
                hc["path"] = chk.path
            if chk.host:
                hc["host"] = chk.host
            if hc:
                data["octodns"] = {"healthcheck": hc}
        elif rtype != "CNAME":
            return None  # octoDNS health-checks dynamic A/AAAA: one without a check is not its shape
        out.append((rtype, data))
    return out


def _family_values(p: Pool, fam: int) -> list[str]:
    return [str(m.address) for m in p.members if m.address is not None and m.address.version == fam]


def _legacy_geo_of(
    b: Balanced, pools: dict[str, Pool], prefix: str
) -> list[tuple[str, dict[str, Any]]] | None:
    """octoDNS's legacy ``geo`` record, as the importer writes it: a rule per location
    with the pool ``<name>-geo-<location>``, then the record's values (``select: all``)."""
    *located, last = b.rules
    if last.geos or last.subnets or len(last.pools) != 1 or not located:
        return None
    for r in located:
        if len(r.pools) != 1 or len(r.geos) != 1 or r.subnets or r.asns:
            return None
        if r.pools[0] != f"{prefix}geo-{r.geos[0].text.lower()}":
            return None
    out = []
    for rtype in [dns.rdatatype.to_text(dns.rdatatype.RdataType(t)) for t in b.types]:
        fam = {"A": 4, "AAAA": 6}.get(rtype)
        if fam is None:
            return None
        geo = {r.geos[0].text: _family_values(pools[r.pools[0]], fam) for r in located}
        out.append((rtype, {"ttl": b.ttl, "values": _family_values(pools[last.pools[0]], fam), "geo": geo}))
    return out


def _with_kept(text: str, kept: dict[str, Any]) -> str:
    """The importer's zone with the balanced names octoDNS could not see put back as they
    were read, with their pools and checks."""
    if not kept.get("records"):
        return text
    doc = yaml.safe_load(text)
    for section in ("checks", "pools"):
        for k, v in (kept.get(section) or {}).items():
            doc.setdefault(section, {}).setdefault(k, v)
    for owner, entries in kept["records"].items():
        doc.setdefault("records", {}).setdefault(owner, []).extend(entries)
    out: str = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=110)
    return out
