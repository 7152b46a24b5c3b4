"""Routing decisions compiled against the GeoIP databases, like gdnsd's geoip maps.

A balanced name's rules (subnets, geos, asns) decide a rule index and an ECS scope
for each client address (:func:`gslb.answer.state.match_rule`). Those two depend only on
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

from gslb.answer.geo.lookup import UNKNOWN, GeoInfo
from gslb.answer.policies import PickContext
from gslb.answer.state import RuleMatch, match_rule

FALLBACK = 0xFFFFFFFF  # a piece the table does not decide: look the client up
FALLBACK16 = 0xFFFF  # the same in a table of two-octet codes


class LeafSource(Protocol):
    """The databases as sorted pieces of the address space (gslb.answer.geo.maxmind)."""

    def leaves(self, family: int) -> Leaves: ...


class Leaves(Protocol):
    """The address space of one family as the databases cut it (gslb.answer.geo.maxmind.Pieces):
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

    __slots__ = ("codes", "fallback", "index", "kshift", "shift", "starts")

    def __init__(self, starts: Sequence[int], codes: array.array[int], family: int, shift: int) -> None:
        self.starts = starts
        self.codes = codes  # "H" (see _Codes) or "I"
        self.fallback = FALLBACK16 if codes.typecode == "H" else FALLBACK
        self.shift = shift
        bits = INDEX_BITS[family]
        self.kshift = (32 if family == 4 else 128) - shift - bits
        self.index = _first_level(starts, bits, self.kshift)

    def nbytes(self) -> int:
        own = self.starts.itemsize * len(self.starts) if isinstance(self.starts, array.array) else 0
        return self.codes.itemsize * len(self.codes) + self.index.itemsize * len(self.index) + own


Class = tuple[int, tuple[int, ...]]  # (rule index, the rule's pools in preference order)


def _first_level(starts: Sequence[int], bits: int, kshift: int) -> array.array[int]:
    """index[k]: the first piece starting at or after block k's first address (the number
    of pieces that start before it), for the 2**bits blocks and one past the end. Filled
    a run of blocks at a time: one bisect and one slice per block that holds a start (a
    loop over every block cost 0.15 s per IPv6 table, even for the tests' databases)."""
    nb = 1 << bits
    index = array.array("I", bytes(4 * (nb + 1)))
    n = len(starts)
    pos, prev = 0, -1  # blocks up to ``prev`` are filled
    while pos < n:
        b = starts[pos] >> kshift  # the block of the next start; the blocks before it and
        index[prev + 1 : b + 1] = array.array("I", [pos]) * (b - prev)  # it: ``pos`` before
        prev = b
        pos = bisect.bisect_left(starts, (b + 1) << kshift, pos)
    index[prev + 1 : nb + 1] = array.array("I", [n]) * (nb - prev)
    return index


class _Codes:
    """A table's codes, two octets each while every code fits (fewer than 255 rules or
    classes: a City database's 6 million pieces take 12 MB less per rule set), four
    from the first that does not."""

    __slots__ = ("arr",)

    def __init__(self) -> None:
        self.arr = array.array("H")

    def append(self, code: int) -> None:
        arr = self.arr
        if arr.typecode == "H":
            if code == FALLBACK:
                code = FALLBACK16
            elif code >= FALLBACK16:
                self.arr = arr = array.array("I", (FALLBACK if c == FALLBACK16 else c for c in arr))
        arr.append(code)


class Compiled:
    """One rule set's decisions for both families.

    A code is ``(class << 8) | scope``. Without places the class is the rule index. With
    places (a policy that picks by the client's coordinates, ``select: closest``) it
    indexes ``classes``: (rule, the rule's pools in the order the policy prefers them
    from there), and the scope includes the City network's length, which such a pick
    reads. Either way, clients with the same class and scope get the same answer from
    the same health: :meth:`key` is what the engine keeps replies under."""

    __slots__ = ("classes", "pieces", "rule_of", "v4", "v6")

    def __init__(self, v4: _Table, v6: _Table, classes: list[Class] | None = None) -> None:
        self.v4 = v4
        self.v6 = v6
        self.pieces = len(v4.codes) + len(v6.codes)
        self.classes = classes
        self.rule_of = None if classes is None else [c[0] for c in classes]

    def _code(self, family: int, addr: int) -> int:
        t = self.v4 if family == 4 else self.v6
        key = addr >> t.shift
        k = key >> t.kshift
        index = t.index
        lo = index[k] - 1  # the piece holding the block's first address may start before it
        code = t.codes[bisect.bisect_right(t.starts, key, lo if lo > 0 else 0, index[k + 1]) - 1]
        return FALLBACK if code == t.fallback else code

    def decide(self, family: int, addr: int, source: int) -> tuple[int, int] | None:
        """(rule index, ECS scope) for a client, or None: take the straightforward path."""
        code = self._code(family, addr)
        if code == FALLBACK:
            return None
        scope = code & 0xFF
        rule = code >> 8
        if self.rule_of is not None:
            rule = self.rule_of[rule]
        return rule, scope if scope < source else source

    def key(self, family: int, addr: int, source: int) -> int | None:
        """The client's class and scope as one number (equal numbers: equal answers), or
        None: not compiled here."""
        code = self._code(family, addr)
        if code == FALLBACK:
            return None
        scope = code & 0xFF
        return code - scope + (scope if scope < source else source)

    def nbytes(self) -> int:
        """Memory of the tables (starts shared with the databases' pieces not counted)."""
        return self.v4.nbytes() + self.v6.nbytes()


