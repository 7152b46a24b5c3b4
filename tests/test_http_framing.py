"""The HTTP probe client reads every legal HTTP/1.1 framing a health endpoint may use.

Each case is a real TCP server on loopback sending exact bytes (what a load
balancer's health endpoint sends), probed by the real check function, and then
the same through the real server: a backend that sends ``103 Early Hints``
before ``200 OK`` stays in the answers.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from gslb.health.checks import Target as ProbeTarget
from gslb.health.checks.http import HttpClient, check
from gslb.zones.model import Check, StatusRange
from tests.conftest import GslbProcess
from tests.targets import Target

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

# (case, bytes the server sends, check settings, expected (ok, reason), expected load)
CASES: list[tuple[str, bytes, dict[str, object], tuple[bool, str], float | None]] = [
    (
        "103 Early Hints first",
        b"HTTP/1.1 103 Early Hints\r\n"
        b"Link: </s.css>; rel=preload\r\n"
        b"\r\n"
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Length: 2\r\n"
        b"\r\n"
        b"ok",
        {"expect_body": "ok"},
        (True, "HTTP 200"),
        None,
    ),
    (
        "100 Continue first",
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        {"expect_body": "ok"},
        (True, "HTTP 200"),
        None,
    ),
    (
        "several interim responses",
        b"HTTP/1.1 100 Continue\r\n"
        b"\r\n"
        b"HTTP/1.1 102 Processing\r\n"
        b"\r\n"
        b"HTTP/1.1 103 Early Hints\r\n"
        b"Link: </a>\r\n"
        b"\r\n"
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Length: 2\r\n"
        b"\r\n"
        b"ok",
        {"expect_body": "ok"},
        (True, "HTTP 200"),
        None,
    ),
    (
        "interim then a failure",
        b"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n",
        {},
        (False, "HTTP 503"),
        None,
    ),
    (
        "chunked, extensions and trailers",
        b"HTTP/1.1 200 OK\r\n"
        b"Transfer-Encoding: chunked\r\n"
        b"\r\n"
        b"3;name=value\r\n"
        b'{"l\r\n'
        b"a;x\r\n"
        b'oad": 0.4}\r\n'
        b"0\r\n"
        b"X-Trailer: t\r\n"
        b"X-Other: u\r\n"
        b"\r\n",
        {"load_json": "load"},
        (True, "HTTP 200"),
        0.4,
    ),
    (
        "chunked wins over Content-Length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
        {"expect_body": "ok"},
        (True, "HTTP 200"),
        None,
    ),
    (
        "close-delimited body",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall ok here",
        {"expect_body": "ok"},
        (True, "HTTP 200"),
        None,
    ),
    (
        "HTTP/1.0 close-delimited",
        b"HTTP/1.0 200 OK\r\n\r\nok",
        {"expect_body": "ok"},
        (True, "HTTP 200"),
        None,
    ),
    (
        "HEAD: Content-Length but no body",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\nX-Load: 7\r\n\r\n",
        {"method": "HEAD", "load_header": "X-Load"},
        (True, "HTTP 200"),
        7.0,
    ),
    (
        "204 No Content, connection kept open",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
        {"expect_status": (StatusRange(204, 204),), "expect_body_regex": "^$"},
        (True, "HTTP 204"),
        None,
    ),
    (
        "304 Not Modified, connection kept open",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        {"expect_status": (StatusRange(304, 304),), "expect_body_regex": "^$"},
        (True, "HTTP 304"),
        None,
    ),
    (
        "folded header",
        b"HTTP/1.1 200 OK\r\nX-Load:\r\n  0.25\r\nContent-Length: 0\r\n\r\n",
        {"load_header": "X-Load"},
        (True, "HTTP 200"),
        0.25,
    ),
    (
        "header without a space, mixed case",
        b"HTTP/1.1 200 OK\r\ncontent-LENGTH:2\r\n\r\nok",
        {"expect_body": "ok"},
        (True, "HTTP 200"),
        None,
    ),
    (
        "bare LF line ends",
        b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
        {"expect_body": "ok"},
        (True, "HTTP 200"),
        None,
    ),
    (
        "body check fails",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno",
        {"expect_body": "ok"},
        (False, "HTTP 200, body does not contain 'ok'"),
        None,
    ),
    (
        "endless interim responses",
        b"HTTP/1.1 103 Early Hints\r\n\r\n" * 40,
        {},
        (False, "bad HTTP response: more than 16 interim (1xx) responses"),
        None,
    ),
    (
        "conflicting Content-Length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
        {"expect_body": "ok"},
        (False, "bad HTTP response: bad Content-Length: '2, 3'"),
        None,
    ),
    (
        "folded line first",
        b"HTTP/1.1 200 OK\r\n folded\r\n\r\n",
        {},
        (False, "bad HTTP response: folded header line without a field before it"),
        None,
    ),
    (
        "headers too large",
        b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * 40000 + b"\r\n\r\n",
        {},
        (False, "bad HTTP response: response headers larger than 32 KiB"),
        None,
    ),
    (
        "not HTTP",
        b"SSH-2.0-OpenSSH_9.2\r\n",
        {},
        (False, "bad HTTP response: not an HTTP response: b'SSH-2.0-OpenSSH_9.2\\r\\n'"),
        None,
    ),
    (
        "truncated chunked body",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nok",
        {"expect_body": "ok"},
        (False, "server closed the connection"),
        None,
    ),
]


class RawServer:
    """Sends ``reply`` to every connection after the request, then keeps it open for
    ``hold`` seconds (a server that ignores ``Connection: close``) before closing."""

    def __init__(self, reply: bytes, hold: float) -> None:
        self.reply, self.hold = reply, hold
        self.server: asyncio.Server | None = None
        self.port = 0
        self.handlers: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> RawServer:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self.handlers.add(task)
            try:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(self.reply)
                await writer.drain()
                await asyncio.sleep(self.hold)
            except (OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
                pass
            finally:
                writer.close()
                self.handlers.discard(task)

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.handlers):
            task.cancel()
        await asyncio.sleep(0)


@pytest.mark.parametrize(("case", "reply", "settings", "want", "load"), CASES, ids=[c[0] for c in CASES])
def test_probe_reads_the_framing(
    case: str, reply: bytes, settings: dict[str, object], want: tuple[bool, str], load: float | None
) -> None:
    # these end only when the server closes, by definition: it closes right away
    ends_at_close = case in ("close-delimited body", "HTTP/1.0 close-delimited", "truncated chunked body")

    async def run() -> tuple[tuple[bool, str, float | None], float]:
        # the server keeps the connection open for 5 s: a client that waits for a body
        # that does not come takes that long, one that knows the framing does not
        async with RawServer(reply, hold=0.0 if ends_at_close else 5.0) as srv:
            c = Check(name="web", type="http", port=srv.port, interval=10, timeout=5, **settings)  # type: ignore[arg-type]
            t0 = time.monotonic()
            got = await check(HttpClient(), ProbeTarget(c, "127.0.0.1", srv.port))
            return got, time.monotonic() - t0

    (ok, reason, got_load), took = asyncio.run(run())
    assert (ok, reason) == want
    assert got_load == load
    if not ends_at_close:
        assert took < 2.0, f"{case}: the probe waited {took:.1f}s for data the framing says is not coming"


def test_early_hints_backend_stays_in_the_answers(tmp_path: Path) -> None:
    backend = Target("127.0.0.1")
    backend.interim = b"HTTP/1.1 103 Early Hints\r\nLink: </app.js>; rel=preload\r\n\r\n"
    port = backend.port
    zdir = tmp_path / "zones"
    zdir.mkdir()
    (zdir / "e.test.yaml").write_text(f"""zone: e.test.
nameservers: {{ns1.e.test.: [192.0.2.53]}}
checks:
  web: {{type: http, port: {port}, path: /healthz, expect: {{body: ok}}, interval: 0.3s, timeout: 0.2s,
         fall: 1, rise: 1}}
pools:
  p: {{check: web, members: [{{address: 127.0.0.1}}]}}
records:
  www: [{{types: [A], answer: {{select: all}}, rules: [{{pools: [p]}}], when_all_down: nodata}}]
""")
    srv = GslbProcess(zdir, tmp_path / "gslb.log")
    try:
        srv.wait_log(r"first probe round complete", 10)
        for _ in range(5):  # fall is 1: one misread 103 would have taken it out
            time.sleep(0.3)
            got = {rd.to_text() for rr in srv.query("www.e.test.", "A").answer for rd in rr}
            assert got == {"127.0.0.1"}, srv.log()
        assert "DOWN" not in srv.log()
    finally:
        srv.stop()
        backend.close()
