"""A TCP forwarder on loopback that a test can cut and restore: one gslb node's path
to its etcd member, so that a test decides when each node loses and regains the
store (and in which order the nodes come back), whatever etcd itself does.

Cut: the listening socket closes and open connections are reset, so the node's
requests fail at once (connection refused), as when the store's host is gone.
Freeze: connections stay open and new ones are accepted, but nothing is
forwarded (a SIGSTOPped or partitioned store: requests hang until they time out).
Restore: it listens again on the same port, and forwards again.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading


class Proxy:
    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.host, self.target_port = host, target_port
        with socket.socket() as s:
            s.bind((host, 0))
            self.port = s.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.server: asyncio.base_events.Server | None = None
        self.conns: set[asyncio.StreamWriter] = set()
        self.flowing = asyncio.Event()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.restore()

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def _call(self, coro: object) -> None:
        asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await r.read(65536):
                await self.flowing.wait()
                w.write(data)
                await w.drain()
        with contextlib.suppress(OSError):
            w.close()

    async def _handle(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self.conns.add(cw)
        await self.flowing.wait()
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            cw.transport.abort()
            return
        self.conns.update((cw, uw))
        try:
            await asyncio.gather(self._pipe(cr, uw), self._pipe(ur, cw))
        finally:
            self.conns.difference_update((cw, uw))

    async def _restore(self) -> None:
        self.flowing.set()
        if self.server is None:
            self.server = await asyncio.start_server(self._handle, self.host, self.port, reuse_address=True)

    async def _cut(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for w in list(self.conns):
            w.transport.abort()
        self.conns.clear()

    def restore(self) -> None:
        self._call(self._restore())

    def cut(self) -> None:
        self._call(self._cut())

    async def _freeze(self) -> None:
        self.flowing.clear()

    def freeze(self) -> None:
        self._call(self._freeze())

    def close(self) -> None:
        self.cut()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()
