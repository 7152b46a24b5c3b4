"""Knot DNS as a secondary of gslb, on loopback: a TSIG key on both sides, NOTIFY
from gslb accepted by Knot, IXFR from gslb's journal. An edit of the zone file
reaches Knot within seconds, as an incremental transfer; a Knot with the wrong
secret gets nothing, and gslb logs why."""

from __future__ import annotations

import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.conftest import GslbProcess
from tests.knot import KNOTD, free_port, knot_secondary
from tests.test_axfr import rrsets
from tests.test_secondary import BIG, SECRET, axfr, config, write_zone

pytestmark = pytest.mark.skipif(KNOTD is None, reason="knotd not installed (.ci/system-deps installs it)")


def knot_soa(port: int) -> int | None:
    try:
        r = dns.query.udp(dns.message.make_query("sec.test.", "SOA"), "127.0.0.1", port=port, timeout=0.5)
    except (dns.exception.Timeout, OSError):
        return None
    return int(r.answer[0][0].serial) if r.rcode() == dns.rcode.NOERROR and r.answer else None


def wait_knot(port: int, serial: int, timeout: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if knot_soa(port) == serial:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"Knot never reached serial {serial} (has {knot_soa(port)})")


def knot_axfr(port: int) -> set[str]:
    import dns.zone

    return rrsets(dns.zone.from_xfr(dns.query.xfr("127.0.0.1", "sec.test.", port=port, timeout=5)))


def start(tmp_path: Path, knot_port: int) -> GslbProcess:
    zdir = tmp_path / "zones"
    zdir.mkdir()
    write_zone(zdir, 10, "  a:\n    - {type: A, value: 198.51.100.1}\n" + BIG)
    cfg = config(
        tmp_path,
        "  - zones: [sec.test]\n    allow: [{key: xfr-key}]\n"
        f"    notify: [{{address: '127.0.0.1:{knot_port}', key: xfr-key}}]\n",
    )
    return GslbProcess(zdir, tmp_path / "gslb.log", ["--config", str(cfg), "--watch-interval", "0.2"])


def test_knot_follows_edits_through_notify_and_ixfr(tmp_path: Path) -> None:
    knot_port = free_port()
    srv = start(tmp_path, knot_port)
    wd = tmp_path / "knot"
    wd.mkdir()
    try:
        with knot_secondary(wd, knot_port, "sec.test.", srv.port, ("xfr-key", "hmac-sha256", SECRET)):
            wait_knot(knot_port, 10, 15)  # its first refresh: AXFR
            assert knot_axfr(knot_port) == rrsets(axfr(srv))  # Knot serves what gslb transfers
            # an edit: gslb reloads, NOTIFYs, Knot asks IXFR and gets the difference
            mark = len(srv.log())
            write_zone(srv.zones_dir, 11, "  a:\n    - {type: A, value: 198.51.100.2}\n  b:\n"
                       "    - {type: TXT, value: added}\n" + BIG.replace("host3:", "h3:"))  # fmt: skip
            took = wait_knot(knot_port, 11, 10)
            assert took < 5, f"Knot took {took:.1f}s"
            srv.wait_log(
                rf"NOTIFY sec\.test\. serial 11 to 127\.0\.0\.1:{knot_port} \(key xfr-key\): acknowledged",
                5,
                mark,
            )
            srv.wait_log(
                r"zone transfer of sec\.test\. to 127\.0\.0\.1 \(key xfr-key\): IXFR 10 -> 11", 5, mark
            )
            assert knot_axfr(knot_port) == rrsets(axfr(srv))
            got = knot_axfr(knot_port)
            assert 'b.sec.test. 300 TXT "added"' in got and "a.sec.test. 300 A 198.51.100.2" in got
            assert not any(r.startswith("host3.") for r in got)
            knot_log = (wd / "knot.log").read_text()
            assert "IXFR, incoming" in knot_log and "serial 10 -> 11" in knot_log, knot_log
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def test_knot_with_the_wrong_secret_gets_nothing(tmp_path: Path) -> None:
    knot_port = free_port()
    srv = start(tmp_path, knot_port)
    wd = tmp_path / "knot"
    wd.mkdir()
    wrong = "d3JvbmdzZWNyZXR3cm9uZ3NlY3JldHdyb25nc2VjcmU="
    try:
        with knot_secondary(wd, knot_port, "sec.test.", srv.port, ("xfr-key", "hmac-sha256", wrong)):
            # Knot's SOA query and transfer are refused (BADSIG, logged), our NOTIFY is refused by Knot
            srv.wait_log(
                r"zone transfer of sec\.test\. from 127\.0\.0\.1 refused: TSIG BADSIG \(key xfr-key\)", 15
            )
            srv.wait_log(
                rf"NOTIFY sec\.test\. serial 10 to 127\.0\.0\.1:{knot_port} \(key xfr-key\): TSIG BADSIG "
                r"\(the secondary does not accept key xfr-key\)",
                15,
            )
            time.sleep(1)
            assert knot_soa(knot_port) is None  # Knot has no zone
            assert "failed to verify TSIG" in (wd / "knot.log").read_text()
    finally:
        srv.stop()
