"""Signed answers from the real server, checked by real validators: BIND's ``delv``
with the zone's own DNSKEY as trust anchor (``+root=ZONE``), and dnspython's
``dns.dnssec.validate`` on the wire answers as a second opinion."""

from __future__ import annotations

import base64
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.dnssec
import dns.flags
import dns.message
import dns.name
import dns.node
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import pytest

from gslb.dnssec import keys
from tests.conftest import GslbProcess

DELV = shutil.which("delv")

ZONE = """zone: s.test.
dnssec: {{key: {key}}}
nameservers: {{ns1.s.test.: [192.0.2.53]}}
pools:
  p: {{members: [{{address: 192.0.2.1}}, {{address: 192.0.2.2}}, {{address: 192.0.2.3}}]}}
  eu: {{members: [{{address: 192.0.2.41}}]}}
  cdn: {{members: [{{target: www.cdn-a.example.net., weight: 3}}, {{target: www.cdn-b.example.net.}}]}}
  inside: {{members: [{{target: www}}]}}
  dark: {{members: [{{target: off.example.net., status: down}}]}}
records:
  cdn: [{{types: [CNAME], ttl: 30, rules: [{{pools: [cdn]}}]}}]
  img: [{{types: [CNAME], ttl: 30, rules: [{{pools: [inside]}}]}}]
  gone: [{{types: [CNAME], ttl: 30, rules: [{{pools: [dark]}}], when_all_down: nodata}}]
  www: [{{types: [A], ttl: 30, answer: {{select: weighted, count: 2}}, rules: [{{pools: [p]}}]}}]
  geo: [{{types: [A], ttl: 30, rules: [{{subnets: [198.51.100.0/24], pools: [eu]}}, {{pools: [p]}}]}}]
  static: [{{type: A, value: 192.0.2.10}}, {{type: TXT, value: '"hello"'}}]
  alias: [{{type: CNAME, value: Static.s.test.}}]
  dangling: [{{type: CNAME, value: nothing.s.test.}}]
  "*.wild": [{{type: A, value: 192.0.2.20}}]
  sub: [{{type: NS, value: ns.sub.s.test.}}]
  ns.sub: [{{type: A, value: 192.0.2.30}}]
  secure: [{{type: NS, value: ns.sub.s.test.}},
           {{type: DS, value: "12345 13 2 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}}]
"""


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GslbProcess, Path, keys.SigningKey]]:
    tmp = tmp_path_factory.mktemp("dnssec")
    keys.write_new(tmp / "s.test.key")
    k = keys.load(tmp / "s.test.key")
    zdir = tmp / "zones"
    zdir.mkdir()
    (zdir / "s.test.yaml").write_text(ZONE.format(key=tmp / "s.test.key"))
    srv = GslbProcess(zdir, tmp / "gslb.log", ["--axfr-allow", "127.0.0.0/8"])
    dnskey = srv.query("s.test.", "DNSKEY").answer[0][0]
    anchor = tmp / "anchor.conf"
    anchor.write_text(
        f"trust-anchors {{ s.test. static-key {dnskey.flags} {dnskey.protocol} {dnskey.algorithm} "
        f'"{base64.b64encode(dnskey.key).decode()}"; }};\n'
    )
    yield srv, anchor, k
    srv.stop()
    assert "Traceback" not in srv.log()


def delv(srv: GslbProcess, anchor: Path, name: str, rtype: str, *extra: str) -> str:
    cmd = [DELV or "delv", f"@{srv.host}", "-p", str(srv.port), "-a", str(anchor), "+root=s.test",
           name, rtype, *extra]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    return r.stdout + r.stderr


needs_delv = pytest.mark.skipif(DELV is None, reason="needs delv (bind9-dnsutils, .ci/system-deps)")


