"""Routing decisions compiled against the GeoIP databases, like gdnsd's geoip maps.

A balanced name's rules (subnets, geos, asns) decide a rule index and an ECS scope
for each client address (:func:`gslb.serving.match_rule`). Those two depend only on
which database network holds the address (and, for subnet rules, on which side of a
subnet's boundaries it falls), so they can be worked out once per database network
at load time. :func:`compile_rules` does that for one rule set: the address space
is cut at every database network boundary (the City/Country and the ASN database,
from :meth:`Leaves`) and at every boundary a subnet rule's scope can change at, and
``match_rule`` itself is asked once for each piece, so the compiled answer is the
straightforward one by construction. A query is then one ``bisect`` over the
pieces' start addresses and an array read: the rule and the scope (capped at the
client's ECS source prefix at query time).

Rule sets are shared: names with the same rules (the same ``RuleMatch`` tuple) share
one compiled table. Health plays no part: a health change re-plans the pools
behind each rule, never this table. Address ranges the databases map through an
alias (IPv4 space reached from IPv6, ``::/96``, ``::ffff:0:0/96``, ``2002::/16``) are
not compiled: a client there takes the straightforward path (:data:`FALLBACK`).
"""

from __future__ import annotations

import array
import bisect
import itertools
from collections.abc import Sequence
from typing import Protocol

from gslb.geo import UNKNOWN, GeoInfo
from gslb.serving import RuleMatch, match_rule

FALLBACK = 0xFFFFFFFF  # a piece the table does not decide: look the client up


class LeafSource(Protocol):
    """The databases as sorted pieces of the address space (gslb.geo_maxmind)."""

    def leaves(self, family: int) -> Leaves: ...


class Leaves(Protocol):
    """The address space of one family as the databases cut it: piece ``i`` starts at
    ``starts[i]``; ``info(ids[i])`` is what a lookup there gives (None: an alias, not
    compiled), its ``prefix``/``asn_prefix`` the database networks' lengths. Pieces with
    the same id give the same answer."""

    @property
    def starts(self) -> Sequence[int]: ...
    @property
    def ids(self) -> Sequence[int]: ...
    def info(self, ident: int) -> GeoInfo | None: ...


class _Fixed:
    """A GeoLookup that knows one answer (the piece's)."""

    __slots__ = ("info",)

    def __init__(self) -> None:
        self.info = UNKNOWN

    def lookup(self, family: int, addr: int) -> GeoInfo:
        return self.info


def _subnet_cuts(matchers: tuple[RuleMatch, ...], family: int) -> list[int]:
    """Every address where the scope a subnet contributes can change: the ends of each
    block on the path from the root to the subnet (outside the subnet, the scope is one
    bit past the prefix the address shares with it, so it changes where the address
    leaves one of those blocks)."""
    bits = 32 if family == 4 else 128
    cuts: set[int] = set()
    for m in matchers:
        for fam, net, plen in m.subnets:
            if fam != family:
                continue
            for depth in range(plen + 1):
                start = (net >> (bits - depth)) << (bits - depth)
                cuts.add(start)
                cuts.add(start + (1 << (bits - depth)))
    cuts.discard(1 << bits)
    return sorted(cuts)


Pieces = tuple[Sequence[int], "array.array[int]"]  # start addresses, their decisions
INDEX_BITS = {4: 16, 6: 20}  # the first probe: the pieces under each /16 (IPv4), /20 (IPv6)


class _Table:
    """One family's pieces: starts, codes, and where each top-level block's pieces begin
    (so the bisect runs over a few pieces, not all of them)."""

    __slots__ = ("codes", "index", "shift", "starts")

    def __init__(self, starts: Sequence[int], codes: array.array[int], family: int) -> None:
        self.starts = starts
        self.codes = codes
        bits = INDEX_BITS[family]
        self.shift = (32 if family == 4 else 128) - bits
        index = array.array("I", bytes(4 * ((1 << bits) + 1)))
        # index[k]: the first piece starting at or after block k (len(starts) past the end)
        pos = 0
        n = len(starts)
        shift = self.shift
        for k in range((1 << bits) + 1):
            edge = k << shift
            while pos < n and starts[pos] < edge:
                pos += 1
            index[k] = pos
        self.index = index


