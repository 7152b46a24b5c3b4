"""A small asyncio client for etcd's v3 API, through its JSON gateway (aiohttp).

Only what cluster mode needs: range over a prefix, put (optionally under a
lease), delete, transactions (compare-and-swap), leases (grant, keep alive,
revoke) and a watch stream. Keys and values are base64 in the gateway's JSON;
this module hands out ``str`` keys and ``bytes`` values.

Several endpoints may be given: a request that cannot reach one (refused,
reset, timed out) moves to the next, so one etcd member down costs one
timeout, not the cluster. Every failure surfaces as :class:`EtcdError` with a
one-line message. Why the gateway and not a gRPC client: docs/design-notes.md
("Cluster store").
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, NamedTuple

import aiohttp
import aiohttp.http_exceptions

MAX_MESSAGE = 64 << 20  # bytes of one watch message, at most


class EtcdError(Exception):
    """etcd could not be reached, or refused the request (one line)."""


class KV(NamedTuple):
    key: str
    value: bytes
    mod_revision: int
    lease: int


class Event(NamedTuple):
    deleted: bool
    kv: KV


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def prefix_end(prefix: str) -> str:
    """The range end that covers every key starting with ``prefix`` (etcd's convention)."""
    b = bytearray(prefix.encode())
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return _b64(bytes(b[: i + 1]))
    return _b64(b"\0")


def _kv(d: dict[str, Any]) -> KV:
    return KV(
        base64.b64decode(d.get("key", "")).decode(errors="replace"),
        base64.b64decode(d.get("value", "")),
        int(d.get("mod_revision", 0)),
        int(d.get("lease", 0)),
    )


class Etcd:
    def __init__(
        self, endpoints: Sequence[str], tls: ssl.SSLContext | None = None, timeout: float = 2.0
    ) -> None:
        scheme = "https" if tls is not None else "http"
        self.urls = [f"{scheme}://{e}" for e in endpoints]
        self.tls = tls
        self.timeout = timeout
        self.current = 0  # index of the endpoint that answered last
        # what this client sent and received (request and response bodies, watch messages)
        self.requests = 0
        self.bytes_out = 0
        self.bytes_in = 0
        # monotonic time of the last reply that was not an error (a read, a write, a
        # keep-alive) or watch message: the last moment the store was known to work;
        # ``resumed``: of the first such reply after a silence longer than ``gap`` (or ever)
        self.last_ok = 0.0
        self.resumed = 0.0
        self.gap = 0.0
        self._session: aiohttp.ClientSession | None = None

    @property
    def endpoint(self) -> str:
        return self.urls[self.current]

    def _s(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            conn = aiohttp.TCPConnector(ssl=self.tls if self.tls is not None else False, limit=16)
            self._session = aiohttp.ClientSession(connector=conn)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def call(self, path: str, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """POST to the first endpoint that answers, starting with the last good one."""
        errors = []
        n = len(self.urls)
        for i in range(n):
            idx = (self.current + i) % n
            url = self.urls[idx] + path
            payload = json.dumps(body)
            self.requests += 1
            self.bytes_out += len(payload)
            try:
                async with asyncio.timeout(timeout or self.timeout):
                    async with self._s().post(
                        url, data=payload, headers={"Content-Type": "application/json"}
                    ) as r:
                        text = await r.text()
                self.bytes_in += len(text)
                data = json.loads(text) if text else {}
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                errors.append(f"{self.urls[idx]}: {_why(e)}")
                continue
            self.current = idx
            if not isinstance(data, dict):
                raise EtcdError(f"{url}: unexpected reply {text[:80]!r}")
            if "error" in data or ("code" in data and "message" in data):
                raise EtcdError(f"{url}: {data.get('message') or data.get('error')}")
            self._ok()
            return data
        raise EtcdError("; ".join(errors) or "no etcd endpoint")

    def _ok(self) -> None:
        now = time.monotonic()
        if not self.last_ok or now - self.last_ok > self.gap:
            self.resumed = now
        self.last_ok = now

    # -- kv ------------------------------------------------------------------------
    async def get_prefix(self, prefix: str) -> tuple[int, list[KV]]:
        """Every key under ``prefix`` and the store's revision of that reading."""
        d = await self.call("/v3/kv/range", {"key": _b64(prefix), "range_end": prefix_end(prefix)}, 10)
        return int(d["header"]["revision"]), [_kv(x) for x in d.get("kvs", [])]

    async def get(self, key: str) -> KV | None:
        d = await self.call("/v3/kv/range", {"key": _b64(key)})
        kvs = d.get("kvs", [])
        return _kv(kvs[0]) if kvs else None

    async def put(self, key: str, value: bytes, lease: int = 0) -> int:
        d = await self.call("/v3/kv/put", {"key": _b64(key), "value": _b64(value), "lease": str(lease)})
        return int(d["header"]["revision"])

    async def put_many(self, items: Sequence[tuple[str, bytes]], lease: int = 0, batch: int = 100) -> None:
        """Puts in transactions of at most ``batch`` (etcd's default limit is 128 per txn)."""
        for i in range(0, len(items), batch):
            ops = [
                {"request_put": {"key": _b64(k), "value": _b64(v), "lease": str(lease)}}
                for k, v in items[i : i + batch]
            ]
            await self.call("/v3/kv/txn", {"success": ops}, 10)

    async def delete(self, key: str) -> None:
        await self.call("/v3/kv/deleterange", {"key": _b64(key)})

    async def swap(
        self, key: str, value: bytes | None, revision: int, lease: int = 0
    ) -> tuple[bool, KV | None]:
        """Compare-and-swap: write ``value`` (None: delete) only if the key's mod revision
        is ``revision`` (0: the key does not exist). Returns (done, the key as it is now
        when not done)."""
        cmp = {"key": _b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(revision)}
        if value is None:
            op: dict[str, Any] = {"request_delete_range": {"key": _b64(key)}}
        else:
            op = {"request_put": {"key": _b64(key), "value": _b64(value), "lease": str(lease)}}
        d = await self.call(
            "/v3/kv/txn",
            {"compare": [cmp], "success": [op], "failure": [{"request_range": {"key": _b64(key)}}]},
        )
        if d.get("succeeded"):
            return True, None
        kvs = d.get("responses", [{}])[0].get("response_range", {}).get("kvs", [])
        return False, _kv(kvs[0]) if kvs else None

    # -- leases ----------------------------------------------------------------------
    async def grant(self, ttl: int) -> int:
        d = await self.call("/v3/lease/grant", {"TTL": str(ttl)})
        return int(d["ID"])

    async def keepalive(self, lease: int) -> int:
        """Refresh a lease; returns its TTL (0: the lease is gone)."""
        d = await self.call("/v3/lease/keepalive", {"ID": str(lease)})
        return int(d.get("result", {}).get("TTL", 0))

    async def revoke(self, lease: int) -> None:
        await self.call("/v3/lease/revoke", {"ID": str(lease)})

    # -- watch -------------------------------------------------------------------------
    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[tuple[int, list[Event]]]:
        """Changes under ``prefix`` from ``start_revision``: (revision, events) per
        message. Ends (raises EtcdError) when the stream breaks; the caller re-lists."""
        body = {
            "create_request": {
                "key": _b64(prefix),
                "range_end": prefix_end(prefix),
                "start_revision": str(start_revision),
            }
        }
        url = self.endpoint + "/v3/watch"
        self.requests += 1
        try:
            async with self._s().post(
                url, json=body, timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeout)
            ) as r:
                if r.status != 200:
                    raise EtcdError(f"{url}: HTTP {r.status}")
                # one message per line; a message can be large (a batch of writes: measured
                # over 512 KiB, aiohttp's line limit, for 5,000 observations), so the lines
                # are cut here, up to MAX_MESSAGE
                buf = b""
                async for chunk in r.content.iter_any():
                    self.bytes_in += len(chunk)
                    buf += chunk
                    if len(buf) > MAX_MESSAGE:
                        raise EtcdError(f"{url}: watch message over {MAX_MESSAGE} bytes")
                    *lines, buf = buf.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield self._watch_message(url, line)
        except (aiohttp.ClientError, aiohttp.http_exceptions.HttpProcessingError, OSError, ValueError) as e:
            raise EtcdError(f"{url}: watch: {_why(e)}") from None
        raise EtcdError(f"{url}: watch stream ended")

    def _watch_message(self, url: str, line: bytes) -> tuple[int, list[Event]]:
        msg = json.loads(line)
        if "error" in msg:
            raise EtcdError(f"{url}: watch: {msg['error'].get('message', msg['error'])}")
        res = msg.get("result", {})
        if res.get("canceled") or res.get("compact_revision"):
            raise EtcdError(f"{url}: watch cancelled ({res.get('cancel_reason') or 'compacted'})")
        self._ok()
        events = [Event(ev.get("type") == "DELETE", _kv(ev["kv"])) for ev in res.get("events", [])]
        return int(res.get("header", {}).get("revision", 0)), events


def _why(e: BaseException) -> str:
    if isinstance(e, TimeoutError):
        return "timed out"
    return str(e) or type(e).__name__
