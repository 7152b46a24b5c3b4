"""DNS over UDP: one datagram in, at most one datagram out.

Two ways to move the datagrams, the same answers either way:

* ``mmsg`` (Linux, the default there): the socket is registered with the event
  loop's reader, and each time it is readable up to :data:`BATCH` datagrams are
  taken with one ``recvmmsg(2)`` and their replies sent with one
  ``sendmmsg(2)``, called through ctypes over buffers allocated once. Under load
  that is two system calls per batch instead of two per query, and no Python
  objects per packet beyond the query and reply bytes (the peer's address
  string is cached per address).
  Where the C extension ``gslb.server.transport._fastpath`` is built (``pip install`` builds it when
  a C compiler is there), that loop runs in C, and the queries the reply cache
  answers without further work (a fixed reply, or a balanced name's reply kept for
  its routing decision: ``answer.cache.memo_hit``) are answered there; every other
  datagram goes to :func:`handle` as before. ``GSLB_PURE_PYTHON=1`` turns it off.
* ``asyncio``: a plain :class:`asyncio.DatagramProtocol` (one ``recvfrom`` and
  one ``sendto`` per query), used where recvmmsg is not available.

Either way each query is answered by :func:`gslb.answer.respond.respond`.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import socket
import sys
import time
from typing import Any, Protocol, cast

from gslb.dns.rrl import Limiter, RateLimiter, negative, truncated
from gslb.dns.wire import ede_option, opt_record
from gslb.server.metrics import log_query
from gslb.server.transport import CLIENT_COOKIE, VALID_COOKIE, StateHolder, answer, badcookie

log = logging.getLogger("gslb.udp")

BATCH = 64  # datagrams per recvmmsg/sendmmsg
MAX_BATCHES = 16  # batches per readiness event, at most (then other callbacks get a turn)
BUSY = BATCH  # a turn that took a batch or more: the socket is busy (MmsgReader._busy) ...
IDLE = 8  # ... until a turn takes fewer than this (the loop does not spin at low rates)
IN_SLOT = 4096  # bytes per received datagram (a longer one is cut: FORMERR)
OUT_SLOT = 1280  # bytes per reply (UDP replies are at most 1232 bytes)
NAME_SLOT = 32  # bytes per peer address (sockaddr_in6 is 28)
MSG_DONTWAIT = 0x40
MSG_TRUNC = 0x20


class UdpProtocol(asyncio.DatagramProtocol):
    """The portable path: one datagram per callback."""

    def __init__(self, holder: StateHolder) -> None:
        self.holder = holder
        self.transport: asyncio.DatagramTransport | None = None
        self.errors = 0
        self.seen = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport does not subclass asyncio.DatagramTransport
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        reply = handle(self, self.holder, data, addr[0])
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        # ICMP errors for earlier replies (client gone): nothing to do
        log.debug("UDP error: %s", exc)


class _Counters(Protocol):
    errors: int
    seen: int


# a slip's OPT record (to a query with EDNS): the Extended DNS Error says why it is empty
SLIP_OPT = opt_record(False, 0, ede_option(0, "rate limited: retry over TCP"))


def handle(ctr: _Counters, holder: StateHolder, data: bytes, host: str) -> bytes | None:
    """Answer one datagram from ``host``: cookies and engine, rate limit, counters, query log."""
    rrl = holder.rrl
    now = time.monotonic()
    # a denial the limiter will not send is not worth signing (answer.respond.respond(limited))
    limited = rrl is not None and bool(holder.state.signers) and rrl.negative_exhausted(host, now)
    try:
        res = answer(holder, data, host, True, limited)
    except Exception:  # one bad packet must not stop the server
        ctr.errors += 1
        holder.stats.dropped["internal_error"] += 1
        if ctr.errors <= 10:
            log.exception("internal error answering a UDP query from %s", host)
        return None
    if res is None:
        holder.stats.dropped["not_a_query"] += 1  # shorter than a header, or QR set
        return None
    reply, skey, cookie, option, edns = res
    if rrl is not None and cookie != VALID_COOKIE:  # a valid server cookie cannot be spoofed
        action = rrl.check(host, reply, now)
        if action == "send" and limited and negative(reply):
            # cannot happen (the same clock, the same bucket), but an unsigned denial
            # must never leave: answer in full
            res = answer(holder, data, host, True)
            if res is None:
                return None
            reply, skey, cookie, option, edns = res
        if action == "drop":
            holder.stats.rrl["dropped"] += 1
            return None
        if action == "slip":
            holder.stats.rrl["slipped"] += 1
            if cookie == CLIENT_COOKIE:  # it can come back with the cookie, and pass
                holder.stats.cookies["badcookie"] += 1
                reply = badcookie(reply, option)
            else:
                reply = truncated(reply, SLIP_OPT if edns else b"")
    holder.stats.queries[skey] += 1
    if holder.query_log_every:
        ctr.seen += 1
        if ctr.seen % holder.query_log_every == 0:
            log_query(host, "udp", reply)
    return reply


# ----------------------------------------------------------------- recvmmsg path


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _MsgHdr(ctypes.Structure):
    _fields_ = [
        ("msg_name", ctypes.c_void_p),
        ("msg_namelen", ctypes.c_uint32),
        ("msg_iov", ctypes.POINTER(_IoVec)),
        ("msg_iovlen", ctypes.c_size_t),
        ("msg_control", ctypes.c_void_p),
        ("msg_controllen", ctypes.c_size_t),
        ("msg_flags", ctypes.c_int),
    ]


class _MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _MsgHdr), ("msg_len", ctypes.c_uint32)]


def _libc_mmsg() -> tuple[Any, Any] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        recvmmsg, sendmmsg = libc.recvmmsg, libc.sendmmsg
    except (OSError, AttributeError):
        return None
    recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    recvmmsg.restype = ctypes.c_int
    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    sendmmsg.restype = ctypes.c_int
    return recvmmsg, sendmmsg


_MMSG = _libc_mmsg()


def _fastpath() -> Any:
    """gslb.server.transport._fastpath, or None: not built here, or GSLB_PURE_PYTHON=1."""
    if os.environ.get("GSLB_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from gslb.server.transport import _fastpath  # type: ignore[attr-defined]
    except ImportError:
        return None
    return _fastpath


_FAST = _fastpath()
FAST_BATCHER = _FAST.Batcher if _FAST is not None else None


def rate_limiter(rate: float, slip: int) -> Limiter:
    """The response rate limiter the UDP loop uses: gslb.dns.rrl.RateLimiter's buckets in C
    where the C loop is built (it limits without leaving C), else that class itself."""
    if _FAST is not None:
        return cast(Limiter, _FAST.RateLimiter(rate, slip))
    return RateLimiter(rate, slip)


def udp_path() -> str:
    """Which UDP loop serves (for the start-up log and tests)."""
    if _MMSG is None:
        return "asyncio"
    return "mmsg (C)" if FAST_BATCHER is not None else "mmsg (Python)"


def mmsg_available() -> bool:
    return _MMSG is not None


class MmsgReader:
    """Batches of datagrams per readiness event, with recvmmsg/sendmmsg (Linux)."""

    def __init__(
        self, holder: StateHolder, sock: socket.socket, loop: asyncio.AbstractEventLoop | None = None
    ) -> None:
        assert _MMSG is not None
        self.loop = loop  # where it is registered (None: the caller runs it by hand)
        self.recvmmsg, self.sendmmsg = _MMSG
        self.holder = holder
        self.sock = sock
        self.fd = sock.fileno()
        self.v6 = sock.family == socket.AF_INET6
        self.errors = 0
        self.seen = 0
        self.closed = False
        self.hosts: dict[bytes, str] = {}
        self.inbuf = ctypes.create_string_buffer(BATCH * IN_SLOT)
        self.outbuf = ctypes.create_string_buffer(BATCH * OUT_SLOT)
        self.names = ctypes.create_string_buffer(BATCH * NAME_SLOT)
        self.in_iov = (_IoVec * BATCH)()
        self.out_iov = (_IoVec * BATCH)()
        self.rmsgs = (_MMsgHdr * BATCH)()
        self.smsgs = (_MMsgHdr * BATCH)()
        base_in, base_out = ctypes.addressof(self.inbuf), ctypes.addressof(self.outbuf)
        base_names = ctypes.addressof(self.names)
        for i in range(BATCH):
            self.in_iov[i].iov_base, self.in_iov[i].iov_len = base_in + i * IN_SLOT, IN_SLOT
            self.out_iov[i].iov_base = base_out + i * OUT_SLOT
            r, s = self.rmsgs[i].msg_hdr, self.smsgs[i].msg_hdr
            r.msg_name, r.msg_namelen = base_names + i * NAME_SLOT, NAME_SLOT
            r.msg_iov, r.msg_iovlen = ctypes.pointer(self.in_iov[i]), 1
            s.msg_iov, s.msg_iovlen = ctypes.pointer(self.out_iov[i]), 1
        # word views over the arrays, for per-packet reads and writes without ctypes objects
        size = ctypes.sizeof(_MMsgHdr)
        assert size % 8 == 0 and ctypes.sizeof(_IoVec) == 16
        self.stride4, self.stride8 = size // 4, size // 8
        self.off_len = _MMsgHdr.msg_len.offset // 4
        self.off_namelen = _MsgHdr.msg_namelen.offset // 4
        self.off_flags = _MsgHdr.msg_flags.offset // 4
        self.off_name = _MsgHdr.msg_name.offset // 8
        self.r32 = memoryview(self.rmsgs).cast("B").cast("I")
        self.s32 = memoryview(self.smsgs).cast("B").cast("I")
        self.s64 = memoryview(self.smsgs).cast("B").cast("Q")
        self.oiov64 = memoryview(self.out_iov).cast("B").cast("Q")
        self.inmv = memoryview(self.inbuf).cast("B")
        self.outmv = memoryview(self.outbuf).cast("B")
        self.namesmv = memoryview(self.names).cast("B")
        self.name_addr = [base_names + i * NAME_SLOT for i in range(BATCH)]
        self.p_rmsgs, self.p_smsgs = ctypes.addressof(self.rmsgs), ctypes.addressof(self.smsgs)
        # the C loop, where built: the same batches, reply-cache hits answered in C
        self.fast = (
            FAST_BATCHER(self.fd, holder, handle, self, log_query, SLIP_OPT)
            if FAST_BATCHER is not None
            else None
        )

    def _host(self, i: int) -> str:
        o = i * NAME_SLOT
        raw = self.namesmv[o + 8 : o + 24].tobytes() if self.v6 else self.namesmv[o + 4 : o + 8].tobytes()
        host = self.hosts.get(raw)
        if host is None:
            host = socket.inet_ntop(socket.AF_INET6 if self.v6 else socket.AF_INET, raw)
            if len(self.hosts) >= 65536:
                self.hosts.clear()
            self.hosts[raw] = host
        return host

    def on_readable(self) -> None:
        # Several batches while datagrams keep coming: each wake-up of the event loop
        # costs a turn at the interpreter lock, which another thread (a reload
        # compiling zones) may hold for up to the switch interval (5 ms). One batch
        # per turn caps answering at about 64 / 5 ms = 13k queries/s meanwhile.
        if self.fast is not None:
            if not self.closed and self.fast.run() >= BUSY and self.loop is not None:
                # saturated: take turns in the event loop without the socket's epoll
                # entry (see _busy)
                self.loop.remove_reader(self.fd)
                self.loop.call_soon(self._busy)
            return
        for _ in range(MAX_BATCHES):
            if self._batch() < BATCH:
                return

    def _busy(self) -> None:
        """One turn of the C loop while the socket stays busy, without the epoll entry.

        While the socket is registered with epoll, every datagram that arrives and every
        reply the kernel frees runs the entry's wake-up callback under the socket's wait
        queue lock: at 450k q/s that was 8% of the server's CPU (perf: sock_def_readable
        and sock_wfree under _raw_spin_unlock_irqrestore), which a server blocked in
        recvmmsg (gdnsd) does not pay. Busy (a turn took a batch), the loop runs again at
        the event loop's next turn (other callbacks, TCP and the API, run in between);
        once a turn takes fewer than IDLE datagrams, the socket is registered again, so
        a lightly loaded server sleeps in epoll as before."""
        if self.closed or self.fast is None or self.loop is None:
            return
        if self.fast.run() >= IDLE:
            self.loop.call_soon(self._busy)
        else:
            self.loop.add_reader(self.fd, self.on_readable)

    def _batch(self) -> int:
        """Answer one recvmmsg batch; returns how many datagrams it took."""
        if self.closed:
            return 0
        r32, stride4 = self.r32, self.stride4
        n = self.recvmmsg(self.fd, self.p_rmsgs, BATCH, MSG_DONTWAIT, None)
        if n <= 0:
            if n < 0:
                err = ctypes.get_errno()
                if err not in (errno.EAGAIN, errno.EINTR):
                    log.debug("recvmmsg: %s", errno.errorcode.get(err, err))
            return 0
        holder, inmv, outmv = self.holder, self.inmv, self.outmv
        s32, s64, oiov64 = self.s32, self.s64, self.oiov64
        off_len, off_namelen, off_flags = self.off_len, self.off_namelen, self.off_flags
        stride8, off_name, name_addr = self.stride8, self.off_name, self.name_addr
        j = 0
        for i in range(n):
            base = i * stride4
            length = r32[base + off_len]
            if r32[base + off_flags] & MSG_TRUNC:
                holder.stats.dropped["too_long"] += 1
                r32[base + off_namelen] = NAME_SLOT
                continue
            o = i * IN_SLOT
            reply = handle(self, holder, inmv[o : o + length].tobytes(), self._host(i))
            namelen = r32[base + off_namelen]
            r32[base + off_namelen] = NAME_SLOT  # reset for the next recvmmsg
            if reply is None:
                continue
            rl = len(reply)
            if rl > OUT_SLOT:  # cannot happen for UDP-sized replies; keep it correct anyway
                self._sendto(reply, i)
                continue
            oo = j * OUT_SLOT
            outmv[oo : oo + rl] = reply
            oiov64[j * 2 + 1] = rl
            s64[j * stride8 + off_name] = name_addr[i]
            s32[j * stride4 + off_namelen] = namelen
            j += 1
        sent = 0
        while sent < j:
            k = self.sendmmsg(self.fd, self.p_smsgs + sent * stride8 * 8, j - sent, MSG_DONTWAIT)
            if k <= 0:
                err = ctypes.get_errno() if k < 0 else 0
                if err == errno.EINTR:
                    continue
                holder.stats.dropped["send_failed"] += j - sent  # buffer full: UDP may drop
                break
            sent += k
        return int(n)

    def _sendto(self, reply: bytes, i: int) -> None:
        o = i * NAME_SLOT
        host = self._host(i)
        port = int.from_bytes(self.namesmv[o + 2 : o + 4], "big")
        try:
            self.sock.sendto(reply, (host, port))
        except OSError:
            self.holder.stats.dropped["send_failed"] += 1


class MmsgTransport:
    """Close handle for the recvmmsg path (the runtime closes transports alike)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, reader: MmsgReader) -> None:
        self.loop, self.reader = loop, reader

    def close(self) -> None:
        if not self.reader.closed:
            self.reader.closed = True
            self.loop.remove_reader(self.reader.fd)
            self.reader.sock.close()


def udp_socket(host: str, port: int, reuse_port: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def serve_udp(
    holder: StateHolder, host: str, port: int, io: str = "auto", reuse_port: bool = False
) -> tuple[asyncio.BaseTransport | MmsgTransport, int]:
    """Bind a UDP socket and serve on it; returns a closable transport and the bound port.

    ``io``: "mmsg", "asyncio", or "auto" (mmsg where available).
    """
    loop = asyncio.get_running_loop()
    sock = udp_socket(host, port, reuse_port)
    bound = int(sock.getsockname()[1])
    if io == "mmsg" and not mmsg_available():
        sock.close()
        raise OSError("recvmmsg/sendmmsg are not available here (use --udp-io asyncio)")
    if io in ("mmsg", "auto") and mmsg_available():
        reader = MmsgReader(holder, sock, loop)
        loop.add_reader(sock.fileno(), reader.on_readable)
        return MmsgTransport(loop, reader), bound
    transport, _ = await loop.create_datagram_endpoint(lambda: UdpProtocol(holder), sock=sock)
    return transport, bound
