"""The pure answer function: query bytes + serving state + client -> reply bytes.

No sockets, no clock, no global RNG: the transports pass the RNG in. The fast
path is a dict lookup on (lowercased qname, qtype) that yields either a
precompiled answer (spliced after the echoed question) or a balanced record
(a policy pick over precomputed per-member fragments). Everything else (names
reached through wildcards, NXDOMAIN, NODATA for other types, CNAME chains
into balanced names, referrals for deeper names) takes the RFC 1034 4.3.2
lookup in :func:`resolve`, whose result is encoded per query.
"""

from __future__ import annotations

import bisect
import dataclasses
import random
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple, cast

from gslb import names
from gslb.dnsconst import (
    BADVERS,
    CLASS_IN,
    EDNS_MAX_UDP,
    FORMERR,
    NOERROR,
    NOTIMP,
    NXDOMAIN,
    REFUSED,
    SERVFAIL,
    T_A,
    T_AAAA,
    T_ANY,
    T_AXFR,
    T_CNAME,
    T_DS,
    T_HINFO,
    T_IXFR,
    T_NS,
    T_SOA,
)
from gslb.dnssec import keys as dnssec_keys
from gslb.dnssec.signer import T_NSEC, T_RRSIG, Signer, compact_nsec
from gslb.geo import UNKNOWN, GeoInfo, GeoLookup
from gslb.geo_compile import LeafSource, compile_inline, compiled_rules
from gslb.health.view import ALL_UP, HealthView, MemberKey
from gslb.model import Location, Zone
from gslb.policies import CHOICE, NO_CLIENT, ONE, PickContext, Variants
from gslb.serving import (
    BalancedEntry,
    BalancedPlan,
    BalancedRef,
    ClientAddr,
    CompiledZone,
    Outcome,
    ServingState,
    Static,
    StatsKey,
    compile_zone,
    match_rule,
    plan_balanced,
)
from gslb.wire import (
    OPT_ECS,
    TC,
    BadOption,
    Edns,
    Query,
    RRw,
    client_of,
    ede_option,
    encode_sections,
    header,
    header_ok,
    nsid_option,
    opt_record,
    parse_query,
    query_opt,
    question_end,
)

# The NSID option (RFC 5001) this process adds to replies whose query asked for it: the
# node's name (``set_nsid``, once at start-up). A process has one name, so this is
# process-wide rather than part of each serving state.
_NSID = b""


def set_nsid(name: str) -> None:
    global _NSID
    _NSID = nsid_option(name.encode()[:255])


def _options(edns: Edns, scope: int) -> bytes:
    """ECS (echoed with ``scope``) and NSID options of a reply, as the query asked."""
    ecs = edns.ecs.option(scope) if edns.ecs is not None else b""
    return ecs + _NSID if edns.nsid else ecs


# Extended DNS Errors (RFC 8914), in replies to queries with EDNS: why a query was
# refused or failed. docs/protocol.md lists each case.
EDE_OTHER, EDE_PROHIBITED, EDE_NOT_AUTHORITATIVE, EDE_NOT_SUPPORTED = 0, 18, 20, 21
_EDE_NOT_AUTH = ede_option(EDE_NOT_AUTHORITATIVE)
_EDE_CLASS = ede_option(EDE_NOT_AUTHORITATIVE, "class IN only")
_EDE_OPCODE = ede_option(EDE_NOT_SUPPORTED, "opcode QUERY only")
_EDE_XFR = ede_option(EDE_PROHIBITED, "zone transfers: TCP, from allowed networks")


def _no_member(name: bytes) -> bytes:
    """The EDE of a ``when_all_down`` SERVFAIL, REFUSED or NODATA: which record had no
    healthy member (rare: built when it happens)."""
    return ede_option(EDE_OTHER, f"no healthy member for {names.to_text(name)}")


MAX_CHAIN = 8
HINFO_RFC8482 = b"\x07RFC8482\x00"
CACHE_MAX = 50_000  # cached replies per state and transport


class Client(NamedTuple):
    """Where a query came from: the socket peer, and whether it is UDP."""

    host: str
    udp: bool
    # response rate limiting will not send a negative answer to this client: a signed
    # zone's denial is then left unsigned (see respond())
    limited: bool = False


@dataclass(slots=True)
class Plan:
    """The content of one answer before encoding (RFC 1034 4.3.2 result)."""

    rcode: int = NOERROR
    aa: bool = True
    answer: list[RRw] = field(default_factory=list)
    authority: list[RRw] = field(default_factory=list)
    additional: list[RRw] = field(default_factory=list)
    additional_required: bool = False  # referral glue (RFC 9471)
    dynamic: bool = False  # depends on health or the client: never precompiled
    scope: int = 0  # ECS scope prefix
    pool: str = ""  # the pool that answered a balanced name (for explain/metrics)
    pick: Pick | None = None
    balanced: bytes = b""  # the balanced name that answered


# --------------------------------------------------------------------- the answer


def answer(data: bytes, state: ServingState, host: str, udp: bool, rng: random.Random) -> bytes | None:
    """Answer one DNS message from peer ``host``; None means send nothing.

    ``udp`` selects the size limit: over UDP an answer larger than the
    client's limit (512, or its EDNS size up to 1232) is truncated (TC=1).
    """
    return _answer(data, state, Client(host, udp), rng)[0]


