"""Replies kept per routing decision (answer.cache.memo_hit) and the C batch loop
(gslb/server/transport/_fastpath.c) give exactly the answers of the straightforward path.

Balanced names here have several members (weighted draws, rotation, the nearest of
several multi-member pools), so an answer is one of several: equality byte for byte
holds only if the fast paths draw from the RNG exactly as the policies do, and
answer a new client subnet exactly as its own pick would. Health changes and a
reload come in the middle of the stream.
"""

from __future__ import annotations

import collections
import ipaddress
import random
import select
import socket
import types
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import pytest

from gslb.answer import balanced, cache
from gslb.answer.build import build_state
from gslb.answer.geo.maxmind import MaxMindGeo
from gslb.answer.respond import respond
from gslb.answer.state import ClientAddr, ServingState
from gslb.dns.cookies import Cookies
from gslb.dns.tsig import Keyring
from gslb.health.view import HealthView
from gslb.server.metrics import QueryStats
from gslb.server.transport import udp
from gslb.zones.load import load_zone
from tests.conftest import ROOT
from tests.geodb import write_asn, write_city

SHARED = ROOT.parent / "shared" / "geoip" / "GeoIP2-City-Test.mmdb"

POOLS = """
zone: fp.test.
nameservers: {ns1.fp.test.: [192.0.2.53]}
pools:
  west:
    location: {lat: 37.4, lon: -122.1}
    members: [{address: 192.0.2.1, weight: 1}, {address: 192.0.2.2, weight: 3}]
  east: {location: {lat: 40.7, lon: -74.0}, members: [{address: 192.0.2.11}, {address: 192.0.2.12}]}
  eu:
    location: {lat: 50.1, lon: 8.7}
    members: [{address: 192.0.2.21, weight: 5}, {address: 192.0.2.22}]
  ap: {location: {lat: 1.35, lon: 103.8}, members: [{address: 192.0.2.31}]}
  trio:
    members: [{address: 192.0.2.41}, {address: 192.0.2.42, weight: 2}, {address: 192.0.2.43, weight: 4}]
  v6: {members: [{address: "2001:db8::1"}, {address: "2001:db8::2"}]}
records:
  www: [{type: A, value: 192.0.2.80}]
"""

BALANCED = """  geo:
    - types: [A]
      rules:
        - {geos: [NA-US-CA], pools: [west]}
        - {geos: [US], pools: [east]}
        - {geos: [EU], pools: [eu]}
        - {subnets: [10.1.0.0/16, "2001:db8:99::/48"], pools: [ap]}
        - {pools: [trio]}
  near:
    - types: [A]
      answer: {select: closest}
      rules: [{pools: [west, east, eu, ap]}]
  rot:
    - types: [A, AAAA]
      answer: {select: all}
      rules: [{pools: [trio, v6]}]
  two:
    - types: [A]
      answer: {select: weighted, count: 2}
      rules: [{pools: [trio]}]
  sticky:
    - types: [A]
      answer: {select: hashed}
      rules: [{pools: [trio]}]
  prio:
    - types: [A]
      answer: {select: first}
      rules: [{geos: [EU], pools: [eu]}, {pools: [east]}]
  plain:
    - types: [A]
      rules: [{pools: [trio]}]
"""


def _zone_text() -> str:
    return POOLS + BALANCED


@pytest.fixture(scope="module")
def geo(tmp_path_factory: pytest.TempPathFactory) -> MaxMindGeo:
    d = tmp_path_factory.mktemp("geo")
    city = SHARED if SHARED.is_file() else write_city(d / "c.mmdb")
    return MaxMindGeo(city, write_asn(d / "a.mmdb"))


def _state(tmp_path: Path, geo: MaxMindGeo, serial: int = 1) -> ServingState:
    f = tmp_path / "fp.test.yaml"
    f.write_text(_zone_text())
    z = load_zone(f, geo_db=True, asn_db=True)
    return build_state([(z, serial)], geo=geo).with_counts(collections.Counter())


