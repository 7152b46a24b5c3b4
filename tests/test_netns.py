"""Health targets on separate hosts: network namespaces joined by veth pairs,
made (and removed) by this test. Cutting a host's link makes its probes time
out, as a real network failure does, instead of being refused.

Needs root and ``ip netns``; CI runs as root. Traffic goes only to the
198.18.<n>.0/30 links that exist inside these namespaces; the test checks the
route to each target goes through its veth before it cuts anything.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, GslbProcess

INTERVAL, TIMEOUT, FALL, RISE = 0.5, 0.4, 2, 2
BOUND = INTERVAL * FALL + TIMEOUT + INTERVAL


def netns_usable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (ip)"
    name = f"gslbchk{os.getpid() % 100000}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], check=False)
    return None


SKIP = netns_usable()
pytestmark = pytest.mark.skipif(SKIP is not None, reason=SKIP or "")


def sh(*cmd: str) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")
    return r.stdout


class Host:
    """A namespace with one veth link to the root namespace and an HTTP target."""

    def __init__(self, idx: int, port: int) -> None:
        tag = f"{os.getpid() % 10000}{idx}"
        self.ns, self.host_if, self.ns_if = f"gslbt{tag}", f"gth{tag}", f"gtn{tag}"
        self.net = f"198.18.{(os.getpid() % 50) * 5 + idx}"
        self.addr = f"{self.net}.2"
        sh("ip", "netns", "add", self.ns)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        sh("ip", "link", "set", self.ns_if, "netns", self.ns)
        sh("ip", "addr", "add", f"{self.net}.1/30", "dev", self.host_if)
        sh("ip", "link", "set", self.host_if, "up")
        sh("ip", "netns", "exec", self.ns, "ip", "addr", "add", f"{self.addr}/30", "dev", self.ns_if)
        sh("ip", "netns", "exec", self.ns, "ip", "link", "set", self.ns_if, "up")
        sh("ip", "netns", "exec", self.ns, "ip", "link", "set", "lo", "up")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns,
             sys.executable, "-m", "tests.targets", "http", self.addr, str(port)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line.startswith("listening"), line

    def routed_via_veth(self) -> bool:
        return f"dev {self.host_if} " in sh("ip", "route", "get", self.addr)

    def link(self, up: bool) -> None:
        sh("ip", "netns", "exec", self.ns, "ip", "link", "set", self.ns_if, "up" if up else "down")

    def remove(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        subprocess.run(["ip", "netns", "del", self.ns], check=False)
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True, check=False)


@pytest.fixture
def hosts() -> Iterator[list[Host]]:
    made: list[Host] = []
    try:
        for i in (1, 2):
            made.append(Host(i, 8080))
        yield made
    finally:
        for h in made:
            h.remove()


def test_cut_off_host_times_out_and_leaves_dns(
    hosts: list[Host], tmp_path: Path, server_factory: Callable[..., GslbProcess]
) -> None:
    a, b = hosts
    assert a.routed_via_veth() and b.routed_via_veth()
    z = tmp_path / "n.test.yaml"
    z.write_text(f"""zone: n.test.
nameservers: {{ns1.n.test.: [192.0.2.53]}}
checks:
  web: {{type: http, port: 8080, path: /, expect: {{body: ok}}, interval: {INTERVAL}s, timeout: {TIMEOUT}s,
         fall: {FALL}, rise: {RISE}}}
pools:
  p: {{check: web, members: [{{address: {a.addr}}}, {{address: {b.addr}}}]}}
records:
  www: [{{types: [A], answer: {{select: all}}, rules: [{{pools: [p]}}]}}]
""")
    srv = server_factory(z)

    def answers() -> set[str]:
        return {rd.to_text() for rr in srv.query("www.n.test.", "A").answer for rd in rr}

    time.sleep(2 * INTERVAL)
    assert answers() == {a.addr, b.addr}
    b.link(False)
    assert b.routed_via_veth()  # still into the (now dead) link, never elsewhere
    t0 = time.monotonic()
    while answers() != {a.addr}:
        assert time.monotonic() - t0 < 10, srv.log()
        time.sleep(0.02)
    took = time.monotonic() - t0
    assert took <= BOUND, f"failover took {took:.2f}s, bound {BOUND}s"
    srv.wait_log(rf"{b.addr.replace('.', '[.]')}:8080 DOWN: timeout after {TIMEOUT:g}s", 3)
    b.link(True)
    t0 = time.monotonic()
    while answers() != {a.addr, b.addr}:
        assert time.monotonic() - t0 < 10, srv.log()
        time.sleep(0.05)
