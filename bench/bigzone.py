"""A large zone: load time, memory, and the longest pause in answers during a reload.

    python bench/bigzone.py [--static 100000] [--balanced 1000] [--reloads 5] [--rate 20000]

Writes one zone with --static A records and --balanced weighted names (subnet
rules over ten pools), starts gslb on it pinned to CPU 0 and reports:

* load: seconds from process start to the first answer, and RSS then;
* reload pause: while dnsperf sends --rate queries/s (CPU 1) and a ticker sends
  one query per millisecond and timestamps every reply, the zone file is edited
  and SIGHUP sent, --reloads times; for each reload, the longest gap between two
  consecutive ticker replies from the SIGHUP until the reload is logged as done
  (plus 0.5 s), the reload's duration, and queries lost.

Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = os.sysconf("SC_PAGE_SIZE")


def zone_text(n_static: int, n_bal: int, marker: str) -> str:
    out = ["zone: big.test.", "ttl: 300", "nameservers: {ns1.big.test.: [192.0.2.53]}", "pools:"]
    for p in range(10):
        out += [f"  p{p}:", "    members:"]
        out += [f"      - {{address: 10.{p}.0.{m + 1}, weight: {m + 1}}}" for m in range(4)]
    out += ["records:", f"  marker: [{{type: TXT, value: '\"{marker}\"'}}]"]
    for i in range(n_static):
        out.append(f"  h{i}: [{{type: A, value: 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}}}]")
    for i in range(n_bal):
        out += [
            f"  b{i}:",
            "    - types: [A]",
            "      answer: {select: weighted}",
            f"      rules: [{{subnets: [10.0.0.0/8], pools: [p{i % 10}]}}, {{pools: [p{(i + 1) % 10}]}}]",
        ]
    return "\n".join(out) + "\n"


def query(name: str, qid: int) -> bytes:
    wire = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    return struct.pack(">HHHHHH", qid, 0, 1, 0, 0, 0) + wire + b"\x00\x01\x00\x01"


class Ticker(threading.Thread):
    """One query per millisecond; keeps the arrival time of every reply."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.001)
        self.times: list[float] = []
        self.sends: list[float] = []
        self.sent = 0
        self.stop = False

    def run(self) -> None:
        nxt = time.monotonic()
        while not self.stop:
            now = time.monotonic()
            if now >= nxt:
                self.sock.sendto(
                    query(f"h{self.sent % 1000}.big.test", self.sent & 0xFFFF), ("127.0.0.1", self.port)
                )
                self.sent += 1
                self.sends.append(now)
                nxt += 0.001
            try:
                self.sock.recv(512)
                self.times.append(time.monotonic())
            except TimeoutError:
                pass


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--static", type=int, default=100_000)
    ap.add_argument("--balanced", type=int, default=1_000)
    ap.add_argument("--reloads", type=int, default=5)
    ap.add_argument("--rate", type=int, default=20_000, help="background dnsperf load, queries/s")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gslb-bigzone-"))
    zdir = work / "zones"
    zdir.mkdir()
    zfile = zdir / "big.test.yaml"
    zfile.write_text(zone_text(args.static, args.balanced, "v0"))
    print(f"zone: {args.static:,} A records + {args.balanced:,} balanced names, "
          f"{zfile.stat().st_size / 1e6:.1f} MB of YAML")  # fmt: skip
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = work / "gslb.log"
    t0 = time.monotonic()
    cmd = ["taskset", "-c", "0", sys.executable, "-m", "gslb", "serve", "--zones", str(zdir), "--listen",
           f"127.0.0.1:{port}", "--state-dir", "", "--no-api", "--watch-interval", "0"]  # fmt: skip
    with open(log, "wb") as lf:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=lf, stderr=subprocess.STDOUT)
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.settimeout(0.05)
    try:
        while True:
            if proc.poll() is not None:
                print(log.read_text())
                return 1
            probe.sendto(query("h1.big.test", 1), ("127.0.0.1", port))
            try:
                probe.recv(512)
                break
            except (TimeoutError, ConnectionRefusedError):
                pass
        load_s = time.monotonic() - t0
        print(f"load: first answer {load_s:.2f} s after start; RSS {rss_mb(proc.pid):.0f} MB")
        qfile = work / "q.txt"
        names = [f"h{i * 37 % args.static}.big.test. A" for i in range(5000)]
        names += [f"b{i}.big.test. A" for i in range(min(args.balanced, 1000))]
        qfile.write_text("\n".join(names) + "\n")
        perf = subprocess.Popen(
            [
                "taskset",
                "-c",
                "1",
                "dnsperf",
                "-s",
                "127.0.0.1",
                "-p",
                str(port),
                "-d",
                str(qfile),
                "-l",
                str(10 + args.reloads * 12),
                "-Q",
                str(args.rate),
                "-c",
                "4",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ticker = Ticker(port)
        ticker.start()
        time.sleep(3)
        rows = []
        for r in range(1, args.reloads + 1):
            zfile.write_text(zone_text(args.static, args.balanced, f"v{r}"))
            mark = len(log.read_text())
            sent_before = ticker.sent
            t_hup = time.monotonic()
            proc.send_signal(signal.SIGHUP)
            while "generation" not in log.read_text()[mark:]:
                time.sleep(0.01)
                if time.monotonic() - t_hup > 120:
                    raise RuntimeError("reload did not finish")
            t_done = time.monotonic()
            time.sleep(0.5)
            window = [t for t in ticker.times if t_hup <= t <= t_done + 0.5]
            gaps = [b - a for a, b in itertools.pairwise(window)]
            sends = [t for t in ticker.sends if t_hup <= t <= t_done + 0.5]
            send_gap = max((b - a for a, b in itertools.pairwise(sends)), default=0.0)
            if gaps:
                at = window[gaps.index(max(gaps))] - t_hup
                done = t_done - t_hup
                print(f"  (longest gap starts {at:.2f} s after SIGHUP, reload done at {done:.2f} s; "
                      f"longest gap in the ticker's sends {send_gap * 1000:.1f} ms)")  # fmt: skip
            rows.append(
                (t_done - t_hup, max(gaps) if gaps else float("inf"), ticker.sent - sent_before - len(window))
            )
            print(f"reload {r}: took {t_done - t_hup:.2f} s, longest gap between answers "
                  f"{max(gaps) * 1000:.1f} ms, RSS {rss_mb(proc.pid):.0f} MB")  # fmt: skip
            time.sleep(2)
        ticker.stop = True
        perf.send_signal(signal.SIGINT)  # dnsperf prints its statistics and exits
        out = perf.communicate()[0]
        m = re.search(r"Queries lost:\s+(\d+)", out)
        gap_med, gap_max = statistics.median(r[1] for r in rows) * 1000, max(r[1] for r in rows) * 1000
        print(f"\nmedian reload {statistics.median(r[0] for r in rows):.2f} s; longest gap median "
              f"{gap_med:.1f} ms, max {gap_max:.1f} ms; "
              f"dnsperf at {args.rate} qps lost {m.group(1) if m else '?'} queries")  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
