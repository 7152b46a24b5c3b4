"""Answers to DO=1 queries for signed zones: RRSIGs on every authoritative RRset,
compact denial (RFC 9824), DS or its signed absence at delegations; whole replies
kept per signature window, balanced answers as a pick plus the picked set's cached
RRSIGs."""

from __future__ import annotations

import random
import time

from gslb.answer.balanced import balanced_rcode, count_balanced, pick
from gslb.answer.reply import EDE_STALE, SIG_HEAD, Client, finish, no_member
from gslb.answer.state import BalancedRef, CompiledZone, ServingState
from gslb.answer.static import resolve, rrs
from gslb.dns.consts import CLASS_IN, NOERROR, NXDOMAIN, REFUSED, SERVFAIL, T_CNAME, T_DS, T_NS, T_SOA
from gslb.dns.wire import Query, RRw, encode_sections
from gslb.dnssec.signer import T_NSEC, T_RRSIG, Signer, compact_nsec


def sign_all(rrs: list[RRw], signer: Signer, now: float) -> list[RRw]:
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


def signed(
    q: Query,
    data: bytes,
    state: ServingState,
    zone: CompiledZone,
    signer: Signer,
    client: Client,
    rng: random.Random,
) -> tuple[bytes, bool | float | Query]:
    """The answer to a DO=1 query for a signed zone: RRSIGs on every authoritative
    RRset, compact denial (RFC 9824) for names and types that do not exist, DS or a
    signed proof of no DS at delegations. Signatures come from the signer's cache;
    whole replies that depend on the query alone (not on health or the client) are
    kept per signature window (``Signer.replies``, and in the reply cache until the
    window ends: the token is that time, so the C loop serves them as it serves
    unsigned ones), so a repeated static question is a lookup and an ID splice. A
    balanced name's NOERROR answer is a pick plus the picked set's RRSIGs
    (``Signer.answer_rrsigs``), and its token lets the reply cache keep the parsed
    query, as for unsigned balanced answers (:func:`respond`): the replies kept per
    routing decision then carry the RRSIGs, until the signatures are due."""
    now = time.time()
    step = signer.validity.step
    due = float((int(now) // step + 1) * step)  # the reply cache keeps a reply until then
    ck = (data[2:], client.udp)
    cached = signer.cached_reply(ck, now)
    if cached is not None:
        return data[:2] + cached, due
    key = q.key
    ref = state.fast.get((key, q.qtype))
    if type(ref) is BalancedRef:  # pick, then the cached RRSIG of the picked set
        pk = pick(state.plans[ref.name], q.qtype, q, client.host, rng, state.geo, state.loads)
        rcode = balanced_rcode(pk.outcome)
        if rcode != NOERROR or pk.frags:  # NODATA: the denial below
            count_balanced(state, ref.name, pk.pool, pk.outcome)
            if rcode != NOERROR:
                return finish(
                    q, False, rcode, b"", (0, 0, 0), None, client, pk.scope, no_member(ref.name)
                ), False
            frags = pk.frags
            sigs, n = signer.answer_rrsigs(key, frags, now)
            body = b"".join(frags) + sigs
            if pk.outcome is not None and pk.pool in pk.outcome.stale:  # not kept: EDE 3 each time
                counts = (len(frags) + n, 0, 0)
                return finish(q, True, NOERROR, body, counts, None, client, pk.scope, EDE_STALE), False
            return finish(q, True, NOERROR, body, (len(frags) + n, 0, 0), None, client, pk.scope), q
    p = resolve(state, zone, key, q.qtype, q, client, rng)
    if p.rcode in (SERVFAIL, REFUSED):
        ede = no_member(p.balanced) if p.balanced else b""
        return finish(q, False, p.rcode, b"", (0, 0, 0), None, client, p.scope, ede), False
    answer = sign_all(p.answer, signer, now)
    additional = p.additional
    rcode = p.rcode
    if p.additional_required and p.authority and p.authority[0][1] == T_NS:  # a referral
        cut = p.authority[0][0]
        authority = list(p.authority)  # the child's NS: not signed (RFC 4035 2.2)
        ds = zone.nodes[cut].rrsets.get(T_DS)
        if ds is not None:
            authority += sign_all(rrs(cut, T_DS, ds.ttl, ds.rdatas), signer, now)
        else:  # no DS: the NSEC at the cut says so
            authority += denial(zone, signer, cut, {T_NS}, now)
    elif p.authority and p.authority[-1] is zone.neg_soa_rr:  # NXDOMAIN or NODATA
        if client.limited:  # rate limiting drops or slips it: no signature for nobody
            return finish(q, True, NOERROR, b"", (0, 0, 0), None, client, p.scope), False
        name = key
        if p.answer and p.answer[-1][1] == T_CNAME:  # the chain ended at a name without data
            name = p.answer[-1][3].lower()
        present: set[int] | None = None
        if rcode != NXDOMAIN:
            node = zone.nodes.get(name)
            present = set(node.rrsets) if node is not None else set()
            if node is not None and node.balanced is not None:
                present |= set(node.balanced.types)
            # denied: the type asked, and a CNAME that is not there (a balanced CNAME with no
            # member to answer), or the NSEC would prove a CNAME (RFC 4035 5.4)
            present.discard(q.qtype)
            if node is not None and node.balanced is not None and node.balanced.cname:
                present.discard(T_CNAME)
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
            parts += [ptr + SIG_HEAD.pack(T_RRSIG, CLASS_IN, ttl, len(sg)) + sg for sg in soa_sigs]
            parts.append(b"\xc0\x0c" + SIG_HEAD.pack(T_NSEC, CLASS_IN, ttl, len(nsec)) + nsec)
            for sg in signer.rrsigs(name, T_NSEC, ttl, [nsec], now, keep=present is not None):
                parts.append(b"\xc0\x0c" + SIG_HEAD.pack(T_RRSIG, CLASS_IN, ttl, len(sg)) + sg)
            counts = (0, 2 + len(soa_sigs) * 2, 0)
            reply = finish(q, True, rcode, b"".join(parts), counts, None, client, p.scope)
            if not p.dynamic:
                signer.keep_reply(ck, reply[2:])
                return reply, due
            return reply, False
        authority = [
            neg,
            *[(soa[0], T_RRSIG, neg[2], s) for s in soa_sigs],
            *denial(zone, signer, name, present, now),
        ]
    else:
        authority = sign_all(p.authority, signer, now)
        additional = sign_all(p.additional, signer, now)
    body, an, ns, ar = encode_sections(key, (answer, authority, additional))
    small = None
    if additional:
        sb, san, sns, _ = encode_sections(key, (answer, authority, []))
        small = (sb, (san, sns, 0), p.additional_required)
    reply = finish(q, p.aa, rcode, body, (an, ns, ar), small, client, p.scope, EDE_STALE if p.stale else b"")
    if not p.dynamic:
        signer.keep_reply(ck, reply[2:])
        return reply, due
    return reply, False


def denial(
    zone: CompiledZone, signer: Signer, name: bytes, present: set[int] | None, now: float
) -> list[RRw]:
    """The compact-denial NSEC for ``name`` and its RRSIG (TTL: the negative TTL)."""
    ttl = zone.neg_soa_rr[2]
    nsec = compact_nsec(name, present)
    sigs = signer.rrsigs(name, T_NSEC, ttl, [nsec], now)
    return [(name, T_NSEC, ttl, nsec), *[(name, T_RRSIG, ttl, s) for s in sigs]]
