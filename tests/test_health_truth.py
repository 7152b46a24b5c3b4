"""The answers never go back to an older health view, in any order of events.

Each test drives the real server (real prober process, real HTTP targets on
127.0.0.x) through an order of events that used to bring a dead member back
into the answers, and queries it throughout.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gslb.health.prober import Prober
from gslb.health.view import HealthView
from gslb.zones.load import load_zone
from tests.conftest import GslbProcess
from tests.targets import Target, free_port
from tests.test_health import FALL, INTERVAL, answers, prober_pid, wait_until, zone


def watch_answers(srv: GslbProcess, seconds: float) -> list[set[str]]:
    """Query for ``seconds``, every 20 ms; every query must be answered."""
    seen = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        seen.append(answers(srv))
        time.sleep(0.02)
    return seen


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[list[str], int, list[Target]]]:
    hosts = ["127.0.0.61", "127.0.0.62"]
    port = free_port(hosts)
    ts = [Target(h, port) for h in hosts]
    yield hosts, port, ts
    for t in ts:
        t.close()


@pytest.mark.parametrize("state_dir", ["dir", "none"])
def test_prober_killed_right_after_a_down_keeps_the_member_out(
    tmp_path: Path, pair: tuple[list[str], int, list[Target]], state_dir: str
) -> None:
    """SIGKILL the prober the moment it has logged a DOWN (before its state file is
    rewritten, or with no state file at all): the restarted prober starts from the
    view the server was told, so the dead member is never answered again."""
    hosts, port, ts = pair
    zdir = tmp_path / "zones"
    zdir.mkdir()
    (zdir / "h.test.yaml").write_text(zone(port, hosts))
    extra = ["--state-dir", ""] if state_dir == "none" else []
    srv = GslbProcess(zdir, tmp_path / "gslb.log", extra, state_dir=tmp_path / "state")
    try:
        srv.wait_log(r"first probe round complete", 10)
        first = prober_pid(srv)
        ts[1].stop()
        srv.wait_log(rf"{re.escape(hosts[1])}:{port} DOWN", 10)
        os.kill(first, signal.SIGKILL)  # at once: the DOWN was logged, little else happened
        mark = len(srv.log())
        srv.wait_log(r"health prober running as pid", 5, mark)
        # the new prober starts, probes and publishes; with the old behaviour it published
        # the member UP (from the older file, or as unknown) and it was answered again
        seen = watch_answers(srv, FALL * INTERVAL + 2.0)
        assert all(a == {hosts[0]} for a in seen), f"dead member answered again: {seen}\n{srv.log()}"
        assert prober_pid(srv, mark) != first
        # and it still moves forward: the member comes back once it passes its checks
        ts[1].start()
        wait_until(lambda: answers(srv) == set(hosts), 10)
    finally:
        srv.stop()


def test_down_survives_a_server_kill_right_after_the_transition(
    tmp_path: Path, pair: tuple[list[str], int, list[Target]]
) -> None:
    """A DOWN is written to the state file at once: SIGKILL the whole server (prober
    included) right after it, and the next start still leaves the member out."""
    hosts, port, ts = pair
    zdir, state = tmp_path / "zones", tmp_path / "state"
    zdir.mkdir()
    (zdir / "h.test.yaml").write_text(zone(port, hosts))
    srv = GslbProcess(zdir, tmp_path / "a.log", state_dir=state)
    try:
        srv.wait_log(r"first probe round complete", 10)
        pid = prober_pid(srv)
        ts[1].stop()
        srv.wait_log(rf"{re.escape(hosts[1])}:{port} DOWN", 10)
        os.kill(pid, signal.SIGKILL)
        srv.proc.kill()
        srv.proc.wait(5)
    finally:
        srv.stop()
    srv = GslbProcess(zdir, tmp_path / "b.log", state_dir=state)
    try:
        assert answers(srv) == {hosts[0]}  # the very first answer
        assert all(a == {hosts[0]} for a in watch_answers(srv, 1.5))
    finally:
        srv.stop()


def _edit(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))  # a visible change


def test_editing_a_checks_schedule_keeps_its_state(
    tmp_path: Path, pair: tuple[list[str], int, list[Target]]
) -> None:
    hosts, port, ts = pair
    zdir = tmp_path / "zones"
    zdir.mkdir()
    f = zdir / "h.test.yaml"
    check = (
        "web: {{type: http, port: {port}, path: {path}, expect: {{body: ok}}, "
        "interval: {i}s, timeout: {t}s, fall: {fall}, rise: {rise}}}"
    )
    f.write_text(zone(port, hosts, check.format(port=port, path="/healthz", i=0.5, t=0.3, fall=2, rise=2)))
    srv = GslbProcess(zdir, tmp_path / "gslb.log", ["--watch-interval", "0.2"])
    try:
        srv.wait_log(r"first probe round complete", 10)
        ts[1].stop()
        wait_until(lambda: answers(srv) == {hosts[0]}, 10)
        # the schedule only: interval, timeout, fall and rise
        mark = len(srv.log())
        _edit(f, zone(port, hosts, check.format(port=port, path="/healthz", i=0.7, t=0.4, fall=4, rise=3)))
        changed = r"interval 0\.5 -> 0\.7, timeout 0\.3 -> 0\.4, fall 2 -> 4, rise 2 -> 3"
        srv.wait_log(rf"check changed \({changed}\); state DOWN and rise/fall counters kept", 5, mark)
        seen = watch_answers(srv, 2.0)
        assert all(a == {hosts[0]} for a in seen), f"dead member answered after the edit: {seen}"
        assert "stopped probing" not in srv.log()[mark:]
        # what the check asks (its path): a new target, which starts DOWN for a member
        # that was down, and comes up only once the new check passes `rise` times
        mark = len(srv.log())
        _edit(f, zone(port, hosts, check.format(port=port, path="/ready", i=0.5, t=0.3, fall=2, rise=2)))
        h = re.escape(hosts[1])
        srv.wait_log(
            rf"{h}:{port} starts DOWN: its member\(s\) h\.test\./p/{h} were down under their previous",
            5,
            mark,
        )
        assert all(a == {hosts[0]} for a in watch_answers(srv, 1.5))
        ts[1].start()
        wait_until(lambda: answers(srv) == set(hosts), 10)
        assert "/ready" in ts[1].last_path
    finally:
        srv.stop()


def test_a_schedule_edit_keeps_the_rise_fall_counters(tmp_path: Path) -> None:
    """In the prober itself: the same target object, state and counters after a
    reload that changes the schedule; a new one when what it asks changes."""
    port = 9  # never probed: the prober is not started
    f = tmp_path / "h.test.yaml"
    check = "web: {{type: http, port: {port}, path: {path}, interval: {i}s, timeout: 0.2s, fall: {fall}}}"
    f.write_text(zone(port, ["127.0.0.63"], check.format(port=port, path="/", i=1, fall=3)))
    views: list[HealthView] = []
    prober = Prober(views.append)
    prober.update([load_zone(f)])
    (slot,) = prober.slots.values()
    slot.state = type(slot.state)(True, 1.0, successes=0, failures=2)  # one failure short of DOWN
    f.write_text(zone(port, ["127.0.0.63"], check.format(port=port, path="/", i=2, fall=5)))
    prober.update([load_zone(f)])
    assert list(prober.slots.values()) == [slot] and slot.state.failures == 2
    assert slot.target.check.interval == 2 and slot.target.check.fall == 5
    f.write_text(zone(port, ["127.0.0.63"], check.format(port=port, path="/other", i=2, fall=5)))
    prober.update([load_zone(f)])
    (new,) = prober.slots.values()
    assert new is not slot and new.state.failures == 0 and new.target.check.path == "/other"
