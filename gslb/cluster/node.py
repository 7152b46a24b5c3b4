"""Cluster mode: this node's membership in a gslb cluster that shares etcd.

What lives in the store, under the key prefix (default ``/gslb/``):

  nodes/NODE                  registration: region, start time, zone serials, last
                              beat; under the node's lease, rewritten every BEAT s
  obs/NODE/ZONE/POOL/ADDR     the node's observation of one member (up/down,
                              reason, since, RTT, load); under the node's lease
  overrides/ZONE/POOL/ADDR    a drain/down/up set through any node's API (no lease:
                              it outlives the node that set it; expiry is its own)
  zones/ZONE                  a zone's text (zones_from: cluster), written through any
                              node's zone API; no lease: the store is its truth
  rtts/NODE                   the node's smoothed probe round trips, all members in one
                              value, for select: fastest_from_nearest_node only (written
                              at most every RTT_EVERY s, under the node's lease)

A dead node's lease runs out, etcd deletes its registration and its votes, and
the other nodes decide without it. Every node keeps the whole prefix in memory
(one list, then one watch), counts the votes of the live nodes itself
(``gslb.cluster.votes``) and hands the runtime a plain :class:`HealthView`.

The store is never in the answer path: answers use the last merged view, the
runtime swaps in a new one when something changed. Without the store (etcd
down, this node in a minority partition: writes fail) the node keeps the last
merged view, expires overrides on its own clock, and ``stale_after`` seconds
after its last successful request to the store (a reply, a watch message, a
lease keep-alive: one every CONTACT seconds) decides from its own
observations only, and says so. On reconnect it re-publishes its own votes,
then re-lists, replaces the view in one step and watches from the next
revision. A watch that goes quiet (this node's own beat does not come back
through it) is treated as broken. The merged view is persisted, so a
restarted node serves it from its first query.

Stale votes. A peer's votes are *current* while its registration writes come
through this node's watch (one every beat; the peer writes its votes before its
registration, so a registration write says its votes are up to date), and only
those of its votes written under the lease of its latest registration. The
votes in a fresh listing are not current until the peer's next beat is seen:
after an outage etcd restores the old leases with the votes written before it,
which may say "up" for members that died meanwhile. Nor are the votes of a
peer whose beats stopped coming (it died, or this node lost the store) two
periods ago. A stale vote counts as a down vote only (``gslb.cluster.votes``).
docs/cluster.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from gslb.cluster.etcd import KV, Etcd, EtcdError, Event
from gslb.cluster.votes import Obs, Tally, tally
from gslb.health.overrides import ACTIONS, Override
from gslb.health.view import HealthView, MemberKey

log = logging.getLogger("gslb.cluster")

BEAT = 2.0  # seconds between registration rewrites (also the watch's liveness signal)
CONTACT = 0.5  # seconds between lease keep-alives: how often the store is known to work
RTT_EVERY = 1.0  # seconds between writes of this node's round trips, at most
FILE = "cluster.json"


def _k(key: MemberKey) -> str:
    return "/".join(quote(p, safe="") for p in key)


def _member(path: str) -> MemberKey | None:
    parts = path.split("/")
    if len(parts) != 3:
        return None
    return (unquote(parts[0]), unquote(parts[1]), unquote(parts[2]))


@dataclass(slots=True)
class Peer:
    node: str
    region: str = ""
    started: float = 0.0
    beat: float = 0.0  # the peer's clock at its last registration write
    seen: float = 0.0  # our clock when we last heard of it
    serials: dict[str, int] = field(default_factory=dict)
    api: str = ""
    digests: dict[str, str] = field(default_factory=dict)  # zone -> content hash (short)
    lease: int = 0  # the store's lease of its registration: its current session
    heard: float = 0.0  # our monotonic clock at its last registration write seen by the watch (0: listed)
    period: float = BEAT  # seconds between its registration writes
    location: tuple[float, float] | None = None  # its --location (fastest_from_nearest_node)
    zone_revisions: dict[str, int] = field(default_factory=dict)  # zones_from: cluster
    zone_errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Options:
    endpoints: tuple[str, ...]
    node: str
    region: str = ""
    prefix: str = "/gslb/"
    lease_ttl: int = 10
    stale_after: float = 30.0
    tls: ssl.SSLContext | None = None
    timeout: float = 2.0
    location: tuple[float, float] | None = None


class Conflict(Exception):
    """A compare-and-swap lost: the member's override is not what the caller saw."""

    def __init__(self, current: Override | None, revision: int) -> None:
        self.current, self.revision = current, revision
        super().__init__("conflict")


class Unreachable(Exception):
    """The store cannot be written now (one line)."""


class ZoneConflict(Exception):
    """A zone write lost: the store holds another version (its hash; "": none)."""

    def __init__(self, current: str) -> None:
        self.current = current
        super().__init__("conflict")


