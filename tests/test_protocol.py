"""EDNS, truncation, TCP framing and malformed packets against the real server."""

from __future__ import annotations

import os
import socket
import struct
import time

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.conftest import GslbProcess


def udp_raw(srv: GslbProcess, wire: bytes, timeout: float = 1.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(wire, (srv.host, srv.port))
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def tcp_conn(srv: GslbProcess) -> socket.socket:
    s = socket.create_connection((srv.host, srv.port), timeout=3)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def recv_msg(s: socket.socket) -> bytes | None:
    """One length-prefixed DNS message, reading no further than its end."""
    head = recv_exact(s, 2)
    if len(head) < 2:
        return None
    n = struct.unpack("!H", head)[0]
    body = recv_exact(s, n)
    return body if len(body) == n else None


def alive(srv: GslbProcess) -> None:
    r = srv.query("conf.test.", "SOA", edns=None)
    assert r.rcode() == dns.rcode.NOERROR and r.answer


# --------------------------------------------------------------------- EDNS


def test_edns_opt_only_when_asked(conf_server: GslbProcess) -> None:
    plain = conf_server.query("conf.test.", "SOA", edns=None)
    assert plain.edns == -1
    r = conf_server.query("conf.test.", "SOA")
    assert r.edns == 0 and r.payload == 1232


def test_edns_version_1_gets_badvers(conf_server: GslbProcess) -> None:
    r = conf_server.query("conf.test.", "SOA", edns=1)
    assert r.rcode() == dns.rcode.BADVERS
    assert r.edns == 0 and not r.answer


def test_unknown_option_and_flag_not_echoed(conf_server: GslbProcess) -> None:
    q = dns.message.make_query(
        "conf.test.",
        "SOA",
        use_edns=0,
        ednsflags=0x0080,
        options=[dns.edns.GenericOption(dns.edns.OptionType.make(100), b"xy")],
    )
    r = dns.query.udp(q, conf_server.host, port=conf_server.port, timeout=2)
    assert r.rcode() == dns.rcode.NOERROR
    assert not r.options
    assert r.ednsflags & 0x7FFF == 0


def test_do_bit_copied(conf_server: GslbProcess) -> None:
    q = dns.message.make_query("conf.test.", "SOA", want_dnssec=True)
    r = dns.query.udp(q, conf_server.host, port=conf_server.port, timeout=2)
    assert r.ednsflags & dns.flags.DO


def test_ecs_echoed_with_scope_zero_for_static(conf_server: GslbProcess) -> None:
    ecs = dns.edns.ECSOption("192.0.2.0", 24)
    r = conf_server.query("static.conf.test.", "A", options=[ecs])
    (opt,) = r.options
    assert isinstance(opt, dns.edns.ECSOption)
    assert (opt.address, opt.srclen, opt.scopelen) == ("192.0.2.0", 24, 0)


@pytest.mark.parametrize(
    "data",
    [
        struct.pack("!HBB", 1, 33, 0) + bytes(5),  # source prefix > 32
        struct.pack("!HBB", 1, 24, 24) + bytes([192, 0, 2]),  # scope set in a query
        struct.pack("!HBB", 3, 8, 0) + bytes([1]),  # unknown family
        struct.pack("!HBB", 1, 24, 0) + bytes([192, 0, 2, 7]),  # address longer than the prefix
        struct.pack("!HBB", 1, 20, 0) + bytes([192, 0, 31]),  # bits beyond the prefix
    ],
    ids=["prefix33", "scope", "family", "addrlen", "hostbits"],
)
def test_bad_ecs_formerr(conf_server: GslbProcess, data: bytes) -> None:
    r = conf_server.query(
        "static.conf.test.", "A", options=[dns.edns.GenericOption(dns.edns.OptionType.ECS, data)]
    )
    assert r.rcode() == dns.rcode.FORMERR
    alive(conf_server)


# --------------------------------------------------------------- truncation


def test_truncation_without_edns(conf_server: GslbProcess) -> None:
    q = dns.message.make_query("big.conf.test.", "A", use_edns=False)
    wire = udp_raw(conf_server, q.to_wire())
    assert wire is not None and len(wire) <= 512
    r = dns.message.from_wire(wire)
    assert r.flags & dns.flags.TC and r.flags & dns.flags.AA
    full = conf_server.query("big.conf.test.", "A", edns=None, tcp=True)
    assert not full.flags & dns.flags.TC and len(full.answer[0]) == 40


def test_edns_1232_fits_and_512_truncates(conf_server: GslbProcess) -> None:
    r = conf_server.query("big.conf.test.", "A", payload=1232)
    assert not r.flags & dns.flags.TC and len(r.answer[0]) == 40
    q = dns.message.make_query("big.conf.test.", "A", use_edns=0, payload=512)
    wire = udp_raw(conf_server, q.to_wire())
    assert wire is not None and len(wire) <= 512
    r = dns.message.from_wire(wire)
    assert r.flags & dns.flags.TC and r.edns == 0


def test_bufsize_below_512_read_as_512(conf_server: GslbProcess) -> None:
    r = conf_server.query("longtxt.conf.test.", "TXT", payload=100)
    assert not r.flags & dns.flags.TC
    assert len(r.answer[0][0].strings) == 2 and len(r.answer[0][0].strings[0]) == 255


def test_optional_additional_dropped_before_truncating(tmp_path: object, server_factory: object) -> None:
    """A large NS answer sheds its optional glue rather than set TC."""
    from pathlib import Path

    zone = Path(str(tmp_path)) / "many.test.yaml"
    ns = "\n".join(f"  ns{i}.many.test.: [192.0.2.{i}, '2001:db8::{i:x}']" for i in range(1, 13))
    zone.write_text(f"zone: many.test.\nnameservers:\n{ns}\n")
    srv = server_factory(zone)  # type: ignore[operator]
    q = dns.message.make_query("many.test.", "NS", use_edns=False)
    r = dns.message.from_wire(udp_raw(srv, q.to_wire()) or b"")
    assert not r.flags & dns.flags.TC
    assert len(r.answer[0]) == 12 and not r.additional
    big = srv.query("many.test.", "NS", payload=1232)
    assert len(big.additional) == 24  # 12 A + 12 AAAA RRsets fit in 1232


# ---------------------------------------------------------------------- TCP


def test_tcp_pipelined_split_and_reused(conf_server: GslbProcess) -> None:
    q1 = dns.message.make_query("static.conf.test.", "A")
    q2 = dns.message.make_query("nope.conf.test.", "A")
    w1, w2 = q1.to_wire(), q2.to_wire()
    with tcp_conn(conf_server) as s:
        # two queries in one write
        s.sendall(struct.pack("!H", len(w1)) + w1 + struct.pack("!H", len(w2)) + w2)
        ids = {dns.message.from_wire(recv_msg(s) or b"").id for _ in range(2)}
        assert ids == {q1.id, q2.id}
        # the length prefix split across writes, then the body split
        frame = struct.pack("!H", len(w1)) + w1
        s.sendall(frame[:1])
        time.sleep(0.1)
        s.sendall(frame[1:10])
        time.sleep(0.1)
        s.sendall(frame[10:])
        r = dns.message.from_wire(recv_msg(s) or b"")
        assert r.id == q1.id and len(r.answer[0]) == 2


def test_tcp_partial_message_then_close(conf_server: GslbProcess) -> None:
    w = dns.message.make_query("static.conf.test.", "A").to_wire()
    with tcp_conn(conf_server) as s:
        s.sendall(struct.pack("!H", 100) + w[:20])
    alive(conf_server)


def test_tcp_idle_timeout_and_connection_cap(server_factory: object) -> None:
    from tests.conftest import ROOT

    srv = server_factory(
        ROOT / "tests/conformance/conf.test.yaml",  # type: ignore[operator]
        ["--tcp-idle", "0.5", "--tcp-max", "3"],
    )
    held = [tcp_conn(srv) for _ in range(3)]
    time.sleep(0.1)
    extra = tcp_conn(srv)
    extra.settimeout(2)
    assert extra.recv(10) == b""  # closed at accept: over the cap
    extra.close()
    # idle connections are closed by the server after 0.5 s
    for s in held:
        s.settimeout(3)
        assert s.recv(10) == b""
        s.close()
    # and the slots are free again
    with tcp_conn(srv) as s:
        w = dns.message.make_query("static.conf.test.", "A").to_wire()
        s.sendall(struct.pack("!H", len(w)) + w)
        assert dns.message.from_wire(recv_msg(s) or b"").answer
    r = srv.query("static.conf.test.", "A")  # UDP unaffected throughout
    assert r.answer


# ---------------------------------------------------------------- malformed


def hdr(flags: int = 0, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", 0x1234, flags, qd, an, ns, ar)


Q = (dns.message.make_query("static.conf.test.", "A").question[0].name.to_wire() or b"") + struct.pack(
    "!HH", 1, 1
)
OPT = b"\x00" + struct.pack("!HHIH", 41, 1232, 0, 0)

# (id, wire, allowed outcomes): "silent" or an rcode name
MALFORMED: list[tuple[str, bytes, set[str]]] = [
    ("empty", b"", {"silent"}),
    ("short-header", hdr()[:7], {"silent"}),
    ("qr-set", hdr(flags=0x8000) + Q, {"silent"}),
    ("qdcount0", hdr(qd=0), {"FORMERR"}),
    ("qdcount2", hdr(qd=2) + Q + Q, {"FORMERR"}),
    ("cut-qname", hdr() + Q[:9], {"FORMERR"}),
    ("no-qtype", hdr() + Q[:-4], {"FORMERR"}),
    ("pointer-self", hdr() + b"\xc0\x0c" + struct.pack("!HH", 1, 1), {"FORMERR"}),
    ("pointer-loop", hdr() + b"\x01a\xc0\x0c" + struct.pack("!HH", 1, 1), {"FORMERR"}),
    ("pointer-oob", hdr() + b"\xc3\xff" + struct.pack("!HH", 1, 1), {"FORMERR"}),
    ("label-64", hdr() + b"\x40" + b"a" * 64 + b"\x00" + struct.pack("!HH", 1, 1), {"FORMERR"}),
    ("name-256", hdr() + (b"\x3f" + b"x" * 63) * 4 + b"\x00" + struct.pack("!HH", 1, 1), {"FORMERR"}),
    ("trailing", hdr() + Q + b"\xde\xad\xbe\xef", {"FORMERR"}),
    ("arcount-lie", hdr(ar=1) + Q, {"FORMERR"}),
    ("two-opt", hdr(ar=2) + Q + OPT + OPT, {"FORMERR"}),
    (
        "opt-overrun",
        hdr(ar=1)
        + Q
        + b"\x00"
        + struct.pack("!HHIH", 41, 1232, 0, 8)
        + struct.pack("!HH", 100, 20)
        + b"xxxx",
        {"FORMERR"},
    ),
    ("opt-not-root", hdr(ar=1) + Q + Q[:-4] + struct.pack("!HHIH", 41, 1232, 0, 0), {"FORMERR"}),
    ("ancount-lie", hdr(an=3) + Q, {"FORMERR"}),
]


@pytest.mark.parametrize(
    ("wire", "allowed"), [(w, a) for _, w, a in MALFORMED], ids=[m[0] for m in MALFORMED]
)
def test_malformed(conf_server: GslbProcess, wire: bytes, allowed: set[str]) -> None:
    got = udp_raw(conf_server, wire, timeout=0.5)
    outcome = "silent" if got is None else dns.rcode.to_text(struct.unpack("!H", got[2:4])[0] & 0xF)
    assert outcome in allowed
    if got is not None:
        assert got[:2] == wire[:2]  # ID echoed
    alive(conf_server)


def test_random_garbage_never_kills_the_server(conf_server: GslbProcess) -> None:
    rnd = __import__("random").Random(7)
    base = dns.message.make_query("static.conf.test.", "A", use_edns=0).to_wire()
    for _ in range(400):
        w = bytearray(base)
        for _ in range(rnd.randrange(1, 6)):
            w[rnd.randrange(len(w))] = rnd.randrange(256)
        w = w[: rnd.randrange(len(w) + 1)] if rnd.random() < 0.3 else w
        udp_raw(conf_server, bytes(w), timeout=0.01)
    udp_raw(conf_server, os.urandom(100), timeout=0.01)
    alive(conf_server)


@pytest.mark.parametrize(
    ("opcode", "rcode"),
    [(1, "NOTIMP"), (2, "NOTIMP"), (3, "NOTIMP"), (4, "NOTIMP"), (5, "NOTIMP"), (15, "NOTIMP")],
)
def test_other_opcodes_notimp(conf_server: GslbProcess, opcode: int, rcode: str) -> None:
    q = dns.message.make_query("conf.test.", "SOA", use_edns=False)
    q.set_opcode(dns.opcode.Opcode.make(opcode))
    r = dns.message.from_wire(udp_raw(conf_server, q.to_wire()) or b"")
    assert dns.rcode.to_text(r.rcode()) == rcode and not r.answer


@pytest.mark.parametrize("qclass", ["CH", "NONE", "CLASS42", "ANY"])
def test_other_classes_refused(conf_server: GslbProcess, qclass: str) -> None:
    q = dns.message.make_query("conf.test.", "SOA", rdclass=qclass, use_edns=False)
    r = dns.message.from_wire(udp_raw(conf_server, q.to_wire()) or b"")
    assert r.rcode() == dns.rcode.REFUSED and not r.answer


@pytest.mark.parametrize("tcp", [False, True])
@pytest.mark.parametrize("qtype", ["AXFR", "IXFR"])
def test_zone_transfer_refused(conf_server: GslbProcess, qtype: str, tcp: bool) -> None:
    r = conf_server.query("conf.test.", qtype, tcp=tcp, edns=None)
    assert r.rcode() == dns.rcode.REFUSED and not r.answer
