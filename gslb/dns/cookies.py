"""DNS cookies (RFC 7873) with interoperable server cookies (RFC 9018).

A server cookie is 16 octets: version 1, three reserved octets, a 32-bit
timestamp and an 8-octet SipHash-2-4 of (client cookie | version | reserved |
timestamp | client address) under a 16-octet secret. Every node with the same
secret makes and accepts the same cookies, and so does any other RFC 9018
server (Knot, BIND, PowerDNS) given that secret: the tests check both.

Rotation: :class:`Cookies` takes a list of secrets; the first makes cookies, all
of them verify. Put the new secret second on every node, then first, then drop
the old one an hour later (a cookie lives an hour).

SipHash comes from the ``siphash24`` package (C, 1.2 us a hash; a pure-Python
fallback takes 47 us), and the work is bounded by memos anyway: a client's fresh
server cookie is stamped with the time rounded down to five minutes (so it is the
same cookie for five minutes, from any worker or node, and from the C loop, which
computes the same cookies itself), and a verified cookie is remembered
until it ages out, so a resolver that presents the same cookie again costs a
dict lookup. A flood of forged server cookies costs one hash each, which is what
validating them costs any server.
"""

from __future__ import annotations

import secrets as _secrets
import socket
import struct
from dataclasses import dataclass, field
from pathlib import Path

_M = 0xFFFFFFFFFFFFFFFF
COOKIE_OPTION = 10
PAST, FUTURE = 3600, 300  # a server cookie is accepted this long after and before its timestamp
RENEW = 1800  # a valid cookie older than this is answered with a fresh one (RFC 9018 4.3)
REUSE = 300  # a fresh cookie made for a client is handed out again for this long
MEMO_MAX = 100_000


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M


def siphash24_py(key: bytes, data: bytes) -> bytes:
    """SipHash-2-4 of ``data`` under the 16-octet ``key``, as 8 octets (little-endian):
    the pure-Python fallback (47 us a hash) where the ``siphash24`` wheel (1.2 us) is
    missing; the tests check both against RFC 9018's vectors."""
    k0, k1 = struct.unpack("<QQ", key)
    v0, v1, v2, v3 = (
        k0 ^ 0x736F6D6570736575,
        k1 ^ 0x646F72616E646F6D,
        k0 ^ 0x6C7967656E657261,
        k1 ^ 0x7465646279746573,
    )
    n = len(data)
    tail = data[n - n % 8 :] + b"\0" * (7 - n % 8) + bytes((n & 0xFF,))
    words = struct.unpack(f"<{n // 8}Q", data[: n - n % 8]) + struct.unpack("<Q", tail)

    def rounds(v0: int, v1: int, v2: int, v3: int, k: int) -> tuple[int, int, int, int]:
        for _ in range(k):
            v0 = (v0 + v1) & _M
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _M
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _M
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _M
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)
        return v0, v1, v2, v3

    for m in words:
        v3 ^= m
        v0, v1, v2, v3 = rounds(v0, v1, v2, v3, 2)
        v0 ^= m
    v2 ^= 0xFF
    v0, v1, v2, v3 = rounds(v0, v1, v2, v3, 4)
    return struct.pack("<Q", v0 ^ v1 ^ v2 ^ v3)


try:
    from siphash24 import siphash24 as _siphash_c

    def siphash24(key: bytes, data: bytes) -> bytes:
        """SipHash-2-4 of ``data`` under the 16-octet ``key``, as 8 octets."""
        return bytes(_siphash_c(data, key=key).digest())

except ImportError:  # pragma: no cover - a platform without the wheel
    siphash24 = siphash24_py


_V4_MAPPED = bytes(10) + b"\xff\xff"


def address_bytes(host: str) -> bytes:
    """The client address as RFC 9018 hashes it: 4 octets for IPv4 (also when it came
    as an IPv4-mapped IPv6 address), 16 for IPv6."""
    if ":" not in host:
        return socket.inet_pton(socket.AF_INET, host)
    a = socket.inet_pton(socket.AF_INET6, host.split("%", 1)[0])
    return a[12:] if a.startswith(_V4_MAPPED) else a


def server_cookie(secret: bytes, client: bytes, addr: bytes, ts: int, head: bytes = b"\x01\0\0\0") -> bytes:
    """The 16-octet RFC 9018 server cookie (``head``: version and reserved octets)."""
    stamp = struct.pack("!I", ts & 0xFFFFFFFF)
    return head + stamp + siphash24(secret, client + head + stamp + addr)


