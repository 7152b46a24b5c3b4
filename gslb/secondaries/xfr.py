"""Zone transfers to secondaries: AXFR, IXFR from a journal, TSIG, who may transfer.

What a secondary gets (:func:`transfer_rrs`): the static data and, for each
balanced name, its fail-open set (what ``when_all_down: serve_all`` would
answer). Health never changes it, so a zone's transfer content changes only
when its file does, and with it the serial.

**IXFR (RFC 1995).** Each process keeps a :class:`Journal`: when a reload
changes a zone's serial, the difference between the two versions' transfer
contents is recorded (the old and new SOA, the records deleted and added). A
secondary asking IXFR from a serial the journal reaches back to gets the
differences in order; from the current serial, the SOA alone; otherwise (a
serial older than the journal, one it never served, or after a restart: the
journal is in memory) the whole zone, as AXFR, which RFC 1995 4 allows. The
journal keeps at most ``max_versions`` differences and ``max_records`` records
per zone, the oldest dropped first.

**Who may transfer.** A request signed with TSIG is checked first (RFC 8945:
BADKEY, BADSIG, BADTIME answered NOTAUTH), then against the zone's ``allow``
rules: a rule names a key, a network, or both (the key from that network). A
request without TSIG passes a rule with a network and no key, or the old
``axfr_allow`` networks (every zone). Everything else is REFUSED with Extended
DNS Error 18 and logged with the peer, the zone and the key. Every message of a
signed transfer is signed. A signed zone is never transferred (docs/dnssec.md).
"""

from __future__ import annotations

import collections
import ipaddress
import itertools
import logging
import struct
import threading
from dataclasses import dataclass, field
from typing import NamedTuple

from gslb.answer.state import CompiledZone, ServingState
from gslb.answer.static import rrs
from gslb.dns import names, tsig
from gslb.dns.consts import CLASS_IN, FAMILY_OF_TYPE, NOERROR, REFUSED, T_AXFR, T_IXFR, T_SOA
from gslb.dns.wire import (
    Malformed,
    Query,
    RRw,
    ede_option,
    encode_sections,
    header,
    header_ok,
    opt_record,
    parse_query,
    read_name,
)

log = logging.getLogger("gslb.secondaries.xfr")

XFR_CHUNK = 16000  # octets of records per message
EDE_PROHIBITED = 18
_EDE_XFR = ede_option(EDE_PROHIBITED, "zone transfer not allowed")
_EDE_XFR_SIGNED = ede_option(EDE_PROHIBITED, "zone transfers of a signed zone are refused")
FORMERR, NOTAUTH = 1, tsig.NOTAUTH

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def transfer_rrs(state: ServingState, zone: CompiledZone) -> list[RRw]:
    """The zone as secondaries get it: static data, and for each balanced name its
    fail-open set (what ``when_all_down: serve_all`` would answer), SOA first and last."""
    out: list[RRw] = [zone.soa_rr]
    for name in sorted(zone.nodes, key=lambda n: (len(names.labels(n)), n)):
        node = zone.nodes[name]
        for rtype, rr in sorted(node.rrsets.items()):
            if rtype == T_SOA:
                continue
            out += rrs(name, rtype, rr.ttl, rr.rdatas)
        bal = node.balanced
        if bal is not None:
            plan = state.plans[bal.name]
            catch_all = bal.rules[plan.catch_all]
            for qtype in bal.types:
                fam = FAMILY_OF_TYPE.get(qtype, 0)  # 0: a CNAME, target members
                for pname in catch_all.pools:
                    members = [m for m in zone.pools[pname].members if m.family == fam]
                    if members:
                        if bal.cname:  # one CNAME at a name: the catch-all's first target
                            members = members[:1]
                        out += [(name, qtype, bal.ttl, m.rdata) for m in members]
                        break
    out.append(zone.soa_rr)
    return out


# ------------------------------------------------------------------ the journal


class Delta(NamedTuple):
    """One version step: from ``old_soa`` to ``new_soa``, these records deleted and added."""

    old_serial: int
    new_serial: int
    old_soa: RRw
    new_soa: RRw
    deleted: tuple[RRw, ...]
    added: tuple[RRw, ...]

    @property
    def size(self) -> int:
        return len(self.deleted) + len(self.added) + 2


