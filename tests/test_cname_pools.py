"""Balanced CNAMEs (pools of host names, docs/routing.md "Pools of names") through the
real server and real clients: the rule and the ECS scope decide the target, every query
type gets the one CNAME, in-zone targets are followed, weights hold, and health checks
probe each member by its name (TLS SNI and HTTP Host are the target's, a certificate
naming only the target verifies; a member without a probe address is resolved by the
system's resolver), so a dead CDN leaves the answer within the failover bound."""

from __future__ import annotations

import collections
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest
import trustme

from tests.conftest import ROOT, GslbProcess
from tests.targets import Target, free_port
from tests.test_health import BOUND, FALL, INTERVAL, RISE, wait_until

HOSTS = ["127.0.0.51", "127.0.0.52"]
NAMES = ["www.cdn-a.test", "www.cdn-b.test"]

ZONE = """zone: cdn.test.
nameservers: {{ns1.cdn.test.: [192.0.2.53]}}
checks:
  edge: {{type: https, port: {port}, path: /healthz, ca_file: {ca}, interval: {interval}s, timeout: 0.4s,
          fall: {fall}, rise: {rise}}}
  plain: {{type: tcp, port: {tcp_port}, interval: {interval}s, timeout: 0.3s, fall: {fall}, rise: {rise}}}
pools:
  cdn-a: {{check: edge, members: [{{target: www.cdn-a.test., check_address: 127.0.0.51}}]}}
  cdn-b: {{check: edge, members: [{{target: www.cdn-b.test., check_address: 127.0.0.52}}]}}
  origin: {{members: [{{target: origin}}]}}
  lb: {{members: [{{address: 192.0.2.80}}]}}
  split: {{members: [{{target: a.example.net., weight: 3}}, {{target: b.example.net., weight: 1}}]}}
  local: {{check: plain, members: [{{target: localhost.}}]}}
records:
  www:
    - types: [CNAME]
      ttl: 20
      rules:
        - {{subnets: [10.0.0.0/8], pools: [cdn-a, cdn-b]}}
        - {{pools: [cdn-b, cdn-a]}}
  img: [{{types: [CNAME], rules: [{{pools: [origin]}}]}}]
  origin:
    - types: [A]
      rules: [{{subnets: [10.1.0.0/16], pools: [lb]}}, {{pools: [lb]}}]
  mix: [{{types: [CNAME], rules: [{{pools: [split]}}]}}]
  loc: [{{types: [CNAME], rules: [{{pools: [local]}}], when_all_down: servfail}}]
"""


class Sni:
    """A TLS server context for ``name`` that records the server names clients send."""

    def __init__(self, ca: trustme.CA, name: str) -> None:
        self.seen: list[str | None] = []
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert(name).configure_cert(self.ctx)
        self.ctx.sni_callback = lambda _obj, sent, _ctx: self.seen.append(sent)


# the server, the two CDN hosts' HTTPS targets, their SNI records, the TCP target of localhost
Cdn = tuple[GslbProcess, list[Target], list[Sni], Target]


@pytest.fixture(scope="module")
def cdn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cdn]:
    tmp = tmp_path_factory.mktemp("cname")
    ca = trustme.CA()
    ca_file = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    port = free_port(HOSTS)
    snis = [Sni(ca, n) for n in NAMES]  # each certificate names its CDN host, not the address
    targets = [Target(h, port, tls=s.ctx) for h, s in zip(HOSTS, snis, strict=True)]
    tcp = Target("127.0.0.1", free_port(["127.0.0.1"]), kind="tcp")
    zdir = tmp / "zones"
    zdir.mkdir()
    (zdir / "cdn.test.yaml").write_text(
        ZONE.format(port=port, ca=ca_file, interval=INTERVAL, fall=FALL, rise=RISE, tcp_port=tcp.port)
    )
    srv = GslbProcess(zdir, tmp / "gslb.log")
    try:
        yield srv, targets, snis, tcp
    finally:
        srv.stop()
        for t in [*targets, tcp]:
            t.close()
    assert "Traceback" not in srv.log(), srv.log()


