"""Soak: the server under steady load while everything around it misbehaves.

    python bench/soak.py [--minutes 10] [--qps 2000]

For --minutes, on loopback only: dnsperf sends a steady --qps of static and balanced
queries; three of five HTTP health targets (127.0.0.132-134) flap (stop/start), hang
and recover; the zone file is rewritten every 3 s, every third time broken on purpose;
the admin API drains and clears another member (m4) every 5 s. m0 always stays up, so
the pool is never all down and fail-open answers (every member) never happen. A
checker queries the balanced name 20 times a second and records every answer naming
a member that had been DOWN for longer than the failover bound (interval x fall +
timeout). Prints: queries sent
vs answered (lost must be 0), RSS at start and end, stale answers (must be 0),
exceptions in the log (must be 0). Exit status 1 when any of those fails.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import GslbProcess  # noqa: E402
from tests.targets import Target, free_port  # noqa: E402

HOSTS = ["127.0.0.131", "127.0.0.132", "127.0.0.133", "127.0.0.134", "127.0.0.135"]
INTERVAL, TIMEOUT, FALL, RISE = 1.0, 0.5, 2, 2
BOUND = INTERVAL * FALL + TIMEOUT


def zone(port: int, generation: int, broken: bool) -> str:
    members = ", ".join(f"{{address: {h}, name: m{i}}}" for i, h in enumerate(HOSTS))
    text = f"""zone: soak.test.
nameservers: {{ns1.soak.test.: [127.0.0.1]}}
checks:
  web: {{type: http, port: {port}, expect: {{body: ok}}, interval: {INTERVAL}s, timeout: {TIMEOUT}s,
         fall: {FALL}, rise: {RISE}}}
pools:
  p: {{check: web, members: [{members}]}}
records:
  www: [{{types: [A], answer: {{select: all}}, rules: [{{pools: [p]}}]}}]
  gen: [{{type: TXT, value: '"{generation}"'}}]
  static: [{{type: A, value: 127.0.0.1}}]
"""
    return text.replace("ttl", "tll") + "records: {}\n" if broken else text


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--qps", type=int, default=2000)
    a = ap.parse_args()
    seconds = a.minutes * 60
    work = Path(tempfile.mkdtemp(prefix="gslb-soak-"))
    port = free_port(HOSTS)
    targets = {h: Target(h, port) for h in HOSTS}
    (work / "zones").mkdir()
    zfile = work / "zones" / "soak.test.yaml"
    zfile.write_text(zone(port, 0, False))
    (work / "token").write_text("soak-token\n")
    srv = GslbProcess(
        work / "zones",
        work / "gslb.log",
        ["--api-token-file", str(work / "token"), "--watch-interval", "0.5"],
        state_dir=work / "state",
    )
    stop = threading.Event()
    down_since: dict[str, float] = {}  # target -> when it was broken (None while healthy)
    stale: list[str] = []
    checks = 0
    rnd = random.Random(1)

    def chaos() -> None:
        gen = 0
        t_zone = t_admin = time.monotonic()
        while not stop.wait(0.5):
            now = time.monotonic()
            h = rnd.choice(HOSTS[1:4])  # m0 and m4 are never broken: the pool is never all down
            t = targets[h]
            if h not in down_since and rnd.random() < 0.15:
                if rnd.random() < 0.5:
                    t.stop()
                else:
                    t.mode = "hang"
                down_since[h] = now
            elif h in down_since and rnd.random() < 0.1:
                t.mode = "ok"
                if t.server is None:
                    t.start()
                del down_since[h]
            if now - t_zone > 3:
                gen += 1
                tmp = zfile.with_suffix(".tmp")
                tmp.write_text(zone(port, gen, gen % 3 == 0))
                tmp.replace(zfile)
                t_zone = now
            if now - t_admin > 5:
                for action in ("drain", "clear"):
                    req = urllib.request.Request(
                        f"http://127.0.0.1:{srv.api_port}/v1/members/soak.test/p/m4/{action}",
                        method="POST",
                        headers={"Authorization": "Bearer soak-token"},
                    )
                    urllib.request.urlopen(req, timeout=5).read()
                t_admin = now

    def checker() -> None:
        nonlocal checks
        while not stop.wait(0.05):
            try:
                got = {rd.to_text() for rr in srv.query("www.soak.test.", "A", timeout=1).answer for rd in rr}
            except Exception as e:
                stale.append(f"checker query failed: {e}")
                continue
            checks += 1
            now = time.monotonic()
            for h, since in list(down_since.items()):
                if h in got and now - since > BOUND + 0.3:  # 0.3 s: the checker's own round trip
                    stale.append(
                        f"{time.strftime('%H:%M:%S')} {h} answered {now - since:.2f}s after it broke;"
                        f" answer {sorted(got)}{' (all members: fail-open)' if got == set(HOSTS) else ''},"
                        f" broken {sorted(down_since)}"
                    )

    qfile = work / "q.txt"
    qfile.write_text("www.soak.test. A\nstatic.soak.test. A\ngen.soak.test. TXT\nnope.soak.test. A\n")
    rss0 = rss_kb(srv.proc.pid)
    threads = [threading.Thread(target=chaos), threading.Thread(target=checker)]
    for t in threads:
        t.start()
    try:
        perf = subprocess.run(
            [
                "dnsperf",
                "-s",
                "127.0.0.1",
                "-p",
                str(srv.port),
                "-d",
                str(qfile),
                "-l",
                str(int(seconds)),
                "-Q",
                str(a.qps),
                "-c",
                "4",
                "-t",
                "2",
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
    finally:
        stop.set()
        for t in threads:
            t.join()
    rss1 = rss_kb(srv.proc.pid)
    _, metrics = (
        0,
        urllib.request.urlopen(f"http://127.0.0.1:{srv.api_port}/metrics", timeout=5).read().decode(),
    )
    srv.stop()
    for t in targets.values():
        t.close()
    log = srv.log()
    sent = int(re.search(r"Queries sent:\s+(\d+)", perf).group(1))  # type: ignore[union-attr]
    done = int(re.search(r"Queries completed:\s+(\d+)", perf).group(1))  # type: ignore[union-attr]
    lost = sent - done
    exceptions = len(re.findall(r"Traceback|internal error", log))
    reloads_failed = sum(
        float(m) for m in re.findall(r'gslb_zone_reloads_total\{result="failure"\} ([\d.e+]+)', metrics)
    )
    transitions = sum(
        float(m) for m in re.findall(r"gslb_health_transitions_total\{to=\"\w+\"\} ([\d.e+]+)", metrics)
    )
    result = {
        "minutes": a.minutes,
        "qps": a.qps,
        "queries_sent": sent,
        "queries_answered": done,
        "lost": lost,
        "rss_start_kb": rss0,
        "rss_end_kb": rss1,
        "checker_queries": checks,
        "stale_answers": len(stale),
        "exceptions_in_log": exceptions,
        "broken_reloads_rejected": reloads_failed,
        "health_transitions": transitions,
    }
    print(json.dumps(result, indent=1))
    for s in stale[:10]:
        print("stale:", s)
    failed = bool(lost or stale or exceptions)
    if failed:
        print(f"kept for inspection: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
