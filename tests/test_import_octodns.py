"""``gslb import octodns`` on octoDNS's own test configs (../shared/octodns): every
imported zone passes ``gslb check``; the static records are served as the source
says them (compared field by field with the source's YAML, read independently);
the dynamic records' decisions (``gslb explain``: which rule, which pools in which
order, which members answer, with pools up and down) are what octoDNS's semantics
give for clients in each geo, worked out here from the source."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dns.message
import dns.query
import dns.rdatatype
import dns.rrset
import dns.zone
import pytest
import yaml

from gslb.answer.explain import explain_offline
from tests.conftest import ROOT, GslbProcess
from tests.geodb import write_city

OCTO = ROOT.parent / "shared" / "octodns"
pytestmark = pytest.mark.skipif(not OCTO.is_dir(), reason="../shared/octodns is not there")

# clients: network -> (continent, country, subdivision); addresses are only looked up
PLACES: dict[str, tuple[str, str, str | None, float, float]] = {
    "203.0.113.0/25": ("EU", "GB", "ENG", 51.5, -0.1),
    "192.0.2.0/24": ("EU", "DE", "BE", 52.5, 13.4),
    "198.51.100.0/24": ("NA", "US", "CA", 37.8, -122.4),
    "198.18.0.0/24": ("NA", "US", "WA", 47.6, -122.3),
    "100.64.0.0/10": ("NA", "US", "NY", 40.7, -74.0),
    "198.18.1.0/24": ("AS", "CN", "BJ", 39.9, 116.4),
    "198.18.2.0/24": ("AS", "SG", None, 1.3, 103.8),
    "198.18.3.0/24": ("AS", "JP", "13", 35.7, 139.7),
    "198.18.4.0/24": ("AF", "ZA", "GT", -26.2, 28.0),
    "198.18.5.0/24": ("SA", "BR", "SP", -23.5, -46.6),
    "2001:db8:1::/48": ("AS", "JP", "13", 35.7, 139.7),
}


def run_import(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gslb", "import", "octodns", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    tmp = tmp_path_factory.mktemp("octo")
    static_dir, dyn_dir = tmp / "static", tmp / "dynamic"
    static_dir.mkdir()
    dyn_dir.mkdir()
    out = run_import(
        str(OCTO / "unit.tests.yaml"),
        "--zone",
        "unit.tests",
        "--skip-unsupported",
        "-o",
        str(static_dir / "unit.tests.yaml"),
    )
    assert out.returncode == 0, out.stderr
    # a directory of zone files finds <zone>.yaml in it; the fixture has no apex NS
    cfg = tmp / "octo-config"
    cfg.mkdir()
    (cfg / "unit.tests.yaml").write_text((OCTO / "dynamic.tests.yaml").read_text())
    out = run_import(
        str(cfg),
        "--zone",
        "unit.tests.",
        "--ns",
        "ns1.unit.tests=192.0.2.53",
        "--ns",
        "ns2.example.net",
        "--skip-unsupported",
        "-o",
        str(dyn_dir / "unit.tests.yaml"),
    )
    assert out.returncode == 0, out.stderr
    yield static_dir, dyn_dir


def test_unsupported_records_stop_the_import_with_their_positions(tmp_path: Path) -> None:
    out = run_import(str(OCTO / "unit.tests.yaml"), "--zone", "unit.tests")
    assert out.returncode == 1
    f = OCTO / "unit.tests.yaml"
    assert f"{f}:76:3: dname DNAME: gslb does not serve DNAME" in out.stderr
    assert f"{f}:183:3: urlfwd URLFWD: gslb does not serve HTTP redirects" in out.stderr
    # dynamic CNAMEs are balanced CNAMEs now: the whole file imports without skipping
    out = run_import(str(OCTO / "dynamic.tests.yaml"), "--zone", "unit.tests", "--ns", "ns1.example.net")
    assert out.returncode == 0, out.stderr
    assert "simple-weighted:\n    - types: [CNAME]" in out.stdout, out.stdout
    # a dynamic record of another type is still refused where it stands
    d = tmp_path / "dyn-txt.yaml"
    d.write_text("txt:\n  type: TXT\n  value: x\n  dynamic:\n    pools: {a: {values: [{value: y}]}}\n"
                 "    rules: [{pool: a}]\n")  # fmt: skip
    out = run_import(str(d), "--zone", "unit.tests", "--ns", "ns1.example.net")
    assert out.returncode == 1, out.stderr
    assert f"{d}:5:5: txt TXT: dynamic TXT records cannot be expressed" in out.stderr, out.stderr
    out = run_import(str(OCTO / "dynamic.tests.yaml"), "--zone", "unit.tests", "--skip-unsupported")
    assert (
        out.returncode == 1
        and "no NS records at the apex: name the zone's name servers with --ns" in out.stderr
    )
    dyn = str(OCTO / "dynamic.tests.yaml")
    out = run_import(dyn, "--zone", "unit.tests", "--skip-unsupported", "--ns", "ns1.unit.tests")
    assert (
        out.returncode == 1
        and "name server ns1.unit.tests. is inside the zone but has no address" in out.stderr
    )


def test_notes_name_what_was_chosen_or_left_out(tmp_path: Path) -> None:
    out = run_import(str(OCTO / "unit.tests.yaml"), "--zone", "unit.tests", "--skip-unsupported")
    assert out.returncode == 0
    f = OCTO / "unit.tests.yaml"
    for want in (
        f"{f}:86:3: ignored A: octodns.ignored: left out",
        f"{f}:82:5: excluded CNAME: octodns.excluded ['test'] (provider lists)",
        f"{f}:4:7: @ A: legacy geo record imported as a balanced name",
        f"{f}:183:3: urlfwd URLFWD: gslb does not serve HTTP redirects (skipped)",
    ):
        assert want in out.stderr
    assert out.stdout.startswith("# Imported from") and "zone: unit.tests." in out.stdout


def test_imported_zones_pass_gslb_check(imported: tuple[Path, Path], tmp_path: Path) -> None:
    city = write_city(tmp_path / "city.mmdb")  # the geo records need one, as serve does
    for d in imported:
        bare = subprocess.run([sys.executable, "-m", "gslb", "check", str(d)], capture_output=True, text=True,
                              cwd=ROOT, timeout=60, check=False)  # fmt: skip
        if "geo rules need a GeoIP database" in bare.stdout:
            assert bare.returncode == 1  # what serve would say without --geoip-db
        else:
            assert bare.returncode == 0, bare.stdout + bare.stderr
        out = subprocess.run(
            [sys.executable, "-m", "gslb", "check", str(d), "--geoip-db", str(city)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=60,
            check=False,
        )
        assert out.returncode == 0, out.stdout + out.stderr


# ------------------------------------------------------------------ static: served as the source says


def source_records(path: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, recs in yaml.safe_load(path.read_text()).items():
        for r in recs if isinstance(recs, list) else [recs]:
            yield name, r


def expected_texts(rtype: str, r: dict[str, Any]) -> set[tuple[Any, ...]]:
    """The source's values as comparable tuples, from octoDNS's own fields."""
    vals = r.get("values", [r.get("value")] if "value" in r else [])
    out: set[tuple[Any, ...]] = set()
    for v in vals:
        if rtype in ("A", "AAAA", "CNAME", "PTR", "NS"):
            out.add((str(v).lower(),))
        elif rtype in ("TXT", "SPF"):
            out.add((str(v).replace("\\;", ";"),))
        elif rtype == "MX":
            out.add((v.get("preference", v.get("priority")), v.get("exchange", v.get("value"))))
        elif rtype == "SRV":
            out.add((v["priority"], v["weight"], v["port"], v["target"]))
        elif rtype == "CAA":
            out.add((v["flags"], v["tag"], v["value"]))
        elif rtype == "SSHFP":
            out.add((v["algorithm"], v["fingerprint_type"], v["fingerprint"]))
        elif rtype == "NAPTR":
            out.add((v["order"], v["preference"], v["flags"], v["service"], v["regexp"], v["replacement"]))
        elif rtype == "LOC":
            lat = (v["lat_degrees"] + v["lat_minutes"] / 60 + v["lat_seconds"] / 3600) * (
                -1 if v["lat_direction"] == "S" else 1
            )
            lon = (v["long_degrees"] + v["long_minutes"] / 60 + v["long_seconds"] / 3600) * (
                -1 if v["long_direction"] == "W" else 1
            )
            out.add((round(lat, 5), round(lon, 5), float(v["altitude"])))
    return out


def served_texts(rtype: str, rrset: dns.rrset.RRset) -> set[tuple[Any, ...]]:
    out: set[tuple[Any, ...]] = set()
    for rd in rrset:
        if rtype in ("A", "AAAA"):
            out.add((rd.address,))
        elif rtype in ("CNAME", "PTR", "NS"):
            out.add((rd.target.to_text().lower(),))
        elif rtype in ("TXT", "SPF"):
            out.add((b"".join(rd.strings).decode(),))
        elif rtype == "MX":
            out.add((rd.preference, rd.exchange.to_text()))
        elif rtype == "SRV":
            out.add((rd.priority, rd.weight, rd.port, rd.target.to_text()))
        elif rtype == "CAA":
            out.add((rd.flags, rd.tag.decode(), rd.value.decode()))
        elif rtype == "SSHFP":
            out.add((rd.algorithm, rd.fp_type, rd.fingerprint.hex()))
        elif rtype == "NAPTR":
            out.add(
                (
                    rd.order,
                    rd.preference,
                    rd.flags.decode(),
                    rd.service.decode(),
                    rd.regexp.decode(),
                    rd.replacement.to_text(),
                )
            )
        elif rtype == "LOC":
            out.add((round(rd.float_latitude, 5), round(rd.float_longitude, 5), rd.altitude / 100))
    return out


def test_static_records_are_served_as_the_source_says(imported: tuple[Path, Path], tmp_path: Path) -> None:
    db = write_city(tmp_path / "city.mmdb", PLACES)  # the apex's legacy geo record needs one
    srv = GslbProcess(
        imported[0], tmp_path / "gslb.log", ["--axfr-allow", "127.0.0.1/32", "--geoip-db", str(db)]
    )
    try:
        xfr = dns.query.xfr("127.0.0.1", "unit.tests.", port=srv.port, timeout=5, relativize=False)
        axfr = dns.zone.from_xfr(xfr, relativize=False)
        compared = 0
        cuts = {n for n, r in source_records(OCTO / "unit.tests.yaml") if r["type"] == "NS" and n}
        for name, r in source_records(OCTO / "unit.tests.yaml"):
            rtype = r["type"]
            if rtype in ("DNAME", "URLFWD") or "geo" in r or (r.get("octodns") or {}).get("ignored"):
                continue
            fq = f"{name}.unit.tests." if name else "unit.tests."
            below_cut = any(name == c or name.endswith("." + c) for c in cuts)
            if below_cut or (rtype == "NS" and not name):  # delegations and their data: from the AXFR
                got = axfr.find_rrset(fq, rtype)
            else:
                resp = srv.query(fq, rtype)
                got = resp.find_rrset(
                    resp.answer, dns.name.from_text(fq), dns.rdataclass.IN, dns.rdatatype.from_text(rtype)
                )
            assert served_texts(rtype, got) == expected_texts(rtype, r), (name, rtype)
            assert got.ttl == r.get("ttl", 3600), (name, rtype)  # the apex NS too: ns_ttl
            compared += 1
        assert compared == 21
    finally:
        srv.stop()


def test_legacy_geo_answers_by_location(imported: tuple[Path, Path], tmp_path: Path) -> None:
    db = write_city(tmp_path / "city.mmdb", PLACES)
    srv = GslbProcess(imported[0], tmp_path / "gslb.log", ["--geoip-db", str(db)])
    try:
        geo = next(r for n, r in source_records(OCTO / "unit.tests.yaml") if n == "" and r["type"] == "A")[
            "geo"
        ]
        for net, (cont, country, sub, _, _) in PLACES.items():
            if ":" in net:
                continue
            where = [cont, country, sub]
            codes = [c for c in geo if c.split("-") == where[: len(c.split("-"))]]
            best = max(codes, key=lambda c: c.count("-"), default=None)  # the most specific location
            want = set(geo[best]) if best else {"1.2.3.4", "1.2.3.5"}
            resp = srv.query("unit.tests.", "A", options=[dns.edns.ECSOption.from_text(net)])
            assert {rd.address for rr in resp.answer for rd in rr} == want, net
    finally:
        srv.stop()


# ------------------------------------------------------------------ dynamic: explain's decisions


def octo_decision(r: dict[str, Any], place: tuple[str, str, str | None]) -> list[set[str]]:
    """What octoDNS says for a client at ``place``: the matched rule's pool, its fallback
    chain, then the record's values; as member address sets."""
    dyn = r["dynamic"]
    for rule in dyn["rules"]:
        geos = rule.get("geos")
        if geos and not any(g.split("-") == list(place)[: len(g.split("-"))] for g in geos):
            continue
        chain, p = [], rule["pool"]
        while p is not None:
            chain.append({str(v["value"]) for v in dyn["pools"][p]["values"]})
            p = dyn["pools"][p].get("fallback")
        return [*chain, {str(v) for v in r.get("values", [r.get("value")])}]
    raise AssertionError("no catch-all")