Places = tuple[tuple[tuple[float, float] | None, ...], ...]  # per rule: its pools' locations


class Chooser(Protocol):
    """What orders pools by the client's coordinates (gslb.answer.policies.Policy.choose_pool)."""

    def choose_pool(self, locations: Sequence[tuple[float, float] | None], ctx: PickContext) -> int: ...


def compile_rules(
    matchers: tuple[RuleMatch, ...],
    catch_all: int,
    source: LeafSource,
    places: Places | None = None,
    chooser: Chooser | None = None,
) -> Compiled:
    """The decision table of one rule set over the databases' pieces; with ``places``
    and the policy's ``chooser``, classes that also say which pool is nearest."""
    classes: dict[Class, int] | None = None
    ranker = None
    if places is not None and chooser is not None:
        classes = {}
        ranker = _Ranker(places, chooser, classes)
    v4 = _compile(matchers, catch_all, source, 4, ranker)
    v6 = _compile(matchers, catch_all, source, 6, ranker)
    return Compiled(v4, v6, None if classes is None else list(classes))


class _Ranker:
    """The class of (rule, coordinates): the rule's pools in the order the policy takes
    them (its choice among all, then among the rest, ...). Equal orders: equal choices
    among whichever pools are up."""

    def __init__(self, places: Places, chooser: Chooser, classes: dict[Class, int]) -> None:
        self.places, self.chooser, self.classes = places, chooser, classes
        self.memo: dict[tuple[int, float | None, float | None], int] = {}

    def cls(self, rule: int, info: GeoInfo) -> int:
        key = (rule, info.lat, info.lon)
        got = self.memo.get(key)
        if got is None:
            locs = list(self.places[rule]) if rule < len(self.places) else []
            ids = list(range(len(locs)))
            ctx = PickContext(lat=info.lat, lon=info.lon)
            order: list[int] = []
            while ids:
                i = self.chooser.choose_pool(locs, ctx)
                order.append(ids.pop(i))
                locs.pop(i)
            c = (rule, tuple(order))
            got = self.classes.get(c)
            if got is None:
                got = self.classes[c] = len(self.classes)
            self.memo[key] = got
        return got


def compiled_rules(
    matchers: tuple[RuleMatch, ...],
    catch_all: int,
    source: LeafSource,
    build: bool = True,
    places: Places | None = None,
    chooser: Chooser | None = None,
) -> Compiled | None:
    """:func:`compile_rules`, once per rule set and database version: the tables are kept
    in the source's ``compiled_cache`` (emptied when a database is reloaded). ``build``
    False: only what is compiled already (None otherwise)."""
    cache: dict[object, Compiled] | None = getattr(source, "compiled_cache", None)
    key = (matchers, catch_all, places, type(chooser).__name__ if places is not None else None)
    got = cache.get(key) if cache is not None else None
    if got is None and build:
        got = compile_rules(matchers, catch_all, source, places, chooser)
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


def _compile(
    matchers: tuple[RuleMatch, ...], catch_all: int, source: LeafSource, family: int, ranker: _Ranker | None
) -> _Table:
    bits = 32 if family == 4 else 128
    leaves = source.leaves(family)
    plan = _Rules(matchers, catch_all)
    fixed = _Fixed()
    cuts = _subnet_cuts(matchers, family)
    codes = _Codes()
    gnode, gprefix, anode, aprefix = leaves.gnode, leaves.gprefix, leaves.anode, leaves.aprefix
    if not cuts:
        # one decision per piece; the rule depends only on the records (not on where the
        # piece is), the scope on which networks' lengths the rules looked at: both found
        # once per pair of records, with prefixes 200 and 201 marking which were used
        memo: dict[tuple[int, int], tuple[int, bool, bool] | None] = {}
        use_place = ranker is not None
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
                    # the City network's length used (a pick by coordinates reads it), the ASN's
                    cls = rule if ranker is None else ranker.cls(rule, info)
                    got = (cls, r2 == 201 or use_place, r1 == 201)
                memo[key] = got
            if got is None:
                codes.append(FALLBACK)
                continue
            rule, use_g, use_a = got
            scope = max(gprefix[i] if use_g else 0, aprefix[i] if use_a else 0)
            codes.append((rule << 8) | scope)
        return _Table(leaves.starts, codes.arr, family, leaves.shift)
    # subnet rules: the leaves cut further where a subnet's scope changes
    starts: list[int] = []
    prev = -1
    for start, i in _merge(leaves, cuts):
        info = leaves.info_of(gnode[i], gprefix[i], anode[i], aprefix[i])
        if info is None:
            code = FALLBACK
        else:
            fixed.info = info
            rule, scope, _ = match_rule(plan, family, start, bits, fixed)  # type: ignore[arg-type]
            if ranker is not None:
                rule, scope = ranker.cls(rule, info), max(scope, info.prefix)
            code = (rule << 8) | scope
        if code == prev and code != FALLBACK:
            continue  # the same decision as the piece before: one piece
        prev = code
        starts.append(start)
        codes.append(code)
    return _Table(array.array("I", starts) if family == 4 else starts, codes.arr, family, 0)


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
