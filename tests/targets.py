"""Real health-check targets for tests: HTTP, HTTPS and TCP servers on loopback
addresses (or inside a test's network namespace), whose behaviour a test can
switch while they run:

  ok         answer 200 with the body "ok"
  500        answer 500
  wrongbody  answer 200 with another body
  hang       accept the connection and never answer
  slow       answer 200 "ok" after 0.25 s
  stopped    not listening at all (connections are refused)

Each target runs its own asyncio loop in a thread. ``python -m tests.targets
http ADDR PORT`` runs one in the foreground (used inside network namespaces).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import ssl
import sys
import threading
import warnings
from typing import Literal

from gslb.server.demo import free_port

__all__ = ["Target", "free_port"]

Mode = Literal["ok", "500", "wrongbody", "hang", "slow"]


class Target:
    def __init__(
        self,
        host: str,
        port: int = 0,
        kind: Literal["http", "tcp"] = "http",
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.kind = kind
        self.tls = tls
        self.mode: Mode = "ok"
        self.requests = 0
        self.max_open = 0  # most connections open at once
        self.extra_headers: dict[str, str] = {}  # e.g. {"X-Load": "0.5"} for least_loaded
        self.body: bytes | None = None  # replaces "ok" when set
        self.delay = 0.0  # seconds every answer waits (a slower network path or server)
        # and per client address instead (a prober's --probe-source: its own network path)
        self.delay_from: dict[str, float] = {}
        self.last_path = ""  # the path of the last request
        self.last_host = ""  # its Host header
        self.interim = b""  # sent before the response, e.g. b"HTTP/1.1 103 Early Hints\r\n\r\n"
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.base_events.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.start()

    def _call(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        self.max_open = max(self.max_open, len(self.writers))
        try:
            if self.kind == "tcp":
                if self.mode == "hang":
                    await self._until_client_closes(reader)
                return
            head = b""
            with contextlib.suppress(asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                head = await reader.readuntil(b"\r\n\r\n")
            self.requests += 1
            self.last_path = head.split(b" ", 2)[1].decode("latin-1") if head.count(b" ") >= 2 else ""
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"host":
                    self.last_host = value.strip().decode("latin-1")
            mode = self.mode
            if mode == "hang":
                await self._until_client_closes(reader)
                return
            if mode == "slow":
                await asyncio.sleep(0.25)
                mode = "ok"
            peer = writer.get_extra_info("peername")
            delay = self.delay_from.get(peer[0], self.delay) if peer else self.delay
            if delay:
                await asyncio.sleep(delay)
            status, body = {"ok": (200, b"ok"), "500": (500, b"error"), "wrongbody": (200, b"nope")}[mode]
            if mode == "ok" and self.body is not None:
                body = self.body
            reason = "OK" if status == 200 else "Internal Server Error"
            extra = "".join(f"{k}: {v}\r\n" for k, v in self.extra_headers.items())
            if self.interim:
                writer.write(self.interim)
                await writer.drain()
                await asyncio.sleep(0.01)  # its own segment, as a real server sends it
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n{extra}"
                f"Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.writers.discard(writer)
            writer.close()

    @staticmethod
    async def _until_client_closes(reader: asyncio.StreamReader) -> None:
        """Never answer; return when the client gives up and closes."""
        while await reader.read(65536):
            pass

    async def _start(self) -> None:
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(fam, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self.port = sock.getsockname()[1]
        sock.listen(128)
        self.server = await asyncio.start_server(self._handle, sock=sock, ssl=self.tls)

    async def _stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self.writers):
                w.transport.abort()
            await self.server.wait_closed()
            self.server = None

    def start(self) -> None:
        """Listen (again, on the same port)."""
        self._call(self._start())

    def stop(self) -> None:
        """Stop listening and drop open connections: new connections are refused."""
        self._call(self._stop())
        # a connection accepted in the moment the server closed has no handler to close
        # it (see close()): finalize it here, not in whatever test code runs next
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()

    def close(self) -> None:
        self.stop()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
        # TLS connections still in their handshake when the server stopped are not
        # reachable for closing on Python 3.11 (asyncio.Server.close_clients is 3.13);
        # finalize them here, where their ResourceWarning is expected, not later in
        # an unrelated test. This concerns the test target only, not gslb.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ResourceWarning)
            gc.collect()


if __name__ == "__main__":  # pragma: no cover - used inside network namespaces
    kind, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    t = Target(addr, port, "tcp" if kind == "tcp" else "http")
    sys.stdout.write(f"listening {addr}:{t.port}\n")
    sys.stdout.flush()
    threading.Event().wait()
