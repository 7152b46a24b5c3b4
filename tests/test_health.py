"""Health checks against real targets: failed load balancers leave DNS answers
within the failover bound, for the right logged reason, and come back after
``rise`` successes. Targets are real HTTP/HTTPS/TCP servers on 127.0.0.x."""

from __future__ import annotations

import signal
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from tests.conftest import GslbProcess
from tests.targets import Target, free_port

INTERVAL, TIMEOUT, FALL, RISE = 0.5, 0.3, 2, 2
BOUND = INTERVAL * FALL + TIMEOUT + INTERVAL  # documented worst case + one interval of slack
HTTP_HOSTS = ["127.0.0.11", "127.0.0.12", "127.0.0.13", "127.0.0.14"]


def zone(port: int, members: list[str], check: str = "", extra_pools: str = "", records: str = "") -> str:
    check = check or (
        f"web: {{type: http, port: {port}, path: /healthz, expect: {{body: ok}}, "
        f"interval: {INTERVAL}s, timeout: {TIMEOUT}s, fall: {FALL}, rise: {RISE}}}"
    )
    mem = ", ".join(f"{{address: {m}}}" for m in members)
    return f"""zone: h.test.
nameservers: {{ns1.h.test.: [192.0.2.53]}}
checks:
  {check}
pools:
  p: {{check: web, members: [{mem}]}}
{extra_pools}
records:
  www: [{{types: [A], answer: {{select: all}}, rules: [{{pools: [p]}}]}}]
{records}
"""


def answers(srv: GslbProcess, name: str = "www.h.test.") -> set[str]:
    return {rd.to_text() for rr in srv.query(name, "A").answer for rd in rr}


