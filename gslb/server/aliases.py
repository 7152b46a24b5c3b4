"""Alias members' names, resolved by gslb itself and kept fresh (docs/routing.md, "Alias
members"): a member written ``alias: lb-1.elb.example.net.`` answers with that name's
current A and AAAA addresses (flattening: also at the apex, where a CNAME cannot stand).

One task per name asks the configured recursive resolvers (``--resolver``; default the
system's, /etc/resolv.conf) with dnspython's asyncio resolver for A and AAAA at once,
and asks again when 80% of the answer's TTL has passed, the TTL held between
``--alias-min-ttl`` and ``--alias-max-ttl``. A refresh that fails (timeout, SERVFAIL,
no resolver reachable) keeps the last addresses and is retried every ``min_ttl``; once
their TTL has run out they are *stale*: still answered, with EDE 3 (Stale Answer), and
counted in ``gslb_alias_stale``; past ``--alias-stale`` more they are *gone*, and the
member is out of the answers as a down member is, until a refresh succeeds. A name
that does not exist (NXDOMAIN) or has no A/AAAA is gone at once: that is an answer,
not a failure.

Each change of what the answers use (addresses, stale, gone) is handed to
``on_change`` with the whole view; the runtime replans the balanced names that use the
name and tells the prober the addresses to probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.nameserver
import dns.resolver

from gslb.dns import names
from gslb.health.view import NOT_RESOLVED, Resolved

log = logging.getLogger("gslb.aliases")

REFRESH_AT = 0.8  # of the TTL: the next refresh, so one failed try still leaves time


@dataclass(frozen=True, slots=True)
class AliasOptions:
    resolvers: tuple[tuple[str, int], ...] = ()  # (address, port); (): the system's
    min_ttl: float = 5.0  # refresh no more often than this (and retry a failure this often)
    max_ttl: float = 300.0  # and at least this often
    stale_for: float = 3600.0  # answer stale addresses this long past their TTL, then drop them
    timeout: float = 2.0  # one resolution's budget, both families
    concurrency: int = 64  # resolutions in flight at once (each holds two UDP sockets)


@dataclass(slots=True)
class _Entry:
    v4: tuple[str, ...] = ()
    v6: tuple[str, ...] = ()
    expires: float = 0.0  # when the addresses' TTL runs out
    failing_since: float | None = None
    error: str = ""
    answered: bool = False  # a resolution has succeeded (addresses or a definite none)
    none_why: str = ""  # the definite answer was: no such name, or no A/AAAA


@dataclass(slots=True)
class AliasStats:
    ok: int = 0
    failed: int = 0
    per_name: dict[str, list[int]] = field(default_factory=dict)  # name -> [ok, failed]


class AliasResolver:
    def __init__(
        self,
        opts: AliasOptions,
        on_change: Callable[[dict[bytes, Resolved]], None],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.opts = opts
        self.on_change = on_change
        self.clock = clock
        r = dns.asyncresolver.Resolver(configure=not opts.resolvers)
        if opts.resolvers:
            r.nameservers = [dns.nameserver.Do53Nameserver(h, p) for h, p in opts.resolvers]
        r.lifetime = opts.timeout
        r.timeout = opts.timeout / 2  # per server: a second one still gets its turn
        self.resolver = r
        self.entries: dict[bytes, _Entry] = {}
        self.view: dict[bytes, Resolved] = {}
        self.stats = AliasStats()
        self._tasks: dict[bytes, asyncio.Task[None]] = {}
        self._wanted: set[bytes] = set()
        self._running = False
        self._sem: asyncio.Semaphore | None = None  # made in the event loop, on first use

    @property
    def where(self) -> str:
        if not self.opts.resolvers:
            return "the system's resolvers"
        return ", ".join(f"{h}:{p}" if p != 53 else h for h, p in self.opts.resolvers)

    # -- the runtime's side --------------------------------------------------------
    def update(self, wanted: Iterable[bytes]) -> None:
        """Resolve exactly these names (from the loaded zones' alias members)."""
        self._wanted = set(wanted)
        gone = [n for n in self.entries if n not in self._wanted]
        for n in gone:
            del self.entries[n]
            self.view.pop(n, None)
            task = self._tasks.pop(n, None)
            if task is not None:
                task.cancel()
        for n in self._wanted:
            if n not in self.entries:
                self.entries[n] = _Entry()
                self.view[n] = NOT_RESOLVED
        if self._running:
            self._start_tasks()
        if gone:
            self.on_change(dict(self.view))

    async def start(self) -> None:
        self._running = True
        self._start_tasks()

    async def first_round(self, budget: float) -> None:
        """Wait (at most ``budget`` seconds) until every name has been asked once, so a
        server starts answering with the aliases' addresses rather than without."""
        deadline = time.monotonic() + budget
        while time.monotonic() < deadline and any(
            not e.answered and e.failing_since is None for e in self.entries.values()
        ):
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._running = False
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def _start_tasks(self) -> None:
        loop = asyncio.get_running_loop()
        for n in self._wanted:
            if n not in self._tasks:
                self._tasks[n] = loop.create_task(self._run(n))

    # -- resolving -------------------------------------------------------------------
    async def _run(self, name: bytes) -> None:
        while True:
            delay = await self.refresh(name)
            await asyncio.sleep(delay)

    async def refresh(self, name: bytes) -> float:
        """Ask once; update the entry and the view; the seconds until the next try."""
        e = self.entries.get(name)
        if e is None:
            return self.opts.max_ttl
        text = names.to_text(name)
        o = self.opts
        if self._sem is None:
            self._sem = asyncio.Semaphore(o.concurrency)
        async with self._sem:
            got = await asyncio.gather(self._ask(text, "A"), self._ask(text, "AAAA"))
        now = self.clock()
        counts = self.stats.per_name.setdefault(text, [0, 0])
        errors = [g for g in got if isinstance(g, str)]
        a4, a6 = got
        if errors or isinstance(a4, str) or isinstance(a6, str):
            self.stats.failed += 1
            counts[1] += 1
            if e.failing_since is None:
                e.failing_since = now
                log.warning(
                    "alias %s: resolving failed (%s); keeping %s", text, errors[0], _addrs(e) or "nothing"
                )
            e.error = errors[0]
            delay = o.min_ttl
        else:
            self.stats.ok += 1
            counts[0] += 1
            (v4, ttl4, nx4), (v6, ttl6, nx6) = a4, a6
            ttl = min([t for t in (ttl4, ttl6) if t is not None], default=o.min_ttl)
            ttl = min(max(ttl, o.min_ttl), o.max_ttl)
            if e.failing_since is not None:
                log.info("alias %s: resolving again: %s", text, ", ".join((*v4, *v6)) or "no addresses")
            elif (v4, v6) != (e.v4, e.v6) and e.answered:
                log.info("alias %s: now %s (was %s)", text, ", ".join((*v4, *v6)) or "nothing", _addrs(e))
            e.v4, e.v6, e.expires, e.failing_since, e.error = v4, v6, now + ttl, None, ""
            e.answered = True
            if nx4 or nx6:
                e.none_why = "no such name (NXDOMAIN)"
            else:
                e.none_why = "" if v4 or v6 else "no A or AAAA records"
            delay = max(o.min_ttl, ttl * REFRESH_AT)
        self._publish(name, e, now)
        return delay

    async def _ask(self, name: str, rdtype: str) -> tuple[tuple[str, ...], float | None, bool] | str:
        """(addresses, TTL, NXDOMAIN) of one type, or why asking failed."""
        try:
            ans = await self.resolver.resolve(name, rdtype, search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return (), None, True
        except dns.resolver.LifetimeTimeout:
            return f"no answer within {self.opts.timeout:g} s from {self.where}"
        except dns.resolver.NoNameservers as e:
            return f"no resolver answered ({_first_line(e)})"
        except (dns.exception.DNSException, OSError) as e:
            return f"{type(e).__name__}: {_first_line(e)}"
        rrset = ans.rrset
        if rrset is None:
            return (), None, False  # NOERROR, no records of this type
        return tuple(sorted(rd.to_text() for rd in rrset)), float(rrset.ttl), False

    def _publish(self, name: bytes, e: _Entry, now: float) -> None:
        o = self.opts
        if not e.answered:
            r = Resolved(why=f"not resolved yet: {e.error}" if e.error else "not resolved yet")
        elif e.none_why:
            r = Resolved(why=e.none_why)
        elif e.failing_since is not None and now >= e.expires + o.stale_for:
            r = Resolved(e.v4, e.v6, True, True, f"stale for more than {o.stale_for:g} s: {e.error}")
        elif e.failing_since is not None and now >= e.expires:
            since = time.strftime("%H:%M:%S", time.gmtime(e.failing_since))
            r = Resolved(e.v4, e.v6, True, False, f"stale: refreshes failing since {since} UTC: {e.error}")
        else:
            r = Resolved(e.v4, e.v6, False, False, "resolved")
        if self.view.get(name) != r:
            was = self.view.get(name)
            self.view[name] = r
            if r.stale and not r.gone and (was is None or not was.stale):
                log.warning("alias %s: answering stale addresses (EDE 3): %s", names.to_text(name), r.why)
            if r.gone and (was is None or not was.gone) and e.answered:
                log.warning("alias %s: out of the answers: %s", names.to_text(name), r.why)
            self.on_change(dict(self.view))

    def addresses(self) -> dict[bytes, tuple[str, ...]]:
        """What the prober probes: every address an alias name answers with now."""
        return {n: (*r.v4, *r.v6) for n, r in self.view.items() if not r.gone}


def _addrs(e: _Entry) -> str:
    return ", ".join((*e.v4, *e.v6))


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0][:200]