def octo_weights(r: dict[str, Any], members: set[str]) -> dict[str, int]:
    """The source's weights of the pool holding exactly ``members`` (octoDNS's default: 1)."""
    for p in r["dynamic"]["pools"].values():
        if {str(v["value"]) for v in p["values"]} == members:
            return {str(v["value"]): v.get("weight", 1) for v in p["values"]}
    raise AssertionError(members)


def decide(zones: Path, db: Path, name: str, rtype: str, net: str, down: set[str]) -> dict[str, Any]:
    args = argparse.Namespace(
        zones=str(zones),
        geoip_db=str(db),
        asn_db=None,
        state_dir="",
        down=sorted(down),
        name=name,
        type=rtype,
        client="192.0.2.1",
        ecs=net,
    )
    return explain_offline(args)


def test_dynamic_decisions_follow_octodns(imported: tuple[Path, Path], tmp_path: Path) -> None:
    db = write_city(tmp_path / "city.mmdb", PLACES)
    zones = imported[1]
    checked = 0
    for name, r in source_records(OCTO / "dynamic.tests.yaml"):
        if "dynamic" not in r:
            continue
        cname = r["type"] == "CNAME"
        qtype = "A" if cname else r["type"]  # a dynamic CNAME answers any type with its target
        for net, (cont, country, sub, _, _) in PLACES.items():
            chain = octo_decision(r, (cont, country, sub))
            fq = f"{name}.unit.tests."
            got = decide(zones, db, fq, qtype, net, set())
            b = got["balanced"]

            who = "target" if cname else "address"
            pools = [{str(m[who]) for m in b["members"] if m["pool"] == p} for p in b["rule"]["pools"]]
            v6 = r["type"] == "AAAA"
            family = pools if cname else [{a for a in s if (":" in a) == v6} for s in pools]
            assert family == chain, (name, net)
            answer = {a.split()[-1] for a in got["answer"]}
            assert len(answer) == 1 and answer <= chain[0], (name, net, answer)  # one value, weighted
            if cname:
                assert got["answer"][0].split()[3] == "CNAME", got["answer"]
            weights = {str(m[who]): m["weight"] for m in b["members"] if m["pool"] == b["rule"]["pools"][0]}
            assert weights == octo_weights(r, chain[0]), (name, net)
            # the first pool down: its fallback answers; every pool down: the record's values
            for i in range(1, len(chain)):
                down = set().union(*chain[:i]) - chain[i]
                got = decide(zones, db, fq, qtype, net, down)
                answer = {a.split()[-1] for a in got["answer"]}
                assert answer and answer <= chain[i], (name, net, i, answer)
            checked += 1
    assert checked == 6 * len(PLACES)  # 4 dynamic A/AAAA records, 2 dynamic CNAMEs


