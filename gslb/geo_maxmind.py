"""MaxMind GeoIP2/GeoLite2 databases behind ``gslb.geo.GeoLookup``; the only geoip2 import.

:class:`MaxMindGeo` reads City or Country databases (and optionally an ASN
database) with geoip2, using its maxminddb reader for the per-query path, and
re-opens a database whose file changed (``maybe_reload``), keeping the last
good one when the new file is bad.
"""

from __future__ import annotations

import array
import contextlib
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

from gslb.geo import GeoInfo

log = logging.getLogger("gslb.geo")

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

    def walk(self, family: int) -> tuple[list[int], list[int], list[int]]:
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


_NO_DB = ([0], [0], [-2])  # one piece, nothing found, prefix 0: what a missing database gives


class Pieces:
    """The address space of one family cut at every network of both databases
    (gslb.geo_compile.Leaves). A piece's id is (geo part << 32 | ASN part), each part an
    index of a distinct (record, network length) seen; :meth:`info` decodes it."""

    def __init__(self, geo: MaxMindGeo, family: int) -> None:
        self.family = family
        self._geo = geo
        g = geo.geo.walk(family) if geo.geo is not None else _NO_DB
        a = geo.asn.walk(family) if geo.asn is not None else _NO_DB
        self.parts: tuple[list[tuple[int, int, int]], list[tuple[int, int, int]]] = ([], [])
        gids = _part_ids(g, self.parts[0])
        aids = _part_ids(a, self.parts[1])
        starts: list[int] = []
        ids = array.array("q")
        gs, as_ = g[0], a[0]
        i = j = 0
        while i < len(gs) and j < len(as_):
            s = gs[i] if gs[i] >= as_[j] else as_[j]
            starts.append(s)
            ids.append((gids[i] << 32) | aids[j])
            gn = gs[i + 1] if i + 1 < len(gs) else None
            an = as_[j + 1] if j + 1 < len(as_) else None
            if gn is None and an is None:
                break
            if an is None or (gn is not None and gn <= an):
                i += 1
            if gn is None or (an is not None and an <= gn):
                j += 1
        self.starts = array.array("I", starts) if family == 4 else starts
        self.ids = ids
        self._decoded: dict[int, GeoInfo | None] = {}

    def info(self, ident: int) -> GeoInfo | None:
        got = self._decoded.get(ident)
        if got is None and ident not in self._decoded:
            got = self._decoded[ident] = self._decode(ident)
        return got

    def _decode(self, ident: int) -> GeoInfo | None:
        (gnode, gprefix, grep), (anode, aprefix, arep) = (
            self.parts[0][ident >> 32],
            self.parts[1][ident & 0xFFFFFFFF],
        )
        if gnode == -1 or anode == -1:
            return None  # an alias of the IPv4 tree: the lookup path decides
        geo = self._geo
        rec = geo.geo.get(self.family, grep)[0] if geo.geo is not None and gnode >= 0 else None
        arec = geo.asn.get(self.family, arep)[0] if geo.asn is not None and anode >= 0 else None
        return _info(rec, gprefix, arec, aprefix)

    def nbytes(self) -> int:
        s = self.starts
        per = s.itemsize if isinstance(s, array.array) else 8 + 36  # a list slot and an int
        return len(s) * per + len(self.ids) * self.ids.itemsize


def _part_ids(walked: tuple[list[int], list[int], list[int]], parts: list[tuple[int, int, int]]) -> list[int]:
    """The part id of each piece of one database (distinct (record, length) pairs, with
    an address that finds it)."""
    seen: dict[tuple[int, int], int] = {}
    out = []
    for start, prefix, node in zip(*walked, strict=True):
        k = (node, prefix)
        i = seen.get(k)
        if i is None:
            i = seen[k] = len(parts)
            parts.append((node, prefix, start))
        out.append(i)
    return out


def _walk_tree(reader: Any, family: int) -> tuple[list[int], list[int], list[int]]:
    meta = reader.metadata()
    node_count, record_size = meta.node_count, meta.record_size
    bits = 32 if family == 4 else 128
    if family == 6 and meta.ip_version != 6:
        return [0], [0], [node_count]  # no IPv6 in the file: every lookup finds nothing
    buf = _buffer_of(reader)
    ipv4_start = 0
    if meta.ip_version == 6:
        node = 0
        for _ in range(96):
            if node >= node_count:
                break
            node = _read_record(buf, record_size, node, 0)
        ipv4_start = node
    starts: list[int] = []
    prefixes: list[int] = []
    nodes: list[int] = []
    stack = [(ipv4_start if family == 4 else 0, 0, 0)]
    while stack:
        node, depth, acc = stack.pop()
        if family == 6 and depth and node == ipv4_start and ipv4_start:
            starts.append(acc << (bits - depth))
            prefixes.append(depth)
            nodes.append(-1)
            continue
        if node >= node_count or depth == bits:
            starts.append(acc << (bits - depth))
            prefixes.append(depth)
            nodes.append(node)
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
    tables walk (gslb.geo_compile).

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
        # gslb.geo_compile's tables of this version of the databases, by rule set
        self.compiled_cache: dict[object, object] = {}

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
        """Both databases' networks as pieces of the address space (gslb.geo_compile)."""
        got = self._pieces.get(family)
        if got is None:
            got = self._pieces[family] = Pieces(self, family)
        return got

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