def respond(
    data: bytes, state: ServingState, host: str, udp: bool, rng: random.Random, limited: bool = False
) -> tuple[bytes, StatsKey] | None:
    """:func:`answer`, through the state's reply cache, with the key the reply counts under.

    A reply that depends only on the query bytes after the ID (static data,
    negative answers, refusals) is kept keyed by those bytes, so the next
    identical query costs a dict lookup and a concatenation. For a balanced
    name the parsed query is kept instead, and each query gets a fresh pick
    against the current health, loads and client: only the parsing is saved.

    ``limited``: the transport's rate limiter will drop or slip a negative answer to
    this client (``RateLimiter.negative_exhausted``), so a signed zone's denial is
    answered without its signatures (the costly part of a random-subdomain flood with
    DO=1). Such a reply must never be sent: if the limiter lets it through after all,
    the transport asks again without ``limited``.
    """
    cache = state.udp_cache if udp else state.tcp_cache
    key = data[2:]
    hit = cache.get(key)
    if hit is not None:
        if type(hit) is tuple:  # a FixedReply
            return data[:2] + hit[0], hit[1]
        e = cast(BalancedEntry, hit)
        fast = _memo_hit(e, data, state, host, rng, e.ecs_client)
        if fast is None:
            fast = _balanced_cached(e, data, state, host, rng)
        if fast is not None:
            return fast
        # anything but a plain NOERROR pick (all down, NODATA, too big for UDP): the full path
    elif data[10:12] == b"\x00\x01":
        # an ECS query from a client subnet not seen yet: the entry of the same query from
        # any subnet serves it, with this client's address (resolvers send thousands)
        t = _ecs_template(data)
        if t is not None:
            entry = cast(BalancedEntry | None, cache.get(t[0]))
            if entry is not None:
                fast = _memo_hit(entry, data, state, host, rng, t[1])
                if fast is None:
                    fast = _balanced_ecs(entry, data, state, host, rng, t)
                if fast is not None:
                    return fast
    reply, token = _answer(data, state, Client(host, udp, limited), rng)
    if reply is None:
        return None
    skey = stats_key(reply, udp, state)
    if token is not False and len(data) >= 12:
        if len(cache) >= CACHE_MAX:
            cache.clear()  # a flood of distinct names: start over rather than track age
        if token is True:
            cache[key] = (reply[2:], skey)
        elif reply[3] & 0xF == NOERROR:
            q = token
            flags = (reply[2] << 8 | reply[3]) & ~(TC | 0xF)
            payload = 512 if q.edns is None else q.edns.payload
            limit = max(512, min(payload, EDNS_MAX_UDP)) if udp else 65535
            ref = cast(BalancedRef, state.fast[(q.key, q.qtype)])
            entry = BalancedEntry(q, ref.name, skey[0], skey, flags, limit, _ecs_client(q))
            if q.edns is not None and q.edns.do and state.signers:
                signer = state.signers.get(skey[0])
                if signer is not None:
                    entry.sign = signer.answer_rrsigs
            cache[key] = entry
            if entry.sign is None:
                if entry.ecs_client is None:
                    entry.tail = 0
                else:
                    t = _ecs_template(data)
                    if t is not None:
                        entry.tail = len(t[2])
                        cache[t[0]] = entry
    return reply, skey


def _memo_key(plan: BalancedPlan, client: ClientAddr | None, host: str) -> int | None:
    """What a plan's answer depends on besides health, as one number (None: more than
    that, e.g. a hashed pick, or an address the tables do not decide)."""
    if not plan.needs_client:
        return 0
    table = plan.decisions
    if table is None:
        return None
    if client is not None and plan.record.ecs:
        return cast(int | None, table.key(client.family, client.addr, client.source))
    fam, addr = client_of(host)
    return cast(int | None, table.key(fam, addr, 32 if fam == 4 else 128))


def _memo_hit(
    e: BalancedEntry,
    data: bytes,
    state: ServingState,
    host: str,
    rng: random.Random,
    client: ClientAddr | None,
) -> tuple[bytes, StatsKey] | None:
    """A balanced answer from the replies the entry keeps per routing decision (filled by
    :func:`_memo_fill` from the full pick): a table look-up, at most one draw from the RNG
    (the same draw the policy makes), a concatenation. gslb/_fastpath.c does the same in C."""
    if e.memo_plan is not state.plans[e.name] or e.tail < 0:
        return None
    key = _memo_key(e.memo_plan, client, host)
    m = e.memo.get(key) if key is not None else None
    if m is None:
        return None
    kind, replies, cum, ckey = m
    if kind == ONE:
        r = replies[0]
    elif kind == CHOICE:
        r = replies[bisect.bisect(cum, rng.random() * (cum[-1] + 0.0), 0, len(cum) - 1)]
    else:
        r = replies[rng.randrange(len(replies))]
    counts = state.balanced_counts
    if counts is not None:
        counts[ckey] += 1
    return data[:2] + r + data[len(data) - e.tail :], e.skey


def _memo_fill(
    e: BalancedEntry, state: ServingState, host: str, client: ClientAddr | None, pick: PickTuple, end: bytes
) -> None:
    """After a full pick for a cache entry: keep every reply that decision can give
    (``end``: the reply's OPT record, without the ECS address when the entry has one)."""
    if e.tail < 0:
        return
    plan = state.plans[e.name]
    if e.memo_plan is not plan:
        e.memo_plan, e.memo = plan, {}
    if plan.policy.uses_client or plan.policy.uses_loads:
        return
    key = _memo_key(plan, client, host)
    frags, _, outcome, _, pool, _, _ = pick
    if key is None or outcome is None:
        return
    if outcome.kind == "serve_all":
        variants: Variants[bytes] | None = Variants(ONE, (tuple(frags),))
    else:
        choice = next(p for p in outcome.pools if p.name == pool)
        variants = plan.policy.variants(choice.cands, plan.count)
    if variants is None:
        return
    replies = []
    fixed = 12 + len(e.question) + len(end) + e.tail
    for items in variants.answers:
        body = b"".join(items)
        if fixed + len(body) > e.limit:
            return
        replies.append(_HDR_TAIL.pack(e.flags, 1, len(items), 0, e.ar) + e.question + body + end)
    if len(e.memo) >= MEMO_MAX:
        e.memo.clear()
    e.memo[key] = (variants.kind, tuple(replies), variants.cum_weights, (e.name, pool, outcome.kind))


