"""Composition root: zones, serving state, transports, prober, API, reloads, signals.

Two kinds of process answer DNS. :class:`Answerer` is what they share: the
zone set, the serving state built from it, the DNS sockets and reloads. The
primary, :class:`Server`, adds the single health prober, the runtime
overrides, the HTTP API and the zone watch, and hands every change to the
worker processes, if any, through a :class:`Workers` (``gslb.server.workers``, which
builds on this module; this module does not import it).

Reloads are per zone file: a file that fails validation is reported with its
positioned errors and its last good version keeps serving; files that load
replace theirs. The new state is built aside and swapped in one assignment,
so a query sees either the old state or the new one, never a mix.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ipaddress
import logging
import os
import random
import signal
import socket
import ssl
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from gslb.answer.build import build_state, needs_decisions, with_decisions
from gslb.answer.geo.maxmind import MaxMindGeo
from gslb.answer.reply import set_nsid
from gslb.answer.state import ServingState, Vantages, dismantle
from gslb.cluster.node import Cluster
from gslb.cluster.node import Options as ClusterOptions
from gslb.dns import names, tsig
from gslb.dns.cookies import Cookies, load_secrets, random_secret
from gslb.health.overrides import Overrides
from gslb.health.process import ProberProcess
from gslb.health.view import (
    ALL_UP,
    HealthView,
    MemberKey,
    Resolved,
    alias_key,
    changed_members,
    check_key,
    member_key,
)
from gslb.secondaries.notify import Notifier
from gslb.secondaries.xfr import Journal, Transfers, transfer_policies
from gslb.server.alerts import Alerts, Webhook
from gslb.server.aliases import AliasOptions, AliasResolver
from gslb.server.api import SAMPLE_INTERVAL, make_app, sample
from gslb.server.metrics import QueryStats, RuntimeFacts
from gslb.server.options import ServeOptions, endpoints
from gslb.server.transport.tcp import TcpLimits, serve_tcp
from gslb.server.transport.udp import MmsgTransport, rate_limiter, serve_udp, udp_path
from gslb.server.zone_api import clean_leftovers
from gslb.server.zone_sync import ZoneSync
from gslb.zones.directory import ZoneSet, no_gc
from gslb.zones.errors import Problem
from gslb.zones.model import Member, Zone

log = logging.getLogger("gslb")


class ListenError(OSError):
    """A socket could not be bound; the message names the address and what it was for."""


def _listen_error(host: str, port: int, what: str, e: OSError) -> ListenError:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    why = os.strerror(e.errno).lower() if e.errno else str(e)
    return ListenError(f"cannot listen on {where} ({what}): {why}")


def read_token(path: str | None) -> str | None:
    """The admin token: from a file (first line) or the GSLB_API_TOKEN environment variable."""
    if path:
        return Path(path).read_text().strip() or None
    return os.environ.get("GSLB_API_TOKEN") or None


class Answerer:
    """The zones, the serving state built from them, and the DNS sockets.

    Transports read ``self.state`` once per query (``transport.StateHolder``).
    """

    def __init__(
        self,
        opts: ServeOptions,
        listens: tuple[tuple[str, int], ...] | None = None,
        announce: bool = True,
        seed: int | None = None,
        health: HealthView = ALL_UP,
        cookie_secrets: tuple[bytes, ...] | None = None,
    ) -> None:
        self.opts = opts
        self.listens = listens if listens is not None else opts.listen
        self.announce = announce  # log zone loads and problems (workers leave that to the primary)
        self.reuse_port = opts.workers > 1
        self.serving = False  # set once the event loop answers: loads from then on are reloads
        self.query_log_every = opts.query_log_sample
        self.rrl = rate_limiter(opts.rrl_rate, opts.rrl_slip) if opts.rrl_rate > 0 else None
        # DNS cookies: the secrets come from the file, else the primary's random one
        # (``cookie_secrets``, which it hands to its workers so they accept each other's)
        if cookie_secrets is None:
            path = opts.cookie_secret_file
            cookie_secrets = load_secrets(Path(path)) if path else (random_secret(),)
        self.cookie_secrets = cookie_secrets
        self.cookies = Cookies(cookie_secrets) if opts.cookies == "on" else None
        self.nocookie_udp = opts.cookie_less_udp_size
        # opening a database that is missing or not a MaxMind file raises here, at start-up
        self.geo = MaxMindGeo(opts.geoip_db, opts.asn_db) if (opts.geoip_db or opts.asn_db) else None
        if self.geo is not None and announce:
            log.info("GeoIP: %s", self.geo.describe())
        self.rng = random.Random(seed)
        set_nsid(opts.nsid_text)
        nets = tuple(ipaddress.ip_network(n, strict=False) for n in opts.axfr_allow)
        self.stats = QueryStats()
        # TSIG keys (a file that cannot be used stops the start, in one line) and transfers
        self.keyring = tsig.Keyring(tuple(tsig.load_key(n, f, a) for n, a, f in opts.tsig_keys))
        self.transfers = Transfers(
            self.keyring,
            transfer_policies(opts.transfers),
            nets,
            Journal(warn=announce),
            self.stats.transfers,
        )
        self.limits = TcpLimits(opts.tcp_idle, opts.tcp_max, self.transfers)
        self.facts = RuntimeFacts()
        self.zoneset = ZoneSet(
            Path(opts.zones),
            geo_db=self.geo is not None and self.geo.geo is not None,
            asn_db=self.geo is not None and self.geo.asn is not None,
            announce=announce,
            facts=self.facts,
        )
        self.health = health  # the view this process was told (a worker: overrides included)
        # alias members' names and their addresses now (the primary resolves them: gslb.server.aliases)
        self.alias_view: dict[bytes, Resolved] = {}
        self.state: ServingState = build_state([])
        self.bound: list[tuple[str, int]] = []
        self._closers: list[asyncio.BaseTransport | asyncio.AbstractServer | MmsgTransport] = []
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- zones and state ----------------------------------------------------------
    def effective_health(self) -> HealthView:
        """The view the answers use."""
        return self.health

    def zones(self) -> list[Zone]:
        return self.zoneset.zones()

    def zones_changed(self) -> None:
        """Called after the zone set changed, before the new state is swapped in."""

    def reloaded(self) -> None:
        """Called after a reload swapped in a new state."""

    def zones_rejected(self, problems: list[Problem]) -> None:
        """Zone files a reload rejected (their last good versions keep serving)."""

    def load_initial(self) -> list[Problem]:
        """Load every zone; return the problems (the caller decides to stop)."""
        if self.announce and Path(self.opts.zones).is_dir():
            for p in clean_leftovers(Path(self.opts.zones)):  # a zone API write killed midway
                log.warning("removed %s, left by a zone API write that did not finish", p)
        with no_gc():
            problems = self.zoneset.scan()
            self.zones_changed()
            self._install(*self._build())
        return problems

    def _build(self) -> tuple[ServingState, HealthView]:
        """A new state from the loaded zones (and the health view it was built with)."""
        effective = self.effective_health()
        return build_state(
            self.zoneset.with_serials(), effective, self.zoneset.generation, self.geo, self.alias_view
        ), effective

    def _install(self, state: ServingState, built_with: HealthView) -> ServingState:
        """Swap in a built state, with whatever health, loads and counters are current;
        returns the state it replaced."""
        current = self.effective_health()
        if current != built_with:  # health changed while it was being built
            state = state.with_health(current)
        state = state.with_aliases(self.alias_view)  # as aliases may have (a no-op otherwise)
        if self.state.ramps:  # members still ramping keep ramping in the new state
            state = state.with_ramps(self.state.ramps, time.time())
        if self.state.orders:  # select: fastest keeps its order (the next round trips re-steer)
            state = state.with_orders(self.state.orders, vantages=self.state.vantages)
        old = self.state
        self.state = state.with_loads(self.state.loads).with_counts(self.stats.balanced)
        return old

    def _scan_and_build(self) -> tuple[ServingState, HealthView] | None:
        with no_gc():
            before = self.zoneset.generation
            self.zoneset.scan(gentle=self.serving)  # a reload: answering goes on beside it
            # a changed GeoIP database: its readers are swapped in place, and the state is
            # built again so the routing tables compiled from it follow (gslb.answer.geo.tables)
            geo_changed = self.serving and self.geo is not None and self.geo.maybe_reload()
            if self.zoneset.generation == before and not geo_changed:
                return None
            built = self._build()
            self.transfers.journal.record(self.state, built[0])  # IXFR: what changed
            return built

    async def reload(self) -> bool:
        """Re-read changed zone files; swap the state if anything changed.

        Reading and compiling run in a thread, so answering goes on meanwhile
        (the interpreter switches threads at least every few milliseconds); only
        the swap runs in the event loop.
        """
        async with self._reload_lock:
            loop = asyncio.get_running_loop()
            built = await loop.run_in_executor(None, self._scan_and_build)
            if self.zoneset.last_problems:  # each bad version once: the scan keeps track
                self.zones_rejected(self.zoneset.last_problems)
            if built is None:
                return False
            self.zones_changed()
            old = self._install(*built)
            loop.run_in_executor(None, dismantle, old, self.state)
            del old
            self.reloaded()
            self.compile_geo_soon()
            return True

    async def compile_geo(self) -> None:
        """Compile the geo/asn rules' tables the state does not have yet (a City-sized
        database: tens of seconds), in a thread, then give them to the current state:
        until then those names decide with a lookup per query, with the same answers."""
        if not needs_decisions(self.state):
            return
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        await loop.run_in_executor(None, with_decisions, self.state)  # fills the tables' cache
        self.state = with_decisions(self.state, build=False)
        if self.announce:
            log.info("GeoIP routing tables compiled in %.1f s", time.monotonic() - started)

    def compile_geo_soon(self) -> None:
        if needs_decisions(self.state):
            task = asyncio.get_running_loop().create_task(self.compile_geo())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def reload_soon(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- network --------------------------------------------------------------------
    async def start(self) -> None:
        self.serving = True
        self.compile_geo_soon()
        for host, port in self.listens:
            for attempt in range(20):
                try:
                    udp, bound = await serve_udp(self, host, port, self.opts.udp_io, self.reuse_port)
                except OSError as e:
                    raise _listen_error(host, port, "DNS, UDP", e) from None
                try:
                    tcp = await serve_tcp(self, host, bound, self.limits, self.reuse_port)
                except OSError as e:
                    udp.close()
                    if port == 0 and attempt < 19:
                        continue  # the ephemeral UDP port is taken for TCP: pick another
                    raise _listen_error(host, bound, "DNS, TCP", e) from None
                break
            self._closers += [udp, tcp]
            self.bound.append((host, bound))
            shown = f"[{host}]" if ":" in host else host
            if self.announce:
                io = "asyncio" if not isinstance(udp, MmsgTransport) else udp_path()
                log.info("listening on %s:%d (udp: %s, tcp)", shown, bound, io)

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def close(self) -> None:
        for c in self._closers:
            c.close()
        for c in self._closers:
            if isinstance(c, asyncio.AbstractServer):
                await c.wait_closed()


class Workers(Protocol):
    """The other answering processes (``--workers N``), as the primary sees them."""

    async def start(self, server: Server) -> None: ...
    async def stop(self) -> None: ...
    def health(self, view: HealthView) -> None: ...
    def aliases(self, view: Mapping[bytes, Resolved]) -> None: ...
    def ramps(self, ramps: Mapping[MemberKey, float]) -> None: ...
    def orders(
        self, orders: Mapping[tuple[bytes, str], tuple[MemberKey, ...]], vantages: Vantages = ()
    ) -> None: ...
    def loads(self, loads: Mapping[MemberKey, float]) -> None: ...
    def reload(self) -> None: ...
    def snapshots(self) -> list[dict[str, Any]]: ...
    def tcp_open(self) -> int: ...
    def status(self) -> list[dict[str, object]]: ...


class Server(Answerer):
    """The primary process: answers DNS, and owns the prober, the overrides, the API
    and the zone watch."""

    def __init__(self, opts: ServeOptions, seed: int | None = None) -> None:
        super().__init__(opts, seed=seed)
        self.api_token = read_token(opts.api_token_file)
        self.api_port: int | None = None
        self._api_runner: web.AppRunner | None = None
        self.pool: Workers | None = None
        self.overrides = Overrides(opts.state_path)
        self.history: collections.deque[dict[str, float]] = collections.deque(maxlen=300)  # 10 min at 2 s
        self.local = ALL_UP  # this node's prober view (in a cluster: one vote of several)
        self._version = 0
        self.cluster = (
            Cluster(_cluster_options(opts), self._cluster_changed, opts.state_path) if opts.cluster else None
        )
        if self.cluster is not None:
            self.cluster.rtts_changed = self._peer_rtts_changed
        # zones_from: cluster: the store's zones, applied to the zones directory
        self.zone_sync = (
            ZoneSync(self, self.cluster, Path(opts.zones), opts.state_path)
            if self.cluster is not None and opts.zones_from == "cluster"
            else None
        )
        self.prober = ProberProcess(
            self.set_health,
            opts.state_path,
            opts.probe_concurrency,
            opts.stall_after,
            publish_loads=self.set_loads,
            publish_rtts=self.set_rtts,
            on_stall=self._prober_stall,
            sources=_probe_sources(opts.probe_source),
        )
        self.aliases = AliasResolver(
            AliasOptions(opts.resolver, opts.alias_min_ttl, opts.alias_max_ttl, opts.alias_stale),
            self.set_aliases,
        )
        self.facts.alias_resolutions = self.aliases.stats.per_name  # read at scrape time
        # slow start: the members that have one (seconds), and those ramping now (since when)
        self.rtts: dict[MemberKey, float] = {}  # select: fastest: the prober's round trips
        self._leaders: dict[tuple[bytes, str], MemberKey] = {}
        self._slow: dict[MemberKey, float] = {}
        self._pools_of_slow: dict[tuple[str, str], list[tuple[MemberKey, Member]]] = {}
        self.ramps: dict[MemberKey, float] = {}
        self.alerts = Alerts([_webhook(h) for h in opts.alerts], node=opts.node_name)
        self.notifier = Notifier(self.transfers.notify_targets, self.keyring)
        self._alerted: HealthView | None = None  # the view alerts were last compared with
        self._expired: set[MemberKey] = set()  # overrides that just expired (not cleared)

    # -- health ---------------------------------------------------------------------
    def effective_health(self) -> HealthView:
        """What the checks (or the cluster's votes) say, with the runtime overrides applied:
        the cluster's, then this node's own (local-only) ones on top."""
        forced = self.overrides.active()
        if self.cluster is not None:
            shared = {k: o.action for k, o in self.cluster.active_overrides(time.time()).items()}
            forced = {**shared, **forced}
        return self.health.with_forced(forced)

    def zones_changed(self) -> None:
        self._slow = {
            member_key(z, p.name, m): p.ramp_of(m)
            for z in self.zones()
            for p in z.pools
            for m in p.members
            if p.ramp_of(m) > 0
        }
        self._pools_of_slow = {}
        for z in self.zones():
            for p in z.pools:
                if any(p.ramp_of(m) > 0 for m in p.members):
                    pk = (names.to_text(z.origin), p.name)
                    self._pools_of_slow[pk] = [(member_key(z, p.name, m), m) for m in p.members]
        if self.cluster is not None:
            quorums = _quorums(self.zones(), self.aliases.addresses())
            self.cluster.set_zones(quorums, self.cluster.serials, self.cluster.digests)
        self.aliases.update(m.alias for z in self.zones() for p in z.pools for m in p.members if m.alias)
        self.prober.update(self.zones(), self.aliases.addresses())
        if self.cluster is not None:
            self.set_health(self.local)  # quorums may have changed; and the persisted votes at start

    def reloaded(self) -> None:
        log.info("serving %d zone(s), generation %d", len(self.zoneset.loaded), self.zoneset.generation)
        self._tell_serials()
        self.notifier.zones(self.state.zones)  # secondaries of zones with a new serial
        if self.pool is not None:
            self.pool.reload()

    def _tell_serials(self) -> None:
        if self.cluster is not None:
            zones = self.state.zones.items()
            serials = {names.to_text(o): cz.serial for o, cz in zones}
            digests = {names.to_text(o): cz.zone.digest[:16] for o, cz in zones}
            self.cluster.set_zones(self.cluster.quorum, serials, digests)

    def set_aliases(self, view: dict[bytes, Resolved]) -> None:
        """Alias names resolved anew (gslb.server.aliases): the names that use them are
        planned again, the prober probes their addresses, the workers are told."""
        before = {n: (*r.v4, *r.v6) for n, r in self.alias_view.items() if not r.gone}
        self.alias_view = view
        self.state = self.state.with_aliases(view)
        if self.pool is not None:
            self.pool.aliases(view)
        now = self.aliases.addresses()
        if now != before:
            self.prober.update(aliases=now)
            if self.cluster is not None:  # the new addresses are voted on with their check's quorum
                quorums = _quorums(self.zones(), now)
                self.cluster.set_zones(quorums, self.cluster.serials, self.cluster.digests)

    # -- select: fastest ----------------------------------------------------------------
    def set_rtts(self, rtts: dict[MemberKey, float]) -> None:
        """The prober's smoothed round trips: ``select: fastest`` records re-steer."""
        self.rtts = rtts
        self._steer()

    def _steer(self) -> None:
        """Each fastest record's pools, members by round trip, the current fastest kept
        first until another beats it by more than the record's hysteresis (ms and %).
        ``fastest_from_nearest_node``: so for each vantage (this node first, then each live
        peer that publishes its round trips and location), under keys ``pool@node``."""
        orders: dict[tuple[bytes, str], tuple[MemberKey, ...]] = {}
        leaders: dict[tuple[bytes, str], MemberKey] = {}
        plans = [(n, p) for n, p in self.state.plans.items() if p.policy.uses_rtts]
        vantages: tuple[tuple[str, tuple[float, float] | None], ...] = ()
        seen: list[tuple[str, tuple[float, float] | None, Mapping[MemberKey, float]]] = []
        if any(p.policy.uses_vantages for _, p in plans):
            seen = [(self.opts.node_name, self.opts.location, self.rtts)]
            if self.cluster is not None:  # the members of these records only: the rest is traffic
                used = set().union(*(p.member_keys for _, p in plans if p.policy.uses_vantages))
                self.cluster.set_rtts({k: v for k, v in self.rtts.items() if k in used})
                seen += self.cluster.vantages()
            vantages = tuple((node, loc) for node, loc, _ in seen)
        for name, plan in plans:
            params = dict(plan.record.params)
            ms, pct = params.get("hysteresis.ms", 2) / 1000, params.get("hysteresis.percent", 10) / 100
            cz = self.state.zone_of(name)
            origin = names.to_text(cz.origin)
            rule_pools = {p for rule in plan.record.rules for p in rule.pools}
            views = [(f"@{node}", rtts) for node, _, rtts in seen] if plan.policy.uses_vantages else []
            for suffix, rtts in views or [("", self.rtts)]:
                # "*": every member of the record's pools, which ranks the pools themselves
                for pname in [*sorted(rule_pools), "*"]:
                    if pname == "*":
                        keys = [k for k in plan.member_keys if k[1] in rule_pools and k[0] == origin]
                    else:
                        keys = [k for k in plan.member_keys if k[1] == pname and k[0] == origin]
                    measured = sorted((rtts[k], k) for k in keys if k in rtts)
                    order = [k for _, k in measured]
                    slot = (name, pname + suffix)
                    lead = self._leaders.get(slot)
                    if order and lead is not None and lead in rtts and order[0] != lead:
                        gap = rtts[lead] - rtts[order[0]]
                        if gap <= ms or gap <= rtts[lead] * pct:  # not faster by both: no change
                            order.remove(lead)
                            order.insert(0, lead)
                    if order:
                        leaders[slot] = order[0]
                    orders[slot] = tuple(order)
        for (name, pname), k in leaders.items():
            was = self._leaders.get((name, pname))
            if was is not None and was != k:
                pool, _, node = pname.partition("@")
                where = f"pool {pool}" if pool != "*" else f"the record (pool {k[1]})"
                seen_from = f" as seen from node {node}" if node else ""
                log.info("fastest: %s %s now answers with %s%s (was %s)", names.to_text(name), where, k[2],
                         seen_from, was[2])  # fmt: skip
        self._leaders = leaders
        changed = orders != self.state.orders or vantages != self.state.vantages
        moved = vantages != self.state.vantages
        self.state = self.state.with_orders(orders, dict(self.rtts), vantages)
        if changed and self.pool is not None:
            self.pool.orders(orders, vantages)
        if moved:
            self.compile_geo_soon()  # the nearest vantage's classes (gslb.answer.build)

    def set_loads(self, loads: dict[MemberKey, float]) -> None:
        self.state = self.state.with_loads(loads)
        if self.pool is not None:
            self.pool.loads(loads)

    def set_health(self, health: HealthView) -> None:
        """The prober's view (without overrides): answers follow it at once (in a
        cluster: this node's votes, counted with the other nodes')."""
        self.local = health
        if self.cluster is not None:
            self.cluster.set_own(self.prober.obs, self.prober.take_obs_changed())
            self._version += 1
            health = self.cluster.view(health, self._version)
        self.health = health
        effective = self.effective_health()
        before = self.state.health
        self.state = self.state.with_health(effective)
        if self.pool is not None:
            self.pool.health(effective)
        if self._slow:
            self._ramp_recoveries(before, effective)
        if self.alerts.hooks:
            self._alert_changes(effective)

    # -- slow start -------------------------------------------------------------------
    def _ramp_secs(self, k: MemberKey) -> float:
        """The slow start of a member key (an alias's address: its member's), 0 for none."""
        secs = self._slow.get(k)
        if secs is None and " " in k[2]:
            secs = self._slow.get((k[0], k[1], k[2].split(" ", 1)[0]))
        return secs or 0.0

    def _ramp_recoveries(self, before: HealthView, after: HealthView) -> None:
        """Members with a slow start that came back into rotation ramp from now; one that
        left it stops ramping (and ramps again from its next recovery)."""
        changed = False
        now = time.time()
        for k in changed_members(before, after):
            if not self._ramp_secs(k):
                continue
            if _out(before, k) and not _out(after, k):
                # back while no other member of its pool is in rotation: it takes the
                # traffic at once (there is nobody to take the rest)
                own = k[2].split(" ", 1)[0]  # an alias's address: its member is not an other
                pool = self._pools_of_slow.get((k[0], k[1]), [])
                others = [after.is_up(ok, om) for ok, om in pool if ok[2] != own]
                if any(others):
                    self.ramps[k] = now
                    changed = True
            elif _out(after, k) and self.ramps.pop(k, None) is not None:
                changed = True
        if changed:
            self._publish_ramps(now)

    def _publish_ramps(self, now: float) -> None:
        self.ramps = {k: t for k, t in self.ramps.items() if now - t < self._ramp_secs(k)}
        self.state = self.state.with_ramps(dict(self.ramps), now)
        if self.pool is not None:
            self.pool.ramps(dict(self.ramps))

    async def _ramp_ticks(self) -> None:
        """While members ramp: their shares move on twice a second (and once more at the
        end, to their full weight)."""
        while True:
            await asyncio.sleep(RAMP_TICK)
            if self.ramps or self.state.ramps:
                self._publish_ramps(time.time())

    # -- alerts -------------------------------------------------------------------------
    def _alert_changes(self, view: HealthView) -> None:
        """Alerts for what changed since the last view: members the checks (or the
        cluster's votes) took out of rotation or put back, overrides set or gone, the
        cluster store lost or regained. The first view is the baseline, and member
        changes wait for the first probe round (until then they are the persisted
        state being confirmed, not news)."""
        prev, self._alerted = self._alerted, view
        expired, self._expired = self._expired, set()
        if prev is None:
            return
        a = self.alerts
        if self.prober.first_round:
            for k in sorted(view.down - prev.down):
                reason = self._reason(view, k)
                a.emit("member_down", f"{k[2]} (pool {k[1]}, zone {k[0]}) DOWN: {reason}",
                       zone=k[0], pool=k[1], address=k[2], reason=reason)  # fmt: skip
            for k in sorted(prev.down - view.down):
                reason = self._reason(view, k)
                a.emit("member_up", f"{k[2]} (pool {k[1]}, zone {k[0]}) UP: {reason}",
                       zone=k[0], pool=k[1], address=k[2], reason=reason)  # fmt: skip
        for k, action in sorted(view.forced.items()):
            if prev.forced.get(k) != action:
                a.emit("override_set", f"{k[2]} (pool {k[1]}, zone {k[0]}) forced {action} by an override",
                       zone=k[0], pool=k[1], address=k[2], action=action)  # fmt: skip
        for k in sorted(prev.forced.keys() - view.forced.keys()):
            kind = "override_expired" if k in expired else "override_cleared"
            a.emit(kind, f"{k[2]} (pool {k[1]}, zone {k[0]}): override {kind[9:]}, the checks decide again",
                   zone=k[0], pool=k[1], address=k[2], action=prev.forced[k])  # fmt: skip
        if view.alone and not prev.alone:
            a.emit("cluster_disconnected", f"cluster store out of reach: {view.alone}", reason=view.alone)
        elif prev.alone and not view.alone:
            a.emit("cluster_reconnected", "cluster store reachable again: counting every node's votes")

    def _reason(self, view: HealthView, k: MemberKey) -> str:
        t = view.votes.get(k)
        if t is not None:
            return f"cluster vote, {t}"
        o = self.prober.obs.get(k)
        return o.reason if o is not None else "health check"

    def _prober_stall(self, stalled: bool, quiet: float) -> None:
        if stalled:
            self.alerts.emit("prober_stalled", f"health prober stalled: no progress for {quiet:.1f}s; "
                             "answers keep the last health state")  # fmt: skip
        else:
            self.alerts.emit("prober_recovered", "health prober making progress again")

    def zones_rejected(self, problems: list[Problem]) -> None:
        by_file: dict[str, list[Problem]] = {}
        for p in problems:
            by_file.setdefault(p.path, []).append(p)
        for path, ps in by_file.items():
            more = f" (and {len(ps) - 1} more)" if len(ps) > 1 else ""
            served = self.zoneset.loaded.get(Path(path))  # the zone its last good version serves
            zone = names.to_text(served.zone.origin) if served is not None else None
            text = f"zone file rejected, the last good version keeps serving: {ps[0]}{more}"
            self.alerts.emit("zone_rejected", text, file=path, zone=zone, problems=[str(p) for p in ps])

    def overrides_changed(self) -> None:
        self.set_health(self.local)

    def _cluster_changed(self) -> None:
        """The votes, the live nodes or the shared overrides changed."""
        self.set_health(self.local)

    def _peer_rtts_changed(self) -> None:
        """A peer's round trips or location changed (or it came or went): the records
        steered from the nearest node steer again."""
        if any(p.policy.uses_vantages for p in self.state.plans.values()):
            self._steer()

    # -- what the API shows -----------------------------------------------------------
    def tcp_open(self) -> int:
        return self.limits.open + (self.pool.tcp_open() if self.pool is not None else 0)

    def all_stats(self) -> QueryStats:
        """Query counters of the whole server: this process's and every worker's."""
        return self.stats.merged(self.pool.snapshots() if self.pool is not None else ())

    def worker_status(self) -> list[dict[str, object]]:
        me: dict[str, object] = {
            "worker": 0, "pid": os.getpid(), "alive": True, "queries": sum(self.stats.queries.values())
        }  # fmt: skip
        return [me, *(self.pool.status() if self.pool is not None else [])]

    async def _sample(self) -> None:
        while True:
            self.history.append(sample(self))
            await asyncio.sleep(SAMPLE_INTERVAL)

    async def start_api(self) -> None:
        if self.opts.api is None:
            return
        runner = web.AppRunner(make_app(self), access_log=None)
        await runner.setup()
        host, port = self.opts.api
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as e:
            await runner.cleanup()
            raise _listen_error(host, port, "HTTP API", e) from None
        server = site._server  # aiohttp keeps the bound sockets there
        sockets = getattr(server, "sockets", None) or []
        self.api_port = sockets[0].getsockname()[1] if sockets else port
        self._api_runner = runner
        shown = f"[{host}]" if ":" in host else host
        log.info(
            "HTTP API on http://%s:%d/%s",
            shown,
            self.api_port,
            "" if self.api_token else " (admin actions disabled: no token configured)",
        )

    async def close(self) -> None:
        if self._api_runner is not None:
            await self._api_runner.cleanup()
        await super().close()

    # -- the primary's life -----------------------------------------------------------
    async def watch(self) -> None:
        """Poll the zone directory for changes (``watch_interval`` 0: SIGHUP only);
        expire overrides; notice GeoIP database changes."""
        interval = self.opts.watch_interval
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval if interval > 0 else 1.0)
            if self._stop.is_set():
                break
            if interval > 0:
                await self.reload()
            now = time.time()
            # which overrides expire now (an alert says expired, not cleared)
            self._expired |= {
                k for k, o in self.overrides.items.items() if o.expires is not None and o.expires <= now
            }
            if self.cluster is not None:
                self._expired |= {
                    k
                    for k, (o, _) in self.cluster.overrides.items()
                    if o.expires is not None and o.expires <= now
                }
            expired = self.overrides.expire(now)
            if self.cluster is not None:
                expired |= self.cluster.expire(now)
                self.cluster.tick()
            if expired:
                self.overrides_changed()

    async def run(self, pool: Workers | None = None) -> None:
        loop = asyncio.get_running_loop()

        def hup() -> None:
            log.info("SIGHUP: reloading zones")
            self.reload_soon()

        loop.add_signal_handler(signal.SIGHUP, hup)
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        sampler: asyncio.Task[None] | None = None
        ramper: asyncio.Task[None] | None = None
        try:
            await self.start()
            if pool is not None:
                self.pool = pool
                await pool.start(self)
            await self.aliases.start()
            await self.aliases.first_round(self.aliases.opts.timeout + 0.5)
            await self.start_api()
            self._alerted = self.effective_health()  # the baseline alerts compare with
            await self.alerts.start()
            sampler = loop.create_task(self._sample())
            ramper = loop.create_task(self._ramp_ticks())
            await self.prober.start(watchdog_after=self.opts.stall_after)
            if self.cluster is not None:
                self._tell_serials()
                await self.cluster.start()
            self.notifier.zones(self.state.zones)  # secondaries catch up with edits made while down
            log.info(
                "gslb ready: %d zone(s), %d health target(s), %d worker(s), pid %d",
                len(self.zoneset.loaded), self.prober.targets, self.opts.workers, os.getpid(),
            )  # fmt: skip
            await self.watch()
        finally:  # also when starting failed half-way: nothing is left running
            if sampler is not None:
                sampler.cancel()
            if ramper is not None:
                ramper.cancel()
            if self.pool is not None:
                await self.pool.stop()
            if self.cluster is not None:
                await self.cluster.stop()
            await self.aliases.stop()
            await self.prober.stop()
            await self.alerts.close()
            await self.notifier.close()
            await self.close()
            log.info("stopped")