def ask(
    srv: GslbProcess, name: str, rtype: str, ecs: str | None = None, tcp: bool = False
) -> dns.message.Message:
    opts = [dns.edns.ECSOption.from_text(ecs)] if ecs else []
    return srv.query(name, rtype, options=opts, tcp=tcp)


def cname_of(msg: dns.message.Message) -> str | None:
    for rr in msg.answer:
        if rr.rdtype == dns.rdatatype.CNAME:
            return str(rr[0].target).lower()  # compressed against the question: its case
    return None


def scope_of(msg: dns.message.Message) -> int | None:
    for o in msg.options:
        if isinstance(o, dns.edns.ECSOption):
            return int(o.scopelen)
    return None


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
@pytest.mark.parametrize("rtype", ["A", "AAAA", "HTTPS", "TXT", "MX", "CNAME", "NAPTR"])
def test_every_type_gets_the_rules_target(cdn: Cdn, rtype: str, tcp: bool) -> None:
    srv = cdn[0]
    wait_until(lambda: cname_of(ask(srv, "www.cdn.test.", "A")) == "www.cdn-b.test.", 10, "both up")
    for _ in range(3):  # the second and third come from the reply cache (and the C loop over UDP)
        r = ask(srv, "WwW.cDn.TeSt.", rtype, tcp=tcp)
        assert r.rcode() == dns.rcode.NOERROR and r.flags & dns.flags.AA
        assert [(str(rr.name), rr.ttl, dns.rdatatype.to_text(rr.rdtype)) for rr in r.answer] == [
            ("WwW.cDn.TeSt.", 20, "CNAME")
        ]
        assert cname_of(r) == "www.cdn-b.test."  # the catch-all's first pool
        r = ask(srv, "www.cdn.test.", rtype, ecs="10.20.30.0/24", tcp=tcp)
        assert cname_of(r) == "www.cdn-a.test." and len(r.answer) == 1
        assert scope_of(r) == 8  # the answer holds for the matched rule's /8
        r = ask(srv, "www.cdn.test.", rtype, ecs="192.0.2.0/24", tcp=tcp)
        assert cname_of(r) == "www.cdn-b.test." and scope_of(r) == 1  # 0... and 1... differ from 10/8


def test_any_is_answered_as_rfc_8482_says(cdn: Cdn) -> None:
    r = ask(cdn[0], "www.cdn.test.", "ANY")
    assert [dns.rdatatype.to_text(rr.rdtype) for rr in r.answer] == ["HINFO"]


def test_dig_shows_the_cname(cdn: Cdn) -> None:
    out = cdn[0].dig("+noall", "+answer", "+subnet=10.9.0.0/16", "www.cdn.test", "A")
    assert out.split() == ["www.cdn.test.", "20", "IN", "CNAME", "www.cdn-a.test."], out


def test_an_in_zone_target_is_followed(cdn: Cdn) -> None:
    srv = cdn[0]
    r = ask(srv, "img.cdn.test.", "A", ecs="10.1.2.0/24")
    texts = [rr.to_text() for rr in r.answer]
    assert texts == ["img.cdn.test. 30 IN CNAME origin.cdn.test.", "origin.cdn.test. 30 IN A 192.0.2.80"]
    assert scope_of(r) == 16  # the chain's narrowest decision: origin's /16 rule
    r = ask(srv, "img.cdn.test.", "AAAA")
    assert [rr.to_text() for rr in r.answer] == ["img.cdn.test. 30 IN CNAME origin.cdn.test."]
    assert r.rcode() == dns.rcode.NOERROR
    assert r.authority[0].rdtype == dns.rdatatype.SOA  # NODATA at the target


