"""Feeding secondaries: TSIG-signed transfers, per-zone rules, IXFR from the journal,
NOTIFY; checked with dnspython (which verifies every message's TSIG and applies IXFR
to a zone of its own) and with a real Knot as the secondary (tests/test_secondary_knot.py)."""

from __future__ import annotations

import base64
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.tsigkeyring
import dns.versioned
import dns.xfr
import dns.zone
import pytest

from gslb.dns import tsig
from tests.conftest import ROOT, GslbProcess
from tests.test_axfr import rrsets

SECRET = base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
KEYRING = dns.tsigkeyring.from_text({"xfr-key": ("hmac-sha256", SECRET)})
WRONG = dns.tsigkeyring.from_text({"xfr-key": ("hmac-sha256", base64.b64encode(b"x" * 32).decode())})
OTHER = dns.tsigkeyring.from_text({"other-key": ("hmac-sha256", SECRET)})

ZONE = """zone: sec.test.
ttl: 300
soa: {{serial: {serial}, minimum: 60}}
nameservers:
  ns1.sec.test.: [192.0.2.53]
pools:
  web:
    members: [{{address: 192.0.2.1}}, {{address: 192.0.2.2}}]
records:
  www:
    - types: [A]
      answer: {{select: weighted}}
      rules: [{{pools: [web]}}]
{records}
"""

BIG = "\n".join(f"  host{i}:\n    - {{type: TXT, value: '\"{'x' * 200} {i}\"'}}" for i in range(150))


def write_zone(zdir: Path, serial: int, records: str) -> None:
    path = zdir / "sec.test.yaml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(ZONE.format(serial=serial, records=records))
    tmp.replace(path)


def config(tmp: Path, transfers: str, key_file: bool = True) -> Path:
    (tmp / "xfr.key").write_text(f'key "xfr-key" {{\n\talgorithm hmac-sha256;\n\tsecret "{SECRET}";\n}};\n')
    cfg = tmp / "gslb.yaml"
    keys = f"tsig_keys:\n  - {{name: xfr-key, secret_file: {tmp / 'xfr.key'}}}\n" if key_file else ""
    cfg.write_text(keys + "transfers:\n" + transfers)
    return cfg


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[GslbProcess]:
    zdir = tmp_path / "zones"
    zdir.mkdir()
    write_zone(zdir, 1, "  a:\n    - {type: A, value: 198.51.100.1}\n" + BIG)
    cfg = config(
        tmp_path, "  - zones: [sec.test]\n    allow:\n      - key: xfr-key\n      - network: 10.0.0.0/8\n"
    )
    srv = GslbProcess(zdir, tmp_path / "gslb.log", ["--config", str(cfg), "--watch-interval", "0.1"])
    yield srv
    srv.stop()
    assert "Traceback" not in srv.log(), srv.log()


def axfr(srv: GslbProcess, keyring: dict[dns.name.Name, dns.tsig.Key] | None = KEYRING) -> dns.zone.Zone:
    return dns.zone.from_xfr(
        dns.query.xfr("127.0.0.1", "sec.test.", port=srv.port, timeout=5, keyring=keyring)
    )


