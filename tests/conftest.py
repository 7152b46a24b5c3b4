"""Fixtures: the real gslb server in a subprocess on 127.0.0.1, port 0.

``GslbProcess`` starts ``python -m gslb serve`` on a copy of the zones the test
chooses, waits for its "listening on" log line and exposes the bound port.
Queries go through real clients: dnspython (``query``) and dig (``dig``).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
LISTEN_RE = re.compile(r"listening on (?:\[(?P<h6>[^\]]+)\]|(?P<h4>[\d.]+)):(?P<port>\d+)")
API_RE = re.compile(r"HTTP API on http://127\.0\.0\.1:(?P<port>\d+)/")


class GslbProcess:
    def __init__(
        self,
        zones_dir: Path,
        log_path: Path,
        extra: list[str] | None = None,
        host: str = "127.0.0.1",
        state_dir: Path | None = None,
        log_format: str = "text",
    ) -> None:
        self.zones_dir = zones_dir
        self.log_path = log_path
        self.host = host
        self.port = 0
        self.api_port = 0
        listen = f"[{host}]:0" if ":" in host else f"{host}:0"
        cmd = [
            sys.executable,
            "-m",
            "gslb",
            "--log-format",
            log_format,
            "serve",
            "--zones",
            str(zones_dir),
            "--listen",
            listen,
            "--state-dir",
            str(state_dir or log_path.with_suffix(".state")),
            "--api",
            "127.0.0.1:0",
            *(extra or []),
        ]
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, cwd=ROOT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            text = self.log()
            m = LISTEN_RE.search(text)
            a = API_RE.search(text)
            if m and a:
                self.port = int(m.group("port"))
                self.api_port = int(a.group("port"))
                return
            if self.proc.poll() is not None:
                self._log.close()
                raise RuntimeError(f"gslb exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gslb did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, pattern: str, timeout: float = 10.0, start: int = 0) -> str:
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while time.monotonic() < deadline:
            text = self.log()[start:]
            m = rx.search(text)
            if m:
                return m.group(0)
            time.sleep(0.05)
        raise AssertionError(f"log never matched {pattern!r}:\n{self.log()[start:]}")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode

    # -- clients --------------------------------------------------------------
    def query(
        self,
        name: str,
        rdtype: str = "A",
        *,
        tcp: bool = False,
        edns: int | None = 0,
        payload: int = 1232,
        options: list[dns.edns.Option] | None = None,
        rd: bool = False,
        timeout: float = 2.0,
    ) -> dns.message.Message:
        if edns is None:
            q = dns.message.make_query(name, rdtype, use_edns=False)
        else:
            q = dns.message.make_query(name, rdtype, use_edns=edns, payload=payload, options=options or [])
        if not rd:
            q.flags &= ~dns.flags.RD
        if tcp:
            return dns.query.tcp(q, self.host, port=self.port, timeout=timeout)
        return dns.query.udp(q, self.host, port=self.port, timeout=timeout, ignore_trailing=False)

    def dig(self, *args: str) -> str:
        cmd = ["dig", f"@{self.host}", "-p", str(self.port), "+norec", "+time=2", "+tries=2", *args]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        return out.stdout + out.stderr


import dns.edns  # noqa: E402
import dns.flags  # noqa: E402


@pytest.fixture
def zones_dir(tmp_path: Path) -> Path:
    d = tmp_path / "zones"
    d.mkdir()
    return d


def start_server(zones_dir: Path, tmp_path: Path, extra: list[str] | None = None) -> GslbProcess:
    return GslbProcess(zones_dir, tmp_path / "gslb.log", extra)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[object]:
    started: list[GslbProcess] = []

    def make(zone_files: list[Path] | Path, extra: list[str] | None = None) -> GslbProcess:
        zdir = tmp_path / f"zones{len(started)}"
        if isinstance(zone_files, Path) and zone_files.is_dir():
            shutil.copytree(zone_files, zdir)
        else:
            zdir.mkdir()
            for f in zone_files if isinstance(zone_files, list) else [zone_files]:
                shutil.copy(f, zdir / f.name)
        srv = GslbProcess(zdir, tmp_path / f"gslb{len(started)}.log", extra)
        started.append(srv)
        return srv

    yield make
    for s in started:
        s.stop()
        errors = [ln for ln in s.log().splitlines() if "Traceback" in ln or "internal error" in ln]
        assert not errors, f"server logged internal errors:\n{s.log()}"


@pytest.fixture(scope="module")
def conf_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GslbProcess]:
    """The conformance zone (conf.test.) served by gslb, shared by a module."""
    tmp = tmp_path_factory.mktemp("conf")
    zdir = tmp / "zones"
    zdir.mkdir()
    shutil.copy(ROOT / "tests" / "conformance" / "conf.test.yaml", zdir)
    srv = GslbProcess(zdir, tmp / "gslb.log")
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()


@pytest.fixture(scope="module")
def test_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GslbProcess]:
    """tests/data/zones (balanced names, nested zones) served by gslb."""
    tmp = tmp_path_factory.mktemp("bal")
    zdir = tmp / "zones"
    shutil.copytree(DATA / "zones", zdir)
    srv = GslbProcess(zdir, tmp / "gslb.log")
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()


def rrset_texts(msg: dns.message.Message, section: str = "answer") -> set[str]:
    """A section as a set of 'name ttl IN type rdata' lines (lowercased names)."""
    out = set()
    for rr in getattr(msg, section):
        for rd in rr:
            out.add(
                f"{rr.name.to_text().lower()} {rr.ttl} IN {dns.rdatatype.to_text(rr.rdtype)} {rd.to_text()}"
            )
    return out


os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
