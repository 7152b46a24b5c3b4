"""RFC 1034/2308/4592/8482 answers from the real server, as data tables.

Each row: (qname, qtype) -> rcode, AA, and the answer / authority / additional
sections in zone-file text. Queried over UDP and TCP with dnspython.
"""

from __future__ import annotations

import dns.flags
import dns.rcode
import pytest

from tests.conftest import GslbProcess, rrset_texts

SOA = "conf.test. {ttl} IN SOA ns1.conf.test. hostmaster.conf.test. 2026112701 7200 3600 1209600 60"
NEG = SOA.format(ttl=60)

# (qname, qtype, rcode, aa, answer, authority, additional); None = not checked
CASES: list[tuple[str, str, str, bool, set[str], set[str] | None, set[str] | None]] = [
    ("conf.test.", "SOA", "NOERROR", True, {SOA.format(ttl=3600)}, set(), set()),
    (
        "conf.test.",
        "NS",
        "NOERROR",
        True,
        {"conf.test. 3600 IN NS ns1.conf.test.", "conf.test. 3600 IN NS ns2.conf.test."},
        set(),
        {
            "ns1.conf.test. 3600 IN A 192.0.2.1",
            "ns1.conf.test. 3600 IN AAAA 2001:db8::1",
            "ns2.conf.test. 3600 IN A 192.0.2.2",
            "ns2.conf.test. 3600 IN AAAA 2001:db8::2",
        },
    ),
    ("conf.test.", "A", "NOERROR", True, {"conf.test. 300 IN A 192.0.2.10"}, set(), set()),
    (
        "conf.test.",
        "MX",
        "NOERROR",
        True,
        {"conf.test. 300 IN MX 10 mail.conf.test."},
        set(),
        {"mail.conf.test. 300 IN A 192.0.2.25"},
    ),
    ("conf.test.", "CAA", "NOERROR", True, {'conf.test. 300 IN CAA 0 issue "ca.example.net"'}, set(), set()),
    (
        "static.conf.test.",
        "A",
        "NOERROR",
        True,
        {"static.conf.test. 300 IN A 192.0.2.100", "static.conf.test. 300 IN A 192.0.2.101"},
        set(),
        set(),
    ),
    (
        "StAtIc.CoNf.TeSt.",
        "AAAA",
        "NOERROR",
        True,
        {"static.conf.test. 300 IN AAAA 2001:db8::100"},
        set(),
        set(),
    ),
    (
        "_sip._tcp.conf.test.",
        "SRV",
        "NOERROR",
        True,
        {"_sip._tcp.conf.test. 300 IN SRV 10 60 5060 sip.conf.test."},
        set(),
        {"sip.conf.test. 300 IN A 192.0.2.60"},
    ),
    # negative answers: SOA with TTL min(SOA TTL, MINIMUM) (RFC 2308 3)
    ("nope.conf.test.", "A", "NXDOMAIN", True, set(), {NEG}, set()),
    ("x.static.conf.test.", "A", "NXDOMAIN", True, set(), {NEG}, set()),
    ("static.conf.test.", "MX", "NOERROR", True, set(), {NEG}, set()),
    ("static.conf.test.", "TYPE65280", "NOERROR", True, set(), {NEG}, set()),
    ("b.ent.conf.test.", "A", "NOERROR", True, set(), {NEG}, set()),  # empty non-terminal
    ("ent.conf.test.", "TXT", "NOERROR", True, set(), {NEG}, set()),
    ("x.b.ent.conf.test.", "A", "NXDOMAIN", True, set(), {NEG}, set()),
    # CNAMEs (RFC 1034 3.6.2, RFC 6604)
    (
        "alias.conf.test.",
        "A",
        "NOERROR",
        True,
        {
            "alias.conf.test. 120 IN CNAME static.conf.test.",
            "static.conf.test. 300 IN A 192.0.2.100",
            "static.conf.test. 300 IN A 192.0.2.101",
        },
        set(),
        set(),
    ),
    (
        "alias.conf.test.",
        "CNAME",
        "NOERROR",
        True,
        {"alias.conf.test. 120 IN CNAME static.conf.test."},
        set(),
        set(),
    ),
    (
        "alias.conf.test.",
        "MX",
        "NOERROR",
        True,
        {"alias.conf.test. 120 IN CNAME static.conf.test."},
        {NEG},
        set(),
    ),
    ("ext.conf.test.", "A", "NOERROR", True, {"ext.conf.test. 120 IN CNAME www.example.org."}, set(), set()),
    (
        "dangling.conf.test.",
        "A",
        "NXDOMAIN",
        True,
        {"dangling.conf.test. 120 IN CNAME nowhere.conf.test."},
        {NEG},
        set(),
    ),
    (
        "towild.conf.test.",
        "A",
        "NOERROR",
        True,
        {"towild.conf.test. 120 IN CNAME host.wild.conf.test.", "host.wild.conf.test. 200 IN A 192.0.2.200"},
        set(),
        set(),
    ),
    # wildcards (RFC 4592)
    ("foo.wild.conf.test.", "A", "NOERROR", True, {"foo.wild.conf.test. 200 IN A 192.0.2.200"}, set(), set()),
    ("a.b.wild.conf.test.", "A", "NOERROR", True, {"a.b.wild.conf.test. 200 IN A 192.0.2.200"}, set(), set()),
    ("*.wild.conf.test.", "A", "NOERROR", True, {"*.wild.conf.test. 200 IN A 192.0.2.200"}, set(), set()),
    ("foo.wild.conf.test.", "AAAA", "NOERROR", True, set(), {NEG}, set()),
    ("wild.conf.test.", "A", "NOERROR", True, set(), {NEG}, set()),
    ("real.wild.conf.test.", "A", "NOERROR", True, set(), {NEG}, set()),
    ("x.real.wild.conf.test.", "A", "NXDOMAIN", True, set(), {NEG}, set()),
    # delegation: referral without AA, glue in additional (RFC 9471); DS from the parent
    (
        "sub.conf.test.",
        "A",
        "NOERROR",
        False,
        set(),
        {"sub.conf.test. 3600 IN NS ns.sub.conf.test."},
        {"ns.sub.conf.test. 3600 IN A 192.0.2.53"},
    ),
    (
        "www.sub.conf.test.",
        "A",
        "NOERROR",
        False,
        set(),
        {"sub.conf.test. 3600 IN NS ns.sub.conf.test."},
        {"ns.sub.conf.test. 3600 IN A 192.0.2.53"},
    ),
    (
        "ns.sub.conf.test.",
        "A",
        "NOERROR",
        False,
        set(),
        {"sub.conf.test. 3600 IN NS ns.sub.conf.test."},
        {"ns.sub.conf.test. 3600 IN A 192.0.2.53"},
    ),
    ("sub.conf.test.", "DS", "NOERROR", True, set(), {NEG}, set()),
    # outside every zone: REFUSED, no AA, no data
    ("example.org.", "A", "REFUSED", False, set(), set(), set()),
    (".", "NS", "REFUSED", False, set(), set(), set()),
    ("test.", "SOA", "REFUSED", False, set(), set(), set()),
    ("xconf.test.", "A", "REFUSED", False, set(), set(), set()),
    # RFC 8482: ANY gets one synthesized HINFO
    (
        "static.conf.test.",
        "ANY",
        "NOERROR",
        True,
        {'static.conf.test. 300 IN HINFO "RFC8482" ""'},
        set(),
        set(),
    ),
    ("nope.conf.test.", "ANY", "NXDOMAIN", True, set(), {NEG}, set()),
]


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize(
    ("qname", "qtype", "rcode", "aa", "answer", "authority", "additional"),
    CASES,
    ids=[f"{c[0]}/{c[1]}" for c in CASES],
)
def test_answer(
    conf_server: GslbProcess,
    tcp: bool,
    qname: str,
    qtype: str,
    rcode: str,
    aa: bool,
    answer: set[str],
    authority: set[str] | None,
    additional: set[str] | None,
) -> None:
    r = conf_server.query(qname, qtype, tcp=tcp)
    assert dns.rcode.to_text(r.rcode()) == rcode
    assert bool(r.flags & dns.flags.AA) == aa
    assert not r.flags & dns.flags.RA
    assert rrset_texts(r, "answer") == answer
    if authority is not None:
        assert rrset_texts(r, "authority") == authority
    if additional is not None:
        assert rrset_texts(r, "additional") == additional