def _queries(geo: MaxMindGeo, n: int, seed: int) -> Iterator[bytes]:
    """Queries as resolvers send them: balanced and static names, ECS from subnets in the
    database's networks and outside it (a few hundred, so subnets recur), some with a
    cookie, some without EDNS, some names that do not exist."""
    rnd = random.Random(seed)
    starts = list(geo.leaves(4).starts)
    subnets: list[tuple[str, int]] = []
    for _ in range(300):
        if rnd.random() < 0.75:
            a = rnd.choice(starts) if rnd.random() < 0.7 else rnd.getrandbits(32)
            if rnd.random() < 0.1:
                a = (10 << 24) | (1 << 16) | rnd.getrandbits(16)
            src = rnd.choice([24, 24, 24, 20, 32])
            net = ipaddress.ip_network((a >> (32 - src) << (32 - src), src))
        else:
            a6 = rnd.getrandbits(128) if rnd.random() < 0.7 else (0x20010DB80099 << 80) | rnd.getrandbits(80)
            src = rnd.choice([56, 48, 64])
            net = ipaddress.ip_network((a6 >> (128 - src) << (128 - src), src))
        subnets.append((str(net.network_address), src))
    names = ["geo", "near", "rot", "two", "sticky", "prio", "plain", "www", "nope"]
    for i in range(n):
        name = rnd.choice(names) + ".fp.test."
        rdtype = "AAAA" if name.startswith("rot") and rnd.random() < 0.3 else "A"
        kind = rnd.random()
        opts: list[dns.edns.Option] = []
        if kind < 0.8:
            addr, src = rnd.choice(subnets)
            opts.append(dns.edns.ECSOption(addr, src))
        if 0.8 <= kind < 0.85:
            opts.append(dns.edns.GenericOption(dns.edns.OptionType.COOKIE, rnd.randbytes(8)))
        q = dns.message.make_query(name, rdtype, use_edns=False if kind > 0.95 else 0, options=opts)
        q.id = i & 0xFFFF
        yield q.to_wire()


def _holder(state: ServingState, seed: int) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        state=state,
        rng=random.Random(seed),
        stats=QueryStats(),
        query_log_every=0,
        rrl=None,
        cookies=Cookies((b"k" * 16,)),
        nocookie_udp=1232,
        keyring=Keyring(),
    )


def _events(state: ServingState, step: int, tmp_path: Path, geo: MaxMindGeo) -> ServingState:
    """What happens to the state during the stream: members go down and come back, a
    reload compiles a new state."""
    keys = sorted({k for p in state.plans.values() for k in p.member_keys})
    if step == 1:  # west's and trio's first members down: draws among fewer members
        return state.with_health(
            HealthView(frozenset(k for k in keys if k[2] in ("192.0.2.2", "192.0.2.41")), 1)
        )
    if step == 2:  # every member of east and eu down: closest and rules move on
        down = frozenset(k for k in keys if k[1] in ("east", "eu"))
        return state.with_health(HealthView(down, 2))
    if step == 3:  # a reload: a new compiled state, new caches
        return _state(tmp_path, geo, 2).with_health(state.health)
    return state.with_health(HealthView(frozenset(), 4))


