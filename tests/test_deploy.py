"""deploy/: the systemd unit, the container files and the Kubernetes manifests.

No Docker engine or cluster runs here, so each file is checked with the tools
that work offline (systemd-analyze, hadolint, kubernetes-validate) and against
the rest of the repository: every command line parses with gslb's own parser,
every port, path and address they name is the one gslb is told to use, and the
zone files they ship pass ``gslb check``. None of these zones is served here
(their checks point at addresses outside this machine).

A Kubernetes ConfigMap volume updates its files by flipping a ``..data``
symlink; the last test serves such a directory, read-only in spirit, and flips it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from gslb.cli import build_parser
from gslb.server.options import load_server_config
from gslb.zones.load import load_zone
from tests.conftest import ROOT, GslbProcess

DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    found = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    assert found, f"{name} is not installed (make deps / .ci/system-deps install it)"
    return found


def parse_serve(argv: list[str]) -> dict[str, Any]:
    """gslb's own parser on a command line from a deploy file; the serve options it sets."""
    ns = build_parser().parse_args(argv)
    assert ns.func.__name__ == "cmd_serve"
    return vars(ns)


# ------------------------------------------------------------------------- systemd


def unit() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / "gslb.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    # the unit names /opt/gslb/bin/gslb; systemd-analyze checks that it exists, so
    # verify a copy pointing at this checkout's gslb instead
    text = (DEPLOY / "systemd" / "gslb.service").read_text().replace("/opt/gslb/bin/gslb", str(BIN / "gslb"))
    copy = tmp_path / "gslb.service"
    copy.write_text(text)
    out = subprocess.run([tool("systemd-analyze"), "verify", str(copy)], capture_output=True, text=True,
                         timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr


def test_systemd_unit_is_unprivileged_and_hardened() -> None:
    u = unit()
    assert u["User"] == ["gslb"] and u["AmbientCapabilities"] == ["CAP_NET_BIND_SERVICE"]
    assert u["CapabilityBoundingSet"] == ["CAP_NET_BIND_SERVICE"]
    for key, want in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                      "PrivateTmp": "yes", "StateDirectory": "gslb"}.items():  # fmt: skip
        assert u[key] == [want], key
    assert u["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    # the command lines parse, and the config file they name is the one shipped
    start = shlex.split(u["ExecStart"][0])
    assert start[0] == "/opt/gslb/bin/gslb"
    opts = parse_serve(start[1:])
    assert opts["config"] == "/etc/gslb/gslb.yaml"
    # the check reads serve's config file too (its GeoIP databases), so it decides as serve does
    assert shlex.split(u["ExecStartPre"][0])[1:] == [
        "check",
        "--config",
        "/etc/gslb/gslb.yaml",
        "/etc/gslb/zones",
    ]


def test_systemd_server_config_loads() -> None:
    cfg = load_server_config(DEPLOY / "systemd" / "gslb.yaml")
    assert ("0.0.0.0", 53) in cfg["listen"] and cfg["state_dir"] == "/var/lib/gslb"
    assert cfg["zones"] == "/etc/gslb/zones" and cfg["api"] == ("127.0.0.1", 8053)
    # ProtectSystem=strict leaves only the state directory writable: that is where state goes
    assert cfg["state_dir"] == "/var/lib/" + unit()["StateDirectory"][0]


# ------------------------------------------------------------------------- Docker


def dockerfile() -> str:
    return (DEPLOY / "docker" / "Dockerfile").read_text()


def test_dockerfile_lints_clean() -> None:
    out = subprocess.run([tool("hadolint"), str(DEPLOY / "docker" / "Dockerfile")], capture_output=True,
                         text=True, timeout=60, check=False)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_dockerfile_matches_the_project() -> None:
    text = dockerfile()
    for src in re.findall(r"^COPY (.+) \S+$", text, re.M):
        for part in src.split():
            assert (ROOT / part).exists(), f"COPY {part}: not in the repository (build context is the root)"
    user = re.search(r"^USER (\d+)(?::\d+)?$", text, re.M)
    assert user is not None and user.group(1) != "0"
    entry = json.loads(re.search(r"^ENTRYPOINT (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    cmd = json.loads(re.search(r"^CMD (.+)$", text, re.M).group(1))  # type: ignore[union-attr]
    assert entry == ["gslb"]
    opts = parse_serve(cmd)
    port, api = opts["listen"][0][1], opts["api"]
    assert port > 1024  # no privilege needed inside the container
    exposed = set(re.search(r"^EXPOSE (.+)$", text, re.M).group(1).split())  # type: ignore[union-attr]
    assert {f"{port}/udp", f"{port}/tcp", f"{api[1]}/tcp"} <= exposed
    health = re.search(r"HEALTHCHECK .*\n\s+CMD (.+)$", text, re.M)
    assert health is not None and f"127.0.0.1:{api[1]}/healthz" in health.group(1)
    assert opts["state_dir"] == "/var/lib/gslb" and 'VOLUME ["/var/lib/gslb"]' in text


def test_compose_file_is_consistent() -> None:
    doc = yaml.safe_load((DEPLOY / "docker" / "compose.yaml").read_text())
    services = doc["services"]
    nodes = {n: s for n, s in services.items() if n.startswith("gslb")}
    assert len(nodes) >= 2
    addresses = {n: s["networks"]["lbnet"]["ipv4_address"] for n, s in services.items()}
    zones_dir = None
    for name, svc in nodes.items():
        build = svc["build"]
        assert (DEPLOY / "docker" / build["context"] / build["dockerfile"]).resolve() == (
            DEPLOY / "docker" / "Dockerfile"
        ).resolve()
        opts = parse_serve(svc["command"])
        port, api = opts["listen"][0][1], opts["api"][1]
        published = {p.rsplit(":", 1)[1] for p in svc["ports"]}
        assert {f"{port}/udp", f"{port}/tcp", f"{api}/tcp"} == published, name
        mounts = dict(v.split(":", 1) for v in svc["volumes"])
        zones_src = [src for src, dst in mounts.items() if dst.startswith(opts["zones"])]
        assert zones_src and mounts[zones_src[0]].endswith(":ro"), f"{name}: zones not mounted read-only"
        zones_dir = DEPLOY / "docker" / zones_src[0]
        state = [src for src, dst in mounts.items() if dst == opts["state_dir"]]
        assert state and state[0] in doc["volumes"], f"{name}: its own state volume"
    states = [next(v for v in s["volumes"] if v.endswith("/var/lib/gslb")) for s in nodes.values()]
    assert len(set(states)) == len(states)  # one state directory per node
    assert zones_dir is not None
    zone = load_zone(next(zones_dir.glob("*.yaml")))
    members = {str(m.address) for p in zone.pools for m in p.members}
    backends = {addresses[n] for n in services if n.startswith("backend")}
    assert members == backends
    ns_addresses = {str(rr_addr) for rr_addr in _glue(zone)}
    assert ns_addresses == {addresses[n] for n in nodes}
    check = zone.checks[0]
    for n in services:
        if n.startswith("backend"):
            assert str(check.port) in services[n]["command"]


def _glue(zone: Any) -> list[str]:
    import socket

    out = []
    for rr in zone.rrsets:
        if rr.rtype == 1 and rr.name != zone.origin:
            out += [socket.inet_ntop(socket.AF_INET, rd) for rd in rr.rdatas]
    return out


# --------------------------------------------------------------------- Kubernetes


def manifests() -> dict[str, dict[str, Any]]:
    out = {}
    for p in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        doc = yaml.safe_load(p.read_text())
        out[doc["kind"]] = doc
    return out


def test_kubernetes_manifests_validate() -> None:
    files = [str(p) for p in sorted((DEPLOY / "kubernetes").glob("*.yaml")) if p.name != "kustomization.yaml"]
    out = subprocess.run([tool("kubernetes-validate"), "--strict", *files], capture_output=True, text=True,
                         timeout=120, check=False)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("passed") + out.stderr.count("passed") == len(files)
    kust = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    assert sorted(kust["resources"]) == sorted(Path(f).name for f in files)


def test_kubernetes_manifests_fit_together(tmp_path: Path) -> None:
    m = manifests()
    dep, svc, pdb, cm = m["Deployment"], m["Service"], m["PodDisruptionBudget"], m["ConfigMap"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert svc["spec"]["selector"].items() <= labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert dep["spec"]["replicas"] >= 2 and pdb["spec"]["minAvailable"] < dep["spec"]["replicas"]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    opts = parse_serve(c["args"])
    ports = {p["name"]: p for p in c["ports"]}
    assert ports["dns-udp"]["containerPort"] == ports["dns-tcp"]["containerPort"] == opts["listen"][0][1]
    assert {ports["dns-udp"]["protocol"], ports["dns-tcp"]["protocol"]} == {"UDP", "TCP"}
    assert ports["api"]["containerPort"] == opts["api"][1]
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "api"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "api"}
    assert {(p["port"], p["protocol"]) for p in svc["spec"]["ports"]} == {(53, "UDP"), (53, "TCP")}
    assert {p["targetPort"] for p in svc["spec"]["ports"]} == {"dns-udp", "dns-tcp"}
    mounts = {v["mountPath"]: v for v in c["volumeMounts"]}
    assert mounts[opts["zones"]]["readOnly"] is True
    vols = {v["name"]: v for v in pod["volumes"]}
    assert vols[mounts[opts["zones"]]["name"]]["configMap"]["name"] == cm["metadata"]["name"]
    assert opts["state_dir"] in mounts
    assert pod["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["readOnlyRootFilesystem"]
    for key, text in cm["data"].items():  # the zones the ConfigMap ships pass gslb check
        (tmp_path / key).write_text(text)
        load_zone(tmp_path / key)


# -------------------------------------------------- a ConfigMap-style zone directory


def test_configmap_style_directory_reloads_and_stays_untouched(tmp_path: Path) -> None:
    """The kubelet's layout: zone.yaml -> ..data/zone.yaml, ..data -> ..<timestamp>/."""
    zdir = tmp_path / "zones"
    zdir.mkdir()
    zone = (
        "zone: cm.test.\nnameservers: {ns1.cm.test.: [192.0.2.53]}\nrecords:\n  www: [{type: A, value: %s}]\n"
    )

    def publish(version: str, address: str) -> None:
        d = zdir / f"..{version}"
        d.mkdir()
        (d / "cm.test.yaml").write_text(zone % address)
        tmp_link = zdir / "..data_tmp"
        tmp_link.symlink_to(d.name)
        os.replace(tmp_link, zdir / "..data")  # the atomic flip

    publish("2026_11_28_01", "192.0.2.1")
    (zdir / "cm.test.yaml").symlink_to("..data/cm.test.yaml")
    before = {str(p.relative_to(zdir)) for p in zdir.rglob("*")}
    srv = GslbProcess(zdir, tmp_path / "gslb.log", ["--watch-interval", "0.2"], state_dir=tmp_path / "state")
    try:
        assert srv.query("www.cm.test.").answer[0][0].to_text() == "192.0.2.1"
        time.sleep(0.3)
        publish("2026_11_28_02", "192.0.2.22")
        deadline = time.monotonic() + 10
        while srv.query("www.cm.test.").answer[0][0].to_text() != "192.0.2.22":
            assert time.monotonic() < deadline, srv.log()
            time.sleep(0.1)
        assert "..2026" not in srv.log().split("loaded zone")[0]  # the hidden directories are not zones
    finally:
        srv.stop()
    after = {str(p.relative_to(zdir)) for p in zdir.rglob("*")}
    # only what the "kubelet" added: gslb wrote nothing into its zone directory
    assert after - before == {"..2026_11_28_02", "..2026_11_28_02/cm.test.yaml"}


@pytest.mark.parametrize("path", sorted(DEPLOY.rglob("*.yaml")), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_deploy_yaml_parses(path: Path) -> None:
    assert list(yaml.safe_load_all(path.read_text()))
