"""DNS over UDP: one datagram in, at most one datagram out."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from typing import Any, cast

from gslb.engine import answer
from gslb.metrics import log_query
from gslb.rrl import truncated
from gslb.transport import StateHolder

log = logging.getLogger("gslb.udp")


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, holder: StateHolder) -> None:
        self.holder = holder
        self.transport: asyncio.DatagramTransport | None = None
        self.errors = 0
        self.seen = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        holder = self.holder
        try:
            reply = answer(data, holder.state, addr[0], True, holder.rng)
        except Exception:  # one bad packet must not stop the server
            self.errors += 1
            holder.stats.dropped["internal_error"] += 1
            if self.errors <= 10:
                log.exception("internal error answering a UDP query from %s", addr[0])
            return
        if reply is None:
            holder.stats.dropped["not_a_query"] += 1  # shorter than a header, or QR set
            return
        rrl = holder.rrl
        if rrl is not None:
            action = rrl.check(addr[0], reply, time.monotonic())
            if action == "drop":
                holder.stats.rrl["dropped"] += 1
                return
            if action == "slip":
                holder.stats.rrl["slipped"] += 1
                reply = truncated(reply)
        holder.stats.observe(reply, True)
        if holder.query_log_every:
            self.seen += 1
            if self.seen % holder.query_log_every == 0:
                log_query(addr[0], "udp", reply)
        if self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier replies (client gone): nothing to do
        log.debug("UDP error: %s", exc)


async def serve_udp(holder: StateHolder, host: str, port: int) -> tuple[asyncio.DatagramTransport, int]:
    """Bind a UDP socket and serve on it; returns the transport and the bound port."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    transport, _ = await loop.create_datagram_endpoint(lambda: UdpProtocol(holder), sock=sock)
    return transport, sock.getsockname()[1]
