"""Response rate limiting (RRL), in the spirit of BIND's and Knot's.

UDP answers are counted per client network (/24 for IPv4, /56 for IPv6) and
response kind: positive answers per query name, negative answers (NXDOMAIN,
NODATA) together, errors together. Each key has a token bucket of ``rate``
answers per second (burst: one second's worth). Over the limit an answer is
dropped, except that every ``slip``-th one is sent as an empty truncated reply
(TC=1), so a real client behind a spoofed-looking flood retries over TCP,
which is never limited. 0 disables: the default. Memory is bounded: the table
is swept of idle keys when it grows past ``max_keys``.

Pure bookkeeping: the caller passes the time in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from gslb.dns.wire import client_of, question_end

Action = Literal["send", "drop", "slip"]


class Limiter(Protocol):
    """A rate limiter: :class:`RateLimiter`, or its twin in C
    (``gslb.server.transport._fastpath.RateLimiter``: the same buckets, which the C loop
    checks without leaving C; tests/test_rrl.py drives both with the same events)."""

    rate: float
    slip: int

    def check(self, client: str, reply: bytes, now: float) -> Action: ...

    def negative_exhausted(self, client: str, now: float) -> bool: ...


@dataclass(slots=True)
class _Bucket:
    tokens: float
    at: float
    denied: int = 0


class RateLimiter:
    def __init__(self, rate: float, slip: int = 2, max_keys: int = 200_000) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.slip = slip
        self.max_keys = max_keys
        self.table: dict[tuple[bytes, int, bytes], _Bucket] = {}
        self.dropped = 0
        self.slipped = 0

    def check(self, client: str, reply: bytes, now: float) -> Action:
        key = (_prefix(client), *_kind(reply))
        b = self.table.get(key)
        if b is None:
            if len(self.table) >= self.max_keys:
                self._sweep(now)
            self.table[key] = _Bucket(self.rate - 1, now)
            return "send"
        b.tokens = min(self.rate, b.tokens + (now - b.at) * self.rate)
        b.at = now
        if b.tokens >= 1:
            b.tokens -= 1
            return "send"
        b.denied += 1
        if self.slip and b.denied % self.slip == 0:
            self.slipped += 1
            return "slip"
        self.dropped += 1
        return "drop"

    def negative_exhausted(self, client: str, now: float) -> bool:
        """Whether a negative answer to ``client`` now would be limited (dropped or
        slipped): the engine then skips signing a denial nobody will receive. Looks,
        changes nothing; :meth:`check` still decides."""
        b = self.table.get((_prefix(client), 1, b""))
        return b is not None and b.tokens + (now - b.at) * self.rate < 1

    def _sweep(self, now: float) -> None:
        """Forget keys that have refilled completely (idle for a second or more)."""
        self.table = {k: b for k, b in self.table.items() if now - b.at < 1.0}
        if len(self.table) >= self.max_keys:  # still full: an attack from many networks
            self.table.clear()


def _prefix(host: str) -> bytes:
    fam, addr = client_of(host)
    return (addr >> 8).to_bytes(3, "big") if fam == 4 else (addr >> 72).to_bytes(7, "big")  # /24, /56


def _kind(reply: bytes) -> tuple[int, bytes]:
    """(kind, name): positive answers by qname; negative and errors pooled."""
    rcode = reply[3] & 0xF
    if rcode in (0, 3) and len(reply) >= 12:
        if rcode == 0 and (reply[6] or reply[7]):  # ANCOUNT > 0: a positive answer
            return 0, reply[12 : question_end(reply)].lower()
        return 1, b""  # NXDOMAIN / NODATA / referral
    return 2, b""


def negative(reply: bytes) -> bool:
    """Whether ``reply`` counts as a negative answer (NXDOMAIN, NODATA, referral)."""
    return _kind(reply)[0] == 1


def truncated(reply: bytes, opt: bytes = b"") -> bytes:
    """The slip reply: the header with TC=1 and the question, no records; ``opt``: the
    OPT record to add (the transport gives one, with an Extended DNS Error, when the
    query had EDNS)."""
    end = question_end(reply) + 5 if reply[5] == 1 else 12
    flags = (reply[2] | 0x02).to_bytes(1, "big")
    qd = b"\x00\x01" if end > 12 else b"\x00\x00"
    ar = b"\x00\x01" if opt else b"\x00\x00"
    return reply[:2] + flags + reply[3:4] + qd + b"\x00" * 4 + ar + reply[12:end] + opt
