"""End to end through a real delegation: a resolver finds gslb by its NS records.

The test builds a small network of namespaces joined by one bridge (in a hub
namespace of its own, so nothing reaches the root namespace or any real
network), all on 10.0.0.0/8:

    parent    10.53.0.1    Knot DNS: zone e2e.test., delegates gslb.e2e.test.
                           to ns1/ns2.gslb.e2e.test. with glue
    g1, g2    10.53.0.11/12 two gslb nodes, the same zone file, their own probes
    resolver  10.53.0.53   Unbound, stub zone e2e.test. at the parent, ECS on
                           (send-client-subnet) towards the gslb nodes
    b1, b2    10.53.1.1/2  HTTP backends of www.gslb.e2e.test.
    c1, c2    10.60.1.10, 10.60.2.10  clients in two subnets (GeoIP: EU, NA)

Every question goes to the resolver (dig in a client namespace), never to gslb
directly. Everything is torn down at the end, also on failure.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.geodb import write_city
from tests.test_health import wait_until

INTERVAL, TIMEOUT, FALL = 0.5, 0.3, 2
BOUND = INTERVAL * FALL + TIMEOUT  # the failover bound (docs/health.md)
TTL = 2  # of the balanced records


def usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces (CI runs as root)"
    missing = [
        t
        for t in ("ip", "dig", "knotd", "unbound")
        if not (shutil.which(t) or Path(f"/usr/sbin/{t}").exists())
    ]
    if missing:
        return f"needs {', '.join(missing)} (.ci/system-deps installs them)"
    return None


WHY = usable()
pytestmark = pytest.mark.skipif(WHY is not None, reason=WHY or "")

HOSTS = {
    "parent": "10.53.0.1",
    "g1": "10.53.0.11",
    "g2": "10.53.0.12",
    "resolver": "10.53.0.53",
    "b1": "10.53.1.1",
    "b2": "10.53.1.2",
    "c1": "10.60.1.10",
    "c2": "10.60.2.10",
}

PARENT_ZONE = """$ORIGIN e2e.test.
$TTL 60
@        SOA ns.e2e.test. hostmaster.e2e.test. 1 3600 600 86400 60
@        NS  ns.e2e.test.
ns       A   10.53.0.1
gslb     NS  ns1.gslb.e2e.test.
gslb     NS  ns2.gslb.e2e.test.
ns1.gslb A   10.53.0.11
ns2.gslb A   10.53.0.12
"""

GSLB_ZONE = f"""zone: gslb.e2e.test.
ttl: 60
soa: {{minimum: 5}}
nameservers:
  ns1.gslb.e2e.test.: [10.53.0.11]
  ns2.gslb.e2e.test.: [10.53.0.12]
checks:
  web: {{type: http, port: 8080, path: /healthz, interval: {INTERVAL}s, timeout: {TIMEOUT}s,
        fall: {FALL}, rise: 1}}
pools:
  web:
    check: web
    members: [{{address: 10.53.1.1, name: b1}}, {{address: 10.53.1.2, name: b2}}]
  eu: {{members: [{{address: 10.53.2.1}}]}}
  na: {{members: [{{address: 10.53.2.2}}]}}
records:
  www: [{{types: [A], ttl: {TTL}, answer: {{select: all}}, rules: [{{pools: [web]}}]}}]
  geo: [{{types: [A], ttl: {TTL}, rules: [{{geos: [EU], pools: [eu]}}, {{pools: [na]}}]}}]
