"""Response rate limiting: a flood from one client network is limited (dropped, with
every slip-th answer truncated), other networks and TCP are not."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from typing import Any

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from gslb.dns.rrl import RateLimiter, truncated
from gslb.server.transport import udp
from tests.conftest import ROOT, GslbProcess

# the limiter in Python and its twin in C (what the server uses where the C loop is built)
LIMITERS: list[Any] = [RateLimiter]
if udp._FAST is not None:
    LIMITERS.append(udp._FAST.RateLimiter)
IDS = ["python", "c"][: len(LIMITERS)]


def reply_for(name: str, answers: int = 1, rcode: int = 0) -> bytes:
    q = dns.message.make_query(name, "A", use_edns=False)
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.Rcode.make(rcode))
    if answers:
        r.answer.append(dns.rrset.from_text(name, 60, "IN", "A", "192.0.2.1"))
    return r.to_wire()


@pytest.mark.parametrize("limiter", LIMITERS, ids=IDS)
def test_token_bucket_with_slip(limiter: Any) -> None:
    RateLimiter = limiter
    rl = RateLimiter(rate=5, slip=2)
    a = reply_for("www.example.")
    got = [rl.check("192.0.2.7", a, 0.0) for _ in range(11)]
    assert got == ["send"] * 5 + ["drop", "slip", "drop", "slip", "drop", "slip"]
    assert rl.check("192.0.2.99", a, 0.0) == "drop"  # same /24, same answer: same bucket
    assert rl.check("192.0.3.7", a, 0.0) == "send"  # another /24
    assert rl.check("192.0.2.7", reply_for("other.example."), 0.0) == "send"  # another name
    assert rl.check("192.0.2.7", a, 1.0) == "send"  # a second later the bucket has refilled
    # negative answers share one bucket per network, whatever the name
    neg = RateLimiter(rate=2, slip=0)
    assert [neg.check("198.51.100.1", reply_for(f"n{i}.example.", 0, 3), 0.0) for i in range(4)] == [
        "send", "send", "drop", "drop"]  # fmt: skip
    v6 = RateLimiter(rate=1, slip=0)
    assert v6.check("2001:db8:0:1::1", a, 0.0) == "send"
    assert v6.check("2001:db8:0:1::2", a, 0.0) == "drop"  # same /56
    assert v6.check("2001:db8:0:100::1", a, 0.0) == "send"  # another /56


def test_the_c_limiter_decides_as_the_python_one() -> None:
    """The same events (clients of a few networks, positive, negative and error replies,
    times that advance unevenly, a table small enough to be swept) through both: the same
    action every time, the same counts."""
    if len(LIMITERS) < 2:
        pytest.skip("gslb.server.transport._fastpath is not built here")
    rnd = random.Random(7)
    replies = [reply_for(f"n{i}.Example.") for i in range(6)]
    replies += [
        reply_for("www.example.", 0, 3),
        reply_for("www.example.", 0, 0),
        reply_for("x.example.", 0, 2),
    ]
    clients = [f"192.0.{rnd.randrange(8)}.{rnd.randrange(256)}" for _ in range(40)]
    clients += [f"2001:db8:0:{rnd.randrange(4) * 256:x}::{rnd.randrange(99)}" for _ in range(20)]
    clients += ["::ffff:192.0.1.9", "fe80::1%lo"]
    for rate, slip, keys in ((3.0, 2, 50), (0.5, 3, 8), (40.0, 0, 200_000), (1.5, 1, 20)):
        py, c = RateLimiter(rate, slip, keys), LIMITERS[1](rate, slip, keys)
        now = 100.0
        for _ in range(20_000):
            now += rnd.choice([0.0, 0.0, 0.001, 0.01, 0.2, 1.5]) if rnd.random() < 0.3 else 0.0
            host, reply = rnd.choice(clients), rnd.choice(replies)
            if rnd.random() < 0.05:
                assert py.negative_exhausted(host, now) == c.negative_exhausted(host, now)
            assert py.check(host, reply, now) == c.check(host, reply, now), (rate, slip, host, now)
        assert (py.dropped, py.slipped) == (c.dropped, c.slipped)
        if rate < 10:  # the slow ones limit, and slip when they slip
            assert py.dropped + py.slipped and (py.slipped or not slip)
        assert len(c) <= keys
    with pytest.raises(ValueError):
        LIMITERS[1](0, 2)


def test_truncated_slip_reply() -> None:
    r = dns.message.from_wire(truncated(reply_for("www.example.")))
    assert r.flags & dns.flags.TC and not r.answer
    assert str(r.question[0].name) == "www.example."


def flood(port: int, source: str, n: int, wire: bytes) -> tuple[int, int, int]:
    """Send n queries as fast as possible from ``source``; count (full, truncated, silent)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((source, 0))
    s.settimeout(0.3)
    full = tc = 0
    for i in range(n):
        s.sendto(bytes([i >> 8 & 0xFF, i & 0xFF]) + wire[2:], ("127.0.0.1", port))
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        try:
            data = s.recv(4096)
        except TimeoutError:
            break
        r = dns.message.from_wire(data)
        if r.flags & dns.flags.TC:
            tc += 1
        elif r.answer:
            full += 1
    s.close()
    return full, tc, n - full - tc


def test_flood_limited_per_network(server_factory: Callable[..., GslbProcess]) -> None:
    srv = server_factory(ROOT / "tests/conformance/conf.test.yaml", ["--rrl-rate", "20", "--rrl-slip", "2"])
    wire = dns.message.make_query("static.conf.test.", "A", use_edns=False).to_wire()
    full, tc, silent = flood(srv.port, "127.0.0.1", 300, wire)
    assert 20 <= full <= 60, (full, tc, silent)  # the burst, plus the rate over the flood's duration
    assert tc > 50 and silent > 50  # every second limited answer slips as TC=1, the rest are dropped
    # another client network is not affected
    full2, tc2, _ = flood(srv.port, "127.0.1.1", 10, wire)
    assert (full2, tc2) == (10, 0)
    # and the limited client still gets its answer over TCP
    assert srv.query("static.conf.test.", "A", tcp=True).answer
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{srv.api_port}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    counts = {}
    for line in metrics.splitlines():
        for a in ("dropped", "slipped"):
            if line.startswith(f'gslb_rrl_responses_total{{action="{a}"}}'):
                counts[a] = float(line.rsplit(" ", 1)[1])
    assert counts["slipped"] == tc and 0 < counts["dropped"] <= silent  # silent: also any loopback loss
    assert "Traceback" not in srv.log()


def test_rrl_off_by_default(server_factory: Callable[..., GslbProcess]) -> None:
    srv = server_factory(ROOT / "tests/conformance/conf.test.yaml")
    wire = dns.message.make_query("static.conf.test.", "A", use_edns=False).to_wire()
    full, tc, _ = flood(srv.port, "127.0.0.1", 200, wire)
    assert tc == 0 and full >= 190  # loopback may drop a few datagrams of a burst, the server drops none