_HDR_TAIL = struct.Struct("!HHHHH")  # flags, qd, an, ns, ar
_SIG_HEAD = struct.Struct("!HHIH")  # an RR's type, class, TTL, RDLENGTH (after its owner)


def _balanced_cached(
    e: BalancedEntry, data: bytes, state: ServingState, host: str, rng: random.Random
) -> tuple[bytes, StatsKey] | None:
    """A balanced name's NOERROR answer from its cache entry: pick, then splice.

    None sends the query down the full path (it picks again and counts there),
    which handles the rest: no members (NODATA), servfail/refuse, truncation.
    """
    picked = _pick(state.plans[e.name], e.qtype, e.q, host, rng, state.geo, state.loads, e.ecs_client)
    frags, scope, outcome, _, pool, _, _ = picked
    # balanced_rcode() and count_balanced() written out here: the two calls cost 830
    # instructions per answer (callgrind) on the path every repeated balanced query takes;
    # test_udp_io checks this path's bytes and counts against the full path's
    if not frags or outcome is None or outcome.kind in ("servfail", "refuse"):
        return None
    opt = e.opts.get(scope)
    if opt is None:
        edns = e.q.edns
        if edns is None:
            opt = b""
        else:
            opt = opt_record(edns.do, 0, _options(edns, scope), edns.co)
        e.opts[scope] = opt
    if e.tail >= 0:
        _memo_fill(e, state, host, e.ecs_client, picked, opt[: len(opt) - e.tail])
    body = frags[0] if len(frags) == 1 else b"".join(frags)
    an = len(frags)
    sign = e.sign
    if sign is not None:  # a signed zone, DO=1: the picked set's cached RRSIGs
        sigs, n = sign(e.q.key, frags, time.time())
        body += sigs
        an += n
    question = e.question
    if 12 + len(question) + len(body) + len(opt) > e.limit:
        return None
    counts = state.balanced_counts
    if counts is not None:
        counts[(e.name, pool, outcome.kind)] += 1
    return data[:2] + _HDR_TAIL.pack(e.flags, 1, an, 0, e.ar) + question + body + opt, e.skey


_ECS_HEAD = struct.Struct("!HHHBB")  # option code, length, family, source, scope


def _ecs_template(data: bytes) -> tuple[tuple[str, bytes], ClientAddr, bytes] | None:
    """For a query whose only EDNS option is a valid ECS option ending the packet (what
    resolvers send): (the key of the same query from any client, the client, its address
    octets). None for anything else, which the full path parses."""
    opt = query_opt(data)
    if opt < 0:
        return None
    rdlen = (data[opt + 9] << 8) | data[opt + 10]
    if rdlen < 8:
        return None
    code, olen, family, source, scope = _ECS_HEAD.unpack_from(data, opt + 11)
    n = (source + 7) >> 3
    if code != OPT_ECS or olen != rdlen - 4 or olen != 4 + n or scope or not source:
        return None
    if family == 1:
        if source > 32:
            return None
        full = 4
    elif family == 2:
        if source > 128:
            return None
        full = 16
    else:
        return None
    raw = data[-n:]
    if source & 7 and raw[-1] & (0xFF >> (source & 7)):
        return None  # bits past the prefix: FORMERR, from the full path
    addr = int.from_bytes(raw, "big") << ((full - n) * 8)
    return ("ecs", data[2 : len(data) - n]), ClientAddr(4 if family == 1 else 6, addr, source, True), raw


def _balanced_ecs(
    e: BalancedEntry,
    data: bytes,
    state: ServingState,
    host: str,
    rng: random.Random,
    t: tuple[tuple[str, bytes], ClientAddr, bytes],
) -> tuple[bytes, StatsKey] | None:
    """:func:`_balanced_cached` for another client subnet: the pick for this client and
    its ECS option echoed (the OPT record before the address octets is kept per scope)."""
    picked = _pick(state.plans[e.name], e.qtype, e.q, host, rng, state.geo, state.loads, t[1])
    frags, scope, outcome, _, pool, _, _ = picked
    if not frags or outcome is None or outcome.kind in ("servfail", "refuse"):
        return None
    head = e.ecs_heads.get(scope)
    if head is None:
        edns = e.q.edns
        assert edns is not None and edns.ecs is not None
        opt = opt_record(edns.do, 0, _options(edns, scope), edns.co)
        head = e.ecs_heads[scope] = opt[: len(opt) - len(edns.ecs.address)]
    if e.tail >= 0:
        _memo_fill(e, state, host, t[1], picked, head)
    body = frags[0] if len(frags) == 1 else b"".join(frags)
    question = e.question
    if 12 + len(question) + len(body) + len(head) + len(t[2]) > e.limit:
        return None
    counts = state.balanced_counts
    if counts is not None:
        counts[(e.name, pool, outcome.kind)] += 1
    return data[:2] + _HDR_TAIL.pack(e.flags, 1, len(frags), 0, e.ar) + question + body + head + t[2], e.skey


def stats_key(reply: bytes, udp: bool, state: ServingState) -> StatsKey:
    """(zone origin or b"", qtype, rcode, transport) of one reply, for gslb_queries."""
    transport = "udp" if udp else "tcp"
    n = len(reply)
    if n < 17 or reply[5] != 1:  # QDCOUNT 1, or no question to learn from
        return (b"", 0, reply[3] & 0xF, transport)
    pos = question_end(reply)
    qtype = (reply[pos + 1] << 8 | reply[pos + 2]) if pos + 2 < n else 0
    zone = state.find_zone(reply[12 : pos + 1].lower()) if pos < n else None
    return (zone.origin if zone is not None else b"", qtype, reply[3] & 0xF, transport)


