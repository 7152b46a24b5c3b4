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
import dataclasses
from collections.abc import Sequence
from typing import Protocol

from gslb.geo import UNKNOWN, GeoInfo
from gslb.serving import RuleMatch, match_rule

FALLBACK = 0xFFFFFFFF  # a piece the table does not decide: look the client up


class LeafSource(Protocol):
    """The databases as sorted pieces of the address space (gslb.geo_maxmind)."""

    def leaves(self, family: int) -> Leaves: ...


class Leaves(Protocol):
    """The address space of one family as the databases cut it (gslb.geo_maxmind.Pieces):
    piece ``i`` starts at ``starts[i] << shift``; ``gnode``/``anode`` say which City and
    ASN records hold it (equal nodes: equal records), ``gprefix``/``aprefix`` the
    networks' lengths; ``info_of`` is what a lookup there gives (None: an alias, not
    compiled)."""

    @property
    def starts(self) -> Sequence[int]: ...
    @property
    def shift(self) -> int: ...
    @property
    def gnode(self) -> Sequence[int]: ...
    @property
    def gprefix(self) -> Sequence[int]: ...
    @property
    def anode(self) -> Sequence[int]: ...
    @property
    def aprefix(self) -> Sequence[int]: ...
    def __len__(self) -> int: ...
    def info_of(self, gnode: int, gprefix: int, anode: int, aprefix: int) -> GeoInfo | None: ...


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


INDEX_BITS = {4: 16, 6: 20}  # the first probe: the pieces under each /16 (IPv4), /20 (IPv6)


class _Table:
    """One family's pieces: starts (of ``addr >> shift``), codes, and where each
    top-level block's pieces begin (so the bisect runs over a few pieces)."""

    __slots__ = ("codes", "index", "kshift", "shift", "starts")

    def __init__(self, starts: Sequence[int], codes: array.array[int], family: int, shift: int) -> None:
        self.starts = starts
        self.codes = codes
        self.shift = shift
        bits = INDEX_BITS[family]
        self.kshift = (32 if family == 4 else 128) - shift - bits
        index = array.array("I", bytes(4 * ((1 << bits) + 1)))
        # index[k]: the first piece starting at or after block k (len(starts) past the end)
        pos, n, kshift = 0, len(starts), self.kshift
        for k in range((1 << bits) + 1):
            edge = k << kshift
            while pos < n and starts[pos] < edge:
                pos += 1
            index[k] = pos
        self.index = index

    def nbytes(self) -> int:
        own = self.starts.itemsize * len(self.starts) if isinstance(self.starts, array.array) else 0
        return self.codes.itemsize * len(self.codes) + self.index.itemsize * len(self.index) + own


class Compiled:
    """One rule set's decisions for both families."""

    __slots__ = ("pieces", "v4", "v6")

    def __init__(self, v4: _Table, v6: _Table) -> None:
        self.v4 = v4
        self.v6 = v6
        self.pieces = len(v4.codes) + len(v6.codes)

    def decide(self, family: int, addr: int, source: int) -> tuple[int, int] | None:
        """(rule index, ECS scope) for a client, or None: take the straightforward path."""
        t = self.v4 if family == 4 else self.v6
        key = addr >> t.shift
        k = key >> t.kshift
        index = t.index
        lo = index[k] - 1  # the piece holding the block's first address may start before it
        code = t.codes[bisect.bisect_right(t.starts, key, lo if lo > 0 else 0, index[k + 1]) - 1]
        if code == FALLBACK:
            return None
        scope = code & 0xFF
        return code >> 8, scope if scope < source else source

    def nbytes(self) -> int:
        """Memory of the tables (starts shared with the databases' pieces not counted)."""
        return self.v4.nbytes() + self.v6.nbytes()


def compile_rules(matchers: tuple[RuleMatch, ...], catch_all: int, source: LeafSource) -> Compiled:
    """The decision table of one rule set over the databases' pieces."""
    return Compiled(_compile(matchers, catch_all, source, 4), _compile(matchers, catch_all, source, 6))


