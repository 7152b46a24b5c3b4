"""DNS cookies across implementations: Knot (mod-cookies) and gslb with the same
secret accept each other's server cookies (RFC 9018), the way an anycast set of
mixed servers must. Knot answers a server cookie that is not its own with
BADCOOKIE, so its acceptance of gslb's cookie is visible."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.test_cookies import SECRET, ask, cookie_counts, cookie_of, start
from tests.test_differential_knot import KNOTD, free_port

pytestmark = pytest.mark.skipif(KNOTD is None, reason="knotd not installed (.ci/system-deps installs it)")


@pytest.fixture
def knot(tmp_path: Path) -> Iterator[int]:
    wd = tmp_path / "knot"
    (wd / "db").mkdir(parents=True)
    (wd / "zone.db").write_text("$ORIGIN c.test.\n$TTL 300\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\n"
                                "ns A 192.0.2.53\nwww A 192.0.2.1\n")  # fmt: skip
    port = free_port()
    (wd / "knot.conf").write_text(f"""server:
    rundir: "{wd}"
    listen: 127.0.0.1@{port}
    background-workers: 1
    udp-workers: 1
    tcp-workers: 1
database:
    storage: "{wd}/db"
log:
  - target: stderr
    any: warning
mod-cookies:
  - id: shared
    secret: 0x{SECRET.hex()}
template:
  - id: default
    global-module: mod-cookies/shared
zone:
  - domain: c.test.
    file: "{wd}/zone.db"
    zonefile-sync: -1
    journal-content: none
""")
    assert KNOTD is not None
    log = open(wd / "knot.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([KNOTD, "-c", str(wd / "knot.conf")], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while True:
        try:
            if dns.query.udp(
                dns.message.make_query("c.test.", "SOA"), "127.0.0.1", port=port, timeout=0.3
            ).answer:
                break
        except (dns.exception.Timeout, OSError):
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise RuntimeError((wd / "knot.log").read_text())
        time.sleep(0.1)
    yield port
    proc.terminate()
    proc.wait(10)
    log.close()


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
