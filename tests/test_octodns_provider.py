"""The octoDNS provider (octodns_gslb/, its own package) with the real ``octodns`` from
the registry: ``octodns-sync --doit`` applies octoDNS's own test configs
(../shared/octodns) and one of ours to a real gslb through its zone API, a second sync
plans nothing, edits and deletes in the config reach the DNS answers, a hand edit of the
zone file is put back, a balanced name octoDNS cannot describe is kept, and
``octodns-dump`` reads back what gslb serves."""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.rcode
import pytest
import yaml

from tests.conftest import ROOT, GslbProcess
from tests.geodb import write_city
from tests.targets import Target, free_port
from tests.test_health import wait_until

OCTO = ROOT.parent / "shared" / "octodns"
BIN = Path(sys.executable).parent
TOKEN = "octo-t0ken"

OURS = """---
'':
  - type: NS
    values: [ns1.example.net., ns2.example.net.]
www:
  type: A
  ttl: 60
  values: [192.0.2.10, 192.0.2.11]
mail:
  type: MX
  value: {preference: 10, exchange: mx.example.net.}
note:
  type: TXT
  value: v=spf1 -all
api:
  type: A
  ttl: 30
  values: [192.0.2.50]
  dynamic:
    pools:
      eu: {values: [{value: 127.0.0.151}]}
      us: {fallback: eu, values: [{value: 127.0.0.153}]}
    rules:
      - {geos: [EU], pool: eu}
      - {pool: us}
  octodns:
    healthcheck: {protocol: HTTP, port: PORT, path: /health}
"""
UP, DOWN = "127.0.0.151", "127.0.0.153"  # a real HTTP target, and nothing (connection refused)


def on_loopback(text: str) -> str:
    """octoDNS's fixtures with their addresses moved to loopback: gslb health-checks the
    members of dynamic records, and probes must not leave this machine. a.b.c.d becomes
    127.b.c.d; an IPv6 address becomes ::ffff:127.x.y.z (IPv4-mapped: loopback too), one
    per address."""
    six: dict[str, str] = {}

    def v4(m: re.Match[str]) -> str:
        return f"127.{m.group(2)}.{m.group(3)}.{m.group(4)}"

    def v6(m: re.Match[str]) -> str:
        try:
            ipaddress.IPv6Address(m.group(0))
        except ValueError:
            return m.group(0)
        n = six.setdefault(m.group(0), str(len(six) + 1))
        return str(ipaddress.IPv6Address(f"::ffff:127.66.0.{n}"))  # as gslb writes it: ::ffff:7f42:1

    text = re.sub(r"\b(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\b(?!\.)", v4, text)
    return re.sub(r"(?<![\w:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?![\w:])", v6, text)


def ours(port: int) -> str:
    return yaml.safe_dump(yaml.safe_load(OURS.replace("PORT", str(port))))  # sorted, as octoDNS wants


def config(tmp: Path, api_port: int, zones: list[str]) -> Path:
    cfg = tmp / "octodns.yaml"
    cfg.write_text(yaml.safe_dump({
        "providers": {
            "config": {"class": "octodns.provider.yaml.YamlProvider", "directory": str(tmp / "config")},
            "gslb": {"class": "octodns_gslb.GslbProvider", "url": f"http://127.0.0.1:{api_port}",
                     "token": "env/GSLB_TOKEN", "strict_supports": False,
                     "nameservers": ["ns1.example.net.", "ns2.example.net."]},
        },
        "zones": {z: {"sources": ["config"], "targets": ["gslb"]} for z in zones},
    }))  # fmt: skip
    return cfg


def octodns(tool: str, *args: str, token: str = TOKEN) -> subprocess.CompletedProcess[str]:
    exe = BIN / tool
    return subprocess.run(
        [str(exe), *args], capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "GSLB_TOKEN": token},
    )  # fmt: skip


@pytest.fixture
def target() -> Iterator[Target]:
    t = Target(UP, free_port([UP, DOWN]))
    yield t
    t.close()


