"""Cluster truth through outages of the store, with the real processes: a 3-member
etcd cluster, three gslb nodes (each reaching its own etcd member through a TCP
forwarder the test cuts and restores, so the test chooses when each node loses
and regains the store and in which order they come back), three real HTTP
backends, and every node's answers sampled every 10 ms.

The rule under test (docs/cluster.md, "What a node answers when"): no answer
names a member that every node sees down, whatever the order of events: the
store lost and regained (etcd itself killed and restarted, which restores the
old leases with the votes written before the outage), members dying and
recovering while the nodes run alone, nodes reconnecting in any order, a node
that does not come back. A member that recovered during the outage must be
answered again once the nodes have re-published.

The order of events is drawn from a seeded generator; the seed is printed
(GSLB_TEST_SEED=N reproduces a run).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import dns.message
import dns.query
import pytest

from tests.conftest import GslbProcess
from tests.etcd import EtcdCluster
from tests.targets import Target, free_port
from tests.tcpproxy import Proxy
from tests.test_cluster import TOKEN, status
from tests.test_health import wait_until

HOSTS = ["127.0.0.81", "127.0.0.82", "127.0.0.83"]
NODES = ("a", "b", "c")
TTL = 9  # longer than an outage here: the votes from before it are still in the store after
STALE_AFTER = 1.2
log = logging.getLogger(__name__)


def zone(port: int) -> str:
    members = ", ".join(f"{{address: {h}, name: m{i + 1}}}" for i, h in enumerate(HOSTS))
    return f"""zone: t.test.
nameservers: {{ns1.t.test.: [192.0.2.53]}}
checks:
  web: {{type: http, port: {port}, path: /healthz, interval: 0.2s, timeout: 0.15s, fall: 2, rise: 2}}
pools:
  p: {{check: web, members: [{members}]}}
records:
  www: [{{types: [A], ttl: 5, answer: {{select: all}}, rules: [{{pools: [p]}}]}}]
"""


class Sampler:
    """Queries every node in turn, each every 10 ms, and keeps (time, node, answer)."""

    def __init__(self, nodes: dict[str, GslbProcess]) -> None:
        self.nodes = nodes
        self.samples: list[tuple[float, str, frozenset[str]]] = []
        self.lost = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        q = dns.message.make_query("www.t.test.", "A")
        while not self._stop.is_set():
            t0 = time.monotonic()
            for name, srv in self.nodes.items():
                try:
                    r = dns.query.udp(q, "127.0.0.1", port=srv.port, timeout=1.0)
                except dns.exception.Timeout:
                    self.lost += 1
                    continue
                got = frozenset(rd.to_text() for rr in r.answer for rd in rr)
                self.samples.append((time.monotonic(), name, got))
            self._stop.wait(max(0.0, 0.01 - (time.monotonic() - t0)))

    def since(self, t: float) -> list[tuple[float, str, frozenset[str]]]:
        return [s for s in self.samples if s[0] >= t]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


class World:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.etcd = EtcdCluster(tmp / "etcd")
        self.proxies = [Proxy(p) for p in self.etcd.client_ports]
        port = free_port(HOSTS)
        self.targets = {h: Target(h, port) for h in HOSTS}
        (tmp / "token").write_text(TOKEN)
        prefix = f"/t-{uuid.uuid4().hex[:8]}/"
        self.nodes: dict[str, GslbProcess] = {}
        for i, n in enumerate(NODES):
            zdir = tmp / f"zones-{n}"
            zdir.mkdir()
            (zdir / "t.test.yaml").write_text(zone(port))
            self.nodes[n] = GslbProcess(
                zdir, tmp / f"{n}.log",
                ["--cluster", f"etcd://{self.proxies[i].endpoint}", "--node", n, "--cluster-prefix", prefix,
                 "--cluster-lease-ttl", str(TTL), "--cluster-stale-after", str(STALE_AFTER),
                 "--api-token-file", str(tmp / "token")],
                state_dir=tmp / f"state-{n}",
            )  # fmt: skip

    def cluster(self, n: str) -> dict[str, object]:
        c: dict[str, object] = status(self.nodes[n])["cluster"]
        return c

    def answers(self, n: str) -> frozenset[str]:
        r = self.nodes[n].query("www.t.test.", "A")
        return frozenset(rd.to_text() for rr in r.answer for rd in rr)

    def all_answer(self, want: set[str], which: tuple[str, ...] = NODES) -> bool:
        return all(self.answers(n) == want for n in which)

    def joined(self, which: tuple[str, ...] = NODES) -> bool:
        """Connected, not alone, and counting every other node's votes as current."""
        for n in which:
            c = self.cluster(n)
            peers = [p for p in c["nodes"] if not p["self"]]  # type: ignore[attr-defined]
            if not c["connected"] or c["alone"] or len(peers) != len(NODES) - 1:
                return False
            if any(p["votes"] != "current" for p in peers):
                return False
        return True

    def close(self) -> None:
        for s in self.nodes.values():
            s.stop()
        for p in self.proxies:
            p.close()
        for t in self.targets.values():
            t.close()
        self.etcd.close()
        for s in self.nodes.values():
            assert "Traceback" not in s.log(), s.log()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.close()