def test_gslb_explain_cli_on_an_imported_zone(imported: tuple[Path, Path], tmp_path: Path) -> None:
    db = write_city(tmp_path / "city.mmdb", PLACES)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gslb",
            "explain",
            "real-ish-a.unit.tests",
            "--zones",
            str(imported[1]),
            "--geoip-db",
            str(db),
            "--ecs",
            "198.18.1.0/24",
            "--state-dir",
            "",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "AS-CN" in out.stdout and "real-ish-a-ap-southeast-1" in out.stdout


def test_apex_ns_and_glue_keep_their_ttls(tmp_path: Path) -> None:
    """An octoDNS zone with its apex NS at 86400 and the in-zone servers' A records at
    86400 and at 300: imported, checked and served with each TTL as in the source (the
    NS set's as ns_ttl, the server whose address has a TTL of its own from records:)."""
    src = tmp_path / "nt.tests.yaml"
    src.write_text(
        "'':\n  - type: NS\n    ttl: 86400\n    values: [ns1.nt.tests., ns2.nt.tests., ns.other.tests.]\n"
        "ns1:\n  type: A\n  ttl: 86400\n  value: 192.0.2.1\n"
        "ns2:\n  type: A\n  ttl: 300\n  value: 192.0.2.2\n"
        "www:\n  type: A\n  value: 192.0.2.80\n"
    )
    zdir = tmp_path / "zones"
    zdir.mkdir()
    out = run_import(str(src), "--zone", "nt.tests", "-o", str(zdir / "nt.tests.yaml"))
    assert out.returncode == 0, out.stderr
    text = (zdir / "nt.tests.yaml").read_text()
    assert "ns_ttl: 86400" in text and "ns2.nt.tests.: []" in text and "ns1.nt.tests.: [192.0.2.1]" in text, (
        text
    )
    srv = GslbProcess(zdir, tmp_path / "gslb.log")
    try:
        asked = [("nt.tests.", "NS"), ("ns1.nt.tests.", "A"), ("ns2.nt.tests.", "A"), ("www.nt.tests.", "A")]
        ttls = {(n, t): srv.query(n, t).answer[0].ttl for n, t in asked}
    finally:
        srv.stop()
    assert ttls == {("nt.tests.", "NS"): 86400, ("ns1.nt.tests.", "A"): 86400, ("ns2.nt.tests.", "A"): 300,
                    ("www.nt.tests.", "A"): 3600}  # fmt: skip