def test_question_case_is_echoed(conf_server: GslbProcess) -> None:
    r = conf_server.query("StAtIc.CoNf.TeSt.", "A")
    assert r.question[0].name.to_text() == "StAtIc.CoNf.TeSt."
    # the owner is compressed to the question, so it keeps the query's case too
    assert r.answer[0].name.to_text() == "StAtIc.CoNf.TeSt."


def test_rd_copied_ra_never_set(conf_server: GslbProcess) -> None:
    r = conf_server.query("static.conf.test.", "A", rd=True)
    assert r.flags & dns.flags.RD
    assert not r.flags & dns.flags.RA
    r = conf_server.query("example.org.", "A", rd=True)
    assert r.rcode() == dns.rcode.REFUSED and not r.flags & dns.flags.RA


def test_nested_zones_longest_match(test_server: GslbProcess) -> None:
    assert rrset_texts(test_server.query("www.parent.test.")) == {"www.parent.test. 300 IN A 192.0.2.80"}
    # the child zone is served here too: its data wins over the parent's
    assert rrset_texts(test_server.query("in.child.parent.test.")) == {
        "in.child.parent.test. 300 IN A 192.0.2.82"
    }
    soa = test_server.query("child.parent.test.", "SOA")
    assert soa.answer[0].name.to_text() == "child.parent.test."