def _answer(
    data: bytes, state: ServingState, client: Client, rng: random.Random
) -> tuple[bytes | None, bool | Query]:
    """The reply (None: send nothing) and how it may be cached (see :func:`respond`):
    True (the reply), False (not at all), or the parsed query of a balanced name."""
    if not header_ok(data):
        return None, False
    try:
        q = parse_query(data)
    except BadOption as e:  # a malformed ECS option: FORMERR, and the EDE says what
        end = question_end(data) + 5
        qid, qflags = (data[0] << 8) | data[1], (data[2] << 8) | data[3]
        opt = opt_record(False, 0, ede_option(EDE_OTHER, str(e)))
        return header(qid, qflags, False, FORMERR, 1, 0, 0, 1) + data[12:end] + opt, True
    except Exception:  # Malformed, or anything a hostile packet provokes
        return _bare(data, FORMERR), False
    edns = q.edns
    if edns is not None and edns.version != 0:
        return _finish(q, False, BADVERS, b"", (0, 0, 0), None, client, 0), True
    if q.opcode != 0:
        return _finish(q, False, NOTIMP, b"", (0, 0, 0), None, client, 0, _EDE_OPCODE), True
    if q.qclass != CLASS_IN:
        return _finish(q, False, REFUSED, b"", (0, 0, 0), None, client, 0, _EDE_CLASS), True
    qtype = q.qtype
    key = q.key
    if edns is not None and edns.do and state.signers and qtype not in (T_AXFR, T_IXFR):
        zone = state.find_zone(key)
        signer = state.signers.get(zone.origin) if zone is not None else None
        if zone is not None and signer is not None:
            return _signed(q, data, state, zone, signer, client, rng)
    hit = state.fast.get((key, qtype))
    if hit is not None:
        if isinstance(hit, Static):
            small: tuple[bytes, tuple[int, int, int], bool] | None = (
                hit.small_body,
                hit.small_counts,
                hit.additional_required,
            )
            return _finish(q, hit.aa, hit.rcode, hit.body, hit.counts, small, client, 0), True
        reply = _balanced(q, hit.name, state, client, rng)
        if reply is not None:
            return reply, q
        # NODATA: the general lookup, which adds the SOA (and picks and counts there)
    if qtype in (T_AXFR, T_IXFR):
        return _finish(q, False, REFUSED, b"", (0, 0, 0), None, client, 0, _EDE_XFR), True
    zone = state.find_zone(key)
    if zone is None:
        return _finish(q, False, REFUSED, b"", (0, 0, 0), None, client, 0, _EDE_NOT_AUTH), True
    p = resolve(state, zone, key, qtype, q, client, rng)
    fixed = not p.dynamic
    if p.rcode in (SERVFAIL, REFUSED):
        ede = _no_member(p.balanced) if p.balanced else b""
        return _finish(q, False, p.rcode, b"", (0, 0, 0), None, client, p.scope, ede), fixed
    if not p.answer and not p.additional and len(p.authority) == 1 and p.authority[0] is zone.neg_soa_rr:
        # NXDOMAIN / NODATA: the SOA owner (the apex) is a suffix of the qname
        ptr = (0xC000 | (12 + len(key) - len(zone.origin))).to_bytes(2, "big")
        pk = p.pick
        ede = _no_member(p.balanced) if pk is not None and pk.outcome and pk.outcome.kind == "nodata" else b""
        return _finish(q, True, p.rcode, ptr + zone.neg_tail, (0, 1, 0), None, client, p.scope, ede), fixed
    body, an, ns, ar = encode_sections(key, (p.answer, p.authority, p.additional))
    small = None
    if p.additional and not p.additional_required:
        sb, san, sns, _ = encode_sections(key, (p.answer, p.authority, []))
        small = (sb, (san, sns, 0), False)
    elif p.additional_required:
        small = (body, (an, ns, ar), True)
    return _finish(q, p.aa, p.rcode, body, (an, ns, ar), small, client, p.scope), fixed


def _balanced(q: Query, name: bytes, state: ServingState, client: Client, rng: random.Random) -> bytes | None:
    """The reply for balanced name ``name`` (from the fast path), or None for NODATA."""
    pk = pick(state.plans[name], q.qtype, q, client.host, rng, state.geo, state.loads)
    rcode = balanced_rcode(pk.outcome)
    if rcode == NOERROR and not pk.frags:
        return None  # NODATA: resolve() answers it with the SOA, and counts it
    count_balanced(state, name, pk.pool, pk.outcome)
    if rcode != NOERROR:
        return _finish(q, False, rcode, b"", (0, 0, 0), None, client, pk.scope, _no_member(name))
    frags = pk.frags
    return _finish(q, True, NOERROR, b"".join(frags), (len(frags), 0, 0), None, client, pk.scope)


def _sign_all(rrs: list[RRw], signer: Signer, now: float) -> list[RRw]:
    """The RRs with an RRSIG after each RRset (consecutive RRs of one owner and type)."""
    out: list[RRw] = []
    i = 0
    while i < len(rrs):
        owner, rtype, ttl, _ = rrs[i]
        j = i
        while j < len(rrs) and rrs[j][0] == owner and rrs[j][1] == rtype:
            j += 1
        group = rrs[i:j]
        out += group
        for sig in signer.rrsigs(owner, rtype, ttl, [r[3] for r in group], now):
            out.append((owner, T_RRSIG, ttl, sig))
        i = j
    return out


