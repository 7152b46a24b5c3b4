"""Check kinds, one module each, in one registry: ``REGISTRY[check.type]``.

A check is an async function ``(client, target) -> (ok, reason, load)``
(``load``: the member's reported load, for ``least_loaded``, or None); it never
raises for anything the network does, and it is always run under the
check's timeout by the prober (a hung target is a failure, "timeout after Ns").
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from gslb.zones.model import Check

if TYPE_CHECKING:
    from gslb.health.checks.http import HttpClient


TargetKey = tuple[tuple[object, ...], str, int]


@dataclass(frozen=True, slots=True)
class Target:
    """What a probe connects to: one check spec at one address and port."""

    check: Check
    address: str
    port: int

    @property
    def key(self) -> TargetKey:
        """Equal for targets that probe the same thing, whatever their schedule."""
        return (self.check.identity, self.address, self.port)

    @property
    def ident(self) -> str:
        """A stable name, used in logs and as the key of persisted state."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.check.name}:{self.check.type}://{host}:{self.port}"


CheckFn = Callable[["HttpClient", Target], Awaitable[tuple[bool, str, float | None]]]


def registry() -> dict[str, CheckFn]:
    from gslb.health.checks import http, tcp

    return {"http": http.check, "https": http.check, "tcp": tcp.check}