"""


def sh(*cmd: str) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=30)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout


@dataclass
class Net:
    tag: str
    work: Path
    hub: str = ""
    ns: dict[str, str] = field(default_factory=dict)  # host -> namespace
    links: dict[str, str] = field(default_factory=dict)  # host -> its veth end in the hub
    procs: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    logs: list[Any] = field(default_factory=list)

    def exec(self, host: str, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[host], *cmd]

    def start(self, name: str, host: str, *cmd: str, ready: str | None = None, timeout: float = 20) -> None:
        log = open(self.work / f"{name}.log", "w")  # noqa: SIM115 - closed in teardown()
        self.logs.append(log)
        p = subprocess.Popen(self.exec(host, *cmd), stdout=log, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
        self.procs[name] = p
        if ready is None:
            return
        deadline = time.monotonic() + timeout
        while ready not in self.log(name):
            if p.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not start:\n{self.log(name)}")
            time.sleep(0.05)

    def log(self, name: str) -> str:
        return (self.work / f"{name}.log").read_text(errors="replace")

    def stop(self, name: str) -> None:
        p = self.procs.get(name)
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def dig(self, client: str, name: str, *extra: str) -> tuple[str, set[str]]:
        """(status, answer addresses) of a question to the resolver from a client host."""
        out = sh(*self.exec(client, "dig", f"@{HOSTS['resolver']}", name, "A", "+time=5", "+tries=2", *extra))
        status = next(
            (ln.split("status: ")[1].split(",")[0] for ln in out.splitlines() if "status: " in ln), ""
        )
        answers = set()
        section = False
        for ln in out.splitlines():
            if ln.startswith(";; ANSWER SECTION"):
                section = True
            elif section and not ln.strip():
                section = False
            elif section and "\tA\t" in ln:
                answers.add(ln.split()[-1])
        return status, answers


def build(net: Net) -> None:
    net.hub = f"e2ehub{net.tag}"
    sh("ip", "netns", "add", net.hub)
    sh("ip", "-n", net.hub, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", net.hub, "link", "set", "br0", "up")
    for i, (host, addr) in enumerate(HOSTS.items()):
        ns, hub_if = f"e2e{host}{net.tag}", f"h{i}x{net.tag}"
        net.ns[host], net.links[host] = ns, hub_if
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name", hub_if, "netns", net.hub)
        sh("ip", "-n", ns, "addr", "add", f"{addr}/8", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", net.hub, "link", "set", hub_if, "master", "br0", "up")


def teardown(net: Net) -> None:
    for name in list(net.procs):
        net.stop(name)
    for ns in [*net.ns.values(), net.hub]:
        if ns:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
    for f in net.logs:
        f.close()


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    work = tmp_path_factory.mktemp("e2e")
    n = Net(f"{os.getpid() % 10000}", work)
    try:
        build(n)
        # every host reaches every other one over the bridge, and nothing else
        assert "dev eth0" in sh(*n.exec("c1", "ip", "route", "get", HOSTS["resolver"]))
        outside = n.exec("c1", "ip", "route", "get", "192.0.2.1")
        assert "unreachable" in subprocess.run(outside, capture_output=True, text=True, check=False).stderr
        start_parent(n)
        for b in ("b1", "b2"):
            n.start(b, b, sys.executable, "-m", "tests.targets", "http", HOSTS[b], "8080", ready="listening")
        start_gslb(n)
        start_resolver(n)
        yield n
    except BaseException as e:
        logs = "\n".join(f"--- {name}\n{n.log(name)[-3000:]}" for name in n.procs)
        raise RuntimeError(f"end-to-end setup failed: {e}\n{logs}") from e
    finally:
        teardown(n)


def start_parent(n: Net) -> None:
    d = n.work / "knot"
    (d / "db").mkdir(parents=True)
    (d / "e2e.test.zone").write_text(PARENT_ZONE)
    (d / "knot.conf").write_text(f"""server:
    rundir: "{d}"
    listen: {HOSTS["parent"]}@53
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{d}/db"
log:
  - target: stderr
    any: info
zone:
  - domain: e2e.test.
    file: "{d}/e2e.test.zone"
    zonefile-sync: -1
    journal-content: none
