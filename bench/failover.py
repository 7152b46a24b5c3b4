"""Failover time over repeated kills, next to the documented bound.

    python bench/failover.py [--kills 20] [--interval 1] [--timeout 0.5] [--fall 2] [--rise 2]

Starts gslb on a zone balancing three real HTTP targets on 127.0.0.71-73, then
again and again breaks one target (alternately: stops it, so connections are
refused, and makes it hang, so probes time out), at a random moment, and
measures the time from the break to the first DNS answer without it (queried
directly every 10 ms). Prints the distribution next to
interval x fall + timeout, the bound gslb promises (resolver TTL not included).
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import GslbProcess  # noqa: E402
from tests.targets import Target, free_port  # noqa: E402

HOSTS = ["127.0.0.71", "127.0.0.72", "127.0.0.73"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--timeout", type=float, default=0.5)
    ap.add_argument("--fall", type=int, default=2)
    ap.add_argument("--rise", type=int, default=2)
    a = ap.parse_args()
    bound = a.interval * a.fall + a.timeout
    port = free_port(HOSTS)
    targets = [Target(h, port) for h in HOSTS]
    work = Path(tempfile.mkdtemp(prefix="gslb-failover-"))
    (work / "zones").mkdir()
    members = ", ".join(f"{{address: {h}}}" for h in HOSTS)
    (work / "zones" / "f.test.yaml").write_text(f"""zone: f.test.
nameservers: {{ns1.f.test.: [127.0.0.1]}}
checks:
  web: {{type: http, port: {port}, expect: {{body: ok}}, interval: {a.interval}s, timeout: {a.timeout}s,
         fall: {a.fall}, rise: {a.rise}}}
pools:
  p: {{check: web, members: [{members}]}}
records:
  www: [{{types: [A], answer: {{select: all}}, rules: [{{pools: [p]}}]}}]
""")
    srv = GslbProcess(work / "zones", work / "gslb.log", state_dir=work / "state")
    rnd = random.Random(7)

    def answers() -> set[str]:
        return {rd.to_text() for rr in srv.query("www.f.test.", "A").answer for rd in rr}

    times: dict[str, list[float]] = {"refused": [], "timeout": []}
    try:
        time.sleep(2 * a.interval)
        for i in range(a.kills):
            victim = targets[i % len(targets)]
            mode = "refused" if i % 2 == 0 else "timeout"
            time.sleep(rnd.uniform(0, a.interval))  # a random phase against the probe schedule
            t0 = time.monotonic()
            if mode == "refused":
                victim.stop()
            else:
                victim.mode = "hang"
            while victim.host in answers():
                time.sleep(0.01)
            took = time.monotonic() - t0
            times[mode].append(took)
            print(f"kill {i + 1:2}: {victim.host} {mode:8} gone after {took:.3f}s", file=sys.stderr)
            victim.mode = "ok"
            if victim.server is None:
                victim.start()
            while victim.host not in answers():
                time.sleep(0.05)
    finally:
        srv.stop()
        for t in targets:
            t.close()
        shutil.rmtree(work, ignore_errors=True)
    print(
        f"\nfailover time (break -> first answer without the member), interval {a.interval}s, "
        f"timeout {a.timeout}s, fall {a.fall}; bound interval x fall + timeout = {bound:.2f}s"
    )
    print(f"{'failure':8} {'n':>3} {'min':>7} {'p50':>7} {'p90':>7} {'max':>7} {'max/bound':>10}")
    for mode, xs in times.items():
        if not xs:
            continue
        xs.sort()
        p90 = xs[min(len(xs) - 1, int(0.9 * len(xs)))]
        print(
            f"{mode:8} {len(xs):3} {xs[0]:7.3f} {statistics.median(xs):7.3f} {p90:7.3f} {xs[-1]:7.3f} "
            f"{xs[-1] / bound:10.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
