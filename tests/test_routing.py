"""Geo, ASN, closest, hashed and first routing through the real server, with
GeoIP databases built for the test (tests/geodb.py) and clients given as EDNS
Client Subnet (dnspython and dig +subnet)."""

from __future__ import annotations

import collections
import ipaddress
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import pytest

from gslb.answer.policies import REGISTRY, Candidates, PickContext
from tests.conftest import DATA, ROOT, GslbProcess
from tests.geodb import write_asn, write_city


@pytest.fixture(scope="module")
def geo_dbs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("geodb")
    return write_city(d / "city.mmdb"), write_asn(d / "asn.mmdb")


@pytest.fixture(scope="module")
def geo_server(geo_dbs: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[GslbProcess]:
    tmp = tmp_path_factory.mktemp("geo")
    zdir = tmp / "zones"
    zdir.mkdir()
    shutil.copy(DATA / "geo" / "geo.test.yaml", zdir)
    city, asn = geo_dbs
    srv = GslbProcess(zdir, tmp / "gslb.log", ["--geoip-db", str(city), "--asn-db", str(asn)])
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log()


def ask(srv: GslbProcess, name: str, ecs: str | None) -> tuple[list[str], int | None]:
    opts: list[dns.edns.Option] = []
    if ecs:
        net = ipaddress.ip_network(ecs)
        opts = [dns.edns.ECSOption(str(net.network_address), net.prefixlen)]
    r = srv.query(f"{name}.geo.test.", "A", options=opts)
    got = sorted(rd.to_text() for rr in r.answer for rd in rr)
    scope = None
    for o in r.options:
        if isinstance(o, dns.edns.ECSOption):
            scope = o.scopelen
    return got, scope


# (record, client subnet, expected answer, expected ECS scope or None = not checked)
ROUTES = [
    ("geo", "198.51.100.0/24", ["192.0.2.1"], 24),  # NA-US-CA (subdivision, octoDNS form)
    ("geo", "100.65.0.0/16", ["192.0.2.5"], 16),  # AS64501 (ASN database network /16)
    ("geo", "100.64.1.0/24", ["192.0.2.2"], 16),  # country US, AS64500 is not 64501
    ("geo", "192.0.2.0/24", ["192.0.2.3"], 24),  # continent EU (Berlin)
    ("geo", "203.0.113.0/25", ["192.0.2.3"], 25),  # continent EU (London /25)
    ("geo", "203.0.113.128/25", ["192.0.2.6"], 25),  # Sydney: no rule, the catch-all
    ("geo", "2001:db8:1::/48", ["192.0.2.6"], 48),  # Tokyo over IPv6 ECS: catch-all
    ("near", "198.51.100.0/24", ["192.0.2.1"], 24),  # San Francisco -> west
    ("near", "100.64.0.0/16", ["192.0.2.2"], 10),  # New York -> east
    ("near", "203.0.113.0/25", ["192.0.2.3"], 25),  # London -> eu (Frankfurt)
    ("near", "203.0.113.128/25", ["192.0.2.4"], 25),  # Sydney -> ap (Singapore)
    ("near", "2001:db8:1::/48", ["192.0.2.4"], 48),  # Tokyo -> ap
    ("neardown", "100.64.0.0/16", ["192.0.2.1"], 10),  # nearest pool is down: next nearest that is up
    ("prio", "192.0.2.0/24", ["192.0.2.22"], 0),  # first up member in zone order; no client dependence
    ("noecs", "192.0.2.0/24", ["192.0.2.6"], 0),  # ecs: false: the packet source (127.0.0.1) decides
]


@pytest.mark.parametrize(("record", "ecs", "want", "scope"), ROUTES, ids=[f"{r[0]}-{r[1]}" for r in ROUTES])
def test_route(geo_server: GslbProcess, record: str, ecs: str, want: list[str], scope: int | None) -> None:
    got, got_scope = ask(geo_server, record, ecs)
    assert got == want
    if scope is not None:
        assert got_scope == scope


def test_unknown_client_gets_catch_all_or_first_pool(geo_server: GslbProcess) -> None:
    assert ask(geo_server, "geo", "10.9.0.0/16")[0] == ["192.0.2.6"]
    assert ask(geo_server, "near", "10.9.0.0/16")[0] == ["192.0.2.1"]  # no coordinates: rule order
    assert ask(geo_server, "geo", None)[0] == ["192.0.2.6"]  # 127.0.0.1 is in no database


def test_dig_subnet_geo(geo_server: GslbProcess) -> None:
    assert geo_server.dig("geo.geo.test", "A", "+short", "+subnet=198.51.100.0/24").strip() == "192.0.2.1"
    out = geo_server.dig("geo.geo.test", "A", "+subnet=192.0.2.0/24")
    assert "CLIENT-SUBNET: 192.0.2.0/24/24" in out and "192.0.2.3" in out


def test_hashed_is_sticky_per_subnet_and_spreads(geo_server: GslbProcess) -> None:
    seen: dict[str, set[str]] = {}
    for i in range(40):
        subnet = f"100.64.{i}.0/24"
        answers = {tuple(ask(geo_server, "sticky", subnet)[0]) for _ in range(3)}
        assert len(answers) == 1, f"{subnet} got {answers}"
        seen[subnet] = {a for t in answers for a in t}
    spread = collections.Counter(next(iter(v)) for v in seen.values())
    assert len(spread) == 4  # 40 subnets land on all four members
    _, scope = ask(geo_server, "sticky", "100.64.7.0/24")
    assert scope == 24  # the answer depends on the client's /24


# ------------------------------------------------------------------ policies (pure)


def test_hashed_moves_only_the_clients_of_a_removed_member() -> None:
    hashed = REGISTRY["hashed"]
    keys = [bytes([192, 0, 2, i]) for i in range(1, 6)]
    full = Candidates.of([(k, 1) for k in keys], keys)
    less = Candidates.of([(k, 1) for k in keys[1:]], keys[1:])
    rng = random.Random(0)
    clients = [PickContext(4, random.Random(i).getrandbits(32), 24) for i in range(5000)]
    before = [hashed.pick(full, 1, rng, c)[0] for c in clients]
    after = [hashed.pick(less, 1, rng, c)[0] for c in clients]
    moved = sum(b != a for b, a in zip(before, after, strict=True))
    assert all(b == keys[0] for b, a in zip(before, after, strict=True) if b != a)  # only the removed one's
    assert 0.15 < moved / len(clients) < 0.25  # about 1/5


def test_hashed_respects_weights() -> None:
    keys = [b"a", b"b"]
    cands = Candidates.of([(k, w) for k, w in zip(keys, (3, 1), strict=True)], keys)
    got = collections.Counter(
        REGISTRY["hashed"].pick(cands, 1, random.Random(0), PickContext(4, i << 8, 24))[0]
        for i in range(8000)
    )
    assert 0.70 < got[b"a"] / 8000 < 0.80


def test_closest_great_circle() -> None:
    from gslb.answer.policies.closest import great_circle_km

    assert abs(great_circle_km(51.5074, -0.1278, 40.7128, -74.0060) - 5570) < 15  # London - New York
    closest = REGISTRY["closest"]
    pools = [(40.7, -74.0), None, (50.1, 8.7)]
    assert closest.choose_pool(pools, PickContext(lat=48.85, lon=2.35)) == 2  # Paris -> Frankfurt
    assert closest.choose_pool(pools, PickContext()) == 0  # unknown location: rule order


# ----------------------------------------------------------------- operations


def test_geo_rules_without_database_fail_at_startup(tmp_path: Path) -> None:
    zdir = tmp_path / "zones"
    zdir.mkdir()
    shutil.copy(DATA / "geo" / "geo.test.yaml", zdir)
    cmd = [sys.executable, "-m", "gslb", "serve", "--zones", str(zdir), "--listen", "127.0.0.1:0",
           "--state-dir", str(tmp_path / "st")]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=30, check=False)
    assert out.returncode == 1
    assert "geo.test.yaml:20:12: records.geo[0].rules[0].geos: geo rules need a GeoIP database" in out.stderr
    assert "records.geo[0].rules[1].asns: ASN rules need an ASN database" in out.stderr
    assert "records.near[0].answer.select: select: closest needs client coordinates" in out.stderr


