"""Short fuzz runs (the long ones: bench/fuzz.py) and the regression corpus."""

from __future__ import annotations

from pathlib import Path

import pytest

from gslb.zones.errors import ConfigError
from gslb.zones.load import load_zone
from tests.fuzzing import fuzz_packets, fuzz_zones, serving_state

CORPUS = Path(__file__).resolve().parent / "data" / "fuzz"


@pytest.mark.parametrize("seed", [1, 2])
def test_zone_fuzz(seed: int) -> None:
    bad = list(fuzz_zones(seed, 1500))
    assert not bad, f"{len(bad)} crash(es); first: {bad[0][1]!r} on\n{bad[0][0]}"


@pytest.mark.parametrize("seed", [1, 2])
def test_packet_fuzz(seed: int) -> None:
    bad = list(fuzz_packets(seed, 15000, serving_state()))
    assert not bad, f"{len(bad)} problem(s); first: {bad[0][1]} on {bad[0][0].hex()}"


@pytest.mark.parametrize("path", sorted(CORPUS.glob("zone-*.yaml")), ids=lambda p: p.name)
def test_zone_corpus(path: Path) -> None:
    """Inputs that once crashed the loader: now positioned errors."""
    expect = path.read_text().splitlines()[0].removeprefix("# expect: ")
    with pytest.raises(ConfigError) as ei:
        load_zone(path)
    assert any(expect in str(p) for p in ei.value.problems), "\n".join(map(str, ei.value.problems))
