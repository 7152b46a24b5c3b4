"""Cluster mode, measured: drain propagation, answers while the store flaps, etcd traffic.

    python bench/cluster.py [--drains 40] [--flap-seconds 30] [--members 1000,5000]

Starts a 3-member etcd cluster (Debian's etcd) and gslb nodes on loopback, all on
free ports, and measures three things:

1. **Drain propagation**: a drain sent to node a's API, then the time until nodes b and
   c answer without the member (each queried over UDP every 2 ms), then a clear and the
   time until it is back; p50/p99 over ``--drains`` rounds.
2. **Answers while the store flaps**: node a answers a steady 2,000 queries/s (UDP, a
   Python client that matches replies by ID) for ``--flap-seconds`` with the store
   stable, then as long again while every etcd member is SIGSTOPped for 3 s and resumed
   for 3 s, over and over. Latency p50/p99/max and lost queries, side by side.
3. **etcd traffic per node** at ``--members`` members: three nodes' cluster layers
   (the real client, the real etcd) fed a prober's observations: bytes and requests one
   node sends and receives at start, in the steady state, and for a mass failure
   (every member down on every node at once).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import GslbProcess  # noqa: E402
from tests.etcd import EtcdCluster  # noqa: E402
from tests.targets import Target, free_port  # noqa: E402

TOKEN = "bench-token"
HOSTS = ["127.0.0.71", "127.0.0.73"]


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def api(srv: GslbProcess, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    req = urllib.request.Request(
        f"http://127.0.0.1:{srv.api_port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method=method,
    )
    req.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def query_bytes(qid: int, name: str = "www.c.test.") -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.rstrip(".").split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", 1, 1)


def a_records(reply: bytes) -> set[str]:
    """The A addresses of a reply to query_bytes (answers are name-compressed, 16 octets each)."""
    an = struct.unpack_from("!H", reply, 6)[0]
    pos = 12
    while reply[pos]:
        pos += 1 + reply[pos]
    pos += 5
    out = set()
    for _ in range(an):
        rdlen = struct.unpack_from("!H", reply, pos + 10)[0]
        if rdlen == 4:
            out.add(socket.inet_ntoa(reply[pos + 12 : pos + 16]))
        pos += 12 + rdlen
    return out


class Prober:
    """A UDP socket asking one node again and again."""

    def __init__(self, srv: GslbProcess) -> None:
        self.s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.s.connect(("127.0.0.1", srv.port))
        self.s.settimeout(1)
        self.n = 0

    def answers(self) -> set[str]:
        self.n = (self.n + 1) & 0xFFFF
        self.s.send(query_bytes(self.n))
        while True:
            r = self.s.recv(4096)
            if struct.unpack_from("!H", r)[0] == self.n:
                return a_records(r)


def zone(port: int, blind: bool = False) -> str:
    return f"""zone: c.test.
nameservers: {{ns1.c.test.: [192.0.2.53]}}
checks:
  web: {{type: http, port: {port}, path: /healthz, interval: 1s, timeout: 0.5s}}
pools:
  p: {{check: web, members: [{{address: {HOSTS[0]}, name: m1}}, {{address: {HOSTS[1]}, name: m2}}]}}
records:
  www: [{{types: [A], ttl: 5, answer: {{select: all}}, rules: [{{pools: [p]}}]}}]
