"""DNS wire format for the hot path: parse a query, encode answers.

Parsing is hand-written because a query needs only its header, its question
and (sometimes) one OPT record; building a dnslib or dnspython object graph
per packet costs ten times more than answering. Everything here is strict:
any structural defect is reported as FORMERR (or as "drop" where an answer
would be unsafe), never as an exception escaping to the transport.

Encoding helpers compress owner and well-known rdata names against the
question, so fragments built at load time for a canonical (lowercase) qname
are valid for any letter-case variant of it: the question keeps its length.
"""

from __future__ import annotations

import socket
import struct
from typing import NamedTuple

from gslb.dns.consts import (
    CLASS_IN,
    EDNS_MAX_UDP,
)

# header flag bits
QR = 0x8000
AA = 0x0400
TC = 0x0200
RD = 0x0100
CD = 0x0010
OPCODE_MASK = 0x7800

OPT = 41
OPT_ECS = 8
OPT_NSID = 3
OPT_EDE = 15  # Extended DNS Error (RFC 8914)

_HDR = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHIH")
_QT = struct.Struct("!HH")
_H = struct.Struct("!H")
_OPT_HDR = struct.Struct("!HHIH")  # type, payload (class), extended rcode/version/flags (ttl), rdlength


class Malformed(Exception):
    """A packet that cannot be parsed as a query."""


class BadOption(Malformed):
    """A query whose EDNS option (ECS) is malformed: FORMERR, with an Extended DNS
    Error saying which (the rest of the query could be read)."""


class Ecs(NamedTuple):
    family: int  # 1 = IPv4, 2 = IPv6
    source: int
    address: bytes  # the significant octets, as sent

    def option(self, scope: int) -> bytes:
        """The ECS option to echo, with ``scope`` (RFC 7871 7.2.1)."""
        body = _QT.pack(self.family, 0)[:2] + bytes((self.source, scope)) + self.address
        return _H.pack(OPT_ECS) + _H.pack(len(body)) + body

    def ip_bytes(self) -> bytes:
        """The address padded to its full length (4 or 16 octets)."""
        full = 4 if self.family == 1 else 16
        return self.address + bytes(full - len(self.address))


class Edns(NamedTuple):
    payload: int  # the client's UDP size, at least 512
    version: int
    do: bool
    ecs: Ecs | None
    nsid: bool = False  # the query asks for the server's name (RFC 5001)
    co: bool = False  # Compact Answers OK (RFC 9824): NXDOMAIN is wanted back from compact denial


class Query(NamedTuple):
    """A parsed query. A NamedTuple: built once per packet, so construction cost counts."""

    id: int
    flags: int
    qname: bytes  # as sent (letter case kept)
    key: bytes  # lowercased: the index key for zone data
    qtype: int
    qclass: int
    question: bytes  # the whole question section, as sent
    edns: Edns | None

    @property
    def opcode(self) -> int:
        return (self.flags >> 11) & 0xF


def read_name(data: bytes, pos: int) -> tuple[bytes, int]:
    """An uncompressed-or-compressed name at ``pos``: (wire name, next position).

    Pointers must point backwards (which also rules out loops); labels over
    63 octets and names over 255 are rejected.
    """
    out = bytearray()
    end = -1
    limit = pos
    n = len(data)
    while True:
        if pos >= n:
            raise Malformed("name runs past the end")
        ln = data[pos]
        if ln == 0:
            out.append(0)
            pos += 1
            break
        if ln & 0xC0 == 0xC0:
            if pos + 1 >= n:
                raise Malformed("truncated pointer")
            ptr = ((ln & 0x3F) << 8) | data[pos + 1]
            if ptr >= limit:
                raise Malformed("compression pointer does not point backwards")
            if end < 0:
                end = pos + 2
            pos = limit = ptr
            continue
        if ln > 63:
            raise Malformed("bad label type")
        if pos + 1 + ln > n:
            raise Malformed("label runs past the end")
        out += data[pos : pos + 1 + ln]
        if len(out) > 254:
            raise Malformed("name longer than 255 octets")
        pos += 1 + ln
    return bytes(out), (end if end >= 0 else pos)


