"""How long a zone PUT on one node takes to be answered by every node
(``zones_from: cluster``), with a 3-member etcd started here and three gslb nodes on
loopback:

    python bench/cluster_zones.py                 # 50 edits, then 50 with one etcd member down
    python bench/cluster_zones.py --edits 20 --records 10000

Each edit PUTs a new version of the zone (its ``www`` address changed) to one node, in
turn, and polls every node over UDP (every millisecond) until it answers the new
address. Timed from sending the PUT: its 200 (the node that took it serves it then), and
the last node answering. Printed: p50 and p99 (and the worst) of each, with all three
etcd members, then with one of them killed (a follower or the leader, whichever it is).
Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import dns.message  # noqa: E402
import dns.query  # noqa: E402

from tests.conftest import GslbProcess  # noqa: E402
from tests.etcd import EtcdCluster  # noqa: E402

TOKEN = "bench-token"


def zone(records: int, addr: str) -> str:
    lines = ["zone: bench-cz.test.", "nameservers: {ns1.bench-cz.test.: [192.0.2.53]}", "records:",
             f"  www: [{{type: A, value: {addr}}}]"]  # fmt: skip
    lines += [
        f"  h{i}: [{{type: A, value: 10.{i // 62500 % 250}.{i // 250 % 250}.{i % 250}}}]"
        for i in range(records)
    ]
    return "\n".join(lines) + "\n"


def answer(port: int) -> str:
    q = dns.message.make_query("www.bench-cz.test.", "A")
    try:
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=0.5)
    except dns.exception.Timeout:
        return ""
    return r.answer[0][0].address if r.answer else ""


def put(srv: GslbProcess, text: str) -> None:
    url = f"http://127.0.0.1:{srv.api_port}/v1/zones/bench-cz.test"
    req = urllib.request.Request(url, data=text.encode(), method="PUT")
    req.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()


def rounds(nodes: list[GslbProcess], edits: int, records: int, start: int) -> tuple[list[float], list[float]]:
    took_put, took_all = [], []
    for i in range(edits):
        addr = f"192.0.2.{(start + i) % 250 + 1}"
        text = zone(records, addr)
        t0 = time.monotonic()
        put(nodes[i % len(nodes)], text)
        took_put.append(time.monotonic() - t0)
        waiting = {s.port for s in nodes}
        while waiting:
            waiting = {p for p in waiting if answer(p) != addr}
            if waiting:
                time.sleep(0.001)
            if time.monotonic() - t0 > 30:
                sys.exit(f"edit {i}: not answered everywhere after 30 s")
        took_all.append(time.monotonic() - t0)
    return took_put, took_all


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def show(what: str, xs: list[float]) -> None:
    print(f"  {what:34} p50 {statistics.median(xs) * 1000:6.0f} ms   p99 {pct(xs, 99) * 1000:6.0f} ms   "
          f"worst {max(xs) * 1000:6.0f} ms")  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edits", type=int, default=50)
    ap.add_argument("--records", type=int, default=100)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        etcd = EtcdCluster(t / "etcd", members=3)
        (t / "token").write_text(TOKEN)
        prefix = f"/bench-{uuid.uuid4().hex[:8]}/"
        nodes = []
        try:
            for n in ("a", "b", "c"):
                (t / f"zones-{n}").mkdir()
                nodes.append(GslbProcess(
                    t / f"zones-{n}", t / f"{n}.log",
                    ["--cluster", etcd.url, "--node", n, "--cluster-prefix", prefix,
                     "--zones-from", "cluster", "--api-zones", "*", "--api-token-file", str(t / "token")],
                    state_dir=t / f"state-{n}",
                ))  # fmt: skip
            time.sleep(2)
            put(nodes[0], zone(args.records, "192.0.2.250"))
            time.sleep(1)
            print(f"zone of {args.records + 1} records, {args.edits} edits, PUT to each of 3 nodes in turn:")
            p, a = rounds(nodes, args.edits, args.records, 0)
            print(" etcd: 3 members")
            show("PUT until its 200", p)
            show("PUT until every node answers it", a)
            etcd.kill(2)
            time.sleep(2)
            p, a = rounds(nodes, args.edits, args.records, 100)
            print(" etcd: 2 of 3 members (one killed)")
            show("PUT until its 200", p)
            show("PUT until every node answers it", a)
        finally:
            for s in nodes:
                s.stop()
            etcd.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
