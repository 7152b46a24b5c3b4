"""What ``octodns-sync`` through the octoDNS provider (octodns_gslb/) costs, against a
real gslb on loopback:

    python bench/octodns_sync.py                  # 1,000 records, 3 rounds
    python bench/octodns_sync.py --records 5000

An octoDNS config of N records (A, AAAA, MX, TXT, CNAME in turn; every 50th a dynamic A
with two pools, a geo rule and a health check on 127.0.0.x, where nothing listens) is
synced to a gslb started on free ports. Timed, each round, with the wall clock of the
``octodns-sync`` process (its start-up included):

- the first sync (``--doit``: a plan of N creates, one PUT);
- a sync with nothing to do (the plan reads the zone back and finds no change);
- a sync of one changed record (``--doit``: one update, one PUT of the whole zone).

Printed: medians over the rounds (each round a fresh server). Traffic stays on
127.0.0.1 (the probes of the dynamic records' members included).
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TOKEN = "bench-token"
sys.path.insert(0, str(ROOT))

from tests.geodb import write_city  # noqa: E402


def records(n: int, version: int = 0) -> dict[str, object]:
    out: dict[str, object] = {"": {"type": "NS", "values": ["ns1.example.net.", "ns2.example.net."]}}
    for i in range(n - 1):
        a, b = divmod(i, 250)
        name = f"h{i}"
        if i % 50 == 0:
            out[name] = {
                "type": "A", "values": [f"10.{a % 250}.{b}.1"],
                "dynamic": {
                    "pools": {"eu": {"values": [{"value": f"127.1.{a % 250}.{b}"}]},
                              "us": {"values": [{"value": f"127.2.{a % 250}.{b}"}]}},
                    "rules": [{"geos": ["EU"], "pool": "eu"}, {"pool": "us"}],
                },
                "octodns": {"healthcheck": {"protocol": "TCP", "port": 9}},
            }  # fmt: skip
        elif i % 5 == 1:
            out[name] = {"type": "AAAA", "value": f"2001:db8::{i:x}"}
        elif i % 5 == 2:
            out[name] = {"type": "MX", "value": {"preference": 10, "exchange": f"mx{i}.example.net."}}
        elif i % 5 == 3:
            out[name] = {"type": "TXT", "value": f"v=spf1 include:s{i}.example.net -all"}
        elif i % 5 == 4:
            out[name] = {"type": "CNAME", "value": f"t{i}.example.net."}
        else:
            out[name] = {"type": "A", "value": f"10.{a % 250}.{b}.{2 + version}"}
    return out


def octo_dump(d: dict[str, object]) -> str:
    """As octoDNS writes its YAML (keys in its natural order, which its loader insists on)."""
    from octodns.yaml import safe_dump

    buf = io.StringIO()
    safe_dump(d, buf)
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sync(cfg: Path, *args: str) -> float:
    t0 = time.monotonic()
    out = subprocess.run(
        [str(BIN / "octodns-sync"), "--config-file", str(cfg), *args], capture_output=True, text=True,
        env={**os.environ, "GSLB_TOKEN": TOKEN}, check=False,
    )  # fmt: skip
    took = time.monotonic() - t0
    if out.returncode != 0:
        sys.exit(out.stderr[-3000:])
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    first, noop, one = [], [], []
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            (t / "config").mkdir()
            (t / "zones").mkdir()
            (t / "token").write_text(TOKEN)
            (t / "config" / "bench-octo.test.yaml").write_text(octo_dump(records(args.records)))
            dport, aport = free_port(), free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "gslb", "serve", "--zones", str(t / "zones"), "--listen",
                 f"127.0.0.1:{dport}", "--api", f"127.0.0.1:{aport}", "--api-token-file", str(t / "token"),
                 "--api-zones", "*", "--state-dir", str(t / "state"), "--geoip-db",
                 str(write_city(t / "city.mmdb"))],
                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                time.sleep(1.5)
                cfg = t / "octodns.yaml"
                cfg.write_text(yaml.safe_dump({
                    "providers": {
                        "config": {"class": "octodns.provider.yaml.YamlProvider",
                                   "directory": str(t / "config")},
                        "gslb": {"class": "octodns_gslb.GslbProvider", "url": f"http://127.0.0.1:{aport}",
                                 "token": "env/GSLB_TOKEN"},
                    },
                    "zones": {"bench-octo.test.": {"sources": ["config"], "targets": ["gslb"]}},
                }))  # fmt: skip
                first.append(sync(cfg, "--doit", "--force"))
                noop.append(sync(cfg))
                recs = records(args.records)
                recs["h5"] = {"type": "A", "value": "10.9.9.9"}
                (t / "config" / "bench-octo.test.yaml").write_text(octo_dump(recs))
                one.append(sync(cfg, "--doit"))
            finally:
                proc.terminate()
                proc.wait(10)
    print(
        f"octoDNS config of {args.records} records, {args.rounds} rounds (medians, octodns-sync wall clock):"
    )
    for what, xs in (
        ("first sync (--doit)", first),
        ("sync, nothing to do", noop),
        ("one change (--doit)", one),
    ):
        print(f"  {what:22} {statistics.median(xs):.2f} s (worst {max(xs):.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