@pytest.mark.timeout(420)
def test_no_answer_names_a_member_every_node_sees_down_across_store_outages(world: World) -> None:
    seed = int(os.environ.get("GSLB_TEST_SEED", random.randrange(1 << 30)))
    log.warning("GSLB_TEST_SEED=%d", seed)
    rnd = random.Random(seed)
    w = world
    wait_until(w.joined, 20, "three nodes joined")
    wait_until(lambda: w.all_answer(set(HOSTS)), 10, "every member answered")
    up = set(HOSTS)
    sampler = Sampler(w.nodes)
    history: list[str] = []
    try:
        for rep in range(20):
            # what happens during this outage: members die, others recover, one always stays up
            die = set(rnd.sample(sorted(up), rnd.randint(1, len(up) - 1))) if len(up) > 1 else set()
            recover = {h for h in set(HOSTS) - up if rnd.random() < 0.7}
            after = (up - die) | recover
            restart_etcd = rep % 4 == 3
            late = rnd.choice(NODES) if rnd.random() < 0.3 else None  # stays away past the others
            order = list(NODES)
            rnd.shuffle(order)
            gaps = [rnd.uniform(0, 0.5) for _ in order]
            what = (
                f"seed {seed} rep {rep}: die {sorted(die)}, recover {sorted(recover)}, "
                f"etcd restarted {restart_etcd}, reconnect order {order} "
                f"gaps {[round(g, 2) for g in gaps]}, late {late}"
            )
            history.append(what)
            t_rep = time.monotonic()
            marks: list[float] = []
            for p in w.proxies:
                p.cut()
            if restart_etcd:
                for i in range(3):
                    w.etcd.kill(i)
            wait_until(lambda: all(w.cluster(n)["alone"] for n in NODES), 10, f"{what}: every node alone")
            for h in die:
                w.targets[h].stop()
            for h in recover:
                w.targets[h].start()
            wait_until(partial(w.all_answer, after), 10, f"{what}: every node alone sees the changes")
            seen_down = time.monotonic()  # from here every node's own checks say `die` are down
            marks.append(seen_down - t_rep)
            if restart_etcd:
                for i in range(3):
                    w.etcd.start(i)
                w.etcd.wait_healthy()
            for n, gap in zip(order, gaps, strict=True):
                time.sleep(gap)
                if n != late:
                    w.proxies[NODES.index(n)].restore()
            marks.append(time.monotonic() - t_rep)
            back = tuple(n for n in NODES if n != late)
            wait_until(partial(_connected, w, back), 20, f"{what}: reconnected")
            marks.append(time.monotonic() - t_rep)
            wait_until(partial(w.all_answer, after), 10, f"{what}: the answers converge")
            if late is not None:
                time.sleep(0.5)  # the others answer for a while with the late node's old votes in the store
                w.proxies[NODES.index(late)].restore()
            wait_until(w.joined, 20, f"{what}: every node back")
            wait_until(partial(w.all_answer, after), 10, f"{what}: the answers converge with every node")
            marks.append(time.monotonic() - t_rep)
            history[-1] += (
                f" (seen down, restored, reconnected, converged at {[round(m, 1) for m in marks]} s)"
            )
            bad = [
                (round(t - seen_down, 3), n, sorted(a & die))
                for t, n, a in sampler.since(seen_down)
                if a & die
            ]
            assert not bad, f"seed {seed}, {what}: answers named members every node sees down: {bad[:10]}"
            up = after
        assert sampler.lost == 0, f"{sampler.lost} queries lost"
        assert len(sampler.samples) > 3000
    finally:
        sampler.close()
        log.warning("orders of events:\n%s", "\n".join(history))