def _signed(
    q: Query,
    data: bytes,
    state: ServingState,
    zone: CompiledZone,
    signer: Signer,
    client: Client,
    rng: random.Random,
) -> tuple[bytes, bool | Query]:
    """The answer to a DO=1 query for a signed zone: RRSIGs on every authoritative
    RRset, compact denial (RFC 9824) for names and types that do not exist, DS or a
    signed proof of no DS at delegations. Signatures come from the signer's cache;
    whole replies that depend on the query alone (not on health or the client) are
    kept per signature window (``Signer.replies``), so a repeated static question is
    a lookup and an ID splice. A balanced name's NOERROR answer is a pick plus the
    picked set's RRSIGs (``Signer.answer_rrsigs``), and its token lets the reply cache
    keep the parsed query, as for unsigned balanced answers (:func:`respond`)."""
    now = time.time()
    ck = (data[2:], client.udp)
    cached = signer.cached_reply(ck, now)
    if cached is not None:
        return data[:2] + cached, False
    key = q.key
    ref = state.fast.get((key, q.qtype))
    if type(ref) is BalancedRef:  # pick, then the cached RRSIG of the picked set
        pk = pick(state.plans[ref.name], q.qtype, q, client.host, rng, state.geo, state.loads)
        rcode = balanced_rcode(pk.outcome)
        if rcode != NOERROR or pk.frags:  # NODATA: the denial below
            count_balanced(state, ref.name, pk.pool, pk.outcome)
            if rcode != NOERROR:
                return _finish(
                    q, False, rcode, b"", (0, 0, 0), None, client, pk.scope, _no_member(ref.name)
                ), False
            frags = pk.frags
            sigs, n = signer.answer_rrsigs(key, frags, now)
            body = b"".join(frags) + sigs
            return _finish(q, True, NOERROR, body, (len(frags) + n, 0, 0), None, client, pk.scope), q
    p = resolve(state, zone, key, q.qtype, q, client, rng)
    if p.rcode in (SERVFAIL, REFUSED):
        ede = _no_member(p.balanced) if p.balanced else b""
        return _finish(q, False, p.rcode, b"", (0, 0, 0), None, client, p.scope, ede), False
    answer = _sign_all(p.answer, signer, now)
    additional = p.additional
    rcode = p.rcode
    if p.additional_required and p.authority and p.authority[0][1] == T_NS:  # a referral
        cut = p.authority[0][0]
        authority = list(p.authority)  # the child's NS: not signed (RFC 4035 2.2)
        ds = zone.nodes[cut].rrsets.get(T_DS)
        if ds is not None:
            authority += _sign_all(_rrs(cut, T_DS, ds.ttl, ds.rdatas), signer, now)
        else:  # no DS: the NSEC at the cut says so
            authority += _denial(zone, signer, cut, {T_NS}, now)
    elif p.authority and p.authority[-1] is zone.neg_soa_rr:  # NXDOMAIN or NODATA
        if client.limited:  # rate limiting drops or slips it: no signature for nobody
            return _finish(q, True, NOERROR, b"", (0, 0, 0), None, client, p.scope), False
        name = key
        if p.answer and p.answer[-1][1] == T_CNAME:  # the chain ended at a name without data
            name = p.answer[-1][3].lower()
        present: set[int] | None = None
        if rcode != NXDOMAIN:
            node = zone.nodes.get(name)
            present = set(node.rrsets) if node is not None else set()
            if node is not None and node.balanced is not None:
                present |= set(node.balanced.types)
        soa = zone.soa_rr
        neg = zone.neg_soa_rr
        soa_sigs = signer.rrsigs(soa[0], T_SOA, soa[2], [soa[3]], now)
        # compact denial: the name "exists", with nothing but NSEC; a resolver that sent
        # Compact Answers OK (RFC 9824) gets the NXDOMAIN code back for a name that does not
        rcode = NXDOMAIN if rcode == NXDOMAIN and q.edns is not None and q.edns.co else NOERROR
        if not p.answer:
            # the usual denial (no CNAME before it), spliced like the unsigned one: the SOA
            # and the NSEC owned by names in the question (pointers), nothing to compress
            # (a random-subdomain flood's every answer is one of these)
            ttl = neg[2]
            nsec = compact_nsec(name, present)
            ptr = (0xC000 | (12 + len(key) - len(zone.origin))).to_bytes(2, "big")
            parts = [ptr, zone.neg_tail]
            parts += [ptr + _SIG_HEAD.pack(T_RRSIG, CLASS_IN, ttl, len(sg)) + sg for sg in soa_sigs]
            parts.append(b"\xc0\x0c" + _SIG_HEAD.pack(T_NSEC, CLASS_IN, ttl, len(nsec)) + nsec)
            for sg in signer.rrsigs(name, T_NSEC, ttl, [nsec], now, keep=present is not None):
                parts.append(b"\xc0\x0c" + _SIG_HEAD.pack(T_RRSIG, CLASS_IN, ttl, len(sg)) + sg)
            counts = (0, 2 + len(soa_sigs) * 2, 0)
            reply = _finish(q, True, rcode, b"".join(parts), counts, None, client, p.scope)
            if not p.dynamic:
                signer.keep_reply(ck, reply[2:])
            return reply, False
        authority = [
            neg,
            *[(soa[0], T_RRSIG, neg[2], s) for s in soa_sigs],
            *_denial(zone, signer, name, present, now),
        ]
    else:
        authority = _sign_all(p.authority, signer, now)
        additional = _sign_all(p.additional, signer, now)
    body, an, ns, ar = encode_sections(key, (answer, authority, additional))
    small = None
    if additional:
        sb, san, sns, _ = encode_sections(key, (answer, authority, []))
        small = (sb, (san, sns, 0), p.additional_required)
    reply = _finish(q, p.aa, rcode, body, (an, ns, ar), small, client, p.scope)
    if not p.dynamic:
        signer.keep_reply(ck, reply[2:])
    return reply, False


