"""Composition root: load zones, build the serving state, run transports, reload.

Reloads are per zone file: a file that fails validation is reported with its
positioned errors and its last good version keeps serving; files that load
replace theirs. The new state is built aside and swapped in one assignment,
so a query sees either the old state or the new one, never a mix.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import ipaddress
import logging
import multiprocessing
import os
import random
import signal
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from aiohttp import web

from gslb import names
from gslb.config import iter_zone_files, load_zone
from gslb.engine import build_state
from gslb.errors import ConfigError, Problem
from gslb.geo import MaxMindGeo
from gslb.health.process import ProberProcess, add_pipe_reader
from gslb.health.view import ALL_UP, HealthView, MemberKey
from gslb.httpapi import SAMPLE_INTERVAL, make_app, sample
from gslb.logs import current as current_logging
from gslb.logs import setup as setup_logging
from gslb.metrics import QueryStats, RuntimeFacts
from gslb.model import Zone
from gslb.overrides import Overrides
from gslb.rrl import RateLimiter
from gslb.serving import ServingState, dismantle
from gslb.transport.tcp import TcpLimits, serve_tcp
from gslb.transport.udp import MmsgTransport, serve_udp

log = logging.getLogger("gslb")

WATCH_INTERVAL = 1.0


class ListenError(OSError):
    """A socket could not be bound; the message names the address and what it was for."""


def _listen_error(host: str, port: int, what: str, e: OSError) -> ListenError:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    why = os.strerror(e.errno).lower() if e.errno else str(e)
    return ListenError(f"cannot listen on {where} ({what}): {why}")


@dataclass(frozen=True, slots=True)
class Loaded:
    zone: Zone
    serial: int
    stamp: tuple[int, int]  # (mtime_ns, size) when loaded


def auto_serial(zone: Zone, mtime: float, previous: Loaded | None) -> int:
    """The zone's SOA serial.

    An explicit ``soa.serial`` is used as is. Otherwise the serial is the file's
    modification time in Unix seconds, bumped past the previous serial when the
    content changed, and kept when it did not: it increases on every change and
    is the same on nodes that were given the same file with the same mtime.
    """
    if zone.soa.serial is not None:
        return zone.soa.serial
    serial = int(mtime) & 0xFFFFFFFF
    if previous is not None:
        if previous.zone.digest == zone.digest:
            return previous.serial
        if serial <= previous.serial:
            serial = (previous.serial + 1) & 0xFFFFFFFF
    return serial


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size)


class Server:
    """Owns the current ServingState; transports read ``self.state``."""

    def __init__(
        self,
        zones_dir: str,
        listens: list[tuple[str, int]],
        tcp_idle: float = 10.0,
        tcp_max: int = 512,
        seed: int | None = None,
        watch_interval: float = WATCH_INTERVAL,
        state_dir: str | None = "state",
        probe_concurrency: int = 512,
        stall_after: float = 10.0,
        geoip_db: str | None = None,
        asn_db: str | None = None,
        api_listen: tuple[str, int] | None = ("127.0.0.1", 8053),
        api_token: str | None = None,
        query_log_every: int = 0,
        rrl_rate: float = 0.0,
        rrl_slip: int = 2,
        axfr_allow: list[str] | None = None,
        udp_io: str = "auto",
        workers: int = 1,
    ) -> None:
        # what a worker process needs to build its own Server (see WorkerPool)
        self.config = {
            "zones_dir": zones_dir, "tcp_idle": tcp_idle, "tcp_max": tcp_max, "seed": seed,
            "watch_interval": watch_interval, "state_dir": state_dir, "geoip_db": geoip_db,
            "asn_db": asn_db, "api_listen": None, "query_log_every": query_log_every,
            "rrl_rate": rrl_rate, "rrl_slip": rrl_slip, "axfr_allow": axfr_allow, "udp_io": udp_io,
            "workers": workers,
        }  # fmt: skip
        self.udp_io = udp_io
        self.workers = workers
        self.reuse_port = workers > 1
        self.announce = True  # log zone loads and problems (workers leave that to the primary)
        self.is_worker = False
        self.serving = False  # set once the event loop answers: loads from then on are reloads
        self.pool: WorkerPool | None = None
        self.query_log_every = query_log_every
        self.rrl = RateLimiter(rrl_rate, rrl_slip) if rrl_rate > 0 else None
        self.api_listen = api_listen
        self.api_token = api_token
        self.api_port: int | None = None
        self._api_runner: web.AppRunner | None = None
        self.zones_dir = Path(zones_dir)
        # opening a database that is missing or not a MaxMind file raises here, at start-up
        self.geo = MaxMindGeo(geoip_db, asn_db) if (geoip_db or asn_db) else None
        if self.geo is not None:
            log.info("GeoIP: %s", self.geo.describe())
        self.watch_interval = watch_interval
        self.listens = listens
        self.rng = random.Random(seed)
        self.limits = TcpLimits(
            tcp_idle, tcp_max, tuple(ipaddress.ip_network(n, strict=False) for n in axfr_allow or ())
        )
        self.loaded: dict[Path, Loaded] = {}
        self.rejected: dict[Path, tuple[int, int]] = {}  # stamp of a file version already reported bad
        self.health: HealthView = ALL_UP  # what the prober says, before overrides
        self.overrides = Overrides(Path(state_dir) if state_dir else None)
        self.stats = QueryStats()
        self.facts = RuntimeFacts()
        self.history: collections.deque[dict[str, float]] = collections.deque(maxlen=300)  # 10 min at 2 s
        self.generation = 0
        self.state: ServingState = build_state([])
        self.bound: list[tuple[str, int]] = []
        self._closers: list[asyncio.BaseTransport | asyncio.AbstractServer | MmsgTransport] = []
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[bool]] = set()
        self.last_problems: list[Problem] = []
        self.stall_after = stall_after
        self.prober = ProberProcess(
            self.set_health,
            Path(state_dir) if state_dir else None,
            probe_concurrency,
            stall_after,
            publish_loads=self.set_loads,
        )

    # -- zones --------------------------------------------------------------
    def load_initial(self) -> list[Problem]:
        """Load every zone; return the problems (the caller decides to stop)."""
        with _no_gc():
            problems = self._scan()
            if not self.is_worker:
                self.prober.update(self.zones())
            self._install(*self._build())
        return problems

    def zones(self) -> list[Zone]:
        return [ld.zone for ld in self.loaded.values()]

    def _scan(self) -> list[Problem]:
        problems: list[Problem] = []
        present = list(iter_zone_files(self.zones_dir))
        new: dict[Path, Loaded] = {}
        origins: dict[bytes, Path] = {}
        for path in present:
            stamp = _stamp(path)
            old = self.loaded.get(path)
            if stamp is None:
                continue
            if old is not None and old.stamp == stamp:
                new[path] = old
                origins[old.zone.origin] = path
                continue
            if self.rejected.get(path) == stamp:  # this bad version was reported already
                if old is not None:
                    new[path] = old
                    origins[old.zone.origin] = path
                continue
            try:
                zone = load_zone(
                    path,
                    geo_db=self.geo is not None and self.geo.geo is not None,
                    asn_db=self.geo is not None and self.geo.asn is not None,
                    gentle=self.serving,  # a reload: answering goes on beside it
                )
            except ConfigError as e:
                problems.extend(e.problems)
                self.rejected[path] = stamp
                if old is not None:
                    log.log(
                        logging.ERROR if self.announce else logging.DEBUG,
                        "zone file %s rejected; still serving its last good version (serial %d)",
                        path,
                        old.serial,
                    )
                    new[path] = old
                    origins[old.zone.origin] = path
                continue
            if zone.origin in origins:
                problems.append(
                    Problem(
                        str(path),
                        1,
                        1,
                        "zone",
                        f"zone {names.to_text(zone.origin)} is also defined in {origins[zone.origin]}",
                    )
                )
                continue
            prev = old if old is not None and old.zone.origin == zone.origin else None
            serial = auto_serial(zone, stamp[0] / 1e9, prev)
            new[path] = Loaded(zone, serial, stamp)
            origins[zone.origin] = path
            if (prev is None or prev.serial != serial) and self.announce:
                log.info("loaded zone %s from %s (serial %d)", names.to_text(zone.origin), path, serial)
                for w in zone.warnings:
                    log.warning("%s", w)
        for path in self.loaded.keys() - new.keys():
            if path not in present and self.announce:
                log.info(
                    "zone file %s removed; zone %s no longer served",
                    path,
                    names.to_text(self.loaded[path].zone.origin),
                )
        if self.announce:
            for p in problems:
                log.error("%s", p)
        self.last_problems = problems
        failed_files = {p.path for p in problems}
        self.facts.reloads_failed += len(failed_files)
        loaded_now = sum(1 for path, ld in new.items() if self.loaded.get(path) is not ld)
        if loaded_now:
            self.facts.reloads_ok += loaded_now
            self.facts.last_good_load = time.time()
        changed = new != self.loaded
        self.loaded = new
        if changed:
            self.generation += 1
        return problems

    def effective_health(self) -> HealthView:
        """What the checks say, with the runtime overrides applied."""
        if self.is_worker:
            return self.health  # the primary's view, overrides included
        return self.health.with_forced(self.overrides.active())

    def _build(self) -> tuple[ServingState, HealthView]:
        """A new state from the loaded zones (and the health view it was built with)."""
        zones = [(ld.zone, ld.serial) for ld in self.loaded.values()]
        effective = self.effective_health()
        return build_state(zones, effective, self.generation, self.geo), effective

    def _install(self, state: ServingState, built_with: HealthView) -> ServingState:
        """Swap in a built state, with whatever health, loads and counters are current;
        returns the state it replaced."""
        current = self.effective_health()
        if current != built_with:  # health changed while it was being built
            state = state.with_health(current)
        old = self.state
        self.state = state.with_loads(self.state.loads).with_counts(self.stats.balanced)
        return old

    def _scan_and_build(self) -> tuple[ServingState, HealthView] | None:
        with _no_gc():
            before = self.generation
            self._scan()
            return self._build() if self.generation != before else None

    async def reload(self) -> bool:
        """Re-read changed zone files; swap the state if anything changed.

        Reading and compiling run in a thread, so answering goes on meanwhile
        (the interpreter switches threads at least every few milliseconds); only
        the swap runs in the event loop.
        """
        async with self._reload_lock:
            built = await asyncio.get_running_loop().run_in_executor(None, self._scan_and_build)
            if built is None:
                return False
            if not self.is_worker:
                self.prober.update(self.zones())
            old = self._install(*built)
            loop = asyncio.get_running_loop()
            loop.run_in_executor(None, dismantle, old, self.state)
            del old
            if self.announce:
                log.info("serving %d zone(s), generation %d", len(self.loaded), self.generation)
            if self.pool is not None:
                self.pool.broadcast(("reload",))
            return True

    def set_loads(self, loads: dict[MemberKey, float]) -> None:
        self.state = self.state.with_loads(loads)
        if self.pool is not None:
            self.pool.broadcast(("loads", loads))

    def set_health(self, health: HealthView) -> None:
        self.health = health
        effective = self.effective_health()
        self.state = self.state.with_health(effective)
        if self.pool is not None:
            self.pool.broadcast(("health", effective))

    def overrides_changed(self) -> None:
        self.set_health(self.health)

    # -- network ------------------------------------------------------------
    async def start(self) -> None:
        self.serving = True
        for host, port in self.listens:
            for attempt in range(20):
                try:
                    udp, bound = await serve_udp(self, host, port, self.udp_io, self.reuse_port)
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
                log.info("listening on %s:%d (udp, tcp)", shown, bound)

    async def watch(self) -> None:
        """Poll the zone directory for changes (``watch_interval`` 0: SIGHUP only)."""
        if self.watch_interval <= 0:
            while not self._stop.is_set():  # overrides still expire without zone polling
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)
                if self.overrides.expire(time.time()):
                    self.overrides_changed()
            return
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.watch_interval)
            if not self._stop.is_set():
                await self.reload()
                if self.overrides.expire(time.time()):
                    self.overrides_changed()
                if self.geo is not None:
                    self.geo.maybe_reload()  # swaps readers in place; the state keeps the object

    def stop(self) -> None:
        self._stop.set()

    async def _sample(self) -> None:
        while True:
            self.history.append(sample(self))
            await asyncio.sleep(SAMPLE_INTERVAL)

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

    async def start_api(self) -> None:
        if self.api_listen is None:
            return
        runner = web.AppRunner(make_app(self), access_log=None)
        await runner.setup()
        host, port = self.api_listen
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
        for c in self._closers:
            c.close()
        for c in self._closers:
            if isinstance(c, asyncio.AbstractServer):
                await c.wait_closed()

    async def run_worker(self, conn: Connection, index: int) -> None:
        """A worker's life (see :class:`WorkerPool`): listen, take health from the pipe, report."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)

        def send(msg: tuple[Any, ...]) -> None:
            try:
                conn.send(msg)
            except (OSError, ValueError):
                self.stop()  # the primary is gone

        def readable() -> None:
            try:
                while conn.poll():
                    msg = conn.recv()
                    kind = msg[0]
                    if kind == "health":
                        self.health = msg[1]  # already with the primary's overrides
                        self.state = self.state.with_health(msg[1])
                    elif kind == "loads":
                        self.state = self.state.with_loads(msg[1])
                    elif kind == "reload":
                        task = loop.create_task(self.reload())
                        self._tasks.add(task)
                        task.add_done_callback(self._tasks.discard)
                    elif kind == "stop":
                        self.stop()
            except (EOFError, OSError):
                log.info("worker %d: the primary closed the pipe; exiting", index)
                self.stop()

        await self.start()
        add_pipe_reader(loop, conn, readable)
        send(("ready", os.getpid()))
        try:
            while not self._stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), WorkerPool.STATS_EVERY)
                send(("stats", {**self.stats.snapshot(), "tcp_open": self.limits.open}))
                if self.geo is not None:
                    self.geo.maybe_reload()
        finally:
            with contextlib.suppress(Exception):
                loop.remove_reader(conn.fileno())
            await self.close()
            conn.close()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[bool]] = set()

        def hup() -> None:
            log.info("SIGHUP: reloading zones")
            t = loop.create_task(self.reload())
            tasks.add(t)
            t.add_done_callback(tasks.discard)

        loop.add_signal_handler(signal.SIGHUP, hup)
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        sampler: asyncio.Task[None] | None = None
        try:
            await self.start()
            if self.workers > 1:
                self.pool = WorkerPool(self, self.workers - 1)
                await self.pool.start()
            await self.start_api()
            sampler = asyncio.get_running_loop().create_task(self._sample())
            await self.prober.start(watchdog_after=self.stall_after)
            log.info(
                "gslb ready: %d zone(s), %d health target(s), %d worker(s), pid %d",
                len(self.loaded), self.prober.targets, self.workers, os.getpid(),
            )  # fmt: skip
            await self.watch()
        finally:  # also when starting failed half-way: nothing is left running
            if sampler is not None:
                sampler.cancel()
            if self.pool is not None:
                await self.pool.stop()
            await self.prober.stop()
            await self.close()
            log.info("stopped")


