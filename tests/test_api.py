"""The HTTP API against the real server, with a real HTTP client (urllib)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, GslbProcess
from tests.targets import Target, free_port

TOKEN = "t0ken-for-tests"
HOSTS = ["127.0.0.101", "127.0.0.102", "127.0.0.103"]


def http(srv: GslbProcess, method: str, path: str, body: bytes | None = None,
         token: str | None = None) -> tuple[int, Any]:  # fmt: skip
    req = urllib.request.Request(f"http://127.0.0.1:{srv.api_port}{path}", data=body, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            raw = r.read()
            status = r.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode()


def answers(srv: GslbProcess) -> set[str]:
    return {rd.to_text() for rr in srv.query("www.api.test.", "A").answer for rd in rr}


def wait_until(cond: Callable[[], bool], timeout: float) -> None:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "condition not met"
        time.sleep(0.05)


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[tuple[GslbProcess, dict[str, Target], Path]]:
    port = free_port(HOSTS)
    ts = {h: Target(h, port) for h in HOSTS}
    zdir = tmp_path / "zones"
    zdir.mkdir()
    members = ", ".join(f"{{address: {h}, name: lb{i + 1}}}" for i, h in enumerate(HOSTS[:2]))
    (zdir / "api.test.yaml").write_text(f"""zone: api.test.
nameservers: {{ns1.api.test.: [192.0.2.53]}}
checks:
  web: {{type: http, port: {port}, expect: {{body: ok}}, interval: 0.5s, timeout: 0.3s, fall: 2, rise: 2}}
pools:
  p:
    check: web
    members: [{members}, {{address: {HOSTS[2]}, name: fixed, status: down}}]
records:
  www: [{{types: [A], answer: {{select: all}}, rules: [{{pools: [p]}}]}}]
""")
    (tmp_path / "token").write_text(TOKEN + "\n")
    state = tmp_path / "state"
    srv = GslbProcess(
        zdir, tmp_path / "gslb.log", ["--api-token-file", str(tmp_path / "token")], state_dir=state
    )
    try:
        yield srv, ts, tmp_path
    finally:
        srv.stop()
        for t in ts.values():
            t.close()


def test_health_readiness_and_status(api_server: tuple[GslbProcess, dict[str, Target], Path]) -> None:
    srv, ts, _ = api_server
    assert http(srv, "GET", "/healthz") == (200, "ok\n")
    wait_until(lambda: http(srv, "GET", "/readyz")[0] == 200, 5)
    ts[HOSTS[1]].mode = "500"
    wait_until(lambda: answers(srv) == {HOSTS[0]}, 5)
    code, doc = http(srv, "GET", "/v1/status")
    assert code == 200
    assert doc["zones"][0]["zone"] == "api.test."
    by_name = {m["name"]: m for m in doc["members"]}
    assert by_name["lb1"]["in_rotation"] and by_name["lb1"]["check_state"] == "up"
    assert not by_name["lb2"]["in_rotation"] and by_name["lb2"]["check_state"] == "down"
    assert by_name["lb2"]["last_error"]["reason"] == "HTTP 500"
    assert by_name["fixed"]["status"] == "down" and not by_name["fixed"]["in_rotation"]


def test_readyz_waits_for_the_first_round(tmp_path: Path) -> None:
    port = free_port(HOSTS[:1])
    t = Target(HOSTS[0], port)
    t.mode = "hang"
    zdir = tmp_path / "zones"
    zdir.mkdir()
    (zdir / "r.test.yaml").write_text(f"""zone: r.test.
