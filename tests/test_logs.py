"""Structured logs and the sampled query log, from the real server."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.conftest import ROOT, GslbProcess


def test_query_log_every_query(tmp_path: Path, server_factory: object) -> None:
    zone = ROOT / "tests" / "conformance" / "conf.test.yaml"
    srv = server_factory(zone, ["--query-log-sample", "1"])  # type: ignore[operator]
    srv.query("static.conf.test.", "A")
    srv.query("nope.conf.test.", "AAAA", tcp=True)
    srv.wait_log(r"name=nope\.conf\.test\. type=AAAA rcode=NXDOMAIN transport=tcp", 3)
    text = srv.log()
    assert (
        "query client=127.0.0.1 name=static.conf.test. type=A rcode=NOERROR transport=udp answers=2" in text
    )


def test_log_format_json(tmp_path: Path) -> None:
    import shutil

    zdir = tmp_path / "zones"
    zdir.mkdir()
    shutil.copy(ROOT / "tests" / "conformance" / "conf.test.yaml", zdir)
    log = tmp_path / "gslb.log"
    srv = GslbProcess(zdir, log, ["--query-log-sample", "2"], log_format="json")
    try:
        for _ in range(4):
            srv.query("static.conf.test.", "A")
        time.sleep(0.3)
    finally:
        srv.stop()
    lines = [json.loads(ln) for ln in log.read_text().splitlines() if ln.strip()]
    assert all({"ts", "level", "logger", "msg", "pid"} <= set(d) for d in lines)
    assert any(d["logger"] == "gslb" and d["msg"].startswith("loaded zone conf.test.") for d in lines)
    queries = [d for d in lines if d["logger"] == "gslb.query"]
    assert len(queries) == 2  # one in two of four queries
    assert any(d["logger"] == "gslb.health" for d in lines)  # the prober process logs JSON too
