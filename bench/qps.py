"""Queries per second: gslb next to Knot DNS, same zone data, same run.

    python bench/qps.py [--seconds 10] [--runs 3] [--clients 4]

Each server is pinned to CPU 0 (taskset), dnsperf to CPU 1; every run is
--seconds long and the table shows medians over --runs runs, the server CPU
time per answered query (from /proc/PID/stat), and each figure as a ratio to
Knot's. Workloads:

  static    names of tests/conformance/conf.test.yaml (both servers)
  balanced  www.example.com A/AAAA from zones/ (weighted pick per query; gslb only)
  geo_ecs   tests/data/geo names with an ECS option (198.51.100.0/24): geo and ASN
            rules, select: closest and hashed, against GeoIP databases built by
            tests/geodb.py (gslb only)
  geo_ecs   tests/data/geo names with an ECS option (198.51.100.0/24): geo and ASN
            rules and select: closest against a GeoIP database built by
            tests/geodb.py (gslb only)
  nxdomain  random names under conf.test. (both servers)

Needs dnsperf and knotd (Debian packages dnsperf, knot). Traffic stays on 127.0.0.1.
dnsperf on one core tops out near 110-150k qps, so the C servers are not saturated:
their rows are a lower bound. Quote medians and ratios; this machine is shared.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        t.bind(("127.0.0.1", 0))
        port = int(t.getsockname()[1])
        u.bind(("127.0.0.1", port))
        return port


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def wait_udp(port: int, name: str) -> None:
    import dns.message
    import dns.query

    q = dns.message.make_query(name, "SOA")
    for _ in range(100):
        try:
            dns.query.udp(q, "127.0.0.1", port=port, timeout=0.3)
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"server on {port} does not answer")


def start_gslb(zdir: Path, port: int) -> subprocess.Popen[bytes]:
    sys.path.insert(0, str(ROOT))
    from tests.geodb import write_asn, write_city

    city, asn = write_city(zdir.parent / "city.mmdb"), write_asn(zdir.parent / "asn.mmdb")
    cmd = ["taskset", "-c", "0", sys.executable, "-m", "gslb", "--log-level", "warning", "serve",
           "--zones", str(zdir), "--listen", f"127.0.0.1:{port}", "--state-dir", "", "--no-api",
           "--geoip-db", str(city), "--asn-db", str(asn)]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_knot(work: Path, port: int) -> subprocess.Popen[bytes]:
    (work / "db").mkdir(exist_ok=True)
    shutil.copy(ROOT / "tests/conformance/conf.test.zone", work / "zone.db")
    (work / "knot.conf").write_text(f"""server:
    rundir: "{work}"
    listen: 127.0.0.1@{port}
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{work}/db"
log:
  - target: stderr
    any: error
zone:
  - domain: conf.test.
    file: "{work}/zone.db"
    zonefile-sync: -1
    journal-content: none
""")
    knotd = shutil.which("knotd") or "/usr/sbin/knotd"
    return subprocess.Popen(
        ["taskset", "-c", "0", knotd, "-c", str(work / "knot.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


ECS_OPTION = "8:00011800c63364"  # EDNS Client Subnet 198.51.100.0/24, scope 0


def dnsperf(port: int, qfile: Path, seconds: int, clients: int) -> float:
    extra = ["-E", ECS_OPTION] if qfile.stem == "geo_ecs" else []
    cmd = ["taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(qfile),
           "-l", str(seconds), "-c", str(clients), "-q", "500", "-t", "2", *extra]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    m = re.search(r"Queries per second:\s+([\d.]+)", out)
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    if not m:
        raise RuntimeError(out)
    if lost and int(lost.group(1)) > 0:
        print(f"  (dnsperf reports {lost.group(1)} lost queries)", file=sys.stderr)
    return float(m.group(1))


def query_files(work: Path) -> dict[str, Path]:
    static = [
        "conf.test. SOA",
        "static.conf.test. A",
        "static.conf.test. AAAA",
        "mail.conf.test. A",
        "conf.test. MX",
        "conf.test. NS",
        "alias.conf.test. A",
        "_sip._tcp.conf.test. SRV",
        "longtxt.conf.test. TXT",
        "ns1.conf.test. A",
    ]
    rnd = random.Random(1)
    files = {
        "static": static,
        "balanced": ["www.example.com. A", "www.example.com. AAAA", "app.example.com. A"],
        "geo_ecs": ["geo.geo.test. A", "near.geo.test. A", "sticky.geo.test. A"],
        "nxdomain": [f"n{rnd.randrange(10**9)}.conf.test. A" for _ in range(5000)],
    }
    out = {}
    for name, lines in files.items():
        p = work / f"{name}.txt"
        p.write_text("\n".join(lines) + "\n")
        out[name] = p
    return out


def measure(
    proc: subprocess.Popen[bytes], port: int, qfile: Path, seconds: int, runs: int, clients: int
) -> tuple[float, float]:
    qps, us = [], []
    for _ in range(runs):
        c0 = cpu_seconds(proc.pid)
        q = dnsperf(port, qfile, seconds, clients)
        c1 = cpu_seconds(proc.pid)
        qps.append(q)
        us.append((c1 - c0) / (q * seconds) * 1e6)
    return statistics.median(qps), statistics.median(us)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", type=int, default=4)
    args = ap.parse_args()
    for tool in ("dnsperf", "taskset"):
        if not shutil.which(tool):
            print(f"{tool} not found (apt-get install dnsperf)", file=sys.stderr)
            return 2
    work = Path(tempfile.mkdtemp(prefix="gslb-bench-"))
    zdir = work / "zones"
    zdir.mkdir()
    shutil.copy(ROOT / "tests/conformance/conf.test.yaml", zdir)
    shutil.copy(ROOT / "zones/example.com.yaml", zdir)
    shutil.copy(ROOT / "tests/data/geo/geo.test.yaml", zdir)
    qf = query_files(work)
    results: dict[tuple[str, str], tuple[float, float]] = {}
    servers = [("gslb", start_gslb, zdir), ("knot", start_knot, work)]
    try:
        for name, starter, arg in servers:
            port = free_port()
            proc = starter(arg, port)  # type: ignore[operator]
            try:
                wait_udp(port, "conf.test.")
                for wl, path in qf.items():
                    if name == "knot" and wl in ("balanced", "geo_ecs"):
                        continue
                    results[(name, wl)] = measure(proc, port, path, args.seconds, args.runs, args.clients)
                    print(f"{name:5} {wl:9} {results[(name, wl)][0]:10.0f} qps", file=sys.stderr)
            finally:
                proc.terminate()
                proc.wait(10)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{'server':6} {'workload':9} {'qps (median)':>13} {'CPU us/query':>13} {'qps vs knot':>12}")
    for (name, wl), (q, us) in results.items():
        ref = results.get(("knot", wl)) or results.get(("knot", "static"))
        ratio = q / ref[0] if ref else float("nan")
        print(f"{name:6} {wl:9} {q:13.0f} {us:13.1f} {ratio:12.2f}")
    print(
        f"\n{args.runs} runs x {args.seconds} s, dnsperf -c {args.clients} on CPU 1, servers on CPU 0; "
        "the balanced and geo_ecs rows are compared with knot's static figure"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
