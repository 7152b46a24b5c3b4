"""CPU per HTTP health probe: gslb's own client against aiohttp's, same work.

    python bench/probe_cpu.py [--probes 4000] [--concurrency 50] [--runs 5]

Both clients do what a probe does: a new connection per probe, one GET with
``Connection: close``, the status line, headers and a small body checked for
"ok". The target is a plain asyncio HTTP server in another process on
127.0.0.1 (pinned to CPU 1 where possible, the clients to CPU 0). Reported:
CPU seconds of the probing process per probe (user + system), median of
``--runs`` runs per client, alternating the clients, and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gslb.health.checks import Target  # noqa: E402
from gslb.health.checks.http import HttpClient, check  # noqa: E402
from gslb.zones.model import Check  # noqa: E402

SERVER = """
import asyncio, sys
async def handle(r, w):
    try:
        await r.readuntil(b"\\r\\n\\r\\n")
        w.write(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok")
        await w.drain()
    except Exception:
        pass
    w.close()
async def main():
    s = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=1024)
    print(s.sockets[0].getsockname()[1], flush=True)
    await s.serve_forever()
asyncio.run(main())
"""


def cpu() -> float:
    t = os.times()
    return t.user + t.system


async def run_gslb(port: int, probes: int, concurrency: int) -> float:
    c = Check(name="web", type="http", port=port, interval=10, timeout=5, expect_body="ok")
    t = Target(c, "127.0.0.1", port)
    client = HttpClient()
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            ok, reason, _ = await check(client, t)
            assert ok, reason

    c0 = cpu()
    await asyncio.gather(*(one() for _ in range(probes)))
    return (cpu() - c0) / probes


async def run_aiohttp(port: int, probes: int, concurrency: int) -> float:
    import aiohttp

    sem = asyncio.Semaphore(concurrency)
    # a fresh connection per probe, as a health check must (no pooled keep-alive)
    conn = aiohttp.TCPConnector(force_close=True, limit=0)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout, auto_decompress=False) as session:

        async def one() -> None:
            async with sem, session.get(f"http://127.0.0.1:{port}/healthz") as r:
                body = await r.content.read(65536)
                assert r.status == 200 and b"ok" in body

        c0 = cpu()
        await asyncio.gather(*(one() for _ in range(probes)))
        return (cpu() - c0) / probes


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probes", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    srv = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        assert srv.stdout is not None
        port = int(srv.stdout.readline())
        if hasattr(os, "sched_setaffinity") and os.cpu_count() and os.cpu_count() >= 2:  # type: ignore[operator]
            os.sched_setaffinity(srv.pid, {1})
            os.sched_setaffinity(0, {0})
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:
            runner = asyncio.run
        results: dict[str, list[float]] = {"gslb": [], "aiohttp": []}
        for _ in range(args.runs):
            for name, fn in (("gslb", run_gslb), ("aiohttp", run_aiohttp)):
                results[name].append(runner(fn(port, args.probes, args.concurrency)))
                time.sleep(0.2)
        med = {k: statistics.median(v) for k, v in results.items()}
        print(f"{args.probes} probes x {args.runs} runs, concurrency {args.concurrency}, uvloop, 127.0.0.1")
        for k, v in results.items():
            runs = ", ".join(f"{x * 1e3:.3f}" for x in v)
            print(f"  {k:8} CPU per probe: median {med[k] * 1e3:.3f} ms  (runs: {runs})")
        print(f"  aiohttp / gslb: {med['aiohttp'] / med['gslb']:.2f}x")
    finally:
        srv.terminate()
        srv.wait(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