def test_a_glueless_in_zone_server_is_refused_at_the_ns_record(tmp_path: Path) -> None:
    src = tmp_path / "ng.tests.yaml"
    src.write_text("'':\n  - type: NS\n    values: [ns1.ng.tests.]\nwww:\n  type: A\n  value: 192.0.2.80\n")
    out = run_import(str(src), "--zone", "ng.tests")
    assert out.returncode == 1 and f"{src}:2:5: name server ns1.ng.tests. is inside the zone" in out.stderr, (
        out.stderr
    )


def test_an_alias_record_is_flattened_from_what_its_target_resolves_to(tmp_path: Path) -> None:
    """octoDNS ALIAS at the apex: a balanced A/AAAA name over an alias member, served with
    the addresses a second gslb on loopback (the target's authoritative server) gives."""
    src = tmp_path / "al.tests.yaml"
    src.write_text(
        "'':\n  - type: ALIAS\n    ttl: 60\n    value: shop-1.elb.example.net.\n"
        "  - type: NS\n    values: [ns1.example.net.]\n"
        "www:\n  type: ALIAS\n  value: www.al.tests.\n"
    )
    out = run_import(str(src), "--zone", "al.tests")
    assert out.returncode == 1, out.stdout
    assert f"{src}:9:10: www ALIAS: www.al.tests. is in this zone" in out.stderr, out.stderr
    src.write_text(src.read_text().split("www:")[0])
    zdir = tmp_path / "zones"
    zdir.mkdir()
    out = run_import(str(src), "--zone", "al.tests", "-o", str(zdir / "al.tests.yaml"))
    assert out.returncode == 0, out.stderr
    assert "{alias: shop-1.elb.example.net.}" in (zdir / "al.tests.yaml").read_text()
    tdir = tmp_path / "elb"
    tdir.mkdir()
    (tdir / "elb.example.net.yaml").write_text(
        "zone: elb.example.net.\nnameservers: {ns1.elb.example.net.: [192.0.2.53]}\n"
        "records:\n  shop-1: [{type: A, value: 192.0.2.81}, {type: A, value: 192.0.2.82},"
        ' {type: AAAA, value: "2001:db8::81"}]\n'
    )
    auth = GslbProcess(tdir, tmp_path / "auth.log")
    try:
        srv = GslbProcess(zdir, tmp_path / "gslb.log", ["--resolver", f"127.0.0.1:{auth.port}"])
        try:
            a = srv.query("al.tests.", "A")
            aaaa = srv.query("al.tests.", "AAAA")
        finally:
            srv.stop()
    finally:
        auth.stop()
    assert {rd.address for rr in a.answer for rd in rr} == {"192.0.2.81", "192.0.2.82"}
    assert {rd.address for rr in aaaa.answer for rd in rr} == {"2001:db8::81"}
    assert a.answer[0].ttl == 60
