"""Guard: no zone the tests, the demo or the benchmarks serve may send a health
probe anywhere but loopback. Probes of namespace hosts are set up by the tests
that create those namespaces, never by a zone file in the repo."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from gslb.health.prober import targets_of
from gslb.zones.load import load_zone

ROOT = Path(__file__).resolve().parent.parent
SERVED = (
    sorted(ROOT.glob("zones/*.yaml"))
    + sorted(ROOT.glob("tests/**/*.yaml"))
    + sorted(ROOT.glob("bench/**/*.yaml"))
)


@pytest.mark.parametrize(
    "path",
    [p for p in SERVED if not {"bad", "fuzz"} & set(p.parts)],  # invalid on purpose: never served
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_probes_stay_on_loopback(path: Path) -> None:
    zone = load_zone(path)
    for target in (w.target for w in targets_of([zone]).values()):
        assert ipaddress.ip_address(target.address).is_loopback, f"{path}: {target.ident} is not loopback"
