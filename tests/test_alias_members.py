"""Alias members (flattening, docs/routing.md "Alias members") through real servers: a
second gslb on loopback is the authoritative server of the alias names (short TTLs,
edited during the test), the gslb under test resolves them through it (``--resolver``)
and answers with their addresses, at the apex too; a changed address appears within
TTL + refresh; each address is probed on its own (a dead address of a live name leaves
the answer, the probe's Host is the alias name); with the name's server frozen the last
addresses are answered past their TTL with EDE 3, then dropped past ``--alias-stale``
(the backup pool answers), and come back when the server answers again."""

from __future__ import annotations

import base64
import json
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.rcode
import pytest

from tests.conftest import ROOT, GslbProcess
from tests.targets import Target, free_port
from tests.test_health import FALL, INTERVAL, RISE, wait_until

LB = ["127.0.0.71", "127.0.0.72", "127.0.0.73"]
TTL = 1

TARGET_ZONE = """zone: target.test.
nameservers: {{ns1.target.test.: [192.0.2.53]}}
records:
  lb:
{addrs}
    - {{type: AAAA, value: "::1", ttl: {ttl}}}
  nothing: [{{type: TXT, value: '"no addresses here"'}}]
"""

ZONE = """zone: m.test.
nameservers: {{ns1.m.test.: [192.0.2.53]}}
checks:
  web: {{type: http, port: {port}, path: /healthz, interval: {interval}s, timeout: 0.3s, fall: {fall},
         rise: {rise}}}
pools:
  elb: {{check: web, members: [{{alias: lb.target.test.}}]}}
  backup: {{members: [{{address: 198.51.100.1}}, {{address: "2001:db8::100"}}]}}
  missing: {{members: [{{alias: nope.target.test.}}, {{alias: nothing.target.test.}}]}}
records:
  "@":
    - types: [A, AAAA]
      ttl: 5
      answer: {{select: all}}
      rules: [{{pools: [elb, backup]}}]
  gone: [{{types: [A], answer: {{select: all}}, rules: [{{pools: [missing, backup]}}]}}]
"""


def _port_with_v6() -> int:
    """A TCP port free on the three IPv4 loopback addresses and on ::1."""
    for _ in range(50):
        port = free_port(LB)
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            try:
                s.bind(("::1", port))
            except OSError:
                continue
        return port
    raise OSError("no port free on the loopback addresses and ::1")


def target_zone(addrs: list[str]) -> str:
    lines = "\n".join(f"    - {{type: A, value: {a}, ttl: {TTL}}}" for a in addrs)
    return TARGET_ZONE.format(addrs=lines, ttl=TTL)


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[GslbProcess, GslbProcess, list[Target]]]:
    tdir = tmp_path / "target-zones"
    tdir.mkdir()
    (tdir / "target.test.yaml").write_text(target_zone(LB[:2]))
    auth = GslbProcess(tdir, tmp_path / "auth.log", ["--watch-interval", "0"])
    port = _port_with_v6()
    backends = [Target(h, port) for h in [*LB, "::1"]]  # ::1: the alias's AAAA, probed too
    zdir = tmp_path / "zones"
    zdir.mkdir()
    (zdir / "m.test.yaml").write_text(ZONE.format(port=port, interval=INTERVAL, fall=FALL, rise=RISE))
    srv = GslbProcess(
        zdir,
        tmp_path / "gslb.log",
        ["--resolver", f"127.0.0.1:{auth.port}", "--alias-min-ttl", "1", "--alias-stale", "4"],
    )
    try:
        yield srv, auth, backends
    finally:
        auth.signal(signal.SIGCONT)
        srv.stop()
        auth.stop()
        for b in backends:
            b.close()
    assert "Traceback" not in srv.log(), srv.log()


def answer(srv: GslbProcess, rtype: str = "A", name: str = "m.test.") -> set[str]:
    return {rd.to_text() for rr in srv.query(name, rtype).answer for rd in rr}


def ede_codes(msg: dns.message.Message) -> list[int]:
    return [int(e.code) for e in msg.extended_errors()]


def test_alias_addresses_answer_and_follow_the_name(
    setup: tuple[GslbProcess, GslbProcess, list[Target]],
) -> None:
    srv, auth, backends = setup
    wait_until(lambda: answer(srv) == set(LB[:2]), 10, "the alias's addresses at the apex")
    assert answer(srv, "AAAA") == {"::1"}
    r = srv.query("m.test.", "A")
    assert r.answer[0].ttl == 5 and not ede_codes(r)  # the record's TTL; fresh: no EDE
    # the probes reach each address by itself, with the alias name as Host
    wait_until(lambda: backends[0].requests > 0 and backends[1].requests > 0, 10, "each address probed")
    assert backends[0].last_host == f"lb.target.test:{backends[0].port}"
    # the name's server changes an address: it shows within TTL + refresh
    (auth.zones_dir / "target.test.yaml").write_text(target_zone([LB[0], LB[2]]))
    auth.signal(signal.SIGHUP)
    took = wait_until(lambda: answer(srv) == {LB[0], LB[2]}, 10, "the changed address")
    assert took < TTL + 2.5, took
    wait_until(lambda: backends[2].requests > 0, 10, "the new address probed")


