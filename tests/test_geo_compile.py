"""The compiled routing tables (gslb.answer.geo.tables) give what the straightforward path
gives (gslb.answer.state.match_rule with a database lookup per query): the same rule and
the same ECS scope for any client address and source prefix, over databases built by
the tests and MaxMind's own test databases (../shared/geoip), for random rule sets of
geos, subnets and AS numbers."""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gslb.answer.geo.maxmind import MaxMindGeo
from gslb.answer.geo.tables import compile_rules
from gslb.answer.state import RuleMatch, match_rule
from gslb.zones.load.balanced import parse_geo
from gslb.zones.model import GeoMatch
from tests.conftest import ROOT
from tests.geodb import write_asn, write_city

SHARED = ROOT.parent / "shared" / "geoip"

# codes the databases know (and some they do not)
GEOS = ["EU", "NA", "AS", "OC", "AF", "SA", "US", "GB", "DE", "JP", "SE", "NA-US-CA", "US-NY", "EU-GB-ENG",
        "EU-DE-BE", "AS-JP-13", "BT", "CN", "EU-GB", "NA-US-WA", "SA-BR"]  # fmt: skip
ASNS = [64500, 64501, 1221, 237, 15169, 2856, 7018]


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory) -> list[MaxMindGeo]:
    tmp = tmp_path_factory.mktemp("geo")
    ours = MaxMindGeo(write_city(tmp / "city.mmdb"), write_asn(tmp / "asn.mmdb"))
    out = [ours]
    if SHARED.is_dir():
        out += [
            MaxMindGeo(SHARED / "GeoIP2-City-Test.mmdb", SHARED / "GeoLite2-ASN-Test.mmdb"),
            MaxMindGeo(SHARED / "GeoLite2-Country-Test.mmdb"),
            MaxMindGeo(None, SHARED / "GeoLite2-ASN-Test.mmdb"),
        ]
    return out


class Plan:
    def __init__(self, matchers: tuple[RuleMatch, ...]) -> None:
        self.matchers = matchers
        self.catch_all = len(matchers) - 1


def rules(draw: st.DrawFn) -> Plan:
    out = []
    for _ in range(draw(st.integers(1, 4))):
        codes = draw(st.lists(st.sampled_from(GEOS), max_size=3))
        geos: tuple[GeoMatch, ...] = tuple(g for g in map(parse_geo, codes) if isinstance(g, GeoMatch))
        asns = frozenset(draw(st.lists(st.sampled_from(ASNS), max_size=2)))
        subnets = []
        for _ in range(draw(st.integers(0, 2))):
            if draw(st.booleans()):
                plen = draw(st.integers(0, 32))
                net = draw(st.integers(0, 2**32 - 1)) >> (32 - plen) << (32 - plen) if plen else 0
                subnets.append((4, net, plen))
            else:
                plen = draw(st.integers(0, 128))
                net = draw(st.integers(0, 2**128 - 1)) >> (128 - plen) << (128 - plen) if plen else 0
                subnets.append((6, net, plen))
        if geos or asns or subnets:
            out.append(RuleMatch(tuple(subnets), geos, asns))
    out.append(RuleMatch((), (), frozenset()))  # the catch-all
    return Plan(tuple(out))


def addresses(db: MaxMindGeo, plan: Plan, rng: random.Random) -> list[tuple[int, int]]:
    """Clients: random ones, and ones at and around every piece and subnet boundary."""
    out = []
    for fam, bits in ((4, 32), (6, 128)):
        lv = db.leaves(fam)
        pieces = [lv.start(i) for i in range(len(lv))]
        for _ in range(150):
            out.append((fam, rng.getrandbits(bits)))
        for s in rng.sample(list(pieces), min(len(pieces), 120)):
            for d in (-1, 0, 1, 255):
                out.append((fam, (s + d) % (1 << bits)))
        for m in plan.matchers:
            for f, net, plen in m.subnets:
                if f == fam:
                    end = net + (1 << (bits - plen))
                    out += [(fam, (a + d) % (1 << bits)) for a in (net, end) for d in (-1, 0, 1)]
    return out


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_compiled_equals_straightforward(databases: list[MaxMindGeo], data: st.DataObject) -> None:
    plan = data.draw(st.composite(rules)())
    seed = data.draw(st.integers(0, 2**32))
    rng = random.Random(seed)
    for db in databases:
        table = compile_rules(plan.matchers, plan.catch_all, db)
        decided = 0
        for fam, addr in addresses(db, plan, rng):
            source = rng.choice([0, 8, 16, 24, 25, 32] if fam == 4 else [0, 32, 48, 56, 64, 128])
            want = match_rule(plan, fam, addr, source, db)  # type: ignore[arg-type]
            got = table.decide(fam, addr, source)
            if got is None:  # IPv6 the tables leave to the lookup: ::/64, aliases, networks past /64
                assert fam == 6 and (addr in ALIASES or _deeper_than_64(db, addr)), ipaddress.ip_address(addr)
                continue
            assert got == want[:2], (ipaddress.ip_address(addr), source, plan.matchers)
            assert table.key(fam, addr, source) == got[0] << 8 | got[1]
            decided += 1
        assert decided > 0


