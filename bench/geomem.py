"""Memory and time of the compiled geo routing tables on a City database.

    python bench/geomem.py DB.mmdb    # e.g. one written by bench/synthcity.py

Walks the database into pieces, compiles 20 balanced names that share 3 rule sets,
and prints the pieces, the times, the arrays' sizes, RSS, and the cost of a decision.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gslb.answer.build import build_state, with_decisions
from gslb.answer.geo.maxmind import MaxMindGeo
from gslb.zones.load import load_zone

RULE_SETS = [
    "[{geos: [NA-US-CA], pools: [a]}, {geos: [US], pools: [b]}, {geos: [EU], pools: [c]}, {pools: [d]}]",
    "[{geos: [EU-GB, EU-DE], pools: [c]}, {geos: [AS], pools: [b]}, {pools: [a]}]",
    "[{geos: [NA], pools: [a]}, {geos: [SA, AF], pools: [b]}, {pools: [d]}]",
]


def rss() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * 4096 / 1e6


def main() -> int:
    r0 = rss()
    geo = MaxMindGeo(sys.argv[1])
    r1 = rss()
    t = time.perf_counter()
    l4, l6 = geo.leaves(4), geo.leaves(6)
    walk = time.perf_counter() - t
    r2 = rss()
    arrays = (l4.nbytes() + l6.nbytes()) / 1e6
    print(f"pieces: IPv4 {len(l4):,}, IPv6 {len(l6):,}; walked in {walk:.1f} s; "
          f"{arrays:.0f} MB of arrays, RSS +{r2 - r1:.0f} MB")  # fmt: skip
    records = "".join(f"  n{i}:\n    - types: [A]\n      rules: {RULE_SETS[i % 3]}\n" for i in range(20))
    pools = "".join(f"  {p}: {{members: [{{address: 192.0.2.{i + 1}}}]}}\n" for i, p in enumerate("abcd"))
    text = f"zone: m.test.\nnameservers: {{ns.example.: []}}\npools:\n{pools}records:\n{records}"
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "m.test.yaml"
        f.write_text(text)
        zone = load_zone(f, geo_db=True)
    t = time.perf_counter()
    state = with_decisions(build_state([(zone, 1)], geo=geo))
    took = time.perf_counter() - t
    r3 = rss()
    tables = {id(p.decisions): p.decisions for p in state.plans.values() if p.decisions is not None}
    size = sum(t.nbytes() for t in tables.values()) / 1e6
    print(f"20 names, {len(tables)} rule sets compiled in {took:.1f} s; {size:.0f} MB of arrays "
          f"(shared starts counted once per table), RSS +{r3 - r2:.0f} MB; process RSS {r3:.0f} MB "
          f"(before the database: {r0:.0f} MB)")  # fmt: skip
    table = next(iter(tables.values()))
    rng = random.Random(1)
    for family, bits, source in ((4, 32, 24), (6, 128, 56)):
        addrs = [rng.getrandbits(bits) for _ in range(200_000)]
        t = time.perf_counter()
        for a in addrs:
            table.decide(family, a, source)
        per = (time.perf_counter() - t) / len(addrs) * 1e9
        print(f"a decision: {per:.0f} ns per IPv{family} client (a Python loop)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
