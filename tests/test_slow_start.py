"""Slow start through the real server (docs/health.md, "Slow start"): a member that
comes back (its check passes again) takes a share of its weight that grows linearly
over ``slow_start``, measured as the answered share per second against the line; a
member that comes back while the others are down takes the traffic at once; explain
shows the share; and the answers never name a member that is down."""

from __future__ import annotations

import collections
import math
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import pytest

from tests.conftest import ROOT, GslbProcess
from tests.targets import Target, free_port
from tests.test_health import INTERVAL, wait_until

HOSTS = ["127.0.0.81", "127.0.0.82"]
RAMP = 20.0  # seconds
TOKEN = "slow-t0ken"

ZONE = """zone: ss.test.
nameservers: {{ns1.ss.test.: [192.0.2.53]}}
checks:
  web: {{type: http, port: {port}, path: /healthz, interval: {interval}s, timeout: 0.3s, fall: 2, rise: 2}}
pools:
  p:
    check: web
    slow_start: {ramp}s
    members: [{{address: {a}, name: a}}, {{address: {b}, name: b}}]
records:
  www: [{{types: [A], ttl: 1, rules: [{{pools: [p]}}], when_all_down: servfail}}]
"""


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[GslbProcess, list[Target]]]:
    port = free_port(HOSTS)
    targets = [Target(h, port) for h in HOSTS]
    zdir = tmp_path / "zones"
    zdir.mkdir()
    (zdir / "ss.test.yaml").write_text(
        ZONE.format(port=port, interval=INTERVAL, ramp=RAMP, a=HOSTS[0], b=HOSTS[1])
    )
    (tmp_path / "token").write_text(TOKEN)
    srv = GslbProcess(zdir, tmp_path / "gslb.log", ["--api-token-file", str(tmp_path / "token")])
    try:
        yield srv, targets
    finally:
        srv.stop()
        for t in targets:
            t.close()
    assert "Traceback" not in srv.log(), srv.log()


def picks(srv: GslbProcess, n: int) -> collections.Counter[str]:
    out: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        r = srv.query("www.ss.test.", "A")
        out["SERVFAIL" if r.rcode() == dns.rcode.SERVFAIL else r.answer[0][0].address] += 1
    return out


def both_up(srv: GslbProcess) -> bool:
    return set(picks(srv, 30)) == set(HOSTS)


def test_a_recovered_member_ramps_up_along_the_line(setup: tuple[GslbProcess, list[Target]]) -> None:
    srv, targets = setup
    wait_until(lambda: both_up(srv), 10, "both in rotation")
    targets[1].stop()
    try:
        wait_until(lambda: set(picks(srv, 20)) == {HOSTS[0]}, 5, "b out")
    finally:
        targets[1].start()
    wait_until(lambda: HOSTS[1] in picks(srv, 20), 10, "b back")
    t0 = time.monotonic()  # b's first answers: its ramp began at most a moment before
    # b's answered share, a second at a time (about a thousand answers each: the pick is
    # weighted random, so a second's share is within a few points of the line)
    seconds: dict[int, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0.0])
    while time.monotonic() - t0 < RAMP + 2:
        start = time.monotonic()
        got = picks(srv, 50)
        assert "SERVFAIL" not in got and set(got) <= set(HOSTS)
        t = (start + time.monotonic()) / 2 - t0
        acc = seconds[int(t)]
        acc[0] += t * 50
        acc[1] += got[HOSTS[1]]
        acc[2] += 50
    # (the last second, cut short when the loop ends, is left out)
    windows = [(acc[0] / acc[2], acc[1] / acc[2], acc[2]) for _, acc in sorted(seconds.items())][:-1]
    assert len(windows) >= RAMP, windows
    for t, measured, n in windows:
        x = min(1.0, max(0.05, t / RAMP))  # b's share of its weight (the same weight as a's)
        expected = x / (1 + x)
        # within four standard deviations of a weighted random pick, plus 3 points for the
        # ramp's steps (twice a second) and for when it began
        slack = 0.03 + 4 * math.sqrt(expected * (1 - expected) / n)
        assert abs(measured - expected) <= slack, (t, measured, expected, n, windows)
    assert windows[0][1] < 0.15 and windows[-1][1] > 0.4, windows  # it did ramp, start to end
    out = subprocess.run(
        [sys.executable, "-m", "gslb", "explain", "www.ss.test", "--api-url", f"http://127.0.0.1:{srv.api_port}"],
        capture_output=True, text=True, timeout=30, check=False, cwd=ROOT,
    )  # fmt: skip
    assert "slow start" not in out.stdout, out.stdout  # the ramp is over


def test_explain_shows_the_share_while_it_ramps(setup: tuple[GslbProcess, list[Target]]) -> None:
    srv, targets = setup
    wait_until(lambda: both_up(srv), 10, "both in rotation")
    targets[0].stop()
    try:
        wait_until(lambda: set(picks(srv, 20)) == {HOSTS[1]}, 5, "a out")
    finally:
        targets[0].start()
    wait_until(lambda: HOSTS[0] in picks(srv, 50), 10, "a back")
    out = subprocess.run(
        [sys.executable, "-m", "gslb", "explain", "www.ss.test", "--api-url", f"http://127.0.0.1:{srv.api_port}"],
        capture_output=True, text=True, timeout=30, check=False, cwd=ROOT,
    )  # fmt: skip
    line = next(ln for ln in out.stdout.splitlines() if "member p/a" in ln)
    share = int(line.split("slow start: ")[1].split("%")[0])
    assert 5 <= share <= 25, line  # within a few seconds of its return


def test_the_only_member_back_takes_the_traffic_at_once(setup: tuple[GslbProcess, list[Target]]) -> None:
    srv, targets = setup
    wait_until(lambda: both_up(srv), 10, "both in rotation")
    for t in targets:
        t.stop()
    try:
        wait_until(lambda: set(picks(srv, 10)) == {"SERVFAIL"}, 5, "both out")
        targets[1].start()
        wait_until(lambda: HOSTS[1] in picks(srv, 10), 10, "b back")
        assert picks(srv, 100) == {HOSTS[1]: 100}  # no ramp: nobody else to take the rest
        targets[0].start()
        wait_until(lambda: HOSTS[0] in picks(srv, 100), 10, "a back")
        got = picks(srv, 400)
        assert got[HOSTS[0]] < 100, got  # a, back beside b, ramps: far below its half
    finally:
        for t in targets:
            if t.server is None:  # stopped
                t.start()


def test_a_member_back_from_a_drain_ramps(setup: tuple[GslbProcess, list[Target]]) -> None:
    srv = setup[0]
    wait_until(lambda: both_up(srv), 10, "both in rotation")

    def post(action: str) -> None:
        req = urllib.request.Request(
            f"http://127.0.0.1:{srv.api_port}/v1/members/ss.test/p/b/{action}", data=b"{}", method="POST"
        )
        req.add_header("Authorization", f"Bearer {TOKEN}")
        with urllib.request.urlopen(req, timeout=5) as r:
            assert r.status == 200

    post("drain")
    wait_until(lambda: set(picks(srv, 20)) == {HOSTS[0]}, 3, "b drained")
    post("clear")
    wait_until(lambda: HOSTS[1] in picks(srv, 100), 3, "b back")
    got = picks(srv, 400)
    assert got[HOSTS[1]] < 80, got  # about 5-10% in its first seconds, not half
