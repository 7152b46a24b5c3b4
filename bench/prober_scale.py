"""Prober scale: many members at a short interval while DNS answers a steady load.

    python bench/prober_scale.py [--members 5000] [--interval 1] [--seconds 30] [--qps 5000]

The real gslb server runs here, pinned to CPU 0: zones and UDP/TCP
transports on uvloop in this process, the prober in its child process (nice
+10, same CPU). --members HTTP targets listen on
127.1.x.y in another process (CPU 1); dnsperf (CPU 1) sends --qps queries/s
of a static and a balanced name for --seconds. Reported: probes/s achieved
against the scheduled rate, scheduling lag (how late a probe started) p50/p99,
probe duration p50/p99, failed probes, the CPU used by the DNS process and by
the prober process, and the DNS load's answered rate, loss and latency. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.many_targets import address  # noqa: E402
from gslb.server.options import ServeOptions  # noqa: E402
from gslb.server.runtime import Server  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu() -> float:
    t = os.times()
    return t.user + t.system


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(p * len(xs)))] if xs else float("nan")


def write_zone(path: Path, members: int, port: int, interval: float) -> None:
    per = 5
    lines = [
        "zone: s.test.",
        "nameservers: {ns1.s.test.: [127.0.0.1]}",
        "checks:",
        f"  web: {{type: http, port: {port}, expect: {{body: ok}}, interval: {interval}s, "
        f"timeout: {min(0.5, interval / 2)}s}}",
        "pools:",
    ]
    records = ["records:", "  static: [{type: A, value: 127.0.0.1}]"]
    for p in range(0, members, per):
        ms = ", ".join(f"{{address: {address(i)}}}" for i in range(p, min(members, p + per)))
        lines.append(f"  p{p}: {{check: web, members: [{ms}]}}")
        records.append(f"  n{p}: [{{types: [A], rules: [{{pools: [p{p}]}}]}}]")
    path.write_text("\n".join(lines + records) + "\n")


async def run(a: argparse.Namespace, work: Path) -> dict[str, float]:
    port = 8080
    targets = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, str(ROOT / "bench" / "many_targets.py"),
         str(a.members), str(port)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert targets.stdout is not None
    assert targets.stdout.readline().strip() == "ready"
    zdir = work / "zones"
    zdir.mkdir()
    write_zone(zdir / "s.test.yaml", a.members, port, a.interval)
    t_load = time.monotonic()
    opts = ServeOptions(
        zones=str(zdir), listen=(("127.0.0.1", 0),), state_dir="", probe_concurrency=a.concurrency, api=None
    )
    server = Server(opts)
    assert not server.load_initial()
    load_s = time.monotonic() - t_load
    await server.start()
    await server.prober.start(watchdog_after=10)
    await asyncio.sleep(0.5)  # the prober process starts
    dns_port = server.bound[0][1]
    qfile = work / "q.txt"
    qfile.write_text("static.s.test. A\nn0.s.test. A\nn100.s.test. A\n")
    try:
        await asyncio.sleep(a.interval * 3)  # warm-up: first rounds, connection churn settles
        s0 = await server.prober.stats(samples=True)
        c0, t0 = cpu(), time.monotonic()
        perf = await asyncio.create_subprocess_exec(
            "taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(dns_port), "-d", str(qfile),
            "-l", str(a.seconds), "-Q", str(a.qps), "-c", "4", "-t", "2",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        out = (await perf.communicate())[0].decode()
        elapsed = time.monotonic() - t0
        used = cpu() - c0
        s1 = await server.prober.stats(samples=True)
        n_lag = len(s1["lags"]) - len(s0["lags"]) if len(s1["lags"]) < 100_000 else 20_000
        n_dur = len(s1["durations"]) - len(s0["durations"]) if len(s1["durations"]) < 100_000 else 20_000
        lags, durs = s1["lags"][-n_lag:], s1["durations"][-n_dur:]
        m = {
            k: re.search(rf"{k}:\s+([\d.]+)", out)
            for k in (
                "Queries sent",
                "Queries completed",
                "Queries lost",
                "Queries per second",
                "Average Latency \\(s\\)",
            )
        }
        return {
            "members": a.members,
            "targets": s1["targets"],
            "load_s": load_s,
            "scheduled_per_s": s1["targets"] / a.interval,
            "probes_per_s": (s1["probes"] - s0["probes"]) / elapsed,
            "failed": s1["failures"] - s0["failures"],
            "lag_p50_ms": pct(lags, 0.5) * 1e3,
            "lag_p99_ms": pct(lags, 0.99) * 1e3,
            "dur_p50_ms": pct(durs, 0.5) * 1e3,
            "dur_p99_ms": pct(durs, 0.99) * 1e3,
            "dns_cpu_pct": used / elapsed * 100,
            "prober_cpu_pct": (s1["cpu"] - s0["cpu"]) / elapsed * 100,
            "dns_qps": float(m["Queries per second"].group(1)) if m["Queries per second"] else float("nan"),
            "dns_lost": float(m["Queries lost"].group(1)) if m["Queries lost"] else float("nan"),
            "dns_avg_latency_ms": float(m["Average Latency \\(s\\)"].group(1)) * 1e3
            if m["Average Latency \\(s\\)"]
            else float("nan"),
        }
    finally:
        await server.prober.stop()
        await server.close()
        targets.terminate()
        targets.wait(10)


def main() -> int:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--members", type=int, default=5000)
    ap.add_argument("--interval", type=float, default=1.0)
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--qps", type=int, default=5000)
    ap.add_argument("--concurrency", type=int, default=512)
    a = ap.parse_args()
    if a.members > 250 * 250:
        sys.exit("at most 62500 members (127.1.0.0/16)")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.sched_setaffinity(0, {0})
    work = Path(tempfile.mkdtemp(prefix="gslb-scale-"))
    try:
        try:
            import uvloop

            res = uvloop.run(run(a, work))
        except ImportError:
            res = asyncio.run(run(a, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for k, v in res.items():
        print(f"{k:22} {v:12.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
