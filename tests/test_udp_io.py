"""UDP I/O paths: recvmmsg/sendmmsg batches and one-datagram-per-call agree.

A burst from many sockets lands in shared batches; every reply must go back to
the socket that asked, with its own ID and its question echoed byte for byte.
The reply cache must give the same bytes as a fresh answer, follow reloads,
and never keep answers that depend on chance (balanced names).
"""

from __future__ import annotations

import collections
import ipaddress
import random
import re
import select
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import dns.edns
import dns.message
import dns.rcode
import pytest

from gslb.answer.respond import respond
from gslb.answer.state import BalancedEntry
from gslb.server.metrics import QueryStats
from gslb.server.transport.udp import mmsg_available
from tests.conftest import DATA, ROOT, GslbProcess
from tests.test_differential_knot import QUERIES

CONF = ROOT / "tests" / "conformance" / "conf.test.yaml"


def _server(tmp_path: Path, name: str, io: str, zone: Path = CONF) -> GslbProcess:
    zdir = tmp_path / f"zones-{name}"
    zdir.mkdir()
    shutil.copy(zone, zdir / zone.name)
    return GslbProcess(zdir, tmp_path / f"{name}.log", ["--udp-io", io])


def _wire(name: str, rdtype: str, qid: int, edns: bool = True, ecs: bool = False) -> bytes:
    opts: list[dns.edns.Option] = [dns.edns.ECSOption("198.51.100.0", 24)] if ecs else []
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else False, payload=1232, options=opts)
    q.id = qid
    return q.to_wire()


