"""A Knot DNS server for tests: one zone from a file, on a free loopback port, with
whatever extra configuration a test needs (modules, templates); stopped at the end."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
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


def _server_section(wd: Path, port: int, level: str) -> str:
    """knot.conf's server, database and log sections: one worker of each kind, on
    127.0.0.1@``port``, its files in ``wd``, logging ``level`` to stderr."""
    return f"""server:
    rundir: "{wd}"
    listen: 127.0.0.1@{port}
    background-workers: 1
    udp-workers: 1
    tcp-workers: 1
database:
    storage: "{wd}/db"
log:
  - target: stderr
    any: {level}"""


@contextlib.contextmanager
def knot_server(wd: Path, domain: str, zone_file: Path, extra: str = "") -> Iterator[int]:
    """knotd serving ``domain`` from ``zone_file`` in work directory ``wd``; yields its
    port once it answers the SOA. ``extra``: more top-level configuration."""
    (wd / "db").mkdir(parents=True, exist_ok=True)
    port = free_port()
    (wd / "knot.conf").write_text(f"""{_server_section(wd, port, "warning")}
{extra}zone:
  - domain: {domain}
    file: "{zone_file}"
    zonefile-sync: -1
    journal-content: none
""")
    with run_knot(wd, port, lambda: _answers(domain, port)):
        yield port


def _answers(domain: str, port: int) -> bool:
    try:
        return bool(
            dns.query.udp(dns.message.make_query(domain, "SOA"), "127.0.0.1", port=port, timeout=0.3).answer
        )
    except (dns.exception.Timeout, OSError):
        return False


def _up(port: int) -> bool:
    """Knot answers something (a secondary without its zone yet says SERVFAIL)."""
    try:
        dns.query.udp(dns.message.make_query(".", "SOA"), "127.0.0.1", port=port, timeout=0.3)
        return True
    except (dns.exception.Timeout, OSError):
        return False


@contextlib.contextmanager
def run_knot(wd: Path, port: int, ready: Callable[[], bool]) -> Iterator[None]:
    """knotd with ``wd/knot.conf``, its log in ``wd/knot.log``, until ``ready()``; stopped at the end."""
    assert KNOTD is not None
    log = open(wd / "knot.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([KNOTD, "-c", str(wd / "knot.conf")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while not ready():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError((wd / "knot.log").read_text())
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()


@contextlib.contextmanager
def knot_secondary(
    wd: Path, port: int, domain: str, primary_port: int, key: tuple[str, str, str] | None
) -> Iterator[None]:
    """knotd on ``port`` as a secondary of ``domain`` from 127.0.0.1@``primary_port``,
    taking NOTIFY from it; ``key``: (name, algorithm, base64 secret) for both, or None.
    The test may AXFR the zone from Knot without a key. Logs at info level (transfers
    show there)."""
    (wd / "db").mkdir(parents=True, exist_ok=True)
    keys = f"key:\n  - id: {key[0]}\n    algorithm: {key[1]}\n    secret: {key[2]}\n" if key else ""
    with_key = f"\n    key: {key[0]}" if key else ""
    (wd / "knot.conf").write_text(f"""{_server_section(wd, port, "info")}
{keys}remote:
  - id: primary
    address: 127.0.0.1@{primary_port}{with_key}
acl:
  - id: notify_from_primary
    address: 127.0.0.1{with_key}
    action: notify
  - id: transfer_to_tests
    address: 127.0.0.1
    action: transfer
zone:
  - domain: {domain}
    master: primary
    acl: [notify_from_primary, transfer_to_tests]
    zonefile-sync: -1
    zonefile-load: none
    journal-content: changes
""")
    with run_knot(wd, port, lambda: _up(port)):
        yield
