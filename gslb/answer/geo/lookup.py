"""GeoIP lookups behind a small protocol (no database library here).

:class:`GeoLookup` answers "where is this address" with a :class:`GeoInfo`
(continent, country, subdivisions, coordinates, ASN) and the prefix length of
the database network that decided it, which becomes the ECS scope of answers
that depend on it. The answering core (answer.state, answer.respond, policies) knows only
this protocol; ``gslb.answer.geo.maxmind`` implements it over MaxMind databases and
is the only module that imports geoip2 (an import-linter contract keeps it so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class GeoInfo:
    continent: str | None = None
    country: str | None = None
    subdivisions: tuple[str, ...] = ()
    lat: float | None = None
    lon: float | None = None
    asn: int | None = None
    prefix: int = 0  # length of the City/Country database network that matched (ECS scope)
    asn_prefix: int = 0  # likewise in the ASN database


UNKNOWN = GeoInfo()


class GeoLookup(Protocol):
    def lookup(self, family: int, addr: int) -> GeoInfo: ...