def test_replies_kept_per_decision_equal_the_full_pick(
    tmp_path: Path, geo: MaxMindGeo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """respond() with its memo against respond() that never keeps a reply: the same bytes,
    the same counters, and the RNG left in the same state (the same draws)."""
    fast = _state(tmp_path, geo)
    slow = _state(tmp_path, geo)
    rf, rs = random.Random(5), random.Random(5)
    packets = list(_queries(geo, 6000, 1))
    hits = 0
    for i, p in enumerate(packets):
        if i and i % 1500 == 0:
            fast, slow = _events(fast, i // 1500, tmp_path, geo), _events(slow, i // 1500, tmp_path, geo)
            fast, slow = fast.with_counts(collections.Counter()), slow.with_counts(collections.Counter())
        got = respond(p, fast, "192.0.2.200", True, rf)
        with monkeypatch.context() as m:
            m.setattr(cache, "memo_fill", lambda *a, **k: None)
            want = respond(p, slow, "192.0.2.200", True, rs)
        assert got == want, (i, dns.message.from_wire(p).question)
        if i % 1500 == 1499:
            assert fast.balanced_counts == slow.balanced_counts
        hits += sum(1 for e in fast.udp_cache.values() if not isinstance(e, tuple) and e.memo) > 0
    assert rf.getstate() == rs.getstate()
    entries = [e for e in fast.udp_cache.values() if not isinstance(e, tuple)]
    kept = [e for e in entries if e.memo]
    # the multi-member names are kept (one draw each), the hashed one and count 2 are not
    assert {e.name.split(b"\x02fp")[0][1:] for e in kept} >= {b"geo", b"near", b"rot", b"prio", b"plain"}
    assert not any(e.name.startswith((b"\x06sticky", b"\x03two")) for e in kept)


def test_tables_give_answer_classes(tmp_path: Path, geo: MaxMindGeo) -> None:
    """Two clients with the same compiled key get the same pick from any health: the key
    is all a kept reply depends on (closest: the order of the pools by distance)."""
    state = _state(tmp_path, geo)
    near = state.plans[b"\x04near\x02fp\x04test\x00"]
    assert near.decisions is not None and near.decisions.classes
    rnd = random.Random(2)
    starts = list(geo.leaves(4).starts)
    seen: dict[int, tuple[int, ...]] = {}
    keys = sorted(near.member_keys)
    downs = [frozenset(x for x in keys if x[1] == pool) for pool in ("west", "east", "eu", "ap")]
    plans = [state.with_health(HealthView(d, h + 1)).plans[near.record.name] for h, d in enumerate(downs)]
    for _ in range(4000):
        a = rnd.choice(starts) + rnd.getrandbits(4) if rnd.random() < 0.8 else rnd.getrandbits(32)
        k = near.decisions.key(4, a % 2**32, 24)
        if k is None:
            continue
        picks = []
        for plan in plans:
            ca = ClientAddr(4, a % 2**32, 24, True)
            got = balanced.pick_tuple(plan, 1, None, "", random.Random(0), geo, {}, ca)  # type: ignore[arg-type]
            picks.append(hash((got[4], got[1])))
        assert seen.setdefault(k, tuple(picks)) == tuple(picks), hex(a)
    assert len(seen) > 3


def test_the_c_loop_is_built_where_it_can_be() -> None:
    """Where there is a C compiler and Python's headers (CI installs both: .ci/system-deps),
    pip has built gslb.server.transport._fastpath and the server uses it; the test below is not skipped."""
    import os
    import shutil
    import sysconfig

    headers = Path(sysconfig.get_paths()["include"]) / "Python.h"
    if not (shutil.which("cc") and headers.is_file()):
        pytest.skip("no C compiler or no Python headers: the pure-Python path serves")
    assert os.environ.get("GSLB_PURE_PYTHON", "") in ("", "0")
    assert udp.FAST_BATCHER is not None, (
        "gslb.server.transport._fastpath was not built (pip install -e . builds it)"
    )
    assert udp.udp_path() == "mmsg (C)"


needs_c = pytest.mark.skipif(
    udp.FAST_BATCHER is None, reason="gslb.server.transport._fastpath is not built here"
)


@needs_c
def test_c_loop_answers_as_python_does(tmp_path: Path, geo: MaxMindGeo) -> None:
    """gslb.server.transport._fastpath.Batcher over a real UDP socket on loopback, against
    gslb.server.transport.udp.handle on a twin state: every reply byte for byte, the query
    and balanced counters, the RNG's state; most datagrams answered in C."""
    a, b = _holder(_state(tmp_path, geo), 9), _holder(_state(tmp_path, geo), 9)
    server = udp.udp_socket("127.0.0.1", 0)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(2)
    ctr = types.SimpleNamespace(errors=0, seen=0)
    batcher = udp.FAST_BATCHER(server.fileno(), a, udp.handle, ctr)
    try:
        for i, p in enumerate(_queries(geo, 8000, 3)):
            if i and i % 2000 == 0:
                a.state = _events(a.state, i // 2000, tmp_path, geo).with_counts(a.state.balanced_counts)
                b.state = _events(b.state, i // 2000, tmp_path, geo).with_counts(b.state.balanced_counts)
            client.sendto(p, server.getsockname())
            select.select([server], [], [], 2)
            assert batcher.run() == 1
            want = udp.handle(ctr, b, p, "127.0.0.1")
            if want is None:
                continue
            assert client.recv(4096) == want, (i, dns.message.from_wire(p).question)
        assert a.stats.queries == b.stats.queries
        assert a.state.balanced_counts == b.state.balanced_counts
        assert a.rng.getstate() == b.rng.getstate()
        assert batcher.errors == 0
        # two of the nine names are never kept (hashed, count 2), nor cookie queries, nor
        # IPv6 clients of a name with IPv6 subnet rules; after each event the memos refill
        assert batcher.fast > 0.45 * (batcher.fast + batcher.slow), (batcher.fast, batcher.slow)
    finally:
        server.close()
        client.close()