PLACES = [(37.4, -122.1), (40.7, -74.0), (50.1, 8.7), (1.35, 103.8), (-33.9, 151.2), None]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_classes_for_a_pick_by_coordinates(databases: list[MaxMindGeo], data: st.DataObject) -> None:
    """select: closest: the table's class is the rule and the order the policy takes the
    rule's pools in from the client's coordinates (as looked up), its scope the rule's
    scope and the City network's length, capped at the source."""
    from gslb.answer.policies import PickContext
    from gslb.answer.policies.closest import POLICY as CLOSEST

    plan = data.draw(st.composite(rules)())
    places = tuple(
        tuple(data.draw(st.lists(st.sampled_from(PLACES), min_size=1, max_size=4))) for _ in plan.matchers
    )
    rng = random.Random(data.draw(st.integers(0, 2**32)))
    for db in databases:
        table = compile_rules(plan.matchers, plan.catch_all, db, places, CLOSEST)
        assert table.classes is not None
        for fam, addr in addresses(db, plan, rng):
            source = rng.choice([8, 24, 32] if fam == 4 else [32, 56, 64])
            key = table.key(fam, addr, source)
            if key is None:
                continue
            rule, scope, _ = match_rule(plan, fam, addr, 255, db)  # type: ignore[arg-type]
            info = db.lookup(fam, addr)
            crule, order = table.classes[key >> 8]
            assert crule == rule
            assert key & 0xFF == min(max(scope, info.prefix), source)
            locs, ids, want = list(places[rule]), list(range(len(places[rule]))), []
            while ids:
                i = CLOSEST.choose_pool(locs, PickContext(lat=info.lat, lon=info.lon))
                want.append(ids.pop(i))
                locs.pop(i)
            assert order == tuple(want), (ipaddress.ip_address(addr), info)


def _deeper_than_64(db: MaxMindGeo, addr: int) -> bool:
    """Whether a database divides the /64 holding ``addr`` further."""
    return any(d is not None and d.get(6, addr)[1] > 64 for d in (db.geo, db.asn))


ALIAS_NETS = [ipaddress.ip_network(n) for n in ("::/64", "2001::/32", "2002::/16")]


class _Aliases:
    def __contains__(self, a: object) -> bool:
        return isinstance(a, int) and any(ipaddress.IPv6Address(a) in n for n in ALIAS_NETS)


ALIASES = _Aliases()


def test_tables_are_shared_and_survive_health_changes(tmp_path: Path) -> None:
    from gslb.answer.build import build_state
    from gslb.health.view import ALL_UP, HealthView
    from gslb.zones.load import load_zone

    geo = MaxMindGeo(write_city(tmp_path / "c.mmdb"), write_asn(tmp_path / "a.mmdb"))
    z = load_zone(ROOT / "tests/data/geo/geo.test.yaml", geo_db=True, asn_db=True)
    state = build_state([(z, 1)], ALL_UP, geo=geo)
    plans = {k: p for k, p in state.plans.items() if p.decisions is not None}
    assert plans and all(
        any(m.geos or m.asns for m in p.matchers) or p.policy.uses_location for p in plans.values()
    )
    again = build_state([(z, 2)], ALL_UP, geo=geo)  # a reload: the same rules, the same tables
    assert all(again.plans[k].decisions is p.decisions for k, p in plans.items())
    down = state.with_health(HealthView(frozenset(k for p in plans.values() for k in p.member_keys), 1))
    assert all(down.plans[k].decisions is p.decisions for k, p in plans.items())  # no recompile
    v4 = plans[next(iter(plans))].decisions.v4
    assert v4.fallback not in v4.codes  # IPv4 has no aliases


