"""MaxMind GeoIP2/GeoLite2 databases behind ``gslb.geo.GeoLookup``; the only geoip2 import.

:class:`MaxMindGeo` reads City or Country databases (and optionally an ASN
database) with geoip2, using its maxminddb reader for the per-query path, and
re-opens a database whose file changed (``maybe_reload``), keeping the last
good one when the new file is bad.
"""

from __future__ import annotations

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
        self.reader = _open_private(path)
        self.v6 = self.reader.metadata().ip_version == 6

    def get(self, family: int, addr: int) -> tuple[Any, int]:
        if family == 6 and not self.v6:
            return None, 0
        # for IPv4 in an IPv6 database, maxminddb already gives the IPv4-relative prefix
        rec, prefix = self.reader.get_with_prefix_len(_ip_text(family, addr))
        return rec, prefix

    def close(self) -> None:
        self.reader.close()


def _open_private(path: Path) -> Any:
    """Open a private copy of the database with the C reader (mmap).

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
        mode = maxminddb.MODE_MMAP_EXT if hasattr(maxminddb, "extension") else maxminddb.MODE_MMAP
        try:
            return maxminddb.open_database(tmp, mode)
        except (ImportError, ValueError):
            return maxminddb.open_database(tmp, maxminddb.MODE_MMAP)
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
        continent = country = None
        subs: tuple[str, ...] = ()
        lat = lon = None
        asn = None
        prefix = asn_prefix = 0
        if self.geo is not None:
            try:
                rec, prefix = self.geo.get(family, addr)
            except (ValueError, maxminddb.InvalidDatabaseError):
                rec = None
            if rec:
                continent = (rec.get("continent") or {}).get("code")
                country = (rec.get("country") or {}).get("iso_code")
                subs = tuple(s.get("iso_code") for s in rec.get("subdivisions") or () if s.get("iso_code"))
                loc = rec.get("location") or {}
                lat, lon = loc.get("latitude"), loc.get("longitude")
        if self.asn is not None:
            try:
                arec, aprefix = self.asn.get(family, addr)
            except (ValueError, maxminddb.InvalidDatabaseError):
                arec, aprefix = None, 0
            asn_prefix = aprefix
            if arec:
                asn = arec.get("autonomous_system_number")
        return GeoInfo(continent, country, subs, lat, lon, asn, prefix, asn_prefix)

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
            changed = True
            log.info("GeoIP database %s reloaded (%s)", db.path, new.type)
        return changed

    def close(self) -> None:
        for db in (self.geo, self.asn):
            if db is not None:
                db.close()
