"""A query read once on its way in: what the transports' stages need, from one walk.

The stages of a query (gslb.server.transport.answer, and in the same order the C loop,
gslb/server/transport/_fastpath.c) read the datagram through this:

1. **parse** (:func:`parse_request`): the question's end, its name folded to lower
   case, the lone OPT record that ends a resolver's query and in it the UDP size, DO
   and the COOKIE option's place, and whether records beyond that OPT may hold a TSIG;
2. **TSIG** for a query that may carry one (verified, answered without it, signed);
3. **cookie** check and the COOKIE option taken out (the engine and its reply cache
   see every client alike);
4. **cache or engine** on :attr:`Request.folded`: a name in any mix of case (0x20,
   what some resolvers send) finds the same cached reply;
5. **finish**: the reply's cookie put in, the question's case given back
   (:func:`restore_case`), then over UDP the rate limit, the counters, the query log.

Names compressed to the question (every owner equal to the query name or a suffix of
it is a pointer there) take its case with it, as a server that answers the query as
sent would give them.
"""

from __future__ import annotations

from typing import NamedTuple

from gslb.dns.consts import EDNS_MAX_UDP

OPT_COOKIE = 10


class Request(NamedTuple):
    data: bytes  # the query as received
    folded: bytes  # the query with its name in lower case (``data`` itself when it was)
    qend: int  # the end of the question (type and class included); 0 when it cannot be read
    opt: int  # offset of the OPT record when it is the only record and ends the query, else -1
    payload: int  # the client's UDP limit: 512, or its EDNS size up to 1232
    cookie: tuple[int, int]  # (start, end) of the COOKIE option with its header; (-1, -1): none
    maybe_tsig: bool  # records beyond a lone OPT (a TSIG record would be one)


_NO_COOKIE = (-1, -1)


def parse_request(data: bytes) -> Request:
    """One walk over the query. Nothing here refuses a query: what is malformed is left
    for the engine's parser to answer with FORMERR (``qend`` 0, ``opt`` -1)."""
    n = len(data)
    if n < 12:
        return Request(data, data, 0, -1, 512, _NO_COOKIE, False)
    qend = folded_end = 0
    folded = data
    if data[4:6] == b"\x00\x01":
        pos = 12
        while pos < n:
            ln = data[pos]
            if ln == 0 or ln > 63:
                break
            pos += 1 + ln
        if pos < n and not data[pos] and pos + 5 <= n and pos - 11 <= 255:
            name = data[12 : pos + 1]
            low = name.lower()
            if low != name:
                folded = data[:12] + low + data[pos + 1 :]
            qend = folded_end = pos + 5
    opt = -1
    if (
        qend
        and qend + 11 <= n
        and data[6:12] == b"\x00\x00\x00\x00\x00\x01"
        and data[qend] == 0
        and data[qend + 1 : qend + 3] == b"\x00\x29"
        and qend + 11 + ((data[qend + 9] << 8) | data[qend + 10]) == n
    ):
        opt = qend
    # a TSIG record is the last additional one: any additional record but a lone OPT
    maybe_tsig = n > 12 and bool(data[10] or data[11] > 1 or (data[11] == 1 and opt < 0))
    if opt < 0:
        return Request(data, folded, folded_end, -1, 512, _NO_COOKIE, maybe_tsig)
    payload = max(512, min((data[opt + 3] << 8) | data[opt + 4], EDNS_MAX_UDP))
    cookie = _NO_COOKIE
    p = opt + 11
    while p + 4 <= n:
        code, ln = (data[p] << 8) | data[p + 1], (data[p + 2] << 8) | data[p + 3]
        if code == OPT_COOKIE:
            if p + 4 + ln <= n:
                cookie = (p, p + 4 + ln)
            break
        p += 4 + ln
    return Request(data, folded, qend, opt, payload, cookie, False)


def restore_case(reply: bytes, req: Request) -> bytes:
    """The reply with the query's question as it was sent (0x20), when the query's name
    was folded and the reply echoes that question."""
    data = req.data
    if req.folded is data:
        return reply
    q = req.qend
    if len(reply) < q or reply[4:6] != b"\x00\x01" or reply[12:q] != req.folded[12:q]:
        return reply
    return reply[:12] + data[12:q] + reply[q:]