@needs_delv
@pytest.mark.parametrize(
    ("name", "rtype"),
    [
        ("static.s.test.", "A"),
        ("static.s.test.", "TXT"),
        ("www.s.test.", "A"),  # balanced
        ("cdn.s.test.", "A"),  # a balanced CNAME, to a name elsewhere
        ("cdn.s.test.", "CNAME"),
        ("img.s.test.", "A"),  # a balanced CNAME to a balanced name of the zone
        ("alias.s.test.", "A"),  # CNAME chain
        ("anything.wild.s.test.", "A"),  # wildcard
        ("s.test.", "SOA"),
        ("s.test.", "NS"),
        ("s.test.", "DNSKEY"),
        ("secure.s.test.", "DS"),  # a signed delegation's DS, answered by the parent side
    ],
)
def test_positive_answers_fully_validate(signed: tuple[GslbProcess, Path, keys.SigningKey], name: str,
                                         rtype: str) -> None:  # fmt: skip
    srv, anchor, _ = signed
    out = delv(srv, anchor, name, rtype)
    assert "; fully validated" in out and "negative" not in out, out


@needs_delv
@pytest.mark.parametrize(
    ("name", "rtype"),
    [
        ("nope.s.test.", "A"),  # no such name
        ("static.s.test.", "AAAA"),  # no such type
        ("www.s.test.", "AAAA"),  # a balanced name without that type
        ("wild.s.test.", "A"),  # an empty non-terminal
        ("dangling.s.test.", "A"),  # a CNAME to a name that does not exist
        ("gone.s.test.", "A"),  # a balanced CNAME with no target up (when_all_down: nodata)
        ("gone.s.test.", "CNAME"),
        ("sub.s.test.", "DS"),  # a delegation without DS: insecure, and proven so
    ],
)
def test_denials_fully_validate(
    signed: tuple[GslbProcess, Path, keys.SigningKey], name: str, rtype: str
) -> None:
    srv, anchor, _ = signed
    out = delv(srv, anchor, name, rtype)
    if name.startswith("dangling"):  # the CNAME validates, then its target's denial
        assert "; fully validated" in out and "NSEC \\000.nothing.s.test." in out, out
        assert not any(w in out for w in ("broken", "no valid", "insecure")), out
    else:
        assert "; negative response, fully validated" in out, out


@needs_delv
def test_a_wrong_trust_anchor_fails(
    signed: tuple[GslbProcess, Path, keys.SigningKey], tmp_path: Path
) -> None:
    srv, _, _ = signed
    other = tmp_path / "other.key"
    keys.write_new(other)
    k = keys.load(other)
    bad = tmp_path / "bad.conf"
    bad.write_text(
        f'trust-anchors {{ s.test. static-key 257 3 13 "{base64.b64encode(k.dnskey[4:]).decode()}"; }};\n'
    )
    out = delv(srv, bad, "static.s.test.", "A")
    assert "fully validated" not in out and ("no valid" in out or "broken trust chain" in out), out


def _validate(msg: dns.message.Message, section: list[dns.rrset.RRset], k: keys.SigningKey) -> int:
    """Validate every RRset of a section with its RRSIG (dnspython); returns how many."""
    rd = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.DNSKEY, k.dnskey, 0, len(k.dnskey))
    dnskey = dns.rrset.from_rdata(dns.name.from_text("s.test."), 300, rd)
    keyring: dict[dns.name.Name, dns.node.Node | dns.rdataset.Rdataset] = {
        dns.name.from_text("s.test."): dnskey
    }
    n = 0
    for rrset in section:
        if rrset.rdtype == dns.rdatatype.RRSIG:
            continue
        sigs = [s for s in section if s.rdtype == dns.rdatatype.RRSIG and s.name == rrset.name
                and s.covers == rrset.rdtype]  # fmt: skip
        assert sigs, f"no RRSIG for {rrset.name} {dns.rdatatype.to_text(rrset.rdtype)}"
        dns.dnssec.validate(rrset, sigs[0], keyring)
        n += 1
    return n


def test_balanced_answers_for_many_clients_validate_and_reuse_signatures(
    signed: tuple[GslbProcess, Path, keys.SigningKey],
) -> None:
    srv, _, k = signed
    seen = set()
    for i in range(40):
        ecs = dns.edns.ECSOption(f"198.51.{100 + i % 2}.{i}", 24)
        q = dns.message.make_query("geo.s.test.", "A", want_dnssec=True, use_edns=0, options=[ecs])
        r = dns.query.udp(q, srv.host, port=srv.port, timeout=2)
        assert _validate(r, r.answer, k) == 1
        seen.add(frozenset(rd.to_text() for rd in r.answer[0]))
        q = dns.message.make_query("www.s.test.", "A", want_dnssec=True)
        r = dns.query.udp(q, srv.host, port=srv.port, timeout=2)
        assert _validate(r, r.answer, k) == 1
        seen.add(frozenset(rd.to_text() for rd in r.answer[0]))
    assert {"192.0.2.41"} in [set(s) for s in seen]  # the geo rule answered too
    assert len(seen) >= 3  # several different RRsets were signed