def _age(ts: int, now: int) -> int:
    """Seconds from ``ts`` to ``now`` in serial-number arithmetic (RFC 1982): negative
    when ``ts`` is ahead."""
    d = (now - ts) & 0xFFFFFFFF
    return d - (1 << 32) if d >= 1 << 31 else d


class BadCookie(ValueError):
    """A COOKIE option of a length RFC 7873 5.2.2 calls malformed: FORMERR."""


@dataclass(slots=True)
class CookieStats:
    valid: int = 0  # a server cookie of ours
    fresh: int = 0  # a client cookie alone, or a server cookie not (or no longer) ours
    malformed: int = 0
    hashes: int = 0  # SipHash computations (the memos spare the rest)


@dataclass(slots=True)
class Cookies:
    """The server side of DNS cookies for one process: verify, and make the reply's option."""

    secrets: tuple[bytes, ...]
    stats: CookieStats = field(default_factory=CookieStats)
    _made: dict[tuple[bytes, bytes], bytes] = field(default_factory=dict)  # (client, addr) -> server cookie
    # (option, addr) -> (its timestamp, whether the current secret made it), once verified
    _ok: dict[tuple[bytes, bytes], tuple[int, bool]] = field(default_factory=dict)
    # this second's verdicts, (option, client host) -> (valid, the reply's whole option):
    # a resolver's queries in one second, each with the same cookie, cost a lookup
    _seen: dict[tuple[bytes, str], tuple[bool, bytes]] = field(default_factory=dict)
    _seen_at: int = -1

    def __post_init__(self) -> None:
        if not self.secrets or any(len(s) != 16 for s in self.secrets):
            raise ValueError("cookie secrets are 16 octets each")

    def check(self, option: bytes, addr: bytes, now: int) -> tuple[bool, bytes]:
        """(whether ``option`` carries a valid server cookie of ours, the COOKIE option
        data for the reply). Raises :class:`BadCookie` for a malformed option."""
        n = len(option)
        if n != 8 and not 16 <= n <= 40:
            self.stats.malformed += 1
            raise BadCookie(f"COOKIE option of {n} octets")
        client = option[:8]
        if n == 24 and option[8] == 1:  # RFC 9018's layout, version 1
            ts, current = self._verified(option, addr, now)
            if ts >= 0:
                self.stats.valid += 1
                if current and _age(ts, now) <= RENEW and option[9:12] == b"\0\0\0":
                    return True, option  # still fresh and as we make them: the client keeps it
                return True, client + self._fresh(client, addr, now)
        self.stats.fresh += 1
        return False, client + self._fresh(client, addr, now)

    def verdict(self, option: bytes, host: str, now: int) -> tuple[bool, bytes]:
        """:meth:`check` for a client ``host`` (its socket address text), returning the
        reply's whole COOKIE option; remembered for the rest of the second ``now``.
        Raises :class:`BadCookie` like ``check``."""
        if now != self._seen_at:
            self._seen.clear()
            self._seen_at = now
        key = (option, host)
        hit = self._seen.get(key)
        if hit is not None:
            if hit[0]:
                self.stats.valid += 1
            else:
                self.stats.fresh += 1
            return hit
        valid, mine = self.check(option, address_bytes(host), now)
        out = valid, cookie_option(mine)
        if len(self._seen) < MEMO_MAX:
            self._seen[key] = out
        return out

    def _verified(self, option: bytes, addr: bytes, now: int) -> tuple[int, bool]:
        """(the cookie's timestamp, or -1 if it is not ours or out of its window;
        whether the current secret made it)."""
        key = (option, addr)
        hit = self._ok.get(key)
        if hit is None:
            ts = struct.unpack_from("!I", option, 12)[0]
            age = _age(ts, now)
            if not -FUTURE <= age <= PAST:
                return -1, False
            data = option[:16] + addr  # client | version | reserved | timestamp | address
            for i, s in enumerate(self.secrets):
                self.stats.hashes += 1
                if siphash24(s, data) == option[16:24]:
                    hit = (ts, i == 0)
                    break
            else:
                return -1, False
            if len(self._ok) >= MEMO_MAX:
                self._ok.clear()
            self._ok[key] = hit
        if not -FUTURE <= _age(hit[0], now) <= PAST:
            return -1, False
        return hit

    def _fresh(self, client: bytes, addr: bytes, now: int) -> bytes:
        """The client's fresh server cookie: stamped with ``now`` rounded down to
        :data:`REUSE` seconds, so for those five minutes every worker, every node with
        the secret and the C loop (gslb/server/transport/_fastpath.c) hand out the
        same one; the hash is memoised per client."""
        ts = (now - now % REUSE) & 0xFFFFFFFF
        key = (client, addr)
        made = self._made.get(key)
        if made is not None and struct.unpack_from("!I", made, 4)[0] == ts:
            return made
        self.stats.hashes += 1
        made = server_cookie(self.secrets[0], client, addr, ts)
        if len(self._made) >= MEMO_MAX:
            self._made.clear()
        self._made[key] = made
        return made


