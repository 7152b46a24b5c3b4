"""MaxMind GeoIP2/GeoLite2 databases behind ``gslb.answer.geo.lookup.GeoLookup``; the only geoip2 import.

:class:`MaxMindGeo` reads City or Country databases (and optionally an ASN
database) with geoip2, using its maxminddb reader for the per-query path, and
re-opens a database whose file changed (``maybe_reload``), keeping the last
good one when the new file is bad.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import dataclasses
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any

import geoip2.database
import geoip2.errors
import maxminddb

from gslb.answer.geo.lookup import GeoInfo

log = logging.getLogger("gslb.answer.geo.lookup")

CACHE_MAX = 65536


def _ip_text(family: int, addr: int) -> str:
    if family == 4:
        return socket.inet_ntop(socket.AF_INET, addr.to_bytes(4, "big"))
    return socket.inet_ntop(socket.AF_INET6, addr.to_bytes(16, "big"))


class GeoDatabaseError(ValueError):
    """A GeoIP database that cannot be used (missing, unreadable, wrong kind)."""


class _Db:
    """One opened database file, remembered with its mtime for reloads."""

    def __init__(self, path: Path, kind: str) -> None:
        try:
            self._open(path, kind)
        except GeoDatabaseError:
            raise
        except (OSError, ValueError, maxminddb.InvalidDatabaseError, geoip2.errors.GeoIP2Error) as e:
            raise GeoDatabaseError(f"{path}: cannot open as a MaxMind database: {e}") from None

    def _open(self, path: Path, kind: str) -> None:
        self.path = path
        self.kind = kind
        self.stamp = _stamp(path)
        reader = geoip2.database.Reader(str(path))  # validates the file and its metadata
        self.type = reader.metadata().database_type
        if kind == "asn" and "ASN" not in self.type:
            raise GeoDatabaseError(f"{path}: a {self.type} database, expected an ASN database")
        if kind == "geo" and not ("City" in self.type or "Country" in self.type):
            raise GeoDatabaseError(f"{path}: a {self.type} database, expected a City or Country database")
        reader.close()
        self.reader, self.tree = _open_private(path)
        self.v6 = self.reader.metadata().ip_version == 6

    def get(self, family: int, addr: int) -> tuple[Any, int]:
        if family == 6 and not self.v6:
            return None, 0
        # for IPv4 in an IPv6 database, maxminddb already gives the IPv4-relative prefix
        rec, prefix = self.reader.get_with_prefix_len(_ip_text(family, addr))
        return rec, prefix

    def record(self, node: int) -> Any:
        """The data record a search-tree leaf points to."""
        return self.tree._resolve_data_pointer(node)

    def walk(self, family: int) -> Walk:
        """The database's search tree as pieces of one family's address space, in order:
        (starts, prefix lengths, node values: the data record, the empty node, or -1
        for an alias of the IPv4 tree reached from IPv6). Reads the private copy the
        lookups use, so both see the same version of the file."""
        return _walk_tree(self.tree, family)

    def close(self) -> None:
        self.reader.close()
        self.tree.close()


def _info(rec: Any, prefix: int, arec: Any, aprefix: int) -> GeoInfo:
    """A lookup's answer from the two databases' records and network lengths."""
    continent = country = None
    subs: tuple[str, ...] = ()
    lat = lon = None
    if rec:
        continent = (rec.get("continent") or {}).get("code")
        country = (rec.get("country") or {}).get("iso_code")
        subs = tuple(s.get("iso_code") for s in rec.get("subdivisions") or () if s.get("iso_code"))
        loc = rec.get("location") or {}
        lat, lon = loc.get("latitude"), loc.get("longitude")
    asn = arec.get("autonomous_system_number") if arec else None
    return GeoInfo(continent, country, subs, lat, lon, asn, prefix, aprefix)


def _trim() -> None:
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


NO_DATA = 0xFFFFFFFE  # a piece no database network holds (no database, or an empty node)
ALIAS = 0xFFFFFFFF  # IPv6 space aliased to the IPv4 tree: not compiled
Walk = tuple[
    "array.array[int] | list[int]", "array.array[int]", "array.array[int]"
]  # starts, prefixes, nodes


class Pieces:
    """The address space of one family cut at every network of both databases
    (gslb.answer.geo.tables.Leaves): piece ``i`` starts at ``start(i)`` and has the City or
    Country record ``gnode[i]`` (a data pointer, NO_DATA or ALIAS) found with network
    length ``gprefix[i]``, and likewise ``anode``/``aprefix`` in the ASN database. About
    18 octets per piece (IPv6 starts are kept as their upper 64 bits when every piece
    starts on a /64 boundary, as in MaxMind's databases)."""

    def __init__(self, geo: MaxMindGeo, family: int) -> None:
        self.family = family
        self._geo = geo
        gs, gp, gn = geo.geo.walk(family) if geo.geo is not None else _no_db(family)
        as_, ap, an = geo.asn.walk(family) if geo.asn is not None else _no_db(family)
        wide = array.array("I" if family == 4 else "Q")
        self.gnode, self.gprefix = array.array("I"), array.array("B")
        self.anode, self.aprefix = array.array("I"), array.array("B")
        i = j = 0
        ng, na = len(gs), len(as_)
        while True:
            x, y = gs[i], as_[j]
            wide.append(x if x >= y else y)
            self.gnode.append(gn[i])
            self.gprefix.append(gp[i])
            self.anode.append(an[j])
            self.aprefix.append(ap[j])
            gnext = gs[i + 1] if i + 1 < ng else -1
            anext = as_[j + 1] if j + 1 < na else -1
            if gnext < 0 and anext < 0:
                break
            if anext < 0 or 0 <= gnext <= anext:
                i += 1
            if gnext < 0 or 0 <= anext <= gnext:
                j += 1
        self.starts = wide
        self.shift = 0 if family == 4 else 64  # IPv6: the upper 64 bits of a client
        self._records: dict[tuple[int, int], GeoInfo] = {}

    def __len__(self) -> int:
        return len(self.gnode)

    def start(self, i: int) -> int:
        return int(self.starts[i]) << self.shift

    def info(self, i: int) -> GeoInfo | None:
        """What a lookup in piece ``i`` gives (None: an alias, not compiled)."""
        return self.info_of(self.gnode[i], self.gprefix[i], self.anode[i], self.aprefix[i])

    def info_of(self, gnode: int, gprefix: int, anode: int, aprefix: int) -> GeoInfo | None:
        if gnode == ALIAS or anode == ALIAS:
            return None
        key = (gnode, anode)
        base = self._records.get(key)
        if base is None:  # what the two records say, without the (large) records themselves
            geo = self._geo
            rec = geo.geo.record(gnode) if geo.geo is not None and gnode != NO_DATA else None
            arec = geo.asn.record(anode) if geo.asn is not None and anode != NO_DATA else None
            base = self._records[key] = _info(rec, 0, arec, 0)
        return dataclasses.replace(base, prefix=gprefix, asn_prefix=aprefix)

    def forget_records(self) -> None:
        self._records = {}

    def nbytes(self) -> int:
        s = self.starts
        return len(s) * s.itemsize + 10 * len(self.gnode)


def _no_db(family: int) -> Walk:
    return array.array("I" if family == 4 else "Q", [0]), array.array("B", [0]), array.array("I", [NO_DATA])


def _walk_tree(reader: Any, family: int) -> Walk:
    """The search tree's leaves for one family, in address order. IPv6 stops at /64: a
    node still to be divided there (a network longer than /64, or ::/64 where the IPv4
    tree hangs) becomes one ALIAS piece, which the lookup decides; so every IPv6 piece
    starts on a /64 boundary and is kept as its upper 64 bits."""
    meta = reader.metadata()
    node_count, record_size = meta.node_count, meta.record_size
    if family == 6 and meta.ip_version != 6:
        return _no_db(6)  # no IPv6 in the file: every lookup finds nothing, prefix 0
    buf = _buffer_of(reader)
    ipv4_start = 0
    if meta.ip_version == 6:
        node = 0
        for _ in range(96):
            if node >= node_count:
                break
            node = _read_record(buf, record_size, node, 0)
        ipv4_start = node
    bits = 32 if family == 4 else 64  # the part of the address the starts keep
    starts = array.array("I" if family == 4 else "Q")
    prefixes = array.array("B")
    nodes = array.array("I")
    stack = [(ipv4_start if family == 4 else 0, 0, 0)]
    while stack:
        node, depth, acc = stack.pop()
        if node >= node_count or (depth == 32 and family == 4):
            starts.append(acc << (bits - depth))
            prefixes.append(depth)
            nodes.append(node if node > node_count else NO_DATA)
            continue
        if family == 6 and (depth == 64 or (depth and node == ipv4_start and ipv4_start)):
            starts.append(acc << (bits - depth))
            prefixes.append(depth)
            nodes.append(ALIAS)
            continue
        stack.append((_read_record(buf, record_size, node, 1), depth + 1, (acc << 1) | 1))
        stack.append((_read_record(buf, record_size, node, 0), depth + 1, acc << 1))
    return starts, prefixes, nodes


def _buffer_of(reader: Any) -> Any:
    """The bytes of the file (the pure-Python reader's mapping of the private copy)."""
    buf = getattr(reader, "_buffer", None)
    if buf is not None:
        return buf
    raise GeoDatabaseError("the database reader does not expose its bytes")


def _read_record(buf: Any, record_size: int, node: int, index: int) -> int:
    if record_size == 24:
        off = node * 6 + index * 3
        return int.from_bytes(buf[off : off + 3], "big")
    if record_size == 28:
        base = node * 7
        if index:
            return int.from_bytes(buf[base + 3 : base + 7], "big") & 0x0FFFFFFF
        rec = int.from_bytes(buf[base : base + 4], "big")
        return (rec >> 8) | ((rec & 0xF0) << 20)
    if record_size == 32:
        off = node * 8 + index * 4
        return int.from_bytes(buf[off : off + 4], "big")
    raise GeoDatabaseError(f"unknown record size {record_size}")


def _open_private(path: Path) -> tuple[Any, Any]:
    """Open a private copy of the database with the C reader (mmap), and with the
    pure-Python one (mmap too: the same pages), whose bytes the compiled routing
    tables walk (gslb.answer.geo.tables).

    maxminddb's C extension maps the file; a database rewritten in place (not
    replaced by rename) would change under it. So the file is copied, the copy
    mapped, and the copy unlinked at once: the mapping stays valid and no file
    is left behind. The pure-Python reader (MODE_MEMORY) would avoid the copy
    but costs ten times more per lookup.
    """
    fd, tmp = tempfile.mkstemp(prefix="gslb-geo-", suffix=".mmdb")
    try:
        with os.fdopen(fd, "wb") as out, open(path, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
        tree = maxminddb.open_database(tmp, maxminddb.MODE_MMAP)
        mode = maxminddb.MODE_MMAP_EXT if hasattr(maxminddb, "extension") else maxminddb.MODE_MMAP
        try:
            return maxminddb.open_database(tmp, mode), tree
        except (ImportError, ValueError):
            return maxminddb.open_database(tmp, maxminddb.MODE_MMAP), tree
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _stamp(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_mtime_ns, st.st_size)


class MaxMindGeo:
    def __init__(self, geo_path: str | Path | None, asn_path: str | Path | None = None) -> None:
        self.geo = _Db(Path(geo_path), "geo") if geo_path else None
        self.asn = _Db(Path(asn_path), "asn") if asn_path else None
        self.reload_errors = 0
        # decoded results by exact client address (ECS clients arrive as /24 and /56
        # network addresses, so this hits often); cleared on reload and when full
        self._cache: dict[tuple[int, int], GeoInfo] = {}
        self._pieces: dict[int, Pieces] = {}
        # gslb.answer.geo.tables's tables of this version of the databases, by rule set
        self.compiled_cache: dict[object, object] = {}

    def small(self) -> bool:
        """Databases small enough to compile routing tables for while a state is built
        (under about 200,000 tree nodes: the tests', MaxMind's test databases)."""
        nodes: int = sum(d.reader.metadata().node_count for d in (self.geo, self.asn) if d is not None)
        return nodes < 200_000

    def describe(self) -> str:
        parts = [f"{d.path} ({d.type})" for d in (self.geo, self.asn) if d is not None]
        return ", ".join(parts) or "none"

    def lookup(self, family: int, addr: int) -> GeoInfo:
        key = (family, addr)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        info = self._lookup(family, addr)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[key] = info
        return info

    def _lookup(self, family: int, addr: int) -> GeoInfo:
        rec = arec = None
        prefix = aprefix = 0
        if self.geo is not None:
            try:
                rec, prefix = self.geo.get(family, addr)
            except (ValueError, maxminddb.InvalidDatabaseError):
                rec = None
        if self.asn is not None:
            try:
                arec, aprefix = self.asn.get(family, addr)
            except (ValueError, maxminddb.InvalidDatabaseError):
                arec, aprefix = None, 0
        return _info(rec, prefix, arec, aprefix)

    def leaves(self, family: int) -> Pieces:
        """Both databases' networks as pieces of the address space (gslb.answer.geo.tables)."""
        got = self._pieces.get(family)
        if got is None:
            got = self._pieces[family] = Pieces(self, family)
        return got

    def compiled(self) -> None:
        """The tables are built: drop what only building them needed (the decoded record
        of each pair of records; a later compile decodes again) and hand the freed
        memory back to the system (glibc keeps it otherwise)."""
        for p in self._pieces.values():
            p.forget_records()
        _trim()

    def maybe_reload(self) -> bool:
        """Re-open databases whose files changed; keep the old one if the new one is bad."""
        changed = False
        for attr in ("geo", "asn"):
            db: _Db | None = getattr(self, attr)
            if db is None:
                continue
            try:
                stamp = _stamp(db.path)
            except OSError as e:
                self.reload_errors += 1
                log.error("GeoIP database %s unreadable (%s); still using the one loaded before", db.path, e)
                continue
            if stamp == db.stamp:
                continue
            try:
                new = _Db(db.path, db.kind)
            except GeoDatabaseError as e:
                self.reload_errors += 1
                db.stamp = stamp  # report once per change
                log.error(
                    "GeoIP database %s changed but cannot be read (%s); still using the old one", db.path, e
                )
                continue
            setattr(self, attr, new)
            db.close()
            self._cache = {}
            self._pieces = {}
            self.compiled_cache = {}
            changed = True
            log.info("GeoIP database %s reloaded (%s)", db.path, new.type)
        return changed

    def close(self) -> None:
        for db in (self.geo, self.asn):
            if db is not None:
                db.close()