def wait_until(cond: Callable[[], bool], timeout: float, what: str = "condition") -> float:
    """Seconds until ``cond()`` holds (polled every 20 ms); fails after ``timeout``."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return time.monotonic() - t0
        time.sleep(0.02)
    raise AssertionError(f"{what}: not met within {timeout}s")


@pytest.fixture(scope="module")
def http_targets() -> Iterator[dict[str, Target]]:
    port = free_port(HTTP_HOSTS)
    ts = {h: Target(h, port) for h in HTTP_HOSTS}
    yield ts
    for t in ts.values():
        t.close()


@pytest.fixture(scope="module")
def health_server(
    http_targets: dict[str, Target], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GslbProcess]:
    tmp = tmp_path_factory.mktemp("health")
    zdir = tmp / "zones"
    zdir.mkdir()
    port = next(iter(http_targets.values())).port
    (zdir / "h.test.yaml").write_text(zone(port, HTTP_HOSTS[:3]))
    srv = GslbProcess(zdir, tmp / "gslb.log")
    wait_until(lambda: answers(srv) == set(HTTP_HOSTS[:3]), 5)
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log()


def stop(t: Target) -> None:
    t.stop()


def hang(t: Target) -> None:
    t.mode = "hang"


def error500(t: Target) -> None:
    t.mode = "500"


def wrongbody(t: Target) -> None:
    t.mode = "wrongbody"


def restore(t: Target) -> None:
    t.mode = "ok"
    if t.server is None:
        t.start()


FAILURES = [
    (stop, "connection refused"),
    (hang, f"timeout after {TIMEOUT:g}s"),
    (error500, "HTTP 500"),
    (wrongbody, "HTTP 200, body does not contain 'ok'"),
]


@pytest.mark.parametrize(("breaker", "reason"), FAILURES, ids=[f[0].__name__ for f in FAILURES])
def test_failed_target_leaves_answers_and_returns(
    health_server: GslbProcess,
    http_targets: dict[str, Target],
    breaker: Callable[[Target], None],
    reason: str,
) -> None:
    srv, victim = health_server, http_targets["127.0.0.12"]
    mark = len(srv.log())
    breaker(victim)
    try:
        took = wait_until(lambda: answers(srv) == {"127.0.0.11", "127.0.0.13"}, 10)
        assert took <= BOUND, f"failover took {took:.2f}s, bound {BOUND}s"
        srv.wait_log(
            rf"127\.0\.0\.12:\d+ DOWN: {reason.replace('(', '.').replace(')', '.')} \({FALL} consecutive",
            3,
            mark,
        )
    finally:
        restore(victim)
    back = wait_until(lambda: "127.0.0.12" in answers(srv), 10)
    assert back <= RISE * INTERVAL + INTERVAL + TIMEOUT
    srv.wait_log(r"127\.0\.0\.12:\d+ UP: HTTP 200", 3, mark)


def test_one_probe_in_flight_per_target(health_server: GslbProcess, http_targets: dict[str, Target]) -> None:
    victim = http_targets["127.0.0.13"]
    victim.max_open = 0
    victim.mode = "hang"
    try:
        wait_until(lambda: "127.0.0.13" not in answers(health_server), 10)
        time.sleep(4 * INTERVAL)
    finally:
        restore(victim)
    assert victim.max_open == 1  # every hung probe was abandoned before the next began
    wait_until(lambda: "127.0.0.13" in answers(health_server), 10)


def test_reload_keeps_state_adds_and_removes_targets(
    health_server: GslbProcess, http_targets: dict[str, Target]
) -> None:
    srv = health_server
    port = http_targets["127.0.0.11"].port
    victim, dropped, added = (
        http_targets["127.0.0.11"],
        http_targets["127.0.0.13"],
        http_targets["127.0.0.14"],
    )
    victim.stop()
    try:
        wait_until(lambda: "127.0.0.11" not in answers(srv), 10)
        mark = len(srv.log())
        before_added = added.requests
        (srv.zones_dir / "h.test.yaml").write_text(zone(port, ["127.0.0.11", "127.0.0.12", "127.0.0.14"]))
        srv.signal(signal.SIGHUP)
        srv.wait_log(r"stopped probing web:http://127\.0\.0\.13", 5, mark)
        # the DOWN member stays DOWN through the reload; the new one starts UP and is probed
        assert answers(srv) == {"127.0.0.12", "127.0.0.14"}
        wait_until(lambda: added.requests > before_added, 3)
        count = dropped.requests
        time.sleep(3 * INTERVAL)
        assert dropped.requests == count  # no orphaned probe task
    finally:
        restore(victim)
        (srv.zones_dir / "h.test.yaml").write_text(zone(port, HTTP_HOSTS[:3]))
        srv.signal(signal.SIGHUP)
    wait_until(lambda: answers(srv) == set(HTTP_HOSTS[:3]), 10)


def test_https_checks_verify_against_host(tmp_path: Path, server_factory: Callable[..., GslbProcess]) -> None:
    ca, rogue = trustme.CA(), trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))

    def tls(issuer: trustme.CA) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        issuer.issue_cert("www.h.test").configure_cert(ctx)
        return ctx

    hosts = ["127.0.0.21", "127.0.0.22"]
    port = free_port(hosts)
    good, bad = Target(hosts[0], port, tls=tls(ca)), Target(hosts[1], port, tls=tls(rogue))
    try:
        check = (
            f"web: {{type: https, port: {port}, host: www.h.test, ca_file: {ca_file}, path: /, "
            f"interval: {INTERVAL}s, timeout: 0.4s, fall: {FALL}, rise: {RISE}}}\n"
            f"  lax: {{type: https, port: {port}, tls_verify: false, interval: {INTERVAL}s, timeout: 0.4s}}"
        )
        z = tmp_path / "h.test.yaml"
        z.write_text(
            zone(
                port,
                hosts,
                check,
                extra_pools=f"  q: {{check: lax, members: [{{address: {hosts[0]}}},"
                f" {{address: {hosts[1]}}}]}}",
                records="  lax: [{types: [A], answer: {select: all}, rules: [{pools: [q]}]}]",
            )
        )
        srv = server_factory(z)
        wait_until(lambda: answers(srv) == {hosts[0]}, 10)
        srv.wait_log(r"127\.0\.0\.22:\d+ DOWN: TLS certificate error", 3)
        # the certificate names www.h.test, not the IP: passing proves `host` drove SNI and verification
        assert good.requests > 0
        time.sleep(3 * INTERVAL)
        assert answers(srv, "lax.h.test.") == set(hosts)  # tls_verify: false accepts both
    finally:
        good.close()
        bad.close()


def test_tcp_check(tmp_path: Path, server_factory: Callable[..., GslbProcess]) -> None:
    hosts = ["127.0.0.31", "127.0.0.32"]
    port = free_port(hosts)
    ts = [Target(h, port, kind="tcp") for h in hosts]
    try:
        check = (
            f"web: {{type: tcp, port: {port}, interval: {INTERVAL}s, timeout: {TIMEOUT}s, "
            f"fall: {FALL}, rise: {RISE}}}"
        )
        z = tmp_path / "h.test.yaml"
        z.write_text(zone(port, hosts, check))
        srv = server_factory(z)
        time.sleep(2 * INTERVAL)
        assert answers(srv) == set(hosts)
        ts[1].stop()
        took = wait_until(lambda: answers(srv) == {hosts[0]}, 10)
        assert took <= BOUND
        srv.wait_log(r"127\.0\.0\.32:\d+ DOWN: connection refused", 3)
        ts[1].start()
        wait_until(lambda: answers(srv) == set(hosts), 10)
    finally:
        for t in ts:
            t.close()


def test_down_state_survives_restart(tmp_path: Path) -> None:
    hosts = ["127.0.0.41", "127.0.0.42"]
    port = free_port(hosts)
    ts = [Target(h, port) for h in hosts]
    zdir, state = tmp_path / "zones", tmp_path / "state"
    zdir.mkdir()
    (zdir / "h.test.yaml").write_text(zone(port, hosts))
    try:
        srv = GslbProcess(zdir, tmp_path / "a.log", state_dir=state)
        ts[1].stop()
        wait_until(lambda: answers(srv) == {hosts[0]}, 10)
        assert srv.stop() == 0
        assert (state / "health.json").exists()
        srv = GslbProcess(zdir, tmp_path / "b.log", state_dir=state)
        try:
            # the very first answer after the restart already leaves the DOWN member out
            assert answers(srv) == {hosts[0]}
            srv.wait_log(r"127\.0\.0\.42:\d+ starts DOWN \(persisted state", 1)
            ts[1].start()
            wait_until(lambda: answers(srv) == set(hosts), 10)
        finally:
            srv.stop()
        # with no persisted state a member starts UP (fail-open)
        (state / "health.json").unlink()
        ts[1].stop()
        srv = GslbProcess(zdir, tmp_path / "c.log", state_dir=state)
        try:
            assert answers(srv) == set(hosts)
        finally:
            srv.stop()
    finally:
        for t in ts:
            t.close()


def prober_pid(srv: GslbProcess, start: int = 0) -> int:
    import re

    m = re.findall(r"health prober running as pid (\d+)", srv.log()[start:])
    assert m, srv.log()
    return int(m[-1])


def test_prober_process_restarts_and_stalls_are_reported(tmp_path: Path) -> None:
    import os

    hosts = ["127.0.0.81", "127.0.0.82"]
    port = free_port(hosts)
    ts = [Target(h, port) for h in hosts]
    zdir = tmp_path / "zones"
    zdir.mkdir()
    (zdir / "h.test.yaml").write_text(zone(port, hosts))
    srv = GslbProcess(zdir, tmp_path / "gslb.log", extra=["--stall-after", "1"])
    try:
        wait_until(lambda: "health prober running as pid" in srv.log(), 5)
        first = prober_pid(srv)
        # a prober that dies is restarted; DNS keeps answering throughout
        mark = len(srv.log())
        os.kill(first, signal.SIGKILL)
        srv.wait_log(r"health prober process died \(exit code -9\); restarting it", 5, mark)
        assert answers(srv) == set(hosts)
        wait_until(lambda: prober_pid(srv, mark) != first, 5)
        ts[1].stop()  # and the new prober still takes failed members out
        wait_until(lambda: answers(srv) == {hosts[0]}, 10)
        # a prober that stops making progress is reported, and its recovery too
        second = prober_pid(srv, mark)
        mark = len(srv.log())
        os.kill(second, signal.SIGSTOP)
        try:
            srv.wait_log(r"health prober stalled: no progress for", 5, mark)
            assert answers(srv) == {hosts[0]}  # the last known state keeps serving
        finally:
            os.kill(second, signal.SIGCONT)
        srv.wait_log(r"health prober making progress again", 5, mark)
    finally:
        srv.stop()
        for t in ts:
            t.close()


def test_least_loaded_follows_reported_load(
    tmp_path: Path, server_factory: Callable[..., GslbProcess]
) -> None:
    hosts = ["127.0.0.91", "127.0.0.92", "127.0.0.93"]
    port = free_port(hosts)
    ts = {h: Target(h, port) for h in hosts}
    for h, load in zip(hosts, ("0.7", "0.2", "0.9"), strict=True):
        ts[h].extra_headers = {"X-Load": load}
    ts["127.0.0.93"].body = b'{"stats": {"load": 0.05}}'  # reports through JSON on the other check
    try:
        check = (
            f"web: {{type: http, port: {port}, load: {{header: X-Load}}, interval: {INTERVAL}s, "
            f"timeout: {TIMEOUT}s}}\n"
            f"  js: {{type: http, port: {port}, load: {{json: stats.load}}, interval: {INTERVAL}s, "
            f"timeout: {TIMEOUT}s}}"
        )
        z = tmp_path / "h.test.yaml"
        z.write_text(
            zone(
                port,
                hosts,
                check,
                extra_pools="  q: {check: js, members: [{address: 127.0.0.91}, {address: 127.0.0.93}]}",
                records="  ll: [{types: [A], answer: {select: least_loaded}, rules: [{pools: [p]}]}]\n"
                "  lj: [{types: [A], answer: {select: least_loaded}, rules: [{pools: [q]}]}]",
            )
        )
        srv = server_factory(z)
        wait_until(lambda: answers(srv, "ll.h.test.") == {"127.0.0.92"}, 5)
        wait_until(lambda: answers(srv, "lj.h.test.") == {"127.0.0.93"}, 5)  # 0.05 from JSON; .91 has no JSON
        ts["127.0.0.91"].extra_headers = {"X-Load": "0.1"}  # the load moves
        took = wait_until(lambda: answers(srv, "ll.h.test.") == {"127.0.0.91"}, 5)
        assert took <= INTERVAL + 0.25 + TIMEOUT + 0.5
        # a member that stops reporting ranks last once its reading expires (3 x interval + timeout)
        ts["127.0.0.91"].extra_headers = {}
        took = wait_until(lambda: answers(srv, "ll.h.test.") == {"127.0.0.92"}, 6)
        assert took >= 3 * INTERVAL  # not before the reading had expired
        # a down member is never answered, whatever its load
        ts["127.0.0.92"].stop()
        wait_until(lambda: answers(srv, "ll.h.test.") == {"127.0.0.93"}, 5)
    finally:
        for t in ts.values():
            t.close()


def test_sigterm_persists_and_exits_quickly(tmp_path: Path) -> None:
    import json

    hosts = ["127.0.0.121", "127.0.0.122"]
    port = free_port(hosts)
    ts = [Target(h, port) for h in hosts]
    zdir = tmp_path / "zones"
    zdir.mkdir()
    (zdir / "h.test.yaml").write_text(zone(port, hosts))
    srv = GslbProcess(zdir, tmp_path / "gslb.log", state_dir=tmp_path / "state")
    try:
        ts[1].stop()
        wait_until(lambda: answers(srv) == {hosts[0]}, 10)
        r = srv.query("static.h.test.", "A", tcp=True)  # a TCP connection in use at shutdown
        assert r is not None
        t0 = time.monotonic()
        assert srv.stop() == 0
        assert time.monotonic() - t0 < 5
        saved = json.loads((tmp_path / "state" / "health.json").read_text())["targets"]
        assert any(k.endswith(f"{hosts[1]}:{port}") and not v["up"] for k, v in saved.items())
        assert srv.log().rstrip().endswith("stopped")
    finally:
        for t in ts:
            t.close()
