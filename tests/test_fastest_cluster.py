"""``select: fastest_from_nearest_node`` through a real cluster: an etcd started here,
three gslb nodes in three places (``--location``), each probing from its own loopback
source address (``--probe-source``), and real HTTP targets that delay their replies by
the prober's address, so each node measures its own round trips to the same members,
as nodes in Frankfurt, New York and Tokyo would. A client is steered by the round
trips of the node nearest it (its ECS subnet's coordinates in a City database built
here), whichever node it asks; delays changed during the test move it, within the
hysteresis; a down member is never answered however fast it was; a node that leaves
stops being a vantage."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.edns
import pytest

from tests.conftest import ROOT, GslbProcess
from tests.etcd import EtcdCluster
from tests.geodb import write_city
from tests.targets import Target, free_port
from tests.test_health import wait_until

A, B = "127.0.0.94", "127.0.0.95"
# node: (location, probe source, its round trip to A, to B)
NODES = {
    "fra": ("50.1,8.7", "127.0.0.81", 0.010, 0.080),
    "nyc": ("40.7,-74.0", "127.0.0.82", 0.080, 0.010),
    "tyo": ("35.7,139.7", "127.0.0.83", 0.090, 0.040),
}
CITY: dict[str, tuple[str, str, str | None, float, float]] = {
    "10.1.0.0/16": ("EU", "DE", "HE", 50.11, 8.68),  # Frankfurt
    "10.2.0.0/16": ("NA", "US", "NY", 40.71, -74.01),  # New York
    "10.3.0.0/16": ("AS", "JP", "13", 35.68, 139.69),  # Tokyo
}
EU, US, JP, NOWHERE = "10.1.2.0/24", "10.2.2.0/24", "10.3.2.0/24", "10.9.2.0/24"
INTERVAL = 0.3

ZONE = """zone: f.test.
nameservers: {{ns1.f.test.: [192.0.2.53]}}
checks:
  web: {{type: http, port: {port}, path: /healthz, interval: {interval}s, timeout: 0.25s, fall: 2, rise: 2}}
pools:
  p: {{check: web, members: [{{address: {a}, name: a}}, {{address: {b}, name: b}}]}}
records:
  www:
    - types: [A]
      ttl: 1
      answer: {{select: fastest_from_nearest_node, hysteresis: {{ms: 15, percent: 10}}}}
      rules: [{{pools: [p]}}]