def _denial(
    zone: CompiledZone, signer: Signer, name: bytes, present: set[int] | None, now: float
) -> list[RRw]:
    """The compact-denial NSEC for ``name`` and its RRSIG (TTL: the negative TTL)."""
    ttl = zone.neg_soa_rr[2]
    nsec = compact_nsec(name, present)
    sigs = signer.rrsigs(name, T_NSEC, ttl, [nsec], now)
    return [(name, T_NSEC, ttl, nsec), *[(name, T_RRSIG, ttl, s) for s in sigs]]


def _bare(data: bytes, rcode: int) -> bytes:
    qid = (data[0] << 8) | data[1]
    qflags = (data[2] << 8) | data[3]
    return header(qid, qflags, False, rcode, 0, 0, 0, 0)


def _finish(
    q: Query,
    aa: bool,
    rcode: int,
    body: bytes,
    counts: tuple[int, int, int],
    small: tuple[bytes, tuple[int, int, int], bool] | None,
    client: Client,
    scope: int,
    ede: bytes = b"",
) -> bytes:
    """Header + echoed question + body + OPT, truncated to the client's limit; ``ede``:
    an Extended DNS Error option, sent only to a query with EDNS."""
    edns = q.edns
    an, ns, ar = counts
    if edns is None:
        opt = b""
        limit = 512
    else:
        opt = opt_record(edns.do, rcode >> 4, _options(edns, scope) + ede, edns.co)
        ar += 1
        limit = min(edns.payload, EDNS_MAX_UDP) if edns.payload > 512 else 512
    question = q.question
    size = 12 + len(question) + len(body) + len(opt)
    if client.udp and size > limit:
        if small is not None:
            sbody, (san, sns, sar), required = small
            ssize = 12 + len(question) + len(sbody) + len(opt)
            if ssize <= limit and not required:
                hdr = header(q.id, q.flags, aa, rcode, 1, san, sns, sar + (1 if opt else 0))
                return hdr + question + sbody + opt
        hdr = header(q.id, q.flags, aa, rcode, 1, 0, 0, 1 if opt else 0, tc=True)
        return hdr + question + opt
    return header(q.id, q.flags, aa, rcode, 1, an, ns, ar) + question + body + opt


# ------------------------------------------------------------------ balanced answers


def _ecs_client(q: Query) -> ClientAddr | None:
    """The client from the query's ECS option, if it has one with a source prefix."""
    edns = q.edns
    if edns is not None and edns.ecs is not None and edns.ecs.source > 0:
        ecs = edns.ecs
        return ClientAddr(
            4 if ecs.family == 1 else 6, int.from_bytes(ecs.ip_bytes(), "big"), ecs.source, True
        )
    return None


def _client_addr(q: Query, host: str, use_ecs: bool) -> ClientAddr:
    if use_ecs:
        ca = _ecs_client(q)
        if ca is not None:
            return ca
    fam, addr = client_of(host)
    return ClientAddr(fam, addr, 32 if fam == 4 else 128, False)


_NO_LOADS: Mapping[MemberKey, float] = {}


class Pick(NamedTuple):
    """A balanced answer's members and how they were chosen (for explain).

    A named tuple rather than a dataclass: one is made per balanced answer, and
    the dataclass constructor was 8% of the CPU under load (py-spy)."""

    frags: list[bytes]
    scope: int  # the ECS scope of the reply (0 unless the client came from ECS)
    outcome: Outcome | None
    rule: int = 0
    pool: str = ""
    geo: GeoInfo | None = None
    client: ClientAddr | None = None


def balanced_rcode(outcome: Outcome | None) -> int:
    """The rcode of a balanced answer: SERVFAIL/REFUSED from ``when_all_down``, else
    NOERROR (with members, or NODATA without)."""
    if outcome is not None:
        if outcome.kind == "servfail":
            return SERVFAIL
        if outcome.kind == "refuse":
            return REFUSED
    return NOERROR


def count_balanced(state: ServingState, name: bytes, pool: str, outcome: Outcome | None) -> None:
    """One balanced answer given, in gslb_balanced_answers_total: the one place that counts."""
    counts = state.balanced_counts
    if counts is not None:
        counts[(name, pool, outcome.kind if outcome is not None else "nodata")] += 1


def pick(
    plan: BalancedPlan,
    qtype: int,
    q: Query,
    host: str,
    rng: random.Random,
    geo: GeoLookup | None,
    loads: Mapping[MemberKey, float] = _NO_LOADS,
) -> Pick:
    """Choose a balanced name's members for one query: rule, pool, policy."""
    return Pick._make(_pick(plan, qtype, q, host, rng, geo, loads, None))


# Pick's fields as a plain tuple: the reply-cache path makes one per balanced answer, and a
# NamedTuple costs a Python-level __new__ there (+1,800 instructions per answer, callgrind)
PickTuple = tuple[list[bytes], int, "Outcome | None", int, str, "GeoInfo | None", "ClientAddr | None"]


