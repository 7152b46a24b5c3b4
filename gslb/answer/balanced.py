"""Balanced names: for one query, the rule (by the client's subnet, location or AS,
from the compiled table or a lookup), the first pool with enough healthy members,
and the policy's members; the rcode and the count of a balanced answer."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import NamedTuple, cast

from gslb.answer.geo.lookup import UNKNOWN, GeoInfo, GeoLookup
from gslb.answer.policies import NO_CLIENT, PickContext
from gslb.answer.state import BalancedPlan, ClientAddr, Outcome, ServingState, match_rule
from gslb.dns.consts import NOERROR, REFUSED, SERVFAIL
from gslb.dns.wire import Query, client_of
from gslb.health.view import MemberKey


def ecs_client(q: Query) -> ClientAddr | None:
    """The client from the query's ECS option, if it has one with a source prefix."""
    edns = q.edns
    if edns is not None and edns.ecs is not None and edns.ecs.source > 0:
        ecs = edns.ecs
        return ClientAddr(
            4 if ecs.family == 1 else 6, int.from_bytes(ecs.ip_bytes(), "big"), ecs.source, True
        )
    return None


def client_addr(q: Query, host: str, use_ecs: bool) -> ClientAddr:
    if use_ecs:
        ca = ecs_client(q)
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
    return Pick._make(pick_tuple(plan, qtype, q, host, rng, geo, loads, None))


# Pick's fields as a plain tuple: the reply-cache path makes one per balanced answer, and a
# NamedTuple costs a Python-level __new__ there (+1,800 instructions per answer, callgrind)
PickTuple = tuple[list[bytes], int, "Outcome | None", int, str, "GeoInfo | None", "ClientAddr | None"]


def pick_tuple(
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
        ca = ecs_client if ecs_client is not None and use_ecs else client_addr(q, host, use_ecs)
        fam, addr, source, from_ecs = ca  # unpacked once: attribute access costs more per query
        table = plan.decisions
        decided = table.decide(fam, addr, source) if table is not None else None
        if decided is None:
            rule, scope, info = match_rule(plan, fam, addr, source, geo)
        else:  # compiled at load: one bisect (gslb.answer.geo.tables)
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
                remember(memo, lkey, index)
            else:
                index = cast(int, found)
    choice = outcome.pools[index]
    if policy.uses_loads:
        readings = tuple(loads.get(k) for k in choice.member_keys)
        if choice.shares:  # slow start: a ramping member's load counts as load / its share
            readings = tuple(
                r / x if r is not None else None for r, x in zip(readings, choice.shares, strict=True)
            )
        ctx = ctx._replace(loads=readings)
        frags = list(policy.pick(choice.cands, plan.count, rng, ctx))
    elif policy.uses_client:
        # a hashed pick is a function of the candidates and the client's subnet
        fam, addr = ctx.family, ctx.addr
        hkey = (rule, qtype, index, fam, addr >> ((32 if fam == 4 else 128) - ctx.hash_prefix))
        memo = plan.memo
        picked = memo.get(hkey)
        if picked is None:
            picked = tuple(policy.pick(choice.cands, plan.count, rng, ctx))
            remember(memo, hkey, picked)
        frags = list(cast(tuple[bytes, ...], picked))
    else:
        frags = list(policy.pick(choice.cands, plan.count, rng, ctx))
    sc = scope if from_ecs else 0
    return (frags, sc, outcome, rule, choice.name, info, ca)


MEMO_MAX = 10_000


def remember(memo: dict[tuple[object, ...], object], key: tuple[object, ...], value: object) -> None:
    if len(memo) >= MEMO_MAX:
        memo.clear()
    memo[key] = value
