"""Calculated health through the real server (docs/health.md, "Calculated health"): a
member up while all, any or N of several checks pass for it, each check a probe of its
own through real targets going down one by one; a pool that requires another pool is
passed over while that one is down; explain and /v1/status show each child check and
the combination; loops and bad combinations are refused with their positions."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import dns.rcode
import pytest

from tests.conftest import ROOT, GslbProcess
from tests.targets import Target, free_port
from tests.test_health import BOUND, FALL, INTERVAL, RISE, wait_until

A, B, DB = "127.0.0.101", "127.0.0.102", "127.0.0.105"

ZONE = """zone: calc.test.
nameservers: {{ns1.calc.test.: [192.0.2.53]}}
checks:
  web: {{type: http, port: {http}, path: /healthz, interval: {i}s, timeout: 0.3s, fall: {fall}, rise: {rise}}}
  alt: {{type: http, port: {http}, path: /ready, interval: {i}s, timeout: 0.3s, fall: {fall}, rise: {rise}}}
  admin: {{type: tcp, port: {tcp}, interval: {i}s, timeout: 0.3s, fall: {fall}, rise: {rise}}}
  db: {{type: tcp, port: {db}, interval: {i}s, timeout: 0.3s, fall: {fall}, rise: {rise}}}
pools:
  both: {{check: {{all: [web, admin]}}, members: [{{address: {a}}}, {{address: {b}}}]}}
  either: {{check: {{any: [web, admin]}}, members: [{{address: {a}}}, {{address: {b}}}]}}
  most: {{check: {{at_least: 2, of: [web, alt, admin]}}, members: [{{address: {a}}}, {{address: {b}}}]}}
  db: {{check: db, members: [{{address: {dbh}, name: primary}}]}}
  app: {{requires: [db], members: [{{address: 192.0.2.50}}]}}
  app2: {{requires: [db/primary], members: [{{address: 192.0.2.51}}]}}
  spare: {{members: [{{address: 192.0.2.60}}]}}
records:
  all: [{{types: [A], answer: {{select: all}}, rules: [{{pools: [both]}}], when_all_down: servfail}}]
  any: [{{types: [A], answer: {{select: all}}, rules: [{{pools: [either]}}], when_all_down: servfail}}]
  most: [{{types: [A], answer: {{select: all}}, rules: [{{pools: [most]}}], when_all_down: servfail}}]
  app: [{{types: [A], rules: [{{pools: [app, spare]}}]}}]
  app2: [{{types: [A], rules: [{{pools: [app2, spare]}}]}}]