""")
    knotd = shutil.which("knotd") or "/usr/sbin/knotd"
    n.start("knot", "parent", knotd, "-c", str(d / "knot.conf"), ready="loaded")


def start_gslb(n: Net) -> None:
    city = write_city(n.work / "city.mmdb", {
        "10.60.1.0/24": ("EU", "DE", None, 52.52, 13.40),
        "10.60.2.0/24": ("NA", "US", "NY", 40.71, -74.01),
    })  # fmt: skip
    for node in ("g1", "g2"):
        zdir = n.work / f"zones-{node}"
        zdir.mkdir()
        (zdir / "gslb.e2e.test.yaml").write_text(GSLB_ZONE)
        n.start(node, node, sys.executable, "-m", "gslb", "serve", "--zones", str(zdir),
                "--listen", f"{HOSTS[node]}:53", "--state-dir", str(n.work / f"state-{node}"),
                "--api", "127.0.0.1:8053", "--geoip-db", str(city),
                ready="first probe round complete")  # fmt: skip


def start_resolver(n: Net) -> None:
    d = n.work / "unbound"
    d.mkdir()
    (d / "unbound.conf").write_text(f"""server:
    interface: {HOSTS["resolver"]}
    port: 53
    access-control: 10.0.0.0/8 allow
    username: ""
    chroot: ""
    directory: "{d}"
    pidfile: "{d}/unbound.pid"
    use-syslog: no
    logfile: ""
    verbosity: 1
    do-ip6: no
    module-config: "subnetcache iterator"
    send-client-subnet: {HOSTS["g1"]}
    send-client-subnet: {HOSTS["g2"]}
    max-client-subnet-ipv4: 24
    qname-minimisation: no
    domain-insecure: "e2e.test."
    local-zone: "test." nodefault   # Unbound answers test. itself (RFC 6761) unless told not to
    cache-max-negative-ttl: 1
stub-zone:
    name: "e2e.test."
    stub-addr: {HOSTS["parent"]}
""")
    unbound = shutil.which("unbound") or "/usr/sbin/unbound"
    n.start("unbound", "resolver", unbound, "-d", "-c", str(d / "unbound.conf"), ready="start of service")


# ------------------------------------------------------------------------- tests


def test_resolver_gets_the_balanced_answer_through_the_delegation(net: Net) -> None:
    status, answers = net.dig("c1", "www.gslb.e2e.test.")
    assert status == "NOERROR" and answers == {HOSTS["b1"], HOSTS["b2"]}
    # the way there: the parent refers to the two gslb nodes, which answer themselves
    out = sh(*net.exec("c1", "dig", f"@{HOSTS['parent']}", "www.gslb.e2e.test.", "A", "+norec"))
    assert "AUTHORITY SECTION" in out and "ns1.gslb.e2e.test." in out and "status: NOERROR" in out


def test_clients_in_two_subnets_get_their_geo_answer_through_ecs(net: Net) -> None:
    assert net.dig("c1", "geo.gslb.e2e.test.")[1] == {"10.53.2.1"}  # 10.60.1.0/24: EU
    assert net.dig("c2", "geo.gslb.e2e.test.")[1] == {"10.53.2.2"}  # 10.60.2.0/24: NA
    # and again from the resolver's cache, still per subnet
    assert net.dig("c1", "geo.gslb.e2e.test.")[1] == {"10.53.2.1"}
    assert net.dig("c2", "geo.gslb.e2e.test.")[1] == {"10.53.2.2"}


def test_a_cut_backend_leaves_the_resolvers_answers(net: Net) -> None:
    sh("ip", "-n", net.hub, "link", "set", net.links["b1"], "down")
    try:
        t0 = time.monotonic()
        took = wait_until(lambda: net.dig("c1", "www.gslb.e2e.test.")[1] == {HOSTS["b2"]}, BOUND + TTL + 5)
        assert took <= BOUND + TTL + 1.5, f"b1 left the resolver's answers after {took:.2f}s"
        # it stays out while the link is down
        time.sleep(1)
        assert net.dig("c2", "www.gslb.e2e.test.")[1] == {HOSTS["b2"]}
        assert time.monotonic() - t0 < 30
    finally:
        sh("ip", "-n", net.hub, "link", "set", net.links["b1"], "up")
    wait_until(lambda: net.dig("c1", "www.gslb.e2e.test.")[1] == {HOSTS["b1"], HOSTS["b2"]}, BOUND + TTL + 10)


def test_resolver_answers_with_one_gslb_node_stopped(net: Net) -> None:
    net.stop("g1")
    time.sleep(TTL + 0.5)  # the cached answers expire: the resolver must ask again
    for i in range(4):
        status, answers = net.dig("c1", "www.gslb.e2e.test.")
        assert status == "NOERROR" and answers == {HOSTS["b1"], HOSTS["b2"]}
        status, _ = net.dig("c2", f"nx{i}-{time.monotonic_ns()}.gslb.e2e.test.")
        assert status == "NXDOMAIN"  # a fresh name each time: answered by the node still up
        time.sleep(0.5)
