"""The DNSSEC building blocks against dnspython's validator: keys, DS, RRSIGs over
RRsets in the engine's wire form, validity windows, the signature cache, compact
denial NSEC records."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dns.dnssec
import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from gslb.dnssec import keys
from gslb.dnssec.signer import WEEK, Signer, Validity, compact_nsec, labels, window

ZONE = dns.name.from_text("example.test.")
NOW = 1_790_000_000.0


def wire(name: str) -> bytes:
    return dns.name.from_text(name).to_wire() or b""


@pytest.fixture(params=["ecdsa-p256", "ed25519"])
def key(request: pytest.FixtureRequest, tmp_path: Path) -> keys.SigningKey:
    path = tmp_path / "zone.key"
    keys.write_new(path, request.param)
    assert path.stat().st_mode & 0o777 == 0o600
    return keys.load(path)


def dnskey_rrset(k: keys.SigningKey) -> dns.rrset.RRset:
    rd = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.DNSKEY, k.dnskey, 0, len(k.dnskey))
    return dns.rrset.from_rdata(ZONE, 3600, rd)


def test_dnskey_tag_and_ds_match_dnspython(key: keys.SigningKey) -> None:
    rrset = dnskey_rrset(key)
    dnskey = rrset[0]
    assert dnskey.flags == 257 and dnskey.protocol == 3 and dnskey.algorithm == key.algorithm
    assert key.tag == dns.dnssec.key_id(dnskey)
    want = dns.dnssec.make_ds(ZONE, dnskey, "SHA256")
    assert keys.ds(wire("example.test."), key.dnskey) == want.to_wire()
    assert "tag=" in repr(key) and "PRIVATE" not in repr(key)


@pytest.mark.parametrize(
    ("owner", "rtype", "texts"),
    [
        ("www.example.test.", "A", ["192.0.2.1", "192.0.2.2", "192.0.2.10"]),
        ("www.example.test.", "AAAA", ["2001:db8::1"]),
        ("alias.example.test.", "CNAME", ["Target.Example.TEST."]),  # canonical: lowercased
        ("example.test.", "MX", ["10 Mail.Example.test.", "20 backup.example.test."]),
        ("example.test.", "NS", ["ns1.example.test.", "NS2.example.test."]),
        ("example.test.", "SOA", ["ns1.example.test. Hostmaster.example.test. 5 3600 600 86400 300"]),
        ("example.test.", "TXT", ['"v=spf1 -all"', '"Hello World"']),
        ("*.wild.example.test.", "A", ["192.0.2.99"]),
    ],
)
def test_signatures_validate(key: keys.SigningKey, owner: str, rtype: str, texts: list[str]) -> None:
    t = dns.rdatatype.from_text(rtype)
    rds = [dns.rdata.from_text(dns.rdataclass.IN, t, x) for x in texts]
    signer = Signer(key, wire("example.test."))
    rrsig = signer.rrsig(wire(owner), t, 300, [r.to_wire() or b"" for r in rds], NOW)
    sig = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.RRSIG, rrsig, 0, len(rrsig))
    name = dns.name.from_text(owner)
    rrset = dns.rrset.from_rdata_list(name, 300, rds)
    sigset = dns.rrset.from_rdata(name, 300, sig)
    dns.dnssec.validate(rrset, sigset, {ZONE: dnskey_rrset(key)}, now=NOW)  # raises when invalid
    assert sig.labels == len(name.labels) - 1 - owner.startswith("*")  # type: ignore[attr-defined]
    # a changed record does not validate with that signature
    other = dns.rrset.from_rdata_list(
        name, 300, [*rds[1:], dns.rdata.from_text(dns.rdataclass.IN, t, texts[0])]
    )
    if rtype == "A":
        other = dns.rrset.from_text_list(name, 300, "IN", "A", ["192.0.2.1", "192.0.2.3"])
        with pytest.raises(dns.exception.ValidationFailure):
            dns.dnssec.validate(other, sigset, {ZONE: dnskey_rrset(key)}, now=NOW)


def test_the_window_is_shared_by_a_whole_step_and_backdated() -> None:
    v = Validity()
    inc, exp = window(NOW, v)
    assert inc <= NOW - v.backdate and exp - inc == v.lifetime + v.backdate
    assert window(NOW + 3600, v) == (inc, exp) or window(NOW + 3600, v)[0] == inc + WEEK
    later = window(inc + v.backdate + WEEK, v)
    assert later == (inc + WEEK, exp + WEEK)  # the next step: a new window
    assert exp - NOW >= 2 * WEEK  # a signature made now is good for at least two weeks


def test_signatures_are_cached_per_rrset_and_window(key: keys.SigningKey) -> None:
    s = Signer(key, wire("example.test."), cache_max=2)
    a = [bytes([192, 0, 2, i]) for i in (1, 2)]
    first = s.rrsig(wire("www.example.test."), 1, 30, a, NOW)
    assert s.rrsig(wire("www.example.test."), 1, 30, list(reversed(a)), NOW + 60) == first  # order, time
    assert (s.stats.made, s.stats.hits) == (1, 1)
    s.rrsig(wire("www.example.test."), 1, 30, a[:1], NOW)  # another RRset
    s.rrsig(wire("www.example.test."), 1, 30, a, NOW + WEEK)  # the next window
    assert s.stats.made == 3 and len(s._cache) == 2  # bounded


def test_compact_denial_nsec() -> None:
    q = wire("nope.example.test.")
    rd = dns.rdata.from_wire(
        dns.rdataclass.IN, dns.rdatatype.NSEC, compact_nsec(q, None), 0, len(compact_nsec(q, None))
    )
    assert rd.next == dns.name.from_text("\\000.nope.example.test.")  # type: ignore[attr-defined]
    text = rd.to_text()
    assert "NSEC" in text and "RRSIG" in text and ("NXNAME" in text or "TYPE128" in text)
    nodata = compact_nsec(wire("www.example.test."), [1, 28])
    rd2 = dns.rdata.from_wire(dns.rdataclass.IN, dns.rdatatype.NSEC, nodata, 0, len(nodata))
    assert rd2.to_text().split()[1:] == ["A", "AAAA", "RRSIG", "NSEC"]
    assert labels(wire("*.a.example.test.")) == 3 and labels(wire("example.test.")) == 2


def test_unusable_key_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(keys.KeyError_, match="cannot read DNSSEC key"):
        keys.load(tmp_path / "missing.key")
    (tmp_path / "junk.key").write_text("not a key\n")
    with pytest.raises(keys.KeyError_, match="not a PEM private key"):
        keys.load(tmp_path / "junk.key")
    keys.write_new(tmp_path / "k", "ed25519")
    with pytest.raises(FileExistsError):
        keys.write_new(tmp_path / "k")  # never overwritten


def test_keygen_and_ds_commands(tmp_path: Path) -> None:
    out = tmp_path / "example.test.key"
    r = subprocess.run([sys.executable, "-m", "gslb", "dnssec", "keygen", "example.test", "--out", str(out)],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "BEGIN" not in r.stdout + r.stderr  # the key is never printed
    r = subprocess.run([sys.executable, "-m", "gslb", "dnssec", "ds", "example.test", "--key", str(out)],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 0, r.stderr
    k = keys.load(out)
    want = dns.dnssec.make_ds(ZONE, dnskey_rrset(k)[0], "SHA256")
    assert f"example.test. IN DS {want.to_text()}" in r.stdout
    cmd = [sys.executable, "-m", "gslb", "dnssec", "keygen", "example.test", "--out", str(out)]
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert again.returncode == 1 and "exists" in again.stderr and "Traceback" not in again.stderr


def test_kept_replies_end_with_their_validity_step(key: keys.SigningKey) -> None:
    s = Signer(key, wire("example.test."))
    k = (b"query", True)
    assert s.cached_reply(k, NOW) is None
    s.keep_reply(k, b"reply")
    assert s.cached_reply(k, NOW + 60) == b"reply"
    assert s.cached_reply(k, NOW + WEEK) is None  # the next step: signatures are made again