def wait_serial(srv: GslbProcess, serial: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = srv.query("sec.test.", "SOA")
        if r.answer and r.answer[0][0].serial == serial:
            return
        time.sleep(0.05)
    raise AssertionError(f"serial {serial} never served:\n{srv.log()}")


def test_signed_axfr_every_message_verified(primary: GslbProcess) -> None:
    msgs = list(dns.query.xfr("127.0.0.1", "sec.test.", port=primary.port, timeout=5, keyring=KEYRING))
    assert len(msgs) >= 2  # several messages: each one's TSIG chains to the one before (RFC 8945 5.3.1)
    assert all(m.had_tsig for m in msgs)
    got = rrsets(axfr(primary))
    assert "www.sec.test. 30 A 192.0.2.1" in got and "a.sec.test. 300 A 198.51.100.1" in got
    assert primary.wait_log(r"zone transfer of sec\.test\. to 127\.0\.0\.1 \(key xfr-key\): AXFR, serial 1")


def test_wrong_keys_and_no_key_are_refused(primary: GslbProcess) -> None:
    with pytest.raises(dns.tsig.PeerBadSignature):
        axfr(primary, WRONG)
    primary.wait_log(r"zone transfer of sec\.test\. from 127\.0\.0\.1 refused: TSIG BADSIG \(key xfr-key\)")
    with pytest.raises(dns.tsig.PeerBadKey):
        axfr(primary, OTHER)
    primary.wait_log(r"refused: TSIG BADKEY \(key other-key\)")
    # no key, from 127.0.0.1, which is not in the allowed 10.0.0.0/8: REFUSED, Extended DNS Error 18
    q = dns.message.make_query("sec.test.", "AXFR", use_edns=0)
    r = dns.query.tcp(q, "127.0.0.1", port=primary.port, timeout=5)
    assert r.rcode() == dns.rcode.REFUSED and not r.answer
    assert [o.otype for o in r.options] == [dns.edns.OptionType.EDE]
    assert r.extended_errors()[0].code == dns.edns.EDECode.PROHIBITED
    primary.wait_log(r"zone transfer of sec\.test\. to 127\.0\.0\.1 refused: not allowed")
    metrics = primary_metrics(primary)
    assert 'gslb_zone_transfers_total{outcome="badsig"} 1.0' in metrics
    assert 'gslb_zone_transfers_total{outcome="badkey"} 1.0' in metrics
    assert 'gslb_zone_transfers_total{outcome="refused"} 1.0' in metrics


def primary_metrics(srv: GslbProcess) -> str:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{srv.api_port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def test_badtime_is_signed_with_our_clock(primary: GslbProcess) -> None:
    key = tsig.Key("xfr-key", "hmac-sha256", base64.b64decode(SECRET))
    q = dns.message.make_query("sec.test.", "AXFR", use_edns=False)
    skewed = int(time.time()) - 1000  # outside the 300 s fudge
    wire, mac = tsig.sign(q.to_wire(), key, when=skewed)
    with socket.create_connection(("127.0.0.1", primary.port), timeout=5) as s:
        s.sendall(struct.pack("!H", len(wire)) + wire)
        n = struct.unpack("!H", recv_exact(s, 2))[0]
        reply = recv_exact(s, n)
    with pytest.raises(dns.tsig.PeerBadTime):
        dns.message.from_wire(reply, keyring=KEYRING, request_mac=mac)
    t = tsig.find(reply)
    assert t is not None and t.error == tsig.BADTIME and len(t.other) == 6
    ours = int.from_bytes(t.other, "big")
    assert abs(ours - time.time()) < 5  # our clock, so the client can tell its skew
    assert tsig.verify_reply(reply, t, key, mac, now=skewed) is None  # and it is signed
    assert (reply[3] & 0xF) == tsig.NOTAUTH


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return buf


def test_signed_queries_get_signed_answers(primary: GslbProcess) -> None:
    q = dns.message.make_query("sec.test.", "SOA")
    q.use_tsig(KEYRING, keyname="xfr-key")
    r = dns.query.udp(q, "127.0.0.1", port=primary.port, timeout=2)  # dnspython verifies the reply's TSIG
    assert r.had_tsig and r.answer[0][0].serial == 1
    r = dns.query.tcp(q, "127.0.0.1", port=primary.port, timeout=2)
    assert r.had_tsig and r.answer
    bad = dns.message.make_query("sec.test.", "SOA")
    bad.use_tsig(WRONG, keyname="xfr-key")
    with pytest.raises(dns.tsig.PeerBadSignature):  # NOTAUTH with BADSIG
        dns.query.udp(bad, "127.0.0.1", port=primary.port, timeout=2)
    # a big answer that does not fit 512 octets with its TSIG: truncated, still signed
    q = dns.message.make_query("sec.test.", "NS", use_edns=False)
    q.use_tsig(KEYRING, keyname="xfr-key")
    r = dns.query.udp(q, "127.0.0.1", port=primary.port, timeout=2)
    assert r.had_tsig
    assert 'gslb_tsig_queries_total{result="valid"} 3.0' in primary_metrics(primary)
    assert 'gslb_tsig_queries_total{result="badsig"} 1.0' in primary_metrics(primary)


def ixfr_into(srv: GslbProcess, zone: dns.versioned.Zone) -> None:
    """IXFR from ``zone``'s serial (AXFR when it is empty) applied to ``zone``, as a
    secondary does it (dnspython checks the sequence of SOAs, deletions and additions)."""
    q, _ = dns.xfr.make_query(zone, keyring=KEYRING, keyname=dns.name.from_text("xfr-key"))
    dns.query.inbound_xfr("127.0.0.1", zone, q, port=srv.port, timeout=5)


def test_ixfr_applies_to_what_a_full_transfer_gives(primary: GslbProcess, tmp_path: Path) -> None:
    zdir = primary.zones_dir
    secondary = dns.versioned.Zone("sec.test.")
    ixfr_into(primary, secondary)  # first: AXFR
    assert secondary.get_soa().serial == 1
    # two edits: a record changed, one added, then removed and renamed
    write_zone(
        zdir, 2, "  a:\n    - {type: A, value: 198.51.100.2}\n  b:\n    - {type: TXT, value: new}\n" + BIG
    )
    wait_serial(primary, 2)
    v2 = rrsets(axfr(primary))
    write_zone(zdir, 3, "  b:\n    - {type: TXT, value: newer}\n" + BIG.replace("host7:", "h7:"))
    wait_serial(primary, 3)
    full = rrsets(axfr(primary))
    ixfr_into(primary, secondary)
    got = rrsets(secondary)
    assert got == full and got != v2
    # 14 records: SOA 3; SOA 1, a deleted, SOA 2, a and b added; SOA 2, a, b and host7 deleted,
    # SOA 3, b and h7 added; SOA 3 (the balanced name's members did not change: not in it)
    primary.wait_log(r"IXFR 1 -> 3, serial 3, 14 record\(s\) in 1 message")
    # up to date: the SOA alone
    q = dns.message.make_query("sec.test.", "IXFR")
    q.authority.append(dns.rrset.from_text("sec.test.", 0, "IN", "SOA", ". . 3 0 0 0 0"))
    q.use_tsig(KEYRING, keyname="xfr-key")
    r = dns.query.tcp(q, "127.0.0.1", port=primary.port, timeout=5)
    assert [rr.rdtype for rr in r.answer] == [dns.rdatatype.SOA] and len(r.answer[0]) == 1
    # from a serial it never served: the whole zone (RFC 1995 4), the SOA first and last
    msgs = list(dns.query.xfr("127.0.0.1", "sec.test.", "IXFR", port=primary.port, timeout=5,
                              keyring=KEYRING, keyname="xfr-key", serial=0))  # fmt: skip
    assert sum(len(rr) for m in msgs for rr in m.answer) == len(full) + 1
    primary.wait_log(r"IXFR from 0 as AXFR \(journal does not reach back\)")


def test_content_changed_without_serial_is_logged(primary: GslbProcess) -> None:
    write_zone(primary.zones_dir, 1, "  a:\n    - {type: A, value: 198.51.100.9}\n")
    primary.wait_log(r"zone sec\.test\. changed but its serial 1 did not: secondaries keep the old version")


def test_config_errors_are_positioned_and_one_line(tmp_path: Path) -> None:
    cfg = config(tmp_path, "  - zones: [sec.test]\n    allow: [{key: nope}]\n    notify: [not-an-ip]\n")
    out = run_serve(cfg, tmp_path)
    assert out.returncode == 1
    assert f"{cfg}:4:5: transfers: notify: address: expected an IP address, got 'not-an-ip'" in out.stderr
    cfg = config(tmp_path, "  - zones: [sec.test]\n    allow: [{key: nope}]\n")
    out = run_serve(cfg, tmp_path)
    assert out.returncode == 1 and f"{cfg}:4:5: transfers: key 'nope' is not one of tsig_keys" in out.stderr
    (tmp_path / "xfr.key").write_text("not base64!\n")
    cfg.write_text(f"tsig_keys: [{{name: k, secret_file: {tmp_path / 'xfr.key'}}}]\n")
    out = run_serve(cfg, tmp_path, write_key=False)
    assert out.returncode == 1 and "TSIG key k:" in out.stderr and "not base64" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


def run_serve(cfg: Path, tmp: Path, write_key: bool = True) -> subprocess.CompletedProcess[str]:
    (tmp / "z").mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "gslb", "serve", "--config", str(cfg), "--zones", str(tmp / "z"),
         "--listen", "127.0.0.1:0", "--no-api", "--state-dir", ""],
        capture_output=True, text=True, cwd=ROOT, timeout=30, check=False,
    )  # fmt: skip