def test_answers_with_tables_equal_answers_without(tmp_path: Path) -> None:
    """Served end to end (the engine's full path and its reply cache): the same bytes for
    random ECS subnets whether the rules are compiled or looked up per query."""
    import dataclasses

    import dns.edns
    import dns.message

    from gslb.answer.build import build_state
    from gslb.answer.respond import answer, respond
    from gslb.zones.load import load_zone

    geo = (
        MaxMindGeo(SHARED / "GeoIP2-City-Test.mmdb", write_asn(tmp_path / "a.mmdb"))
        if SHARED.is_dir()
        else None
    )
    geo = geo or MaxMindGeo(write_city(tmp_path / "c.mmdb"), write_asn(tmp_path / "a.mmdb"))
    z = load_zone(ROOT / "tests/data/geo/geo.test.yaml", geo_db=True, asn_db=True)
    compiled = build_state([(z, 1)], geo=geo)
    plain = build_state([(z, 1)], geo=geo)
    for k, p in list(plain.plans.items()):
        plain.plans[k] = dataclasses.replace(p, decisions=None)
    assert any(p.decisions is not None for p in compiled.plans.values())
    rng = random.Random(3)
    starts = list(geo.leaves(4).starts)  # IPv4: the addresses themselves
    for i in range(3000):
        if i % 3 == 0:
            addr, source = str(ipaddress.IPv6Address(rng.getrandbits(128))), rng.choice([32, 48, 56, 64])
        else:
            a = rng.choice(starts) + rng.getrandbits(6) if i % 3 == 1 else rng.getrandbits(32)
            addr, source = str(ipaddress.IPv4Address(a % 2**32)), rng.choice([16, 24, 25, 32])
        net = ipaddress.ip_network(f"{addr}/{source}", strict=False)
        ecs = dns.edns.ECSOption(str(net.network_address), source)
        name = rng.choice(["geo.geo.test.", "near.geo.test.", "noecs.geo.test."])
        q = dns.message.make_query(name, "A", use_edns=0, options=[ecs])
        wire = q.to_wire()
        want = answer(wire, plain, "10.9.8.7", True, random.Random(i))
        assert answer(wire, compiled, "10.9.8.7", True, random.Random(i)) == want, (addr, source)
        got = respond(wire, compiled, "10.9.8.7", True, random.Random(i))
        assert got is not None and got[0] == want, (addr, source)


def test_big_databases_compile_later_with_the_same_answers(tmp_path: Path) -> None:
    """A database too big to compile while a state is built: the state starts without
    tables (each query looks up), the tables are made later (the runtime does it in a
    thread) and given to the state; the answers are the same before and after."""
    import dns.edns
    import dns.message

    from gslb.answer.build import build_state, needs_decisions, with_decisions
    from gslb.answer.respond import answer
    from gslb.zones.load import load_zone

    class Big(MaxMindGeo):
        def small(self) -> bool:
            return False

    geo = Big(write_city(tmp_path / "c.mmdb"), write_asn(tmp_path / "a.mmdb"))
    z = load_zone(ROOT / "tests/data/geo/geo.test.yaml", geo_db=True, asn_db=True)
    state = build_state([(z, 1)], geo=geo)
    assert needs_decisions(state) and not geo.compiled_cache
    later = with_decisions(state)
    assert not needs_decisions(later) and geo.compiled_cache
    assert not needs_decisions(with_decisions(build_state([(z, 2)], geo=geo), build=False))  # a reload
    rng = random.Random(4)
    for i in range(500):
        net = ipaddress.IPv4Network((rng.getrandbits(24) << 8, 24))
        q = dns.message.make_query("geo.geo.test.", "A", use_edns=0,
                                   options=[dns.edns.ECSOption(str(net.network_address), 24)])  # fmt: skip
        wire = q.to_wire()
        assert answer(wire, state, "10.0.0.1", True, random.Random(i)) == answer(
            wire, later, "10.0.0.1", True, random.Random(i)
        )
