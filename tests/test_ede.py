"""Extended DNS Errors (RFC 8914): why a query was refused or failed, seen with BIND's
`dig` and with dnspython, and only when the query has EDNS."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.conftest import GslbProcess

ZONE = """zone: e.test.
nameservers: {ns1.e.test.: [192.0.2.53]}
pools:
  gone: {members: [{address: 192.0.2.1, status: down}]}
  fine: {members: [{address: 192.0.2.2}]}
records:
  fail: [{types: [A], rules: [{pools: [gone]}], when_all_down: servfail}]
  refuse: [{types: [A], rules: [{pools: [gone]}], when_all_down: refuse}]
  empty: [{types: [A], rules: [{pools: [gone]}], when_all_down: nodata}]
  ok: [{types: [A], rules: [{pools: [fine]}]}]
"""


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GslbProcess]:
    tmp = tmp_path_factory.mktemp("ede")
    (tmp / "zones").mkdir()
    (tmp / "zones" / "e.test.yaml").write_text(ZONE)
    s = GslbProcess(tmp / "zones", tmp / "gslb.log")
    yield s
    s.stop()
    assert "Traceback" not in s.log()


def ede(r: dns.message.Message) -> list[tuple[int, str | None]]:
    return [(o.code, o.text) for o in r.options if isinstance(o, dns.edns.EDEOption)]


def udp(srv: GslbProcess, q: dns.message.Message) -> dns.message.Message:
    return dns.query.udp(q, srv.host, port=srv.port, timeout=2)


@pytest.mark.parametrize(
    ("name", "rcode", "code", "text"),
    [
        ("elsewhere.example.", dns.rcode.REFUSED, 20, None),  # not one of our zones
        ("fail.e.test.", dns.rcode.SERVFAIL, 0, "no healthy member for fail.e.test."),
        ("refuse.e.test.", dns.rcode.REFUSED, 0, "no healthy member for refuse.e.test."),
        ("empty.e.test.", dns.rcode.NOERROR, 0, "no healthy member for empty.e.test."),
    ],
)
def test_codes_with_dnspython(srv: GslbProcess, name: str, rcode: dns.rcode.Rcode, code: int,
                              text: str | None) -> None:  # fmt: skip
    r = udp(srv, dns.message.make_query(name, "A", use_edns=0))
    assert r.rcode() == rcode and ede(r) == [(code, text)], r
    plain = udp(srv, dns.message.make_query(name, "A", use_edns=False))  # no EDNS: no EDE (no OPT)
    assert plain.rcode() == rcode and plain.edns < 0


def test_healthy_answers_carry_none(srv: GslbProcess) -> None:
    r = udp(srv, dns.message.make_query("ok.e.test.", "A", use_edns=0))
    assert r.answer and ede(r) == []


def test_refused_transfer_is_prohibited(srv: GslbProcess) -> None:
    """No --axfr-allow: a transfer over TCP is refused, and says so."""
    q = dns.message.make_query("e.test.", "AXFR", use_edns=0)
    r = dns.query.tcp(q, srv.host, port=srv.port, timeout=2)
    assert r.rcode() == dns.rcode.REFUSED and [c for c, _ in ede(r)] == [18]


def test_malformed_ecs_is_formerr_with_the_reason(srv: GslbProcess) -> None:
    bad = dns.edns.ECSOption("198.51.100.0", 24, 8)  # a scope in a query: RFC 7871 says FORMERR
    r = udp(srv, dns.message.make_query("ok.e.test.", "A", use_edns=0, options=[bad]))
    assert r.rcode() == dns.rcode.FORMERR and ede(r) == [(0, "ECS scope prefix must be 0 in queries")]


def test_a_rate_limited_slip_says_why(tmp_path: Path) -> None:
    """--rrl-rate 2 --rrl-slip 1: past the limit every answer is a slip (TC=1), and a
    query with EDNS gets an EDE saying it was rate limited; one without gets no OPT."""
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "e.test.yaml").write_text(ZONE)
    srv = GslbProcess(tmp_path / "zones", tmp_path / "gslb.log", ["--rrl-rate", "2", "--rrl-slip", "1"])
    slips: dict[bool, dns.message.Message] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        for i in range(20):
            edns = i % 2 == 0
            q = dns.message.make_query(f"n{i}.e.test.", "A", use_edns=0 if edns else False)
            s.sendto(q.to_wire(), (srv.host, srv.port))
            r = dns.message.from_wire(s.recv(4096))
            if r.flags & dns.flags.TC:
                slips.setdefault(edns, r)
    srv.stop()
    assert set(slips) == {True, False}
    assert ede(slips[True]) == [(0, "rate limited: retry over TCP")] and not slips[True].answer
    assert slips[False].edns < 0


@pytest.mark.skipif(shutil.which("dig") is None, reason="needs dig (bind9-dnsutils, .ci/system-deps)")
def test_dig_shows_them(srv: GslbProcess) -> None:
    out = srv.dig("elsewhere.example.", "A")
    assert "status: REFUSED" in out and "EDE: 20 (Not Authoritative)" in out, out
    out = srv.dig("fail.e.test.", "A")
    assert "status: SERVFAIL" in out and "EDE: 0 (Other): (no healthy member for fail.e.test.)" in out, out
    out = srv.dig("+noedns", "elsewhere.example.", "A")
    assert "status: REFUSED" in out and "EDE" not in out, out