def _ask_all(port: int, host: str, packets: list[bytes], timeout: float = 3.0) -> list[bytes | None]:
    """Send every packet at once from its own socket; collect one reply per socket."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks = [socket.socket(family, socket.SOCK_DGRAM) for _ in packets]
    try:
        for s, p in zip(socks, packets, strict=True):
            s.sendto(p, (host, port))
        replies: dict[int, bytes] = {}
        deadline = time.monotonic() + timeout
        while len(replies) < len(socks) and time.monotonic() < deadline:
            ready, _, _ = select.select([s for i, s in enumerate(socks) if i not in replies], [], [], 0.2)
            for s in ready:
                replies[socks.index(s)] = s.recv(65535)
        return [replies.get(i) for i in range(len(socks))]
    finally:
        for s in socks:
            s.close()


@pytest.mark.parametrize("io", ["mmsg", "asyncio"])
def test_burst_replies_reach_their_senders(tmp_path: Path, io: str) -> None:
    if io == "mmsg" and not mmsg_available():
        pytest.skip("recvmmsg is Linux-only")
    srv = _server(tmp_path, io, io)
    try:
        rnd = random.Random(7)
        asked: list[tuple[bytes, str]] = []
        for i in range(300):
            if i % 3 == 0:
                name = f"n{rnd.randrange(10**9)}.conf.test."
            else:
                name = rnd.choice(["static.conf.test.", "mail.conf.test.", "conf.test."])
            name = "".join(c.upper() if rnd.random() < 0.5 else c for c in name)  # 0x20 case
            asked.append((_wire(name, "A", rnd.randrange(65536), edns=i % 4 != 0), name))
        replies = _ask_all(srv.port, srv.host, [w for w, _ in asked])
        assert all(r is not None for r in replies), f"{replies.count(None)} of {len(replies)} unanswered"
        for (wire, name), reply in zip(asked, replies, strict=True):
            assert reply is not None
            m = dns.message.from_wire(reply)
            assert m.id == dns.message.from_wire(wire).id
            assert m.question[0].name.to_text() == name  # the question echoed, case and all
            want = dns.rcode.NXDOMAIN if name.lower().startswith("n") else dns.rcode.NOERROR
            assert m.rcode() == want, (name, m)
            assert (m.edns >= 0) == (dns.message.from_wire(wire).edns >= 0)
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.api_port}/metrics", timeout=5) as r:
            metrics = r.read().decode()
        series = re.findall(r'gslb_queries_total\{[^}]*zone="conf\.test\."[^}]*\} (\S+)', metrics)
        counted = sum(float(v) for v in series)
        assert counted == 300  # counted per zone, not per name: random names do not add series
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


@pytest.mark.skipif(not mmsg_available(), reason="recvmmsg is Linux-only")
def test_both_io_paths_give_the_same_bytes(tmp_path: Path) -> None:
    a, b = _server(tmp_path, "mmsg", "mmsg"), _server(tmp_path, "asyncio", "asyncio")
    try:
        packets = []
        for i, (name, rdtype) in enumerate(QUERIES):
            for edns in (True, False):
                packets.append(_wire(name, rdtype, 1000 + i, edns=edns, ecs=edns and i % 2 == 0))
        # twice: the second round is answered from the reply cache
        for _ in range(2):
            ra = _ask_all(a.port, a.host, packets)
            rb = _ask_all(b.port, b.host, packets)
            assert None not in ra and None not in rb
            assert ra == rb
    finally:
        a.stop()
        b.stop()


@pytest.mark.skipif(not mmsg_available(), reason="recvmmsg is Linux-only")
def test_ipv6_and_oversized_datagrams(tmp_path: Path) -> None:
    zdir = tmp_path / "zones"
    zdir.mkdir()
    shutil.copy(CONF, zdir)
    srv = GslbProcess(zdir, tmp_path / "v6.log", ["--udp-io", "mmsg"], host="::1")
    try:
        big = _wire("static.conf.test.", "A", 4242) + b"\x00" * 5000  # longer than a receive slot
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.settimeout(0.5)
            s.sendto(big, ("::1", srv.port))
            with pytest.raises(TimeoutError):
                s.recv(65535)
        replies = _ask_all(srv.port, "::1", [_wire("static.conf.test.", "AAAA", i) for i in range(40)])
        for i, r in enumerate(replies):
            assert r is not None
            m = dns.message.from_wire(r)
            assert m.id == i and m.answer and m.answer[0].to_text().endswith("2001:db8::100")
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.api_port}/metrics", timeout=5) as resp:
            assert 'gslb_packets_dropped_total{reason="too_long"} 1.0' in resp.read().decode()
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def test_cached_answers_follow_reloads(tmp_path: Path, server_factory: object) -> None:
    srv = server_factory(CONF)  # type: ignore[operator]
    before = srv.query("static.conf.test.")
    assert "192.0.2.100" in before.answer[0].to_text()
    srv.query("static.conf.test.")  # now in the reply cache
    zfile = srv.zones_dir / CONF.name
    text = zfile.read_text()
    zfile.write_text(text.replace("192.0.2.100", "192.0.2.99"))
    srv.signal(1)  # SIGHUP
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if "192.0.2.99" in srv.query("static.conf.test.").answer[0].to_text():
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the cached answer outlived the reload")


def test_cache_is_bounded_and_skips_balanced_names(monkeypatch: pytest.MonkeyPatch) -> None:
    import gslb.answer.cache as cache
    from gslb.answer.build import build_state
    from gslb.zones.load import load_zone

    monkeypatch.setattr(cache, "CACHE_MAX", 100)
    zone = load_zone(DATA / "zones" / "bal.test.yaml")
    state = build_state([(zone, 1)])
    rng = random.Random(1)
    stats = QueryStats()
    for i in range(1000):
        res = respond(_wire(f"r{i}.bal.test.", "A", i), state, "127.0.0.1", True, rng)
        assert res is not None
        stats.queries[res[1]] += 1
        assert len(state.udp_cache) <= 100
    assert len(stats.queries) == 1  # 1000 names, one (zone, type, rcode, transport) series
    seen = set()
    for i in range(200):
        res = respond(_wire("w.bal.test.", "A", i), state, "127.0.0.1", True, rng)
        assert res is not None
        seen.add(tuple(sorted(rr.to_text() for rr in dns.message.from_wire(res[0]).answer)))
    assert len(seen) > 1  # still a fresh weighted pick per query
    # the balanced query is kept parsed, never as a fixed reply
    kept = [v for k, v in state.udp_cache.items() if b"\x01w\x03bal" in k]
    assert kept and all(isinstance(v, BalancedEntry) for v in kept)


def test_remembered_picks_follow_health() -> None:
    """Hashed picks and closest pools are remembered per health snapshot, never across one."""
    from gslb.answer.build import build_state
    from gslb.answer.geo.maxmind import MaxMindGeo
    from gslb.health.view import HealthView
    from gslb.zones.load import load_zone
    from tests.geodb import write_asn, write_city

    tmp = Path(__import__("tempfile").mkdtemp())
    geo = MaxMindGeo(str(write_city(tmp / "c.mmdb")), str(write_asn(tmp / "a.mmdb")))
    zone = load_zone(DATA / "geo" / "geo.test.yaml", geo_db=True, asn_db=True)
    state = build_state([(zone, 1)], geo=geo)
    rng = random.Random(0)

    def ask(st: object, name: str, subnet: str) -> str:
        opts: list[dns.edns.Option] = [dns.edns.ECSOption(subnet.split("/")[0], int(subnet.split("/")[1]))]
        q = dns.message.make_query(name, "A", use_edns=0, options=opts)
        res = respond(q.to_wire(), st, "127.0.0.1", True, rng)  # type: ignore[arg-type]
        assert res is not None
        return str(dns.message.from_wire(res[0]).answer[0][0])

    first = ask(state, "sticky.geo.test.", "100.64.7.0/24")
    assert all(ask(state, "sticky.geo.test.", "100.64.7.0/24") == first for _ in range(5))
    down = state.with_health(HealthView(frozenset({("geo.test.", "quad", first)}), 1))
    moved = ask(down, "sticky.geo.test.", "100.64.7.0/24")
    assert moved != first and all(ask(down, "sticky.geo.test.", "100.64.7.0/24") == moved for _ in range(5))
    assert ask(state.with_health(HealthView(frozenset(), 2)), "sticky.geo.test.", "100.64.7.0/24") == first
    # closest: San Francisco goes west until west is down, then east (the next nearest)
    assert ask(state, "near.geo.test.", "198.51.100.0/24") == "192.0.2.1"
    west_down = state.with_health(HealthView(frozenset({("geo.test.", "west", "192.0.2.1")}), 3))
    assert ask(west_down, "near.geo.test.", "198.51.100.0/24") == "192.0.2.2"


@pytest.mark.parametrize("udp", [True, False])
def test_cached_balanced_answers_are_the_full_paths_bytes(udp: bool) -> None:
    """The reply cache's balanced shortcut splices what the full lookup would encode:
    same pick (same RNG state), same header, question case, OPT, ECS scope, truncation."""
    from gslb.answer.build import build_state
    from gslb.answer.geo.maxmind import MaxMindGeo
    from gslb.answer.respond import answer
    from gslb.zones.load import load_zone
    from tests.geodb import write_asn, write_city

    tmp = Path(__import__("tempfile").mkdtemp())
    geo = MaxMindGeo(str(write_city(tmp / "c.mmdb")), str(write_asn(tmp / "a.mmdb")))
    zones = [
        load_zone(DATA / "geo" / "geo.test.yaml", geo_db=True, asn_db=True),
        load_zone(DATA / "zones" / "bal.test.yaml"),
    ]
    state = build_state([(z, 1) for z in zones], geo=geo).with_counts(collections.Counter())
    counts = state.balanced_counts
    assert counts is not None
    names = [
        "geo.geo.test.",
        "near.geo.test.",
        "sticky.geo.test.",
        "prio.geo.test.",
        "noecs.geo.test.",
        "w.bal.test.",
        "every.bal.test.",
        "route.bal.test.",
        "failover.bal.test.",
        "W.Bal.TEST.",
    ]
    checked = 0
    for name in names:
        for rdtype in ("A", "AAAA"):
            for variant in range(6):
                opts: list[dns.edns.Option] = []
                if variant in (1, 4):
                    opts = [dns.edns.ECSOption("198.51.100.0", 24)]
                elif variant == 5:
                    opts = [dns.edns.ECSOption("192.0.2.0", 24)]
                edns = False if variant == 0 else 0
                payload = 512 if variant == 3 else 1232
                q = dns.message.make_query(name, rdtype, use_edns=edns, payload=payload, options=opts,
                                           want_dnssec=variant == 2)  # fmt: skip
                q.id = 4242
                wire = q.to_wire()
                for host in ("10.1.2.3", "192.0.2.7", "2001:db8:aa::1"):
                    before = collections.Counter(counts)
                    full = answer(wire, state, host, udp, random.Random(9))
                    after_full = collections.Counter(counts)
                    first = respond(wire, state, host, udp, random.Random(9))  # fills the cache
                    again = respond(wire[:0] + b"\x10\x92" + wire[2:], state, host, udp, random.Random(9))
                    assert full is not None and first is not None and again is not None
                    assert first[0] == full, (name, rdtype, variant, host)
                    assert again[0] == b"\x10\x92" + full[2:], (name, rdtype, variant, host)
                    assert again[1] == first[1]
                    # each of the three answers counted once (if it is a balanced answer at all),
                    # under the same (name, pool, outcome)
                    one = after_full - before
                    assert sum(one.values()) <= 1, (name, rdtype, variant, host, one)
                    assert counts - after_full == collections.Counter({k: 2 for k in one}), (name, rdtype)
                    checked += 1
    assert checked == len(names) * 2 * 6 * 3
    assert sum(counts.values()) > checked  # most of them were balanced answers
    assert any(isinstance(v, BalancedEntry) for v in (state.udp_cache if udp else state.tcp_cache).values())


def test_a_balanced_nodata_answer_counts_once(tmp_path: Path) -> None:
    """when_all_down: nodata with every member down: one answer, one count (the fast path
    used to count it and then hand it to the general lookup, which counted it again)."""
    from gslb.answer.build import build_state
    from gslb.zones.load import load_zone

    f = tmp_path / "n.test.yaml"
    f.write_text("""zone: n.test.
