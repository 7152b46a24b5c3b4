"""``--workers N``: several processes answer on one port, as one server.

Health is probed once (not once per worker) and every transition, override and
reload reaches every worker; SIGTERM stops them all; a worker that dies is
started again. Which process answers a query is the kernel's choice (a hash of
the client's address and port), so the tests ask from many source ports.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.message
import pytest

from tests.conftest import GslbProcess
from tests.targets import Target, free_port
from tests.test_api import TOKEN, http
from tests.test_health import wait_until

HOSTS = ["127.0.0.121", "127.0.0.122", "127.0.0.123"]
SOCKETS = 60
INTERVAL = 0.5

pytestmark = pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="SO_REUSEPORT is Linux/BSD")


def zone(port: int) -> str:
    members = ", ".join(f"{{address: {h}, name: lb{i}}}" for i, h in enumerate(HOSTS, 1))
    return f"""zone: wk.test.
nameservers: {{ns1.wk.test.: [192.0.2.53]}}
checks:
  web: {{type: http, port: {port}, path: /healthz, interval: {INTERVAL}s, timeout: 0.3s, fall: 1, rise: 1}}
pools:
  p: {{check: web, members: [{members}]}}
records:
  www: [{{types: [A], answer: {{select: all}}, rules: [{{pools: [p]}}]}}]
  info: [{{type: TXT, value: '"v1"'}}]
"""


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[GslbProcess, dict[str, Target]]]:
    port = free_port(HOSTS)
    targets = {h: Target(h, port) for h in HOSTS}
    zdir = tmp_path / "zones"
    zdir.mkdir()
    (zdir / "wk.test.yaml").write_text(zone(port))
    (tmp_path / "token").write_text(TOKEN)
    srv = GslbProcess(zdir, tmp_path / "gslb.log",
                      ["--workers", "3", "--api-token-file", str(tmp_path / "token")])  # fmt: skip
    try:
        yield srv, targets
    finally:
        srv.stop()
        for t in targets.values():
            t.close()
    assert "Traceback" not in srv.log(), srv.log()


def ask_all(srv: GslbProcess, name: str, rdtype: str = "A", lossy: bool = False) -> list[set[str]]:
    """The same question from SOCKETS source ports at once: one answer set per socket.
    ``lossy``: a query may go unanswered (it sat in a worker's socket when it was killed)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(SOCKETS)]
    try:
        for i, s in enumerate(socks):
            q = dns.message.make_query(name, rdtype)
            q.id = i
            s.sendto(q.to_wire(), (srv.host, srv.port))
        out = []
        for s in socks:
            s.settimeout(0.5 if lossy else 2)
            try:
                m = dns.message.from_wire(s.recv(65535))
            except TimeoutError:
                if lossy:
                    continue
                raise
            out.append({rd.to_text() for rr in m.answer for rd in rr})
        return out
    finally:
        for s in socks:
            s.close()


def status(srv: GslbProcess) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.api_port}/v1/status", timeout=5) as r:
        doc: dict[str, object] = json.loads(r.read())
    return doc


def worker_pids(srv: GslbProcess) -> list[int]:
    return [int(w["pid"]) for w in status(srv)["workers"]]  # type: ignore[attr-defined]


def test_workers_answer_together_and_probe_once(workers: tuple[GslbProcess, dict[str, Target]]) -> None:
    srv, targets = workers
    srv.wait_log("first probe round complete")
    pids = worker_pids(srv)
    assert len(pids) == 3 and len(set(pids)) == 3 and srv.proc.pid in pids
    everyone = set(HOSTS)
    assert all(a == everyone for a in ask_all(srv, "www.wk.test."))
    # the kernel spread the sockets over the processes: each one answered some
    time.sleep(1.5)  # workers report their counters every second
    per_worker = [w["queries"] for w in status(srv)["workers"]]  # type: ignore[attr-defined]
    assert sum(1 for n in per_worker if n > 0) >= 2, per_worker
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.api_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                if ln.startswith("gslb_queries_total{") and 'zone="wk.test."' in ln)  # fmt: skip
    assert total >= SOCKETS  # /metrics adds up every worker's counters
    # one prober: in 3 s each target sees about 3 / INTERVAL probes, not three times that
    before = {h: t.requests for h, t in targets.items()}
    time.sleep(3.0)
    probes = [t.requests - before[h] for h, t in targets.items()]
    assert all(3 <= n <= 9 for n in probes), probes


