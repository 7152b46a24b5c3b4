"""``--workers N``: N-1 more processes answering on the same sockets (SO_REUSEPORT).

The primary process keeps the single health prober, the HTTP API and the zone
watch; each worker loads the zones itself and answers DNS. Over a pipe per
worker the primary sends the typed messages below (:data:`ToWorker`) and each
worker answers with :data:`FromWorker`: ``Ready`` once it listens, then
``Stats`` every second (its query counters, for /metrics). A worker starts
with the primary's current health view, so it never answers from an older
one; a worker that dies is started again; a worker whose primary dies sees
the pipe close and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any, NamedTuple

from gslb.answer.state import Vantages
from gslb.health.process import add_pipe_reader
from gslb.health.view import HealthView, MemberKey, Resolved
from gslb.logs import current as current_logging
from gslb.logs import setup as setup_logging
from gslb.server.metrics import signer_counts
from gslb.server.options import ServeOptions
from gslb.server.runtime import Answerer, Server, run_loop

log = logging.getLogger("gslb")

STATS_EVERY = 1.0


# -- the pipe: primary -> worker
class Health(NamedTuple):
    view: HealthView  # with the primary's overrides applied


class Loads(NamedTuple):
    loads: Mapping[MemberKey, float]


class Aliases(NamedTuple):
    view: Mapping[bytes, Resolved]  # alias names' addresses, as the primary resolved them


class Orders(NamedTuple):
    orders: Mapping[tuple[bytes, str], tuple[MemberKey, ...]]  # select: fastest, from the primary
    vantages: Vantages = ()  # fastest_from_nearest_node: the nodes whose orders they are


class Ramps(NamedTuple):
    ramps: Mapping[MemberKey, float]  # slow start: members ramping since (Unix time)


class Reload(NamedTuple):
    pass


class Stop(NamedTuple):
    pass


ToWorker = Health | Loads | Aliases | Ramps | Orders | Reload | Stop


# -- the pipe: worker -> primary
class Ready(NamedTuple):
    pid: int


class Stats(NamedTuple):
    counters: dict[str, Any]  # QueryStats.snapshot() and tcp_open


FromWorker = Ready | Stats


class WorkerPool:
    """The primary's side: spawns, feeds, watches and stops the workers (``runtime.Workers``)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.server: Server | None = None
        self.procs: dict[int, multiprocessing.process.BaseProcess] = {}
        self.conns: dict[int, Connection] = {}
        self.pids: dict[int, int] = {}
        self.stats: dict[int, dict[str, Any]] = {}
        self.ready: dict[int, asyncio.Event] = {}
        self.restarts = 0
        self._stopping = False

    async def start(self, server: Server) -> None:
        self.server = server
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
        server = self.server
        assert server is not None
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        level, fmt = current_logging()
        proc = ctx.Process(
            target=worker_main,
            # the current health goes with the start: a worker never answers from an older view
            args=(
                child,
                i,
                server.opts,
                tuple(server.bound),
                level,
                fmt,
                server.effective_health(),
                server.cookie_secrets,
            ),
            name=f"gslb-worker-{i}",
            daemon=True,
        )
        proc.start()
        child.close()
        self.procs[i], self.conns[i] = proc, parent
        self.ready[i] = asyncio.Event()
        add_pipe_reader(asyncio.get_running_loop(), parent, lambda: self._readable(i))
        if server.state.loads:  # what the worker must know that it does not read from disk
            self._send(i, Loads(dict(server.state.loads)))
        if server.alias_view:
            self._send(i, Aliases(dict(server.alias_view)))
        if server.state.orders:
            self._send(i, Orders(dict(server.state.orders), server.state.vantages))
        if server.state.ramps:
            self._send(i, Ramps(dict(server.state.ramps)))

    def _readable(self, i: int) -> None:
        conn = self.conns.get(i)
        if conn is None:
            return
        try:
            while conn.poll():
                msg: FromWorker = conn.recv()
                if isinstance(msg, Stats):
                    self.stats[i] = msg.counters
                elif isinstance(msg, Ready):
                    self.pids[i] = msg.pid
                    self.ready[i].set()
        except (EOFError, OSError):
            self._lost(i)

    def _lost(self, i: int) -> None:
        conn = self.conns.pop(i, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(conn.fileno())
            conn.close()
        if self._stopping or self.server is None or self.server.stopping:
            return
        proc = self.procs.get(i)
        code = None
        if proc is not None:
            proc.join(1)
            code = proc.exitcode
        self.restarts += 1
        log.error("worker %d (pid %s) exited with code %s; starting it again", i, self.pids.get(i), code)
        self._spawn(i)

    def _send(self, i: int, msg: ToWorker) -> None:
        conn = self.conns.get(i)
        if conn is None:
            return
        try:
            conn.send(msg)
        except (OSError, ValueError) as e:
            log.error("cannot reach worker %d: %s", i, e)

    def _broadcast(self, msg: ToWorker) -> None:
        for i in list(self.conns):
            self._send(i, msg)

    # -- runtime.Workers ------------------------------------------------------------
    def health(self, view: HealthView) -> None:
        self._broadcast(Health(view))

    def loads(self, loads: Mapping[MemberKey, float]) -> None:
        self._broadcast(Loads(loads))

    def aliases(self, view: Mapping[bytes, Resolved]) -> None:
        self._broadcast(Aliases(view))

    def ramps(self, ramps: Mapping[MemberKey, float]) -> None:
        self._broadcast(Ramps(ramps))

    def orders(
        self, orders: Mapping[tuple[bytes, str], tuple[MemberKey, ...]], vantages: Vantages = ()
    ) -> None:
        self._broadcast(Orders(orders, vantages))

    def reload(self) -> None:
        self._broadcast(Reload())

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
        self._broadcast(Stop())
        deadline = time.monotonic() + 5
        for p in self.procs.values():
            while p.is_alive() and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            if p.is_alive():
                p.terminate()
                p.join(2)
        for i in list(self.conns):
            self._lost(i)


class Worker(Answerer):
    """A worker process: the zones and the sockets (shared by port); health from the pipe."""

    def __init__(
        self,
        opts: ServeOptions,
        bound: tuple[tuple[str, int], ...],
        health: HealthView,
        index: int,
        cookie_secrets: tuple[bytes, ...],
    ) -> None:
        super().__init__(opts, listens=bound, announce=False, health=health, cookie_secrets=cookie_secrets)
        self.index = index

    async def run(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop)

        def send(msg: FromWorker) -> None:
            try:
                conn.send(msg)
            except (OSError, ValueError):
                self.stop()  # the primary is gone

        def readable() -> None:
            try:
                while conn.poll():
                    msg: ToWorker = conn.recv()
                    if isinstance(msg, Health):
                        self.health = msg.view
                        self.state = self.state.with_health(msg.view)
                    elif isinstance(msg, Loads):
                        self.state = self.state.with_loads(msg.loads)
                    elif isinstance(msg, Aliases):
                        self.alias_view = dict(msg.view)
                        self.state = self.state.with_aliases(msg.view)
                    elif isinstance(msg, Ramps):  # the primary steps them twice a second
                        self.state = self.state.with_ramps(msg.ramps, time.time())
                    elif isinstance(msg, Orders):
                        moved = msg.vantages != self.state.vantages
                        self.state = self.state.with_orders(msg.orders, vantages=msg.vantages)
                        if moved:
                            self.compile_geo_soon()
                    elif isinstance(msg, Reload):
                        self.reload_soon()
                    elif isinstance(msg, Stop):
                        self.stop()
            except (EOFError, OSError):
                log.info("worker %d: the primary closed the pipe; exiting", self.index)
                self.stop()

        await self.start()
        add_pipe_reader(loop, conn, readable)
        send(Ready(os.getpid()))
        try:
            while not self.stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), STATS_EVERY)
                snap = {**self.stats.snapshot(), "tcp_open": self.limits.open}
                send(Stats({**snap, "signing": signer_counts(self.state)}))
                if self.geo is not None:
                    self.geo.maybe_reload()
        finally:
            with contextlib.suppress(Exception):
                loop.remove_reader(conn.fileno())
            await self.close()
            conn.close()


def worker_main(
    conn: Connection,
    index: int,
    opts: ServeOptions,
    bound: tuple[tuple[str, int], ...],
    level: int,
    fmt: str,
    health: HealthView,
    cookie_secrets: tuple[bytes, ...],
) -> None:
    """A worker process's entry point (spawned by :class:`WorkerPool`)."""
    setup_logging(level, fmt)
    # Ctrl-C and SIGHUP reach the whole process group: the primary decides what happens
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    worker = Worker(opts, bound, health, index, cookie_secrets)
    worker.load_initial()
    run_loop(worker.run(conn))
