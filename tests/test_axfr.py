"""Zone transfers: AXFR over TCP to allowed networks only, carrying the static data
and each balanced name's fail-open set."""

from __future__ import annotations

from collections.abc import Callable

import dns.query
import dns.rcode
import dns.rdatatype
import dns.zone

from tests.conftest import DATA, ROOT, GslbProcess


def rrsets(zone: dns.zone.Zone) -> set[str]:
    origin = zone.origin
    assert origin is not None
    out = set()
    for name, node in zone.nodes.items():
        for rds in node.rdatasets:
            for rd in rds:
                fq = name.derelativize(origin).to_text().lower()
                text = rd.to_text(origin=origin, relativize=False)
                out.add(f"{fq} {rds.ttl} {dns.rdatatype.to_text(rds.rdtype)} {text}")
    return out


def test_axfr_equals_the_zone_file(server_factory: Callable[..., GslbProcess]) -> None:
    srv = server_factory(ROOT / "tests/conformance/conf.test.yaml", ["--axfr-allow", "127.0.0.0/8"])
    got = dns.zone.from_xfr(dns.query.xfr("127.0.0.1", "conf.test.", port=srv.port, timeout=5))
    want = dns.zone.from_file(str(ROOT / "tests/conformance/conf.test.zone"), origin="conf.test.")
    assert rrsets(got) == rrsets(want)
    assert "zone transfer of conf.test. to 127.0.0.1: AXFR" in srv.log()
    out = srv.dig("conf.test", "AXFR")
    assert "big.conf.test." in out and "XFR size:" in out
    # IXFR from a serial the journal does not reach gets the whole zone (RFC 1995 4)
    ixfr = srv.dig("conf.test", "IXFR=2026112700")
    assert "big.conf.test." in ixfr


def test_balanced_names_carry_their_fail_open_set(server_factory: Callable[..., GslbProcess]) -> None:
    srv = server_factory(DATA / "zones", ["--axfr-allow", "127.0.0.1/32"])
    got = rrsets(dns.zone.from_xfr(dns.query.xfr("127.0.0.1", "bal.test.", port=srv.port, timeout=5)))
    every = {r for r in got if r.startswith("every.bal.test. ")}
    assert every == {"every.bal.test. 20 A 203.0.113.10", "every.bal.test. 20 A 203.0.113.11"}
    w = {r for r in got if r.startswith("w.bal.test. ")}
    assert w == {
        "w.bal.test. 30 A 192.0.2.1",
        "w.bal.test. 30 A 192.0.2.2",
        "w.bal.test. 30 A 192.0.2.3",
        "w.bal.test. 30 AAAA 2001:db8::1",
        'w.bal.test. 300 TXT "static beside balanced"',
    }


def test_transfer_refused_elsewhere(server_factory: Callable[..., GslbProcess]) -> None:
    srv = server_factory(ROOT / "tests/conformance/conf.test.yaml", ["--axfr-allow", "10.0.0.0/8"])
    r = srv.query("conf.test.", "AXFR", tcp=True, edns=None)
    assert r.rcode() == dns.rcode.REFUSED and not r.answer  # 127.0.0.1 is not in 10.0.0.0/8
    r = srv.query("conf.test.", "AXFR", edns=None)  # UDP: never
    assert r.rcode() == dns.rcode.REFUSED and not r.answer