def _moved(etcd: EtcdCluster, prefix: str, rev: int) -> bool:
    return _reg_revision(etcd, prefix, "a") != rev


def _connected(w: World, which: tuple[str, ...]) -> bool:
    return all(w.cluster(n)["connected"] and not w.cluster(n)["alone"] for n in which)


def _reg_revision(etcd: EtcdCluster, prefix: str, node: str) -> int:
    import base64
    import json
    import urllib.request

    key = base64.b64encode(f"{prefix}nodes/{node}".encode()).decode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{etcd.client_ports[0]}/v3/kv/range", data=json.dumps({"key": key}).encode()
    )
    with urllib.request.urlopen(req, timeout=2) as r:
        kvs = json.loads(r.read()).get("kvs", [])
    return int(kvs[0]["mod_revision"]) if kvs else 0


@pytest.mark.parametrize("hang", [False, True], ids=["refused", "silent"])
def test_alone_comes_stale_after_the_loss_whatever_the_phase_of_the_writes(
    tmp_path: Path, hang: bool
) -> None:
    """The stale clock runs from the last successful request to the store, not from the
    node's last registration write (every 2 s): the store lost at several phases of that
    write period, ``alone`` comes stale_after after the loss (within CONTACT, 0.5 s, early
    and the 0.1 s clock late). ``refused``: connections refused at once (the host is
    gone); ``silent``: requests hang (a SIGSTOPped or partitioned store)."""
    etcd = EtcdCluster(tmp_path / "etcd", members=1)
    proxy = Proxy(etcd.client_ports[0])
    (tmp_path / "zones").mkdir()
    (tmp_path / "zones" / "t.test.yaml").write_text(zone(free_port(HOSTS)))
    (tmp_path / "token").write_text(TOKEN)
    prefix = f"/t-{uuid.uuid4().hex[:8]}/"
    stale_after = 1.5
    node = GslbProcess(
        tmp_path / "zones", tmp_path / "a.log",
        ["--cluster", f"etcd://{proxy.endpoint}", "--node", "a", "--cluster-prefix", prefix,
         "--cluster-stale-after", str(stale_after), "--api-token-file", str(tmp_path / "token")],
    )  # fmt: skip
    took: list[tuple[float, float]] = []
    try:
        for phase in (0.1, 0.6, 1.1, 1.6):
            wait_until(lambda: status(node)["cluster"]["connected"], 20, "connected")
            # the registration write that starts the period: its revision moves
            rev = _reg_revision(etcd, prefix, "a")
            wait_until(partial(_moved, etcd, prefix, rev), 5, "a registration write")
            time.sleep(phase)
            if hang:
                proxy.freeze()
            else:
                proxy.cut()
            lost = time.monotonic()
            wait_until(lambda: status(node)["cluster"]["alone"], stale_after + 5, "alone")
            took.append((phase, time.monotonic() - lost))
            c = status(node)["cluster"]
            assert c["last_sync_seconds"] >= stale_after - 0.6, c
            proxy.restore()
            wait_until(lambda: not status(node)["cluster"]["alone"], 20, "not alone once the store is back")
        for phase, t in took:
            assert stale_after - 0.6 <= t <= stale_after + 0.4, (
                f"alone {t:.2f}s after a loss at phase {phase}: {took}"
            )
    finally:
        node.stop()
        proxy.close()
        etcd.close()
        assert "Traceback" not in node.log(), node.log()
    log.warning("loss phase -> alone after: %s", took)
