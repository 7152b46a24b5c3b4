"""A Knot DNS server for tests: one zone from a file, on a free loopback port, with
whatever extra configuration a test needs (modules, templates); stopped at the end."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.query

KNOTD = shutil.which("knotd") or ("/usr/sbin/knotd" if Path("/usr/sbin/knotd").exists() else None)


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            t.bind(("127.0.0.1", 0))
            port = int(t.getsockname()[1])
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


@contextlib.contextmanager
def knot_server(wd: Path, domain: str, zone_file: Path, extra: str = "") -> Iterator[int]:
    """knotd serving ``domain`` from ``zone_file`` in work directory ``wd``; yields its
    port once it answers the SOA. ``extra``: more top-level configuration."""
    (wd / "db").mkdir(parents=True, exist_ok=True)
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
{extra}zone:
  - domain: {domain}
    file: "{zone_file}"
    zonefile-sync: -1
    journal-content: none
""")
    assert KNOTD is not None
    log = open(wd / "knot.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([KNOTD, "-c", str(wd / "knot.conf")], stdout=log, stderr=subprocess.STDOUT)
    try:
        q = dns.message.make_query(domain, "SOA")
        deadline = time.monotonic() + 20
        while True:
            try:
                if dns.query.udp(q, "127.0.0.1", port=port, timeout=0.3).answer:
                    break
            except (dns.exception.Timeout, OSError):
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError((wd / "knot.log").read_text())
            time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
