"""`gslb check` and `gslb explain` decide about geo zones as `gslb serve` does: a zone
whose rules need a GeoIP or ASN database is refused without one (with its position),
accepted with it (from the command line or serve's --config file); one refused zone
does not stop `explain` answering for the others."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.geodb import write_asn, write_city

GEO_ZONE = ROOT / "tests" / "data" / "geo" / "geo.test.yaml"
PLAIN = (
    "zone: plain.test.\nnameservers: {ns1.plain.test.: [192.0.2.53]}\n"
    "records:\n  www: [{type: A, value: 192.0.2.80}]\n"
)


def gslb(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gslb", *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=60, check=False)  # fmt: skip


def zones(tmp_path: Path) -> Path:
    z = tmp_path / "zones"
    z.mkdir()
    shutil.copy(GEO_ZONE, z)
    (z / "plain.test.yaml").write_text(PLAIN)
    return z


def test_check_refuses_a_geo_zone_without_the_database_serve_would_need(tmp_path: Path) -> None:
    z = zones(tmp_path)
    r = gslb("check", str(z))
    out = r.stdout + r.stderr
    assert r.returncode == 1, out
    assert f"{z / 'geo.test.yaml'}:20:" in out and "geo rules need a GeoIP database" in out, out
    assert "ASN rules need an ASN database" in out, out
    city, asn = write_city(tmp_path / "city.mmdb"), write_asn(tmp_path / "asn.mmdb")
    r = gslb("check", str(z), "--geoip-db", str(city), "--asn-db", str(asn))
    assert r.returncode == 0 and "geo.test.yaml: ok" in r.stdout, r.stdout + r.stderr
    conf = tmp_path / "gslb.yaml"  # serve's own config file names them
    conf.write_text(f"zones: {z}\ngeoip_db: {city}\nasn_db: {asn}\n")
    r = gslb("check", "--config", str(conf), str(z))
    assert r.returncode == 0, r.stdout + r.stderr
    r = gslb("check", str(z), "--geoip-db", str(tmp_path / "missing.mmdb"))
    assert r.returncode == 1 and "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, (
        r.stderr
    )


def test_explain_answers_for_the_zones_serve_would_load(tmp_path: Path) -> None:
    z = zones(tmp_path)
    r = gslb("explain", "www.plain.test", "--zones", str(z), "--state-dir", "")
    assert r.returncode == 0, r.stderr
    assert "192.0.2.80" in r.stdout and "left out, as serve would refuse it" in r.stdout, r.stdout
    assert "geo.test.yaml:20" in r.stdout, r.stdout
    city, asn = write_city(tmp_path / "city.mmdb"), write_asn(tmp_path / "asn.mmdb")
    r = gslb("explain", "geo.geo.test", "--zones", str(z), "--state-dir", "", "--geoip-db", str(city),
             "--asn-db", str(asn))  # fmt: skip
    assert r.returncode == 0 and "left out" not in r.stdout and "rule" in r.stdout, r.stdout + r.stderr
