"""Long fuzz runs: the packet path and zone loading (the short runs are in the test suite).

    python bench/fuzz.py [--packets 500000] [--zones 50000] [--seed 1] [--out DIR]

Prints how many inputs ran, how fast, and every distinct problem; the inputs that
caused them are written to --out (default tests/data/fuzz/new/) to become regression
cases. Exit status 1 when anything was found.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fuzzing import fuzz_packets, fuzz_zones, serving_state  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=500_000)
    ap.add_argument("--zones", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "tests" / "data" / "fuzz" / "new"))
    a = ap.parse_args()
    out = Path(a.out)
    found = 0
    seen: set[str] = set()
    t0 = time.monotonic()
    for w, why in fuzz_packets(a.seed, a.packets, serving_state()):
        key = why.split(":")[0]
        if key not in seen:
            seen.add(key)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"packet-{len(seen)}.bin").write_bytes(w)
            print(f"packet problem: {why} ({w.hex()})")
        found += 1
    t1 = time.monotonic()
    print(
        f"packets: {a.packets} inputs in {t1 - t0:.1f} s ({a.packets / (t1 - t0):,.0f}/s), {found} problem(s)"
    )
    zfound = 0
    for text, e in fuzz_zones(a.seed, a.zones):
        key = f"{type(e).__name__}"
        if key not in seen:
            seen.add(key)
            out.mkdir(parents=True, exist_ok=True)
            (out / f"zone-{len(seen)}.yaml").write_text(text)
            print(f"zone problem: {type(e).__name__}: {e}")
        zfound += 1
    t2 = time.monotonic()
    print(f"zones: {a.zones} inputs in {t2 - t1:.1f} s ({a.zones / (t2 - t1):,.0f}/s), {zfound} problem(s)")
    return 1 if found or zfound else 0


if __name__ == "__main__":
    sys.exit(main())
