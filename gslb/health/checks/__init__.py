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


TargetKey = tuple[tuple[object, ...], str, int] | tuple[tuple[object, ...], str, int, str]


@dataclass(frozen=True, slots=True)
class Target:
    """What a probe connects to: one check spec at one address and port."""

    check: Check
    address: str  # an address, or a host name to resolve (the system's resolver) and connect to
    port: int
    # a member given by name (target:): HTTP Host and TLS SNI, unless the check sets ``host``
    host: str | None = None

    @property
    def key(self) -> TargetKey:
        """Equal for targets that probe the same thing, whatever their schedule."""
        if self.host is not None and self.host != self.address:
            return (self.check.identity, self.address, self.port, self.host)
        return (self.check.identity, self.address, self.port)

    @property
    def ident(self) -> str:
        """A stable name, used in logs and as the key of persisted state."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        ident = f"{self.check.name}:{self.check.type}://{host}:{self.port}"
        if self.host is not None and self.host != self.address:
            ident += f" (as {self.host})"  # a name member probed at its check_address
        return ident

    @property
    def server_name(self) -> str:
        """The name the probe presents (HTTP Host, TLS SNI): the check's ``host``, else the
        member's host name, else the address."""
        return self.check.host or self.host or self.address


CheckFn = Callable[["HttpClient", Target], Awaitable[tuple[bool, str, float | None]]]


def registry() -> dict[str, CheckFn]:
    from gslb.health.checks import http, tcp

    return {"http": http.check, "https": http.check, "tcp": tcp.check}
