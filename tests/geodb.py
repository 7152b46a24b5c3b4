"""Small MaxMind-format databases for tests, written with mmdb-writer.

CITY maps test networks to places (continent, country, subdivision, coordinates);
ASN maps networks to AS numbers. Networks are documentation and private ranges:
they are only ever looked up, never contacted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet

# network -> (continent, country, subdivision, lat, lon)
CITY: dict[str, tuple[str, str, str | None, float, float]] = {
    "198.51.100.0/24": ("NA", "US", "CA", 37.77, -122.42),  # San Francisco
    "203.0.113.0/25": ("EU", "GB", "ENG", 51.51, -0.13),  # London
    "203.0.113.128/25": ("OC", "AU", "NSW", -33.87, 151.21),  # Sydney
    "192.0.2.0/24": ("EU", "DE", "BE", 52.52, 13.40),  # Berlin
    "2001:db8:1::/48": ("AS", "JP", "13", 35.68, 139.69),  # Tokyo
    "100.64.0.0/10": ("NA", "US", "NY", 40.71, -74.01),  # New York
}
ASN: dict[str, int] = {"100.64.0.0/16": 64500, "100.65.0.0/16": 64501}


def _city_record(continent: str, country: str, sub: str | None, lat: float, lon: float) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "continent": {"code": continent},
        "country": {"iso_code": country},
        "location": {"latitude": lat, "longitude": lon},
    }
    if sub:
        rec["subdivisions"] = [{"iso_code": sub}]
    return rec


def write_city(
    path: Path, networks: dict[str, tuple[str, str, str | None, float, float]] | None = None
) -> Path:
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City", languages=["en"],
                   description="gslb test City database")  # fmt: skip
    for net, (cont, country, sub, lat, lon) in (networks or CITY).items():
        w.insert_network(IPSet([net]), _city_record(cont, country, sub, lat, lon))
    w.to_db_file(str(path))
    return path


def write_asn(path: Path, networks: dict[str, int] | None = None) -> Path:
    w = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN", languages=["en"],
                   description="gslb test ASN database")  # fmt: skip
    for net, asn in (networks or ASN).items():
        w.insert_network(
            IPSet([net]), {"autonomous_system_number": asn, "autonomous_system_organization": "Test"}
        )
    w.to_db_file(str(path))
    return path