def test_compact_denial_is_noerror_with_one_nsec(signed: tuple[GslbProcess, Path, keys.SigningKey]) -> None:
    srv, _, k = signed
    q = dns.message.make_query("nope.s.test.", "A", want_dnssec=True)
    r = dns.query.udp(q, srv.host, port=srv.port, timeout=2)
    assert r.rcode() == 0 and not r.answer
    nsec = [s for s in r.authority if s.rdtype == dns.rdatatype.NSEC]
    assert len(nsec) == 1 and nsec[0].name == dns.name.from_text("nope.s.test.")
    assert "NXNAME" in nsec[0].to_text() or "TYPE128" in nsec[0].to_text()
    assert _validate(r, r.authority, k) == 2  # SOA and NSEC


CO = 0x4000  # RFC 9824's Compact Answers OK EDNS flag


@pytest.mark.parametrize(
    ("name", "rtype", "rcode"),
    [
        ("nope.s.test.", "A", dns.rcode.NXDOMAIN),  # no such name: the code comes back
        ("static.s.test.", "AAAA", dns.rcode.NOERROR),  # no such type: NODATA as before
        ("dangling.s.test.", "A", dns.rcode.NXDOMAIN),  # the CNAME's target does not exist
    ],
)
def test_compact_answers_ok_gets_nxdomain_back(
    signed: tuple[GslbProcess, Path, keys.SigningKey], name: str, rtype: str, rcode: dns.rcode.Rcode
) -> None:
    """RFC 9824 CO flag: a resolver that sets it gets NXDOMAIN for names that do not
    exist (the NSEC still says NXNAME), and the flag echoed; the proof validates."""
    srv, _, k = signed
    q = dns.message.make_query(name, rtype, want_dnssec=True, ednsflags=dns.flags.DO | CO)
    r = dns.query.udp(q, srv.host, port=srv.port, timeout=2)
    assert r.rcode() == rcode and r.ednsflags & CO, r
    assert _validate(r, r.authority, k) == 2  # SOA and NSEC
    assert _validate(r, r.answer, k) == (1 if name.startswith("dangling") else 0)
    plain = dns.query.udp(
        dns.message.make_query(name, rtype, want_dnssec=True), srv.host, port=srv.port, timeout=2
    )
    assert plain.rcode() == dns.rcode.NOERROR and not plain.ednsflags & CO


def test_referrals_carry_a_signed_ds_or_a_signed_proof_of_none(
    signed: tuple[GslbProcess, Path, keys.SigningKey],
) -> None:
    srv, _, k = signed
    for name, want in (("www.secure.s.test.", dns.rdatatype.DS), ("www.sub.s.test.", dns.rdatatype.NSEC)):
        q = dns.message.make_query(name, "A", want_dnssec=True)
        q.flags &= ~dns.flags.RD
        r = dns.query.udp(q, srv.host, port=srv.port, timeout=2)
        assert not r.answer and not r.flags & dns.flags.AA
        types = {s.rdtype for s in r.authority}
        assert dns.rdatatype.NS in types and want in types, r
        signed_sets = [s for s in r.authority if s.rdtype not in (dns.rdatatype.NS, dns.rdatatype.RRSIG)]
        assert (
            _validate(r, [*signed_sets, *[s for s in r.authority if s.rdtype == dns.rdatatype.RRSIG]], k) == 1
        )
        assert not any(s.rdtype == dns.rdatatype.RRSIG and s.covers == dns.rdatatype.NS for s in r.authority)


