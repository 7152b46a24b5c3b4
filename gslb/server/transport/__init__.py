"""Network transports: thin I/O around :func:`gslb.answer.respond.respond`.

DNS cookies (RFC 7873, RFC 9018) are handled here, around the engine: the COOKIE
option is taken out of the query before the engine sees it (so its reply cache
serves every client alike) and the reply's option is put into the reply's OPT
record afterwards. The engine is told a UDP size smaller by the option's length,
so the reply still fits the client's limit with the cookie in it.

TSIG (RFC 8945) is handled here too, for any query that carries it (a secondary's
SOA check, for one): the query is verified, answered without its TSIG, and the
reply signed. A bad key or MAC gets NOTAUTH with an unsigned TSIG, a bad clock
NOTAUTH signed (:mod:`gslb.dns.tsig`). A query that only looks like it might carry
one (records beyond a lone OPT) is walked; the usual query is not.
"""

from __future__ import annotations

import random
import time
from typing import NamedTuple, Protocol

from gslb.answer.respond import respond
from gslb.answer.state import ServingState, StatsKey
from gslb.dns import tsig
from gslb.dns.consts import EDNS_MAX_UDP
from gslb.dns.cookies import (
    BadCookie,
    Cookies,
    add_option,
    rewrite_query,
)
from gslb.dns.request import Request, parse_request, restore_case
from gslb.dns.rrl import Limiter, truncated
from gslb.dns.wire import Malformed, header, opt_record, parse_query, question_end
from gslb.server.metrics import QueryStats

# what a query's cookie was: none sent, a client cookie (or a server cookie not ours),
# a valid server cookie of ours
NO_COOKIE, CLIENT_COOKIE, VALID_COOKIE = 0, 1, 2
BADCOOKIE = 23  # RFC 7873 extended RCODE


class StateHolder(Protocol):
    """Whatever holds the current serving state; read once per query."""

    state: ServingState
    rng: random.Random
    stats: QueryStats
    query_log_every: int  # log one query in this many (0: no query log)
    rrl: Limiter | None  # response rate limiting for UDP, or None
    cookies: Cookies | None  # DNS cookies, or None (off)
    nocookie_udp: int  # UDP size for queries without a valid server cookie; 0 = no cap
    keyring: tsig.Keyring  # TSIG keys (empty: a signed query gets BADKEY)


class Answer(NamedTuple):
    reply: bytes
    skey: StatsKey
    cookie: int  # NO_COOKIE, CLIENT_COOKIE or VALID_COOKIE (also: a valid TSIG; RRL lets it by)
    option: bytes  # the reply's whole COOKIE option (b"" without one)
    edns: bool = False  # the query had EDNS (a lone OPT record): a slip carries an OPT too


def answer(holder: StateHolder, data: bytes, host: str, udp: bool, limited: bool = False) -> Answer | None:
    """The stages of one query (:mod:`gslb.dns.request` lists them) up to the rate limit,
    which the UDP transport runs on the result: parse once, TSIG, the cookie checked and
    taken out, the reply cache or the engine (:func:`gslb.answer.respond.respond`) on the
    query with its name in lower case, the reply's cookie put in and the question's case
    given back; cookie-less UDP capped. ``limited``: see ``respond`` (ignored for a
    valid server cookie, which rate limiting lets through)."""
    req = parse_request(data)
    if req.maybe_tsig:
        try:
            t = tsig.find(data)
        except Malformed:
            t = None  # the engine says FORMERR
        if t is not None:
            return _signed(holder, data, t, host, udp)
    res = _answer(holder, req, host, udp, limited)
    if res is None or req.folded is data:
        return res
    return res._replace(reply=restore_case(res.reply, req))