def _pick(
    plan: BalancedPlan,
    qtype: int,
    q: Query,
    host: str,
    rng: random.Random,
    geo: GeoLookup | None,
    loads: Mapping[MemberKey, float],
    ecs_client: ClientAddr | None,
) -> PickTuple:
    """:func:`pick` as a plain tuple in Pick's field order; ``ecs_client`` is the query's
    ECS client when the caller already has it."""
    rule = plan.catch_all
    scope = 0
    info: GeoInfo | None = None
    ca: ClientAddr | None = None
    fam = addr = source = 0
    from_ecs = False  # the reply has an ECS scope only for a client from ECS
    if plan.needs_client:
        use_ecs = plan.record.ecs
        ca = ecs_client if ecs_client is not None and use_ecs else _client_addr(q, host, use_ecs)
        fam, addr, source, from_ecs = ca  # unpacked once: attribute access costs more per query
        table = plan.decisions
        decided = table.decide(fam, addr, source) if table is not None else None
        if decided is None:
            rule, scope, info = match_rule(plan, fam, addr, source, geo)
        else:  # compiled at load: one bisect (gslb.geo_compile)
            rule, scope = decided
    outcome = plan.outcomes[rule].get(qtype)
    if outcome is None or not outcome.pools:
        return ([], scope if from_ecs else 0, outcome, rule, "", info, ca)
    if outcome.kind == "serve_all":
        choice = outcome.pools[0]
        frags = list(choice.cands.items)
        sc = scope if from_ecs else 0
        return (frags, sc, outcome, rule, choice.name, info, ca)
    # the policy's members among the rule's up pools (inline: one call less per answer)
    policy = plan.policy
    ctx = NO_CLIENT
    index = 0
    if ca is not None and (policy.uses_client or policy.uses_location):
        prefix = plan.client_prefixes[0] if fam == 4 else plan.client_prefixes[1]
        if policy.uses_location:
            if info is None:
                info = geo.lookup(fam, addr) if geo is not None else UNKNOWN
            scope = max(scope, info.prefix)
        if policy.uses_client:
            scope = max(scope, prefix)
        ctx = PickContext(fam, addr, prefix, info.lat if info else None, info.lon if info else None)
        scope = min(scope, source)
        if policy.uses_location and len(outcome.pools) > 1:
            # the nearest pool depends only on the client's coordinates: remember it per plan
            lkey = (rule, qtype, ctx.lat, ctx.lon)
            memo = plan.memo
            found = memo.get(lkey)
            if found is None:
                index = policy.choose_pool([p.location for p in outcome.pools], ctx)
                _remember(memo, lkey, index)
            else:
                index = cast(int, found)
    choice = outcome.pools[index]
    if policy.uses_loads:
        ctx = ctx._replace(loads=tuple(loads.get(k) for k in choice.member_keys))
        frags = list(policy.pick(choice.cands, plan.count, rng, ctx))
    elif policy.uses_client:
        # a hashed pick is a function of the candidates and the client's subnet
        fam, addr = ctx.family, ctx.addr
        hkey = (rule, qtype, index, fam, addr >> ((32 if fam == 4 else 128) - ctx.hash_prefix))
        memo = plan.memo
        picked = memo.get(hkey)
        if picked is None:
            picked = tuple(policy.pick(choice.cands, plan.count, rng, ctx))
            _remember(memo, hkey, picked)
        frags = list(cast(tuple[bytes, ...], picked))
    else:
        frags = list(policy.pick(choice.cands, plan.count, rng, ctx))
    sc = scope if from_ecs else 0
    return (frags, sc, outcome, rule, choice.name, info, ca)


MEMO_MAX = 10_000


def _remember(memo: dict[tuple[object, ...], object], key: tuple[object, ...], value: object) -> None:
    if len(memo) >= MEMO_MAX:
        memo.clear()
    memo[key] = value


# ------------------------------------------------------------------ RFC 1034 lookup


def _rrs(owner: bytes, rtype: int, ttl: int, rdatas: tuple[bytes, ...]) -> list[RRw]:
    return [(owner, rtype, ttl, rd) for rd in rdatas]


def _find_cut(zone: CompiledZone, qn: bytes, qtype: int) -> bytes | None:
    """The highest delegation point at or above qn (DS at the cut is the parent's)."""
    if not zone.cuts:
        return None
    found = None
    for anc in names.ancestors(qn, zone.origin):
        if anc in zone.cuts and not (anc == qn and qtype == T_DS):
            found = anc  # keep walking up: the highest cut wins
    return found


def _additional(zone: CompiledZone, targets: list[bytes], seen: set[bytes]) -> list[RRw]:
    out: list[RRw] = []
    for t in targets:
        if t in seen or not names.is_subdomain(t, zone.origin):
            continue
        seen.add(t)
        node = zone.nodes.get(t)
        if node is None:
            continue
        for rtype in (T_A, T_AAAA):
            rr = node.rrsets.get(rtype)
            if rr is not None:
                out += _rrs(t, rtype, rr.ttl, rr.rdatas)
    return out