@pytest.fixture
def setup(tmp_path: Path, target: Target) -> Iterator[tuple[GslbProcess, Path, Path]]:
    if not (BIN / "octodns-sync").exists():
        pytest.fail("octodns is not installed (make .venv/.installed installs octodns_gslb and octodns)")
    (tmp_path / "config").mkdir()
    shutil.copy(OCTO / "unit.tests.yaml", tmp_path / "config")  # no health checks there
    (tmp_path / "config" / "dynamic.tests.yaml").write_text(
        on_loopback((OCTO / "dynamic.tests.yaml").read_text())
    )
    (tmp_path / "config" / "ours.test.yaml").write_text(ours(target.port))
    zdir = tmp_path / "zones"
    zdir.mkdir()
    (tmp_path / "token").write_text(TOKEN)
    city = write_city(tmp_path / "city.mmdb")
    srv = GslbProcess(
        zdir, tmp_path / "gslb.log",
        ["--api-token-file", str(tmp_path / "token"), "--api-zones", "*", "--geoip-db", str(city)],
    )  # fmt: skip
    cfg = config(tmp_path, srv.api_port, ["unit.tests.", "dynamic.tests.", "ours.test."])
    try:
        yield srv, zdir, cfg
    finally:
        srv.stop()
    assert "Traceback" not in srv.log(), srv.log()


def addrs(srv: GslbProcess, name: str, ecs: str | None = None) -> set[str] | int:
    opts: list[dns.edns.Option] = (
        [dns.edns.ECSOption(ecs.split("/")[0], int(ecs.split("/")[1]))] if ecs else []
    )
    r = srv.query(name, "A", options=opts)
    if r.rcode() != dns.rcode.NOERROR:
        return int(r.rcode())
    return {rd.to_text() for rr in r.answer for rd in rr}


def test_sync_applies_then_plans_nothing_and_follows_edits(
    setup: tuple[GslbProcess, Path, Path], target: Target
) -> None:
    srv, zdir, cfg = setup
    assert addrs(srv, "www.unit.tests.") == dns.rcode.REFUSED
    out = octodns("octodns-sync", "--config-file", str(cfg), "--doit")
    assert out.returncode == 0, out.stderr[-3000:]
    assert sorted(p.name for p in zdir.iterdir()) == [
        "dynamic.tests.yaml",
        "ours.test.yaml",
        "unit.tests.yaml",
    ]
    # static, dynamic (a European client: pool eu; others: us) and octoDNS's own fixtures
    assert addrs(srv, "www.ours.test.") == {"192.0.2.10", "192.0.2.11"}
    assert addrs(srv, "www.unit.tests.") == {"2.2.3.6"}
    # a European client gets pool eu (and, below, an American one pool us's fallback: its
    # member is down)
    assert addrs(srv, "api.ours.test.", "192.0.2.0/24") == {UP}
    mx = srv.query("mail.ours.test.", "MX").answer[0][0]
    assert (mx.preference, mx.exchange.to_text()) == (10, "mx.example.net.")
    served = yaml.safe_load((zdir / "ours.test.yaml").read_text())
    assert served["checks"]["octodns"] == {**served["checks"]["octodns"], "type": "http", "port": target.port,
                                           "path": "/health"}  # fmt: skip
    # the second sync: nothing to do, on every zone
    out = octodns("octodns-sync", "--config-file", str(cfg))
    assert out.returncode == 0 and "No changes were planned" in out.stdout + out.stderr, out.stderr[-3000:]

    # an edit, an addition and a delete in the config reach the answers
    doc = yaml.safe_load(ours(target.port))
    doc["www"]["values"] = ["192.0.2.12"]
    doc["new"] = {"type": "A", "value": "192.0.2.99"}
    del doc["mail"]
    doc["api"]["octodns"]["healthcheck"]["path"] = "/ready"  # a health check change alone
    (cfg.parent / "config" / "ours.test.yaml").write_text(yaml.safe_dump(doc))
    out = octodns("octodns-sync", "--config-file", str(cfg), "--doit", "--force")
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    assert "Creates=1, Updates=2, Deletes=1" in text, text[-3000:]
    assert addrs(srv, "www.ours.test.") == {"192.0.2.12"} and addrs(srv, "new.ours.test.") == {"192.0.2.99"}
    assert srv.query("mail.ours.test.", "MX").rcode() == dns.rcode.NXDOMAIN
    assert "/ready" in (zdir / "ours.test.yaml").read_text()
    out = octodns("octodns-sync", "--config-file", str(cfg))
    assert "No changes were planned" in out.stdout + out.stderr, out.stderr[-3000:]

    # a hand edit of the file is seen by the next plan, and put back by octoDNS
    path = zdir / "ours.test.yaml"
    path.write_text(path.read_text().replace("192.0.2.12", "192.0.2.13"))
    assert addrs(srv, "www.ours.test.") in ({"192.0.2.12"}, {"192.0.2.13"})  # the watcher: within 1 s
    out = octodns("octodns-sync", "--config-file", str(cfg), "--doit")
    assert out.returncode == 0 and "Updates=1" in out.stdout + out.stderr, out.stderr[-3000:]
    assert addrs(srv, "www.ours.test.") == {"192.0.2.12"}
    # health checked as octoDNS's healthcheck says (gslb's default interval and fall: ~15 s)
    wait_until(lambda: addrs(srv, "api.ours.test.", "100.64.0.0/24") == {UP}, 30, "New York: us is down")