def test_weights_split_the_targets(cdn: Cdn) -> None:
    srv = cdn[0]
    seen = collections.Counter(cname_of(ask(srv, "mix.cdn.test.", "A")) for _ in range(400))
    assert set(seen) == {"a.example.net.", "b.example.net."}
    assert 240 <= seen["a.example.net."] <= 355, seen  # weight 3 of 4: 300 expected


def test_probes_present_the_targets_name(cdn: Cdn) -> None:
    srv, targets, snis, _ = cdn
    wait_until(lambda: all(t.requests > 0 for t in targets), 10, "both probed")
    port = targets[0].port
    for t, s, name in zip(targets, snis, NAMES, strict=True):
        assert s.seen and set(s.seen) == {name}  # SNI: the member's name, not its probe address
        assert t.last_host == f"{name}:{port}"
    text = srv.log()
    assert "DOWN" not in text, text  # the certificates name the targets only: verified against them


def test_a_dead_cdn_leaves_the_answer_and_comes_back(
    cdn: Cdn,
) -> None:
    srv, targets, _, _ = cdn
    wait_until(lambda: cname_of(ask(srv, "www.cdn.test.", "A")) == "www.cdn-b.test.", 10, "both up")
    start = len(srv.log())
    targets[1].stop()
    try:
        took = wait_until(lambda: cname_of(ask(srv, "www.cdn.test.", "A")) == "www.cdn-a.test.", BOUND + 2)
        assert took <= BOUND + 1, took
        srv.wait_log(r"127\.0\.0\.52:\d+ \(as www\.cdn-b\.test\) DOWN: connect", 3, start)
        # the other rule's clients had cdn-a first all along
        assert cname_of(ask(srv, "www.cdn.test.", "A", ecs="10.0.0.0/24")) == "www.cdn-a.test."
        explained = subprocess.run(
            [
                sys.executable,
                "-m",
                "gslb",
                "explain",
                "www.cdn.test",
                "--api-url",
                f"http://127.0.0.1:{srv.api_port}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
            cwd=ROOT,
        )
        said = explained.stdout + explained.stderr
        assert "pool cdn-b skipped: 0 of 1 members up" in said, said
        assert "CNAME www.cdn-a.test." in explained.stdout, explained.stdout
    finally:
        targets[1].start()
    wait_until(lambda: cname_of(ask(srv, "www.cdn.test.", "A")) == "www.cdn-b.test.", 10, "back in rotation")


def test_a_member_without_probe_address_is_resolved_by_name(
    cdn: Cdn,
) -> None:
    """``target: localhost.`` and no check_address: the TCP probe connects to what the
    system's resolver gives for localhost (/etc/hosts), where the target listens."""
    srv, _, _, tcp = cdn
    wait_until(lambda: cname_of(ask(srv, "loc.cdn.test.", "A")) == "localhost.", 10, "probed by name")
    tcp.stop()
    try:
        wait_until(lambda: ask(srv, "loc.cdn.test.", "A").rcode() == dns.rcode.SERVFAIL, BOUND + 2, "down")
    finally:
        tcp.start()
    wait_until(lambda: cname_of(ask(srv, "loc.cdn.test.", "A")) == "localhost.", 10, "back")


def test_a_zone_mixing_names_and_addresses_is_refused_with_positions(tmp_path: Path) -> None:
    z = tmp_path / "m.test.yaml"
    z.write_text(
        "zone: m.test.\nnameservers: {ns1.m.test.: [192.0.2.53]}\n"
        "pools:\n  a: {members: [{target: cdn.example.net.}]}\n  b: {members: [{address: 192.0.2.1}]}\n"
        "records:\n  www: [{types: [CNAME], rules: [{pools: [a, b]}]}]\n"
    )
    cmd = [sys.executable, "-m", "gslb", "check", str(z)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False, cwd=ROOT)
    assert out.returncode == 1
    assert f"{z}:7:46: records.www[0].rules[0].pools[1]: pool 'b' holds addresses" in out.stdout, out.stdout