def _lower(rr: RRw) -> RRw:
    return (rr[0].lower(), rr[1], rr[2], rr[3])


def diff(old: list[RRw], new: list[RRw]) -> tuple[tuple[RRw, ...], tuple[RRw, ...]]:
    """(deleted, added) between two transfer contents (SOA records left out), each in
    its version's order. Names compare without case; a TTL change is a delete and an add."""
    o = [_lower(r) for r in old if r[1] != T_SOA]
    n = [_lower(r) for r in new if r[1] != T_SOA]
    so, sn = set(o), set(n)
    return tuple(r for r in o if r not in sn), tuple(r for r in n if r not in so)


def serial_lt(a: int, b: int) -> bool:
    """RFC 1982 serial number arithmetic: a < b."""
    return a != b and ((b - a) & 0xFFFFFFFF) < 0x80000000


@dataclass
class Journal:
    """Differences between the versions of each zone this process served (in memory)."""

    max_versions: int = 32
    max_records: int = 200_000
    warn: bool = True  # log a zone whose content changed under the same serial
    deltas: dict[bytes, tuple[Delta, ...]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, old: ServingState, new: ServingState) -> int:
        """Record what changed from ``old`` to ``new`` (zones whose serial changed);
        forget zones no longer served. Runs in the reload thread. Returns the number of
        differences recorded."""
        added = 0
        out: dict[bytes, tuple[Delta, ...]] = {}
        for origin, cz in new.zones.items():
            prev = old.zones.get(origin)
            kept = self.deltas.get(origin, ())
            same_serial = prev is not None and prev.serial == cz.serial
            if same_serial and prev is not None and prev.zone.digest != cz.zone.digest and self.warn:
                log.warning(
                    "zone %s changed but its serial %d did not: secondaries keep the old "
                    "version (raise soa.serial, or remove it to number versions by the file's time)",
                    names.to_text(origin), cz.serial,
                )  # fmt: skip
            if prev is not None and prev.serial != cz.serial:
                if cz.zone.dnssec_keys or prev.zone.dnssec_keys:
                    kept = ()
                elif serial_lt(prev.serial, cz.serial):
                    deleted, plus = diff(transfer_rrs(old, prev), transfer_rrs(new, cz))
                    kept = (*kept, Delta(prev.serial, cz.serial, prev.soa_rr, cz.soa_rr, deleted, plus))
                    added += 1
                else:  # the serial went back: nothing older leads here any more
                    kept = ()
            while kept and (len(kept) > self.max_versions or sum(d.size for d in kept) > self.max_records):
                kept = kept[1:]
            if kept:
                out[origin] = kept
        with self.lock:
            self.deltas = out
        return added

    def chain(self, origin: bytes, since: int, serial: int) -> list[Delta] | None:
        """The differences from serial ``since`` to ``serial``, or None when the journal
        does not reach back to it."""
        with self.lock:
            steps = self.deltas.get(origin, ())
        for i, d in enumerate(steps):
            if d.old_serial == since:
                chain = list(steps[i:])
                if chain[-1].new_serial == serial and all(
                    a.new_serial == b.old_serial for a, b in itertools.pairwise(chain)
                ):
                    return chain
                return None
        return None


# ------------------------------------------------------------------ who may transfer


@dataclass(frozen=True, slots=True)
class Allow:
    key: str | None  # a TSIG key name, or None: no key needed
    network: Network | None  # where from, or None: anywhere (with the key)

    def admits(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None, key: str | None) -> bool:
        if self.key is not None and self.key != key:
            return False
        return self.network is None or (ip is not None and ip in self.network)


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    key: str | None

    def __str__(self) -> str:
        where = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        return where + (f" (key {self.key})" if self.key else "")


@dataclass(frozen=True, slots=True)
class Policy:
    zones: frozenset[bytes]  # empty: every zone
    allow: tuple[Allow, ...]
    notify: tuple[Target, ...]

    def covers(self, origin: bytes) -> bool:
        return not self.zones or origin in self.zones


