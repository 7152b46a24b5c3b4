"""The async health prober: schedules checks, owns rise/fall, publishes snapshots.

- Targets are (check, address, port): members of several pools or zones that
  share a check and an address share one probe.
- One task per target, so at most one probe is ever in flight for it; start
  times are spread with jitter; a semaphore bounds how many probes run at
  once; every probe runs under its check's timeout.
- Results go through the pure state machine (``gslb.health.state``); each
  transition is logged once with its reason and kept in memory, and a new
  :class:`HealthView` is published (the runtime swaps it into the serving
  state at once).
- State is persisted to ``state_dir/health.json`` (at once when a target goes
  DOWN) and read back at start-up: a DOWN target stays DOWN across a restart
  until it passes ``rise`` checks. The server hands a restarted prober the
  last states it was told (``seed``), which win over the file. A new target
  starts DOWN if any member it decides was last seen down (a check edited so
  that it asks something else); targets never seen before start UP
  (fail-open) and are probed at once.
- Targets are keyed by what they ask (``Target.key``), not by their schedule:
  a reload that changes only ``interval``, ``timeout``, ``rise``, ``fall`` or
  the check's name keeps the state and the rise/fall counters.
- A watchdog thread reports a target that has had no result for too long.
  Whether the prober as a whole makes progress is decided by the server
  (``gslb.health.process``), which watches this process's heartbeats.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gslb.cluster.votes import Obs
from gslb.dns import names
from gslb.health.checks import CheckFn, Target, TargetKey, registry
from gslb.health.checks.http import HttpClient
from gslb.health.state import Result, TargetState, Transition, observe
from gslb.health.view import HealthView, MemberKey, TargetStates, alias_key, check_key, member_key
from gslb.zones.model import CHECK_SCHEDULE_KEYS, Zone

# alias name -> the addresses it resolves to now (the server's resolver, gslb.server.aliases)
NO_ALIASES: Mapping[bytes, Sequence[str]] = {}

log = logging.getLogger("gslb.health")

STATE_FILE = "health.json"
LOAD_PERIOD = 0.25  # seconds between load publications (when they changed)
RTT_ALPHA = 0.3  # weight of the newest probe in a target's smoothed round trip
RTT_PERIOD = 1.0  # seconds between round-trip publications (when they changed)
MAX_TRANSITIONS = 1000


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    target: str
    members: tuple[str, ...]
    up: bool
    at: float
    reason: str
    count: int


@dataclass(slots=True)
class _Slot:
    target: Target
    members: set[MemberKey]
    labels: list[str]
    state: TargetState
    task: asyncio.Task[None] | None = None
    # monotonic time of the last finished probe (at first: when the target was added, so a
    # target whose first probe is late is reported as late by that much, not since boot)
    last_done: float = field(default_factory=time.monotonic)
    stale_reported: bool = False
    load: float | None = None  # last reported load and when (monotonic)
    load_at: float = 0.0
    rtt: float | None = None  # smoothed duration of passing probes (s), for select: fastest
    known: bool = False  # the state comes from a persisted or earlier state, not fail-open


DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, float("inf"))


def reason_class(reason: str) -> str:
    """A failure reason folded into a small, fixed set (metric label values)."""
    for prefix, cls in (("HTTP", "http_status"), ("timeout", "timeout"), ("connection refused", "refused"),
                        ("TLS", "tls"), ("connect failed", "connect"), ("server closed", "closed"),
                        ("bad HTTP", "bad_response"), ("reply mismatch", "reply"),
                        ("connection error", "connection")):  # fmt: skip
        if reason.startswith(prefix):
            return "body" if cls == "http_status" and "body" in reason else cls
    return "other"


@dataclass(slots=True)
class ProberStats:
    probes: int = 0
    failures: int = 0
    failures_by_reason: collections.Counter[str] = field(default_factory=collections.Counter)
    transitions_up: int = 0
    transitions_down: int = 0
    duration_counts: list[int] = field(default_factory=lambda: [0] * len(DURATION_BUCKETS))
    duration_sum: float = 0.0
    state_write_errors: int = 0
    lags: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=100_000))
    durations: collections.deque[float] = field(default_factory=lambda: collections.deque(maxlen=100_000))


@dataclass(slots=True)
class Wanted:
    """One probe target of the zones and the members it decides."""

    target: Target
    members: set[MemberKey]
    labels: list[str]


def targets_of(
    zones: Iterable[Zone], aliases: Mapping[bytes, Sequence[str]] = NO_ALIASES
) -> dict[TargetKey, Wanted]:
    """Every probe target of the zones, keyed by what it asks, with the members it
    decides. Members whose checks ask the same thing share one probe (the first
    check met gives the schedule). An alias member is probed at each address its name
    resolves to (``aliases``), each deciding its own key (``alias_key``), with HTTP Host
    and TLS SNI the alias name."""
    out: dict[TargetKey, Wanted] = {}
    for z in zones:
        checks = {c.name: c for c in z.checks}
        for pool in z.pools:
            if pool.checks:  # calculated: each child check probes each member on its own
                for m in pool.members:
                    host = names.to_text(m.target).rstrip(".") if m.target is not None else None
                    addr = str(m.check_address or m.address or host or "")
                    for cname in pool.checks:
                        c = checks[cname]
                        t = Target(c, addr, m.check_port or c.port, host)
                        w = out.get(t.key)
                        if w is None:
                            w = out[t.key] = Wanted(t, set(), [])
                        w.members.add(check_key(z, pool.name, m, cname))
                        w.labels.append(f"{names.to_text(z.origin)}/{pool.name}/{m.name} check:{cname}")
                continue
            if pool.check is None:
                continue
            check = checks[pool.check]
            for m in pool.members:
                if m.alias is not None:
                    alias = names.to_text(m.alias).rstrip(".")
                    for a in aliases.get(m.alias, ()):
                        t = Target(check, a, m.check_port or check.port, alias)
                        w = out.get(t.key)
                        if w is None:
                            w = out[t.key] = Wanted(t, set(), [])
                        w.members.add(alias_key(z, pool.name, m, a))
                        w.labels.append(f"{names.to_text(z.origin)}/{pool.name}/{m.name} {a}")
                    continue
                host = names.to_text(m.target).rstrip(".") if m.target is not None else None
                if m.check_address is not None:
                    addr = str(m.check_address)
                else:  # a name member: its host name, resolved when probed
                    addr = str(m.address) if m.address is not None else (host or "")
                t = Target(check, addr, m.check_port or check.port, host)
                w = out.get(t.key)
                if w is None:
                    w = out[t.key] = Wanted(t, set(), [])
                w.members.add(member_key(z, pool.name, m))
                w.labels.append(f"{names.to_text(z.origin)}/{pool.name}/{m.name}")
    return out


class Prober:
    def __init__(
        self,
        publish: Callable[[HealthView], None],
        state_dir: Path | None = None,
        max_concurrency: int = 512,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        publish_loads: Callable[[dict[MemberKey, float]], None] | None = None,
        publish_rtts: Callable[[dict[MemberKey, float]], None] | None = None,
        seed: TargetStates | None = None,
        sources: tuple[str, ...] = (),
    ) -> None:
        self.publish = publish
        self.publish_loads = publish_loads
        self._last_loads: dict[MemberKey, float] = {}
        self.publish_rtts = publish_rtts
        self._last_rtts: dict[MemberKey, float] = {}
        self.state_dir = state_dir
        self.sem = asyncio.Semaphore(max_concurrency)
        self.rng = rng or random.Random()
        self.clock = clock
        self.client = HttpClient(sources)
        self.checks: dict[str, CheckFn] = registry()
        self.slots: dict[TargetKey, _Slot] = {}
        self.transitions: collections.deque[TransitionRecord] = collections.deque(maxlen=MAX_TRANSITIONS)
        self.stats = ProberStats()
        self.version = 0
        # the last known state of every target ident: the file, then the server's seed (newer)
        self.persisted: TargetStates = self._load()
        # a seed newer than the file (the last prober died before writing): write it soon
        self._save_seed = bool(seed) and any(self.persisted.get(k) != v for k, v in (seed or {}).items())
        if seed:
            self.persisted.update(seed)
        self._reported: TargetStates = {}  # what state_delta() has handed out
        self._obs_reported: dict[MemberKey, tuple[bool, float]] = {}  # what obs_delta() has
        self._save_pending = False
        self._publish_pending = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._watchdog: threading.Thread | None = None
        self._watch_stop = threading.Event()
        self._running = False

    # -- configuration -------------------------------------------------------
    def update(self, zones: Iterable[Zone], aliases: Mapping[bytes, Sequence[str]] = NO_ALIASES) -> None:
        """Probe exactly the targets of ``zones`` (alias members at the addresses in
        ``aliases``): keep the state (and counters) of targets that remain, even when
        their schedule changed; start new ones; stop the ones that went away. No member
        that was last seen down comes back up through an update: a new target deciding
        such a member starts DOWN."""
        wanted = targets_of(zones, aliases)
        now = self.clock()
        self.persisted = self.snapshot()  # the latest state of every target, removed ones too
        down_now = self.view().down
        for key in list(self.slots):
            if key not in wanted:
                slot = self.slots.pop(key)
                if slot.task is not None:
                    slot.task.cancel()
                log.info("stopped probing %s (no member uses it any more)", slot.target.ident)
        for key, w in wanted.items():
            t = w.target
            existing = self.slots.get(key)
            if existing is not None:
                existing.members, existing.labels = w.members, w.labels
                if existing.target != t:
                    self._reschedule(existing, t)
                continue
            saved = self.persisted.get(t.ident)
            was_down = w.members & down_now
            if was_down:
                since = float(saved["since"]) if saved is not None and not saved["up"] else now
                st = TargetState.initial(False, since)
                log.info(
                    "%s starts DOWN: its member(s) %s were down under their previous check",
                    t.ident, ", ".join("/".join(k) for k in sorted(was_down)),
                )  # fmt: skip
            elif saved is not None:
                st = TargetState.initial(bool(saved["up"]), float(saved["since"]))
                if not st.up:
                    log.info("%s starts DOWN (persisted state since %s)", t.ident, _when(st.since))
            else:
                st = TargetState.initial(True, now)
            slot = _Slot(t, w.members, w.labels, st, known=bool(was_down) or saved is not None)
            self.slots[key] = slot
            if self._running:
                self._start(slot, first=True)
        self._publish()
        if self._save_seed:
            self._save_seed = False
            self.save()

    def _reschedule(self, slot: _Slot, t: Target) -> None:
        """Same question, new schedule: keep the state and counters, probe on the new clock."""
        old = slot.target.check
        c = t.check
        changes = [
            f"{k} {getattr(old, k)!r} -> {getattr(c, k)!r}"
            for k in CHECK_SCHEDULE_KEYS
            if getattr(old, k) != getattr(c, k)
        ]
        slot.target = t
        log.info(
            "%s: check changed (%s); state %s and rise/fall counters kept",
            t.ident, ", ".join(changes), "UP" if slot.state.up else "DOWN",
        )  # fmt: skip
        if self._running and slot.task is not None and old.interval != c.interval:
            slot.task.cancel()
            self._start(slot, first=False)

    # -- lifecycle -----------------------------------------------------------
    async def start(self, watchdog_after: float | None = None) -> None:
        self._running = True
        for slot in self.slots.values():
            if slot.task is None:
                self._start(slot, first=True)
        loop = asyncio.get_running_loop()
        if self.publish_loads is not None:
            self._tasks.add(loop.create_task(self._loads()))
        if self.publish_rtts is not None:
            self._tasks.add(loop.create_task(self._rtts()))
        if watchdog_after is not None:
            self._watch_stop.clear()
            self._watchdog = threading.Thread(
                target=self._watch, args=(watchdog_after,), name="gslb-health-watchdog", daemon=True
            )
            self._watchdog.start()

    async def stop(self) -> None:
        self._running = False
        self._watch_stop.set()
        tasks = [s.task for s in self.slots.values() if s.task is not None] + list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for slot in self.slots.values():
            slot.task = None
        await self.client.close()
        self.save()

    def _start(self, slot: _Slot, first: bool) -> None:
        loop = asyncio.get_running_loop()
        slot.task = loop.create_task(self._run(slot, first), name=f"probe {slot.target.ident}")

    # -- the probe loop --------------------------------------------------------
    async def _run(self, slot: _Slot, first: bool = True) -> None:
        key = slot.target.key
        loop = asyncio.get_running_loop()
        interval = slot.target.check.interval
        if first:
            # spread the first round over at most one interval (and at most 1 s)
            due = loop.time() + self.rng.uniform(0, min(interval, 1.0))
            slot.last_done = time.monotonic()
        else:  # a new schedule: the next probe one new interval after the last one
            due = loop.time() + max(0.0, interval - (time.monotonic() - slot.last_done))
        while True:
            t = slot.target
            interval = t.check.interval
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            started = loop.time()
            self.stats.lags.append(started - due)
            try:
                result = await self._probe(t)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # a check bug is a failed probe, not a dead task
                log.exception("check %s raised", t.ident)
                result = Result(False, f"internal error: {type(e).__name__}", 0.0, self.clock())
            slot.last_done = time.monotonic()
            if slot is not self.slots.get(key):
                return  # removed by a reload while probing
            self._observe(slot, result)
            due += interval
            now = loop.time()
            if due < now:  # fell behind (overload): skip the missed rounds, keep the phase
                due += ((now - due) // interval + 1) * interval

    async def _probe(self, t: Target) -> Result:
        fn = self.checks[t.check.type]
        async with self.sem:
            t0 = time.monotonic()
            try:
                async with asyncio.timeout(t.check.timeout):
                    ok, reason, load = await fn(self.client, t)
            except TimeoutError:
                ok, reason, load = False, f"timeout after {t.check.timeout:g}s", None
            took = time.monotonic() - t0
        st = self.stats
        st.probes += 1
        st.durations.append(took)
        st.duration_sum += took
        for i, le in enumerate(DURATION_BUCKETS):
            if took <= le:
                st.duration_counts[i] += 1
                break
        if not ok:
            st.failures += 1
            st.failures_by_reason[reason_class(reason)] += 1
        return Result(ok, reason, took, self.clock(), load if ok else None)

    def _observe(self, slot: _Slot, result: Result) -> None:
        c = slot.target.check
        if result.load is not None:
            slot.load, slot.load_at = result.load, time.monotonic()
        if result.ok:  # an exponentially weighted average of passing probes' round trips
            slot.rtt = (
                result.duration if slot.rtt is None else slot.rtt + RTT_ALPHA * (result.duration - slot.rtt)
            )
        else:
            slot.rtt = None  # a failing target has no round trip to compare
        first = slot.state.last is None and not slot.known
        slot.state, tr = observe(slot.state, result, c.rise, c.fall)
        if tr is not None:
            self._transition(slot, tr)
        elif first:
            # a first result is news to the cluster (this node's vote on its members)
            # even without a transition; the first round's results go out together
            self._publish_soon()

    def _transition(self, slot: _Slot, tr: Transition) -> None:
        what = "UP" if tr.up else "DOWN"
        if tr.up:
            self.stats.transitions_up += 1
        else:
            self.stats.transitions_down += 1
            # a DOWN must survive a crash right after it: written at once, before it is
            # logged or published (an UP that is lost only keeps a member out until it
            # passes `rise` checks again)
            self.save()
        kind = "successes" if tr.up else "failures"
        log.warning(
            "%s %s: %s (%d consecutive %s); members: %s",
            slot.target.ident, what, tr.reason, tr.count, kind, ", ".join(sorted(slot.labels)),
        )  # fmt: skip
        self.transitions.append(
            TransitionRecord(slot.target.ident, tuple(sorted(slot.labels)), tr.up, tr.at, tr.reason, tr.count)
        )
        self._publish()
        if tr.up:
            self._schedule_save()

    # -- snapshots ---------------------------------------------------------------
    def view(self) -> HealthView:
        down: set[MemberKey] = set()
        for slot in self.slots.values():
            if not slot.state.up:
                down |= slot.members
        return HealthView(frozenset(down), self.version)

    def _publish(self) -> None:
        self.version += 1
        self.publish(self.view())

    def _publish_soon(self) -> None:
        if self._publish_pending:
            return
        self._publish_pending = True

        def go() -> None:
            self._publish_pending = False
            self._publish()

        asyncio.get_running_loop().call_later(0.05, go)

    def state_delta(self) -> TargetStates:
        """Target states that changed since the last call (for the server, which keeps
        them to seed a restarted prober)."""
        out: TargetStates = {}
        for slot in self.slots.values():
            ident, st = slot.target.ident, {"up": slot.state.up, "since": slot.state.since}
            if self._reported.get(ident) != st:
                out[ident] = self._reported[ident] = st
        return out

    def obs_delta(self) -> dict[MemberKey, Obs | None]:
        """This node's observation of each member whose target changed state, or got its
        first result, since the last call (None: no longer observed). A target that was
        never probed and has no earlier state has no observation: it does not vote."""
        out: dict[MemberKey, Obs | None] = {}
        seen: set[MemberKey] = set()
        for slot in self.slots.values():
            st = slot.state
            if st.last is None and not slot.known:
                continue
            mark = (st.up, st.since)
            obs: Obs | None = None
            for k in slot.members:
                seen.add(k)
                if self._obs_reported.get(k) == mark:
                    continue
                if obs is None:
                    shown = st.last if st.up else (st.last_error or st.last)
                    reason = shown.reason if shown is not None else "earlier state"
                    rtt = st.last.duration if st.last is not None else None
                    obs = Obs(st.up, reason, st.since, rtt, slot.load)
                out[k] = obs
                self._obs_reported[k] = mark
        for k in set(self._obs_reported) - seen:
            del self._obs_reported[k]
            out[k] = None
        return out

    # -- persistence -------------------------------------------------------------
    def _load(self) -> TargetStates:
        return load_state(self.state_dir)

    def snapshot(self) -> TargetStates:
        out = dict(self.persisted)  # keep targets not configured right now
        for slot in self.slots.values():
            out[slot.target.ident] = {"up": slot.state.up, "since": slot.state.since}
        return out

    def save(self) -> None:
        self._save_pending = False
        if self.state_dir is None:
            return
        data = {"version": 1, "saved_at": self.clock(), "targets": self.snapshot()}
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.state_dir / (STATE_FILE + ".tmp")
            tmp.write_text(json.dumps(data, indent=0, sort_keys=True))
            os.replace(tmp, self.state_dir / STATE_FILE)
        except OSError as e:
            self.stats.state_write_errors += 1
            log.error("cannot persist health state to %s: %s", self.state_dir, e)

    def _schedule_save(self) -> None:
        if self._save_pending or self.state_dir is None:
            return
        self._save_pending = True
        asyncio.get_running_loop().call_later(0.2, self.save)

    def metric_stats(self) -> dict[str, object]:
        """Counters for /metrics (histogram buckets cumulative, as Prometheus wants)."""
        st = self.stats
        cum, total = [], 0
        for le, n in zip(DURATION_BUCKETS, st.duration_counts, strict=True):
            total += n
            cum.append((le, total))
        return {
            "probes": st.probes,
            "failures": st.failures,
            "failures_by_reason": dict(st.failures_by_reason),
            "transitions_up": st.transitions_up,
            "transitions_down": st.transitions_down,
            "duration_buckets": cum,
            "duration_sum": st.duration_sum,
            "targets": len(self.slots),
            "state_write_errors": st.state_write_errors,
        }

    def target_status(self) -> dict[str, dict[str, object]]:
        """Per target ident: what /v1/status shows."""
        out: dict[str, dict[str, object]] = {}
        for slot in self.slots.values():
            st, t = slot.state, slot.target
            out[t.ident] = {
                "up": st.up,
                "since": st.since,
                "last": None if st.last is None else {"ok": st.last.ok, "reason": st.last.reason,
                                                      "at": st.last.at, "duration": st.last.duration},
                "last_error": None if st.last_error is None else {"reason": st.last_error.reason,
                                                                  "at": st.last_error.at},
                "load": slot.load,
                "check": t.check.name,
                "members": sorted(slot.labels),
            }  # fmt: skip
        return out

    def fresh_loads(self) -> dict[MemberKey, float]:
        """Load readings no older than 3 intervals + timeout, per member."""
        now = time.monotonic()
        out: dict[MemberKey, float] = {}
        for slot in self.slots.values():
            c = slot.target.check
            if slot.load is not None and now - slot.load_at <= 3 * c.interval + c.timeout:
                for k in slot.members:
                    out[k] = slot.load
        return out

    def rtts(self) -> dict[MemberKey, float]:
        """Each probed member's smoothed round trip (s): passing targets only."""
        return {k: slot.rtt for slot in self.slots.values() if slot.rtt is not None for k in slot.members}

    async def _rtts(self) -> None:
        """Publish round trips when they change (every RTT_PERIOD at most)."""
        while True:
            await asyncio.sleep(RTT_PERIOD)
            rtts = self.rtts()
            if rtts != self._last_rtts and self.publish_rtts is not None:
                self._last_rtts = rtts
                self.publish_rtts(rtts)

    async def _loads(self) -> None:
        """Publish load readings when they change (at most every LOAD_PERIOD)."""
        while True:
            await asyncio.sleep(LOAD_PERIOD)
            loads = self.fresh_loads()
            if loads != self._last_loads and self.publish_loads is not None:
                self._last_loads = loads
                self.publish_loads(loads)

    # -- liveness ------------------------------------------------------------------
    def _watch(self, after: float) -> None:
        """Thread: report each target that has had no result for too long (a probe task
        that died, a target starved by overload). Whether the prober as a whole makes
        progress is the server's call (``ProberProcess``, from this process's beats):
        one owner of "stalled"."""
        while not self._watch_stop.wait(min(0.5, after / 4)):
            now = time.monotonic()
            for slot in list(self.slots.values()):
                c = slot.target.check
                limit = 3 * c.interval + c.timeout + after
                late = now - slot.last_done
                if slot.task is not None and late > limit and not slot.stale_reported:
                    slot.stale_reported = True
                    log.error(
                        "no health result for %s for %.1fs (interval %gs)",
                        slot.target.ident,
                        late,
                        c.interval,
                    )
                elif late <= limit:
                    slot.stale_reported = False


def load_state(state_dir: Path | None) -> TargetStates:
    """Persisted target states ({ident: {"up", "since"}}); empty when absent or unreadable."""
    if state_dir is None:
        return {}
    path = state_dir / STATE_FILE
    try:
        data = json.loads(path.read_text())
        targets = data["targets"]
        if not isinstance(targets, dict):
            raise TypeError("'targets' is not a mapping")
        return {str(k): {"up": bool(v["up"]), "since": float(v["since"])} for k, v in targets.items()}
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.error("ignoring unreadable health state %s: %s", path, e)
        return {}


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
