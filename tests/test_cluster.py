"""Cluster mode through real processes: a 3-member etcd cluster started here, three
gslb nodes, real HTTP targets on 127.0.0.x, real DNS queries.

Every node probes the same members; a node's check of one member can be pointed
at a dead address (``check_address``), which is how one node is made to see a
backend as down while the others see it up (the broken-uplink case).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import GslbProcess
from tests.etcd import EtcdCluster
from tests.targets import Target, free_port
from tests.test_health import wait_until

TOKEN = "cluster-t0ken"
HOSTS = ["127.0.0.71", "127.0.0.73"]
DEAD = "127.0.0.72"  # nothing listens here: a node that checks it sees the member down
TTL = 3


def zone(port: int, quorum: str = "majority", blind: bool = False) -> str:
    """Two members; ``blind``: this node checks 127.0.0.71 at a dead address."""
    m1 = f"{{address: {HOSTS[0]}, name: m1" + (f", check_address: {DEAD}}}" if blind else "}")
    # a pool of names (a balanced CNAME): votes and drains work on them as on addresses
    n1 = f"{{target: one.cdn.example., name: n1, check_address: {DEAD if blind else HOSTS[0]}}}"
    return f"""zone: c.test.
quorum: {quorum}
nameservers: {{ns1.c.test.: [192.0.2.53]}}
checks:
  web: {{type: http, port: {port}, path: /healthz, interval: 0.3s, timeout: 0.2s, fall: 2, rise: 2}}
pools:
  p: {{check: web, members: [{m1}, {{address: {HOSTS[1]}, name: m2}}]}}
  q: {{check: web, members: [{n1}, {{target: two.cdn.example., name: n2, check_address: {HOSTS[1]}}}]}}
records:
  www: [{{types: [A], ttl: 5, answer: {{select: all}}, rules: [{{pools: [p]}}]}}]
  cdn: [{{types: [CNAME], ttl: 5, answer: {{select: first}}, rules: [{{pools: [q]}}]}}]
