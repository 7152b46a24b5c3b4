"""Alert webhooks: tell people when rotation changes, without a dashboard.

Events (``KINDS``) are emitted by the runtime where the change happens: a member
the checks (or the cluster's votes) took out of rotation or put back, an
override set, cleared or expired, the prober stalled or recovered, a zone file
rejected on reload, the cluster store lost or regained. Each webhook gets the
events its filters let through, as one JSON POST per event (docs/api.md), with
an HMAC-SHA256 of the body in ``X-Gslb-Signature`` when it has a secret, and a
``text`` field, so a plain Slack (or Mattermost, Google Chat) incoming-webhook
URL works as it is.

Delivery never touches answering or probing: :meth:`Alerts.emit` appends to a
bounded queue per webhook (oldest dropped and counted when full) and returns; one
sender task per webhook posts the queue in order, retrying a failed post with
exponential backoff (1 s, doubling, at most 60 s) until it is delivered, so a
receiver that is down gets everything queued when it comes back, and a receiver
that hangs only delays its own queue (each post has a timeout). A 4xx answer
other than 408/429 will not get better by retrying: the event is counted as
rejected and the next one goes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

log = logging.getLogger("gslb")

KINDS = (
    "member_down",
    "member_up",
    "override_set",
    "override_cleared",
    "override_expired",
    "prober_stalled",
    "prober_recovered",
    "zone_rejected",
    "cluster_disconnected",
    "cluster_reconnected",
)
QUEUE_MAX = 1000
TIMEOUT = 5.0
BACKOFF_MIN, BACKOFF_MAX = 1.0, 60.0


@dataclass(frozen=True, slots=True)
class Webhook:
    """One receiver and what it wants (empty filters: everything)."""

    url: str
    secret: bytes = b""
    zones: frozenset[str] = frozenset()
    pools: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()

    @property
    def shown(self) -> str:
        """The URL as logs, metrics and the status show it: scheme and host only (an
        incoming-webhook URL's path is its credential)."""
        scheme, _, rest = self.url.partition("://")
        host, slash, _ = rest.partition("/")
        return f"{scheme}://{host}/..." if slash else self.url

    def wants(self, event: dict[str, Any]) -> bool:
        if self.kinds and event["event"] not in self.kinds:
            return False
        # events about no zone (prober, cluster) pass zone and pool filters
        if self.zones and event.get("zone") and event["zone"] not in self.zones:
            return False
        return not (self.pools and event.get("pool") and event["pool"] not in self.pools)


def signature(secret: bytes, body: bytes) -> str:
    """The ``X-Gslb-Signature`` header value: ``sha256=`` and the hex HMAC of the body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


@dataclass(slots=True)
class HookState:
    hook: Webhook
    queue: collections.deque[dict[str, Any]] = field(default_factory=collections.deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    delivered: int = 0
    failures: int = 0  # failed attempts (each retry counts)
    rejected: int = 0  # events the receiver refused with a 4xx (not retried)
    dropped: int = 0  # events pushed out of a full queue
    last_error: str = ""
    task: asyncio.Task[None] | None = None


class Alerts:
    """The webhooks of one server: emit from anywhere in the event loop's thread."""

    def __init__(self, hooks: list[Webhook], node: str = "", queue_max: int = QUEUE_MAX,
                 timeout: float = TIMEOUT) -> None:  # fmt: skip
        self.node = node
        self.queue_max = queue_max
        self.timeout = timeout
        self.hooks = [HookState(h) for h in hooks]
        self._seq = 0
        self._session: aiohttp.ClientSession | None = None

    def emit(self, kind: str, text: str, **fields: Any) -> None:
        """Queue one event for every webhook that wants it; never blocks."""
        if not self.hooks:
            return
        self._seq += 1
        now = time.time()
        event: dict[str, Any] = {
            "event": kind,
            "id": f"{self.node or 'gslb'}-{int(now)}-{self._seq}",
            "time": now,
            "node": self.node,
            **{k: v for k, v in fields.items() if v is not None},
            "text": f"gslb{' ' + self.node if self.node else ''}: {text}",
        }
        for hs in self.hooks:
            if not hs.hook.wants(event):
                continue
            if len(hs.queue) >= self.queue_max:
                hs.queue.popleft()
                hs.dropped += 1
            hs.queue.append(event)
            hs.wake.set()

    async def start(self) -> None:
        if not self.hooks:
            return
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        for hs in self.hooks:
            hs.task = asyncio.get_running_loop().create_task(self._sender(hs))

    async def close(self) -> None:
        for hs in self.hooks:
            if hs.task is not None:
                hs.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await hs.task
        if self._session is not None:
            await self._session.close()

    async def _sender(self, hs: HookState) -> None:
        backoff = BACKOFF_MIN
        while True:
            if not hs.queue:
                hs.wake.clear()
                await hs.wake.wait()
                continue
            event = hs.queue[0]
            outcome = await self._post(hs, event)
            if outcome == "retry":
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_MAX, backoff * 2)
                continue
            backoff = BACKOFF_MIN
            if hs.queue and hs.queue[0] is event:  # (a full queue may have pushed it out)
                hs.queue.popleft()

    async def _post(self, hs: HookState, event: dict[str, Any]) -> str:
        assert self._session is not None
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = {
            "Content-Type": "application/json",
            "X-Gslb-Event": event["event"],
            "X-Gslb-Delivery": event["id"],
        }
        if hs.hook.secret:
            headers["X-Gslb-Signature"] = signature(hs.hook.secret, body)
        try:
            async with self._session.post(hs.hook.url, data=body, headers=headers) as r:
                await r.read()
                status = r.status
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            hs.failures += 1
            hs.last_error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if hs.failures in (1, 10, 100) or hs.failures % 1000 == 0:
                log.warning("alert webhook %s: %s (%d failed attempts; retrying)",
                            hs.hook.shown, hs.last_error, hs.failures)  # fmt: skip
            return "retry"
        if 200 <= status < 300:
            hs.delivered += 1
            return "done"
        hs.last_error = f"HTTP {status}"
        if 400 <= status < 500 and status not in (408, 429):
            hs.rejected += 1
            log.warning("alert webhook %s refused an event: HTTP %d (not retried)", hs.hook.shown, status)
            return "done"
        hs.failures += 1
        return "retry"

    def status(self) -> list[dict[str, Any]]:
        return [
            {
                "webhook": f"{i}: {hs.hook.shown}",
                "queued": len(hs.queue),
                "delivered": hs.delivered,
                "failures": hs.failures,
                "rejected": hs.rejected,
                "dropped": hs.dropped,
                "last_error": hs.last_error,
            }
            for i, hs in enumerate(self.hooks)
        ]
