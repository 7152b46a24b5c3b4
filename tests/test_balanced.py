"""Balanced names through the real server: pools, fallback, min_healthy,
when_all_down, weights, subnet rules with EDNS Client Subnet (tests/data/zones)."""

from __future__ import annotations

import collections
import random

import dns.edns
import dns.rcode
import pytest

from gslb.answer.policies import NO_CLIENT, REGISTRY, Candidates
from tests.conftest import GslbProcess, rrset_texts

NEG = "bal.test. 60 IN SOA ns1.bal.test. hostmaster.bal.test."


def addrs(msg: dns.message.Message) -> list[str]:
    return [rd.to_text() for rr in msg.answer if rr.rdtype in (1, 28) for rd in rr]


# (qname, qtype, rcode, exact answer set) for answers that do not depend on chance
CASES: list[tuple[str, str, str, set[str]]] = [
    (
        "every.bal.test.",
        "A",
        "NOERROR",
        {"every.bal.test. 20 IN A 203.0.113.10", "every.bal.test. 20 IN A 203.0.113.11"},
    ),
    # first pool has no healthy member: the next pool in the rule answers
    (
        "failover.bal.test.",
        "A",
        "NOERROR",
        {"failover.bal.test. 30 IN A 203.0.113.10", "failover.bal.test. 30 IN A 203.0.113.11"},
    ),
    # min_healthy 2 with one member down: the pool counts as down, fallback answers
    ("minh.bal.test.", "A", "NOERROR", {"minh.bal.test. 30 IN A 198.51.100.3"}),
    # min_healthy 50% of 2 members: one healthy member is enough; the down one is left out
    ("percent.bal.test.", "A", "NOERROR", {"percent.bal.test. 30 IN A 203.0.113.30"}),
    # when_all_down: serve_all (default) returns every member of the first pool
    (
        "sa.bal.test.",
        "A",
        "NOERROR",
        {"sa.bal.test. 30 IN A 203.0.113.1", "sa.bal.test. 30 IN A 203.0.113.2"},
    ),
    ("nd.bal.test.", "A", "NOERROR", set()),
    ("sf.bal.test.", "A", "SERVFAIL", set()),
    ("rf.bal.test.", "A", "REFUSED", set()),
    # AAAA: the first pool has no IPv6 member, so the next one answers
    ("v4only.bal.test.", "AAAA", "NOERROR", {"v4only.bal.test. 30 IN AAAA 2001:db8::1"}),
    ("v4only.bal.test.", "A", "NOERROR", {"v4only.bal.test. 30 IN A 198.51.100.1"}),
    ("w.bal.test.", "AAAA", "NOERROR", {"w.bal.test. 30 IN AAAA 2001:db8::1"}),
    ("w.bal.test.", "TXT", "NOERROR", {'w.bal.test. 300 IN TXT "static beside balanced"'}),
    ("w.bal.test.", "MX", "NOERROR", set()),
    (
        "alias.bal.test.",
        "A",
        "NOERROR",
        {
            "alias.bal.test. 300 IN CNAME every.bal.test.",
            "every.bal.test. 20 IN A 203.0.113.10",
            "every.bal.test. 20 IN A 203.0.113.11",
        },
    ),
]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize(("qname", "qtype", "rcode", "answer"), CASES, ids=[f"{c[0]}/{c[1]}" for c in CASES])
def test_balanced_answer(
    test_server: GslbProcess, tcp: bool, qname: str, qtype: str, rcode: str, answer: set[str]
) -> None:
    r = test_server.query(qname, qtype, tcp=tcp)
    assert dns.rcode.to_text(r.rcode()) == rcode
    assert rrset_texts(r) == answer
    if rcode == "NOERROR" and not answer:
        assert any(t.startswith(NEG) for t in rrset_texts(r, "authority"))


def test_weights_choose_which_members(test_server: GslbProcess) -> None:
    """Weight 3 vs 1 (and a drained 0) over 1200 answers of count 1."""
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(1200):
        got = addrs(test_server.query("w.bal.test.", "A"))
        assert len(got) == 1
        seen[got[0]] += 1
    assert set(seen) == {"192.0.2.1", "192.0.2.2"}  # the weight-0 member never appears
    share = seen["192.0.2.1"] / 1200
    assert 0.69 < share < 0.81, seen  # 0.75 expected; bounds are > 5 standard deviations