def load_secrets(path: Path) -> tuple[bytes, ...]:
    """Secrets from a file: one per line, 32 hex digits (16 octets); the first makes
    cookies, the others are still accepted (rotation). Blank lines and ``#`` comments
    are skipped."""
    try:
        text = path.read_text()
    except OSError as e:
        raise ValueError(f"{path}: cannot read the cookie secret: {e.strerror or e}") from None
    out = []
    for i, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            s = bytes.fromhex(line)
        except ValueError:
            s = b""
        if len(s) != 16:
            raise ValueError(f"{path}:{i}: a cookie secret is 32 hex digits (16 octets)")
        out.append(s)
    if not out:
        raise ValueError(f"{path}: no cookie secret in the file")
    return tuple(out)


def random_secret() -> bytes:
    return _secrets.token_bytes(16)


# ------------------------------------------------------------------ on the wire

_OPTH = struct.Struct("!HH")
_H = struct.Struct("!H")


def find_cookie(msg: bytes, opt: int) -> tuple[int, int]:
    """(start, end) of the COOKIE option, its 4-octet header included, in the query's
    OPT record at ``opt`` (``gslb.dns.wire.query_opt``); (-1, -1) when there is none."""
    pos, end = opt + 11, len(msg)
    while pos + 4 <= end:
        code, n = _OPTH.unpack_from(msg, pos)
        if code == COOKIE_OPTION:
            return (pos, pos + 4 + n) if pos + 4 + n <= end else (-1, -1)
        pos += 4 + n
    return -1, -1


def rewrite_query(msg: bytes, opt: int, cut: tuple[int, int], payload: int) -> bytes:
    """The query with the bytes ``cut`` (an option) taken out of its OPT record and
    the OPT's UDP payload size set to ``payload``: what the engine answers, so its
    reply cache is shared by every client whatever their cookies."""
    s, e = cut
    rdlen = ((msg[opt + 9] << 8) | msg[opt + 10]) - (e - s)
    return (
        msg[: opt + 3]
        + _H.pack(payload)
        + msg[opt + 5 : opt + 9]
        + _H.pack(rdlen)
        + msg[opt + 11 : s]
        + msg[e:]
    )


def cookie_option(data: bytes) -> bytes:
    """A whole COOKIE option (code, length, data)."""
    return _OPTH.pack(COOKIE_OPTION, len(data)) + data


def add_option(reply: bytes, option: bytes, start: int = 0) -> bytes | None:
    """The reply with ``option`` appended to its OPT record, which the engine always
    puts last; None when the reply has no OPT (the query had no EDNS, or the reply is
    a bare FORMERR). ``start``: where the records begin, when the caller knows (the
    echoed question is the query's)."""
    n = len(reply)
    if n < 12:
        return None
    qd, an, ns, ar = struct.unpack_from("!HHHH", reply, 4)
    if not ar:
        return None
    pos = start if start and qd == 1 else 12
    for _ in range(qd if pos == 12 else 0):
        while pos < n and reply[pos] and reply[pos] < 0xC0:
            pos += 1 + reply[pos]
        pos += 2 if pos < n and reply[pos] >= 0xC0 else 1
        pos += 4
    last = -1
    for _ in range(an + ns + ar):
        last = pos
        while pos < n and reply[pos] and reply[pos] < 0xC0:
            pos += 1 + reply[pos]
        pos += 2 if pos < n and reply[pos] >= 0xC0 else 1
        if pos + 10 > n:
            return None
        pos += 10 + ((reply[pos + 8] << 8) | reply[pos + 9])
    if last < 0 or pos != n or reply[last] != 0 or reply[last + 1 : last + 3] != b"\x00\x29":
        return None
    rdlen = ((reply[last + 9] << 8) | reply[last + 10]) + len(option)
    return reply[: last + 9] + _H.pack(rdlen) + reply[last + 11 :] + option
