"""Differential test: gslb and Knot DNS serve the same zone; answers must agree.

tests/conformance/conf.test.zone (BIND format) is what knotd serves;
tests/conformance/conf.test.yaml is our translation. Every query of the
table goes to both over UDP and TCP and the rcode, AA/TC flags and the
sections (as sets of RRsets, TTLs included) are compared. Knot adds no
additional data beyond glue, so for positive answers our optional
additional section is checked against the zone instead.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rdatatype
import dns.zone
import pytest

from tests.conftest import ROOT, GslbProcess, rrset_texts
from tests.knot import KNOTD, knot_server

ZONE_FILE = ROOT / "tests" / "conformance" / "conf.test.zone"

pytestmark = pytest.mark.skipif(KNOTD is None, reason="knotd not installed (make deps installs it)")


@pytest.fixture(scope="module")
def knot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    wd = tmp_path_factory.mktemp("knot")
    shutil.copy(ZONE_FILE, wd / "zone.db")
    with knot_server(wd, "conf.test.", wd / "zone.db") as port:
        yield port


import dns.exception  # noqa: E402

QUERIES = [
    ("conf.test.", "SOA"),
    ("conf.test.", "NS"),
    ("conf.test.", "A"),
    ("conf.test.", "MX"),
    ("conf.test.", "TXT"),
    ("conf.test.", "CAA"),
    ("conf.test.", "AAAA"),
    ("static.conf.test.", "A"),
    ("static.conf.test.", "AAAA"),
    ("static.conf.test.", "MX"),
    ("ns1.conf.test.", "AAAA"),
    ("ns2.conf.test.", "A"),
    ("_sip._tcp.conf.test.", "SRV"),
    ("longtxt.conf.test.", "TXT"),
    ("mail.conf.test.", "A"),
    ("nope.conf.test.", "A"),
    ("x.static.conf.test.", "A"),
    ("b.ent.conf.test.", "A"),
    ("ent.conf.test.", "TXT"),
    ("x.b.ent.conf.test.", "A"),
    ("a.b.ent.conf.test.", "A"),
    ("alias.conf.test.", "A"),
    ("alias.conf.test.", "AAAA"),
    ("alias.conf.test.", "CNAME"),
    ("alias.conf.test.", "MX"),
    ("ext.conf.test.", "A"),
    ("dangling.conf.test.", "A"),
    ("towild.conf.test.", "A"),
    ("foo.wild.conf.test.", "A"),
    ("a.b.wild.conf.test.", "A"),
    ("*.wild.conf.test.", "A"),
    ("foo.wild.conf.test.", "AAAA"),
    ("wild.conf.test.", "A"),
    ("real.wild.conf.test.", "A"),
    ("real.wild.conf.test.", "TXT"),
    ("x.real.wild.conf.test.", "A"),
    ("sub.conf.test.", "A"),
    ("www.sub.conf.test.", "A"),
    ("sub.conf.test.", "NS"),
    ("ns.sub.conf.test.", "A"),
    ("sub.conf.test.", "DS"),
    ("big.conf.test.", "A"),
    ("example.org.", "A"),
    ("test.", "SOA"),
    ("xconf.test.", "A"),
    ("conf.test.", "TYPE65280"),
    ("sip.conf.test.", "A"),
]


def ask(port: int, name: str, rdtype: str, tcp: bool, edns: bool) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, use_edns=0 if edns else False)
    q.flags &= ~dns.flags.RD
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=port, timeout=3)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=3)


def zone_rrsets() -> set[str]:
    z = dns.zone.from_file(str(ZONE_FILE), origin="conf.test.", relativize=False)
    out = set()
    for name, node in z.nodes.items():
        for rds in node.rdatasets:
            for rd in rds:
                rtype = dns.rdatatype.to_text(rds.rdtype)
                out.add(f"{name.to_text().lower()} {rds.ttl} IN {rtype} {rd.to_text()}")
    return out


APEX_NS = {"conf.test. 3600 IN NS ns1.conf.test.", "conf.test. 3600 IN NS ns2.conf.test."}


@pytest.mark.parametrize("mode", ["udp", "tcp", "udp-noedns"])
@pytest.mark.parametrize(("name", "rdtype"), QUERIES, ids=[f"{n}/{t}" for n, t in QUERIES])
def test_same_as_knot(conf_server: GslbProcess, knot: int, name: str, rdtype: str, mode: str) -> None:
    tcp, edns = mode == "tcp", mode != "udp-noedns"
    ours = ask(conf_server.port, name, rdtype, tcp, edns)
    ref = ask(knot, name, rdtype, tcp, edns)
    assert ours.rcode() == ref.rcode()
    for flag in (dns.flags.AA, dns.flags.TC, dns.flags.RA):
        assert bool(ours.flags & flag) == bool(ref.flags & flag), dns.flags.to_text(flag)
    if ours.flags & dns.flags.TC:
        return  # both truncated: the partial content may differ
    assert rrset_texts(ours) == rrset_texts(ref)
    # an apex NS RRset in authority is optional for either side (RFC 2181, 2308 2.1)
    assert rrset_texts(ours, "authority") - APEX_NS == rrset_texts(ref, "authority") - APEX_NS
    if not ours.flags & dns.flags.AA and ours.rcode() == 0:  # referral: glue must match exactly
        assert rrset_texts(ours, "additional") == rrset_texts(ref, "additional")
    else:  # optional additional data must be complete, correct zone data
        assert rrset_texts(ours, "additional") <= zone_rrsets()