def _skip_rr(data: bytes, pos: int) -> tuple[int, int, int, int]:
    """Skip one RR: (type, position of rdata, rdlength, next position)."""
    _, pos = read_name(data, pos)
    if pos + 10 > len(data):
        raise Malformed("truncated RR header")
    rtype, _, _, rdlen = _RR.unpack_from(data, pos)
    pos += 10
    if pos + rdlen > len(data):
        raise Malformed("RDATA runs past the end")
    return rtype, pos, rdlen, pos + rdlen


def _parse_ecs(body: bytes) -> Ecs:
    if len(body) < 4:
        raise BadOption("ECS option shorter than 4 octets")
    family = (body[0] << 8) | body[1]
    source, scope = body[2], body[3]
    addr = body[4:]
    if family == 1:
        maxlen = 32
    elif family == 2:
        maxlen = 128
    else:
        raise BadOption("ECS family not IPv4/IPv6")
    if source > maxlen:
        raise BadOption("ECS source prefix longer than the address")
    if scope != 0:
        raise BadOption("ECS scope prefix must be 0 in queries")
    if len(addr) != (source + 7) // 8:
        raise BadOption("ECS address length does not match the source prefix")
    if source % 8 and addr and addr[-1] & (0xFF >> (source % 8)):
        raise BadOption("ECS address has bits set beyond the source prefix")
    return Ecs(family, source, addr)


def _parse_opt(data: bytes, name_pos: int, rdpos: int, rdlen: int) -> Edns:
    if data[name_pos] != 0:
        raise Malformed("OPT owner is not the root")
    payload, ttl = struct.unpack_from("!HI", data, rdpos - 8)
    return _opt_fields(data, rdpos, rdlen, payload, ttl)


def _opt_fields(data: bytes, rdpos: int, rdlen: int, payload: int, ttl: int) -> Edns:
    version = (ttl >> 16) & 0xFF
    do = bool(ttl & 0x8000)
    if not rdlen:
        return Edns(payload if payload > 512 else 512, version, do, None, False, bool(ttl & 0x4000))
    ecs = None
    nsid = False
    pos, end = rdpos, rdpos + rdlen
    while pos < end:
        if pos + 4 > end:
            raise Malformed("truncated EDNS option header")
        code, olen = _QT.unpack_from(data, pos)
        pos += 4
        if pos + olen > end:
            raise Malformed("EDNS option runs past RDLENGTH")
        if code == OPT_ECS:
            if ecs is not None:
                raise BadOption("two ECS options")
            ecs = _parse_ecs(data[pos : pos + olen])
        elif code == OPT_NSID:
            nsid = True
        pos += olen
    return Edns(max(512, payload), version, do, ecs, nsid, bool(ttl & 0x4000))


def ede_option(code: int, text: str = "") -> bytes:
    """An Extended DNS Error option (RFC 8914): INFO-CODE and EXTRA-TEXT (UTF-8)."""
    t = text.encode()[:200]
    return _H.pack(OPT_EDE) + _H.pack(2 + len(t)) + _H.pack(code) + t


def nsid_option(name: bytes) -> bytes:
    """The NSID option a reply carries (RFC 5001), or b"" for no name."""
    return _H.pack(OPT_NSID) + _H.pack(len(name)) + name if name else b""