def test_select_all_rotates(test_server: GslbProcess) -> None:
    firsts = {addrs(test_server.query("every.bal.test.", "A"))[0] for _ in range(40)}
    assert firsts == {"203.0.113.10", "203.0.113.11"}


def ecs(addr: str, prefix: int) -> list[dns.edns.Option]:
    return [dns.edns.ECSOption(addr, prefix)]


# (ECS address, source prefix, expected member, expected scope)
ROUTES = [
    ("10.1.2.0", 24, "198.51.100.2", 16),  # 10.1.0.0/16 rule
    ("10.2.0.0", 16, "198.51.100.1", 15),  # 10.0.0.0/8 rule; /15 keeps 10.1.0.0/16 (lan) out
    ("192.0.2.0", 24, "198.51.100.1", 24),  # 192.0.2.0/24 (second rule)
    ("192.0.0.0", 20, "198.51.100.3", 20),  # a /20 is wider than the rule: catch-all, scope capped at 20
    ("198.51.100.0", 24, "198.51.100.3", 6),  # catch-all; 198.0.0.0/6 contains no rule subnet
    ("2001:db8:aa:1::", 64, "198.51.100.1", 48),  # IPv6 subnet rule 2001:db8:aa::/48
    ("2001:db8:1::", 56, "198.51.100.3", 41),  # catch-all; 2001:db8::/41 excludes 2001:db8:aa::/48
]


@pytest.mark.parametrize(("addr", "prefix", "member", "scope"), ROUTES)
def test_subnet_rules_follow_ecs(
    test_server: GslbProcess, addr: str, prefix: int, member: str, scope: int
) -> None:
    r = test_server.query("route.bal.test.", "A", options=ecs(addr, prefix))
    assert addrs(r) == [member]
    (opt,) = r.options
    assert isinstance(opt, dns.edns.ECSOption)
    assert (opt.address, opt.srclen, opt.scopelen) == (addr, prefix, scope)


def test_subnet_rules_use_source_without_ecs(test_server: GslbProcess) -> None:
    # the test client is 127.0.0.1: no rule subnet matches it
    r = test_server.query("route.bal.test.", "A")
    assert addrs(r) == ["198.51.100.3"] and not r.options
    # ECS with source prefix 0 means "do not use my address": the source decides, scope 0
    r = test_server.query("route.bal.test.", "A", options=ecs("0.0.0.0", 0))
    assert addrs(r) == ["198.51.100.3"]
    (opt,) = r.options
    assert isinstance(opt, dns.edns.ECSOption) and opt.scopelen == 0


def test_dig_subnet(test_server: GslbProcess) -> None:
    out = test_server.dig("route.bal.test", "A", "+subnet=10.1.7.0/24", "+short")
    assert out.strip() == "198.51.100.2"
    out = test_server.dig("route.bal.test", "A", "+subnet=10.1.7.0/24")
    assert "CLIENT-SUBNET: 10.1.7.0/24/16" in out


# ------------------------------------------------------------ policies (pure)


def test_weighted_policy_distribution_seeded() -> None:
    cands = Candidates.of([("a", 3), ("b", 1), ("c", 6)])
    rng = random.Random(1)
    counts = collections.Counter(REGISTRY["weighted"].pick(cands, 1, rng, NO_CLIENT)[0] for _ in range(20000))
    for item, w in (("a", 0.3), ("b", 0.1), ("c", 0.6)):
        assert abs(counts[item] / 20000 - w) < 0.015, counts


def test_weighted_policy_count_is_distinct() -> None:
    cands = Candidates.of([("a", 1), ("b", 1), ("c", 98)])
    rng = random.Random(2)
    firsts: collections.Counter[str] = collections.Counter()
    for _ in range(2000):
        got = REGISTRY["weighted"].pick(cands, 2, rng, NO_CLIENT)
        assert len(set(got)) == 2
        firsts[got[0]] += 1
    assert firsts["c"] > 1800  # heavy member drawn first nearly always
    assert len(REGISTRY["weighted"].pick(cands, 5, rng, NO_CLIENT)) == 3  # capped by candidates


def test_all_policy_rotates_and_caps() -> None:
    cands = Candidates.of([("a", 1), ("b", 1), ("c", 1)])
    rng = random.Random(3)
    outs = {tuple(REGISTRY["all"].pick(cands, None, rng, NO_CLIENT)) for _ in range(100)}
    assert outs == {("a", "b", "c"), ("b", "c", "a"), ("c", "a", "b")}
    assert len(REGISTRY["all"].pick(cands, 2, rng, NO_CLIENT)) == 2
