"""NOTIFY (RFC 1996): tell secondaries a zone's serial changed, so they transfer now.

When a reload changes a zone's serial (and at start, so a secondary catches up
with edits made while gslb was down), each secondary listed under the zone's
``transfers: notify`` gets a NOTIFY over UDP: opcode NOTIFY, AA, the zone's SOA
as the question and the new SOA in the answer section (RFC 1996 3.7), signed
with the target's TSIG key when it has one. Until the secondary answers, the
NOTIFY is sent again after 1, 2, 4, 8 and 16 s (six tries, about half a minute:
RFC 1996 3.6 leaves the schedule to the primary). A reply with an error (a
secondary that does not take NOTIFY from us: REFUSED, NOTAUTH) is not retried:
it is logged, since only its configuration can fix it. A newer serial for the
same zone cancels the retries of the older one.

The secondary then asks for the SOA and transfers (IXFR, from the journal:
:mod:`gslb.secondaries.xfr`). ``gslb notify ZONE`` (through the API) sends one at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import socket
import struct
from collections.abc import Callable, Iterable

from gslb.answer.state import CompiledZone
from gslb.dns import names, tsig
from gslb.dns.wire import AA, RRw, encode_sections
from gslb.secondaries.xfr import Target

log = logging.getLogger("gslb.secondaries.notify")

OPCODE_NOTIFY = 4
RETRIES = (1.0, 2.0, 4.0, 8.0, 16.0)  # waits after each unanswered try


def message(zone: CompiledZone, qid: int) -> bytes:
    """A NOTIFY for ``zone``: the SOA question, the current SOA as the answer."""
    rrs: list[RRw] = [zone.soa_rr]
    body, an, _, _ = encode_sections(zone.origin, (rrs, [], []))
    flags = (OPCODE_NOTIFY << 11) | AA
    return struct.pack("!HHHHHH", qid, flags, 1, an, 0, 0) + zone.origin + b"\x00\x06\x00\x01" + body


class _Reply(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.got: asyncio.Queue[bytes] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.got.put_nowait(data)


def _outcome(reply: bytes, qid: int, request_mac: bytes, key: tsig.Key | None) -> str | None:
    """What a reply says ("acknowledged" or the error), or None when it is not the
    reply to our NOTIFY (another ID, not a response)."""
    if len(reply) < 12 or (reply[0] << 8) | reply[1] != qid or not reply[2] & 0x80:
        return None
    if (reply[2] >> 3) & 0xF != OPCODE_NOTIFY:
        return "answered with another opcode"
    rcode = reply[3] & 0xF
    if key is not None:
        try:
            t = tsig.find(reply)
        except Exception:
            return "a malformed TSIG in the reply"
        if t is None:
            return f"an unsigned reply (rcode {rcode})"
        if t.error:
            return f"TSIG {tsig.ERRORS.get(t.error, t.error)} (the secondary does not accept key {key.name})"
        v = tsig.verify_reply(reply, t, key, request_mac)
        if v:
            return v
    if rcode:
        return {5: "REFUSED", 9: "NOTAUTH", 4: "NOTIMP", 2: "SERVFAIL"}.get(rcode, f"rcode {rcode}")
    return "acknowledged"


async def send(
    zone: CompiledZone, target: Target, keyring: tsig.Keyring, waits: Iterable[float] = RETRIES
) -> str:
    """Send a NOTIFY until it is answered (or the tries run out): what happened."""
    loop = asyncio.get_running_loop()
    key = keyring.by_name.get(target.key) if target.key else None
    family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
    try:
        transport, proto = await loop.create_datagram_endpoint(
            _Reply, remote_addr=(target.host, target.port), family=family
        )
    except OSError as e:
        return f"cannot send: {e.strerror or e}"
    try:
        waits = list(waits)
        for i, wait in enumerate([*waits, None]):
            qid = random.getrandbits(16)
            msg = message(zone, qid)
            mac = b""
            if key is not None:
                msg, mac = tsig.sign(msg, key)
            transport.sendto(msg)
            deadline = loop.time() + (wait if wait is not None else (waits[-1] if waits else 2.0))
            while True:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    reply = await asyncio.wait_for(proto.got.get(), left)
                except TimeoutError:
                    break
                result = _outcome(reply, qid, mac, key)
                if result is not None:
                    return result if i == 0 else f"{result} (try {i + 1})"
        return f"no answer after {len(waits) + 1} tries"
    finally:
        transport.close()


class Notifier:
    """Sends NOTIFY for changed serials; one task per (zone, target), the newest wins."""

    def __init__(self, targets_of: Callable[[bytes], list[Target]], keyring: tsig.Keyring) -> None:
        self.targets_of = targets_of  # gslb.secondaries.xfr.Transfers.notify_targets
        self.keyring = keyring
        self.serials: dict[bytes, int] = {}
        self.tasks: dict[tuple[bytes, str, int], asyncio.Task[str]] = {}
        self.results: dict[tuple[bytes, str, int], tuple[int, str]] = {}

    def zones(self, zones: dict[bytes, CompiledZone]) -> None:
        """The zones as now served: NOTIFY those whose serial is new to us."""
        for origin, cz in zones.items():
            if self.serials.get(origin) != cz.serial:
                self.serials[origin] = cz.serial
                self.start(cz)
        for origin in set(self.serials) - set(zones):
            del self.serials[origin]

    def start(self, zone: CompiledZone, waits: Iterable[float] = RETRIES) -> list[asyncio.Task[str]]:
        started = []
        for t in self.targets_of(zone.origin):
            k = (zone.origin, t.host, t.port)
            old = self.tasks.pop(k, None)
            if old is not None:
                old.cancel()
            task = asyncio.get_running_loop().create_task(self._one(zone, t, list(waits)))
            self.tasks[k] = task
            task.add_done_callback(functools.partial(self._done, k))
            started.append(task)
        return started

    def _done(self, k: tuple[bytes, str, int], task: asyncio.Task[str]) -> None:  # a done callback
        if self.tasks.get(k) is task:
            del self.tasks[k]

    async def _one(self, zone: CompiledZone, target: Target, waits: list[float]) -> str:
        zname = names.to_text(zone.origin)
        result = await send(zone, target, self.keyring, waits)
        self.results[(zone.origin, target.host, target.port)] = (zone.serial, result)
        if result.startswith("acknowledged"):
            log.info("NOTIFY %s serial %d to %s: %s", zname, zone.serial, target, result)
        else:
            log.warning("NOTIFY %s serial %d to %s: %s", zname, zone.serial, target, result)
        return result

    async def close(self) -> None:
        for t in list(self.tasks.values()):
            t.cancel()
        for t in list(self.tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