nameservers: {ns1.n.test.: [192.0.2.53]}
pools: {p: {members: [{address: 192.0.2.1, status: down}]}}
records:
  www: [{types: [A], rules: [{pools: [p]}], when_all_down: nodata}]
""")
    state = build_state([(load_zone(f), 1)]).with_counts(collections.Counter())
    wire = dns.message.make_query("www.n.test.", "A").to_wire()
    for i in range(3):
        got = respond(wire, state, "192.0.2.9", True, random.Random(1))
        assert got is not None
        reply = dns.message.from_wire(got[0])
        assert reply.rcode() == 0 and not reply.answer and reply.authority  # NODATA with the SOA
        assert state.balanced_counts == collections.Counter(
            {(b"\x03www\x01n\x04test\x00", "", "nodata"): i + 1}
        )


@pytest.mark.parametrize("udp", [True, False])
def test_other_subnets_answers_are_the_full_paths_bytes(udp: bool) -> None:
    """An ECS query from a client subnet not seen before is answered from the entry of the
    same query from another subnet (answer.cache.balanced_ecs): the bytes the full lookup gives
    for that subnet (rule, pool, pick, ECS scope, echoed address), and counted once."""
    from gslb.answer.build import build_state
    from gslb.answer.geo.maxmind import MaxMindGeo
    from gslb.answer.respond import answer
    from gslb.zones.load import load_zone
    from tests.geodb import CITY, write_asn, write_city

    tmp = Path(__import__("tempfile").mkdtemp())
    geo = MaxMindGeo(str(write_city(tmp / "c.mmdb")), str(write_asn(tmp / "a.mmdb")))
    zones = [load_zone(DATA / "geo" / "geo.test.yaml", geo_db=True, asn_db=True),
             load_zone(DATA / "zones" / "bal.test.yaml")]  # fmt: skip
    state = build_state([(z, 1) for z in zones], geo=geo).with_counts(collections.Counter())
    counts = state.balanced_counts
    assert counts is not None
    rng = random.Random(5)
    nets = [n.split("/")[0] for n in CITY]
    served = 0
    for name in ("geo.geo.test.", "near.geo.test.", "sticky.geo.test.", "noecs.geo.test.", "w.bal.test.",
                 "route.bal.test."):  # fmt: skip
        for source in (24, 25, 16, 32, 56, 48, 64, 128):
            fam = 4 if source <= 32 and source != 128 and source not in (56, 48, 64) else 6
            for i in range(40):
                if fam == 4:
                    base = nets[i % len(nets)] if ":" not in nets[i % len(nets)] and i % 2 else None
                    raw = (
                        int(ipaddress.IPv4Address(base)) + rng.getrandbits(8) if base else rng.getrandbits(32)
                    )
                    addr = str(
                        ipaddress.IPv4Network((raw >> (32 - source) << (32 - source), source)).network_address
                    )
                else:
                    raw = (0x20010DB8 << 96) | rng.getrandbits(96) if i % 2 else rng.getrandbits(128)
                    addr = str(
                        ipaddress.IPv6Network(
                            (raw >> (128 - source) << (128 - source), source)
                        ).network_address
                    )
                q = dns.message.make_query(name, "A", use_edns=0, options=[dns.edns.ECSOption(addr, source)])
                q.id = i
                wire = q.to_wire()
                before = collections.Counter(counts)
                full = answer(wire, state, "10.1.2.3", udp, random.Random(i))
                after_full = collections.Counter(counts)
                got = respond(wire, state, "10.1.2.3", udp, random.Random(i))
                assert full is not None and got is not None
                assert got[0] == full, (name, addr, source)
                assert counts - after_full == after_full - before, (name, addr)
                served += 1
    assert served == 6 * 8 * 40
    kept = state.udp_cache if udp else state.tcp_cache
    assert any(isinstance(k, tuple) for k in kept)  # answered from the entries of other subnets