def test_geoip_database_reloaded_when_it_changes(geo_dbs: tuple[Path, Path], tmp_path: Path) -> None:
    zdir = tmp_path / "zones"
    zdir.mkdir()
    shutil.copy(DATA / "geo" / "geo.test.yaml", zdir)
    city = write_city(tmp_path / "city.mmdb")
    srv = GslbProcess(zdir, tmp_path / "gslb.log", ["--geoip-db", str(city), "--asn-db", str(geo_dbs[1])])
    try:
        assert ask(srv, "geo", "198.51.100.0/24")[0] == ["192.0.2.1"]
        # the database moves 198.51.100.0/24 to Europe
        moved = tmp_path / "new.mmdb"
        write_city(moved, {"198.51.100.0/24": ("EU", "FR", None, 48.85, 2.35)})
        os.replace(moved, city)
        t0 = time.monotonic()
        while ask(srv, "geo", "198.51.100.0/24")[0] != ["192.0.2.3"]:
            assert time.monotonic() - t0 < 5, srv.log()
            time.sleep(0.1)
        srv.wait_log(r"GeoIP database .*city\.mmdb reloaded", 2)
        # a broken database file is reported, and the last good one keeps serving
        city.write_bytes(b"not a database")
        srv.wait_log(r"changed but cannot be read", 5)
        assert ask(srv, "geo", "198.51.100.0/24")[0] == ["192.0.2.3"]
    finally:
        srv.stop()