def resolve(
    state: ServingState,
    zone: CompiledZone,
    qname: bytes,
    qtype: int,
    q: Query | None,
    client: Client | None,
    rng: random.Random,
    count: bool = True,
) -> Plan:
    """RFC 1034 4.3.2 for one zone, following in-zone CNAMEs. ``count``: a balanced
    answer counts in the metrics (not for explain)."""
    plan = Plan()
    qn = qname
    seen = {qn}
    for _ in range(MAX_CHAIN + 1):
        cut = _find_cut(zone, qn, qtype)
        if cut is not None:
            ns = zone.nodes[cut].rrsets[T_NS]
            plan.aa = bool(plan.answer)
            plan.authority = _rrs(cut, T_NS, ns.ttl, ns.rdatas)
            plan.additional = _additional(zone, list(ns.targets), set())
            plan.additional_required = True
            return plan
        node = zone.nodes.get(qn)
        owner = qn
        if node is None:
            if qn in zone.existing:  # empty non-terminal
                plan.authority = [zone.neg_soa_rr]
                return plan
            ce = names.parent(qn)
            while ce not in zone.existing:
                ce = names.parent(ce)
            node = zone.nodes.get(b"\x01*" + ce)
            if node is None:
                plan.rcode = NXDOMAIN
                plan.authority = [zone.neg_soa_rr]
                return plan
        if qtype == T_ANY:
            # RFC 8482 4.2: one synthesized HINFO instead of every RRset
            plan.answer.append((owner, T_HINFO, zone.hinfo_ttl, HINFO_RFC8482))
            return plan
        rr = node.rrsets.get(qtype)
        if rr is not None:
            plan.answer += _rrs(owner, qtype, rr.ttl, rr.rdatas)
            if rr.targets and qtype != T_CNAME:
                plan.additional = _additional(zone, list(rr.targets), set())
            return plan
        bal = node.balanced
        if bal is not None and qtype in bal.types:
            plan.dynamic = True
            if q is None or client is None:
                return plan
            pk = pick(state.plans[bal.name], qtype, q, client.host, rng, state.geo, state.loads)
            if count:
                count_balanced(state, bal.name, pk.pool, pk.outcome)
            plan.scope, plan.pick, plan.balanced, plan.pool = pk.scope, pk, bal.name, pk.pool
            plan.rcode = balanced_rcode(pk.outcome)
            if plan.rcode == NOERROR:
                if pk.frags:
                    plan.answer += [(owner, qtype, bal.ttl, f[12:]) for f in pk.frags]
                else:
                    plan.authority = [zone.neg_soa_rr]
            return plan
        cname = node.rrsets.get(T_CNAME)
        if cname is not None:
            plan.answer += _rrs(owner, T_CNAME, cname.ttl, cname.rdatas)
            target = cname.targets[0]
            if target in seen or not names.is_subdomain(target, zone.origin):
                return plan
            if state.find_zone(target) is not zone:
                return plan  # a nested zone of ours: the resolver follows up
            seen.add(target)
            qn = target
            continue
        plan.authority = [zone.neg_soa_rr]
        return plan
    return plan  # chain longer than MAX_CHAIN: what we have


# --------------------------------------------------------------- building the state


def build_state(
    zones: list[tuple[Zone, int]],
    health: HealthView = ALL_UP,
    generation: int = 0,
    geo: GeoLookup | None = None,
) -> ServingState:
    """Compile zones (with their serials) and precompute every static answer."""
    compiled = {z.origin: compile_zone(z, serial) for z, serial in zones}
    fast: dict[tuple[bytes, int], Static | BalancedRef] = {}
    plans: dict[bytes, BalancedPlan] = {}
    state = ServingState(compiled, fast, plans, health, generation, geo)
    for cz in compiled.values():
        if cz.zone.dnssec_keys:
            loaded = [dnssec_keys.load(k) for k in cz.zone.dnssec_keys]
            state.signers[cz.origin] = Signer(loaded[0], cz.origin, extra=tuple(loaded[1:]))
    rng = random.Random(0)
    for cz in compiled.values():
        for b in cz.zone.balanced:
            plans[b.name] = plan_balanced(cz, b, health)
    if geo is not None and hasattr(geo, "leaves"):  # geo/asn rules: compiled against the databases
        state = with_decisions(state, compile_inline(geo))
    for cz in compiled.values():
        for name, node in cz.nodes.items():
            if names.is_wildcard(name) or state.find_zone(name) is not cz:
                continue
            # the types the name has; NODATA for the others takes the general lookup once and
            # then the reply cache (precomputing it doubled the load time of large zones)
            qtypes = set(node.rrsets)
            if node.balanced is not None:
                for t in node.balanced.types:
                    fast[(name, t)] = BalancedRef(node.balanced.name)
                    qtypes.discard(t)
            for qtype in qtypes:
                p = resolve(state, cz, name, qtype, None, None, rng)
                if p.dynamic or p.rcode not in (NOERROR, NXDOMAIN):
                    continue
                fast[(name, qtype)] = _static(name, p)
    return state


def with_decisions(state: ServingState, build: bool = True) -> ServingState:
    """The state with its geo/asn plans given their compiled tables (gslb.geo_compile):
    compiled now, or (``build`` False) those compiled already. Plans without one decide
    per query with a lookup, which gives the same answers."""
    geo = state.geo
    if geo is None or not hasattr(geo, "leaves"):
        return state
    source = cast(LeafSource, geo)
    plans = dict(state.plans)
    changed = False
    for name, bp in plans.items():
        if bp.decisions is None and _wants_table(bp):
            places = None
            if bp.policy.uses_location:  # the pools' locations: classes say which is nearest
                pools = state.zone_of(name).pools
                places = tuple(
                    tuple(_place(pools[p].location) for p in rule.pools) for rule in bp.record.rules
                )
            table = compiled_rules(bp.matchers, bp.catch_all, source, build, places, bp.policy)
            if table is not None:
                plans[name] = dataclasses.replace(bp, decisions=table)
                changed = True
    done = getattr(source, "compiled", None)
    if changed and build and callable(done):
        done()
    return dataclasses.replace(state, plans=plans) if changed else state


def _place(loc: Location | None) -> tuple[float, float] | None:
    return None if loc is None else (loc.lat, loc.lon)


def _wants_table(bp: BalancedPlan) -> bool:
    """A plan whose decision reads the databases: geo/asn rules, or a pick by coordinates."""
    return bp.policy.uses_location or any(m.geos or m.asns for m in bp.matchers)


def needs_decisions(state: ServingState) -> bool:
    """Whether some geo/asn plan still decides per query (its table not compiled yet)."""
    plans = state.plans.values()
    return state.geo is not None and any(p.decisions is None and _wants_table(p) for p in plans)


def _static(name: bytes, p: Plan) -> Static:
    body, an, ns, ar = encode_sections(name, (p.answer, p.authority, p.additional))
    if p.additional and not p.additional_required:
        sbody, san, sns, sar = encode_sections(name, (p.answer, p.authority, []))
    else:
        sbody, san, sns, sar = body, an, ns, ar
    return Static(p.aa, p.rcode, body, (an, ns, ar), sbody, (san, sns, sar), p.additional_required)
