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
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.rdatatype
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
  cdn-a: {members: [{target: www.cdn-a.example.net., weight: 3}, {target: edge.cdn-a.example.net.}]}
  cdn-b: {members: [{target: www.cdn-b.example.org.}]}
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
  cdn:
    - types: [CNAME]
      rules: [{geos: [EU], pools: [cdn-b, cdn-a]}, {pools: [cdn-a, cdn-b]}]
"""


def _zone_text() -> str:
    return POOLS + BALANCED


@pytest.fixture(scope="module")
def geo(tmp_path_factory: pytest.TempPathFactory) -> MaxMindGeo:
    d = tmp_path_factory.mktemp("geo")
    city = SHARED if SHARED.is_file() else write_city(d / "c.mmdb")
    return MaxMindGeo(city, write_asn(d / "a.mmdb"))


def _state(tmp_path: Path, geo: MaxMindGeo, serial: int = 1) -> ServingState:
    """The zone's state; signed (Ed25519: deterministic signatures, so twin states sign
    alike) when the test has put a key at fp.key."""
    f = tmp_path / "fp.test.yaml"
    key = tmp_path / "fp.key"
    f.write_text(_zone_text() + (f"dnssec: {{key: {key}}}\n" if key.exists() else ""))
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
    names = ["geo", "near", "rot", "two", "sticky", "prio", "plain", "cdn", "www", "nope"]
    for i in range(n):
        name = rnd.choice(names) + ".fp.test."
        rdtype = "AAAA" if name.startswith("rot") and rnd.random() < 0.3 else "A"
        if name.startswith("cdn"):  # a balanced CNAME answers every type the same way
            rdtype = rnd.choice(["A", "AAAA", "HTTPS", "CNAME"])
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
BATCHER: Any = udp.FAST_BATCHER


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
    batcher = BATCHER(server.fileno(), a, udp.handle, ctr)
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


SECRETS = (b"k" * 16, b"o" * 16)  # the first makes cookies, the second is still accepted


def _resolver_queries(geo: MaxMindGeo, n: int, seed: int) -> Iterator[bytes]:
    """Queries as validating resolvers send them: EDNS with DO=1 and a client cookie,
    then the server cookie the server gave them (made here as gslb would: the current
    secret, the old one, one past its renewal age, one forged), names in random case
    (0x20), ECS from many subnets; now and then a malformed cookie, a small UDP size, no
    EDNS."""
    from gslb.dns.cookies import address_bytes, server_cookie

    rnd = random.Random(seed)
    base = list(_queries(geo, n, seed))
    addr = address_bytes("127.0.0.1")
    now = int(time.time())
    clients = [rnd.randbytes(8) for _ in range(50)]
    for i, wire in enumerate(base):
        q = dns.message.from_wire(wire)
        name = q.question[0].name.to_text()
        if rnd.random() < 0.6:  # 0x20
            name = "".join(ch.upper() if rnd.random() < 0.5 else ch for ch in name)
        opts = [o for o in q.options if o.otype != dns.edns.OptionType.COOKIE]
        client = rnd.choice(clients)
        kind = rnd.random()
        if kind < 0.25:
            cookie = client
        elif kind < 0.75:
            cookie = client + server_cookie(SECRETS[0], client, addr, now - now % 300)
        elif kind < 0.8:
            cookie = client + server_cookie(SECRETS[1], client, addr, now - 60)  # rotation
        elif kind < 0.85:
            cookie = client + server_cookie(SECRETS[0], client, addr, now - 2000)  # renewed
        elif kind < 0.9:
            cookie = client + rnd.randbytes(16)  # forged
        elif kind < 0.92:
            cookie = rnd.randbytes(rnd.choice([5, 12, 41]))  # malformed: FORMERR
        else:
            cookie = b""
        if cookie:
            opts.append(dns.edns.GenericOption(dns.edns.OptionType.COOKIE, cookie))
        if rnd.random() < 0.5:
            rnd.shuffle(opts)  # the cookie before or after the ECS option
        payload = rnd.choice([1232, 1232, 4096, 1400, 512, 540])
        edns = -1 if rnd.random() < 0.04 else 0
        m = dns.message.make_query(
            name, q.question[0].rdtype, use_edns=edns, options=opts if edns == 0 else None, payload=payload,
            want_dnssec=edns == 0 and rnd.random() < 0.8,
        )  # fmt: skip
        m.id = i & 0xFFFF
        yield m.to_wire()


@needs_c
@pytest.mark.parametrize(
    ("rrl", "signed"),
    [
        (None, False),
        ((1e9, 2), False),
        ((0.001, 2), False),
        ((0.001, 1), False),
        (None, True),
        ((0.001, 2), True),
    ],
    ids=["rrl-off", "rrl-high", "rrl-limits", "rrl-slip-all", "signed", "signed-rrl-limits"],
)
def test_c_loop_answers_resolver_traffic_as_python_does(
    tmp_path: Path,
    geo: MaxMindGeo,
    rrl: tuple[float, int] | None,
    signed: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Resolver traffic (cookies, DO=1, 0x20, ECS), rate limiting on or off and the query
    log sampled, through the C loop (its rate limiter in C) and through
    gslb.server.transport.udp.handle (gslb.dns.rrl in Python): every reply byte for byte
    (slips and BADCOOKIE included), every counter, the RNG, the logged lines; and most
    datagrams answered in C. A rate of 0.001/s limits every answer after a key's first
    (the two clocks cannot disagree about a refill)."""
    import logging

    from gslb.dns.rrl import RateLimiter
    from gslb.server.metrics import log_query

    if signed:
        from gslb.dnssec import keys

        keys.write_new(tmp_path / "fp.key", "ed25519")
    a, b = _holder(_state(tmp_path, geo), 9), _holder(_state(tmp_path, geo), 9)
    assert bool(a.state.signers) == signed
    a.cookies, b.cookies = Cookies(SECRETS), Cookies(SECRETS)
    a.query_log_every = b.query_log_every = 7
    if rrl is not None:
        a.rrl, b.rrl = udp.rate_limiter(*rrl), RateLimiter(*rrl)
        assert type(a.rrl).__module__ == "gslb.server.transport._fastpath"
    server = udp.udp_socket("127.0.0.1", 0)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(2)
    ca, cb = types.SimpleNamespace(errors=0, seen=0), types.SimpleNamespace(errors=0, seen=0)
    batcher = BATCHER(server.fileno(), a, udp.handle, ca, log_query, udp.SLIP_OPT)
    logged: list[list[str]] = [[], []]
    sigs = 0
    caplog.set_level(logging.INFO, logger="gslb.query")
    try:
        for i, p in enumerate(_resolver_queries(geo, 6000, 4)):
            if i and i % 2000 == 0:
                a.state = _events(a.state, i // 2000, tmp_path, geo).with_counts(a.state.balanced_counts)
                b.state = _events(b.state, i // 2000, tmp_path, geo).with_counts(b.state.balanced_counts)
            client.sendto(p, server.getsockname())
            select.select([server], [], [], 2)
            caplog.clear()
            assert batcher.run() == 1
            logged[0] += [r.getMessage() for r in caplog.records]
            caplog.clear()
            want = udp.handle(cb, b, p, "127.0.0.1")
            logged[1] += [r.getMessage() for r in caplog.records]
            if want is None:  # dropped: nothing came (loopback delivers within sendmmsg)
                client.setblocking(False)
                with pytest.raises(BlockingIOError):
                    client.recv(4096)
                client.settimeout(2)
                continue
            got = client.recv(4096)
            assert got == want, (i, dns.message.from_wire(p))
            if signed and i % 10 == 0:
                r = dns.message.from_wire(got)
                sigs += any(rr.rdtype == dns.rdatatype.RRSIG for rr in r.answer + r.authority)
        assert a.stats.queries == b.stats.queries
        assert a.stats.cookies == b.stats.cookies and a.stats.cookies["valid"] > 1000
        assert (a.cookies.stats.valid, a.cookies.stats.fresh) == (
            b.cookies.stats.valid,
            b.cookies.stats.fresh,
        )
        assert a.stats.rrl == b.stats.rrl
        if rrl is not None and rrl[0] < 1:
            assert a.stats.rrl["dropped" if rrl[1] > 1 else "slipped"] > 1000
            assert a.stats.cookies["badcookie"] > 100
        assert a.state.balanced_counts == b.state.balanced_counts
        assert a.rng.getstate() == b.rng.getstate()
        assert ca.seen == cb.seen > 0 and logged[0] == logged[1] and len(logged[0]) == ca.seen // 7
        assert not signed or sigs > 150  # of 600 sampled (DO=1 for 80%, some limited or malformed)
        assert batcher.errors == 0
        # besides what the test above leaves to Python: each ECS subnet's first query of a
        # static name (its reply is kept per query), malformed cookies
        assert batcher.fast > 0.35 * (batcher.fast + batcher.slow), (batcher.fast, batcher.slow)
    finally:
        server.close()
        client.close()
