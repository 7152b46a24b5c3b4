"""The zone API: zones as data, on the admin API (docs/api.md, "Zones").

  GET    /v1/zones            every zone served: name, file, serial, content hash
  GET    /v1/zones/{zone}     one zone as served: its text (YAML), serial, hash (ETag);
                              JSON with the text and the parsed document, or the YAML
                              itself with ``Accept: application/yaml`` or ``?format=yaml``
  PUT    /v1/zones/{zone}     a whole zone in the zone format (YAML, or JSON), validated
                              as ``gslb check`` validates a file; ``If-Match: "HASH"``
                              replaces only that version (412 otherwise), ``If-None-Match:
                              *`` only creates
  DELETE /v1/zones/{zone}     (``If-Match`` as for PUT)

Every request needs the bearer token. PUT and DELETE need the zone in ``api_zones``.

The zone's file in the zones directory is the one truth: a PUT validates the text
(nothing is written on any problem, and the problems come back as JSON with
file:line:col), writes it next to the file under a hidden name, fsyncs it, renames it
over the file and fsyncs the directory, then reloads. A kill at any moment leaves the
old file or the new one, never a part. Before it answers, a request re-reads the
directory (as the watcher would), so a file edited by hand is what the next GET
returns, and an ``If-Match`` made before a hand edit is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import yaml
from aiohttp import web

from gslb.cluster.node import Cluster, Unreachable, ZoneConflict
from gslb.dns import names
from gslb.server.options import ServeOptions
from gslb.zones.directory import Loaded, ZoneSet
from gslb.zones.errors import ConfigError, Problem
from gslb.zones.load import load_zone
from gslb.zones.model import Zone

admin_log = logging.getLogger("gslb.admin")
TMP_SUFFIX = ".api-tmp"  # a hidden file beside the zone file while it is written


class Synced(Protocol):
    """zones_from: cluster: what this node applied from the store (gslb.server.zone_sync)."""

    changed: asyncio.Event
    errors: dict[str, str]
    error_rev: dict[str, int]

    def served_revision(self, zone: str) -> int: ...


class ZoneServer(Protocol):
    opts: ServeOptions
    zoneset: ZoneSet
    api_token: str | None
    cluster: Cluster | None

    @property
    def zone_sync(self) -> Synced | None: ...

    async def reload(self) -> bool: ...


def _json(data: Any, status: int = 200, etag: str | None = None) -> web.Response:
    headers = {"ETag": f'"{etag}"'} if etag else None
    return web.Response(
        text=json.dumps(data, indent=1, default=str), status=status, content_type="application/json",
        headers=headers,
    )  # fmt: skip


def _origin(text: str) -> str:
    """The zone name of a URL, absolute and in lower case; ValueError when it is not one
    that names a file (letters, digits, '-', '_' labels)."""
    t = text.strip().lower()
    t = t if t.endswith(".") else t + "."
    if not re.fullmatch(r"(?:[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\.)+", t) or len(t) > 254:
        raise ValueError(f"bad zone name {text!r}: labels of letters, digits, '-' and '_'")
    return t


def _served(zs: ZoneSet, origin: str) -> tuple[Path, Loaded] | None:
    for path, ld in zs.loaded.items():
        if names.to_text(ld.zone.origin) == origin:
            return path, ld
    return None


def _etag_list(header: str) -> list[str]:
    return [t.strip().removeprefix("W/").strip('"') for t in header.split(",") if t.strip()]


def _problems(ps: list[Problem]) -> list[dict[str, Any]]:
    return [{"file": p.path, "line": p.line, "col": p.col, "key": p.key, "message": p.message} for p in ps]


def write_atomic(path: Path, data: bytes) -> tuple[int, int]:
    """``data`` as ``path``: written under a hidden name beside it, fsynced, renamed over
    it, the directory fsynced (a crash leaves the old file or the new, never a part).
    Returns the file's (mtime_ns, size) as written."""
    tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
    mode = 0o644
    with contextlib.suppress(OSError):
        mode = path.stat().st_mode & 0o777
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return (st.st_mtime_ns, st.st_size)