class Compiled:
    """One rule set's decisions for both families."""

    __slots__ = ("pieces", "v4", "v6")

    def __init__(self, v4: Pieces, v6: Pieces) -> None:
        self.v4 = _Table(v4[0], v4[1], 4)
        self.v6 = _Table(v6[0], v6[1], 6)
        self.pieces = len(v4[0]) + len(v6[0])

    def decide(self, family: int, addr: int, source: int) -> tuple[int, int] | None:
        """(rule index, ECS scope) for a client, or None: take the straightforward path."""
        t = self.v4 if family == 4 else self.v6
        k = addr >> t.shift
        index = t.index
        lo = index[k] - 1  # the piece holding the block's first address may start before it
        code = t.codes[bisect.bisect_right(t.starts, addr, lo if lo > 0 else 0, index[k + 1]) - 1]
        if code == FALLBACK:
            return None
        scope = code & 0xFF
        return code >> 8, scope if scope < source else source

    def nbytes(self) -> int:
        """Memory of the tables (starts shared with the databases' pieces not counted)."""
        total = 0
        for t in (self.v4, self.v6):
            total += t.codes.itemsize * len(t.codes) + t.index.itemsize * len(t.index)
        return total


def compile_rules(matchers: tuple[RuleMatch, ...], catch_all: int, source: LeafSource) -> Compiled:
    """The decision table of one rule set over the databases' pieces."""
    return Compiled(_compile(matchers, catch_all, source, 4), _compile(matchers, catch_all, source, 6))


def compiled_rules(matchers: tuple[RuleMatch, ...], catch_all: int, source: LeafSource) -> Compiled:
    """:func:`compile_rules`, once per rule set and database version: the tables are kept
    in the source's ``compiled_cache`` (emptied when a database is reloaded)."""
    cache: dict[object, Compiled] | None = getattr(source, "compiled_cache", None)
    key = (matchers, catch_all)
    got = cache.get(key) if cache is not None else None
    if got is None:
        got = compile_rules(matchers, catch_all, source)
        if cache is not None:
            cache[key] = got
    return got


class _Rules:
    """What match_rule reads of a plan: its matchers and catch-all."""

    __slots__ = ("catch_all", "matchers")

    def __init__(self, matchers: tuple[RuleMatch, ...], catch_all: int) -> None:
        self.matchers = matchers
        self.catch_all = catch_all


def _compile(
    matchers: tuple[RuleMatch, ...], catch_all: int, source: LeafSource, family: int
) -> tuple[Sequence[int], array.array[int]]:
    bits = 32 if family == 4 else 128
    leaves = source.leaves(family)
    plan = _Rules(matchers, catch_all)
    fixed = _Fixed()
    cuts = _subnet_cuts(matchers, family)
    codes = array.array("I")
    if not cuts:
        # the pieces are the leaves: one decision per distinct (record, prefixes), shared
        memo: dict[int, int] = {}
        for i in leaves.ids:
            code = memo.get(i)
            if code is None:
                info = leaves.info(i)
                if info is None:
                    code = FALLBACK
                else:
                    fixed.info = info
                    rule, scope, _ = match_rule(plan, family, 0, bits, fixed)  # type: ignore[arg-type]
                    code = (rule << 8) | scope
                memo[i] = code
            codes.append(code)
        return leaves.starts, codes
    # subnet rules: the leaves cut further where a subnet's scope changes
    starts: list[int] = []
    for start, i in _merge(leaves.starts, leaves.ids, cuts):
        info = leaves.info(i)
        if info is None:
            code = FALLBACK
        else:
            fixed.info = info
            rule, scope, _ = match_rule(plan, family, start, bits, fixed)  # type: ignore[arg-type]
            code = (rule << 8) | scope
        if codes and codes[-1] == code and code != FALLBACK:
            continue  # the same decision as the piece before: one piece
        starts.append(start)
        codes.append(code)
    return (array.array("I", starts) if family == 4 else starts), codes


def _merge(starts: Sequence[int], ids: Sequence[int], cuts: list[int]) -> itertools.chain[tuple[int, int]]:
    """(start, leaf id) of the pieces the leaves and the cuts make together."""
    out: list[tuple[int, int]] = []
    j = 0
    n = len(starts)
    for k in range(n):
        s = starts[k]
        end = starts[k + 1] if k + 1 < n else None
        out.append((s, ids[k]))
        while j < len(cuts) and cuts[j] <= s:
            j += 1
        while j < len(cuts) and (end is None or cuts[j] < end):
            out.append((cuts[j], ids[k]))
            j += 1
    return itertools.chain(out)
