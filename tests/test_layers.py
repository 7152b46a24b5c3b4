"""The import-linter contract places every module (the contract itself is run by `make lint`)."""

from __future__ import annotations

import tomllib

from tests.conftest import ROOT


def test_every_module_has_a_layer() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = cfg["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")["layers"]
    placed = {m.strip() for row in layers for m in row.split("|")}
    modules = set()
    for path in (ROOT / "gslb").rglob("*.py"):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        modules.add(".".join(parts))
    # a module is placed when it or a package above it has a row (packages whose modules
    # each have their own row, and whose __init__ only documents them, need none)
    unplaced = {
        m
        for m in modules
        - {"gslb", "gslb.__main__", "gslb.health", "gslb.cluster", "gslb.dnssec", "gslb.zones.importers",
           "gslb.dns", "gslb.zones", "gslb.answer", "gslb.answer.geo", "gslb.secondaries", "gslb.server"}
        if not any(m == p or m.startswith(p + ".") for p in placed)
    }  # fmt: skip
    assert not unplaced, f"modules without a layer in pyproject.toml: {sorted(unplaced)}"