def test_a_dead_address_of_a_live_name_leaves_the_answer(
    setup: tuple[GslbProcess, GslbProcess, list[Target]],
) -> None:
    srv, _, backends = setup
    wait_until(lambda: answer(srv) == set(LB[:2]), 10, "both addresses")
    start = len(srv.log())
    backends[1].stop()
    try:
        wait_until(lambda: answer(srv) == {LB[0]}, INTERVAL * FALL + 3, "the dead address out")
        srv.wait_log(r"127\.0\.0\.72:\d+ \(as lb\.target\.test\) DOWN", 3, start)
        with urllib.request.urlopen(f"http://127.0.0.1:{srv.api_port}/v1/status", timeout=5) as resp:
            doc = json.loads(resp.read())
        elb = next(m for m in doc["members"] if m["pool"] == "elb")
        assert elb["in_rotation"] and elb["alias"]["resolved"] == "resolved", elb
        down = {a["address"]: a["down"] for a in elb["alias"]["addresses"]}
        assert down == {LB[0]: False, LB[1]: True, "::1": False}, elb
    finally:
        backends[1].start()
    wait_until(lambda: answer(srv) == set(LB[:2]), INTERVAL * RISE + 5, "back")


def test_an_unreachable_name_server_means_stale_then_the_backup(
    setup: tuple[GslbProcess, GslbProcess, list[Target]],
) -> None:
    srv, auth, _ = setup
    wait_until(lambda: answer(srv) == set(LB[:2]), 10, "fresh")
    auth.signal(signal.SIGSTOP)  # the name's server answers nothing now
    try:
        wait_until(lambda: 3 in ede_codes(srv.query("m.test.", "A")), TTL + 6, "stale, with EDE 3")
        r = srv.query("m.test.", "A")
        assert {rd.to_text() for rr in r.answer for rd in rr} == set(LB[:2])  # the last addresses
        assert "Stale Answer" in srv.dig("m.test", "A") or "EDE: 3" in srv.dig("m.test", "A")
        # past --alias-stale (4 s): the member is out, the backup pool answers, no EDE
        wait_until(lambda: answer(srv) == {"198.51.100.1"}, 4 + 2 * 2 + 3, "dropped past the stale limit")
        assert not ede_codes(srv.query("m.test.", "A"))
        srv.wait_log(r"alias lb\.target\.test\.: out of the answers: stale for more than 4 s", 3)
    finally:
        auth.signal(signal.SIGCONT)
    wait_until(lambda: answer(srv) == set(LB[:2]), 10, "resolved again")
    assert not ede_codes(srv.query("m.test.", "A"))


def test_a_name_without_addresses_is_out_at_once(
    setup: tuple[GslbProcess, GslbProcess, list[Target]],
) -> None:
    """NXDOMAIN, or a name with no A/AAAA: a definite answer, not a failure (no stale)."""
    srv = setup[0]
    wait_until(lambda: answer(srv, name="gone.m.test.") == {"198.51.100.1"}, 10, "backup")
    r = srv.query("gone.m.test.", "A")
    assert r.rcode() == dns.rcode.NOERROR and not ede_codes(r)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gslb",
            "explain",
            "gone.m.test",
            "--api-url",
            f"http://127.0.0.1:{srv.api_port}",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        cwd=ROOT,
    )
    assert "alias nope.target.test. = [] (no such name (NXDOMAIN))" in out.stdout, out.stdout + out.stderr
    assert "alias nothing.target.test. = [] (no A or AAAA records)" in out.stdout, out.stdout


def test_metrics_say_which_alias_is_stale(setup: tuple[GslbProcess, GslbProcess, list[Target]]) -> None:
    srv = setup[0]
    wait_until(lambda: answer(srv) == set(LB[:2]), 10, "fresh")
    text = urllib.request.urlopen(f"http://127.0.0.1:{srv.api_port}/metrics", timeout=5).read().decode()
    assert 'gslb_alias_stale{alias="lb.target.test."} 0.0' in text, text
    assert 'gslb_alias_stale{alias="nope.target.test."} 2.0' in text
    assert 'gslb_alias_addresses{alias="lb.target.test."} 3.0' in text
    assert 'gslb_alias_resolutions_total{alias="lb.target.test.",result="ok"}' in text