def test_what_octodns_cannot_describe_is_kept_and_dump_reads_back(
    setup: tuple[GslbProcess, Path, Path], tmp_path: Path, target: Target
) -> None:
    srv, zdir, cfg = setup
    assert octodns("octodns-sync", "--config-file", str(cfg), "--doit").returncode == 0
    # a balanced name written by hand, select: closest (octoDNS has no such thing)
    path = zdir / "ours.test.yaml"
    doc = yaml.safe_load(path.read_text())
    doc["pools"]["near-eu"] = {"location": {"lat": 50.1, "lon": 8.7}, "members": [{"address": "192.0.2.70"}]}
    doc["pools"]["near-us"] = {
        "location": {"lat": 40.7, "lon": -74.0},
        "members": [{"address": "192.0.2.71"}],
    }
    doc["records"]["near"] = [{"types": ["A"], "answer": {"select": "closest"},
                               "rules": [{"pools": ["near-eu", "near-us"]}]}]  # fmt: skip
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    wait_until(
        lambda: addrs(srv, "near.ours.test.", "100.64.0.0/24") == {"192.0.2.71"}, 5, "the hand edit loads"
    )
    conf = yaml.safe_load(ours(target.port))
    conf["www"]["values"] = ["192.0.2.14"]
    (cfg.parent / "config" / "ours.test.yaml").write_text(yaml.safe_dump(conf))
    out = octodns("octodns-sync", "--config-file", str(cfg), "--doit")
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "has no octoDNS form (select closest); left as it is" in text, text[-3000:]
    assert addrs(srv, "www.ours.test.") == {"192.0.2.14"}
    assert addrs(srv, "near.ours.test.", "100.64.0.0/24") == {"192.0.2.71"}  # still there

    # octodns-dump: what gslb serves, as octoDNS config
    dump = tmp_path / "dump"
    out = octodns("octodns-dump", "--config-file", str(cfg), "--output-dir", str(dump), "unit.tests.", "gslb")
    assert out.returncode == 0, out.stderr[-3000:]
    got = yaml.safe_load((dump / "unit.tests.yaml").read_text())
    src = yaml.safe_load((OCTO / "unit.tests.yaml").read_text())

    def kinds(d: dict[str, object]) -> set[tuple[str, str]]:
        out = set()
        for name, recs in d.items():
            for r in recs if isinstance(recs, list) else [recs]:
                assert isinstance(r, dict)
                out.add((name, str(r["type"])))
        return out

    # every record but those gslb cannot serve (DNAME, URLFWD: left out at sync, with a
    # warning) and the one octoDNS itself leaves alone (octodns.ignored)
    assert kinds(got) == kinds(src) - {("dname", "DNAME"), ("urlfwd", "URLFWD"), ("ignored", "A")}
    assert got["www"] == {"type": "A", "ttl": 300, "value": "2.2.3.6"}


def test_a_zone_gslb_refuses_and_a_bad_token_change_nothing(tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "dynamic.tests.yaml").write_text(
        on_loopback((OCTO / "dynamic.tests.yaml").read_text())
    )
    (tmp_path / "config" / "ours.test.yaml").write_text(
        yaml.safe_dump(yaml.safe_load(OURS))
    )  # sorted, as octoDNS wants
    zdir = tmp_path / "zones"
    zdir.mkdir()
    (tmp_path / "token").write_text(TOKEN)
    srv = GslbProcess(
        zdir, tmp_path / "gslb.log", ["--api-token-file", str(tmp_path / "token"), "--api-zones", "*"]
    )
    try:
        # no --geoip-db here: the geo rules are refused with their positions, nothing is written
        cfg = config(tmp_path, srv.api_port, ["dynamic.tests."])
        out = octodns("octodns-sync", "--config-file", str(cfg), "--doit")
        assert out.returncode != 0
        assert "geo rules need a GeoIP database" in out.stderr and "dynamic.tests.yaml:" in out.stderr
        assert list(zdir.iterdir()) == []
        cfg = config(tmp_path, srv.api_port, ["ours.test."])
        out = octodns("octodns-sync", "--config-file", str(cfg), "--doit", token="wrong")
        assert out.returncode != 0 and "401 a valid bearer token is required" in out.stderr
        assert list(zdir.iterdir()) == []
    finally:
        srv.stop()
