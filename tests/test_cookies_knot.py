"""DNS cookies across implementations: Knot (mod-cookies) and gslb with the same
secret accept each other's server cookies (RFC 9018), the way an anycast set of
mixed servers must. Knot answers a server cookie that is not its own with
BADCOOKIE, so its acceptance of gslb's cookie is visible."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.knot import KNOTD, knot_server
from tests.test_cookies import SECRET, ask, cookie_counts, cookie_of, start

pytestmark = pytest.mark.skipif(KNOTD is None, reason="knotd not installed (.ci/system-deps installs it)")


@pytest.fixture
def knot(tmp_path: Path) -> Iterator[int]:
    wd = tmp_path / "knot"
    wd.mkdir()
    (wd / "zone.db").write_text("$ORIGIN c.test.\n$TTL 300\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\n"
                                "ns A 192.0.2.53\nwww A 192.0.2.1\n")  # fmt: skip
    extra = f"""mod-cookies:
  - id: shared
    secret: 0x{SECRET.hex()}
template:
  - id: default
    global-module: mod-cookies/shared
"""
    with knot_server(wd, "c.test.", wd / "zone.db", extra) as port:
        yield port


def knot_ask(port: int, cookie: bytes) -> dns.message.Message:
    q = dns.message.make_query("www.c.test.", "A", use_edns=0,
                               options=[dns.edns.CookieOption(cookie[:8], cookie[8:])])  # fmt: skip
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=2)


def test_knot_and_gslb_accept_each_others_cookies(tmp_path: Path, knot: int) -> None:
    srv = start(tmp_path, "g")
    try:
        from_knot = cookie_of(knot_ask(knot, os.urandom(8)))
        r = ask(srv, from_knot)  # Knot's cookie, presented to gslb: valid
        assert r.answer and cookie_counts(srv)["valid"] == 1
        from_gslb = cookie_of(ask(srv, os.urandom(8)))
        r = knot_ask(knot, from_gslb)  # gslb's cookie, presented to Knot: accepted, kept
        assert r.rcode() == dns.rcode.NOERROR and r.answer and cookie_of(r) == from_gslb
        forged = from_gslb[:8] + from_gslb[8:16] + bytes(8)  # a wrong hash: Knot says BADCOOKIE
        assert knot_ask(knot, forged).rcode() == dns.rcode.BADCOOKIE
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()
