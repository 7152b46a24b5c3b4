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

import random

from gslb.answer.balanced import balanced_rcode, count_balanced, pick
from gslb.answer.cache import keep, lookup
from gslb.answer.reply import (
    EDE_CLASS,
    EDE_NOT_AUTH,
    EDE_OPCODE,
    EDE_OTHER,
    EDE_STALE,
    EDE_XFR,
    Client,
    bare,
    finish,
    no_member,
)
from gslb.answer.signed import signed
from gslb.answer.state import ServingState, Static, StatsKey
from gslb.answer.static import resolve
from gslb.dns.consts import (
    BADVERS,
    CLASS_IN,
    FORMERR,
    NOERROR,
    NOTIMP,
    REFUSED,
    SERVFAIL,
    T_AXFR,
    T_IXFR,
)
from gslb.dns.wire import (
    BadOption,
    Query,
    ede_option,
    encode_sections,
    header,
    header_ok,
    opt_record,
    parse_query,
    question_end,
)

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

    The stages of a query, in order (the transports run cookies, TSIG and rate limiting
    around it, gslb.server.transport; the C loop runs the first stage for what it can):

    1. the reply cache (:func:`gslb.answer.cache.lookup`): a fixed reply (static data,
       negative answers, refusals) keyed by the query bytes after the ID, or a balanced
       name's entry (a reply kept for the client's routing decision, or a fresh pick
       spliced into the parsed query);
    2. the full answer (:func:`_answer`): parse, then the signed path, the precompiled
       answer or balanced pick, or the RFC 1034 lookup, and the reply's finish;
    3. counting and keeping (:func:`gslb.answer.cache.keep`) for the next such query.

    ``limited``: the transport's rate limiter will drop or slip a negative answer to
    this client (``RateLimiter.negative_exhausted``), so a signed zone's denial is
    answered without its signatures (the costly part of a random-subdomain flood with
    DO=1). Such a reply must never be sent: if the limiter lets it through after all,
    the transport asks again without ``limited``.
    """
    cache = state.udp_cache if udp else state.tcp_cache
    hit = lookup(cache, data, state, host, rng)
    if hit is not None:
        return hit
    reply, token = _answer(data, state, Client(host, udp, limited), rng)
    if reply is None:
        return None
    skey = stats_key(reply, udp, state)
    keep(cache, data, reply, token, skey, state, udp)
    return reply, skey


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
) -> tuple[bytes | None, bool | float | Query]:
    """The reply (None: send nothing) and how it may be cached (see :func:`respond`):
    True (the reply), a time (the reply until then: a signed reply, until its signatures
    are due), False (not at all), or the parsed query of a balanced name."""
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
        return bare(data, FORMERR), False
    edns = q.edns
    if edns is not None and edns.version != 0:
        return finish(q, False, BADVERS, b"", (0, 0, 0), None, client, 0), True
    if q.opcode != 0:
        return finish(q, False, NOTIMP, b"", (0, 0, 0), None, client, 0, EDE_OPCODE), True
    if q.qclass != CLASS_IN:
        return finish(q, False, REFUSED, b"", (0, 0, 0), None, client, 0, EDE_CLASS), True
    qtype = q.qtype
    key = q.key
    if edns is not None and edns.do and state.signers and qtype not in (T_AXFR, T_IXFR):
        zone = state.find_zone(key)
        signer = state.signers.get(zone.origin) if zone is not None else None
        if zone is not None and signer is not None:
            return signed(q, data, state, zone, signer, client, rng)
    hit = state.fast.get((key, qtype))
    if hit is not None:
        if isinstance(hit, Static):
            small: tuple[bytes, tuple[int, int, int], bool] | None = (
                hit.small_body,
                hit.small_counts,
                hit.additional_required,
            )
            return finish(q, hit.aa, hit.rcode, hit.body, hit.counts, small, client, 0), True
        got = _balanced(q, hit.name, state, client, rng)
        if got is not None:
            reply, keep_it = got
            return reply, q if keep_it else False
        # NODATA: the general lookup, which adds the SOA (and picks and counts there)
    if qtype in (T_AXFR, T_IXFR):
        return finish(q, False, REFUSED, b"", (0, 0, 0), None, client, 0, EDE_XFR), True
    zone = state.find_zone(key)
    if zone is None:
        return finish(q, False, REFUSED, b"", (0, 0, 0), None, client, 0, EDE_NOT_AUTH), True
    p = resolve(state, zone, key, qtype, q, client, rng)
    fixed = not p.dynamic
    stale = EDE_STALE if p.stale else b""
    if p.rcode in (SERVFAIL, REFUSED):
        ede = no_member(p.balanced) if p.balanced else b""
        return finish(q, False, p.rcode, b"", (0, 0, 0), None, client, p.scope, ede), fixed
    if not p.answer and not p.additional and len(p.authority) == 1 and p.authority[0] is zone.neg_soa_rr:
        # NXDOMAIN / NODATA: the SOA owner (the apex) is a suffix of the qname
        ptr = (0xC000 | (12 + len(key) - len(zone.origin))).to_bytes(2, "big")
        pk = p.pick
        ede = no_member(p.balanced) if pk is not None and pk.outcome and pk.outcome.kind == "nodata" else b""
        return finish(q, True, p.rcode, ptr + zone.neg_tail, (0, 1, 0), None, client, p.scope, ede), fixed
    body, an, ns, ar = encode_sections(key, (p.answer, p.authority, p.additional))
    small = None
    if p.additional and not p.additional_required:
        sb, san, sns, _ = encode_sections(key, (p.answer, p.authority, []))
        small = (sb, (san, sns, 0), False)
    elif p.additional_required:
        small = (body, (an, ns, ar), True)
    return finish(q, p.aa, p.rcode, body, (an, ns, ar), small, client, p.scope, stale), fixed


def _balanced(
    q: Query, name: bytes, state: ServingState, client: Client, rng: random.Random
) -> tuple[bytes, bool] | None:
    """The reply for balanced name ``name`` (from the fast path) and whether the reply
    cache may keep its entry (not for a stale alias's addresses), or None for NODATA."""
    pk = pick(state.plans[name], q.qtype, q, client.host, rng, state.geo, state.loads)
    rcode = balanced_rcode(pk.outcome)
    if rcode == NOERROR and not pk.frags:
        return None  # NODATA: resolve() answers it with the SOA, and counts it
    count_balanced(state, name, pk.pool, pk.outcome)
    if rcode != NOERROR:
        return finish(q, False, rcode, b"", (0, 0, 0), None, client, pk.scope, no_member(name)), True
    frags = pk.frags
    stale = pk.outcome is not None and pk.pool in pk.outcome.stale
    ede = EDE_STALE if stale else b""
    reply = finish(q, True, NOERROR, b"".join(frags), (len(frags), 0, 0), None, client, pk.scope, ede)
    return reply, not stale
