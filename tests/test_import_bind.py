"""``gslb import bind``: a BIND master file ($ORIGIN, $TTL, $INCLUDE, $GENERATE,
relative names, a multi-line SOA, a delegation) imported, served, and transferred
back: the AXFR is the original zone, record for record and TTL for TTL."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dns.name
import dns.query
import dns.rdatatype
import dns.zone

from tests.conftest import ROOT, GslbProcess

DATA = ROOT / "tests" / "data" / "bind"


def gslb_import(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gslb", "import", "bind", *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60, check=False)  # fmt: skip


def records(z: dns.zone.Zone) -> set[tuple[str, str, int, str]]:
    out = set()
    for name, node in z.nodes.items():
        for rds in node.rdatasets:
            if rds.rdtype in (dns.rdatatype.NSEC, dns.rdatatype.RRSIG):
                continue  # dropped on import: gslb signs at answer time
            for rd in rds:
                out.add((name.to_text(), dns.rdatatype.to_text(rds.rdtype), rds.ttl, rd.to_text()))
    return out


def test_import_serve_transfer_round_trip(tmp_path: Path) -> None:
    zdir = tmp_path / "zones"
    zdir.mkdir()
    out = zdir / "example.net.yaml"
    r = gslb_import(str(DATA / "example.zone"), "--zone", "example.net", "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "dropped DNSSEC records" in r.stderr and "1 NSEC" in r.stderr
    text = out.read_text()
    assert "serial: 2026112901" in text and "ns1.example.net.: [192.0.2.53, 2001:db8::53]" in text
    assert "host3:" in text and "info:" in text  # $GENERATE and $INCLUDE
    assert subprocess.run([sys.executable, "-m", "gslb", "check", str(zdir)], capture_output=True,
                          cwd=ROOT, timeout=60, check=False).returncode == 0  # fmt: skip
    srv = GslbProcess(zdir, tmp_path / "gslb.log", ["--axfr-allow", "127.0.0.0/8"])
    try:
        xfr = dns.query.xfr(srv.host, "example.net.", port=srv.port, timeout=5, relativize=False)
        got = dns.zone.from_xfr(xfr, relativize=False)
    finally:
        srv.stop()
    with_include = Path.cwd()
    import os

    os.chdir(DATA)  # $INCLUDE is relative to the file's directory
    try:
        want = dns.zone.from_file(
            "example.zone", dns.name.from_text("example.net."), relativize=False, allow_include=True
        )
    finally:
        os.chdir(with_include)
    assert records(got) == records(want)
    assert "Traceback" not in srv.log()


def test_unsupported_types_are_positioned_and_skippable(tmp_path: Path) -> None:
    src = tmp_path / "z.zone"
    src.write_text(
        "$ORIGIN z.test.\n$TTL 300\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n"
        "alias DNAME elsewhere.test.\nok A 192.0.2.2\n"
    )
    r = gslb_import(str(src), "--zone", "z.test.")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{src}:6: DNAME at alias.z.test.: gslb does not serve this type" in r.stderr
    r = gslb_import(str(src), "--zone", "z.test.", "--skip-unsupported")
    assert r.returncode == 0 and "(skipped)" in r.stderr
    assert "ok:" in r.stdout and "DNAME" not in r.stdout


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    src = tmp_path / "bad.zone"
    src.write_text(
        "$ORIGIN b.test.\n$TTL 300\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\nx A not-an-address\n"
    )
    r = gslb_import(str(src), "--zone", "b.test.")
    assert r.returncode == 1 and "Traceback" not in r.stderr and f"{src}:6" in r.stderr, r.stderr
    r = gslb_import(str(tmp_path / "missing.zone"), "--zone", "b.test.")
    assert r.returncode == 1 and "cannot read" in r.stderr


def test_name_server_addresses_keep_their_own_ttl(tmp_path: Path) -> None:
    """What real zones look like: the NS set at one TTL, the in-zone servers' addresses
    at the zone's $TTL or a TTL of their own. Imported, checked, served: each TTL as in
    the source, and the referral-style glue in the additional section."""
    src = tmp_path / "nt.zone"
    src.write_text(
        "$ORIGIN nt.test.\n$TTL 3600\n@ SOA ns1 hm 1 7200 900 1209600 300\n"
        "@ 86400 IN NS ns1\n@ 86400 IN NS ns2\n@ 86400 IN NS ns3\n@ 86400 IN NS ns.other.test.\n"
        "ns1 IN A 192.0.2.1\nns2 300 IN A 192.0.2.2\nns2 300 IN AAAA 2001:db8::2\n"
        "ns3 86400 IN A 192.0.2.3\nwww A 192.0.2.80\n"
    )
    zdir = tmp_path / "zones"
    zdir.mkdir()
    out = zdir / "nt.test.yaml"
    r = gslb_import(str(src), "--zone", "nt.test.", "-o", str(out))
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert "ns1.nt.test.: []" in text and "ns2.nt.test.: []" in text, text
    assert "ns3.nt.test.: [192.0.2.3]" in text, text  # the NS set's TTL: served as ns_ttl
    check = subprocess.run([sys.executable, "-m", "gslb", "check", str(zdir)], capture_output=True,
                           text=True, cwd=ROOT, timeout=60, check=False)  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    srv = GslbProcess(zdir, tmp_path / "gslb.log", ["--axfr-allow", "127.0.0.0/8"])
    try:
        ttls = {}
        asked = [("nt.test.", "NS"), ("ns1.nt.test.", "A"), ("ns2.nt.test.", "A"), ("ns2.nt.test.", "AAAA"),
                 ("ns3.nt.test.", "A"), ("www.nt.test.", "A")]  # fmt: skip
        for name, rdtype in asked:
            ans = srv.query(name, rdtype).answer
            assert ans, (name, rdtype)
            ttls[(name, rdtype)] = ans[0].ttl
        xfr = dns.query.xfr(srv.host, "nt.test.", port=srv.port, timeout=5, relativize=False)
        got = dns.zone.from_xfr(xfr, relativize=False)
    finally:
        srv.stop()
    assert ttls == {
        ("nt.test.", "NS"): 86400, ("ns1.nt.test.", "A"): 3600, ("ns2.nt.test.", "A"): 300,
        ("ns2.nt.test.", "AAAA"): 300, ("ns3.nt.test.", "A"): 86400, ("www.nt.test.", "A"): 3600,
    }  # fmt: skip
    want = dns.zone.from_file(str(src), dns.name.from_text("nt.test."), relativize=False)
    assert records(got) == records(want)


def test_an_in_zone_server_without_addresses_anywhere_is_refused(tmp_path: Path) -> None:
    zdir = tmp_path / "zones"
    zdir.mkdir()
    (zdir / "nx.test.yaml").write_text("zone: nx.test.\nnameservers:\n  ns1.nx.test.: []\nrecords: {}\n")
    r = subprocess.run([sys.executable, "-m", "gslb", "check", str(zdir)], capture_output=True, text=True,
                       cwd=ROOT, timeout=60, check=False)  # fmt: skip
    out = r.stdout + r.stderr
    assert r.returncode == 1 and "nx.test.yaml:3:" in out and "give its A/AAAA in 'records'" in out, out


BASE = "$ORIGIN b.test.\n$TTL 300\n@ SOA ns hm 1 2 3 4 5\n@ NS ns\nns A 192.0.2.1\n"


def test_problems_name_the_source_line(tmp_path: Path) -> None:
    """TTLs past 2^31-1 (RFC 2181 8) and a malformed $TTL are refused at their own line
    of the source (not at a line of the generated file, not one line late, not as an
    'unknown rdatatype'); a record outside the zone is ignored with a note at its line,
    as named-checkzone does, and the rest is imported."""
    cases = {
        "big": (BASE + "big 3000000000 A 192.0.2.9\n", ":6: TTL 3000000000 is above 2147483647"),
        "huge": (BASE + "huge 99999999999 A 192.0.2.9\n", ":6: TTL 99999999999 is above 2147483647"),
        "units": (BASE + "u IN 99999w A 192.0.2.9\n", ":6: TTL 99999w is above 2147483647"),
        "badttl": (BASE.replace("$TTL 300", "$TTL bad"), ":2: $TTL needs a TTL"),
        # vendor types (PowerDNS, NS1 exports): refused where they stand, with what to write
        "alias": (BASE + "@ ALIAS lb.example.net.\n", ":6: unknown rdatatype 'ALIAS' (ALIAS is a vendor"),
        "aname": (BASE + "www ANAME lb.example.net.\n", ":6: unknown rdatatype 'ANAME' (ANAME is a vendor"),
    }
    for name, (text, want) in cases.items():
        src = tmp_path / f"{name}.zone"
        src.write_text(text)
        r = gslb_import(str(src), "--zone", "b.test.")
        assert r.returncode == 1 and f"{src}{want}" in r.stderr, (name, r.stderr)
        assert "please report" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    src = tmp_path / "oz.zone"
    src.write_text(BASE + 'x.other.test. A 192.0.2.9\n  TXT "still out"\nok 3600 A 192.0.2.2\n')
    r = gslb_import(str(src), "--zone", "b.test.")
    assert r.returncode == 0, r.stderr
    assert f"{src}:6: ignoring out-of-zone data (x.other.test.)" in r.stderr
    assert f"{src}:7: ignoring out-of-zone data (x.other.test.)" in r.stderr
    assert "other" not in r.stdout and "ok:" in r.stdout and "ttl: 3600" in r.stdout
