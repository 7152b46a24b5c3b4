"""TSIG (RFC 8945): HMAC-signed DNS messages, for zone transfers and NOTIFY.

A key is a name, an HMAC algorithm and a shared secret (:func:`load_key` reads
the secret from a file: base64 on one line, or the ``key`` clause that BIND's
``tsig-keygen`` and Knot's ``keymgr -t`` print). :func:`find` locates a
message's TSIG record (it must be the last one: RFC 8945 5.1), :func:`verify`
checks a request against the keyring in the RFC's order (key, then MAC, then
time), and :func:`sign` appends the TSIG record to a reply (or a request we
send): a reply's MAC covers the request's MAC, and each further message of a
multi-message answer (AXFR, IXFR) covers the one before (RFC 8945 5.3.1: every
message here is signed, which the RFC allows).

Errors, as RFC 8945 5.2 says: an unknown key or algorithm is BADKEY and a wrong
MAC is BADSIG, both answered NOTAUTH with an unsigned TSIG (the MAC empty);
a clock outside the fudge is BADTIME, answered NOTAUTH and signed, with our
time in the other data so the client can tell the skew. A MAC shorter than
RFC 8945 5.2.2.1 allows, or longer than the hash, is FORMERR.

HMAC-MD5 is not offered (RFC 8945 6: deprecated); SHA-1, SHA-224, SHA-256
(the one to use), SHA-384 and SHA-512 are.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from gslb.dns import names
from gslb.dns.wire import Malformed, read_name

T_TSIG = 250
CLASS_ANY = 255
NOTAUTH = 9
BADSIG, BADKEY, BADTIME = 16, 17, 18
FUDGE = 300

ALGORITHMS: dict[str, Callable[..., Any]] = {
    "hmac-sha1": hashlib.sha1,
    "hmac-sha224": hashlib.sha224,
    "hmac-sha256": hashlib.sha256,
    "hmac-sha384": hashlib.sha384,
    "hmac-sha512": hashlib.sha512,
}
ERRORS = {BADSIG: "BADSIG", BADKEY: "BADKEY", BADTIME: "BADTIME"}

_U48 = struct.Struct("!HIH")  # time signed (48 bits) and fudge
_RRHDR = struct.Struct("!HHIH")


@dataclass(frozen=True, slots=True)
class Key:
    name: str  # as configured, e.g. "xfr-key"
    algorithm: str  # e.g. "hmac-sha256"
    secret: bytes

    @property
    def wire(self) -> bytes:
        """The key's name in canonical wire form (lower case)."""
        return _absolute(self.name)

    @property
    def alg_wire(self) -> bytes:
        return _absolute(self.algorithm)

    def mac(self, data: bytes) -> bytes:
        return hmac.new(self.secret, data, ALGORITHMS[self.algorithm]).digest()


def _absolute(text: str) -> bytes:
    return names.from_text(text if text.endswith(".") else text + ".").lower()


class KeyError_(ValueError):
    """A key file that cannot be used (the message says why)."""