def transfer_policies(
    opts: tuple[
        tuple[
            tuple[str, ...],
            tuple[tuple[str | None, str | None], ...],
            tuple[tuple[str, int, str | None], ...],
        ],
        ...,
    ],
) -> tuple[Policy, ...]:
    """The ``transfers:`` option (gslb.server.options, checked there) as policies."""
    return tuple(
        Policy(
            frozenset(names.from_text(z).lower() for z in zones),
            tuple(Allow(k, None if n is None else ipaddress.ip_network(n)) for k, n in allow),
            tuple(Target(h, p, k) for h, p, k in notify),
        )
        for zones, allow, notify in opts
    )


class Transfers:
    """Keys, rules and the journal: everything the TCP transport needs to answer
    AXFR and IXFR (and the runtime to send NOTIFY)."""

    def __init__(
        self,
        keyring: tsig.Keyring,
        policies: tuple[Policy, ...] = (),
        open_networks: tuple[Network, ...] = (),
        journal: Journal | None = None,
        counts: collections.Counter[str] | None = None,
    ) -> None:
        self.keyring = keyring
        self.policies = policies
        self.open_networks = open_networks  # axfr_allow: every zone, no key
        self.journal = journal if journal is not None else Journal()
        self.counts: collections.Counter[str] = counts if counts is not None else collections.Counter()

    def count(self, what: str) -> None:
        self.counts[what] += 1

    def allowed(self, origin: bytes, peer: str, key: str | None) -> bool:
        try:
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(
                peer.split("%", 1)[0]
            )
        except ValueError:
            ip = None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if key is None and ip is not None and any(ip in n for n in self.open_networks):
            return True
        return any(a.admits(ip, key) for p in self.policies if p.covers(origin) for a in p.allow)

    def notify_targets(self, origin: bytes) -> list[Target]:
        seen: dict[tuple[str, int], Target] = {}
        for p in self.policies:
            if p.covers(origin):
                for t in p.notify:
                    seen.setdefault((t.host, t.port), t)
        return list(seen.values())

    # -------------------------------------------------------------- answering

    def answer(self, data: bytes, peer: str, state: ServingState) -> list[bytes] | None:
        """The TCP messages answering a transfer request, or None when ``data`` is not
        an AXFR/IXFR query (the caller answers it as any other query)."""
        if not header_ok(data) or len(data) < 17:
            return None
        try:
            q = parse_query(data)
        except Malformed:
            return None
        if q.opcode != 0 or q.qtype not in (T_AXFR, T_IXFR) or q.qclass != CLASS_IN:
            return None
        zname = names.to_text(q.key)
        try:
            t = tsig.find(data)
        except Malformed as e:
            log.warning("zone transfer of %s from %s: FORMERR (%s)", zname, peer, e)
            self.count("formerr")
            return [_reply(q, FORMERR)]
        key: tsig.Key | None = None
        if t is not None:
            v = tsig.verify(data, t, self.keyring)
            if v.formerr:
                self.count("formerr")
                return [_reply(q, FORMERR)]
            if v.error in (tsig.BADKEY, tsig.BADSIG):
                log.warning(
                    "zone transfer of %s from %s refused: TSIG %s (key %s)",
                    zname, peer, tsig.ERRORS[v.error], tsig.describe(t),
                )  # fmt: skip
                self.count(tsig.ERRORS[v.error].lower())
                return [tsig.unsigned_error(_reply(q, NOTAUTH), t, v.error)]
            key = v.key
            assert key is not None
            if v.error == tsig.BADTIME:
                log.warning(
                    "zone transfer of %s from %s refused: TSIG BADTIME (key %s)", zname, peer, key.name
                )
                self.count("badtime")
                signed, _ = tsig.sign(
                    _reply(q, NOTAUTH),
                    key,
                    t.mac,
                    error=tsig.BADTIME,
                    other=tsig.badtime_other(),
                    when=t.time_signed,
                )
                return [signed]
        messages = self._messages(q, data, peer, state, key)
        if key is None or t is None:
            return messages
        out = []
        mac = t.mac
        for i, m in enumerate(messages):
            signed, mac = tsig.sign(m, key, mac, continuation=i > 0)
            out.append(signed)
        return out

    def _messages(
        self, q: Query, data: bytes, peer: str, state: ServingState, key: tsig.Key | None
    ) -> list[bytes]:
        zname = names.to_text(q.key)
        who = f"{peer}" + (f" (key {key.name})" if key else "")
        zone = state.zones.get(q.key)  # transfers are for a zone apex only
        if zone is None:
            log.info("zone transfer of %s from %s refused: not a zone served here", zname, who)
            self.count("refused")
            return [_reply(q, tsig.NOTAUTH if key else REFUSED)]
        if not self.allowed(zone.origin, peer, key.name if key else None):
            log.warning("zone transfer of %s to %s refused: not allowed", zname, who)
            self.count("refused")
            return [_reply(q, REFUSED, _EDE_XFR)]
        if zone.zone.dnssec_keys:  # a secondary could not sign the balanced answers (docs/dnssec.md)
            self.count("refused")
            return [_reply(q, REFUSED, _EDE_XFR_SIGNED)]
        kind = "AXFR"
        rrs: list[RRw]
        if q.qtype == T_IXFR:
            since = _ixfr_serial(data)
            if since is None:
                self.count("formerr")
                return [_reply(q, FORMERR)]
            if not serial_lt(since, zone.serial):  # up to date (or ahead): the SOA alone
                self.count("ixfr_current")
                log.info("IXFR of %s to %s: up to date at serial %d", zname, who, zone.serial)
                return [_message(q, [zone.soa_rr])]
            chain = self.journal.chain(zone.origin, since, zone.serial)
            if chain is not None:
                rrs = [zone.soa_rr]
                for d in chain:
                    rrs += [d.old_soa, *d.deleted, d.new_soa, *d.added]
                rrs.append(zone.soa_rr)
                kind = f"IXFR {since} -> {zone.serial}"
                self.count("ixfr")
            else:
                kind = f"IXFR from {since} as AXFR (journal does not reach back)"
                rrs = transfer_rrs(state, zone)
                self.count("ixfr_as_axfr")
        else:
            rrs = transfer_rrs(state, zone)
            self.count("axfr")
        messages = _chunks(q, rrs)
        log.info(
            "zone transfer of %s to %s: %s, serial %d, %d record(s) in %d message(s)",
            zname, who, kind, zone.serial, len(rrs), len(messages),
        )  # fmt: skip
        return messages


