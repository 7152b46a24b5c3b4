"""The prober in-process, against real loopback targets: bounded concurrency,
shared targets, and stall detection."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

import pytest

from gslb.health.prober import Prober, targets_of
from gslb.health.view import HealthView
from gslb.zones.load import load_zone
from tests.targets import Target, free_port


def zone_file(
    tmp_path: Path, port: int, hosts: list[str], interval: float = 0.4, timeout: float = 0.3
) -> Path:
    members = ", ".join(f"{{address: {h}}}" for h in hosts)
    f = tmp_path / "p.test.yaml"
    f.write_text(f"""zone: p.test.
nameservers: {{ns1.p.test.: [192.0.2.53]}}
checks:
  web: {{type: http, port: {port}, interval: {interval}s, timeout: {timeout}s, fall: 1, rise: 1}}
pools:
  a: {{check: web, members: [{members}]}}
  b: {{check: web, members: [{members}]}}
records:
  x: [{{types: [A], rules: [{{pools: [a]}}]}}]
  y: [{{types: [A], rules: [{{pools: [b]}}]}}]
""")
    return f


def test_members_sharing_a_check_share_one_probe(tmp_path: Path) -> None:
    z = load_zone(zone_file(tmp_path, 8080, ["127.0.0.51", "127.0.0.52"]))
    targets = targets_of([z])
    assert len(targets) == 2  # two pools x two members, but two distinct targets
    assert all(len(w.members) == 2 for w in targets.values())


def test_hung_targets_get_one_probe_each_and_go_down(tmp_path: Path) -> None:
    hosts = [f"127.0.1.{i}" for i in range(1, 41)]
    port = free_port(hosts[:1])
    ts = [Target(h, port) for h in hosts]
    for t in ts:
        t.mode = "hang"
    views: list[HealthView] = []
    try:
        z = load_zone(zone_file(tmp_path, port, hosts, interval=0.5, timeout=0.2))

        async def run() -> None:
            p = Prober(views.append, None, max_concurrency=5)
            p.update([z])
            await p.start()
            await asyncio.sleep(2.0)
            await p.stop()

        asyncio.run(run())
        # a hung probe is abandoned at its timeout before the next one starts
        assert max(t.max_open for t in ts) == 1
        assert sum(t.requests for t in ts) >= 5
        assert views[-1].down, "hung targets must end DOWN"
    finally:
        for t in ts:
            t.close()


def test_concurrency_peak_measured_at_the_targets(tmp_path: Path) -> None:
    """Count simultaneous open connections across all targets while every probe takes 0.25 s."""
    hosts = [f"127.0.2.{i}" for i in range(1, 31)]
    port = free_port(hosts[:1])
    ts = [Target(h, port) for h in hosts]
    for t in ts:
        t.mode = "slow"  # answers in time, and the target closes: its count of open connections is exact
    peak = 0
    try:
        z = load_zone(zone_file(tmp_path, port, hosts, interval=0.5, timeout=0.3))

        async def run() -> None:
            nonlocal peak
            p = Prober(lambda v: None, None, max_concurrency=4)
            p.update([z])
            await p.start()
            end = time.monotonic() + 2.0
            while time.monotonic() < end:
                peak = max(peak, sum(len(t.writers) for t in ts))
                await asyncio.sleep(0.01)
            await p.stop()

        asyncio.run(run())
        assert peak == 4  # 30 targets want 60 probes/s; 4 at a time is all they get
    finally:
        for t in ts:
            t.close()


def test_a_target_without_results_is_reported(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A target with no result for 3 x interval + timeout + the watchdog's limit is
    logged (the prober as a whole is watched by the server: test_health.py)."""
    host = "127.0.0.61"
    port = free_port([host])
    t = Target(host, port)
    try:
        z = load_zone(zone_file(tmp_path, port, [host]))

        async def run() -> None:
            p = Prober(lambda v: None, None)
            p.update([z])
            await p.start(watchdog_after=0.5)
            await asyncio.sleep(0.5)
            time.sleep(2.6)  # the event loop is blocked: nothing can probe (limit 2.0 s)
            await asyncio.sleep(0.8)
            await p.stop()

        with caplog.at_level(logging.INFO, logger="gslb.health"):
            asyncio.run(run())
        assert re.search(
            r"no health result for web:http://127\.0\.0\.61:\d+ for \d\.\ds \(interval 0\.4s\)", caplog.text
        )
        assert "health prober stalled" not in caplog.text  # not this module's word
    finally:
        t.close()


def test_check_address_and_port_redirect_the_probe(tmp_path: Path) -> None:
    f = tmp_path / "c.test.yaml"
    f.write_text("""zone: c.test.
nameservers: {ns1.c.test.: [192.0.2.53]}
checks: {web: {type: http, port: 8080}}
pools:
  p:
    check: web
    members:
      - {address: 192.0.2.10, check_address: 127.0.0.10}
      - {address: 192.0.2.11, check_port: 9090, check_address: 127.0.0.11}
records:
  x: [{types: [A], rules: [{pools: [p]}]}]
""")
    targets = targets_of([load_zone(f)])
    got = {(w.target.address, w.target.port): sorted(k[2] for k in w.members) for w in targets.values()}
    assert got == {("127.0.0.10", 8080): ["192.0.2.10"], ("127.0.0.11", 9090): ["192.0.2.11"]}


def test_a_target_not_yet_probed_is_late_since_it_was_added() -> None:
    """The watchdog's age of a target that has no result yet counts from when the target
    was added (it counted from boot: 'no health result for ... 13679.5s' under overload)."""
    import time as _time

    from gslb.health.prober import _Slot
    from gslb.health.state import TargetState

    before = _time.monotonic()
    slot = _Slot(None, set(), [], TargetState.initial(True, 0.0))  # type: ignore[arg-type]
    assert before <= slot.last_done <= _time.monotonic()