def parse_query(data: bytes) -> Query:
    """Parse a query. Raises Malformed (FORMERR) for defects.

    The caller handles the cases where no answer at all is right (shorter than
    a header, QR set) before calling, using :func:`header_ok`. The question
    name must be uncompressed (a pointer there could only point into the
    header), which lets the walk below skip building the name.
    """
    qid, flags, qd, an, ns, ar = _HDR.unpack_from(data, 0)
    if qd != 1:
        raise Malformed("QDCOUNT must be 1")
    n = len(data)
    pos = 12
    while True:
        if pos >= n:
            raise Malformed("question name runs past the end")
        ln = data[pos]
        if ln == 0:
            break
        if ln > 63:
            raise Malformed("compression pointer or bad label type in the question")
        pos += ln + 1
    pos += 1
    if pos - 12 > 255:
        raise Malformed("name longer than 255 octets")
    if pos + 4 > n:
        raise Malformed("question without type and class")
    name = data[12:pos]
    qtype, qclass = _QT.unpack_from(data, pos)
    pos += 4
    question = data[12:pos]
    if pos == n and not (an or ns or ar):
        return Query(qid, flags, name, name.lower(), qtype, qclass, question, None)
    if ar == 1 and not (an or ns) and pos + 11 <= n and data[pos] == 0:
        # the usual EDNS query: one OPT record right after the question
        rtype, payload, ttl, rdlen = _OPT_HDR.unpack_from(data, pos + 1)
        if rtype == OPT and pos + 11 + rdlen == n:
            opt = _opt_fields(data, pos + 11, rdlen, payload, ttl)
            return Query(qid, flags, name, name.lower(), qtype, qclass, question, opt)
    edns: Edns | None = None
    for _ in range(an + ns):
        _, _, _, pos = _skip_rr(data, pos)
    for _ in range(ar):
        start = pos
        rtype, rdpos, rdlen, pos = _skip_rr(data, pos)
        if rtype == OPT:
            if edns is not None:
                raise Malformed("more than one OPT record")
            edns = _parse_opt(data, start, rdpos, rdlen)
    if pos != len(data):
        raise Malformed("trailing data after the last record")
    return Query(qid, flags, name, name.lower(), qtype, qclass, question, edns)


def header_ok(data: bytes) -> bool:
    """False for packets that must get no answer at all (RFC 1035 4.1.1)."""
    return len(data) >= 12 and not data[2] & 0x80


def opt_record(do: bool, rcode_hi: int = 0, options: bytes = b"", co: bool = False) -> bytes:
    """Our OPT RR: root owner, payload 1232, version 0, DO (and RFC 9824's CO) echoed."""
    if not rcode_hi and not options and not co:
        return OPT_DO if do else OPT_PLAIN
    flags = (0x8000 if do else 0) | (0x4000 if co else 0)
    return b"\x00" + _RR.pack(OPT, EDNS_MAX_UDP, (rcode_hi << 24) | flags, len(options)) + options


OPT_PLAIN = b"\x00" + _RR.pack(OPT, EDNS_MAX_UDP, 0, 0)
OPT_DO = b"\x00" + _RR.pack(OPT, EDNS_MAX_UDP, 0x8000, 0)


def header(
    qid: int, qflags: int, aa: bool, rcode: int, qd: int, an: int, ns: int, ar: int, tc: bool = False
) -> bytes:
    flags = QR | (qflags & (OPCODE_MASK | RD | CD)) | (AA if aa else 0) | (TC if tc else 0) | (rcode & 0xF)
    return _HDR.pack(qid, flags, qd, an, ns, ar)


# ------------------------------------------------------------------- encoding

RRw = tuple[bytes, int, int, bytes]  # (owner, type, ttl, rdata); rdata uncompressed

# RFC 1035 types whose rdata names may be compressed (RFC 3597 4)
_NAME_RDATA = {2: 0, 5: 0, 12: 0, 15: 2}  # NS, CNAME, PTR: at 0; MX: after preference
_SOA = 6