nameservers: {{ns1.r.test.: [192.0.2.53]}}
checks: {{web: {{type: http, port: {port}, interval: 5s, timeout: 2s}}}}
pools: {{p: {{check: web, members: [{{address: {HOSTS[0]}}}]}}}}
records: {{www: [{{types: [A], rules: [{{pools: [p]}}]}}]}}
""")
    srv = GslbProcess(zdir, tmp_path / "gslb.log")
    try:
        code, doc = http(srv, "GET", "/readyz")
        assert code == 503 and doc["why"] == ["first health round not complete"]
        wait_until(lambda: http(srv, "GET", "/readyz")[0] == 200, 6)  # the hung probe times out at 2 s
    finally:
        srv.stop()
        t.close()


def test_admin_needs_the_token(api_server: tuple[GslbProcess, dict[str, Target], Path]) -> None:
    srv, _, _ = api_server
    wait_until(lambda: answers(srv) == set(HOSTS[:2]), 5)
    for token in (None, "wrong", TOKEN + "x"):
        code, doc = http(srv, "POST", "/v1/members/api.test/p/lb1/drain", token=token)
        assert code == 401 and "token" in doc["error"]
    assert answers(srv) == set(HOSTS[:2])  # nothing changed
    assert "admin: refused POST /v1/members/api.test/p/lb1/drain" in srv.log()


def test_drain_expiry_force_and_clear(api_server: tuple[GslbProcess, dict[str, Target], Path]) -> None:
    srv, ts, _ = api_server
    wait_until(lambda: answers(srv) == set(HOSTS[:2]), 5)
    code, doc = http(srv, "POST", "/v1/members/api.test./p/lb1/drain", b'{"for": 1.5}', TOKEN)
    assert code == 200 and doc["changed"]
    assert answers(srv) == {HOSTS[1]}  # at once, no restart
    wait_until(lambda: answers(srv) == set(HOSTS[:2]), 4)  # the maintenance window ends by itself
    assert "admin: drain api.test./p/127.0.0.101" in srv.log() and "expired" in srv.log()
    # force up beats a failing check; a zone file's status: down beats force up
    ts[HOSTS[1]].stop()
    wait_until(lambda: answers(srv) == {HOSTS[0]}, 5)
    assert http(srv, "POST", "/v1/members/api.test/p/lb2/up", token=TOKEN)[0] == 200
    assert http(srv, "POST", f"/v1/members/api.test/p/{HOSTS[2]}/up", token=TOKEN)[0] == 200
    assert answers(srv) == set(HOSTS[:2])
    code, doc = http(srv, "POST", "/v1/members/api.test/p/lb2/clear", token=TOKEN)
    assert code == 200 and doc["changed"]
    assert answers(srv) == {HOSTS[0]}


def test_bad_admin_requests(api_server: tuple[GslbProcess, dict[str, Target], Path]) -> None:
    srv, _, _ = api_server
    wait_until(lambda: answers(srv) == set(HOSTS[:2]), 5)
    assert http(srv, "POST", "/v1/members/api.test/p/nobody/drain", token=TOKEN)[0] == 404
    assert http(srv, "POST", "/v1/members/api.test/nopool/lb1/drain", token=TOKEN)[0] == 404
    assert http(srv, "POST", "/v1/members/api.test/p/lb1/explode", token=TOKEN)[0] == 404
    assert http(srv, "POST", "/v1/members/api.test/p/lb1/drain", b"{not json", TOKEN)[0] == 400
    assert http(srv, "POST", "/v1/members/api.test/p/lb1/drain", b'{"for": "soon"}', TOKEN)[0] == 400
    assert http(srv, "POST", "/v1/members/api.test/p/lb1/drain", b'{"why": 1}', TOKEN)[0] == 400
    assert http(srv, "POST", "/v1/members/api.test/p/lb1/drain", b"x" * 10000, TOKEN)[0] == 413
    # none of these changed anything
    assert answers(srv) == set(HOSTS[:2])
    _, doc = http(srv, "GET", "/v1/status")
    assert all(m["override"] is None for m in doc["members"])


def test_overrides_survive_restart(api_server: tuple[GslbProcess, dict[str, Target], Path]) -> None:
    srv, _, tmp = api_server
    wait_until(lambda: answers(srv) == set(HOSTS[:2]), 5)
    assert http(srv, "POST", "/v1/members/api.test/p/lb2/down", token=TOKEN)[0] == 200
    srv.stop()
    again = GslbProcess(srv.zones_dir, tmp / "again.log", ["--api-token-file", str(tmp / "token")],
                        state_dir=tmp / "state")  # fmt: skip
    try:
        assert answers(again) == {HOSTS[0]}  # from the first query on
        doc = http(again, "GET", "/v1/status")[1]
        assert {m["name"]: m["override"] for m in doc["members"]}["lb2"]["action"] == "down"
    finally:
        again.stop()


def test_explain_endpoint(api_server: tuple[GslbProcess, dict[str, Target], Path]) -> None:
    srv, _, _ = api_server
    code, doc = http(srv, "GET", "/v1/explain?name=www.api.test&type=A&client=192.0.2.99")
    assert code == 200
    assert doc["balanced"]["rule"]["pools"] == ["p"]
    assert doc["balanced"]["worst_case_failover_s"] == 0.5 * 2 + 0.3 + 30
    assert http(srv, "GET", "/v1/explain")[0] == 400


def test_metrics_exposition(api_server: tuple[GslbProcess, dict[str, Target], Path]) -> None:
    srv, _, _ = api_server
    wait_until(lambda: http(srv, "GET", "/readyz")[0] == 200, 5)  # a probe round has run
    for _ in range(3):
        srv.query("nope.api.test.", "A")
    code, text = http(srv, "GET", "/metrics")
    assert code == 200
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("gslb_queries", "gslb_balanced_answers", "gslb_member_up", "gslb_zone_serial",
                 "gslb_zone_reloads", "gslb_health_probes", "gslb_health_probe_failures",
                 "gslb_health_transitions", "gslb_health_probe_duration_seconds", "gslb_tcp_connections",
                 "gslb_packets_dropped", "gslb_zone_last_good_load_timestamp_seconds",
                 "gslb_geoip_reload_errors", "gslb_state_write_errors", "gslb_rrl_responses"):  # fmt: skip
        assert name in fams, name
    # Prometheus conventions: counters are exposed as *_total, names are snake_case with the prefix
    for f in fams.values():
        assert f.name.startswith("gslb_") and f.name == f.name.lower()
        if f.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in f.samples), f.name
    nx = [s for s in fams["gslb_queries"].samples
          if s.labels.get("rcode") == "NXDOMAIN" and s.labels.get("zone") == "api.test."]  # fmt: skip
    assert nx and nx[0].value >= 3
    up = {s.labels["member"]: s.value for s in fams["gslb_member_up"].samples}
    assert up == {"lb1": 1.0, "lb2": 1.0, "fixed": 0.0}
    assert any(s.value > 0 for s in fams["gslb_health_probes"].samples)


def test_cli_status_and_drain(api_server: tuple[GslbProcess, dict[str, Target], Path]) -> None:
    srv, _, tmp = api_server
    wait_until(lambda: answers(srv) == set(HOSTS[:2]), 5)
    url = f"http://127.0.0.1:{srv.api_port}"

    def gslb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gslb", *args], capture_output=True, text=True, cwd=ROOT,
                              check=False, timeout=30)  # fmt: skip

    out = gslb("drain", "api.test", "p", "lb1", "--for", "10m", "--api-url", url,
               "--api-token-file", str(tmp / "token"))  # fmt: skip
    assert out.returncode == 0 and "api.test./p/127.0.0.101: drain" in out.stdout
    assert answers(srv) == {HOSTS[1]}
    out = gslb("status", "--api-url", url)
    assert out.returncode == 0
    line = next(ln for ln in out.stdout.splitlines() if "/lb1" in ln)
    assert " OUT " in line and "[drain until" in line
    out = gslb("clear", "api.test", "p", "lb1", "--api-url", url)  # no token: refused
    assert out.returncode != 0 and "HTTP 401" in out.stderr


def test_state_dir_failure_is_loud_and_harmless(
    api_server: tuple[GslbProcess, dict[str, Target], Path],
) -> None:
    import shutil

    srv, ts, tmp = api_server
    wait_until(lambda: http(srv, "GET", "/readyz")[0] == 200, 5)
    state = tmp / "state"
    shutil.rmtree(state, ignore_errors=True)
    state.write_text("not a directory")  # every write into the state directory now fails
    ts[HOSTS[1]].stop()  # a transition: the prober wants to persist it
    wait_until(lambda: answers(srv) == {HOSTS[0]}, 5)  # answers still follow health
    assert http(srv, "POST", "/v1/members/api.test/p/lb1/up", token=TOKEN)[0] == 200  # overrides too
    srv.wait_log(r"cannot persist health state to", 3)
    srv.wait_log(r"cannot persist overrides to", 3)
    text = http(srv, "GET", "/metrics")[1]
    fams = {f.name: f for f in text_string_to_metric_families(text)}
    errors = {s.labels["file"]: s.value for s in fams["gslb_state_write_errors"].samples}
    assert errors["health.json"] >= 1 and errors["overrides.json"] >= 1


def test_refusals_logged_by_the_admin_logger(api_server: tuple[GslbProcess, dict[str, Target], Path]) -> None:
    srv, _, _ = api_server
    assert http(srv, "POST", "/v1/members/api.test/p/lb1/drain", token="wrong")[0] == 401
    srv.wait_log(
        r"WARNING gslb\.admin: admin: refused POST /v1/members/api\.test/p/lb1/drain from 127\.0\.0\.1", 3
    )


def test_every_worker_entry_says_alive(api_server: tuple[GslbProcess, dict[str, Target], Path]) -> None:
    srv, _, _ = api_server
    workers = http(srv, "GET", "/v1/status")[1]["workers"]
    assert workers == [{"worker": 0, "pid": srv.proc.pid, "alive": True, "queries": workers[0]["queries"]}]


def test_a_drained_member_is_drained_everywhere(
    api_server: tuple[GslbProcess, dict[str, Target], Path],
) -> None:
    """Answering, /v1/explain, /v1/status and the offline `gslb explain` read one state."""
    srv, _, tmp = api_server
    wait_until(lambda: answers(srv) == set(HOSTS[:2]), 5)
    assert http(srv, "POST", "/v1/members/api.test/p/lb1/drain", token=TOKEN)[0] == 200
    assert answers(srv) == {HOSTS[1]}
    doc = http(srv, "GET", "/v1/explain?name=www.api.test&client=192.0.2.99")[1]
    states = {m["name"]: m["state"] for m in doc["balanced"]["members"]}
    assert states == {
        "lb1": "drained (override: drain)",
        "lb2": "up (health check)",
        "fixed": "down (status: down in the zone file)",
    }
    status = {m["name"]: m for m in http(srv, "GET", "/v1/status")[1]["members"]}
    assert (status["lb1"]["state"], status["lb1"]["why"], status["lb1"]["in_rotation"]) == (
        "drained", "override: drain", False,
    )  # fmt: skip
    out = subprocess.run(
        [sys.executable, "-m", "gslb", "explain", "www.api.test", "--client", "10.1.2.3",
         "--zones", str(srv.zones_dir), "--state-dir", str(tmp / "state")],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "www.api.test. A for a client at 10.1.2.3"
    assert "    member p/lb1 127.0.0.101 weight 1: drained (override: drain)" in lines
    assert "  answer    www.api.test. 30 IN A 127.0.0.102" in lines


def test_api_answers_promptly_while_the_prober_is_stalled(tmp_path: Path) -> None:
    import os
    import signal

    port = free_port(HOSTS[:1])
    t = Target(HOSTS[0], port)
    zdir = tmp_path / "zones"
    zdir.mkdir()
    (zdir / "s.test.yaml").write_text(f"""zone: s.test.