def test_bad_alias_members_are_refused_with_positions(tmp_path: Path) -> None:
    z = tmp_path / "b.test.yaml"
    z.write_text(
        "zone: b.test.\nnameservers: {ns1.b.test.: [192.0.2.53]}\npools:\n"
        "  p: {members: [{alias: lb.b.test.}, {alias: x.example.net., check_address: 192.0.2.1},\n"
        "                {alias: 192.0.2.9}, {alias: a.example.net., address: 192.0.2.8}]}\n"
        "records:\n  www: [{types: [A], rules: [{pools: [p]}]}]\n"
    )
    out = subprocess.run(
        [sys.executable, "-m", "gslb", "check", str(z)], capture_output=True, text=True, timeout=30,
        check=False, cwd=ROOT,
    )  # fmt: skip
    assert out.returncode == 1
    text = out.stdout
    assert f"{z}:4:25: pools.p.members[0].alias: an alias names a host outside the zone" in text, text
    assert f"{z}:4:62: pools.p.members[1].check_address: an alias member is probed at each address" in text
    assert f"{z}:5:25: pools.p.members[2].alias: '192.0.2.9' is an address" in text
    assert f"{z}:5:37: pools.p.members[3]: a member has one of:" in text and "not address and alias" in text


def test_every_worker_answers_with_the_aliases_addresses(
    setup: tuple[GslbProcess, GslbProcess, list[Target]], tmp_path: Path
) -> None:
    """--workers 2: the primary resolves, each worker is told (queries from many source
    ports reach both processes)."""
    _, auth, _ = setup
    zdir = tmp_path / "zones-w"
    zdir.mkdir()
    (zdir / "w.test.yaml").write_text(
        "zone: w.test.\nnameservers: {ns1.w.test.: [192.0.2.53]}\n"
        "pools:\n  elb: {members: [{alias: lb.target.test.}]}\n"
        "records:\n  '@': [{types: [A], answer: {select: all}, rules: [{pools: [elb]}]}]\n"
    )
    srv = GslbProcess(
        zdir,
        tmp_path / "w.log",
        ["--workers", "2", "--resolver", f"127.0.0.1:{auth.port}", "--alias-min-ttl", "1"],
    )
    try:
        wait_until(lambda: answer(srv, name="w.test.") == set(LB[:2]), 10, "resolved")
        assert all(answer(srv, name="w.test.") == set(LB[:2]) for _ in range(40))
        (auth.zones_dir / "target.test.yaml").write_text(target_zone([LB[2]]))
        auth.signal(signal.SIGHUP)
        wait_until(lambda: all(answer(srv, name="w.test.") == {LB[2]} for _ in range(20)), 10, "every worker")
    finally:
        srv.stop()
    assert "Traceback" not in srv.log(), srv.log()


@pytest.mark.skipif(shutil.which("delv") is None, reason="needs delv (bind9-dnsutils, .ci/system-deps)")
def test_flattened_answers_are_signed_and_validate(
    setup: tuple[GslbProcess, GslbProcess, list[Target]], tmp_path: Path
) -> None:
    from gslb.dnssec import keys

    _, auth, _ = setup
    keys.write_new(tmp_path / "s.key")
    zdir = tmp_path / "zones-s"
    zdir.mkdir()
    (zdir / "s.test.yaml").write_text(
        f"zone: s.test.\ndnssec: {{key: {tmp_path / 's.key'}}}\nnameservers: {{ns1.s.test.: [192.0.2.53]}}\n"
        "pools:\n  elb: {members: [{alias: lb.target.test.}]}\n"
        "records:\n  '@': [{types: [A, AAAA], answer: {select: all}, rules: [{pools: [elb]}]}]\n"
    )
    srv = GslbProcess(zdir, tmp_path / "s.log", ["--resolver", f"127.0.0.1:{auth.port}"])
    try:
        wait_until(lambda: answer(srv, name="s.test.") == set(LB[:2]), 10, "resolved")
        dnskey = srv.query("s.test.", "DNSKEY").answer[0][0]
        anchor = tmp_path / "anchor.conf"
        anchor.write_text(
            f"trust-anchors {{ s.test. static-key {dnskey.flags} {dnskey.protocol} {dnskey.algorithm} "
            f'"{base64.b64encode(dnskey.key).decode()}"; }};\n'
        )
        for rtype, want in (("A", LB[:2]), ("AAAA", ["::1"])):
            args = ["-p", str(srv.port), "-a", str(anchor), "+root=s.test", "s.test.", rtype]
            out = subprocess.run(["delv", f"@{srv.host}", *args], capture_output=True, text=True, timeout=30,
                                 check=False)  # fmt: skip
            text = out.stdout + out.stderr
            assert "; fully validated" in text and all(f"IN\t{rtype}\t{a}" in text for a in want), text
    finally:
        srv.stop()
