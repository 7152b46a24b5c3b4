"""The last stage of every reply: header, echoed question, OPT record (ECS echoed with
its scope, NSID, an Extended DNS Error) and truncation to the client's limit; the
client of a query as the transports see it."""

from __future__ import annotations

import struct
from typing import NamedTuple

from gslb.dns import names
from gslb.dns.consts import EDNS_MAX_UDP
from gslb.dns.wire import Edns, Query, ede_option, header, nsid_option, opt_record

# The NSID option (RFC 5001) this process adds to replies whose query asked for it: the
# node's name (``set_nsid``, once at start-up). A process has one name, so this is
# process-wide rather than part of each serving state.
_NSID = b""


def set_nsid(name: str) -> None:
    global _NSID
    _NSID = nsid_option(name.encode()[:255])


def reply_options(edns: Edns, scope: int) -> bytes:
    """ECS (echoed with ``scope``) and NSID options of a reply, as the query asked."""
    ecs = edns.ecs.option(scope) if edns.ecs is not None else b""
    return ecs + _NSID if edns.nsid else ecs


# Extended DNS Errors (RFC 8914), in replies to queries with EDNS: why a query was
# refused or failed. docs/protocol.md lists each case.
EDE_OTHER, EDE_PROHIBITED, EDE_NOT_AUTHORITATIVE, EDE_NOT_SUPPORTED = 0, 18, 20, 21
EDE_NOT_AUTH = ede_option(EDE_NOT_AUTHORITATIVE)
EDE_CLASS = ede_option(EDE_NOT_AUTHORITATIVE, "class IN only")
EDE_OPCODE = ede_option(EDE_NOT_SUPPORTED, "opcode QUERY only")
EDE_XFR = ede_option(EDE_PROHIBITED, "zone transfers: TCP, from allowed networks")


EDE_STALE_ANSWER = 3
EDE_STALE = ede_option(EDE_STALE_ANSWER, "alias addresses past their TTL: the resolver does not answer")


def no_member(name: bytes) -> bytes:
    """The EDE of a ``when_all_down`` SERVFAIL, REFUSED or NODATA: which record had no
    healthy member (rare: built when it happens)."""
    return ede_option(EDE_OTHER, f"no healthy member for {names.to_text(name)}")


class Client(NamedTuple):
    """Where a query came from: the socket peer, and whether it is UDP."""

    host: str
    udp: bool
    # response rate limiting will not send a negative answer to this client: a signed
    # zone's denial is then left unsigned (see respond())
    limited: bool = False


HDR_TAIL = struct.Struct("!HHHHH")  # flags, qd, an, ns, ar
SIG_HEAD = struct.Struct("!HHIH")  # an RR's type, class, TTL, RDLENGTH (after its owner)


def bare(data: bytes, rcode: int) -> bytes:
    qid = (data[0] << 8) | data[1]
    qflags = (data[2] << 8) | data[3]
    return header(qid, qflags, False, rcode, 0, 0, 0, 0)


def finish(
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
        opt = opt_record(edns.do, rcode >> 4, reply_options(edns, scope) + ede, edns.co)
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