def serve_until_stopped(server: Server) -> int:
    """Run a loaded server until SIGTERM/SIGINT: 0, or 1 with one clear line when it
    cannot start (an address in use, a worker that does not come up)."""
    try:
        import uvloop

        run: Callable[[Coroutine[Any, Any, None]], None] = uvloop.run
    except ImportError:  # pragma: no cover - uvloop is optional
        run = asyncio.run
    try:
        run(server.run())
    except OSError as e:
        log.error("%s", e if isinstance(e, ListenError) else f"cannot start: {e}")
        return 1
    return 0


# ------------------------------------------------------------------ worker processes


@contextlib.contextmanager
def _no_gc() -> Iterator[None]:
    """No cyclic garbage collection while a zone loads, and none over what it made.

    Every object a load makes survives it, so collections during the load only
    rescan a growing heap (a 100,000-record zone loaded in 13 s with them, 3.6 s
    without), and the first full collection after it would stop the process for
    half a second. ``gc.freeze`` moves what exists to the permanent generation,
    which collections skip; those objects are still freed as soon as nothing
    refers to them (zone data has no reference cycles).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


class WorkerPool:
    """``--workers N``: N-1 more processes answering on the same sockets (SO_REUSEPORT).

    The primary process (this one) keeps the single health prober, the HTTP API
    and the zone watch; each worker loads the zones itself and answers DNS. Over
    a pipe per worker the primary sends

      ("health", HealthView)   every health or override change, as it happens
      ("loads", {member: load}) fresh load readings
      ("reload",)              the zone files changed: load them again
      ("stop",)                close the sockets and exit

    and each worker sends ("ready", pid) once it listens, then ("stats", {...})
    every second (its query counters, for /metrics). A worker that dies is
    started again; a worker whose primary dies sees the pipe close and exits.
    """

    STATS_EVERY = 1.0

    def __init__(self, server: Server, count: int) -> None:
        self.server = server
        self.count = count
        self.procs: dict[int, multiprocessing.process.BaseProcess] = {}
        self.conns: dict[int, Connection] = {}
        self.pids: dict[int, int] = {}
        self.stats: dict[int, dict[str, Any]] = {}
        self.ready: dict[int, asyncio.Event] = {}
        self.restarts = 0
        self._stopping = False

    async def start(self) -> None:
        for i in range(1, self.count + 1):
            self._spawn(i)
        for i in range(1, self.count + 1):
            try:
                await asyncio.wait_for(self.ready[i].wait(), 60)
            except TimeoutError:
                raise OSError(f"worker {i} did not start listening within 60 s") from None
        log.info("%d worker process(es) answering beside this one: pids %s", self.count,
                 ", ".join(str(self.pids[i]) for i in sorted(self.pids)))  # fmt: skip

    def _spawn(self, i: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        level, fmt = current_logging()
        proc = ctx.Process(
            target=worker_main,
            # the current health goes with the start: a worker never answers from an older view
            args=(
                child,
                i,
                self.server.config,
                list(self.server.bound),
                level,
                fmt,
                self.server.effective_health(),
            ),
            name=f"gslb-worker-{i}",
            daemon=True,
        )
        proc.start()
        child.close()
        self.procs[i], self.conns[i] = proc, parent
        self.ready[i] = asyncio.Event()
        add_pipe_reader(asyncio.get_running_loop(), parent, lambda: self._readable(i))
        # what the worker must know now that it did not read from disk itself
        if self.server.state.loads:
            self._send(i, ("loads", dict(self.server.state.loads)))

    def _readable(self, i: int) -> None:
        conn = self.conns.get(i)
        if conn is None:
            return
        try:
            while conn.poll():
                msg = conn.recv()
                if msg[0] == "stats":
                    self.stats[i] = msg[1]
                elif msg[0] == "ready":
                    self.pids[i] = msg[1]
                    self.ready[i].set()
        except (EOFError, OSError):
            self._lost(i)

    def _lost(self, i: int) -> None:
        conn = self.conns.pop(i, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(conn.fileno())
            conn.close()
        if self._stopping or self.server._stop.is_set():
            return
        proc = self.procs.get(i)
        code = None
        if proc is not None:
            proc.join(1)
            code = proc.exitcode
        self.restarts += 1
        log.error("worker %d (pid %s) exited with code %s; starting it again", i, self.pids.get(i), code)
        self._spawn(i)

    def _send(self, i: int, msg: tuple[Any, ...]) -> None:
        conn = self.conns.get(i)
        if conn is None:
            return
        try:
            conn.send(msg)
        except (OSError, ValueError) as e:
            log.error("cannot reach worker %d: %s", i, e)

    def broadcast(self, msg: tuple[Any, ...]) -> None:
        for i in list(self.conns):
            self._send(i, msg)

    def snapshots(self) -> list[dict[str, Any]]:
        return list(self.stats.values())

    def tcp_open(self) -> int:
        return sum(int(s.get("tcp_open", 0)) for s in self.stats.values())

    def status(self) -> list[dict[str, object]]:
        return [
            {"worker": i, "pid": self.pids.get(i), "alive": p.is_alive(),
             "queries": sum(self.stats.get(i, {}).get("queries", {}).values())}
            for i, p in sorted(self.procs.items())
        ]  # fmt: skip

    async def stop(self) -> None:
        self._stopping = True
        self.broadcast(("stop",))
        deadline = time.monotonic() + 5
        for p in self.procs.values():
            while p.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if p.is_alive():
                p.terminate()
                p.join(2)
        for i in list(self.conns):
            self._lost(i)


def worker_main(
    conn: Connection,
    index: int,
    config: dict[str, Any],
    bound: list[tuple[str, int]],
    level: int,
    fmt: str,
    health: HealthView,
) -> None:
    """A worker process: the zones, the sockets (shared by port), answers; health from the pipe."""
    setup_logging(level, fmt)
    # Ctrl-C and SIGHUP reach the whole process group: the primary decides what happens
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    server = Server(listens=bound, **config)
    server.announce = False
    server.is_worker = True
    server.health = health  # the primary's view at spawn time, overrides included
    server.load_initial()
    try:
        import uvloop

        uvloop.run(server.run_worker(conn, index))
    except ImportError:  # pragma: no cover
        asyncio.run(server.run_worker(conn, index))