"""


def cname(srv: GslbProcess) -> str:
    return str(srv.query("cdn.c.test.", "A").answer[0][0].target)


def cname_is(srv: GslbProcess, want: str) -> Callable[[], bool]:
    return lambda: cname(srv) == want


def answers(srv: GslbProcess) -> set[str]:
    return {rd.to_text() for rr in srv.query("www.c.test.", "A").answer for rd in rr}


def answers_are(srv: GslbProcess, want: set[str]) -> Callable[[], bool]:
    return lambda: answers(srv) == want


def http(srv: GslbProcess, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{srv.api_port}{path}", data=data, method=method)
    req.add_header("Authorization", f"Bearer {TOKEN}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def status(srv: GslbProcess) -> dict[str, Any]:
    doc: dict[str, Any] = http(srv, "GET", "/v1/status")[1]
    return doc


def metric(srv: GslbProcess, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.api_port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    c = EtcdCluster(tmp_path_factory.mktemp("etcd"))
    yield c
    c.close()


@pytest.fixture(scope="module")
def targets() -> Iterator[list[Target]]:
    port = free_port(HOSTS)
    ts = [Target(h, port) for h in HOSTS]
    yield ts
    for t in ts:
        t.close()


class Nodes:
    """gslb nodes of one cluster (a fresh key prefix per test)."""

    def __init__(self, tmp: Path, etcd_url: str, port: int) -> None:
        self.tmp, self.etcd_url, self.port = tmp, etcd_url, port
        self.prefix = f"/t-{uuid.uuid4().hex[:8]}/"
        (tmp / "token").write_text(TOKEN)
        self.nodes: dict[str, GslbProcess] = {}

    def start(
        self, name: str, quorum: str = "majority", blind: bool = False, extra: tuple[str, ...] = ()
    ) -> GslbProcess:
        zdir = self.tmp / f"zones-{name}"
        zdir.mkdir(exist_ok=True)
        (zdir / "c.test.yaml").write_text(zone(self.port, quorum, blind))
        srv = GslbProcess(
            zdir,
            self.tmp / f"{name}.log",
            ["--cluster", self.etcd_url, "--node", name, "--region", f"r-{name}",
             "--cluster-prefix", self.prefix, "--cluster-lease-ttl", str(TTL),
             "--api-token-file", str(self.tmp / "token"), *extra],
            state_dir=self.tmp / f"state-{name}",
        )  # fmt: skip
        self.nodes[name] = srv
        return srv

    def rewrite(self, name: str, quorum: str, blind: bool = False) -> None:
        (self.tmp / f"zones-{name}" / "c.test.yaml").write_text(zone(self.port, quorum, blind))

    def wait_joined(self, n: int, timeout: float = 15.0) -> None:
        def joined() -> bool:
            return all(
                (c := status(s)["cluster"])["connected"] and len(c["nodes"]) == n
                for s in self.nodes.values()
                if s.proc.poll() is None
            )

        wait_until(joined, timeout, f"{n} nodes see each other")

    def close(self) -> None:
        for s in self.nodes.values():
            s.stop()
            assert "Traceback" not in s.log(), s.log()


@pytest.fixture
def nodes(tmp_path: Path, etcd: EtcdCluster, targets: list[Target]) -> Iterator[Nodes]:
    n = Nodes(tmp_path, etcd.url, targets[0].port)
    yield n
    n.close()


def test_a_drain_on_one_node_reaches_every_node_and_expires_everywhere(nodes: Nodes) -> None:
    a, b, c = (nodes.start(n) for n in ("a", "b", "c"))
    nodes.wait_joined(3)
    for s in (a, b, c):
        wait_until(answers_are(s, set(HOSTS)), 5, "both members answered")
    code, r = http(a, "POST", "/v1/members/c.test/p/m1/drain", {"for": 4})
    assert code == 200 and r["scope"] == "cluster", r
    t0 = time.monotonic()
    for s in (b, c):
        wait_until(answers_are(s, {HOSTS[1]}), 1.0, "the drain reached another node within 1 s")
    assert answers(a) == {HOSTS[1]}
    # a second operator, through another node, cannot silently overwrite it
    code, r = http(b, "POST", "/v1/members/c.test/p/m1/down", {})
    assert code == 409 and "conflict" in r["error"] and r["current"]["action"] == "drain", r
    assert status(c)["members"][0]["override"]["action"] == "drain"
    # ... but can replace it knowing what it replaces
    rev = status(b)["members"][0]["override"]["revision"]
    code, r = http(b, "POST", "/v1/members/c.test/p/m1/drain", {"revision": rev, "for": 4})
    assert code == 200, r
    # the expiry returns the member on every node
    for s in (a, b, c):
        wait_until(answers_are(s, set(HOSTS)), 7, "the expired drain released the member")
    assert time.monotonic() - t0 > 3.5  # not before the (replaced) drain's end
    assert all(status(s)["members"][0]["override"] is None for s in (a, b, c))
    # a member given by name: the same, its CNAME moves to the next target everywhere
    assert all(cname(s) == "one.cdn.example." for s in (a, b, c))
    code, r = http(b, "POST", "/v1/members/c.test/q/n1/drain", {"for": 3})
    assert code == 200 and r["scope"] == "cluster", r
    for s in (a, b, c):
        wait_until(cname_is(s, "two.cdn.example."), 1.0, "the drain of a name member everywhere")
    for s in (a, b, c):
        wait_until(cname_is(s, "one.cdn.example."), 6, "and its expiry")


def test_one_node_that_cannot_reach_a_backend_is_outvoted_under_majority_not_under_any(
    nodes: Nodes,
) -> None:
    a = nodes.start("a")
    b = nodes.start("b")
    c = nodes.start("c", blind=True)  # c's check of m1 goes to a dead address
    nodes.wait_joined(3)
    wait_until(lambda: "1 of 3 down" in status(a)["members"][0]["why"], 5, "c's down vote counted on a")
    for s in (a, b, c):
        assert answers(s) == set(HOSTS), "majority: one down vote of three keeps m1 in"

    # the name member c checks at the dead address too: outvoted the same way (its vote
    # is a key of its own, published when c's check of it falls)
    def n1_why() -> str:
        return str(next(m for m in status(a)["members"] if m["name"] == "n1")["why"])

    wait_until(lambda: "1 of 3 down (majority)" in n1_why(), 5, "c's down vote on n1 counted on a")
    assert all(cname(s) == "one.cdn.example." for s in (a, b, c))
    m1 = status(b)["members"][0]
    votes = {v["node"]: v for v in m1["votes"]}
    assert votes["c"]["up"] is False and "connection refused" in votes["c"]["reason"], m1
    assert votes["a"]["up"] and votes["b"]["up"]
    assert m1["why"].startswith("cluster vote, 1 of 3 down (majority): c connection refused"), m1["why"]
    # c's zone file differs from a's and b's: every node says so
    mism = status(a)["cluster"]["serial_mismatch"]["c.test."]
    assert mism["same_content"] is False and set(mism["serials"]) == {"a", "b", "c"}, mism
    c.wait_log(r"cluster: nodes serve different versions of c\.test\.", 5)
    out = subprocess.run(
        [sys.executable, "-m", "gslb", "status", "--api-url", f"http://127.0.0.1:{a.api_port}"],
        capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    assert "cluster node a: store connected" in out and "1 of 3 down (majority)" in out, out
    # the same votes under `any`: one down vote takes m1 out, on every node
    for n in ("a", "b"):
        nodes.rewrite(n, "any")
    nodes.rewrite("c", "any", blind=True)
    for s in (a, b, c):
        wait_until(answers_are(s, {HOSTS[1]}), 5, "quorum any: m1 out everywhere")
        wait_until(cname_is(s, "two.cdn.example."), 5, "and n1")
    assert "1 of 3 down (any)" in status(a)["members"][0]["why"]
    # gslb explain on the API says the same
    code, ex = http(a, "GET", "/v1/explain?name=www.c.test.&type=A")
    assert code == 200 and "1 of 3 down (any)" in json.dumps(ex), ex
    out = subprocess.run(
        [sys.executable, "-m", "gslb", "explain", "www.c.test.", "--api-url", f"http://127.0.0.1:{b.api_port}"],
        capture_output=True, text=True, timeout=30,
    ).stdout  # fmt: skip
    assert "cluster vote, 1 of 3 down (any): c connection refused; a, b up" in out, out


def test_a_killed_node_s_votes_vanish_after_its_lease(nodes: Nodes) -> None:
    a = nodes.start("a", quorum="any")
    b = nodes.start("b", quorum="any")
    c = nodes.start("c", quorum="any", blind=True)
    nodes.wait_joined(3)
    for s in (a, b):
        wait_until(answers_are(s, {HOSTS[1]}), 5, "c's down vote takes m1 out")
    c.proc.send_signal(signal.SIGKILL)
    c.proc.wait(5)
    t0 = time.monotonic()
    for s in (a, b):
        wait_until(answers_are(s, set(HOSTS)), TTL + 4, "without c, m1 is back")
    took = time.monotonic() - t0
    assert took >= TTL - 1.5, f"c's votes vanished after {took:.1f}s, before its lease ({TTL}s) could end"
    nodes.wait_joined(2)
    a.wait_log(r"cluster: node c left", 2)


def test_nsid_names_the_node(nodes: Nodes) -> None:
    a = nodes.start("a")
    out = a.dig("+nsid", "www.c.test.", "A")
    assert 'NSID: 61 ("a")' in out, out
    # without +nsid no NSID option comes back
    assert "NSID" not in a.dig("www.c.test.", "A")


def test_store_down_answers_go_on_and_it_recovers(tmp_path: Path, targets: list[Target]) -> None:
    """SIGSTOP every etcd member, SIGKILL one: no query is lost, the nodes say they are
    disconnected, and after SIGCONT they reconnect on their own. A node restarted
    during the outage serves the persisted merged view from its first query."""
    etcd = EtcdCluster(tmp_path / "etcd")
    nodes = Nodes(tmp_path, etcd.url, targets[0].port)
    try:
        a = nodes.start("a", quorum="any", extra=("--cluster-stale-after", "60"))
        b = nodes.start("b", quorum="any", blind=True, extra=("--cluster-stale-after", "60"))
        nodes.wait_joined(2)
        wait_until(lambda: answers(a) == {HOSTS[1]}, 5, "b's down vote takes m1 out on a")
        for i in range(3):
            etcd.signal(i, signal.SIGSTOP)
        etcd.kill(0)
        seen = []
        end = time.monotonic() + 10
        while time.monotonic() < end:
            seen.append(answers(a))  # raises on a lost query (dnspython times out)
            time.sleep(0.01)
        assert all(s == {HOSTS[1]} for s in seen), "the last merged view keeps serving"
        assert metric(a, "gslb_cluster_connected") == 0
        assert metric(a, "gslb_cluster_last_sync_seconds") > 3
        st = status(a)["cluster"]
        assert st["connected"] is False and st["last_error"], st
        # an override now is refused, unless asked for this node only
        code, r = http(a, "POST", "/v1/members/c.test/p/m2/drain", {})
        assert code == 503 and '"local": true' in r["error"], r
        code, r = http(a, "POST", "/v1/members/c.test/p/m2/up", {"local": True})
        assert code == 200 and r["scope"] == "this node only", r
        code, r = http(a, "POST", "/v1/members/c.test/p/m2/clear", {"local": True})
        assert code == 200
        # restart a while the store is away: the persisted view, from the first query
        a.stop()
        a = nodes.nodes["a"] = GslbProcess(
            a.zones_dir, tmp_path / "a2.log",
            ["--cluster", etcd.url, "--node", "a", "--cluster-prefix", nodes.prefix,
             "--cluster-lease-ttl", str(TTL), "--cluster-stale-after", "60", "--region", "r-a",
             "--api-token-file", str(tmp_path / "token")],
            state_dir=tmp_path / "state-a",
        )  # fmt: skip
        assert answers(a) == {HOSTS[1]}, "the restarted node serves the persisted votes at once"
        for i in (1, 2):
            etcd.signal(i, signal.SIGCONT)
        wait_until(lambda: metric(a, "gslb_cluster_connected") == 1, 20, "a reconnected")
        wait_until(lambda: metric(b, "gslb_cluster_connected") == 1, 20, "b reconnected")
        nodes.wait_joined(2, 20)
        code, r = http(a, "POST", "/v1/members/c.test/p/m1/up", {"for": 60})
        assert code == 200 and r["scope"] == "cluster", r
        wait_until(lambda: answers(b) == set(HOSTS), 1, "an override after recovery reaches b")
    finally:
        nodes.close()
        etcd.close()


def test_a_node_without_its_store_starts_and_answers(tmp_path: Path, targets: list[Target]) -> None:
    """etcd unreachable at start: the node serves at once from its own checks, says it
    is not connected, and never waits on the store to answer."""
    port = free_port(["127.0.0.1"])  # nothing listens there
    nodes = Nodes(tmp_path, f"etcd://127.0.0.1:{port}", targets[0].port)
    try:
        a = nodes.start("a", extra=("--cluster-stale-after", "2"))
        wait_until(lambda: answers(a) == set(HOSTS), 5, "answers from own checks")
        st = status(a)["cluster"]
        assert st["connected"] is False
        wait_until(lambda: status(a)["cluster"]["alone"], 8, "alone after the staleness limit")
        assert metric(a, "gslb_cluster_alone") == 1
    finally:
        nodes.close()


def test_bad_cluster_flags_are_one_line_errors(tmp_path: Path) -> None:
    for args, msg in (
        (["--cluster", "http://x:1"], "expected etcd://HOST:PORT"),
        (["--cluster", "etcd://x"], "bad etcd endpoint"),
        (["--node", "no spaces"], "expected a name"),
        (["--cluster-lease-ttl", "1"], "cluster_lease_ttl must be 2..300"),
    ):
        p = subprocess.run(
            [sys.executable, "-m", "gslb", "serve", "--zones", str(tmp_path), *args],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert p.returncode != 0 and msg in p.stderr and "Traceback" not in p.stderr, (args, p.stderr)


def test_two_processes_with_one_node_name_are_reported(nodes: Nodes) -> None:
    a = nodes.start("a")
    nodes.nodes["a-twin"] = twin = GslbProcess(
        a.zones_dir, nodes.tmp / "twin.log",
        ["--cluster", nodes.etcd_url, "--node", "a", "--cluster-prefix", nodes.prefix,
         "--api-token-file", str(nodes.tmp / "token")],
        state_dir=nodes.tmp / "state-twin",
    )  # fmt: skip
    for s in (a, twin):
        s.wait_log(r"another gslb process \(pid \d+, started [\d.]+\) uses the node name 'a'", 10)


def test_the_watch_takes_a_message_larger_than_aiohttp_s_line_limit(etcd: EtcdCluster) -> None:
    """One transaction of 100 writes of 6 KB is one watch message of ~800 KB (found by
    bench/cluster.py at 5,000 members: aiohttp refuses lines over 512 KiB)."""
    import asyncio

    from gslb.cluster.etcd import Etcd
    from gslb.server.options import endpoints

    async def go() -> int:
        e = Etcd(endpoints(etcd.url))
        prefix = f"/big-{uuid.uuid4().hex[:8]}/"
        try:
            rev, _ = await e.get_prefix(prefix)
            got = 0

            async def watch() -> None:
                nonlocal got
                async for _, events in e.watch(prefix, rev + 1):
                    got += len(events)
                    if got >= 100:
                        return

            w = asyncio.create_task(watch())
            await asyncio.sleep(0.2)
            await e.put_many([(f"{prefix}{i}", b"x" * 6000) for i in range(100)], batch=100)
            await asyncio.wait_for(w, 10)
            return got
        finally:
            await e.close()

    assert asyncio.run(go()) == 100


def test_tls_to_etcd_with_a_client_certificate(tmp_path: Path, targets: list[Target]) -> None:
    """etcd with TLS and --client-cert-auth: a node with the CA and a client certificate
    joins; a node without a client certificate is refused, says why, and still answers."""
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("gslb-a.client.test", common_name="gslb-a")  # Go refuses an empty SAN
    for name, blob in (("ca.pem", ca.cert_pem), ("server.pem", server.cert_chain_pems[0]),
                       ("server.key", server.private_key_pem), ("client.pem", client.cert_chain_pems[0]),
                       ("client.key", client.private_key_pem)):  # fmt: skip
        blob.write_to_path(str(tmp_path / name))
    etcd = EtcdCluster(
        tmp_path / "etcd", 1, (tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key")
    )
    nodes = Nodes(tmp_path, etcd.url, targets[0].port)
    try:
        tls = ("--cluster-ca", str(tmp_path / "ca.pem"), "--cluster-cert", str(tmp_path / "client.pem"),
               "--cluster-key", str(tmp_path / "client.key"))  # fmt: skip
        a = nodes.start("a", extra=tls)
        wait_until(lambda: status(a)["cluster"]["connected"], 10, "a connected over TLS")
        assert status(a)["cluster"]["endpoint"].startswith("https://")
        b = nodes.start("b", extra=("--cluster-ca", str(tmp_path / "ca.pem")))  # no client certificate
        wait_until(lambda: status(b)["cluster"]["last_error"] != "", 10, "b says why it is not connected")
        assert status(b)["cluster"]["connected"] is False
        assert answers(b) == set(HOSTS)
    finally:
        nodes.close()
        etcd.close()


def test_a_silent_watch_is_noticed_and_the_node_moves_to_another_member(
    tmp_path: Path, targets: list[Target]
) -> None:
    """SIGSTOP the etcd member node a watches: its requests time out and move to the next
    member, but the watch stream just goes quiet. Node a must notice (its own beat does
    not come back through the watch), re-list and watch elsewhere, so a drain sent
    through node b, which uses other members, still reaches it."""
    etcd = EtcdCluster(tmp_path / "etcd")
    nodes = Nodes(tmp_path, etcd.url, targets[0].port)  # a lists member 0 first
    ttl = ("--cluster-lease-ttl", "10")  # leases outlive the stop: the watch is what breaks
    try:
        a = nodes.start("a", extra=ttl)
        nodes.etcd_url = "etcd://" + ",".join(f"127.0.0.1:{p}" for p in etcd.client_ports[1:])
        b = nodes.start("b", extra=ttl)
        nodes.wait_joined(2)
        assert status(a)["cluster"]["endpoint"].endswith(f":{etcd.client_ports[0]}")
        mark = len(a.log())
        etcd.signal(0, signal.SIGSTOP)
        a.wait_log(r"the watch has been silent for", 20, mark)
        wait_until(lambda: status(a)["cluster"]["connected"], 15, "a back, through another member")
        code, r = http(b, "POST", "/v1/members/c.test/p/m1/drain", {})
        assert code == 200, r
        wait_until(lambda: answers(a) == {HOSTS[1]}, 2, "b's drain reached a")
    finally:
        etcd.signal(0, signal.SIGCONT)
        nodes.close()
        etcd.close()


def test_losing_and_regaining_the_store_is_alerted(tmp_path: Path, targets: list[Target]) -> None:
    """--alerts URL: the node tells a webhook when it starts deciding alone (the store
    away longer than --cluster-stale-after) and when it counts every vote again."""
    from tests.test_alerts import Receiver

    receiver = Receiver()
    etcd = EtcdCluster(tmp_path / "etcd", members=1)
    nodes = Nodes(tmp_path, etcd.url, targets[0].port)
    try:
        url = f"http://127.0.0.1:{receiver.port}/hook"
        a = nodes.start("a", extra=("--cluster-stale-after", "2", "--alerts", url))
        nodes.wait_joined(1)
        etcd.signal(0, signal.SIGSTOP)
        try:
            wait_until(
                lambda: bool(receiver.of("cluster_disconnected")), 20, "cluster_disconnected delivered"
            )
            assert answers(a), "answers go on"
        finally:
            etcd.signal(0, signal.SIGCONT)
        wait_until(lambda: bool(receiver.of("cluster_reconnected")), 30, "cluster_reconnected delivered")
        events = [e["event"] for e in receiver.events]
        assert events == ["cluster_disconnected", "cluster_reconnected"], receiver.events
        assert receiver.events[0]["node"] == "a" and receiver.events[0]["reason"]
    finally:
        nodes.close()
        etcd.close()
        receiver.close()