nameservers: {{ns1.s.test.: [192.0.2.53]}}
checks: {{web: {{type: http, port: {port}, interval: 0.5s, timeout: 0.3s}}}}
pools: {{p: {{check: web, members: [{{address: {HOSTS[0]}, name: lb1}}]}}}}
records: {{www: [{{types: [A], rules: [{{pools: [p]}}]}}]}}
""")
    srv = GslbProcess(zdir, tmp_path / "gslb.log", ["--stall-after", "1.5"])
    pid = 0
    try:
        srv.wait_log(r"first probe round complete", 10)
        assert http(srv, "GET", "/v1/status")[1]["members"][0]["check_state"] == "up"
        http(srv, "GET", "/metrics")
        pid = int(re.findall(r"health prober running as pid (\d+)", srv.log())[-1])
        os.kill(pid, signal.SIGSTOP)
        for when in ("before the stall is noticed", "once it is reported"):
            if when == "once it is reported":
                srv.wait_log(r"health prober stalled", 5)
            for path in ("/v1/status", "/metrics"):
                t0 = time.monotonic()
                code, doc = http(srv, "GET", path)
                took = time.monotonic() - t0
                assert code == 200 and took < 1.0, f"{path} {when}: {took:.2f}s"
        doc = http(srv, "GET", "/v1/status")[1]
        assert doc["prober"]["stalled"] is True and doc["prober"]["status_age"] > 0
        assert doc["members"][0]["check_state"] == "up"  # the last known, not nothing
        fams = {f.name: f for f in text_string_to_metric_families(http(srv, "GET", "/metrics")[1])}
        assert fams["gslb_health_prober_stalled"].samples[0].value == 1
        assert fams["gslb_health_prober_stats_age_seconds"].samples[0].value > 0
        assert "gslb_health_probes" in fams  # the last counters it gave
    finally:
        if pid:
            os.kill(pid, signal.SIGCONT)
        srv.stop()
        t.close()
