"""Signing RRsets at answer time, with cached signatures (RFC 4034, RFC 9824).

RRsets arrive as the engine's wire tuples (owner, type, TTL, rdata: lowercase
owner, uncompressed rdata). :meth:`Signer.rrsig` returns the RRSIG rdata for
one RRset: the signed data is built in canonical form (RFC 4034 6.2: names in
rdata lowercased for the types that say so, which dnspython's
``to_digestable`` knows; RRs sorted by their canonical rdata).

Validity windows are quantised (:func:`window`): every signature made in the
same step has the same inception and expiration, so a signature of the same
RRset can be reused for the whole step. Balanced names answer from a small set
of possible RRsets, so nearly every signed balanced answer is a cache hit. The
cache is bounded (least recently used out) and keyed by the rdata as the engine
holds it; the canonical form is computed on a miss only.

Denial of existence is compact (RFC 9824): an NSEC owned by the query name,
whose next name is the query name's immediate successor (``\\000.qname``), with
NXNAME (type 128) in its bitmap when the name does not exist; one signature
per negative answer, nothing to walk.
"""

from __future__ import annotations

import collections
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

import dns.rdata
import dns.rdataclass
import dns.rdatatype

from gslb.dnssec.keys import SigningKey

T_RRSIG, T_NSEC, T_NXNAME = 46, 47, 128
WEEK = 7 * 86400
_FRAG = struct.Struct("!HHI")  # an RR fragment's type, class, TTL (after the 2-byte owner pointer)
_SIG_RR = struct.Struct("!HHIH")


@dataclass(frozen=True, slots=True)
class Validity:
    """How signatures' validity windows are laid out (seconds)."""

    step: int = WEEK  # inception moves in steps of this
    lifetime: int = 3 * WEEK  # expiration - inception (beyond the backdating)
    backdate: int = 3600  # inception this far before the step began (clock skew)


def window(now: float, v: Validity) -> tuple[int, int]:
    """(inception, expiration) for a signature made at ``now``: the same for the whole
    step, so signatures can be reused; 32-bit serial-number times (RFC 4034 3.1.5)."""
    start = int(now) // v.step * v.step
    inception = start - v.backdate
    return inception & 0xFFFFFFFF, (start + v.lifetime) & 0xFFFFFFFF


def labels(owner: bytes) -> int:
    """RRSIG labels field: the owner's labels, root and a leading wildcard not counted."""
    n, pos = 0, 0
    while owner[pos]:
        n += 1
        pos += 1 + owner[pos]
    return n - 1 if owner.startswith(b"\x01*") else n


def canonical_rdata(rtype: int, rdata: bytes) -> bytes:
    """The rdata in canonical form (RFC 4034 6.2, as updated by RFC 6840)."""
    if rtype in (1, 28, T_NSEC, 16):  # A, AAAA, NSEC (next name kept as is), TXT: as they are
        return rdata
    rd = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.RdataType.make(rtype), rdata, 0, len(rdata))
    return rd.to_digestable()


@dataclass(slots=True)
class SignerStats:
    made: int = 0
    hits: int = 0
    misses: int = 0