def test_explain_cli(geo_dbs: tuple[Path, Path]) -> None:
    city, asn = geo_dbs
    out = subprocess.run(
        [sys.executable, "-m", "gslb", "explain", "geo.geo.test", "--zones", str(DATA / "geo"), "--ecs",
         "100.64.1.0/24", "--geoip-db", str(city), "--asn-db", str(asn), "--state-dir", ""],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "rule 2 matched (US): pools east" in text
    assert "GeoIP: NA/US/NY (network /10), AS64500 (network /16)" in text
    assert "answer    geo.geo.test. 30 IN A 192.0.2.2" in text
    assert "ECS scope /16" in text
    out = subprocess.run(
        [sys.executable, "-m", "gslb", "explain", "prio.geo.test", "--zones", str(DATA / "geo"), "--json",
         "--geoip-db", str(city), "--asn-db", str(asn), "--state-dir", ""],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    import json

    r = json.loads(out.stdout)
    states = {m["address"]: m["state"] for m in r["balanced"]["members"]}
    assert states["192.0.2.21"] == "down (status: down in the zone file)"
    assert r["answer"] == ["prio.geo.test. 30 IN A 192.0.2.22"]


def test_check_warns_about_shadowed_rules(tmp_path: Path) -> None:
    z = tmp_path / "w.test.yaml"
    z.write_text("""zone: w.test.
nameservers: {ns1.w.test.: [192.0.2.53]}
pools: {a: {members: [{address: 192.0.2.1}]}, b: {members: [{address: 192.0.2.2}]}}
records:
  x:
    - types: [A]
      rules:
        - {subnets: [10.0.0.0/8], geos: [EU], pools: [a]}
        - {subnets: [10.1.0.0/16], geos: [EU-DE], pools: [b]}
        - {pools: [a]}
""")
    city = write_city(tmp_path / "city.mmdb")
    cmd = [sys.executable, "-m", "gslb", "check", str(z), "--geoip-db", str(city)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert (
        f"{z}:9:11: records.x[0].rules[1].subnets: 10.1.0.0/16 is shadowed by 10.0.0.0/8 in rules[0]"
        in out.stdout
    )
    assert f"{z}:9:11: records.x[0].rules[1].geos: EU-DE is shadowed by EU in rules[0]" in out.stdout
