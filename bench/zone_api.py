"""What a PUT through the zone API costs (gslb.server.zone_api), against a real server:

    python bench/zone_api.py                      # 10,000 records, 7 PUTs
    python bench/zone_api.py --records 1000 --puts 20

A gslb with the zone is started on free loopback ports. Each round PUTs a new version
of the whole zone (one record's address changed) and times, from the client:

- the PUT itself, until its 200: validation as ``gslb check`` does it, the write (fsync,
  rename, fsync of the directory) and the reload that swaps the new state in;
- from sending the PUT to the first DNS answer with the new serial.

Printed: medians and the worst of the rounds. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import dns.message
import dns.query

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"


def zone(n: int, version: int) -> str:
    lines = ["zone: bench-api.test.", "nameservers: {ns1.bench-api.test.: [192.0.2.53]}", "records:"]
    lines.append(f"  v: [{{type: TXT, value: '\"{version}\"'}}]")
    for i in range(n - 1):
        a, b = divmod(i, 250)
        lines.append(f"  h{i}: [{{type: A, value: 10.{a % 250}.{b}.1}}]")
    return "\n".join(lines) + "\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serial(port: int) -> int:
    q = dns.message.make_query("bench-api.test.", "SOA")
    r = dns.query.udp(q, "127.0.0.1", port=port, timeout=2)
    return int(r.answer[0][0].serial)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=10_000)
    ap.add_argument("--puts", type=int, default=7)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        zdir = Path(tmp) / "zones"
        zdir.mkdir()
        (zdir / "bench-api.test.yaml").write_text(zone(args.records, 0))
        (Path(tmp) / "token").write_text(TOKEN)
        dport, aport = free_port(), free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "gslb", "serve", "--zones", str(zdir), "--listen", f"127.0.0.1:{dport}",
             "--api", f"127.0.0.1:{aport}", "--api-token-file", str(Path(tmp) / "token"), "--api-zones", "*",
             "--state-dir", str(Path(tmp) / "state")],
            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    before = serial(dport)
                    break
                except (OSError, dns.exception.Timeout):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            puts, seen = [], []
            for v in range(1, args.puts + 1):
                body = zone(args.records, v).encode()
                req = urllib.request.Request(f"http://127.0.0.1:{aport}/v1/zones/bench-api.test", data=body,
                                             method="PUT")  # fmt: skip
                req.add_header("Authorization", f"Bearer {TOKEN}")
                t0 = time.monotonic()
                try:
                    with urllib.request.urlopen(req, timeout=120) as r:
                        new = json.loads(r.read())["serial"]
                except urllib.error.HTTPError as e:
                    sys.exit(f"PUT: {e.code} {e.read().decode()}")
                puts.append(time.monotonic() - t0)
                while serial(dport) != new:
                    time.sleep(0.001)
                seen.append(time.monotonic() - t0)
                assert new != before
                before = new
        finally:
            proc.terminate()
            proc.wait(10)
    print(f"zone of {args.records} records ({len(zone(args.records, 0)) / 1024:.0f} KiB), {args.puts} PUTs:")
    for what, xs in (("PUT until 200:           ", puts), ("PUT until the new serial:", seen)):
        print(f"  {what} median {statistics.median(xs) * 1000:.0f} ms, worst {max(xs) * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
