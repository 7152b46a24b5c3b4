"""The prober in its own process, at a lower CPU priority than DNS answering.

Probing thousands of targets costs CPU; in the DNS server's event loop it would
delay answers (measured: at 5,000 probes/s in-loop, a 5,000 qps DNS load got
only 2,700 qps answered at 27 ms average latency). So the :class:`Prober` runs
in a child process (``nice`` +10 by default): the kernel gives the DNS
process the CPU first, and if CPU runs short, probes start late (visible as
scheduling lag) rather than answers.

Parent and child talk over a pipe, in the typed messages below (mypy checks
both ends): ``ToProber`` (zones to probe, questions, stop) and ``FromProber``
(health views with the target states that changed, heartbeats every 0.5 s,
"first round complete", load readings, replies to questions).

The parent serves the persisted state from its first query (it reads
health.json itself) until the child's first snapshot arrives. It keeps the
last view and the last target states it was told; a child that dies is
restarted with those states as its starting point (they win over the state
file, which the dead child may not have rewritten), so the answers never go
back to an older view. A child that stops beating is reported as stalled.
The API's questions (stats, status) are answered by the child within
``ASK_TIMEOUT``; otherwise, or while it is stalled or dead, from the last
answer it gave, marked as such.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Literal, NamedTuple

from gslb.cluster.votes import Obs
from gslb.health.prober import Prober, load_state, targets_of
from gslb.health.view import HealthView, MemberKey, TargetStates, down_from_states
from gslb.logs import current as current_logging
from gslb.logs import setup as setup_logging
from gslb.zones.model import Zone

log = logging.getLogger("gslb.health")

BEAT = 0.5


# -- the pipe: server -> prober
class Zones(NamedTuple):
    zones: list[Zone]  # probe exactly these zones' targets (checks and pools only)
    aliases: dict[bytes, tuple[str, ...]]  # alias members: the addresses their names have now


class Ask(NamedTuple):
    kind: Literal["stats", "status"]
    n: int  # the reply carries it back
    samples: bool = False  # stats: also recent lags and durations


class StopProber(NamedTuple):
    pass  # persist state and exit


ToProber = Zones | Ask | StopProber


# -- the pipe: prober -> server
class Health(NamedTuple):
    view: HealthView
    states: TargetStates  # target states that changed since the last Health
    obs: dict[MemberKey, Obs | None]  # this node's observations that changed (cluster votes)


class Beat(NamedTuple):
    at: float  # the child's event loop is alive


class Round(NamedTuple):
    pass  # every target has a first result


class Loads(NamedTuple):
    loads: dict[MemberKey, float]


class Rtts(NamedTuple):
    rtts: dict[MemberKey, float]  # smoothed round trips of passing probes (s)


class Reply(NamedTuple):
    n: int
    doc: dict[str, Any]


FromProber = Health | Beat | Round | Loads | Rtts | Reply
ASK_TIMEOUT = 0.5  # the API waits this long for the child, then answers from the last reply


class ProberProcess:
    def __init__(
        self,
        publish: Callable[[HealthView], None],
        state_dir: Path | None,
        concurrency: int = 512,
        stall_after: float = 10.0,
        nice: int = 10,
        publish_loads: Callable[[dict[MemberKey, float]], None] | None = None,
        publish_rtts: Callable[[dict[MemberKey, float]], None] | None = None,
        on_stall: Callable[[bool, float], None] | None = None,
        sources: tuple[str, ...] = (),
    ) -> None:
        self.publish = publish
        self.sources = sources  # probe source addresses (--probe-source)
        self.publish_loads = publish_loads
        self.publish_rtts = publish_rtts
        self.on_stall = on_stall  # (stalled, seconds without progress): for alerts
        self.state_dir = state_dir
        self.concurrency = concurrency
        self.stall_after = stall_after
        self.nice = nice
        # the last state of every target that the child reported (at first: the state file)
        self.states: TargetStates = load_state(state_dir)
        # this node's observation of each member (what it votes in a cluster): from the
        # persisted states until the child reports, then the child's
        self.obs: dict[MemberKey, Obs] = {}
        self._obs_changed: set[MemberKey] | None = None  # since the last take (None: all)
        self.zones: list[Zone] = []
        self.aliases: dict[bytes, tuple[str, ...]] = {}
        self.targets = 0
        self.view = HealthView()
        self.child_view_seen = False
        self.proc: multiprocessing.process.BaseProcess | None = None
        self.conn: Connection | None = None
        self.last_beat = time.monotonic()
        self.stalled = False
        self.restarts = 0
        self._stopping = False
        self._watch: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.first_round = False  # every target has a result (for /readyz)
        self._ids = itertools.count(1)
        self._last: dict[str, tuple[float, dict[str, Any]]] = {}  # kind -> (when, last reply)

    # -- the runtime's side ------------------------------------------------------
    def update(
        self, zones: Iterable[Zone] | None = None, aliases: dict[bytes, tuple[str, ...]] | None = None
    ) -> None:
        """Probe these zones' targets (None: the same zones), alias members at the
        addresses in ``aliases`` (None: the same addresses)."""
        # the prober needs the checks and pools only: a zone's records would make every
        # update a pickle of the whole zone (1.5 s of the event loop for 100,000 records)
        if zones is not None:
            self.zones = [dataclasses.replace(z, rrsets=(), balanced=()) for z in zones]
        if aliases is not None:
            self.aliases = aliases
        targets = targets_of(self.zones, self.aliases)
        self.targets = len(targets)
        if not self.child_view_seen:
            # until the child reports, serve what was persisted (down stays down)
            down = down_from_states(((w.target.ident, w.members) for w in targets.values()), self.states)
            self.obs = {
                k: Obs(bool(saved["up"]), "persisted state", float(saved["since"]))
                for w in targets.values()
                if (saved := self.states.get(w.target.ident)) is not None
                for k in w.members
            }
            self._obs_changed = None
            persisted = HealthView(down, 0)
            if persisted != self.view:
                self._set(persisted)
        self._send(Zones(self.zones, self.aliases))

    async def start(self, watchdog_after: float | None = None) -> None:
        if watchdog_after is not None:
            self.stall_after = watchdog_after
        self._spawn()
        self._watch = asyncio.get_running_loop().create_task(self._watchdog())

    async def stop(self) -> None:
        self._stopping = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        self._send(StopProber())
        proc = self.proc
        if proc is not None:
            for _ in range(100):
                if not proc.is_alive():
                    break
                await asyncio.sleep(0.05)
            if proc.is_alive():
                proc.terminate()
                proc.join(2)
        self._close_conn()

    async def stats(self, samples: bool = False) -> dict[str, Any]:
        """Counters of the prober; with ``samples``, also its recent lags and durations."""
        return await self._ask("stats", samples)

    async def status(self) -> dict[str, Any]:
        """Per target: state, since, last result, last error, load."""
        return await self._ask("status")

    async def cached(self, kind: Literal["stats", "status"]) -> tuple[dict[str, Any], float | None]:
        """The child's answer to ``kind`` ("stats" or "status"), promptly: a fresh one
        when the child answers within ASK_TIMEOUT, else the last one it gave. Returns
        the answer and its age in seconds (None: fresh; an empty answer: never got one)."""
        if not self.stalled and self.conn is not None:
            with contextlib.suppress(TimeoutError, OSError):
                return await self._ask(kind, timeout=ASK_TIMEOUT), None
        when, doc = self._last.get(kind, (time.monotonic(), {}))
        return doc, time.monotonic() - when

    async def _ask(
        self, kind: Literal["stats", "status"], samples: bool = False, timeout: float = 5.0
    ) -> dict[str, Any]:
        if self.conn is None:
            raise OSError("the health prober process is not running")
        n = next(self._ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[n] = fut
        self._send(Ask(kind, n, samples))
        try:
            got = await asyncio.wait_for(fut, timeout)
        finally:
            self._pending.pop(n, None)
        self._last[kind] = (time.monotonic(), got)
        return got

    def take_obs_changed(self) -> set[MemberKey] | None:
        """Members whose observation changed since the last call (None: any may have)."""
        changed, self._obs_changed = self._obs_changed, set()
        return changed

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    # -- plumbing ------------------------------------------------------------------
    def _set(self, view: HealthView) -> None:
        self.view = view
        self.publish(view)

    def _spawn(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        level, fmt = current_logging()
        proc = ctx.Process(
            target=child_main,
            # the last states the server was told: the child starts from them, not from
            # an older state file (or from nothing, without a state directory)
            args=(
                child,
                self.state_dir,
                self.concurrency,
                self.stall_after,
                self.nice,
                level,
                fmt,
                dict(self.states),
                self.sources,
            ),
            name="gslb-prober",
            daemon=True,
        )
        proc.start()
        child.close()
        self.proc, self.conn = proc, parent
        self.last_beat = time.monotonic()
        add_pipe_reader(asyncio.get_running_loop(), parent, self._readable)
        log.info("health prober running as pid %d (nice +%d)", proc.pid, self.nice)
        self._send(Zones(self.zones, self.aliases))

    def _close_conn(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.conn.fileno())
            self.conn.close()
            self.conn = None

    def _send(self, msg: ToProber) -> None:
        if self.conn is None:
            return
        try:
            self.conn.send(msg)
        except (OSError, ValueError) as e:
            log.error("cannot reach the health prober process: %s", e)

    def _readable(self) -> None:
        conn = self.conn
        if conn is None:
            return
        try:
            while conn.poll():
                msg = conn.recv()
                self._handle(msg)
        except (EOFError, OSError):
            self._close_conn()
            if not self._stopping:
                self._died()

    def _handle(self, msg: FromProber) -> None:
        self.last_beat = time.monotonic()
        if isinstance(msg, Health):
            if not self.child_view_seen:
                self.obs = {}  # the child reports every member it knows in its first message
                self._obs_changed = None
            self.child_view_seen = True
            self.states.update(msg.states)
            for k, o in msg.obs.items():
                if o is None:
                    self.obs.pop(k, None)
                else:
                    self.obs[k] = o
            if self._obs_changed is not None:
                self._obs_changed.update(msg.obs)
            self._set(msg.view)
        elif isinstance(msg, Loads):
            if self.publish_loads is not None:
                self.publish_loads(msg.loads)
        elif isinstance(msg, Rtts):
            if self.publish_rtts is not None:
                self.publish_rtts(msg.rtts)
        elif isinstance(msg, Round):
            if not self.first_round:
                log.info("health: first probe round complete")
            self.first_round = True
        elif isinstance(msg, Reply):
            fut = self._pending.pop(msg.n, None)
            if fut is not None and not fut.done():
                fut.set_result(msg.doc)

    def _died(self) -> None:
        code = None
        if self.proc is not None:
            self.proc.join(1)  # reap it first, so the exit code is known
            code = self.proc.exitcode
        self.restarts += 1
        log.error(
            "health prober process died (exit code %s); restarting it. Until it reports, "
            "answers use the last health state", code,
        )  # fmt: skip
        self._spawn()

    async def _watchdog(self) -> None:
        while True:
            await asyncio.sleep(BEAT)
            quiet = time.monotonic() - self.last_beat
            if quiet > self.stall_after and not self.stalled:
                self.stalled = True
                log.error(
                    "health prober stalled: no progress for %.1fs; DNS answers keep the health state "
                    "of %.1fs ago until it recovers", quiet, quiet,
                )  # fmt: skip
                if self.on_stall is not None:
                    self.on_stall(True, quiet)
            elif quiet <= self.stall_after and self.stalled:
                self.stalled = False
                log.warning("health prober making progress again")
                if self.on_stall is not None:
                    self.on_stall(False, quiet)
            if (
                self.proc is not None
                and not self.proc.is_alive()
                and self.conn is not None
                and not self._stopping
            ):
                self._close_conn()
                self._died()


def add_pipe_reader(loop: asyncio.AbstractEventLoop, conn: Connection, callback: Callable[[], None]) -> None:
    """Watch ``conn`` for messages. uvloop makes the fd non-blocking when it starts
    watching it, and ``Connection.recv`` of a message larger than the pipe buffer
    then fails half-way; readability only says a message has begun, so the rest
    is read blocking (the other side is writing it)."""
    loop.add_reader(conn.fileno(), callback)
    os.set_blocking(conn.fileno(), True)


# ------------------------------------------------------------------------ the child


def child_main(
    conn: Connection,
    state_dir: Path | None,
    concurrency: int,
    stall_after: float,
    nice: int,
    level: int,
    fmt: str = "text",
    seed: TargetStates | None = None,
    sources: tuple[str, ...] = (),
) -> None:
    setup_logging(level, fmt)
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
    try:
        import uvloop

        uvloop.run(_child(conn, state_dir, concurrency, stall_after, seed, sources))
    except ImportError:  # pragma: no cover
        asyncio.run(_child(conn, state_dir, concurrency, stall_after, seed, sources))


async def _child(
    conn: Connection,
    state_dir: Path | None,
    concurrency: int,
    stall_after: float,
    seed: TargetStates | None,
    sources: tuple[str, ...] = (),
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def send(msg: FromProber) -> None:
        try:
            conn.send(msg)
        except (OSError, ValueError) as e:
            log.error("health prober: cannot send to the server (%s); exiting", e)
            stop.set()  # the parent is gone

    prober = Prober(
        lambda view: send(Health(view, prober.state_delta(), prober.obs_delta())),
        state_dir,
        concurrency,
        publish_loads=lambda loads: send(Loads(loads)),
        publish_rtts=lambda rtts: send(Rtts(rtts)),
        seed=seed,
        sources=sources,
    )

    def readable() -> None:
        try:
            while conn.poll():
                msg: ToProber = conn.recv()
                if isinstance(msg, Zones):
                    prober.update(msg.zones, msg.aliases)
                elif isinstance(msg, Ask) and msg.kind == "stats":
                    st = prober.stats
                    send(Reply(msg.n, {
                        **prober.metric_stats(),
                        "lags": list(st.lags) if msg.samples else [],
                        "durations": list(st.durations) if msg.samples else [],
                        "cpu": sum(os.times()[:2]),
                    }))  # fmt: skip
                elif isinstance(msg, Ask):
                    send(Reply(msg.n, {
                        "targets": prober.target_status(),
                        "transitions": [asdict(t) for t in list(prober.transitions)[-50:]],
                    }))  # fmt: skip
                elif isinstance(msg, StopProber):
                    stop.set()
        except (EOFError, OSError) as e:
            log.info("health prober: the server closed the pipe (%r); exiting", e)
            stop.set()

    add_pipe_reader(loop, conn, readable)
    await prober.start(watchdog_after=stall_after)

    async def beat() -> None:
        round_sent = False
        while True:
            send(Beat(time.time()))
            if not round_sent and all(s.state.last is not None for s in prober.slots.values()):
                send(Round())
                round_sent = True
            await asyncio.sleep(BEAT)

    beats = loop.create_task(beat())
    await stop.wait()
    beats.cancel()
    loop.remove_reader(conn.fileno())
    await prober.stop()
    conn.close()