def _ixfr_serial(data: bytes) -> int | None:
    """The serial of the SOA in an IXFR query's authority section (RFC 1995 3)."""
    try:
        an, ns = struct.unpack_from("!HH", data, 6)
        if an or ns != 1:
            return None
        _, pos = read_name(data, 12)
        pos += 4
        _, pos = read_name(data, pos)
        rtype, _, _, rdlen = struct.unpack_from("!HHIH", data, pos)
        pos += 10
        if rtype != T_SOA or pos + rdlen > len(data):
            return None
        _, p = read_name(data, pos)
        _, p = read_name(data, p)
        if p + 4 > pos + rdlen:
            return None
        return int(struct.unpack_from("!I", data, p)[0])
    except (Malformed, struct.error):
        return None


def _reply(q: Query, rcode: int, ede: bytes = b"") -> bytes:
    opt = opt_record(False, 0, ede) if q.edns is not None else b""
    return header(q.id, q.flags, False, rcode, 1, 0, 0, 1 if opt else 0) + q.question + opt


def _message(q: Query, rrs: list[RRw]) -> bytes:
    body, an, _, _ = encode_sections(q.key, (rrs, [], []))
    opt = opt_record(q.edns.do) if q.edns is not None else b""
    return header(q.id, q.flags, True, NOERROR, 1, an, 0, 1 if opt else 0) + q.question + body + opt


def _chunks(q: Query, rrs: list[RRw]) -> list[bytes]:
    messages: list[bytes] = []
    chunk: list[RRw] = []
    size = 0
    for rr in rrs:
        chunk.append(rr)
        size += len(rr[0]) + 10 + len(rr[3])
        if size >= XFR_CHUNK:
            messages.append(_message(q, chunk))
            chunk, size = [], 0
    if chunk:
        messages.append(_message(q, chunk))
    return messages