def _answer(holder: StateHolder, req: Request, host: str, udp: bool, limited: bool) -> Answer | None:
    cj = holder.cookies
    data, opt = req.folded, req.opt
    edns = opt >= 0
    if cj is None or opt < 0:  # cookies off, or no EDNS: no cookie to answer
        res = respond(data, holder.state, host, udp, holder.rng, limited)
        return None if res is None else Answer(res[0], res[1], NO_COOKIE, b"", edns)
    payload = req.payload
    s, e = req.cookie
    if s < 0:
        cap = holder.nocookie_udp
        if udp and cap and payload > cap:
            data = rewrite_query(data, opt, (opt + 11, opt + 11), cap)
        res = respond(data, holder.state, host, udp, holder.rng, limited)
        return None if res is None else Answer(res[0], res[1], NO_COOKIE, b"", edns)
    stats = holder.stats.cookies
    try:
        valid, option = cj.verdict(data[s + 4 : e], host, int(time.time()))
    except BadCookie:  # RFC 7873 5.2.2: FORMERR
        stats["malformed"] += 1
        end = req.qend
        qid, qflags = (data[0] << 8) | data[1], (data[2] << 8) | data[3]
        reply = header(qid, qflags, False, 1, 1, 0, 0, 1) + data[12:end] + opt_record(False)
        return Answer(reply, (b"", 0, 1, "udp" if udp else "tcp"), NO_COOKIE, b"", edns)
    stats["valid" if valid else "fresh"] += 1
    limit = payload
    if udp and not valid and holder.nocookie_udp:
        limit = min(limit, max(512, holder.nocookie_udp))
    stripped = rewrite_query(data, opt, (s, e), max(512, limit - len(option)))
    res = respond(stripped, holder.state, host, udp, holder.rng, limited and not valid)
    if res is None:
        return None
    reply, skey = res
    kind = VALID_COOKIE if valid else CLIENT_COOKIE
    out = add_option(reply, option, opt)  # the reply's records start where the query's OPT did
    if out is None:
        return Answer(reply, skey, kind, option, edns)
    if udp and len(out) > limit:  # only for a client whose limit is 512 octets
        do = bool(data[opt + 7] & 0x80)
        out = truncated(reply, opt_record(do, 0, option))
    return Answer(out, skey, kind, option, edns)


def badcookie(reply: bytes, option: bytes) -> bytes:
    """A BADCOOKIE error (RFC 7873 5.2.3) in place of ``reply``: the question and a
    fresh server cookie, nothing else; the client retries with the cookie."""
    end = question_end(reply) + 5 if reply[5] == 1 else 12
    qid, qflags = (reply[0] << 8) | reply[1], (reply[2] << 8) | reply[3]
    head = header(qid, qflags, False, BADCOOKIE & 0xF, 1 if end > 12 else 0, 0, 0, 1)
    return head + reply[12:end] + opt_record(False, BADCOOKIE >> 4, option)


def _signed(holder: StateHolder, data: bytes, t: tsig.Tsig, host: str, udp: bool) -> Answer | None:
    """A query with a TSIG record: verified, answered without it, the reply signed."""
    v = tsig.verify(data, t, holder.keyring)
    qid, qflags = (data[0] << 8) | data[1], (data[2] << 8) | data[3]
    try:
        q = parse_query(tsig.strip(data, t))
    except Malformed:
        return (
            None
            if data[2] & 0x80
            else Answer(header(qid, qflags, False, 1, 0, 0, 0, 0), _skey(udp, 1), 0, b"")
        )
    err_head = header(qid, qflags, False, tsig.NOTAUTH, 1, 0, 0, 0) + q.question
    if v.formerr:
        return Answer(header(qid, qflags, False, 1, 1, 0, 0, 0) + q.question, _skey(udp, 1), NO_COOKIE, b"")
    if v.error in (tsig.BADKEY, tsig.BADSIG):
        holder.stats.tsig[tsig.ERRORS[v.error].lower()] += 1
        return Answer(tsig.unsigned_error(err_head, t, v.error), _skey(udp, tsig.NOTAUTH), NO_COOKIE, b"")
    key = v.key
    assert key is not None
    if v.error == tsig.BADTIME:
        holder.stats.tsig["badtime"] += 1
        reply, _ = tsig.sign(
            err_head, key, t.mac, error=tsig.BADTIME, other=tsig.badtime_other(), when=t.time_signed
        )
        return Answer(reply, _skey(udp, tsig.NOTAUTH), NO_COOKIE, b"")
    holder.stats.tsig["valid"] += 1
    res = answer(holder, tsig.strip(data, t), host, udp)
    if res is None:
        return None
    reply = res.reply
    if udp:
        limit = max(512, min(q.edns.payload, EDNS_MAX_UDP)) if q.edns is not None else 512
        if len(reply) + tsig.record_size(key) > limit:
            reply = truncated(reply, opt_record(q.edns.do) if q.edns is not None else b"")
    signed, _ = tsig.sign(reply, key, t.mac)
    return Answer(signed, res.skey, VALID_COOKIE, res.option)


def _skey(udp: bool, rcode: int) -> StatsKey:
    return (b"", 0, rcode, "udp" if udp else "tcp")
