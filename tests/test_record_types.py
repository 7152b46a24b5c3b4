"""Every supported record type round-trips: zone presentation text -> wire -> dnspython."""

from __future__ import annotations

import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from tests.conftest import GslbProcess

# (owner, type, presentation text as in the zone file)
RECORDS = [
    ("types.test.", "HTTPS", '1 . alpn="h2,h3" ipv4hint=192.0.2.1'),
    ("types.test.", "CAA", '0 issue "ca.example.net"'),
    ("types.test.", "CAA", '0 iodef "mailto:sec@types.test"'),
    ("svc.types.test.", "SVCB", "1 svc.example. port=8443"),
    ("4.2.0.192.in-addr.types.test.", "PTR", "host.types.test."),
    ("naptr.types.test.", "NAPTR", '100 10 "U" "E2U+sip" "!^.*$!sip:info@types.test!" .'),
    ("_443._tcp.www.types.test.", "TLSA", "3 1 1 " + "0123456789abcdef" * 4),
    ("host.types.test.", "SSHFP", "4 2 " + "0123456789abcdef" * 4),
    ("host.types.test.", "TXT", '"a \\"quoted\\" word" "second string"'),
    ("host.types.test.", "LOC", "52 22 23.000 N 4 53 32.000 E -2.00m 0.00m 10000m 10m"),
    ("host.types.test.", "URI", '10 1 "https://types.test/"'),
]


@pytest.mark.parametrize(("owner", "rdtype", "text"), RECORDS, ids=[f"{r[1]}-{r[0]}" for r in RECORDS])
def test_type_served(test_server: GslbProcess, owner: str, rdtype: str, text: str) -> None:
    want = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), text)
    r = test_server.query(owner, rdtype, tcp=True)
    assert r.answer, r
    got = {rd for rr in r.answer for rd in rr}
    assert want in got