"""


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[GslbProcess, dict[str, Target]]]:
    http_port = free_port([A, B])
    tcp_port = free_port([A, B])
    while tcp_port == http_port:
        tcp_port = free_port([A, B])
    db_port = free_port([DB])
    t = {
        "a-http": Target(A, http_port),
        "b-http": Target(B, http_port),
        "a-tcp": Target(A, tcp_port, kind="tcp"),
        "b-tcp": Target(B, tcp_port, kind="tcp"),
        "db": Target(DB, db_port, kind="tcp"),
    }
    zdir = tmp_path / "zones"
    zdir.mkdir()
    (zdir / "calc.test.yaml").write_text(
        ZONE.format(
            http=http_port, tcp=tcp_port, db=db_port, i=INTERVAL, fall=FALL, rise=RISE, a=A, b=B, dbh=DB
        )
    )
    srv = GslbProcess(zdir, tmp_path / "gslb.log")
    try:
        yield srv, t
    finally:
        srv.stop()
        for x in t.values():
            x.close()
    assert "Traceback" not in srv.log(), srv.log()


def answer(srv: GslbProcess, name: str) -> set[str] | str:
    r = srv.query(f"{name}.calc.test.", "A")
    if r.rcode() == dns.rcode.SERVFAIL:
        return "SERVFAIL"
    return {rd.to_text() for rr in r.answer for rd in rr}


def both_up(srv: GslbProcess, name: str) -> Callable[[], bool]:
    return lambda: answer(srv, name) == {A, B}


def explain(srv: GslbProcess, name: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "gslb", "explain", f"{name}.calc.test", "--api-url", f"http://127.0.0.1:{srv.api_port}"],
        capture_output=True, text=True, timeout=30, check=False, cwd=ROOT,
    )  # fmt: skip
    return out.stdout + out.stderr


def test_all_any_and_at_least_follow_their_checks(setup: tuple[GslbProcess, dict[str, Target]]) -> None:
    srv, t = setup
    for name in ("all", "any", "most"):
        wait_until(both_up(srv, name), 10, f"{name}: both up")
    t["a-tcp"].stop()  # a's admin check fails; web and alt pass
    try:
        wait_until(lambda: answer(srv, "all") == {B}, BOUND + 1, "all: a out")
        time.sleep(INTERVAL * FALL)
        assert answer(srv, "any") == {A, B}  # any: web still passes for a
        assert answer(srv, "most") == {A, B}  # 2 of 3: web and alt
        text = explain(srv, "all")
        assert "down (calculated: 1 of 2 checks up, 2 needed)" in text, text
        assert "check admin: down (health check)" in text and "check web: up (health check)" in text, text
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.api_port}/v1/status", timeout=5) as r:
            doc = json.loads(r.read())
        a = next(m for m in doc["members"] if m["pool"] == "both" and m["address"] == A)
        assert not a["in_rotation"] and a["why"] == "calculated: 1 of 2 checks up, 2 needed", a
        assert {c["check"]: c["state"] for c in a["checks"]} == {"web": "up", "admin": "down"}
        t["a-http"].stop()  # now web and alt fail for a too
        wait_until(lambda: answer(srv, "any") == {B}, BOUND + 1, "any: a out")
        wait_until(lambda: answer(srv, "most") == {B}, BOUND + 1, "most: a out")
        t["a-http"].start()  # web and alt back: 2 of 3 again
        wait_until(lambda: answer(srv, "most") == {A, B}, INTERVAL * RISE + 3, "most: a back")
        assert answer(srv, "all") == {B}  # admin still down
    finally:
        for k in ("a-tcp", "a-http"):
            if t[k].server is None:
                t[k].start()
    wait_until(lambda: answer(srv, "all") == {A, B}, INTERVAL * RISE + 3, "all: a back")


def test_a_pool_that_requires_another_is_passed_over_while_it_is_down(
    setup: tuple[GslbProcess, dict[str, Target]],
) -> None:
    srv, t = setup
    wait_until(lambda: answer(srv, "app") == {"192.0.2.50"}, 10, "app up while db is")
    assert answer(srv, "app2") == {"192.0.2.51"}
    t["db"].stop()
    try:
        wait_until(lambda: answer(srv, "app") == {"192.0.2.60"}, BOUND + 1, "app passed over: spare answers")
        assert "pool app skipped: it requires pool db, which is down" in explain(srv, "app")
        assert answer(srv, "app2") == {"192.0.2.60"}  # it requires the member db/primary
        text = explain(srv, "app2")
        assert "pool app2 skipped: it requires member primary of pool db, which is down" in text, text
    finally:
        t["db"].start()
    wait_until(lambda: answer(srv, "app") == {"192.0.2.50"}, INTERVAL * RISE + 3, "app back")
    assert answer(srv, "app2") == {"192.0.2.51"}


def test_bad_calculated_checks_and_requirement_loops_are_refused(tmp_path: Path) -> None:
    z = tmp_path / "b.test.yaml"
    z.write_text(
        "zone: b.test.\nnameservers: {ns1.b.test.: [192.0.2.53]}\n"
        "checks:\n  web: {type: http, port: 80}\n  tcp: {type: tcp, port: 22}\n"
        "pools:\n"
        "  one: {check: {all: [web]}, members: [{address: 192.0.2.1}]}\n"
        "  bad: {check: {any: [web, nope]}, members: [{address: 192.0.2.2}]}\n"
        "  mix: {check: {all: [web], any: [tcp]}, members: [{address: 192.0.2.3}]}\n"
        "  al: {check: {all: [web, tcp]}, members: [{alias: lb.example.net.}]}\n"
        "  x: {requires: [y], members: [{address: 192.0.2.4}]}\n"
        "  y: {requires: [x], members: [{address: 192.0.2.5}]}\n"
        "  z: {requires: [nothere, x/nobody], members: [{address: 192.0.2.6}]}\n"
        "records:\n  w: [{types: [A], rules: [{pools: [one, bad, mix, al, x, y, z]}]}]\n"
    )
    out = subprocess.run([sys.executable, "-m", "gslb", "check", str(z)], capture_output=True, text=True,
                         timeout=30, check=False, cwd=ROOT)  # fmt: skip
    text = out.stdout
    assert out.returncode == 1
    assert f"{z}:7:22: pools.one.check.all: a calculated check combines two checks or more" in text, text
    assert f"{z}:8:28: pools.bad.check.any[1]: undefined check 'nope'" in text, text
    assert f"{z}:9:16: pools.mix.check: a calculated check is {{all: [...]}}" in text, text
    assert f"{z}:10:15: pools.al.check: members[0] is an alias" in text, text
    assert f"{z}:12:18: pools.y.requires[0]: requirement loop: x -> y -> x" in text, text
    assert f"{z}:13:18: pools.z.requires[0]: undefined pool 'nothere'" in text, text
    assert f"{z}:13:27: pools.z.requires[1]: pool 'x' has no member 'nobody'" in text, text