@dataclass(slots=True)
class Signer:
    """One zone's signer: its key, its name, the window rules and the signature cache."""

    key: SigningKey
    zone: bytes  # the signer name: the zone apex, lowercase wire
    validity: Validity = field(default_factory=Validity)
    extra: tuple[SigningKey, ...] = ()  # a second key during a rollover: everything signed by both
    cache_max: int = 100_000
    stats: SignerStats = field(default_factory=SignerStats)
    _cache: collections.OrderedDict[tuple[object, ...], bytes] = field(
        default_factory=collections.OrderedDict
    )
    # whole signed replies (after the ID) that depend on the query alone, for the current
    # validity step; emptied when the step moves on, so no reply outlives its window
    replies_max: int = 50_000
    _replies: dict[tuple[bytes, bool], bytes] = field(default_factory=dict)
    _replies_step: int = -1
    # the RRSIG RRs (wire, owner a pointer to the question) of balanced answers, keyed by
    # (owner, the answer's RR fragments): a signed balanced answer is a pick and a lookup
    _answers: dict[tuple[bytes, ...], tuple[bytes, int]] = field(default_factory=dict)
    _answers_step: int = -1

    def cached_reply(self, key: tuple[bytes, bool], now: float) -> bytes | None:
        step = int(now) // self.validity.step
        if step != self._replies_step:
            self._replies.clear()
            self._replies_step = step
        return self._replies.get(key)

    def keep_reply(self, key: tuple[bytes, bool], reply: bytes) -> None:
        if len(self._replies) >= self.replies_max:
            self._replies.clear()  # a flood of distinct questions: start over
        self._replies[key] = reply

    def answer_rrsigs(self, owner: bytes, frags: list[bytes], now: float) -> tuple[bytes, int]:
        """The RRSIG RRs for an answer made of ``frags`` (RR fragments whose owner is the
        question, ``gslb.dns.wire.member_fragment``) and how many there are; kept per validity
        step like whole replies, so the same picked set is signed and encoded once."""
        step = int(now) // self.validity.step
        if step != self._answers_step:
            self._answers.clear()
            self._answers_step = step
        key = (owner, *frags)
        hit = self._answers.get(key)
        if hit is not None:
            self.stats.hits += 1
            return hit
        f0 = frags[0]
        rtype, _, ttl = _FRAG.unpack_from(f0, 2)
        sigs = self.rrsigs(owner, rtype, ttl, [f[12:] for f in frags], now)
        out = b"".join(b"\xc0\x0c" + _SIG_RR.pack(T_RRSIG, 1, ttl, len(s)) + s for s in sigs), len(sigs)
        if len(self._answers) >= self.replies_max:
            self._answers.clear()
        self._answers[key] = out
        return out

    def rrsigs(
        self, owner: bytes, rtype: int, ttl: int, rdatas: Iterable[bytes], now: float, keep: bool = True
    ) -> list[bytes]:
        """One RRSIG per key (more than one during a key rollover, docs/dnssec.md).
        ``keep``: False for an RRset that will not come again (the NSEC of a name that
        does not exist: a repeat of the question finds the whole reply kept instead),
        so a flood of random names does not push out the signatures worth keeping."""
        raw = tuple(rdatas)
        out = [self.rrsig(owner, rtype, ttl, raw, now, keep=keep)]
        for k in self.extra:
            out.append(self.rrsig(owner, rtype, ttl, raw, now, k, keep=keep))
        return out

    def rrsig(
        self,
        owner: bytes,
        rtype: int,
        ttl: int,
        rdatas: Iterable[bytes],
        now: float,
        key: SigningKey | None = None,
        keep: bool = True,
    ) -> bytes:
        """The RRSIG rdata covering the RRset (``owner`` lowercase wire, ``ttl`` the
        RRset's original TTL), by ``key`` (default: the zone's first key)."""
        k = key or self.key
        raw = tuple(sorted(rdatas))
        inception, expiration = window(now, self.validity)
        ck = (owner, rtype, ttl, raw, inception, k.tag)  # the canonical form is made on a miss only
        hit = self._cache.get(ck)
        if hit is not None:
            self._cache.move_to_end(ck)
            self.stats.hits += 1
            return hit
        self.stats.misses += 1
        canon = tuple(sorted({canonical_rdata(rtype, r) for r in raw}))
        head = (
            struct.pack("!HBBIIIH", rtype, k.algorithm, labels(owner), ttl, expiration, inception, k.tag)
            + self.zone
        )
        rr_head = owner + struct.pack("!HHI", rtype, 1, ttl)
        data = head + b"".join(rr_head + struct.pack("!H", len(r)) + r for r in canon)
        sig = head + k.sign(data)
        self.stats.made += 1
        if keep:
            self._cache[ck] = sig
            if len(self._cache) > self.cache_max:
                self._cache.popitem(last=False)
        return sig


def type_bitmap(types: Iterable[int]) -> bytes:
    """An NSEC type bitmap (RFC 4034 4.1.2)."""
    windows: dict[int, bytearray] = {}
    for t in sorted(set(types)):
        w, low = t >> 8, t & 0xFF
        bm = windows.setdefault(w, bytearray(32))
        bm[low >> 3] |= 0x80 >> (low & 7)
    out = bytearray()
    for w, bm in sorted(windows.items()):
        n = max(i for i, b in enumerate(bm) if b) + 1
        out += bytes((w, n)) + bm[:n]
    return bytes(out)


def compact_nsec(qname: bytes, present: Iterable[int] | None) -> bytes:
    """The NSEC rdata of a compact denial for ``qname`` (RFC 9824): next name
    ``\\000.qname``; the types at the name plus RRSIG and NSEC, or, for a name that does
    not exist (``present`` None), RRSIG, NSEC and NXNAME."""
    if present is None:
        return b"\x01\x00" + qname + _NX_BITMAP
    return b"\x01\x00" + qname + type_bitmap({T_RRSIG, T_NSEC} | set(present))


_NX_BITMAP = type_bitmap((T_RRSIG, T_NSEC, T_NXNAME))  # every name that does not exist has this one
