"""The README's demo: three loopback backends, kill one, it leaves the answers.

It runs while the default ports (DNS 5353, API 8053, backends 8080) are held
by someone else, as they are when a user has `make serve` or `make demo`
running in another terminal: the test asks for free ports everywhere.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import LISTEN_RE, ROOT, GslbProcess

DEFAULTS = [("127.0.0.1", 5353, "udp"), ("127.0.0.1", 5353, "tcp"), ("127.0.0.1", 8053, "tcp")] + [
    (f"127.0.0.{i}", 8080, "tcp") for i in (2, 3, 4)
]


@pytest.fixture
def default_ports_taken() -> Iterator[None]:
    """Hold the demo's and `make serve`'s default ports (those that are free: the rest
    are held by someone else already, which is the point)."""
    held = []
    for host, port, proto in DEFAULTS:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
        try:
            s.bind((host, port))
            if proto == "tcp":
                s.listen(1)
            held.append(s)
        except OSError:
            s.close()
    yield
    for s in held:
        s.close()


def test_demo_backend_killed_leaves_answers(tmp_path: Path, default_ports_taken: None) -> None:
    run = tmp_path / "demo"
    log = tmp_path / "demo.log"
    cmd = [
        sys.executable,
        "-m",
        "gslb",
        "demo",
        "--dir",
        str(run),
        "--listen",
        "127.0.0.1:0",
        "--api",
        "127.0.0.1:0",
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
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

        def fast() -> str:
            return str(srv.query("fast.demo.example.", "A").answer[0][0].address)

        deadline = time.monotonic() + 10
        while fast() != "127.0.0.3":  # its checks come back in 10 ms, the others' in 20 and 30
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        backend_port = int(re.findall(r"demo backends on .* port (\d+);", log.read_text())[0])
        assert backend_port != 8080
        os.kill(int((run / "backend-127.0.0.3.pid").read_text()), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while answers() != {"127.0.0.2", "127.0.0.4"}:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        assert f"127.0.0.3:{backend_port} DOWN: connection refused" in log.read_text()
        assert fast() == "127.0.0.4"  # the fastest left (20 ms)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    assert proc.returncode == 0
    assert "Traceback" not in log.read_text()


def gslb(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gslb", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
    )


def last_line(out: subprocess.CompletedProcess[str]) -> str:
    lines = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.strip()]
    return lines[-1] if lines else ""


@contextlib.contextmanager
def taken(proto: str = "tcp") -> Iterator[int]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    if proto == "tcp":
        s.listen(1)
    try:
        yield int(s.getsockname()[1])
    finally:
        s.close()


def test_operational_errors_end_in_one_clear_line(tmp_path: Path) -> None:
    zones = str(ROOT / "zones")
    serve = ["serve", "--zones", zones, "--listen", "127.0.0.1:0"]
    with taken() as api:
        cases = [
            (["demo", "--dir", str(tmp_path / "d"), "--listen", "127.0.0.1:0", "--api", f"127.0.0.1:{api}"],
             f"cannot listen on 127.0.0.1:{api} (HTTP API): address already in use"),
            ([*serve, "--api", f"127.0.0.1:{api}", "--state-dir", ""],
             f"cannot listen on 127.0.0.1:{api} (HTTP API): address already in use"),
        ]  # fmt: skip
        with taken("udp") as dns:
            cases.append((
                [*serve, "--listen", f"127.0.0.1:{dns}", "--no-api", "--state-dir", ""],
                f"cannot listen on 127.0.0.1:{dns} (DNS, UDP): address already in use",
            ))  # fmt: skip
            for args, want in cases:
                out = gslb(*args)
                assert out.returncode == 1 and want in last_line(out), (args, out.stdout, out.stderr)
                assert "Traceback" not in out.stdout + out.stderr
    missing = str(tmp_path / "missing")
    one_liners = [
        (["drain", "z", "p", "m", "--for", "soon"], "argument --for: expected a duration such as 600, 90s"),
        (["drain", "z", "p", "m", "--for", "0s"], "argument --for: expected a duration"),
        (["serve", "--zones", zones, "--tcp-idle", "abc"], "--tcp-idle: expected a number >= 0, got 'abc'"),
        (["serve", "--zones", zones, "--listen", "nowhere"], "expected ADDR:PORT"),
        (["serve", "--zones", zones, "--no-api", "--api-token-file", missing], "No such file or directory"),
        (["serve", "--zones", missing, "--no-api"], f"zones directory {missing} does not exist"),
        (["explain", "www.example.com", "--zones", missing], f"no zone files in {missing}"),
        (["status", "--api-url", "http://127.0.0.1:9"], "cannot reach the API at http://127.0.0.1:9"),
        (["serve", "--config", missing], "cannot read"),
    ]
    for args, want in one_liners:
        out = gslb(*args)
        text = out.stdout + out.stderr
        assert out.returncode == 1, (args, text)
        assert "Traceback" not in text and want in last_line(out), (args, text)
        if args[0] != "serve":  # serve logs what it did before it stopped
            assert len([ln for ln in text.splitlines() if ln.strip()]) == 1, (args, text)
