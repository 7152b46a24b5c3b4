"""What resolving alias members' names costs (gslb.server.aliases: dnspython's asyncio
resolver), against a real server on loopback:

    python bench/aliases.py                 # 1,000 names, 5 rounds
    python bench/aliases.py --names 5000 --rounds 3

A gslb serving the names (each with two A and one AAAA record) is started on a free
port; the resolver of gslb.server.aliases refreshes every name once per round, all at
once (as after a start, or when many TTLs end together). Printed: the round's wall
time, resolutions per second (a resolution is one name, A and AAAA asked together),
and this process's CPU per resolution; medians over the rounds. The CPU figure says
what a zone of N aliases at TTL T costs the answering process: N / (0.8 T) resolutions
per second (docs/design-notes.md quotes it). Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gslb.dns import names  # noqa: E402
from gslb.server.aliases import AliasOptions, AliasResolver  # noqa: E402


def zone(n: int) -> str:
    lines = ["zone: bench-alias.test.", "nameservers: {ns1.bench-alias.test.: [192.0.2.53]}", "records:"]
    for i in range(n):
        a, b = divmod(i, 250)
        lines.append(
            f"  lb{i}: [{{type: A, value: 10.{a % 250}.{b}.1}}, {{type: A, value: 10.{a % 250}.{b}.2}}, "
            f'{{type: AAAA, value: "2001:db8::{i:x}"}}]'
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--names", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gslb-aliases-"))
    (work / "zones").mkdir()
    (work / "zones" / "bench-alias.test.yaml").write_text(zone(args.names))
    log = work / "server.log"
    with open(log, "wb") as lf:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gslb", "serve", "--zones", str(work / "zones"), "--listen", "127.0.0.1:0",
             "--no-api", "--state-dir", ""],
            stdout=lf, stderr=subprocess.STDOUT, cwd=ROOT,
        )  # fmt: skip
    try:
        port = 0
        for _ in range(200):
            text = log.read_text()
            if "listening on 127.0.0.1:" in text:
                port = int(text.split("listening on 127.0.0.1:")[1].split()[0])
                break
            time.sleep(0.05)
        if not port:
            raise SystemExit(f"the server did not start: {log.read_text()}")
        walls, rates, cpus = asyncio.run(rounds(port, args.names, args.rounds))
    finally:
        proc.terminate()
        proc.wait(10)
    print(
        f"{args.names} names x {args.rounds} rounds (medians): a round {statistics.median(walls):.2f} s, "
        f"{statistics.median(rates):,.0f} resolutions/s, {statistics.median(cpus):.0f} us CPU per resolution"
    )
    return 0


async def rounds(port: int, n: int, k: int) -> tuple[list[float], list[float], list[float]]:
    wanted = [names.from_text(f"lb{i}.bench-alias.test.") for i in range(n)]
    changes = 0

    def changed(_: object) -> None:
        nonlocal changes
        changes += 1

    r = AliasResolver(AliasOptions(resolvers=(("127.0.0.1", port),), timeout=5.0), changed)
    r.update(wanted)
    walls, rates, cpus = [], [], []
    for _ in range(k):
        c0, t0 = sum(os.times()[:2]), time.perf_counter()
        await asyncio.gather(*(r.refresh(w) for w in wanted))
        wall, cpu = time.perf_counter() - t0, sum(os.times()[:2]) - c0
        failed = r.stats.failed
        if failed:
            raise SystemExit(f"{failed} resolutions failed")
        walls.append(wall)
        rates.append(n / wall)
        cpus.append(cpu / n * 1e6)
    ok = sum(1 for v in r.view.values() if len(v.v4) == 2 and len(v.v6) == 1)
    if ok != n:
        raise SystemExit(f"only {ok} of {n} names resolved to their 3 addresses")
    return walls, rates, cpus


if __name__ == "__main__":
    sys.exit(main())