def test_unsigned_answers_without_do(signed: tuple[GslbProcess, Path, keys.SigningKey]) -> None:
    srv, _, _ = signed
    r = srv.query("static.s.test.", "A")
    assert not any(s.rdtype == dns.rdatatype.RRSIG for s in r.answer)
    q = dns.message.make_query("nope.s.test.", "A", use_edns=0)  # EDNS, DO=0: a plain NXDOMAIN
    assert dns.query.udp(q, srv.host, port=srv.port, timeout=2).rcode() == 3


def test_a_signed_answer_too_big_for_udp_is_truncated(
    signed: tuple[GslbProcess, Path, keys.SigningKey],
) -> None:
    srv, _, _ = signed
    q = dns.message.make_query("s.test.", "NS", want_dnssec=True, payload=512)
    q.flags &= ~dns.flags.RD
    r = dns.query.udp(q, srv.host, port=srv.port, timeout=2)
    wire_len = len(r.to_wire())
    assert wire_len <= 512
    if r.flags & dns.flags.TC:
        assert not r.answer
    else:  # it fitted: then it is complete and signed
        assert any(s.rdtype == dns.rdatatype.RRSIG for s in r.answer)


def test_transfers_of_a_signed_zone_are_refused(signed: tuple[GslbProcess, Path, keys.SigningKey]) -> None:
    srv, _, _ = signed
    out = srv.dig("s.test.", "AXFR")
    assert "Transfer failed" in out or "REFUSED" in out, out


def test_an_unusable_key_is_a_positioned_error(tmp_path: Path) -> None:
    import sys

    zdir = tmp_path / "zones"
    zdir.mkdir()
    (zdir / "s.test.yaml").write_text(ZONE.format(key=tmp_path / "missing.key"))
    r = subprocess.run([sys.executable, "-m", "gslb", "check", str(zdir)], capture_output=True, text=True,
                       timeout=30)  # fmt: skip
    assert r.returncode == 1
    assert "s.test.yaml:2:" in r.stdout + r.stderr and "cannot read DNSSEC key" in r.stdout + r.stderr


def dnssec_counts(srv: GslbProcess) -> dict[str, float]:
    """The gslb_dnssec_* samples of the server's /metrics, by their full names."""
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.api_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(("gslb_dnssec_signatures_total", "gslb_dnssec_signature_cache_total")):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_metrics_count_signatures_and_cache_hits(signed: tuple[GslbProcess, Path, keys.SigningKey]) -> None:
    srv, _, _ = signed

    def counts() -> dict[str, float]:
        return dnssec_counts(srv)

    # a balanced name (2 of 3 members): at most 3 different RRsets, each signed once
    q = dns.message.make_query("www.s.test.", "A", want_dnssec=True)
    for _ in range(30):
        dns.query.udp(q, srv.host, port=srv.port, timeout=2)
    before = counts()
    for _ in range(10):
        dns.query.udp(q, srv.host, port=srv.port, timeout=2)
    after = counts()
    made = 'gslb_dnssec_signatures_total{zone="s.test."}'
    hits = 'gslb_dnssec_signature_cache_total{result="hit",zone="s.test."}'
    assert after[made] - before[made] <= 1  # (a combination not seen in the first 30)
    assert after[hits] >= before[hits] + 9


ROLL = """zone: r.test.
dnssec: {{keys: [{a}, {b}]}}
nameservers: {{ns1.r.test.: [192.0.2.53]}}
pools:
  p: {{members: [{{address: 192.0.2.1}}, {{address: 192.0.2.2}}]}}
records:
  www: [{{types: [A], answer: {{select: all}}, rules: [{{pools: [p]}}]}}]
"""