RAMP_TICK = 0.5  # seconds between slow-start steps


def _out(view: HealthView, k: MemberKey) -> bool:
    """Out of rotation in ``view``: forced down or drained, or down by the checks and not
    forced up (a member's fixed ``status`` never changes, so it never ramps)."""
    f = view.forced.get(k)
    return f in ("down", "drain") or (f != "up" and k in view.down)


def _webhook(h: tuple[str, str | None, tuple[str, ...], tuple[str, ...], tuple[str, ...]]) -> Webhook:
    """An ``alerts`` entry as a Webhook, its secret read from its file (one clear line
    when it cannot be)."""
    url, secret_file, zones, pools, events = h
    secret = b""
    if secret_file:
        try:
            secret = Path(secret_file).read_bytes().strip()
        except OSError as e:
            raise ValueError(
                f"alerts: cannot read the secret of {url}: {secret_file}: {e.strerror or e}"
            ) from None
    return Webhook(url, secret, frozenset(zones), frozenset(pools), frozenset(events))


def _quorums(
    zones: list[Zone], aliases: Mapping[bytes, tuple[str, ...]] | None = None
) -> dict[MemberKey, str]:
    """Each checked member's quorum: its check's, else its zone's (an alias member's: for
    each address its name resolves to now)."""
    out: dict[MemberKey, str] = {}
    for z in zones:
        checks = {c.name: c for c in z.checks}
        for p in z.pools:
            for c in p.checks:  # calculated: each child check's key, with that check's quorum
                for m in p.members:
                    out[check_key(z, p.name, m, c)] = checks[c].quorum or z.quorum
            if p.check is None:
                continue
            q = checks[p.check].quorum or z.quorum
            for m in p.members:
                out[member_key(z, p.name, m)] = q
                if m.alias is not None:
                    for a in (aliases or {}).get(m.alias, ()):
                        out[alias_key(z, p.name, m, a)] = q
    return out


