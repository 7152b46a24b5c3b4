"""``zones_from: cluster`` through real processes: an etcd started here, three gslb nodes,
zones PUT through one node's API and answered by every node. Lost updates are refused
by the store's compare-and-swap; a node that cannot apply a revision (no GeoIP database)
keeps the one it serves and says why; with the store down a PUT changes nothing
anywhere, and a node restarted then serves its last good copy; a delete reaches every
node; revisions only go forward across restarts."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dns.rcode
import pytest

from tests.conftest import GslbProcess
from tests.etcd import EtcdCluster
from tests.geodb import write_city
from tests.test_health import wait_until

TOKEN = "zones-t0ken"
ZONE = """zone: z.test.
nameservers: {{ns1.z.test.: [192.0.2.53]}}
records:
  www: [{{type: A, value: {addr}}}]
"""
GEO = """zone: z.test.
nameservers: {{ns1.z.test.: [192.0.2.53]}}
pools:
  eu: {{members: [{{address: 192.0.2.77}}]}}
  rest: {{members: [{{address: 192.0.2.78}}]}}
records:
  www: [{{type: A, value: {addr}}}]
  geo:
    - types: [A]
      rules: [{{geos: [EU], pools: [eu]}}, {{pools: [rest]}}]
"""


class Nodes:
    def __init__(self, tmp: Path, etcd: EtcdCluster) -> None:
        self.tmp, self.etcd = tmp, etcd
        self.prefix = f"/z-{uuid.uuid4().hex[:8]}/"
        (tmp / "token").write_text(TOKEN)
        self.city = write_city(tmp / "city.mmdb")
        self.nodes: dict[str, GslbProcess] = {}

    def start(self, name: str, geo: bool = True, zones: str = "z.test") -> GslbProcess:
        zdir = self.tmp / f"zones-{name}"
        zdir.mkdir(exist_ok=True)
        srv = GslbProcess(
            zdir, self.tmp / f"{name}-{time.monotonic_ns()}.log",
            ["--cluster", self.etcd.url, "--node", name, "--cluster-prefix", self.prefix,
             "--cluster-lease-ttl", "3", "--zones-from", "cluster", "--api-zones", zones,
             "--api-token-file", str(self.tmp / "token"), *(["--geoip-db", str(self.city)] if geo else [])],
            state_dir=self.tmp / f"state-{name}",
        )  # fmt: skip
        self.nodes[name] = srv
        return srv

    def close(self) -> None:
        for s in self.nodes.values():
            s.stop()
            assert "Traceback" not in s.log(), s.log()


def http(srv: GslbProcess, method: str, path: str, body: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:  # fmt: skip
    req = urllib.request.Request(f"http://127.0.0.1:{srv.api_port}{path}",
                                 data=body.encode() if body is not None else None, method=method)  # fmt: skip
    req.add_header("Authorization", f"Bearer {TOKEN}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


def www(srv: GslbProcess) -> str | int:
    r = srv.query("www.z.test.", "A")
    return str(r.answer[0][0].address) if r.rcode() == dns.rcode.NOERROR else int(r.rcode())


def serves(srv: GslbProcess, want: str | int) -> Callable[[], bool]:
    return lambda: www(srv) == want


def connected(srv: GslbProcess) -> Callable[[], bool]:
    return lambda: bool(http(srv, "GET", "/v1/status")[1]["cluster"]["connected"])


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[Nodes]:
    etcd = EtcdCluster(tmp_path / "etcd", members=1)
    n = Nodes(tmp_path, etcd)
    try:
        yield n
    finally:
        n.close()
        etcd.close()


def test_a_zone_put_on_one_node_is_served_by_every_node(nodes: Nodes) -> None:
    a, b, c = nodes.start("a"), nodes.start("b"), nodes.start("c", geo=False)
    every = (a, b, c)
    for s in every:
        wait_until(connected(s), 15, "connected")
    assert {www(s) for s in every} == {dns.rcode.REFUSED}
    status, doc, hdrs = http(
        a, "PUT", "/v1/zones/z.test", ZONE.format(addr="192.0.2.1"), {"If-None-Match": "*"}
    )
    assert status == 201 and doc["scope"] == "cluster" and doc["revision"] > 0, doc
    assert www(a) == "192.0.2.1"  # served by the node that took it when it answers
    for s in (b, c):
        took = wait_until(serves(s, "192.0.2.1"), 5, "every node serves the PUT")
        assert took < 2, took
    rev1 = doc["revision"]
    # through another node, with the version it read: every node again
    status, doc, _ = http(
        b, "PUT", "/v1/zones/z.test", ZONE.format(addr="192.0.2.2"), {"If-Match": hdrs["ETag"]}
    )
    assert status == 200 and doc["revision"] > rev1, doc
    for s in every:
        wait_until(serves(s, "192.0.2.2"), 5, "the second version everywhere")
    # a lost update: refused by the store, nothing changes anywhere
    status, doc, _ = http(
        c, "PUT", "/v1/zones/z.test", ZONE.format(addr="192.0.2.3"), {"If-Match": hdrs["ETag"]}
    )
    assert status == 412, doc
    time.sleep(0.5)
    assert {www(s) for s in every} == {"192.0.2.2"}
    rev2 = http(a, "GET", "/v1/zones/z.test")[1]["serial"]
    assert {s.query("z.test.", "SOA").answer[0][0].serial for s in every} == {rev2}  # one serial

    # a revision node c cannot apply (geo rules, and it has no GeoIP database): a and b serve
    # it, c keeps the one it has and says why
    status, doc, _ = http(a, "PUT", "/v1/zones/z.test", GEO.format(addr="192.0.2.4"))
    assert status == 200, doc
    wait_until(lambda: www(b) == "192.0.2.4", 5, "b serves the geo version")
    time.sleep(1.0)
    assert www(c) == "192.0.2.2"
    st = http(a, "GET", "/v1/status")[1]["cluster"]

    def revisions(st: dict[str, Any]) -> dict[str, int]:
        return {n["node"]: n.get("zone_revisions", {}).get("z.test.", 0) for n in st["nodes"]}

    wait_until(lambda: revisions(http(a, "GET", "/v1/status")[1]["cluster"])["c"] < doc["revision"], 5, "c")
    st = http(a, "GET", "/v1/status")[1]["cluster"]
    rv = revisions(st)
    assert rv["a"] == rv["b"] == doc["revision"] and rv["c"] < doc["revision"], st["nodes"]
    why = next(n for n in st["nodes"] if n["node"] == "c")["zone_errors"]["z.test."]
    assert "GeoIP" in why, why
    assert "still serving revision" in c.log()

    # the store down: a PUT changes nothing anywhere; a node restarted serves its last copy
    nodes.etcd.kill(0)
    status, doc, _ = http(a, "PUT", "/v1/zones/z.test", ZONE.format(addr="192.0.2.5"))
    assert status == 503 and "not changed anywhere" in doc["error"], doc
    b.stop()
    b = nodes.start("b")
    assert www(b) == "192.0.2.4" and www(a) == "192.0.2.4"
    nodes.etcd.start(0)
    nodes.etcd.wait_healthy()
    for s in (a, b, c):
        wait_until(connected(s), 20, "reconnected")
    status, doc, _ = http(c, "PUT", "/v1/zones/z.test", ZONE.format(addr="192.0.2.6"))
    assert status == 200, doc
    for s in (a, b, c):
        wait_until(serves(s, "192.0.2.6"), 5, "after the outage, every node")

    def c_errors() -> dict[str, str]:
        st = http(a, "GET", "/v1/status")[1]["cluster"]
        errors: dict[str, str] = next(n for n in st["nodes"] if n["node"] == "c")["zone_errors"]
        return errors

    wait_until(lambda: "z.test." not in c_errors(), 5, "c's error cleared")

    # a restart never goes back: the node serves what it served, and then the store's
    a.stop()
    a = nodes.start("a")
    assert www(a) == "192.0.2.6"

    # a delete reaches every node
    status, doc, _ = http(b, "DELETE", "/v1/zones/z.test")
    assert status == 200 and doc["deleted"] is True, doc
    for s in (a, b, c):
        wait_until(serves(s, dns.rcode.REFUSED), 5, "deleted everywhere")
    for n in ("a", "b", "c"):
        assert not (nodes.tmp / f"zones-{n}" / "z.test.yaml").exists()


def test_octodns_sync_through_one_node_reaches_every_node(nodes: Nodes, tmp_path: Path) -> None:
    from tests.test_octodns_provider import config, octodns

    a, b = nodes.start("a", zones="*"), nodes.start("b", zones="*")
    for s in (a, b):
        wait_until(connected(s), 15, "connected")
    (tmp_path / "config").mkdir()
    ns = "  type: NS\n  values: [ns1.example.net., ns2.example.net.]\n"
    (tmp_path / "config" / "o.test.yaml").write_text(f"---\n'':\n{ns}www:\n  type: A\n  value: 192.0.2.31\n")
    cfg = config(tmp_path, a.api_port, ["o.test."])
    out = octodns("octodns-sync", "--config-file", str(cfg), "--doit", token=TOKEN)
    assert out.returncode == 0, out.stderr[-3000:]

    def b_answers() -> bool:
        r = b.query("www.o.test.", "A")
        return bool(r.answer) and str(r.answer[0][0].address) == "192.0.2.31"

    wait_until(b_answers, 5, "node b serves what octoDNS gave node a")
    out = octodns("octodns-sync", "--config-file", str(cfg), token=TOKEN)
    assert "No changes were planned" in out.stdout + out.stderr, out.stderr[-3000:]
