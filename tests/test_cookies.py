"""DNS cookies on the real server (RFC 7873, RFC 9018), with BIND's `dig +cookie`
and dnspython: fresh server cookies that follow RFC 9018, a cookie from one node
accepted by another with the same secret, rate limiting that lets valid cookies
through and sends BADCOOKIE to the rest, FORMERR for a malformed option, the UDP cap
for cookie-less queries, TCP, and workers that accept each other's cookies."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
import urllib.request
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from gslb.dns.cookies import address_bytes, server_cookie
from tests.conftest import GslbProcess

SECRET = bytes.fromhex("e5e973e5a6b2a43f48e7dc849e37bfcf")
TXTS = ", ".join(f"{{type: TXT, value: '\"{'x' * 60} {i}\"'}}" for i in range(12))
ZONE = (
    "zone: c.test.\n"
    "nameservers: {ns1.c.test.: [192.0.2.53]}\n"
    "records:\n"
    "  www: [{type: A, value: 192.0.2.1}]\n"
    f"  big: [{TXTS}]\n"
)


def start(tmp: Path, name: str, extra: list[str] | None = None, secret: bool = True) -> GslbProcess:
    zdir = tmp / "zones"
    if not zdir.exists():
        zdir.mkdir()
        (zdir / "c.test.yaml").write_text(ZONE)
    (tmp / "secrets").write_text("# current\n" + SECRET.hex() + "\n")
    args = ["--cookie-secret-file", str(tmp / "secrets")] if secret else []
    return GslbProcess(zdir, tmp / f"{name}.log", [*args, *(extra or [])], state_dir=tmp / f"{name}.state")


def cookie_of(r: dns.message.Message) -> bytes:
    opts = [o for o in r.options if isinstance(o, dns.edns.CookieOption)]
    assert len(opts) == 1, r
    return opts[0].client + opts[0].server


def ask(srv: GslbProcess, cookie: bytes | None, name: str = "www.c.test.", rdtype: str = "A",
        sock: socket.socket | None = None, payload: int = 1232) -> dns.message.Message:  # fmt: skip
    opts: list[dns.edns.Option] = (
        [dns.edns.CookieOption(cookie[:8], cookie[8:])] if cookie is not None else []
    )
    q = dns.message.make_query(name, rdtype, use_edns=0, options=opts, payload=payload)
    if sock is None:
        return dns.query.udp(q, srv.host, port=srv.port, timeout=2)
    sock.sendto(q.to_wire(), (srv.host, srv.port))
    return dns.message.from_wire(sock.recv(65535))


def cookie_counts(srv: GslbProcess) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{srv.api_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^gslb_cookies_total\{result="(\w+)"\} (\S+)', text, re.M)
    }


def test_a_client_cookie_gets_an_rfc9018_server_cookie(tmp_path: Path) -> None:
    srv = start(tmp_path, "a")
    try:
        client = os.urandom(8)
        r = ask(srv, client)
        c = cookie_of(r)
        assert r.answer and c[:8] == client and len(c) == 24
        ts = int.from_bytes(c[12:16], "big")
        # stamped with the time rounded down to five minutes (the same cookie meanwhile)
        assert ts % 300 == 0 and -5 < time.time() - ts < 305
        # exactly the server cookie RFC 9018 prescribes for this secret, client and address
        assert c[8:] == server_cookie(SECRET, client, address_bytes("127.0.0.1"), ts)
        r2 = ask(srv, c)  # presented back: valid, kept (still fresh)
        assert r2.answer and cookie_of(r2) == c
        assert cookie_counts(srv) == {"valid": 1, "fresh": 1, "malformed": 0, "badcookie": 0}
        with pytest.raises(ValueError):  # (dnspython will not even build one)
            dns.edns.CookieOption(b"1234567", b"")
        q = dns.message.make_query("www.c.test.", "A", use_edns=0)
        wire = bytearray(q.to_wire())
        bad = b"\x00\x0a\x00\x0c" + os.urandom(12)  # a 12-octet cookie: malformed (RFC 7873 5.2.2)
        wire[-2:] = len(bad).to_bytes(2, "big")  # the OPT's RDLENGTH, then the option
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(bytes(wire) + bad, (srv.host, srv.port))
            assert dns.message.from_wire(s.recv(4096)).rcode() == dns.rcode.FORMERR
        assert cookie_counts(srv)["malformed"] == 1
        t = dns.query.tcp(dns.message.make_query("www.c.test.", "A", use_edns=0,
                                                 options=[dns.edns.CookieOption(c[:8], c[8:])]),
                          srv.host, port=srv.port, timeout=2)  # fmt: skip
        assert t.answer and cookie_of(t) == c  # over TCP too
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def test_a_cookie_from_one_node_is_valid_on_another(tmp_path: Path) -> None:
    """Two nodes with the same secret file: node B takes node A's cookie as its own, so
    B's rate limit lets it through; a client cookie alone is limited on B, and gets
    BADCOOKIE with a fresh cookie in place of the slip."""
    a = start(tmp_path, "a")
    b = start(tmp_path, "b", ["--rrl-rate", "1", "--rrl-slip", "1"])
    try:
        c = cookie_of(ask(a, os.urandom(8)))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            valid = [ask(b, c, sock=s) for _ in range(20)]
            assert all(r.answer and r.rcode() == dns.rcode.NOERROR for r in valid)
            alone = [ask(b, c[:8], sock=s) for _ in range(20)]
        bad = [r for r in alone if r.rcode() == dns.rcode.BADCOOKIE]
        assert bad and len(bad) >= 15, [r.rcode() for r in alone]  # past the first second's 1 answer
        for r in bad:
            fresh = cookie_of(r)
            assert not r.answer and fresh[:8] == c[:8] and len(fresh) == 24
        counts = cookie_counts(b)
        assert counts["valid"] == 20 and counts["badcookie"] == len(bad)
    finally:
        a.stop()
        b.stop()
    assert "Traceback" not in a.log() + b.log()


def test_cookie_less_udp_is_capped(tmp_path: Path) -> None:
    srv = start(tmp_path, "a", ["--cookie-less-udp-size", "512"])
    try:
        r = ask(srv, None, "big.c.test.", "TXT")  # EDNS 1232, no cookie: capped at 512
        assert r.flags & dns.flags.TC and not r.answer
        c = cookie_of(ask(srv, os.urandom(8)))
        full = ask(srv, c, "big.c.test.", "TXT")  # a valid cookie: the whole answer over UDP
        assert not full.flags & dns.flags.TC and len(full.answer[0]) == 12 and cookie_of(full) == c
        assert len(full.to_wire()) > 512
        fresh = ask(srv, os.urandom(8), "big.c.test.", "TXT")  # a client cookie alone: capped
        assert fresh.flags & dns.flags.TC and len(cookie_of(fresh)) == 24
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


def test_workers_accept_each_others_cookies(tmp_path: Path) -> None:
    """No secret file: the primary's random secret goes to its workers."""
    srv = start(tmp_path, "a", ["--workers", "2"], secret=False)
    try:
        srv.wait_log("worker process")
        c = cookie_of(ask(srv, os.urandom(8)))
        for _ in range(30):  # new source ports: the kernel spreads them over the processes
            assert cookie_of(ask(srv, c)) == c
        time.sleep(1.5)  # workers report their counters every second
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.api_port}/v1/status", timeout=5) as r:
            per = [w["queries"] for w in json.loads(r.read())["workers"]]
        assert sum(1 for n in per if n) >= 2, per
        assert cookie_counts(srv)["valid"] == 30
    finally:
        srv.stop()
    assert "Traceback" not in srv.log()


@pytest.mark.skipif(shutil.which("dig") is None, reason="needs dig (bind9-dnsutils, .ci/system-deps)")
def test_dig_cookie(tmp_path: Path) -> None:
    srv = start(tmp_path, "a")
    try:
        out = srv.dig("+cookie", "www.c.test.", "A")
        m = re.search(r"; COOKIE: ([0-9a-f]{48}) \(good\)", out)
        assert m and "192.0.2.1" in out, out
        again = srv.dig(f"+cookie={m.group(1)}", "www.c.test.", "A")
        assert f"; COOKIE: {m.group(1)} (good)" in again, again
        assert cookie_counts(srv)["valid"] == 1
        plain = srv.dig("+nocookie", "www.c.test.", "A")
        assert "COOKIE" not in plain and "192.0.2.1" in plain
    finally:
        srv.stop()


def test_a_bad_secret_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "secrets"
    bad.write_text("not hex\n")
    (tmp_path / "zones").mkdir()
    cmd = [sys.executable, "-m", "gslb", "serve", "--zones", str(tmp_path / "zones"),
           "--listen", "127.0.0.1:0", "--no-api", "--cookie-secret-file", str(bad)]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"{bad}:1: a cookie secret is 32 hex digits" in r.stderr