@needs_delv
def test_a_rollover_zone_validates_from_either_key(tmp_path: Path) -> None:
    """During a double-signature rollover both DNSKEYs are published and every RRset is
    signed by both: a resolver that trusts the old key, and one that trusts the new
    one, both validate (answers and denials)."""
    for n in ("old", "new"):
        keys.write_new(tmp_path / f"{n}.key")
    zdir = tmp_path / "zones"
    zdir.mkdir()
    (zdir / "r.test.yaml").write_text(ROLL.format(a=tmp_path / "old.key", b=tmp_path / "new.key"))
    srv = GslbProcess(zdir, tmp_path / "gslb.log")
    try:
        q = dns.message.make_query("r.test.", "DNSKEY", want_dnssec=True)
        r = dns.query.udp(q, srv.host, port=srv.port, timeout=2)
        sigs = [s for s in r.answer if s.rdtype == dns.rdatatype.RRSIG and s.covers == dns.rdatatype.DNSKEY]
        assert len(r.answer[0]) == 2 and len(sigs) == 1 and len(sigs[0]) == 2  # two keys, two signatures
        for _ in range(3):  # a balanced answer, again from the reply cache: both signatures too
            q = dns.message.make_query("www.r.test.", "A", want_dnssec=True)
            r = dns.query.udp(q, srv.host, port=srv.port, timeout=2)
            sigs = [s for s in r.answer if s.rdtype == dns.rdatatype.RRSIG]
            assert len(sigs) == 1 and len(sigs[0]) == 2, r
        for n in ("old", "new"):
            k = keys.load(tmp_path / f"{n}.key")
            anchor = tmp_path / f"{n}.conf"
            b64 = base64.b64encode(k.dnskey[4:]).decode()
            anchor.write_text(f'trust-anchors {{ r.test. static-key 257 3 13 "{b64}"; }};\n')
            cases = (("www.r.test.", "A", "; fully validated"),
                     ("nope.r.test.", "A", "; negative response, fully validated"))  # fmt: skip
            for name, rtype, want in cases:
                cmd = [DELV or "delv", f"@{srv.host}", "-p", str(srv.port), "-a", str(anchor), "+root=r.test",
                       name, rtype]  # fmt: skip
                out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
                assert want in out.stdout + out.stderr, (n, name, out.stdout + out.stderr)
    finally:
        srv.stop()


def test_repeated_signed_balanced_answers_follow_health(tmp_path: Path) -> None:
    """The same DO=1 question again and again (the reply cache's pick-and-splice path):
    every answer validates, the picked members vary, a member that goes down leaves the
    signed answers within the failover bound and comes back, and no answer names it in
    between; the signature of each picked set is made once."""
    from tests.targets import Target, free_port
    from tests.test_health import BOUND, HTTP_HOSTS, wait_until, zone

    keys.write_new(tmp_path / "h.key")
    k = keys.load(tmp_path / "h.key")
    port = free_port(HTTP_HOSTS[:3])
    targets = [Target(h, port) for h in HTTP_HOSTS[:3]]
    zdir = tmp_path / "zones"
    zdir.mkdir()
    text = zone(port, HTTP_HOSTS[:3]).replace(
        "zone: h.test.\n", f"zone: h.test.\ndnssec: {{key: {tmp_path / 'h.key'}}}\n"
    )
    text = text.replace("answer: {select: all}", "ttl: 30, answer: {select: weighted, count: 2}")
    (zdir / "h.test.yaml").write_text(text)
    srv = GslbProcess(zdir, tmp_path / "gslb.log")
    rd = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.DNSKEY, k.dnskey, 0, len(k.dnskey))
    keyring: dict[dns.name.Name, dns.node.Node | dns.rdataset.Rdataset] = {
        dns.name.from_text("h.test."): dns.rrset.from_rdata(dns.name.from_text("h.test."), 300, rd)
    }

    def ask() -> set[str]:
        q = dns.message.make_query("www.h.test.", "A", want_dnssec=True)
        r = dns.query.udp(q, srv.host, port=srv.port, timeout=2)
        a = r.find_rrset(r.answer, dns.name.from_text("www.h.test."), dns.rdataclass.IN, dns.rdatatype.A)
        sig = r.find_rrset(r.answer, a.name, dns.rdataclass.IN, dns.rdatatype.RRSIG, dns.rdatatype.A)
        dns.dnssec.validate(a, sig, keyring)  # raises if the RRSIG does not cover this set
        assert r.flags & dns.flags.AA and len(sig) == 1
        return {x.to_text() for x in a}

    try:
        wait_until(lambda: len(ask()) == 2, 5, "two members answered")
        sets = {frozenset(ask()) for _ in range(60)}
        assert len(sets) == 3, sets  # the weighted pick varies on the cached path
        targets[1].stop()
        took = wait_until(lambda: all(HTTP_HOSTS[1] not in ask() for _ in range(10)), 10, "member left")
        assert took <= BOUND + 1
        for _ in range(40):  # once gone, never back until it is up
            assert ask() == {HTTP_HOSTS[0], HTTP_HOSTS[2]}
        targets[1].start()
        wait_until(lambda: any(HTTP_HOSTS[1] in ask() for _ in range(10)), 10, "member back")
        made = 'gslb_dnssec_signatures_total{zone="h.test."}'
        before = dnssec_counts(srv)[made]
        for _ in range(60):
            ask()
        # the picked sets were all signed already: no new signature for repeats
        assert dnssec_counts(srv)[made] == before
    finally:
        srv.stop()
        for t in targets:
            t.close()
    assert "Traceback" not in srv.log()