"""


class Cluster:
    def __init__(self, tmp: Path, etcd: EtcdCluster, port: int) -> None:
        self.tmp, self.etcd, self.port = tmp, etcd, port
        self.prefix = f"/f-{uuid.uuid4().hex[:8]}/"
        self.geo = write_city(tmp / "city.mmdb", CITY)
        self.nodes: dict[str, GslbProcess] = {}

    def start(self, name: str) -> GslbProcess:
        loc, source, _, _ = NODES[name]
        zdir = self.tmp / f"zones-{name}"
        zdir.mkdir(exist_ok=True)
        (zdir / "f.test.yaml").write_text(ZONE.format(port=self.port, interval=INTERVAL, a=A, b=B))
        srv = GslbProcess(
            zdir,
            self.tmp / f"{name}.log",
            ["--cluster", self.etcd.url, "--node", name, "--cluster-prefix", self.prefix,
             "--cluster-lease-ttl", "3", "--location", loc, "--probe-source", source,
             "--geoip-db", str(self.geo)],
            state_dir=self.tmp / f"state-{name}",
        )  # fmt: skip
        self.nodes[name] = srv
        return srv

    def close(self) -> None:
        for s in self.nodes.values():
            s.stop()
            assert "Traceback" not in s.log(), s.log()


def answer(srv: GslbProcess, client: str) -> str:
    net, plen = client.split("/")
    opts: list[dns.edns.Option] = [dns.edns.ECSOption(net, int(plen))]
    return str(srv.query("www.f.test.", "A", options=opts).answer[0][0].address)


def answers(srv: GslbProcess, client: str, want: str) -> Callable[[], bool]:
    return lambda: answer(srv, client) == want


def explain(srv: GslbProcess, client: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{srv.api_port}/v1/explain?name=www.f.test&ecs={client}"
    with urllib.request.urlopen(url, timeout=5) as r:
        doc: dict[str, Any] = json.loads(r.read())
    return doc


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[Cluster, dict[str, Target]]]:
    etcd = EtcdCluster(tmp_path / "etcd", members=1)
    port = free_port([A, B])
    targets = {A: Target(A, port), B: Target(B, port)}
    for _, source, to_a, to_b in NODES.values():
        targets[A].delay_from[source] = to_a
        targets[B].delay_from[source] = to_b
    c = Cluster(tmp_path, etcd, port)
    try:
        yield c, targets
    finally:
        c.close()
        for t in targets.values():
            t.close()
        etcd.close()


def test_a_client_is_steered_by_the_round_trips_of_the_node_nearest_it(
    setup: tuple[Cluster, dict[str, Target]],
) -> None:
    c, targets = setup
    fra, nyc, tyo = (c.start(n) for n in NODES)
    # whichever node is asked: Europe by Frankfurt's round trips (A), America by New York's
    # and Japan by Tokyo's (B)
    for srv in (fra, nyc, tyo):
        wait_until(answers(srv, US, B), 20, f"{srv.log_path.name}: a US client gets B, fastest from nyc")
        wait_until(answers(srv, EU, A), 5, f"{srv.log_path.name}: a European client gets A, fastest from fra")
        wait_until(answers(srv, JP, B), 5, f"{srv.log_path.name}: a Japanese client gets B, fastest from tyo")
    # a client without coordinates gets the asked node's own measurements
    assert answer(fra, NOWHERE) == A and answer(nyc, NOWHERE) == B
    assert {answer(fra, US) for _ in range(30)} == {B}  # no draw: the fastest, every time
    doc = explain(fra, US)["balanced"]
    near = [v for v in doc["vantages"] if v["nearest_to_client"]]
    assert [v["node"] for v in near] == ["nyc"] and near[0]["fastest_first"][0] == B, doc["vantages"]
    assert [v["node"] for v in doc["vantages"]] == ["fra", "nyc", "tyo"]  # the asked node first

    # from New York, B slows to 90 ms: A (80 ms from there) is faster by less than the 15 ms
    # hysteresis, so B stays; at 150 ms A is faster by more than 15 ms and 10%, and takes over
    targets[B].delay_from[NODES["nyc"][1]] = 0.090
    for _ in range(15):  # 4.5 s: the smoothed round trips have settled by then
        assert answer(fra, US) == B
        time.sleep(0.3)
    assert 85 <= explain(nyc, US)["balanced"]["members"][1]["rtt_ms"] <= 100
    targets[B].delay_from[NODES["nyc"][1]] = 0.150
    took = wait_until(answers(fra, US, A), 10, "US clients move to A as nyc measures B slower")
    assert took < 6, took
    assert answer(fra, EU) == A and answer(nyc, JP) == B  # the other vantages did not move
    nyc.wait_log(r"fastest: www\.f\.test\. pool p now answers with 127\.0\.0\.94 as seen from node nyc", 5)
    targets[B].delay_from[NODES["nyc"][1]] = 0.010
    wait_until(answers(fra, US, B), 10, "and back to B")

    # A dies: Europe's fastest is out at once everywhere, and never answered while down
    targets[A].stop()
    try:
        for srv in (fra, nyc):
            wait_until(answers(srv, EU, B), 3, "European clients get B while A is down")
        for _ in range(20):
            assert answer(fra, EU) == B and answer(nyc, US) == B and answer(tyo, EU) == B
    finally:
        targets[A].start()
    wait_until(answers(fra, EU, A), 10, "A back, fastest from fra again")

    # New York leaves: its round trips go with it, and US clients take the nearest node
    # left (Frankfurt, 6,200 km; Tokyo is 10,800 km)
    nyc.stop()
    wait_until(answers(fra, US, A), 10, "US clients by Frankfurt's round trips once nyc is gone")
    assert answer(tyo, US) == A


def test_bad_location_and_probe_source_are_one_line_errors(tmp_path: Path) -> None:
    (tmp_path / "zones").mkdir()
    (tmp_path / "gslb.yaml").write_text("location: [95, 8]\n")
    for args, msg in (
        (["--location", "50.1"], "expected LAT,LON in degrees"),
        (["--location", "50.1,190"], "expected LAT,LON in degrees"),
        (["--config", str(tmp_path / "gslb.yaml")], "gslb.yaml:1:11: location: expected LAT,LON"),
        (["--probe-source", "lo"], "bad probe source 'lo'"),
        (["--probe-source", "127.0.0.81", "--probe-source", "127.0.0.82"], "at most one IPv4 and one IPv6"),
        # 192.0.2.1 (TEST-NET-1) is on no interface here: binding it fails, nothing is sent
        (["--probe-source", "192.0.2.1", "--listen", "127.0.0.1:0", "--no-api"],
         "--probe-source 192.0.2.1: not an address of this host"),
    ):  # fmt: skip
        p = subprocess.run(
            [sys.executable, "-m", "gslb", "serve", "--zones", str(tmp_path / "zones"), *args],
            capture_output=True, text=True, timeout=30, cwd=ROOT,
        )  # fmt: skip
        last = p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ""
        assert p.returncode == 1 and msg in last and "Traceback" not in p.stderr, (args, p.stderr)
