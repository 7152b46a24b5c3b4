"""Abusive TCP clients (slow, silent, never reading) cannot hold the server:
their connections end by the idle timeout, and UDP keeps answering meanwhile."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Callable

import dns.message

from tests.conftest import ROOT, GslbProcess

ZONE = ROOT / "tests" / "conformance" / "conf.test.yaml"


def udp_ok(srv: GslbProcess) -> bool:
    return bool(srv.query("static.conf.test.", "A", timeout=1).answer)


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed (or reset) the connection."""
    t0 = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    return time.monotonic() - t0


def test_slow_loris_is_closed_and_udp_answers(server_factory: Callable[..., GslbProcess]) -> None:
    srv = server_factory(ZONE, ["--tcp-idle", "1"])
    q = dns.message.make_query("static.conf.test.", "A").to_wire()
    frame = struct.pack("!H", len(q)) + q
    s = socket.create_connection(("127.0.0.1", srv.port))
    stop = threading.Event()

    def trickle() -> None:  # one byte every 0.2 s: the message would take seconds
        for b in frame:
            if stop.is_set():
                return
            try:
                s.send(bytes([b]))
            except OSError:
                return
            time.sleep(0.2)

    t = threading.Thread(target=trickle)
    t.start()
    try:
        assert udp_ok(srv)
        took = closed_within(s, 5)
        assert 0.8 < took < 2.5  # closed by the 1 s limit, not kept alive by the trickle
        assert udp_ok(srv)
    finally:
        stop.set()
        t.join()
        s.close()


def test_silent_and_never_reading_clients(server_factory: Callable[..., GslbProcess]) -> None:
    srv = server_factory(ZONE, ["--tcp-idle", "1"])
    silent = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(20)]
    greedy = socket.create_connection(("127.0.0.1", srv.port))
    greedy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    q = dns.message.make_query("big.conf.test.", "A").to_wire()  # ~700-octet answers
    burst = (struct.pack("!H", len(q)) + q) * 2000
    greedy.setblocking(False)
    sent = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < 2:  # push queries, never read an answer
        try:
            sent += greedy.send(burst[sent % len(burst) :])
        except BlockingIOError:
            time.sleep(0.01)
        except OSError:
            break  # the server gave up on us
        assert udp_ok(srv)
    greedy.setblocking(True)
    assert closed_within(greedy, 5) < 5
    for s in silent:
        assert closed_within(s, 3) < 3
        s.close()
    greedy.close()
    assert udp_ok(srv)
    # and a well-behaved TCP client is served as before
    r = srv.query("static.conf.test.", "A", tcp=True)
    assert r.answer
