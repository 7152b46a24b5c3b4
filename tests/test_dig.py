"""The README's promise, checked with dig against the example zones in zones/."""

from __future__ import annotations

import re
import socket

import pytest

from tests.conftest import ROOT, GslbProcess


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> object:
    tmp = tmp_path_factory.mktemp("ex")
    srv = GslbProcess(ROOT / "zones", tmp / "gslb.log")
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log()


def test_www_balanced_answer(example: GslbProcess) -> None:
    out = example.dig("www.example.com", "A")
    assert "status: NOERROR" in out and "flags: qr aa;" in out
    # from 127.0.0.1 the catch-all rule applies: pool us first, one member
    assert re.search(r"^www\.example\.com\.\s+30\s+IN\s+A\s+198\.51\.100\.10$", out, re.M), out
    assert example.dig("www.example.com", "AAAA", "+short").split() == ["2001:db8:20::10"]


def test_www_from_the_eu_subnet(example: GslbProcess) -> None:
    # 10.0.0.0/8 goes to pool eu; 192.0.2.12 is status: down and never answered
    got = {example.dig("www.example.com", "A", "+short", "+subnet=10.20.0.0/16").strip() for _ in range(60)}
    assert got == {"192.0.2.10", "192.0.2.11"}


def test_tcp_and_static_records(example: GslbProcess) -> None:
    out = example.dig("example.com", "MX", "+tcp")
    assert "(TCP)" in out and "10 mail.example.com." in out
    assert "mail.example.com.\t300\tIN\tA\t192.0.2.25" in out  # MX target in additional
    assert example.dig("api.example.com", "CNAME", "+short").strip() == "www.example.com."
    assert example.dig("x.user.example.com", "A", "+short").strip() == "192.0.2.70"


def test_negative_and_refused(example: GslbProcess) -> None:
    out = example.dig("nope.example.com", "A")
    assert "status: NXDOMAIN" in out
    assert re.search(r"example\.com\.\s+60\s+IN\s+SOA\s+ns1\.example\.com\. hostmaster\.example\.com\.", out)
    out = example.dig("www.google.com", "A", "+rec")
    assert "status: REFUSED" in out and " ra" not in out.split("flags:")[1].split(";")[0]


def test_dig_without_edns_and_with_dnssec_ok(example: GslbProcess) -> None:
    out = example.dig("example.com", "SOA", "+noedns")
    assert "OPT PSEUDOSECTION" not in out and "status: NOERROR" in out
    out = example.dig("example.com", "SOA", "+dnssec")
    assert "flags: do;" in out


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback on this machine")
def test_ipv6_listener(tmp_path: object) -> None:
    from pathlib import Path

    srv = GslbProcess(ROOT / "zones", Path(str(tmp_path)) / "gslb.log", host="::1")
    try:
        assert srv.dig("mail.example.com", "A", "+short").strip() == "192.0.2.25"
        assert srv.dig("mail.example.com", "A", "+short", "+tcp").strip() == "192.0.2.25"
    finally:
        srv.stop()