def load_key(name: str, path: str | Path, algorithm: str | None = None) -> Key:
    """A key from its secret file: base64 alone, or a BIND/Knot ``key "name" {
    algorithm ...; secret "..."; };`` clause (whose algorithm is used unless one is
    given). Raises KeyError_ with the reason."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise KeyError_(f"TSIG key {name}: cannot read {path}: {e}") from None
    m = re.search(r'secret\s+"([^"]+)"', text)
    if m:
        secret_text = m.group(1)
        a = re.search(r"algorithm\s+\"?([A-Za-z0-9-]+)\"?\s*;", text)
        if algorithm is None and a:
            algorithm = a.group(1)
    else:
        lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        if len(lines) != 1:
            raise KeyError_(f"TSIG key {name}: {path}: expected one line of base64 (or a key clause)")
        secret_text = lines[0]
    algorithm = (algorithm or "hmac-sha256").lower()
    if algorithm not in ALGORITHMS:
        raise KeyError_(f"TSIG key {name}: algorithm {algorithm} not supported ({', '.join(ALGORITHMS)})")
    try:
        secret = base64.b64decode(secret_text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyError_(f"TSIG key {name}: {path}: the secret is not base64") from None
    if len(secret) < 16:
        raise KeyError_(f"TSIG key {name}: {path}: the secret is {len(secret)} octets; use at least 16")
    try:
        _absolute(name)
    except ValueError as e:
        raise KeyError_(f"TSIG key {name}: bad name: {e}") from None
    return Key(name, algorithm, secret)


class Keyring:
    """Keys by wire name."""

    def __init__(self, keys: tuple[Key, ...] = ()) -> None:
        self.by_wire = {k.wire: k for k in keys}
        self.by_name = {k.name: k for k in keys}

    def __bool__(self) -> bool:
        return bool(self.by_wire)


class Tsig(NamedTuple):
    start: int  # offset of the TSIG RR in the message
    key: bytes  # the key name, wire, lower case
    alg: bytes  # the algorithm name, wire, lower case
    time_signed: int
    fudge: int
    mac: bytes
    original_id: int
    error: int
    other: bytes


def find(msg: bytes) -> Tsig | None:
    """The message's TSIG record, or None. Raises Malformed (FORMERR) for a TSIG
    that is not the last record, or a broken one."""
    if len(msg) < 12:
        raise Malformed("short message")
    qd, an, ns, ar = struct.unpack_from("!HHHH", msg, 4)
    if not ar:
        return None
    pos = 12
    for _ in range(qd):
        _, pos = read_name(msg, pos)
        pos += 4
    total = an + ns + ar
    for i in range(total):
        start = pos
        owner, pos = read_name(msg, pos)
        if pos + 10 > len(msg):
            raise Malformed("truncated RR header")
        rtype, rclass, ttl, rdlen = _RRHDR.unpack_from(msg, pos)
        pos += 10
        end = pos + rdlen
        if end > len(msg):
            raise Malformed("RDATA runs past the end")
        if rtype == T_TSIG:
            if i != total - 1 or end != len(msg):
                raise Malformed("TSIG is not the last record")
            if rclass != CLASS_ANY or ttl != 0:
                raise Malformed("TSIG class must be ANY and TTL 0")
            return _rdata(msg, start, owner, pos, end)
        pos = end
    return None


def _rdata(msg: bytes, start: int, owner: bytes, pos: int, end: int) -> Tsig:
    alg, p = read_name(msg, pos)
    if p + 10 > end:
        raise Malformed("TSIG RDATA too short")
    hi, lo, fudge = _U48.unpack_from(msg, p)
    (maclen,) = struct.unpack_from("!H", msg, p + 8)
    p += 10
    mac = msg[p : p + maclen]
    p += maclen
    if p + 6 > end:
        raise Malformed("TSIG RDATA too short")
    orig, error, olen = struct.unpack_from("!HHH", msg, p)
    p += 6
    other = msg[p : p + olen]
    if p + olen != end:
        raise Malformed("TSIG RDATA length does not add up")
    return Tsig(start, owner.lower(), alg.lower(), (hi << 32) | lo, fudge, mac, orig, error, other)


def _variables(key: bytes, alg: bytes, when: int, fudge: int, error: int, other: bytes) -> bytes:
    return (
        key
        + struct.pack("!HI", CLASS_ANY, 0)
        + alg
        + _U48.pack(when >> 32, when & 0xFFFFFFFF, fudge)
        + struct.pack("!HH", error, len(other))
        + other
    )


def _unsigned(msg: bytes, t: Tsig) -> bytes:
    """The message as it was before its TSIG was added: without it, ARCOUNT one less,
    the original ID."""
    (ar,) = struct.unpack_from("!H", msg, 10)
    return struct.pack("!H", t.original_id) + msg[2:10] + struct.pack("!H", ar - 1) + msg[12 : t.start]


class Verdict(NamedTuple):
    error: int  # 0, BADKEY, BADSIG or BADTIME
    key: Key | None  # the key (None for BADKEY)
    formerr: bool = False


def verify(msg: bytes, t: Tsig, keyring: Keyring, now: float | None = None) -> Verdict:
    """Check a request's TSIG (RFC 8945 5.2): key, then MAC, then time."""
    key = keyring.by_wire.get(t.key)
    if key is None or key.alg_wire != t.alg:
        return Verdict(BADKEY, None)
    full = ALGORITHMS[key.algorithm]().digest_size
    if len(t.mac) > full or len(t.mac) < max(10, full // 2):
        return Verdict(0, key, formerr=True)
    want = key.mac(_unsigned(msg, t) + _variables(t.key, t.alg, t.time_signed, t.fudge, t.error, t.other))
    if not hmac.compare_digest(want[: len(t.mac)], t.mac):
        return Verdict(BADSIG, key)
    now_i = int(time.time() if now is None else now)
    if abs(now_i - t.time_signed) > t.fudge:
        return Verdict(BADTIME, key)
    return Verdict(0, key)


def verify_reply(msg: bytes, t: Tsig, key: Key, request_mac: bytes, now: float | None = None) -> str | None:
    """Check the TSIG of a reply to a request we signed: None when good, else why not."""
    if t.key != key.wire or t.alg != key.alg_wire:
        return f"the reply is signed with another key ({describe(t)})"
    data = struct.pack("!H", len(request_mac)) + request_mac + _unsigned(msg, t)
    want = key.mac(data + _variables(t.key, t.alg, t.time_signed, t.fudge, t.error, t.other))
    if len(t.mac) < 10 or not hmac.compare_digest(want[: len(t.mac)], t.mac):
        return "the reply's TSIG does not verify"
    if abs(int(time.time() if now is None else now) - t.time_signed) > t.fudge:
        return "the reply's TSIG time is outside its fudge"
    return None


def _record(
    key: bytes, alg: bytes, when: int, fudge: int, mac: bytes, orig: int, error: int, other: bytes
) -> bytes:
    rdata = (
        alg
        + _U48.pack(when >> 32, when & 0xFFFFFFFF, fudge)
        + struct.pack("!H", len(mac))
        + mac
        + struct.pack("!HHH", orig, error, len(other))
        + other
    )
    return key + _RRHDR.pack(T_TSIG, CLASS_ANY, 0, len(rdata)) + rdata


def _append(msg: bytes, rr: bytes) -> bytes:
    (ar,) = struct.unpack_from("!H", msg, 10)
    return msg[:10] + struct.pack("!H", ar + 1) + msg[12:] + rr


def record_size(key: Key) -> int:
    """Octets a TSIG record with this key adds to a message (no other data)."""
    size: int = ALGORITHMS[key.algorithm]().digest_size
    return len(key.wire) + 10 + len(key.alg_wire) + 16 + size


def sign(
    msg: bytes,
    key: Key,
    prior_mac: bytes = b"",
    *,
    continuation: bool = False,
    error: int = 0,
    other: bytes = b"",
    when: int | None = None,
) -> tuple[bytes, bytes]:
    """``msg`` with a TSIG record appended: (signed message, its MAC).

    ``prior_mac``: the request's MAC for a reply (empty for a request), or the
    previous message's MAC with ``continuation`` for the messages after the first
    of a multi-message answer (RFC 8945 5.3.1: only the timers are covered then).
    """
    now = int(time.time()) if when is None else when
    orig = (msg[0] << 8) | msg[1]
    parts = [struct.pack("!H", len(prior_mac)) + prior_mac] if prior_mac or continuation else []
    parts.append(msg)
    if continuation:
        parts.append(_U48.pack(now >> 32, now & 0xFFFFFFFF, FUDGE))
    else:
        parts.append(_variables(key.wire, key.alg_wire, now, FUDGE, error, other))
    mac = key.mac(b"".join(parts))
    return _append(msg, _record(key.wire, key.alg_wire, now, FUDGE, mac, orig, error, other)), mac


def unsigned_error(msg: bytes, t: Tsig, error: int) -> bytes:
    """``msg`` (a reply) with the TSIG record RFC 8945 5.2 asks for after BADKEY or
    BADSIG: the request's key and algorithm, its time, an empty MAC, the error."""
    return _append(msg, _record(t.key, t.alg, t.time_signed, t.fudge, b"", t.original_id, error, b""))


def badtime_other() -> bytes:
    """BADTIME's other data: our time (48 bits)."""
    now = int(time.time())
    return struct.pack("!HI", now >> 32, now & 0xFFFFFFFF)


def strip(msg: bytes, t: Tsig) -> bytes:
    """The request without its TSIG (ARCOUNT one less), to answer as usual."""
    return msg[:10] + struct.pack("!H", ((msg[10] << 8) | msg[11]) - 1) + msg[12 : t.start]


def describe(t: Tsig) -> str:
    return names.to_text(t.key).rstrip(".")
