"""``zones_from: cluster``: the zones in the cluster store, applied to this node's zones
directory (docs/cluster.md, "Zones in the store").

The store holds each zone's text under ``zones/ZONE``, with etcd's revision. Whenever
the listing or the watch brings a zone whose revision is newer than the one this node
applied, the node validates it as ``gslb check`` would (its own databases, its own key
files), writes it into its zones directory (the durable write of the zone API), records
the revision, and reloads. So every node serves the same revision, and its zones
directory is its last good copy: it starts and serves from it with the store down.

- A node that cannot apply a revision (a GeoIP database or a DNSSEC key it lacks) keeps
  the one it has and says why (``/v1/status``, its registration, the log).
- Revisions only go forward: a revision at or below the applied one is never written,
  also after a restart (the applied revisions are persisted in the state directory, after
  the file they name) and from a listing that is older than what was seen.
- A zone deleted from the store is removed here, if it came from the store. Zone files
  that never did (put there by hand) are this node's own, and left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Protocol

from gslb.cluster.node import Cluster
from gslb.dns import names
from gslb.server.zone_api import remove_durably, validate, write_atomic
from gslb.zones.directory import ZoneSet

log = logging.getLogger("gslb.cluster")
FILE = "zone-revisions.json"


class Reloads(Protocol):
    zoneset: ZoneSet

    async def reload(self) -> bool: ...


class ZoneSync:
    def __init__(self, server: Reloads, cluster: Cluster, zones_dir: Path, state_dir: Path | None) -> None:
        self.server, self.cluster, self.zones_dir, self.state_dir = server, cluster, zones_dir, state_dir
        self.applied: dict[str, int] = self._load()  # zone -> revision served (or deleted at)
        self.served: dict[str, int] = dict(self.applied)  # ... and swapped in (after the reload)
        self.errors: dict[str, str] = {}  # zone -> why its newest revision is not served
        self.error_rev: dict[str, int] = {}  # zone -> that revision
        self.changed = asyncio.Event()  # set after each pass that applied something
        self._lock = asyncio.Lock()
        self._again = False
        self._task: asyncio.Task[None] | None = None
        cluster.zones_changed = self.soon
        cluster.zone_revisions = self.applied
        cluster.zone_errors = self.errors

    def _load(self) -> dict[str, int]:
        if self.state_dir is None:
            return {}
        try:
            d = json.loads((self.state_dir / FILE).read_text())
            return {str(z): int(r) for z, r in dict(d.get("applied", {})).items()}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    def _save(self) -> None:
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.state_dir / FILE, json.dumps({"version": 1, "applied": self.applied}).encode())

    def soon(self) -> None:
        """The store's zones changed: apply them (one pass at a time; another after it)."""
        if self._task is not None and not self._task.done():
            self._again = True
            return
        with contextlib.suppress(RuntimeError):
            self._task = asyncio.get_running_loop().create_task(self.run())

    def _path(self, zone: str) -> Path:
        for path, ld in self.server.zoneset.loaded.items():
            if names.to_text(ld.zone.origin) == zone:
                return path
        return self.zones_dir / f"{zone.rstrip('.')}.yaml"

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._again = False
            async with self._lock:
                applied = await self._pass(loop)
            if applied:
                await self.server.reload()
                self.served = dict(self.applied)
                self.cluster.registration_changed()
                self.changed.set()
                self.changed = asyncio.Event()
            if not self._again:
                return

    async def _pass(self, loop: asyncio.AbstractEventLoop) -> bool:
        docs = dict(self.cluster.zone_docs)
        zs = self.server.zoneset
        done = False
        for zone, (rev, text, _) in sorted(docs.items()):
            if rev <= abs(self.applied.get(zone, 0)):  # applied, or deleted since (a tombstone)
                continue
            path = self._path(zone)
            parsed, problems = await loop.run_in_executor(None, validate, path, text, zone, zs)
            if problems or parsed is None:
                why = f"revision {rev} not applied: {problems[0]}" + (
                    f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                )
                if self.errors.get(zone) != why:
                    log.error("cluster: zone %s %s; still serving revision %s", zone, why,
                              self.applied.get(zone) or "none")  # fmt: skip
                    self.errors[zone] = why
                    self.cluster.registration_changed()
                self.error_rev[zone] = rev
                self.changed.set()
                self.changed = asyncio.Event()
                continue
            stamp = await loop.run_in_executor(None, write_atomic, path, text.encode())
            zs.preloaded[path] = (stamp, parsed, text)
            self.applied[zone] = rev
            self.errors.pop(zone, None)
            self.error_rev.pop(zone, None)
            await loop.run_in_executor(None, self._save)
            log.info("cluster: zone %s revision %d applied (%s)", zone, rev, path)
            done = True
        if self.cluster.zones_listed_at:  # deletions: only once a whole listing was seen
            for zone, rev in list(self.applied.items()):
                if zone in docs or rev < 0:
                    continue
                path = self._path(zone)
                if path.exists():
                    await loop.run_in_executor(None, remove_durably, path)
                    log.info("cluster: zone %s deleted from the store; removed %s", zone, path)
                    done = True
                # a tombstone: what the store had up to now is older than the deletion
                self.applied[zone] = -max(self.cluster.revision, rev + 1)
                self.errors.pop(zone, None)
                await loop.run_in_executor(None, self._save)
        return done

    def served_revision(self, zone: str) -> int:
        """The revision of ``zone`` this node serves (0: none; negative: deleted at)."""
        return self.served.get(zone, 0)
