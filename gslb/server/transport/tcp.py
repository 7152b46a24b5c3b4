"""DNS over TCP (RFC 7766): length-prefixed messages, pipelining, limits.

Several queries may arrive on one connection, in one write or split anywhere
(even inside the 2-octet length). Each is answered in order. A connection is
closed ``idle_timeout`` after it opened or after its last complete query,
however many bytes of an unfinished one trickle in meanwhile; at most
``max_connections`` are open at once (new ones beyond that are closed at
accept); a client that stops reading its answers has its reads paused, and is
aborted at the timeout. Memory per connection is bounded by one message
(65,535 octets plus the 2-octet length) plus one read.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import cast

from gslb.dns.wire import question_end
from gslb.secondaries.xfr import Transfers
from gslb.server.metrics import log_query
from gslb.server.transport import StateHolder, answer

log = logging.getLogger("gslb.tcp")

IDLE_TIMEOUT = 10.0
MAX_CONNECTIONS = 512


def _is_xfr(msg: bytes) -> bool:
    """Whether the query's type is AXFR or IXFR (a look at two octets; parsed later)."""
    e = question_end(msg)
    return len(msg) > e + 2 and msg[e + 1] == 0 and msg[e + 2] in (251, 252)


class TcpLimits:
    def __init__(
        self,
        idle_timeout: float = IDLE_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
        transfers: Transfers | None = None,
    ) -> None:
        self.transfers = transfers  # AXFR and IXFR: keys, rules, journal (None: all refused)
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.open = 0
        self.seen = 0  # queries, for the sampled query log


class TcpProtocol(asyncio.Protocol):
    def __init__(self, holder: StateHolder, limits: TcpLimits) -> None:
        self.holder = holder
        self.limits = limits
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.timer: asyncio.TimerHandle | None = None
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        if self.limits.open >= self.limits.max_connections:
            self.holder.stats.tcp_refused += 1
            transport.abort()
            return
        self.holder.stats.tcp_accepted += 1
        self.limits.open += 1
        self.counted = True
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else ""
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=64 * 1024)
        self._arm()

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(self.limits.idle_timeout, self._idle)

    def _idle(self) -> None:
        t = self.transport
        if t is None:
            return
        if t.get_write_buffer_size() > 0:
            t.abort()  # a client that does not read its answers: do not wait to flush them
        else:
            t.close()

    def data_received(self, data: bytes) -> None:
        # The idle timer restarts only when a whole message has arrived: a client
        # trickling bytes (slow loris) is closed idle_timeout after its last query.
        self.buf += data
        buf = self.buf
        holder = self.holder
        out = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            n = (buf[pos] << 8) | buf[pos + 1]
            if n == 0:
                self._abort()
                return
            if end - pos < 2 + n:
                break
            msg = bytes(buf[pos + 2 : pos + 2 + n])
            pos += 2 + n
            xfr = self.limits.transfers
            if xfr is not None and _is_xfr(msg):
                messages = xfr.answer(msg, self.peer, holder.state)
                if messages is not None:
                    out += [len(m).to_bytes(2, "big") + m for m in messages]
                    continue
            try:
                res = answer(holder, msg, self.peer, False)
            except Exception:
                log.exception("internal error answering a TCP query from %s", self.peer)
                res = None
            if res is None:
                holder.stats.dropped["not_a_query"] += 1
                continue
            reply, skey = res.reply, res.skey
            holder.stats.queries[skey] += 1
            if holder.query_log_every:
                self.limits.seen += 1
                if self.limits.seen % holder.query_log_every == 0:
                    log_query(self.peer, "tcp", reply)
            out.append(len(reply).to_bytes(2, "big") + reply)
        if pos:
            del buf[:pos]
            self._arm()
        if out and self.transport is not None:
            self.transport.write(b"".join(out))

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def pause_writing(self) -> None:
        # the client is not reading its answers: stop reading its queries
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        return False  # close once our writes are flushed

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.counted:
            self.limits.open -= 1
            self.counted = False
        self.buf.clear()


async def serve_tcp(
    holder: StateHolder, host: str, port: int, limits: TcpLimits, reuse_port: bool = False
) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # --workers: every worker process listens on the same port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return await loop.create_server(lambda: TcpProtocol(holder, limits), sock=sock)
