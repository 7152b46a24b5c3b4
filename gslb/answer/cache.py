"""The reply cache's answers without the full lookup: a balanced name's reply kept per
routing decision (one table look-up and at most one draw: ``memo_hit``, which the C
loop does too), a pick spliced into the entry's question and OPT
(``balanced_cached``), and the entry of the same query from another ECS client
subnet (``ecs_template``, ``balanced_ecs``)."""

from __future__ import annotations

import bisect
import random
import struct
import time
from typing import cast

from gslb.answer.balanced import PickTuple, ecs_client, pick_tuple
from gslb.answer.policies import CHOICE, ONE, Variants
from gslb.answer.reply import HDR_TAIL, reply_options
from gslb.answer.state import (
    BalancedEntry,
    BalancedPlan,
    BalancedRef,
    CacheEntry,
    ClientAddr,
    ServingState,
    StatsKey,
)
from gslb.dns.consts import EDNS_MAX_UDP, NOERROR
from gslb.dns.wire import OPT_ECS, TC, Query, client_of, opt_record, query_opt

CACHE_MAX = 50_000  # cached replies per state and transport


MEMO_MAX = 10_000  # kept decisions per cache entry


def memo_key(plan: BalancedPlan, client: ClientAddr | None, host: str) -> int | None:
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


def memo_hit(
    e: BalancedEntry,
    data: bytes,
    state: ServingState,
    host: str,
    rng: random.Random,
    client: ClientAddr | None,
) -> tuple[bytes, StatsKey] | None:
    """A balanced answer from the replies the entry keeps per routing decision (filled by
    :func:`memo_fill` from the full pick): a table look-up, at most one draw from the RNG
    (the same draw the policy makes), a concatenation. server/transport/_fastpath.c does the same in C."""
    if e.memo_plan is not state.plans[e.name] or e.tail < 0:
        return None
    key = memo_key(e.memo_plan, client, host)
    m = e.memo.get(key) if key is not None else None
    if m is None:
        return None
    if len(m) == 5 and time.time() >= m[4]:  # signed: its signatures are due for renewal
        return None
    kind, replies, cum, ckey = m[:4]
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