def _cluster_options(o: ServeOptions) -> ClusterOptions:
    """The cluster's settings; an unreadable TLS file is an OSError (one line at start)."""
    tls = None
    if o.cluster_ca or o.cluster_cert:
        tls = ssl.create_default_context(cafile=o.cluster_ca)
        if o.cluster_cert:
            tls.load_cert_chain(o.cluster_cert, o.cluster_key)
    assert o.cluster is not None
    return ClusterOptions(
        tuple(endpoints(o.cluster)), o.node_name, o.region or "", o.cluster_prefix,
        o.cluster_lease_ttl, o.cluster_stale_after, tls, location=o.location,
    )  # fmt: skip


def _probe_sources(sources: tuple[str, ...]) -> tuple[str, ...]:
    """The probe source addresses, each checked to be one of this host's (an OSError of
    one line at start, not every probe failing)."""
    for a in sources:
        fam = socket.AF_INET6 if ":" in a else socket.AF_INET
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            try:
                s.bind((a, 0))
            except OSError as e:
                why = e.strerror or e
                raise OSError(f"--probe-source {a}: not an address of this host ({why})") from None
    return sources


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` on uvloop where installed, else asyncio."""
    try:
        import uvloop

        run: Callable[[Coroutine[Any, Any, None]], None] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is optional
        run = asyncio.run
    run(main)


def serve_until_stopped(server: Server, pool: Workers | None = None) -> int:
    """Run a loaded server until SIGTERM/SIGINT: 0, or 1 with one clear line when it
    cannot start (an address in use, a worker that does not come up)."""
    try:
        run_loop(server.run(pool))
    except OSError as e:
        log.error("%s", e if isinstance(e, ListenError) else f"cannot start: {e}")
        return 1
    return 0