"""


def start_nodes(
    work: Path, etcd: EtcdCluster, zones: dict[str, str], extra: tuple[str, ...] = ()
) -> list[GslbProcess]:
    (work / "token").write_text(TOKEN)
    out = []
    for name, text in zones.items():
        zdir = work / f"zones-{name}"
        zdir.mkdir(exist_ok=True)
        (zdir / "c.test.yaml").write_text(text)
        out.append(
            GslbProcess(
                zdir,
                work / f"{name}.log",
                ["--cluster", etcd.url, "--node", name, "--api-token-file", str(work / "token"), *extra],
                state_dir=work / f"state-{name}",
            )
        )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if all(len(api(s, "GET", "/v1/status")["cluster"]["nodes"]) == len(out) for s in out):
            return out
        time.sleep(0.1)
    raise RuntimeError("the nodes did not see each other")


def propagation(work: Path, etcd: EtcdCluster, rounds: int) -> None:
    port = free_port(HOSTS)
    targets = [Target(h, port) for h in HOSTS]
    nodes = start_nodes(work, etcd, {n: zone(port) for n in "abc"})
    a, b, c = nodes
    pb, pc = Prober(b), Prober(c)
    both = set(HOSTS)
    while pb.answers() != both or pc.answers() != both:
        time.sleep(0.05)
    drain, back = [], []
    for _ in range(rounds):
        for action, want, out in (("drain", {HOSTS[1]}, drain), ("clear", both, back)):
            t0 = time.monotonic()
            api(a, "POST", f"/v1/members/c.test/p/m1/{action}", {})
            done = {"b": False, "c": False}
            while not all(done.values()):
                for k, p in (("b", pb), ("c", pc)):
                    if not done[k] and p.answers() == want:
                        done[k] = True
                        out.append(time.monotonic() - t0)
                time.sleep(0.002)
                if time.monotonic() - t0 > 10:
                    raise RuntimeError(f"{action} did not propagate")
            time.sleep(random.uniform(0.05, 0.3))
    for s in nodes:
        s.stop()
    for t in targets:
        t.close()
    print(f"\n## Drain propagation (node a's API -> nodes b and c answer it), {rounds} rounds x 2 nodes")
    print("| change | p50 ms | p99 ms | max ms |\n|---|---|---|---|")
    for label, xs in (("drain: member leaves the answers", drain), ("clear: member is back", back)):
        print(f"| {label} | {pct(xs, 50) * 1000:.1f} | {pct(xs, 99) * 1000:.1f} | {max(xs) * 1000:.1f} |")


async def load(port: int, seconds: float, qps: int) -> tuple[list[float], int, int]:
    """Send ``qps`` queries/s for ``seconds``; (latencies, sent, lost)."""
    loop = asyncio.get_running_loop()
    sent: dict[int, float] = {}
    lat: list[float] = []

    class P(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: Any) -> None:
            t = sent.pop(struct.unpack_from("!H", data)[0], None)
            if t is not None:
                lat.append(time.monotonic() - t)

    tr, _ = await loop.create_datagram_endpoint(P, remote_addr=("127.0.0.1", port))
    n = total = 0
    t0 = time.monotonic()
    while (now := time.monotonic()) - t0 < seconds:
        due = int((now - t0) * qps)
        while total < due:
            n = (n + 1) & 0xFFFF
            sent[n] = time.monotonic()
            tr.sendto(query_bytes(n))
            total += 1
        await asyncio.sleep(0.001)
    await asyncio.sleep(1.0)
    tr.close()
    return lat, total, len(sent)


def flapping(work: Path, etcd: EtcdCluster, seconds: float) -> None:
    port = free_port(HOSTS)
    targets = [Target(h, port) for h in HOSTS]
    nodes = start_nodes(work, etcd, {"a": zone(port), "b": zone(port)})
    a = nodes[0]
    rows = []
    for label, flap in (
        ("store stable", False),
        ("every etcd member stopped 8 s, resumed 4 s, repeatedly", True),
    ):
        stop = threading.Event()

        def flapper(stop: threading.Event = stop) -> None:
            while not stop.is_set():
                for i in range(3):
                    etcd.signal(i, signal.SIGSTOP)
                stop.wait(8)
                for i in range(3):
                    etcd.signal(i, signal.SIGCONT)
                stop.wait(4)

        th = threading.Thread(target=flapper) if flap else None
        if th:
            th.start()
        lat, total, lost = asyncio.run(load(a.port, seconds, 2000))
        stop.set()
        if th:
            th.join()
        rows.append((label, lat, total, lost))
    st = api(a, "GET", "/v1/status")["cluster"]
    for s in nodes:
        s.stop()
    for t in targets:
        t.close()
    print(f"\n## Node a answering 2,000 queries/s for {seconds:g} s (Python UDP client, loopback)")
    print("| store | queries | lost | p50 ms | p99 ms | max ms |\n|---|---|---|---|---|---|")
    for label, lat, total, lost in rows:
        print(
            f"| {label} | {total} | {lost} | {pct(lat, 50) * 1000:.2f} | {pct(lat, 99) * 1000:.2f} "
            f"| {max(lat) * 1000:.1f} |"
        )
    print(f"(node a lost and regained the store {st.get('reconnects', '?')} times)")


async def traffic(etcd: EtcdCluster, members: int, steady: float = 20.0) -> list[str]:
    """Three nodes' cluster layers (gslb.cluster.node.Cluster, the real etcd client) in
    this process, fed the observations a prober would give: all up at start, then all
    down at once. Probing itself is left out on purpose: three real probers of 5,000
    targets each do not fit on this 2-core machine beside etcd, and the store traffic
    depends only on what the probers report, not on how they found it."""
    from gslb.cluster.node import Cluster, Options
    from gslb.cluster.votes import Obs
    from gslb.server.options import endpoints

    keys = [("c.test.", "p", f"10.{i // 62500}.{i // 250 % 250}.{i % 250 + 1}") for i in range(members)]
    opts = [Options(tuple(endpoints(etcd.url)), n, prefix=f"/bench{members}/", lease_ttl=10) for n in "abc"]
    nodes = [Cluster(o, lambda: None) for o in opts]
    now = time.time()
    for c in nodes:
        c.set_zones(dict.fromkeys(keys, "majority"), {"c.test.": 1}, {"c.test.": "x"})
        c.set_own({k: Obs(True, "HTTP 200", now, 0.001) for k in keys})

    def total() -> tuple[float, int, int]:
        e = nodes[0].etcd
        return time.monotonic(), e.bytes_out + e.bytes_in, e.requests

    async def until(cond: Any, timeout: float = 120) -> float:
        t0 = time.monotonic()
        while not cond():
            if time.monotonic() - t0 > timeout:
                raise RuntimeError("the nodes did not converge")
            await asyncio.sleep(0.05)
        return time.monotonic() - t0

    def everyone_sees(up: bool) -> bool:
        return all(
            len(c.peer_obs.get(n, {})) == members and all(o.up == up for o in c.peer_obs[n].values())
            for c in nodes
            for n in "abc"
            if n != c.node
        )

    t0, b0, r0 = total()
    for c in nodes:
        await c.start()
    await until(lambda: everyone_sees(True))
    t1, b1, r1 = total()
    await asyncio.sleep(steady)
    t2, b2, r2 = total()
    later = time.time()
    for c in nodes:
        c.set_own({k: Obs(False, "timeout after 2s", later, 2.0) for k in keys})
    took = await until(lambda: everyone_sees(False))
    _, b3, r3 = total()
    for c in nodes:
        await c.stop()
    return [
        f"| {members} | start: publish {members} observations, list the others' | "
        f"{(b1 - b0) / 1024:.0f} KiB | {r1 - r0} requests | {t1 - t0:.1f} s |",
        f"| {members} | steady state ({steady:g} s: beats and keep-alives) | "
        f"{(b2 - b1) / 1024 / (t2 - t1):.2f} KiB/s | {(r2 - r1) / (t2 - t1):.2f} requests/s | |",
        f"| {members} | every member goes down on every node at once | {(b3 - b2) / 1024:.0f} KiB | "
        f"{r3 - r2} requests | {took:.1f} s until every node has every vote |",
    ]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--drains", type=int, default=40)
    ap.add_argument("--flap-seconds", type=float, default=30)
    ap.add_argument("--members", default="1000,5000")
    ap.add_argument("--only-traffic", action="store_true", help="skip parts 1 and 2")
    a = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="gslb-cluster-bench-"))
    etcd = EtcdCluster(work / "etcd")
    try:
        if not a.only_traffic:
            for sub in ("p", "f"):
                (work / sub).mkdir()
            propagation(work / "p", etcd, a.drains)
            flapping(work / "f", etcd, a.flap_seconds)
        etcd.close()
        rows = []
        for n in (int(x) for x in a.members.split(",") if x):
            e2 = EtcdCluster(work / f"etcd{n}")
            try:
                rows += asyncio.run(traffic(e2, n))
            finally:
                e2.close()
        print("\n## etcd traffic of one node of three (sent + received bodies, its own counters)")
        print("| members | when | bytes | requests | time |\n|---|---|---|---|---|")
        print("\n".join(rows))
    finally:
        etcd.close()
    print(f"\n(cpu count {os.cpu_count()}; work dir {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