class Cluster:
    def __init__(
        self,
        opts: Options,
        changed: Callable[[], None],
        state_dir: Path | None = None,
        etcd: Etcd | None = None,
    ) -> None:
        self.opts = opts
        self.node = opts.node
        self.p = opts.prefix if opts.prefix.endswith("/") else opts.prefix + "/"
        self.etcd = etcd or Etcd(opts.endpoints, opts.tls, opts.timeout)
        self.etcd.gap = opts.stale_after  # a reply after a longer silence ends being alone
        self.changed = changed  # the runtime recomputes the effective view
        self.rtts_changed: Callable[[], None] | None = None  # a peer's round trips or location
        # zones_from: cluster: the zones in the store (zone -> (mod revision, text, hash)), the
        # revision of the last listing, and who applies them (gslb.server.zone_sync)
        self.zone_docs: dict[str, tuple[int, str, str]] = {}
        self.zones_listed_at = 0
        self.zones_changed: Callable[[], None] | None = None
        self.zone_revisions: dict[str, int] = {}  # what this node serves, for its registration
        self.zone_errors: dict[str, str] = {}  # zone -> why its newest revision is not applied
        self.state_dir = state_dir
        self.started = time.time()
        # lease keep-alive and registration period: BEAT, or a third of a shorter TTL, so
        # that one slow request does not lose the lease
        self.beat = min(BEAT, opts.lease_ttl / 3)
        # what the store says (the last list plus the watch since)
        self.peers: dict[str, Peer] = {}
        self.peer_obs: dict[str, dict[MemberKey, Obs]] = {}
        self.overrides: dict[MemberKey, tuple[Override, int]] = {}  # -> (override, mod revision)
        self.revision = 0
        # this node
        self.own: dict[MemberKey, Obs] = {}
        self.serials: dict[str, int] = {}
        self.digests: dict[str, str] = {}
        self.quorum: Mapping[MemberKey, str] = {}
        self._published: dict[MemberKey, Obs] = {}
        # select: fastest_from_nearest_node: each node's smoothed round trips (s), with the
        # lease they were written under (those of an older session are not used)
        self.own_rtts: dict[MemberKey, float] = {}
        self.peer_rtts: dict[str, tuple[int, dict[MemberKey, float]]] = {}
        self._rtts_dirty = asyncio.Event()
        self._rtts_sent: dict[MemberKey, float] | None = None
        # the incremental count: members to count again (None: all), last result, basis
        self._stale: set[MemberKey] | None = None
        self._tallies: dict[MemberKey, Tally] = {}
        self._down: set[MemberKey] = set()
        self._basis: tuple[frozenset[str], frozenset[str], bool] | None = None
        self._extra: frozenset[MemberKey] = frozenset()
        self._dirty = asyncio.Event()
        # connection
        self.connected = False
        self.last_sync = 0.0  # the persisted synced_at (until this process's first contact)
        self.last_event = time.monotonic()
        self.lease = 0
        self.errors = 0  # store requests that failed
        self.reconnects = 0
        self.last_error = ""
        self._alone = False
        self._mismatch: set[str] = set()
        self._dup_seen = False  # another process registered under this node's name (logged once)
        self._task: asyncio.Task[None] | None = None
        self._clock_task: asyncio.Task[None] | None = None
        self._current: frozenset[str] = frozenset()  # the current peers at the last view
        self._stopping = False
        self._save_pending = False
        self._load()

    # -- what the runtime asks ------------------------------------------------------
    def set_own(self, obs: Mapping[MemberKey, Obs], changed: Iterable[MemberKey] | None = None) -> None:
        """This node's observations (from its prober): published, and counted at once.
        ``changed``: the members whose observation changed (None: compare them all)."""
        if changed is None:
            changed = {k for k in obs.keys() | self.own.keys() if obs.get(k) != self.own.get(k)}
        touched = False
        for k in changed:
            o = obs.get(k)
            if o == self.own.get(k):
                continue
            touched = True
            if o is None:
                self.own.pop(k, None)
            else:
                self.own[k] = o
            self._recount(k)
        if touched:
            self._dirty.set()

    def set_rtts(self, rtts: Mapping[MemberKey, float]) -> None:
        """This node's smoothed round trips, published for the other nodes (at most every
        RTT_EVERY s; 0.1 ms steps, so noise below that writes nothing)."""
        rounded = {k: round(v, 4) for k, v in rtts.items()}
        if rounded != self.own_rtts:
            self.own_rtts = rounded
            self._rtts_dirty.set()

    def vantages(self) -> list[tuple[str, tuple[float, float] | None, dict[MemberKey, float]]]:
        """The live peers that publish round trips, written in their current session:
        (node, location, round trips), by node name. None while this node is alone."""
        out = []
        for n, p in sorted(self.live_peers().items()):
            got = self.peer_rtts.get(n)
            if got is not None and got[0] == p.lease:
                out.append((n, p.location, got[1]))
        return out

    def registration_changed(self) -> None:
        """What this node's registration carries changed (zone revisions): write it soon."""
        self._dirty.set()

    def set_zones(
        self, quorum: Mapping[MemberKey, str], serials: Mapping[str, int], digests: Mapping[str, str]
    ) -> None:
        if quorum != self.quorum:
            self._recount(None)
        self.quorum = quorum
        if dict(serials) != self.serials or dict(digests) != self.digests:
            self.serials, self.digests = dict(serials), dict(digests)
            self._dirty.set()  # the registration carries them

    @property
    def stale_for(self) -> float:
        """Seconds since the last successful request to the store (a reply, a watch
        message, a keep-alive: under CONTACT while it works); before the first one of
        this process, since the persisted last sync, or since start."""
        if self.etcd.last_ok:
            return max(0.0, time.monotonic() - self.etcd.last_ok)
        return max(0.0, time.time() - (self.last_sync or self.started))

    @property
    def synced_at(self) -> float:
        """Unix time of the last successful request to the store (0: never)."""
        if self.etcd.last_ok:
            return time.time() - (time.monotonic() - self.etcd.last_ok)
        return self.last_sync

    @property
    def alone(self) -> bool:
        """Deciding from own observations only: the store has been out of reach too long."""
        return self.stale_for > self.opts.stale_after

    def live_peers(self) -> dict[str, Peer]:
        return {} if self.alone else {n: p for n, p in self.peers.items() if n != self.node}

    def current_peers(self, peers: Mapping[str, Peer]) -> frozenset[str]:
        """The peers whose votes are current: a registration write of theirs came through
        the watch within two of their periods (and a request timeout), and since this
        node last came back from being alone (what it heard before is from before the
        outage). A peer that stops beating (it died, or this node lost the store) goes
        stale after that: its down votes still count, its up votes wait
        (``gslb.cluster.votes``)."""
        now, since = time.monotonic(), self.etcd.resumed
        slack = self.opts.timeout
        return frozenset(
            n
            for n, p in peers.items()
            if p.heard and p.heard >= since and now - p.heard <= 2 * p.period + slack
        )

    def _recount(self, key: MemberKey | None) -> None:
        """Count ``key``'s votes again at the next view (None: every member's)."""
        if key is None:
            self._stale = None
        elif self._stale is not None:
            self._stale.add(key)

    def view(self, local: HealthView, version: int) -> HealthView:
        """The merged view: each member's down votes of the live nodes against its quorum.
        ``local`` is this node's prober view (its ``down`` covers members without an
        observation yet). Incremental: only members whose votes changed are counted
        again, unless the live nodes, the quorums or the staleness changed (measured:
        a full count of 5,000 members x 3 nodes is ~25 ms of the answering loop)."""
        peers = self.live_peers()
        current = self.current_peers(peers)
        basis = (frozenset(peers), current, self.alone)
        extra = frozenset(local.down) - self.own.keys()  # down locally, no observation yet
        if basis != self._basis or self._stale is None:
            self._basis = basis
            self._tallies, self._down = {}, set()
            keys: set[MemberKey] = set(self.own) | extra
            for n in peers:
                keys.update(k for k in self.peer_obs.get(n, {}) if k in self.quorum)
        else:
            keys = self._stale | extra | self._extra
        self._extra = extra
        self._stale = set()
        for k in keys:
            self._count(k, peers, extra, current)
        alone = ""
        if self.alone:
            since = f"for {self.stale_for:.0f}s" + ("" if self.synced_at else " (since start)")
            alone = f"cluster store unreachable {since}: this node's observations only"
        return HealthView(frozenset(self._down), version, {}, dict(self._tallies) if peers else {}, alone)

    def _count(
        self, k: MemberKey, peers: Mapping[str, Peer], extra: frozenset[MemberKey], current: frozenset[str]
    ) -> None:
        ballot: list[tuple[str, Obs]] = []
        stale: list[str] = []
        mine = self.own.get(k)
        if mine is None and k in extra:
            mine = Obs(False, "health check", 0.0)
        if mine is not None:
            ballot.append((self.node, mine))
        for n, p in peers.items():
            o = self.peer_obs.get(n, {}).get(k)
            if o is not None and (mine is not None or k in self.quorum):
                ballot.append((n, o))
                if n not in current or o.lease != p.lease:
                    stale.append(n)
        if not ballot:
            self._tallies.pop(k, None)
            self._down.discard(k)
            return
        t = tally(ballot, self.quorum.get(k, "majority"), stale)
        self._tallies[k] = t
        if t.down:
            self._down.add(k)
        else:
            self._down.discard(k)

    def active_overrides(self, now: float) -> dict[MemberKey, Override]:
        return {k: o for k, (o, _) in self.overrides.items() if o.expires is None or o.expires > now}

    async def set_override(self, o: Override, revision: int | None) -> int:
        """Write an override cluster-wide. ``revision``: the override's mod revision the
        operator saw (None: there must be none). Raises Conflict or Unreachable."""
        return await self._swap(o.key, json.dumps(asdict(o)).encode(), revision)

    async def clear_override(self, key: MemberKey, revision: int | None) -> bool:
        """Remove an override cluster-wide (``revision`` None: the one this node knows)."""
        if revision is None:
            cur = self.overrides.get(key)
            if cur is None:
                return False
            revision = cur[1]
        await self._swap(key, None, revision)
        return True

    async def _swap(self, key: MemberKey, value: bytes | None, revision: int | None) -> int:
        if not self.connected:
            raise Unreachable(f"the cluster store is unreachable ({self.last_error or 'not connected yet'})")
        path = f"{self.p}overrides/{_k(key)}"
        try:
            done, now = await self.etcd.swap(path, value, revision or 0)
            if not done:
                cur = _override(now.value) if now is not None else None
                raise Conflict(cur, now.mod_revision if now is not None else 0)
            kv = await self.etcd.get(path)
        except EtcdError as e:
            self.errors += 1
            raise Unreachable(str(e)) from None
        # apply at once (the watch brings the same change a moment later)
        if kv is None:
            self.overrides.pop(key, None)
        else:
            o = _override(kv.value)
            if o is not None:
                self.overrides[key] = (o, kv.mod_revision)
        self._changed()
        return kv.mod_revision if kv is not None else 0

    async def put_zone(self, zone: str, text: str | None, digest: str, expect: str | None) -> int:
        """Write (``text`` None: delete) a zone in the store, compare-and-swap against the
        version the writer saw: ``expect`` is its hash ("*": it must exist, "": it must not,
        None: whatever is there). Returns the new revision (0 for a delete); raises
        ZoneConflict (with the store's hash) or Unreachable."""
        if not self.connected:
            raise Unreachable(f"the cluster store is unreachable ({self.last_error or 'not connected yet'})")
        path = f"{self.p}zones/{quote(zone, safe='')}"
        try:
            kv = await self.etcd.get(path)
            have = _json(kv.value) if kv is not None else None
            have_hash = str(have.get("hash", "")) if have else ""
            exists = kv is not None
            lost = (
                (expect == "" and exists)  # If-None-Match: *
                or (expect == "*" and not exists)  # If-Match: *
                or (expect not in (None, "*", "") and expect != have_hash)  # If-Match: "HASH"
                or (text is None and not exists)
            )
            if lost:
                raise ZoneConflict(have_hash)
            value = None if text is None else json.dumps(
                {"text": text, "hash": digest, "by": self.node, "at": time.time()}).encode()  # fmt: skip
            done, now = await self.etcd.swap(path, value, kv.mod_revision if kv is not None else 0)
            if not done:
                cur = _json(now.value) if now is not None else None
                raise ZoneConflict(str(cur.get("hash", "")) if cur else "")
            if text is None:
                return 0
            got = await self.etcd.get(path)
        except EtcdError as e:
            self.errors += 1
            raise Unreachable(str(e)) from None
        return got.mod_revision if got is not None else 0

    def expire(self, now: float) -> bool:
        """Drop expired overrides from the view (every node does, on its own clock) and
        ask the store to delete them (whichever node gets there first)."""
        gone = [(k, r) for k, (o, r) in self.overrides.items() if o.expires is not None and o.expires <= now]
        for k, rev in gone:
            o, _ = self.overrides.pop(k)
            log.warning("cluster: %s of %s/%s/%s expired", o.action, *k)
            if self.connected:
                self._spawn(self._delete_expired(k, rev))
        return bool(gone)

    async def _delete_expired(self, key: MemberKey, rev: int) -> None:
        with contextlib.suppress(EtcdError):
            await self.etcd.swap(f"{self.p}overrides/{_k(key)}", None, rev)

    def serial_mismatch(self) -> dict[str, dict[str, Any]]:
        """Zones that live nodes serve at different serials, or with different content
        under one serial (which a SOA-serial check cannot see):
        {zone: {"serials": {node: serial}, "same_content": bool}}."""
        out: dict[str, dict[str, Any]] = {}
        peers = self.live_peers()
        for zone, serial in self.serials.items():
            seen = {self.node: serial}
            digests = {self.digests.get(zone, "")}
            for n, p in peers.items():
                if zone in p.serials:
                    seen[n] = p.serials[zone]
                    digests.add(p.digests.get(zone, ""))
            if len(set(seen.values())) > 1 or len(digests) > 1:
                out[zone] = {"serials": seen, "same_content": len(digests) == 1}
        return out

    def status(self) -> dict[str, Any]:
        now, mono = time.time(), time.monotonic()
        nodes = [
            {"node": self.node, "region": self.opts.region, "self": True, "last_contact": 0.0,
             "serials": self.serials, "location": self.opts.location,
             "round_trips": len(self.own_rtts), "zone_revisions": self.zone_revisions,
             "zone_errors": self.zone_errors}
        ]  # fmt: skip
        current = self.current_peers(self.peers)
        for n, p in sorted(self.peers.items()):
            if n == self.node:
                continue
            nodes.append(
                {"node": n, "region": p.region, "self": False, "last_contact": round(mono - p.seen, 1),
                 "beat_age": round(now - p.beat, 1), "serials": p.serials, "api": p.api,
                 "votes": "current" if n in current else "stale", "location": p.location,
                 "round_trips": len(self.peer_rtts.get(n, (0, {}))[1]), "zone_revisions": p.zone_revisions,
                 "zone_errors": p.zone_errors}
            )  # fmt: skip
        return {
            "node": self.node,
            "region": self.opts.region,
            "connected": self.connected,
            "endpoint": self.etcd.endpoint,
            "last_sync_seconds": round(self.stale_for, 1),
            "stale_after": self.opts.stale_after,
            "alone": self.alone,
            "revision": self.revision,
            "last_error": self.last_error,
            "nodes": nodes,
            "serial_mismatch": self.serial_mismatch(),
            "overrides": len(self.overrides),
            "reconnects": self.reconnects,
            "traffic": {
                "requests": self.etcd.requests,
                "bytes_out": self.etcd.bytes_out,
                "bytes_in": self.etcd.bytes_in,
            },
        }

    # -- life ------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run(), name="gslb-cluster")
        self._clock_task = loop.create_task(self._clock(), name="gslb-cluster-clock")

    async def _clock(self) -> None:
        """Notice at once (every 0.1 s) what time alone changes: the store out of reach
        for stale_after, or a peer's votes going stale because its beats stopped."""
        while not self._stopping:
            await asyncio.sleep(0.1)
            self._transitions()

    async def stop(self) -> None:
        self._stopping = True
        for task in (self._task, self._clock_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.lease and self.connected:
            # leave at once: the others stop counting this node's votes now, not after the TTL
            with contextlib.suppress(EtcdError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.etcd.revoke(self.lease)
        self.save()
        await self.etcd.close()

    async def _run(self) -> None:
        backoff = 0.25
        while not self._stopping:
            try:
                await self._session()
            except EtcdError as e:
                self.errors += 1
                self.last_error = str(e)
            except _Broken as e:
                self.last_error = str(e)
            except Exception as e:  # an unexpected reply or a bug: reconnect, never stop syncing
                self.errors += 1
                self.last_error = f"{type(e).__name__}: {e}"[:300]
                log.exception("cluster: unexpected error; reconnecting")
            if self._stopping:
                return
            if self.connected:
                self.connected = False
                self.reconnects += 1
                log.error(
                    "cluster: lost the store (%s); answering from the last merged view; after %gs "
                    "without it this node decides from its own observations", self.last_error,
                    self.opts.stale_after,
                )  # fmt: skip
            self.tick()
            await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
            backoff = min(backoff * 2, 4.0)
            if self.connected:
                backoff = 0.25

    def tick(self) -> None:
        """Notice the moment the view goes stale, and zones that nodes serve at different
        serials (called every second by the runtime)."""
        mismatch = self.serial_mismatch()
        if set(mismatch) != self._mismatch:
            for zone in set(mismatch) - self._mismatch:
                m = mismatch[zone]
                serials = ", ".join(f"{n} {s}" for n, s in sorted(m["serials"].items()))
                if m["same_content"]:
                    log.warning(
                        "cluster: nodes serve %s at different serials (%s) with the same content: copy "
                        "zone files with their modification time (rsync -t) or set soa.serial", zone, serials,
                    )  # fmt: skip
                else:
                    log.warning("cluster: nodes serve different versions of %s (serials %s)", zone, serials)
            for zone in self._mismatch - set(mismatch):
                log.info("cluster: every node serves the same version of %s again", zone)
            self._mismatch = set(mismatch)
        self._transitions()

    def _transitions(self) -> None:
        """A new view when this node goes alone or back, or the set of peers whose votes
        are current changes."""
        changed = False
        if self.alone != self._alone:
            self._alone = self.alone
            changed = True
            if self._alone:
                since = f"no sync for {self.stale_for:.1f}s" + ("" if self.synced_at else " (never synced)")
                log.error("cluster: %s: deciding from this node's observations only", since)
        current = self.current_peers(self.live_peers())
        if current != self._current:
            for n in sorted(self._current - current):
                if not self.alone and n in self.peers:
                    log.warning(
                        "cluster: node %s has not re-published for a while: its votes count as down only", n
                    )
            self._current = current
            changed = True
        if changed:
            self._changed()

    async def _session(self) -> None:
        """One connection's life: register, publish, list, then watch and beat until
        something breaks (raises)."""
        e = self.etcd
        old, self.lease = self.lease, await e.grant(self.opts.lease_ttl)
        # this node's votes first, then its registration: a peer that sees the
        # registration write knows the votes before it are current
        mine = dict(self.own)
        await e.put_many([(self._obs_key(k), _obs_bytes(o)) for k, o in mine.items()], self.lease)
        await e.put(self._reg_key(), self._registration(), self.lease)
        self._published = mine
        if old:
            # what the last session wrote and this one did not (votes on members this node
            # no longer has) goes with its lease, now rather than at its end
            with contextlib.suppress(EtcdError):
                await e.revoke(old)
        rev, kvs = await e.get_prefix(self.p)
        self._replace(rev, kvs)
        was_alone = self._alone
        self.connected = True
        self._alone = self.alone
        self._current = frozenset()
        self.last_error = ""
        log.info(
            "cluster: connected to %s as %s (%d node(s) live, revision %d)",
            e.endpoint, self.node, len(self.peers), rev,
        )  # fmt: skip
        if was_alone:
            log.warning(
                "cluster: counting the other nodes' votes again (a node's votes count as down only "
                "until its next beat shows it re-published)"
            )
        self._changed()
        self.last_event = time.monotonic()
        tasks = [
            asyncio.create_task(self._watch(rev + 1)),
            asyncio.create_task(self._beat()),
            asyncio.create_task(self._publish()),
            asyncio.create_task(self._publish_rtts()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            for t in done:
                t.result()  # raises what ended the session
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t

    async def _watch(self, start: int) -> None:
        async for rev, events in self.etcd.watch(self.p, start):
            self.last_event = time.monotonic()
            self.revision = max(self.revision, rev)
            if self._apply(events):
                self._changed()

    async def _beat(self) -> None:
        """Keep the lease (every CONTACT s: the store's liveness), rewrite the registration
        (every beat); a request that fails, or a watch that does not bring our own beat
        back, ends the session."""
        e = self.etcd
        every = min(CONTACT, self.beat)
        per_beat = max(1, round(self.beat / every))
        n = 0
        while True:
            await asyncio.sleep(every)
            ttl = await e.keepalive(self.lease)
            if ttl <= 0:
                raise _Broken("this node's lease expired")
            n += 1
            if n % per_beat:
                continue
            await e.put(self._reg_key(), self._registration(), self.lease)
            quiet = time.monotonic() - self.last_event
            if quiet > 3 * self.beat + self.opts.timeout:
                raise _Broken(f"the watch has been silent for {quiet:.1f}s")
            self.tick()

    async def _publish(self) -> None:
        """Write this node's changed observations (and registration, for serials)."""
        e = self.etcd
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            mine = dict(self.own)
            put = [(self._obs_key(k), _obs_bytes(o)) for k, o in mine.items() if self._published.get(k) != o]
            gone = [k for k in self._published if k not in mine]
            if put:
                await e.put_many(put, self.lease)
            for k in gone:
                await e.delete(self._obs_key(k))
            await e.put(self._reg_key(), self._registration(), self.lease)
            self._published = mine

    async def _publish_rtts(self) -> None:
        """Write this node's round trips when they changed (at once in a new session:
        the last ones went with the old lease), at most every RTT_EVERY s."""
        e = self.etcd
        self._rtts_sent = None
        while True:
            if self._rtts_sent is not None:
                await self._rtts_dirty.wait()
            self._rtts_dirty.clear()
            rtts = dict(self.own_rtts)
            if rtts or self._rtts_sent is not None:
                await e.put(self._rtts_key(), _rtts_bytes(rtts), self.lease)
            self._rtts_sent = rtts
            await asyncio.sleep(RTT_EVERY)

    # -- the store's contents ----------------------------------------------------------
    def _rtts_key(self) -> str:
        return f"{self.p}rtts/{quote(self.node, safe='')}"

    def _reg_key(self) -> str:
        return f"{self.p}nodes/{quote(self.node, safe='')}"

    def _obs_key(self, k: MemberKey) -> str:
        return f"{self.p}obs/{quote(self.node, safe='')}/{_k(k)}"

    def _registration(self) -> bytes:
        return json.dumps(
            {"node": self.node, "region": self.opts.region, "started": self.started, "beat": time.time(),
             "period": self.beat, "serials": self.serials, "digests": self.digests, "pid": os.getpid(),
             "location": self.opts.location, "zone_revisions": self.zone_revisions,
             "zone_errors": self.zone_errors}
        ).encode()  # fmt: skip

    def _replace(self, rev: int, kvs: Iterable[KV]) -> None:
        """The whole prefix as listed: replaces what was known, in one step."""
        self.peers, self.peer_obs, self.overrides = {}, {}, {}
        had_rtts, self.peer_rtts = bool(self.peer_rtts), {}
        self.zone_docs = {}
        self.zones_listed_at = rev
        self.revision = rev
        if had_rtts and self.rtts_changed is not None:
            self.rtts_changed()  # before the listing has its own: the vantages may be fewer
        self._recount(None)
        self._apply((Event(False, kv) for kv in kvs), listing=True)

    def _apply(self, events: Iterable[Event], listing: bool = False) -> bool:
        """Apply changes; True when the votes or the overrides changed (a beat alone
        changes neither). ``listing``: the events are a fresh list of the prefix."""
        changed = False
        steer = False
        zones = False
        mono = time.monotonic()
        for ev in events:
            rest = ev.kv.key[len(self.p) :]
            kind, _, path = rest.partition("/")
            if kind == "nodes":
                node = unquote(path)
                if ev.deleted:
                    if self.peers.pop(node, None) is not None and node != self.node:
                        log.warning("cluster: node %s left (lease ended or stopped)", node)
                        changed = True
                    self.peer_obs.pop(node, None)
                    steer |= self.peer_rtts.pop(node, None) is not None
                    continue
                d = _json(ev.kv.value)
                if d is None:
                    continue
                # a write after ours, under our name, by a live process (a listing may still
                # show the registration of this node's previous, killed process)
                dup = node == self.node and float(d.get("started", 0)) != self.started
                if dup and not listing and not self._dup_seen:
                    self._dup_seen = True
                    # another process registered under this node's name: votes would mix
                    log.error(
                        "cluster: another gslb process (pid %s, started %s) uses the node name %r; "
                        "give every node its own --node", d.get("pid"), d.get("started"), node,
                    )  # fmt: skip
                before = self.peers.get(node)
                new = before is None
                if before is not None and before.lease != ev.kv.lease:
                    for k in self.peer_obs.get(node, {}):  # a new session: its votes' standing changes
                        self._recount(k)
                serials = {str(z): int(s) for z, s in dict(d.get("serials", {})).items()}
                period = d.get("period")
                loc = _location(d.get("location"))
                moved = before is None or before.location != loc or before.lease != ev.kv.lease
                steer |= node in self.peer_rtts and moved
                self.peers[node] = Peer(
                    node, str(d.get("region", "")), float(d.get("started", 0)), float(d.get("beat", 0)),
                    mono, serials, str(d.get("api", "")),
                    {str(z): str(h) for z, h in dict(d.get("digests", {})).items()},
                    ev.kv.lease, 0.0 if listing else mono,
                    float(period) if isinstance(period, (int, float)) and period > 0 else BEAT, loc,
                    {str(z): int(r) for z, r in dict(d.get("zone_revisions") or {}).items()},
                    {str(z): str(w) for z, w in dict(d.get("zone_errors") or {}).items()},
                )  # fmt: skip
                if new and node != self.node:
                    log.info("cluster: node %s joined (region %s)", node, d.get("region") or "-")
                    changed = True
            elif kind == "obs":
                node_q, _, mpath = path.partition("/")
                node, key = unquote(node_q), _member(mpath)
                if key is None or node == self.node:
                    continue
                self._recount(key)
                if ev.deleted:
                    changed |= self.peer_obs.get(node, {}).pop(key, None) is not None
                    continue
                d = _json(ev.kv.value)
                if d is None:
                    continue
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    self.peer_obs.setdefault(node, {})[key] = Obs.from_json(d, ev.kv.lease)
                    changed = True
                if node in self.peers:
                    self.peers[node].seen = mono
            elif kind == "zones":
                zone = unquote(path)
                zones = True
                if ev.deleted:
                    self.zone_docs.pop(zone, None)
                    continue
                zd = _json(ev.kv.value)
                if zd is not None and isinstance(zd.get("text"), str):
                    self.zone_docs[zone] = (ev.kv.mod_revision, zd["text"], str(zd.get("hash", "")))
            elif kind == "rtts":
                node = unquote(path)
                if node == self.node:
                    continue
                if ev.deleted:
                    steer |= self.peer_rtts.pop(node, None) is not None
                    continue
                got = _rtts(ev.kv.value)
                if got is not None:
                    self.peer_rtts[node] = (ev.kv.lease, got)
                    steer = True
            elif kind == "overrides":
                key = _member(path)
                if key is None:
                    continue
                if ev.deleted:
                    changed |= self.overrides.pop(key, None) is not None
                    continue
                o = _override(ev.kv.value)
                if o is not None and self.overrides.get(key) != (o, ev.kv.mod_revision):
                    self.overrides[key] = (o, ev.kv.mod_revision)
                    changed = True
        if steer and self.rtts_changed is not None:
            self.rtts_changed()
        if (zones or listing) and self.zones_changed is not None:
            self.zones_changed()
        return changed

    def _changed(self) -> None:
        self.changed()
        self._schedule_save()

    # -- persistence: the merged view survives a restart --------------------------------
    def _schedule_save(self) -> None:
        if self.state_dir is None or self._save_pending:
            return
        self._save_pending = True
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().call_later(0.5, self.save)

    def save(self) -> None:
        self._save_pending = False
        if self.state_dir is None:
            return
        doc = {
            "version": 1,
            "node": self.node,
            "last_sync": self.synced_at,
            "revision": self.revision,
            "peers": {n: asdict(p) for n, p in self.peers.items() if n != self.node},
            "obs": {n: {_k(k): o.to_json() for k, o in obs.items()} for n, obs in self.peer_obs.items()},
            "overrides": [{**asdict(o), "revision": rev} for o, rev in self.overrides.values()],
        }
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.state_dir / (FILE + ".tmp")
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, self.state_dir / FILE)
        except OSError as e:
            log.error("cannot persist the cluster view to %s: %s", self.state_dir, e)

    def _load(self) -> None:
        if self.state_dir is None:
            return
        path = self.state_dir / FILE
        try:
            doc = json.loads(path.read_text())
            mono = time.monotonic()
            for n, p in doc["peers"].items():
                self.peers[n] = Peer(**{**p, "seen": mono, "heard": 0.0})  # stale until heard again
            for n, obs in doc["obs"].items():
                if n in self.peers:
                    self.peer_obs[n] = {
                        key: Obs.from_json(o) for kp, o in obs.items() if (key := _member(kp)) is not None
                    }
            for d in doc["overrides"]:
                rev = int(d.pop("revision"))
                o = _override(json.dumps(d).encode())
                if o is not None:
                    self.overrides[o.key] = (o, rev)
            self.last_sync = float(doc["last_sync"])
            self.revision = int(doc["revision"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.error("ignoring unreadable cluster state %s: %s", path, e)
            self.peers, self.peer_obs, self.overrides = {}, {}, {}
            return
        log.info(
            "cluster: serving the persisted view (%d peer(s), %d override(s), synced %.0fs ago) until "
            "the store answers", len(self.peers), len(self.overrides), time.time() - self.last_sync,
        )  # fmt: skip

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        _background.add(task)
        task.add_done_callback(_background.discard)


_background: set[asyncio.Task[None]] = set()


class _Broken(Exception):
    """The session is unusable (lease gone, silent watch)."""


def _json(b: bytes) -> dict[str, Any] | None:
    try:
        d = json.loads(b)
    except ValueError:
        return None
    return d if isinstance(d, dict) else None


def _location(v: object) -> tuple[float, float] | None:
    if isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) for x in v):
        lat, lon = float(v[0]), float(v[1])
        if -90 <= lat <= 90 and -180 <= lon <= 180:
            return lat, lon
    return None


def _rtts_bytes(rtts: Mapping[MemberKey, float]) -> bytes:
    return json.dumps({"rtts": [[*k, v] for k, v in sorted(rtts.items())]}, separators=(",", ":")).encode()


def _rtts(b: bytes) -> dict[MemberKey, float] | None:
    """A peer's round trips; None when unreadable (a newer format, a broken write)."""
    d = _json(b)
    if d is None or not isinstance(d.get("rtts"), list):
        return None
    out: dict[MemberKey, float] = {}
    for item in d["rtts"]:
        if (
            isinstance(item, list) and len(item) == 4 and all(isinstance(x, str) for x in item[:3])
            and isinstance(item[3], (int, float)) and item[3] >= 0
        ):  # fmt: skip
            out[(item[0], item[1], item[2])] = float(item[3])
    return out


def _obs_bytes(o: Obs) -> bytes:
    return json.dumps(o.to_json()).encode()


def _override(b: bytes) -> Override | None:
    d = _json(b)
    if d is None:
        return None
    try:
        expires = d.get("expires")
        action = d["action"]
        if action not in ACTIONS:
            return None
        return Override(
            str(d["zone"]), str(d["pool"]), str(d["member"]), action, float(d["set_at"]),
            None if expires is None else float(expires), str(d.get("by", "")),
        )  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return None