class FakeSecondary:
    """A UDP socket that answers NOTIFY from the ``answer_on``-th try on (a secondary
    that was slow or lost our first datagrams); records what it got."""

    def __init__(self, answer_on: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.got: list[dns.message.Message] = []
        self.answer_on = answer_on
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(4096)
            except OSError:
                return
            m = dns.message.from_wire(data, keyring=KEYRING)
            self.got.append(m)
            if len(self.got) >= self.answer_on:
                r = dns.message.make_response(m)
                self.sock.sendto(r.to_wire(), addr)

    def close(self) -> None:
        self.sock.close()


def test_notify_retries_until_answered_and_gslb_notify(tmp_path: Path) -> None:
    sec = FakeSecondary(answer_on=3)
    zdir = tmp_path / "zones"
    zdir.mkdir()
    write_zone(zdir, 5, "")
    cfg = config(tmp_path, f"  - notify: [{{address: '127.0.0.1:{sec.port}', key: xfr-key}}]\n")
    (tmp_path / "token").write_text("t0ken\n")
    token = ["--api-token-file", str(tmp_path / "token")]
    srv = GslbProcess(zdir, tmp_path / "gslb.log", ["--config", str(cfg), "--watch-interval", "0.1", *token])
    to = rf"to 127\.0\.0\.1:{sec.port} \(key xfr-key\)"
    try:
        # at start (edits made while down): NOTIFY, retried after 1 s and 2 s, answered on the third
        srv.wait_log(
            rf"NOTIFY sec\.test\. serial 5 {to}: acknowledged \(try 3\)",
            15,
        )
        first = sec.got[0]
        assert first.opcode() == dns.opcode.NOTIFY and first.flags & dns.flags.AA and first.had_tsig
        assert first.question[0].rdtype == dns.rdatatype.SOA and first.answer[0][0].serial == 5
        # a reload with a new serial: NOTIFY again, answered at once
        write_zone(zdir, 6, "  a:\n    - {type: A, value: 198.51.100.1}\n")
        srv.wait_log(rf"NOTIFY sec\.test\. serial 6 {to}: acknowledged\n", 10)
        out = subprocess.run(
            [sys.executable, "-m", "gslb", "notify", "sec.test", "--api-url", f"http://127.0.0.1:{srv.api_port}",
             *token],
            capture_output=True, text=True, cwd=ROOT, timeout=60, check=False,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert (
            out.stdout == f"NOTIFY sec.test. serial 6 to 127.0.0.1:{sec.port} (key xfr-key): acknowledged\n"
        )
        assert sec.got[-1].answer[0][0].serial == 6
    finally:
        srv.stop()
        sec.close()


def test_notify_to_nobody_gives_up_and_says_so(tmp_path: Path) -> None:
    import asyncio

    from gslb.answer.build import build_state
    from gslb.secondaries import notify
    from gslb.secondaries.xfr import Target
    from gslb.zones.directory import ZoneSet

    zdir = tmp_path / "zones"
    zdir.mkdir()
    write_zone(zdir, 7, "")
    zs = ZoneSet(zdir, announce=False)
    zs.scan()
    cz = build_state(zs.with_serials()).zones[b"\x03sec\x04test\x00"]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # bound, never answers
        s.bind(("127.0.0.1", 0))
        t = Target("127.0.0.1", s.getsockname()[1], None)
        result = asyncio.run(notify.send(cz, t, tsig.Keyring(), waits=(0.1, 0.2)))
    assert result == "no answer after 3 tries"


def test_journal_keeps_its_bound_and_falls_back(tmp_path: Path) -> None:
    from gslb.answer.build import build_state
    from gslb.secondaries.xfr import Journal
    from gslb.zones.directory import ZoneSet

    zdir = tmp_path / "zones"
    zdir.mkdir()
    journal = Journal(max_versions=2)
    zs = ZoneSet(zdir, announce=False)
    state = build_state([])
    origin = b"\x03sec\x04test\x00"
    for serial in (1, 2, 3, 4):
        write_zone(zdir, serial, f"  v{serial}:\n    - {{type: A, value: 198.51.100.{serial}}}\n")
        zs.scan()
        new = build_state(zs.with_serials())
        journal.record(state, new)
        state = new
    assert journal.chain(origin, 1, 4) is None  # three steps, two kept: v1 is too old
    steps = journal.chain(origin, 2, 4)
    assert steps is not None and [(d.old_serial, d.new_serial) for d in steps] == [(2, 3), (3, 4)]
    assert [len(d.deleted) for d in steps] == [1, 1] and [len(d.added) for d in steps] == [1, 1]
    assert journal.chain(origin, 3, 4) is not None and journal.chain(origin, 4, 4) is None
    # a serial that goes back: nothing older leads to it
    write_zone(zdir, 2, "")
    zs.scan()
    journal.record(state, build_state(zs.with_serials()))
    assert journal.chain(origin, 3, 2) is None and origin not in journal.deltas


def test_workers_each_answer_ixfr_from_their_journal(tmp_path: Path) -> None:
    zdir = tmp_path / "zones"
    zdir.mkdir()
    write_zone(zdir, 1, "  a:\n    - {type: A, value: 198.51.100.1}\n")
    cfg = config(tmp_path, "  - allow: [{key: xfr-key}]\n")
    srv = GslbProcess(
        zdir, tmp_path / "gslb.log", ["--config", str(cfg), "--watch-interval", "0.1", "--workers", "2"]
    )
    try:
        srv.wait_log(r"2 worker\(s\)", 15)
        write_zone(zdir, 2, "  a:\n    - {type: A, value: 198.51.100.2}\n")
        wait_serial(srv, 2)
        time.sleep(1)  # the workers reload after the primary
        for _ in range(12):  # SO_REUSEPORT spreads the connections over the processes
            msgs = list(dns.query.xfr("127.0.0.1", "sec.test.", "IXFR", port=srv.port, timeout=5,
                                      keyring=KEYRING, keyname="xfr-key", serial=1))  # fmt: skip
            answer = [rr for m in msgs for rrset in m.answer for rr in rrset]
            # incremental: SOA 2, SOA 1, the old a, SOA 2, the new a, SOA 2
            assert [getattr(r, "serial", None) for r in answer] == [2, 1, None, 2, None, 2], answer
    finally:
        srv.stop()