def test_health_and_overrides_reach_every_worker(workers: tuple[GslbProcess, dict[str, Target]]) -> None:
    srv, targets = workers
    srv.wait_log("first probe round complete")
    # an admin drain: every worker stops answering the member at once
    code, _ = http(srv, "POST", "/v1/members/wk.test./p/lb1/drain", token=TOKEN)
    assert code == 200
    wait_until(lambda: all(HOSTS[0] not in a for a in ask_all(srv, "www.wk.test.")), 2.0)
    http(srv, "POST", "/v1/members/wk.test./p/lb1/clear", token=TOKEN)
    wait_until(lambda: all(HOSTS[0] in a for a in ask_all(srv, "www.wk.test.")), 2.0)
    # a failed health check: the prober (once) says so, every worker follows
    targets[HOSTS[1]].stop()
    wait_until(lambda: all(HOSTS[1] not in a for a in ask_all(srv, "www.wk.test.")), INTERVAL * 2 + 2)
    targets[HOSTS[1]].start()
    wait_until(lambda: all(HOSTS[1] in a for a in ask_all(srv, "www.wk.test.")), INTERVAL * 2 + 2)


def test_reload_reaches_every_worker(workers: tuple[GslbProcess, dict[str, Target]]) -> None:
    srv, _ = workers
    assert all(a == {'"v1"'} for a in ask_all(srv, "info.wk.test.", "TXT"))
    zfile = srv.zones_dir / "wk.test.yaml"
    zfile.write_text(zfile.read_text().replace('"v1"', '"v2"'))
    srv.signal(signal.SIGHUP)
    wait_until(lambda: all(a == {'"v2"'} for a in ask_all(srv, "info.wk.test.", "TXT")), 5.0)
    # a broken edit: every worker keeps the last good zone
    zfile.write_text(zfile.read_text().replace("records:", "recordz:"))
    srv.signal(signal.SIGHUP)
    srv.wait_log("rejected")
    time.sleep(0.5)
    assert all(a == {'"v2"'} for a in ask_all(srv, "info.wk.test.", "TXT"))


def test_dead_worker_restarted_and_sigterm_stops_all(workers: tuple[GslbProcess, dict[str, Target]]) -> None:
    srv, _ = workers
    pids = worker_pids(srv)
    victim = next(p for p in pids if p != srv.proc.pid)
    os.kill(victim, signal.SIGKILL)
    srv.wait_log(rf"worker \d \(pid {victim}\) exited")
    wait_until(lambda: len(set(worker_pids(srv))) == 3 and victim not in worker_pids(srv), 30.0)
    assert all(a == set(HOSTS) for a in ask_all(srv, "www.wk.test."))
    pids = worker_pids(srv)
    assert srv.stop() == 0
    wait_until(lambda: all(gone(p) for p in pids), 10.0)


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_restarted_worker_never_answers_a_down_member(
    workers: tuple[GslbProcess, dict[str, Target]],
) -> None:
    """A worker started again after a crash answers from the primary's current view
    (health and overrides) from its first packet, not from "everything up"."""
    srv, targets = workers
    targets[HOSTS[0]].stop()
    assert http(srv, "POST", "/v1/members/wk.test/p/lb2/drain", token=TOKEN)[0] == 200
    want = {HOSTS[2]}
    wait_until(lambda: all(a == want for a in ask_all(srv, "www.wk.test.")), 10.0)
    for _ in range(3):
        victim = next(p for p in worker_pids(srv) if p != srv.proc.pid)
        mark = len(srv.log())
        os.kill(victim, signal.SIGKILL)
        seen: list[set[str]] = []
        deadline = time.monotonic() + 15
        # ask from 60 source ports over and over while the new worker binds and starts
        while victim in worker_pids(srv) or len(set(worker_pids(srv))) < 3:
            assert time.monotonic() < deadline, srv.log()[mark:]
            seen += ask_all(srv, "www.wk.test.", lossy=True)
        seen += ask_all(srv, "www.wk.test.")
        assert all(a == want for a in seen), [a for a in seen if a != want]