def compiled_rules(
    matchers: tuple[RuleMatch, ...], catch_all: int, source: LeafSource, build: bool = True
) -> Compiled | None:
    """:func:`compile_rules`, once per rule set and database version: the tables are kept
    in the source's ``compiled_cache`` (emptied when a database is reloaded). ``build``
    False: only what is compiled already (None otherwise)."""
    cache: dict[object, Compiled] | None = getattr(source, "compiled_cache", None)
    key = (matchers, catch_all)
    got = cache.get(key) if cache is not None else None
    if got is None and build:
        got = compile_rules(matchers, catch_all, source)
        if cache is not None:
            cache[key] = got
    return got


def compile_inline(source: object) -> bool:
    """Whether the databases are small enough to compile while a state is built (the
    tests' and MaxMind's test databases); a City-sized one compiles in the background
    (``Answerer.compile_geo``) while queries take the lookup path."""
    small = getattr(source, "small", None)
    return bool(small()) if callable(small) else True


class _Rules:
    """What match_rule reads of a plan: its matchers and catch-all."""

    __slots__ = ("catch_all", "matchers")

    def __init__(self, matchers: tuple[RuleMatch, ...], catch_all: int) -> None:
        self.matchers = matchers
        self.catch_all = catch_all


def _compile(matchers: tuple[RuleMatch, ...], catch_all: int, source: LeafSource, family: int) -> _Table:
    bits = 32 if family == 4 else 128
    leaves = source.leaves(family)
    plan = _Rules(matchers, catch_all)
    fixed = _Fixed()
    cuts = _subnet_cuts(matchers, family)
    codes = array.array("I")
    gnode, gprefix, anode, aprefix = leaves.gnode, leaves.gprefix, leaves.anode, leaves.aprefix
    if not cuts:
        # one decision per piece; the rule depends only on the records (not on where the
        # piece is), the scope on which networks' lengths the rules looked at: both found
        # once per pair of records, with prefixes 200 and 201 marking which were used
        memo: dict[tuple[int, int], tuple[int, bool, bool] | None] = {}
        for i in range(len(leaves)):
            g, a = gnode[i], anode[i]
            key = (g, a)
            if key in memo:
                got = memo[key]
            else:
                info = leaves.info_of(g, 200, a, 201)
                if info is None:
                    got = None
                else:
                    fixed.info = info
                    rule, r1, _ = match_rule(plan, family, 0, 255, fixed)  # type: ignore[arg-type]
                    fixed.info = dataclasses.replace(info, prefix=201, asn_prefix=200)
                    _, r2, _ = match_rule(plan, family, 0, 255, fixed)  # type: ignore[arg-type]
                    got = (rule, r2 == 201, r1 == 201)  # the City network's length used, the ASN's
                memo[key] = got
            if got is None:
                codes.append(FALLBACK)
                continue
            rule, use_g, use_a = got
            scope = max(gprefix[i] if use_g else 0, aprefix[i] if use_a else 0)
            codes.append((rule << 8) | scope)
        return _Table(leaves.starts, codes, family, leaves.shift)
    # subnet rules: the leaves cut further where a subnet's scope changes
    starts: list[int] = []
    for start, i in _merge(leaves, cuts):
        info = leaves.info_of(gnode[i], gprefix[i], anode[i], aprefix[i])
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
    return _Table(array.array("I", starts) if family == 4 else starts, codes, family, 0)


def _merge(leaves: Leaves, cuts: list[int]) -> list[tuple[int, int]]:
    """(start, leaf index) of the pieces the leaves and the cuts make together."""
    out: list[tuple[int, int]] = []
    j = 0
    n = len(leaves)
    shift = leaves.shift
    starts = leaves.starts
    for k in range(n):
        s = starts[k] << shift
        end = starts[k + 1] << shift if k + 1 < n else None
        out.append((s, k))
        while j < len(cuts) and cuts[j] <= s:
            j += 1
        while j < len(cuts) and (end is None or cuts[j] < end):
            out.append((cuts[j], k))
            j += 1
    return out