def remove_durably(path: Path) -> None:
    path.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(d: Path) -> None:
    dfd = os.open(d, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def clean_leftovers(zones_dir: Path) -> list[Path]:
    """Remove what a write killed midway left (hidden files, never loaded)."""
    gone = []
    for p in zones_dir.glob(f".*{TMP_SUFFIX}"):
        with contextlib.suppress(OSError):
            p.unlink()
            gone.append(p)
    return gone


def validate(path: Path, text: str, origin: str, zs: ZoneSet) -> tuple[Zone | None, list[Problem]]:
    """The zone as the server would load it from ``path``, or the problems."""
    try:
        zone = load_zone(path, text, geo_db=zs.geo_db, asn_db=zs.asn_db)
    except ConfigError as e:
        return None, list(e.problems)
    if names.to_text(zone.origin) != origin:
        m = re.search(r"^zone:", text, re.M)
        line = text.count("\n", 0, m.start()) + 1 if m else 1
        msg = f"this document is zone {names.to_text(zone.origin)}, PUT to /v1/zones/{origin}"
        return None, [Problem(str(path), line, 1, "zone", msg)]
    return zone, []


def _as_yaml(body: str) -> str:
    """A JSON document as the YAML the zones directory holds (keys in their order)."""
    out: str = yaml.safe_dump(json.loads(body), sort_keys=False, allow_unicode=True, width=110)
    return out


Refuse = Callable[[web.Request, "str | None"], "web.Response | None"]


def add_routes(routes: web.RouteTableDef, server: ZoneServer, refuse: Refuse) -> None:
    """The zone routes; ``refuse(request, token)``: the 401 for a request without the token."""
    lock = asyncio.Lock()
    zones_dir = Path(server.opts.zones)

    def accepts(origin: str) -> bool:
        acc = server.opts.api_zones
        return "*" in acc or origin in acc

    def doc_of(path: Path, ld: Loaded) -> dict[str, Any]:
        return {
            "zone": names.to_text(ld.zone.origin),
            "file": str(path),
            "serial": ld.serial,
            "hash": ld.zone.digest,
            "writable": accepts(names.to_text(ld.zone.origin)),
        }

    @routes.get("/v1/zones")
    async def list_zones(request: web.Request) -> web.Response:
        refused = refuse(request, server.api_token)
        if refused is not None:
            return refused
        await server.reload()  # a file edited by hand: what is listed next
        zs = server.zoneset
        zones = sorted((doc_of(p, ld) for p, ld in zs.loaded.items()), key=lambda d: d["zone"])
        return _json({"zones": zones, "accepts": list(server.opts.api_zones)})

    @routes.get("/v1/zones/{zone}")
    async def get_zone(request: web.Request) -> web.Response:
        refused = refuse(request, server.api_token)
        if refused is not None:
            return refused
        try:
            origin = _origin(request.match_info["zone"])
        except ValueError as e:
            return _json({"error": str(e)}, 400)
        await server.reload()
        found = _served(server.zoneset, origin)
        if found is None:
            return _json({"error": f"no zone {origin} is served here"}, 404)
        path, ld = found
        if request.query.get("format") == "yaml" or "yaml" in request.headers.get("Accept", ""):
            return web.Response(
                text=ld.text, content_type="application/yaml", headers={"ETag": f'"{ld.zone.digest}"'}
            )
        loop = asyncio.get_running_loop()
        document = await loop.run_in_executor(None, yaml.safe_load, ld.text)
        return _json({**doc_of(path, ld), "yaml": ld.text, "document": document}, etag=ld.zone.digest)

    def precondition(request: web.Request, current: Loaded | None, origin: str) -> web.Response | None:
        """412 when If-Match / If-None-Match says the client changes another version."""
        im = request.headers.get("If-Match")
        if im is not None:
            tags = _etag_list(im)
            if current is None or ("*" not in tags and current.zone.digest not in tags):
                now = "none (no such zone)" if current is None else f'"{current.zone.digest}"'
                return _json(
                    {"error": f"zone {origin} changed: its version is now {now}, not {im}; read it "
                     "again (GET) and repeat with its ETag",
                     "hash": current.zone.digest if current else None},
                    412,
                )  # fmt: skip
        inm = request.headers.get("If-None-Match")
        if inm is not None and current is not None and ("*" in _etag_list(inm) or current.zone.digest in inm):
            return _json({"error": f"zone {origin} exists (If-None-Match)", "hash": current.zone.digest}, 412)
        return None

    def refuse_write(request: web.Request) -> tuple[str | None, web.Response | None]:
        refused = refuse(request, server.api_token)
        if refused is not None:
            return None, refused
        try:
            origin = _origin(request.match_info["zone"])
        except ValueError as e:
            return None, _json({"error": str(e)}, 400)
        if not accepts(origin):
            admin_log.warning("admin: refused %s of zone %s from %s: not in api_zones", request.method,
                              origin, request.remote)  # fmt: skip
            return None, _json(
                {"error": f"this server takes no changes to zone {origin} through the API: list it in "
                 "api_zones (--api-zones ZONE, or '*')"},
                403,
            )  # fmt: skip
        return origin, None

    def expectation(request: web.Request) -> str | None:
        """What the writer saw, for the store's compare-and-swap: a hash, "*" (it exists),
        "" (it must not: If-None-Match: *), None (no condition)."""
        im = request.headers.get("If-Match")
        if im is not None:
            tags = _etag_list(im)
            return "*" if "*" in tags else (tags[0] if tags else None)
        if request.headers.get("If-None-Match") is not None:
            return ""
        return None

    async def to_store(request: web.Request, origin: str, text: str | None, digest: str) -> web.Response:
        """zones_from: cluster: the zone (None: its deletion) into the store, then served here
        once this node applied it (every node applies it from its watch)."""
        sync, cluster = server.zone_sync, server.cluster
        assert sync is not None and cluster is not None
        new = _served(server.zoneset, origin) is None
        try:
            rev = await cluster.put_zone(origin, text, digest, expectation(request))
        except ZoneConflict as c:
            now = f'"{c.current}"' if c.current else "none (no such zone)"
            status = 404 if text is None and not c.current else 412
            return _json({"error": f"zone {origin} in the cluster store is {now}: not what this request "
                          "expected (If-Match / If-None-Match); read it again", "hash": c.current or None},
                         status)  # fmt: skip
        except Unreachable as e:
            return _json({"error": f"zone {origin} not changed anywhere: {e}"}, 503)
        what = "deleted from" if text is None else f"revision {rev} written to"
        admin_log.warning("admin: zone %s %s the cluster store (by %s)", origin, what, request.remote)
        deadline = asyncio.get_running_loop().time() + 10
        while True:  # served here (this node's watch brings it back, as to every node)
            have = sync.served_revision(origin)
            if (text is None and have <= 0) or (text is not None and have >= rev):
                break
            if text is not None and sync.error_rev.get(origin, 0) >= rev:
                return _json({"zone": origin, "revision": rev, "scope": "cluster",
                              "error": f"stored, but this node cannot serve it: {sync.errors[origin]}"},
                             502)  # fmt: skip
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                why = "stored; not served by this node after 10 s (see its log)"
                return _json({"zone": origin, "revision": rev, "scope": "cluster", "error": why}, 504)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sync.changed.wait(), min(left, 0.1))
        if text is None:
            return _json({"zone": origin, "deleted": True, "scope": "cluster"})
        found = _served(server.zoneset, origin)
        doc = doc_of(*found) if found else {"zone": origin}
        return _json(
            {**doc, "revision": rev, "scope": "cluster", "changed": True}, 201 if new else 200, etag=digest
        )

    @routes.put("/v1/zones/{zone}")
    async def put_zone(request: web.Request) -> web.Response:
        origin, refused = refuse_write(request)
        if refused is not None or origin is None:
            return refused or _json({"error": "?"}, 500)
        limit = server.opts.api_zone_max_bytes
        if request.content_length is not None and request.content_length > limit:
            return _json({"error": f"the zone is {request.content_length} bytes; at most {limit} "
                          "(api_zone_max_bytes)"}, 413)  # fmt: skip
        chunks: list[bytes] = []
        size = 0
        try:
            while chunk := await request.content.read(1 << 16):  # to the end (one read: what came)
                size += len(chunk)
                if size > limit:
                    return _json({"error": f"the zone is over {limit} bytes (api_zone_max_bytes)"}, 413)
                chunks.append(chunk)
        except (TimeoutError, ConnectionError) as e:
            return _json({"error": f"reading the body: {e}"}, 400)
        raw = b"".join(chunks)
        try:
            body = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            return _json({"error": f"the body is not UTF-8: {e}"}, 400)
        is_json = request.content_type == "application/json"
        loop = asyncio.get_running_loop()
        async with lock:
            await server.reload()  # a hand edit first: If-Match is checked against it
            zs = server.zoneset
            found = _served(zs, origin)
            path = found[0] if found else zones_dir / f"{origin.rstrip('.')}.yaml"
            current = found[1] if found else None
            shared = server.zone_sync is not None and server.cluster is not None
            if found is None and path.exists() and not shared:
                return _json(
                    {"error": f"{path} exists but is not zone {origin} as served (a version the server "
                     "refused, or another zone): fix or remove it first"},
                    409,
                )  # fmt: skip
            pre = None if shared else precondition(request, current, origin)
            if pre is not None:
                return pre
            text = body
            zone, problems = await loop.run_in_executor(None, validate, path, text, origin, zs)
            if not problems and is_json:
                try:
                    text = _as_yaml(body)
                except ValueError as e:
                    return _json({"error": f"the body is not JSON: {e}"}, 400)
                zone, problems = await loop.run_in_executor(None, validate, path, text, origin, zs)
            if problems:
                admin_log.warning("admin: refused PUT of zone %s from %s: %d problem(s)", origin,
                                  request.remote, len(problems))  # fmt: skip
                return _json(
                    {"error": f"zone {origin} not changed: {len(problems)} problem(s)",
                     "problems": _problems(problems)},
                    422,
                )  # fmt: skip
            digest = hashlib.sha256(text.encode()).hexdigest()
            if shared:
                return await to_store(request, origin, text, digest)
            if current is not None and current.zone.digest == digest:
                return _json({**doc_of(path, current), "changed": False}, etag=digest)
            old = path.read_bytes() if path.exists() else None
            stamp = await loop.run_in_executor(None, write_atomic, path, text.encode())
            if zone is not None:  # the reload takes it as validated, rather than loading it again
                zs.preloaded[path] = (stamp, zone, text)
            await server.reload()
            now = _served(server.zoneset, origin)
            if now is None or now[1].zone.digest != digest:
                # refused on load after all (a database gone meanwhile): put the old file back
                problems = [p for p in server.zoneset.last_problems if p.path == str(path)]
                if old is not None:
                    await loop.run_in_executor(None, write_atomic, path, old)
                else:
                    with contextlib.suppress(OSError):
                        await loop.run_in_executor(None, remove_durably, path)
                await server.reload()
                return _json(
                    {"error": f"zone {origin} not changed: the server refused it on load",
                     "problems": _problems(problems)},
                    422,
                )  # fmt: skip
            what = "replaced" if current else "created"
            admin_log.warning("admin: zone %s %s through the API (serial %d, by %s)", origin, what,
                              now[1].serial, request.remote)  # fmt: skip
            return _json({**doc_of(*now), "changed": True}, 200 if current else 201, etag=digest)

    @routes.delete("/v1/zones/{zone}")
    async def delete_zone(request: web.Request) -> web.Response:
        origin, refused = refuse_write(request)
        if refused is not None or origin is None:
            return refused or _json({"error": "?"}, 500)
        async with lock:
            await server.reload()
            found = _served(server.zoneset, origin)
            if server.zone_sync is not None and server.cluster is not None:
                return await to_store(request, origin, None, "")
            if found is None:
                return _json({"error": f"no zone {origin} is served here"}, 404)
            pre = precondition(request, found[1], origin)
            if pre is not None:
                return pre
            await asyncio.get_running_loop().run_in_executor(None, remove_durably, found[0])
            await server.reload()
            admin_log.warning("admin: zone %s deleted through the API (file %s, by %s)", origin, found[0],
                              request.remote)  # fmt: skip
            return _json({"zone": origin, "file": str(found[0]), "deleted": True})