def test_rate_limited_denials_are_not_signed_and_never_leave_unsigned(tmp_path: Path) -> None:
    """A random-subdomain flood with DO=1 under RRL: the denials the limiter drops or
    slips are not signed (the flood's cost), and every reply that does leave is either
    a slip (TC=1, nothing in it) or a denial with its NSEC and signatures."""
    import socket

    keys.write_new(tmp_path / "s.test.key")
    k = keys.load(tmp_path / "s.test.key")
    zdir = tmp_path / "zones"
    zdir.mkdir()
    (zdir / "s.test.yaml").write_text(ZONE.format(key=tmp_path / "s.test.key"))
    srv = GslbProcess(zdir, tmp_path / "gslb.log", ["--rrl-rate", "5", "--rrl-slip", "2"])
    made = 'gslb_dnssec_signatures_total{zone="s.test."}'
    try:
        before = dnssec_counts(srv).get(made, 0.0)
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.settimeout(0.5)
        sent, replies = 300, []
        for i in range(sent):
            q = dns.message.make_query(f"flood{i}.s.test.", "A", want_dnssec=True)
            sock.sendto(q.to_wire(), (srv.host, srv.port))
        try:
            while True:
                replies.append(dns.message.from_wire(sock.recv(4096)))
        except TimeoutError:
            pass
        sock.close()
        slips = [r for r in replies if r.flags & dns.flags.TC]
        full = [r for r in replies if not r.flags & dns.flags.TC]
        assert slips and full and len(replies) < sent  # limited: some dropped, some slipped
        for r in slips:
            assert not r.answer and not r.authority
        for r in full:  # each one a complete, valid compact denial
            assert any(rr.rdtype == dns.rdatatype.NSEC for rr in r.authority), r
            assert _validate(r, r.authority, k) == 2  # the SOA and the NSEC
        signed = dnssec_counts(srv)[made] - before
        # the full denials were signed (NSEC each, the SOA once); the rest were not
        assert signed <= len(full) + 2, (signed, len(full), sent)
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def test_signature_metrics_add_up_every_worker(tmp_path: Path) -> None:
    """With --workers, /metrics counts the signatures every process made: distinct
    names from many source ports (the kernel spreads them over the processes), each
    a new signed denial."""
    import json
    import socket
    import time

    keys.write_new(tmp_path / "s.test.key")
    zdir = tmp_path / "zones"
    zdir.mkdir()
    (zdir / "s.test.yaml").write_text(ZONE.format(key=tmp_path / "s.test.key"))
    srv = GslbProcess(zdir, tmp_path / "gslb.log", ["--workers", "2"])
    made = 'gslb_dnssec_signatures_total{zone="s.test."}'
    try:
        srv.wait_log("worker process")
        n = 60
        for i in range(n):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.settimeout(2)
                s.sendto(
                    dns.message.make_query(f"w{i}.s.test.", "A", want_dnssec=True).to_wire(),
                    (srv.host, srv.port),
                )
                assert dns.message.from_wire(s.recv(4096)).authority
        time.sleep(1.5)  # workers report their counters every second
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.api_port}/v1/status", timeout=5) as r:
            per_worker = [w["queries"] for w in json.loads(r.read())["workers"]]
        assert sum(1 for q in per_worker if q > 0) >= 2, per_worker  # both processes answered
        assert dnssec_counts(srv)[made] >= n  # one NSEC signature per name, whoever answered
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()
