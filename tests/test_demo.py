"""The README's demo: three loopback backends, kill one, it leaves the answers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import LISTEN_RE, ROOT, GslbProcess


def test_demo_backend_killed_leaves_answers(tmp_path: Path) -> None:
    run = tmp_path / "demo"
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gslb", "demo", "--dir", str(run), "--listen", "127.0.0.1:0"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 20
        while not (m := LISTEN_RE.search(log.read_text())):
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.05)
        srv = GslbProcess.__new__(GslbProcess)
        srv.host, srv.port = "127.0.0.1", int(m.group("port"))

        def answers() -> set[str]:
            return {rd.to_text() for rr in srv.query("www.demo.example.", "A").answer for rd in rr}

        assert answers() == {"127.0.0.2", "127.0.0.3", "127.0.0.4"}
        os.kill(int((run / "backend-127.0.0.3.pid").read_text()), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while answers() != {"127.0.0.2", "127.0.0.4"}:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert "127.0.0.3:8080 DOWN: connection refused" in log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    assert proc.returncode == 0
    assert "Traceback" not in log.read_text()