def memo_fill(
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
    key = memo_key(plan, client, host)
    frags, _, outcome, _, pool, _, _ = pick
    if key is None or outcome is None or pool in outcome.stale:
        return
    if outcome.kind == "serve_all":
        variants: Variants[bytes] | None = Variants(ONE, (tuple(frags),))
    else:
        same = [p for p in outcome.pools if p.name == pool]
        choice = same[0]
        if len(same) > 1:  # fastest_from_nearest_node: one choice per vantage, of one pool: the picked
            choice = next((p for p in same if list(p.cands.items[: len(frags)]) == list(frags)), choice)
        variants = plan.policy.variants(choice.cands, plan.count)
    if variants is None:
        return
    replies = []
    fixed = 12 + len(e.question) + len(end) + e.tail
    sign, now = e.sign, time.time()
    for items in variants.answers:
        body, an = b"".join(items), len(items)
        if sign is not None:  # a signed zone, DO=1: each set with its RRSIGs, made once
            sigs, n = sign(e.q.key, list(items), now)
            body += sigs
            an += n
        if fixed + len(body) > e.limit:
            return
        replies.append(HDR_TAIL.pack(e.flags, 1, an, 0, e.ar) + e.question + body + end)
    if len(e.memo) >= MEMO_MAX:
        e.memo.clear()
    ckey = (e.name, pool, outcome.kind)
    if sign is None:
        e.memo[key] = (variants.kind, tuple(replies), variants.cum_weights, ckey)
    else:  # until the signatures' step ends (then memo_hit misses and this refills)
        due = float((int(now) // e.sign_step + 1) * e.sign_step)
        e.memo[key] = (variants.kind, tuple(replies), variants.cum_weights, ckey, due)


def balanced_cached(
    e: BalancedEntry, data: bytes, state: ServingState, host: str, rng: random.Random
) -> tuple[bytes, StatsKey] | None:
    """A balanced name's NOERROR answer from its cache entry: pick, then splice.

    None sends the query down the full path (it picks again and counts there),
    which handles the rest: no members (NODATA), servfail/refuse, truncation.
    """
    picked = pick_tuple(state.plans[e.name], e.qtype, e.q, host, rng, state.geo, state.loads, e.ecs_client)
    frags, scope, outcome, _, pool, _, _ = picked
    # balanced_rcode() and count_balanced() written out here: the two calls cost 830
    # instructions per answer (callgrind) on the path every repeated balanced query takes;
    # test_udp_io checks this path's bytes and counts against the full path's
    if not frags or outcome is None or outcome.kind in ("servfail", "refuse") or pool in outcome.stale:
        return None  # the full path (a stale alias's addresses: with EDE 3, not from here)
    opt = e.opts.get(scope)
    if opt is None:
        edns = e.q.edns
        if edns is None:
            opt = b""
        else:
            opt = opt_record(edns.do, 0, reply_options(edns, scope), edns.co)
        e.opts[scope] = opt
    if e.tail >= 0:
        memo_fill(e, state, host, e.ecs_client, picked, opt[: len(opt) - e.tail])
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
    return data[:2] + HDR_TAIL.pack(e.flags, 1, an, 0, e.ar) + question + body + opt, e.skey


_ECS_HEAD = struct.Struct("!HHHBB")  # option code, length, family, source, scope


def ecs_template(data: bytes) -> tuple[tuple[str, bytes], ClientAddr, bytes] | None:
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


def balanced_ecs(
    e: BalancedEntry,
    data: bytes,
    state: ServingState,
    host: str,
    rng: random.Random,
    t: tuple[tuple[str, bytes], ClientAddr, bytes],
) -> tuple[bytes, StatsKey] | None:
    """:func:`balanced_cached` for another client subnet: the pick for this client and
    its ECS option echoed (the OPT record before the address octets is kept per scope)."""
    picked = pick_tuple(state.plans[e.name], e.qtype, e.q, host, rng, state.geo, state.loads, t[1])
    frags, scope, outcome, _, pool, _, _ = picked
    if not frags or outcome is None or outcome.kind in ("servfail", "refuse") or pool in outcome.stale:
        return None  # the full path (a stale alias's addresses: with EDE 3, not from here)
    head = e.ecs_heads.get(scope)
    if head is None:
        edns = e.q.edns
        assert edns is not None and edns.ecs is not None
        opt = opt_record(edns.do, 0, reply_options(edns, scope), edns.co)
        head = e.ecs_heads[scope] = opt[: len(opt) - len(edns.ecs.address)]
    if e.tail >= 0:
        memo_fill(e, state, host, t[1], picked, head)
    body = frags[0] if len(frags) == 1 else b"".join(frags)
    an = len(frags)
    sign = e.sign
    if sign is not None:  # a signed zone, DO=1: the picked set's cached RRSIGs
        sigs, n = sign(e.q.key, frags, time.time())
        body += sigs
        an += n
    question = e.question
    if 12 + len(question) + len(body) + len(head) + len(t[2]) > e.limit:
        return None
    counts = state.balanced_counts
    if counts is not None:
        counts[(e.name, pool, outcome.kind)] += 1
    return data[:2] + HDR_TAIL.pack(e.flags, 1, an, 0, e.ar) + question + body + head + t[2], e.skey


def lookup(
    cache: dict[bytes | tuple[str, bytes], CacheEntry],
    data: bytes,
    state: ServingState,
    host: str,
    rng: random.Random,
) -> tuple[bytes, StatsKey] | None:
    """The first stage of a query: its reply from the cache, or None for the full path."""
    hit = cache.get(data[2:])
    if hit is not None:
        if type(hit) is tuple:  # a FixedReply
            if len(hit) == 3 and time.time() >= hit[2]:  # signed, due for new signatures
                return None
            return data[:2] + hit[0], hit[1]
        e = cast(BalancedEntry, hit)
        fast = memo_hit(e, data, state, host, rng, e.ecs_client)
        if fast is None:
            fast = balanced_cached(e, data, state, host, rng)
        return fast  # None: anything but a plain NOERROR pick (all down, NODATA, too big)
    if data[10:12] == b"\x00\x01":
        # an ECS query from a client subnet not seen yet: the entry of the same query from
        # any subnet serves it, with this client's address (resolvers send thousands)
        t = ecs_template(data)
        if t is not None:
            entry = cast(BalancedEntry | None, cache.get(t[0]))
            if entry is not None:
                fast = memo_hit(entry, data, state, host, rng, t[1])
                return fast if fast is not None else balanced_ecs(entry, data, state, host, rng, t)
    return None


def keep(
    cache: dict[bytes | tuple[str, bytes], CacheEntry],
    data: bytes,
    reply: bytes,
    token: bool | float | Query,
    skey: StatsKey,
    state: ServingState,
    udp: bool,
) -> None:
    """The last stage: keep what the full path answered, as ``token`` allows (True: the
    reply itself; a float: the reply until that time, when its signatures are due; a
    parsed query: a balanced entry; False: nothing)."""
    if token is False or len(data) < 12:
        return
    if len(cache) >= CACHE_MAX:
        cache.clear()  # a flood of distinct names: start over rather than track age
    key = data[2:]
    if token is True:
        cache[key] = (reply[2:], skey)
        return
    if type(token) is float:
        cache[key] = (reply[2:], skey, token)
        return
    assert isinstance(token, Query)
    if reply[3] & 0xF != NOERROR:
        return
    q = token
    flags = (reply[2] << 8 | reply[3]) & ~(TC | 0xF)
    payload = 512 if q.edns is None else q.edns.payload
    limit = max(512, min(payload, EDNS_MAX_UDP)) if udp else 65535
    ref = cast(BalancedRef, state.fast[(q.key, q.qtype)])
    entry = BalancedEntry(q, ref.name, skey[0], skey, flags, limit, ecs_client(q))
    if q.edns is not None and q.edns.do and state.signers:
        signer = state.signers.get(skey[0])
        if signer is not None:
            entry.sign = signer.answer_rrsigs
            entry.sign_step = signer.validity.step
    cache[key] = entry
    if entry.ecs_client is None:
        entry.tail = 0
    else:
        t = ecs_template(data)
        if t is not None:
            entry.tail = len(t[2])
            cache[t[0]] = entry
