"""Alert webhooks against a real local HTTP receiver: a member that goes down and
comes back is told once each, signed; a receiver that is down gets the queued events
when it comes back; a receiver that hangs does not delay DNS answers; a rejected
zone file is told with its position; filters keep out what a receiver did not ask for."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import pytest

from tests.conftest import GslbProcess
from tests.targets import Target, free_port
from tests.test_health import HTTP_HOSTS, answers, wait_until, zone

SECRET = b"an alert secret"


class Receiver:
    """An HTTP server on 127.0.0.1 that records the POSTs it gets. ``mode``: ok (204),
    hang (never answers), 500."""

    def __init__(self, port: int = 0) -> None:
        self.events: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.bodies: list[bytes] = []
        self.mode = "ok"
        self.release = threading.Event()
        rec = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if rec.mode == "hang":
                    rec.release.wait(30)
                    return
                if rec.mode == "500":
                    self.send_response(500)
                    self.end_headers()
                    return
                rec.bodies.append(body)
                rec.headers.append(dict(self.headers))
                rec.events.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["event"] == kind]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _server(tmp_path: Path, hooks: str, target_port: int, extra: list[str] | None = None) -> GslbProcess:
    zdir = tmp_path / "zones"
    zdir.mkdir(exist_ok=True)
    (zdir / "h.test.yaml").write_text(zone(target_port, HTTP_HOSTS[:2]))
    (tmp_path / "secret").write_bytes(SECRET + b"\n")
    conf = tmp_path / "gslb.yaml"
    conf.write_text(f"alerts:\n{hooks}")
    return GslbProcess(zdir, tmp_path / "gslb.log", ["--config", str(conf), "--node", "n1", *(extra or [])])


def test_member_down_and_up_arrive_once_each_signed(tmp_path: Path, receiver: Receiver) -> None:
    port = free_port(HTTP_HOSTS[:2])
    targets = [Target(h, port) for h in HTTP_HOSTS[:2]]
    srv = _server(tmp_path, f"  - url: http://127.0.0.1:{receiver.port}/hook\n"
                            f"    secret_file: {tmp_path / 'secret'}\n", port)  # fmt: skip
    try:
        wait_until(lambda: answers(srv, "www.h.test.") == set(HTTP_HOSTS[:2]), 5, "both up")
        targets[1].stop()
        wait_until(lambda: bool(receiver.of("member_down")), 10, "member_down delivered")
        targets[1].start()
        wait_until(lambda: bool(receiver.of("member_up")), 10, "member_up delivered")
        time.sleep(1.0)  # nothing more comes for the same change
        down, up = receiver.of("member_down"), receiver.of("member_up")
        assert len(down) == 1 and len(up) == 1, receiver.events
        e = down[0]
        assert (e["zone"], e["pool"], e["address"], e["node"]) == ("h.test.", "p", HTTP_HOSTS[1], "n1")
        assert "connection refused" in e["reason"] and HTTP_HOSTS[1] in e["text"] and "DOWN" in e["text"]
        assert up[0]["address"] == HTTP_HOSTS[1] and "UP" in up[0]["text"]
        for body, headers in zip(receiver.bodies, receiver.headers, strict=True):
            want = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
            assert headers["X-Gslb-Signature"] == want
            assert headers["X-Gslb-Event"] == json.loads(body)["event"]
        assert len({e["id"] for e in receiver.events}) == len(receiver.events)
    finally:
        srv.stop()
        for t in targets:
            t.close()
    assert "Traceback" not in srv.log()


def test_a_receiver_that_was_down_gets_the_queued_events(tmp_path: Path) -> None:
    port = free_port(HTTP_HOSTS[:2])
    targets = [Target(h, port) for h in HTTP_HOSTS[:2]]
    rport = free_port(["127.0.0.1"])  # nobody listens there yet
    srv = _server(tmp_path, f"  - url: http://127.0.0.1:{rport}/hook\n", port)
    receiver = None
    try:
        wait_until(lambda: answers(srv, "www.h.test.") == set(HTTP_HOSTS[:2]), 5, "both up")
        targets[0].stop()
        wait_until(lambda: HTTP_HOSTS[0] not in answers(srv, "www.h.test."), 10, "member out")
        targets[0].start()
        wait_until(lambda: HTTP_HOSTS[0] in answers(srv, "www.h.test."), 10, "member back")
        srv.wait_log(r"alert webhook .*retrying", 10)
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.api_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        assert "gslb_alert_delivery_failures_total" in text
        receiver = Receiver(rport)  # the receiver comes back: the queue drains in order
        wait_until(lambda: len(receiver.events) >= 2, 20, "queued events delivered")
        assert [e["event"] for e in receiver.events] == ["member_down", "member_up"]
    finally:
        srv.stop()
        for t in targets:
            t.close()
        if receiver is not None:
            receiver.close()
    assert "Traceback" not in srv.log()


def test_a_hanging_receiver_does_not_delay_answers(tmp_path: Path, receiver: Receiver) -> None:
    port = free_port(HTTP_HOSTS[:2])
    targets = [Target(h, port) for h in HTTP_HOSTS[:2]]
    receiver.mode = "hang"
    srv = _server(tmp_path, f"  - url: http://127.0.0.1:{receiver.port}/hook\n", port)
    try:
        wait_until(lambda: answers(srv, "www.h.test.") == set(HTTP_HOSTS[:2]), 5, "both up")
        targets[1].stop()  # an event, whose post now hangs
        wait_until(lambda: HTTP_HOSTS[1] not in answers(srv, "www.h.test."), 10, "member out")
        worst = 0.0
        for _ in range(200):
            t0 = time.monotonic()
            r = dns.query.udp(dns.message.make_query("www.h.test.", "A"), srv.host, port=srv.port, timeout=2)
            worst = max(worst, time.monotonic() - t0)
            assert r.answer
        assert worst < 0.25, f"slowest answer {worst * 1000:.0f} ms while the webhook hangs"
    finally:
        srv.stop()
        for t in targets:
            t.close()
    assert "Traceback" not in srv.log()


def test_filters_and_a_rejected_zone_file(tmp_path: Path, receiver: Receiver) -> None:
    """One receiver wants zone_rejected only, another member events of zone other.test.
    only: the broken zone file reaches the first with its position, nothing the
    second."""
    other = Receiver()
    port = free_port(HTTP_HOSTS[:2])
    targets = [Target(h, port) for h in HTTP_HOSTS[:2]]
    srv = _server(tmp_path, f"  - url: http://127.0.0.1:{receiver.port}/a\n"
                            "    events: [zone_rejected]\n"
                            f"  - url: http://127.0.0.1:{other.port}/b\n"
                            "    zones: [other.test.]\n", port, ["--watch-interval", "0.2"])  # fmt: skip
    try:
        wait_until(lambda: answers(srv, "www.h.test.") == set(HTTP_HOSTS[:2]), 5, "both up")
        targets[1].stop()
        wait_until(lambda: HTTP_HOSTS[1] not in answers(srv, "www.h.test."), 10, "member out")
        (tmp_path / "zones" / "h.test.yaml").write_text("zone: h.test.\nrecords: [\n")
        wait_until(lambda: bool(receiver.of("zone_rejected")), 10, "zone_rejected delivered")
        e = receiver.of("zone_rejected")[0]
        assert "h.test.yaml:" in e["text"] and e["file"].endswith("h.test.yaml")
        time.sleep(1.0)
        assert [x["event"] for x in receiver.events] == ["zone_rejected"]
        assert other.events == []
        assert answers(srv, "www.h.test.") == {HTTP_HOSTS[0]}  # the last good zone keeps serving
    finally:
        srv.stop()
        other.close()
        for t in targets:
            t.close()
    assert "Traceback" not in srv.log()


def test_a_bad_alerts_block_is_a_positioned_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    conf = tmp_path / "gslb.yaml"
    conf.write_text("alerts:\n  - url: ftp://x\n  - {url: 'http://127.0.0.1:1/', events: [member_gone]}\n")
    cmd = [sys.executable, "-m", "gslb", "serve", "--config", str(conf), "--zones", str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{conf}:2:" in r.stderr and "http" in r.stderr
    assert f"{conf}:3:" in r.stderr and "member_gone" in r.stderr


def test_overrides_set_cleared_and_expired(tmp_path: Path, receiver: Receiver) -> None:
    from tests.test_api import http

    port = free_port(HTTP_HOSTS[:2])
    targets = [Target(h, port) for h in HTTP_HOSTS[:2]]
    (tmp_path / "token").write_text("t0ken\n")
    srv = _server(tmp_path, f"  - url: http://127.0.0.1:{receiver.port}/hook\n", port,
                  ["--api-token-file", str(tmp_path / "token")])  # fmt: skip
    try:
        wait_until(lambda: answers(srv, "www.h.test.") == set(HTTP_HOSTS[:2]), 5, "both up")
        a, b = (f"/v1/members/h.test/p/{h}" for h in HTTP_HOSTS[:2])
        assert http(srv, "POST", f"{a}/drain", b'{"for": 1.5}', "t0ken")[0] == 200
        assert http(srv, "POST", f"{b}/down", None, "t0ken")[0] == 200
        assert http(srv, "POST", f"{b}/clear", None, "t0ken")[0] == 200
        wait_until(lambda: bool(receiver.of("override_expired")), 10, "override_expired delivered")
        time.sleep(0.5)
        got = [(e["event"], e["address"], e["action"]) for e in receiver.events]
        assert got == [
            ("override_set", HTTP_HOSTS[0], "drain"),
            ("override_set", HTTP_HOSTS[1], "down"),
            ("override_cleared", HTTP_HOSTS[1], "down"),
            ("override_expired", HTTP_HOSTS[0], "drain"),
        ], receiver.events
        assert not receiver.of("member_down")  # an override is not a health change
    finally:
        srv.stop()
        for t in targets:
            t.close()
    assert "Traceback" not in srv.log()


def test_prober_stalled_and_recovered(tmp_path: Path, receiver: Receiver) -> None:
    import os
    import signal

    from tests.test_health import prober_pid

    port = free_port(HTTP_HOSTS[:2])
    targets = [Target(h, port) for h in HTTP_HOSTS[:2]]
    srv = _server(tmp_path, f"  - url: http://127.0.0.1:{receiver.port}/hook\n", port, ["--stall-after", "1"])
    try:
        wait_until(lambda: answers(srv, "www.h.test.") == set(HTTP_HOSTS[:2]), 5, "both up")
        pid = prober_pid(srv)
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_until(lambda: bool(receiver.of("prober_stalled")), 10, "prober_stalled delivered")
            assert answers(srv, "www.h.test.") == set(HTTP_HOSTS[:2])  # answers go on meanwhile
        finally:
            os.kill(pid, signal.SIGCONT)
        wait_until(lambda: bool(receiver.of("prober_recovered")), 10, "prober_recovered delivered")
        assert "no progress for" in receiver.of("prober_stalled")[0]["text"]
        assert [e["event"] for e in receiver.events] == ["prober_stalled", "prober_recovered"]
    finally:
        srv.stop()
        for t in targets:
            t.close()
    assert "Traceback" not in srv.log()
