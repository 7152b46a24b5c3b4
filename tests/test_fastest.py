"""``select: fastest`` through the real server: the member whose probes come back
soonest answers, measured through real HTTP targets whose replies are delayed (and the
delays changed during the test); within the hysteresis nothing moves; a down member is
never answered however fast it was; explain shows the round trips."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, GslbProcess
from tests.targets import Target, free_port
from tests.test_health import wait_until

HOSTS = ["127.0.0.91", "127.0.0.92", "127.0.0.93"]
INTERVAL = 0.2

ZONE = """zone: f.test.
nameservers: {{ns1.f.test.: [192.0.2.53]}}
checks:
  web: {{type: http, port: {port}, path: /healthz, interval: {interval}s, timeout: 0.15s, fall: 2, rise: 2}}
pools:
  p: {{check: web, members: [{{address: {a}}}, {{address: {b}}}, {{address: {c}}}]}}
  one: {{check: web, members: [{{address: {a}}}]}}
  two: {{check: web, members: [{{address: {b}}}]}}
records:
  pools:  # fastest also chooses between the rule's pools: by their fastest member
    - types: [A]
      ttl: 1
      answer: {{select: fastest, hysteresis: {{ms: 15, percent: 10}}}}
      rules: [{{pools: [one, two]}}]
  www:
    - types: [A]
      ttl: 1
      answer: {{select: fastest, hysteresis: {{ms: 15, percent: 10}}}}
      rules: [{{pools: [p]}}]
"""


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[GslbProcess, list[Target]]]:
    port = free_port(HOSTS)
    targets = [Target(h, port) for h in HOSTS]
    for t, d in zip(targets, (0.060, 0.030, 0.090), strict=True):
        t.delay = d
    zdir = tmp_path / "zones"
    zdir.mkdir()
    (zdir / "f.test.yaml").write_text(
        ZONE.format(port=port, interval=INTERVAL, a=HOSTS[0], b=HOSTS[1], c=HOSTS[2])
    )
    srv = GslbProcess(zdir, tmp_path / "gslb.log")
    try:
        yield srv, targets
    finally:
        srv.stop()
        for t in targets:
            t.close()
    assert "Traceback" not in srv.log(), srv.log()


def answer(srv: GslbProcess, name: str = "www") -> str:
    return str(srv.query(f"{name}.f.test.", "A").answer[0][0].address)


def test_the_fastest_member_answers_and_follows_the_delays(setup: tuple[GslbProcess, list[Target]]) -> None:
    srv, targets = setup
    wait_until(lambda: answer(srv) == HOSTS[1], 10, "b, the fastest (30 ms), answers")
    assert {answer(srv) for _ in range(50)} == {HOSTS[1]}  # always the one: no draw
    wait_until(lambda: answer(srv, "pools") == HOSTS[1], 5, "pool two, second in the rule, is faster")
    # b slows to 50 ms: still within 15 ms of a's 60 ms, so b stays (hysteresis)
    targets[1].delay = 0.050
    for _ in range(20):  # 4 s: every smoothed round trip has settled by then
        time.sleep(0.2)
        assert answer(srv) == HOSTS[1]
    # b slows to 120 ms: a (60 ms) beats it by more than both 15 ms and 10%: a answers
    targets[1].delay = 0.120
    took = wait_until(lambda: answer(srv) == HOSTS[0], 6, "a takes over")
    assert took < 4, took
    wait_until(lambda: answer(srv, "pools") == HOSTS[0], 3, "and pool one over pool two")
    srv.wait_log(r"fastest: www\.f\.test\. pool p now answers with 127\.0\.0\.91", 3)
    out = subprocess.run(
        [sys.executable, "-m", "gslb", "explain", "www.f.test", "--api-url", f"http://127.0.0.1:{srv.api_port}"],
        capture_output=True, text=True, timeout=30, check=False, cwd=ROOT,
    )  # fmt: skip
    line = next(ln for ln in out.stdout.splitlines() if "member p/127.0.0.91" in ln)
    assert "round trip" in line, out.stdout
    ms = float(line.split("round trip ")[1].split(" ms")[0])
    assert 55 <= ms <= 90, line


def test_a_down_member_is_never_answered_however_fast(setup: tuple[GslbProcess, list[Target]]) -> None:
    srv, targets = setup
    wait_until(lambda: answer(srv) == HOSTS[1], 10, "b answers")
    targets[1].stop()
    try:
        took = wait_until(lambda: answer(srv) == HOSTS[0], 3, "a after b is down")
        assert took < 2
        # once out, b never comes back while down
        assert all(answer(srv) == HOSTS[0] for _ in range(30))
    finally:
        targets[1].start()
    wait_until(lambda: answer(srv) == HOSTS[1], 10, "b, back and fastest, answers again")