class Encoder:
    """Appends RRs after a question, compressing names against what is written."""

    def __init__(self, qname: bytes) -> None:
        self.buf = bytearray()
        self.base = 12 + len(qname) + 4  # bytes before buf in the message
        self.table: dict[bytes, int] = {}
        self._remember(qname, 12)

    def _remember(self, name: bytes, offset: int) -> None:
        while name != b"\x00" and offset < 0x4000:
            self.table.setdefault(name, offset)
            offset += 1 + name[0]
            name = name[1 + name[0] :]

    def name(self, name: bytes) -> None:
        lname = name.lower()
        begin = self.base + len(self.buf)
        pos = 0
        while lname[pos] != 0:
            ptr = self.table.get(lname[pos:])
            if ptr is not None:
                self.buf += name[:pos] + _H.pack(0xC000 | ptr)
                break
            pos += 1 + lname[pos]
        else:
            self.buf += name
        p = 0  # the labels written literally can be pointed at from now on
        while p < pos:
            if begin + p < 0x4000:
                self.table.setdefault(lname[p:], begin + p)
            p += 1 + lname[p]

    def rr(self, owner: bytes, rtype: int, ttl: int, rdata: bytes) -> None:
        self.name(owner)
        at = _NAME_RDATA.get(rtype)
        if at is not None:
            hdr_pos = len(self.buf)
            self.buf += _RR.pack(rtype, CLASS_IN, ttl, 0)
            start = len(self.buf)
            self.buf += rdata[:at]
            target, _ = read_name(rdata, at)
            self.name(target)
            struct.pack_into("!H", self.buf, hdr_pos + 8, len(self.buf) - start)
        elif rtype == _SOA:
            hdr_pos = len(self.buf)
            self.buf += _RR.pack(rtype, CLASS_IN, ttl, 0)
            start = len(self.buf)
            mname, p = read_name(rdata, 0)
            rname, p = read_name(rdata, p)
            self.name(mname)
            self.name(rname)
            self.buf += rdata[p:]
            struct.pack_into("!H", self.buf, hdr_pos + 8, len(self.buf) - start)
        else:
            self.buf += _RR.pack(rtype, CLASS_IN, ttl, len(rdata))
            self.buf += rdata


def encode_sections(
    qname: bytes, sections: tuple[list[RRw], list[RRw], list[RRw]]
) -> tuple[bytes, int, int, int]:
    """Encode answer, authority and additional after a question for ``qname``."""
    enc = Encoder(qname)
    for rr in sections[0]:
        enc.rr(*rr)
    for rr in sections[1]:
        enc.rr(*rr)
    for rr in sections[2]:
        enc.rr(*rr)
    return bytes(enc.buf), len(sections[0]), len(sections[1]), len(sections[2])


def member_fragment(rtype: int, ttl: int, rdata: bytes) -> bytes:
    """One address RR owned by the question name (pointer to offset 12)."""
    return b"\xc0\x0c" + _RR.pack(rtype, CLASS_IN, ttl, len(rdata)) + rdata


# ------------------------------------------------------------------ shared walks


def question_end(msg: bytes) -> int:
    """Offset of the root label ending the first question's name (walked from
    offset 12), or ``len(msg)`` when the message ends first. For messages this
    code built or parsed: callers check QDCOUNT themselves."""
    n = len(msg)
    pos = 12
    while pos < n and msg[pos]:
        pos += 1 + msg[pos]
    return pos


def query_opt(msg: bytes) -> int:
    """Offset of a query's OPT record when it is the only record after the question and
    ends the message (how resolvers send EDNS), else -1. A cheap look for the
    transports (cookies, RRL slips), which act on the raw query before the engine."""
    n = len(msg)
    if n < 23 or msg[4:12] != b"\x00\x01\x00\x00\x00\x00\x00\x01":
        return -1
    pos = question_end(msg) + 5
    if pos + 11 > n or msg[pos] or msg[pos + 1 : pos + 3] != b"\x00\x29":
        return -1
    return pos if pos + 11 + ((msg[pos + 9] << 8) | msg[pos + 10]) == n else -1


_V4_MAPPED = bytes(10) + b"\xff\xff"


def client_of(host: str) -> tuple[int, int]:
    """(family, integer address) of a socket peer address string.

    ``inet_pton`` rather than ``ipaddress``: this runs per query for names with
    subnet rules and for rate limiting. IPv4-mapped IPv6 peers count as IPv4; a
    zone index (``%eth0``) is ignored.
    """
    if ":" not in host:
        return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, host), "big")
    packed = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
    if packed[:12] == _V4_MAPPED:
        return 4, int.from_bytes(packed[12:], "big")
    return 6, int.from_bytes(packed, "big")
