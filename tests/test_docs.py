"""Docs and examples stay true: every example zone loads, matches the schema,
and every key the schema knows is documented."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from gslb.answer.policies import REGISTRY
from gslb.zones.load import load_zone
from gslb.zones.schema import SCHEMA

ROOT = Path(__file__).resolve().parent.parent
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
ZONES = (
    sorted((ROOT / "zones").glob("*.yaml"))
    + sorted((ROOT / "tests" / "data" / "zones").glob("*.yaml"))
    + [ROOT / "tests" / "conformance" / "conf.test.yaml"]
)


def yaml_blocks() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        for i, m in enumerate(re.finditer(r"```yaml\n(.*?)```", doc.read_text(), re.S)):
            if re.search(r"^zone:", m.group(1), re.M):
                out.append((f"{doc.name}#{i}", m.group(1)))
    return out


BLOCKS = yaml_blocks()


def test_docs_have_examples() -> None:
    assert any(name.startswith("zone-format.md") for name, _ in BLOCKS)


@pytest.mark.parametrize(("name", "text"), BLOCKS, ids=[n for n, _ in BLOCKS])
def test_doc_example_loads(tmp_path: Path, name: str, text: str) -> None:
    f = tmp_path / "example.yaml"
    f.write_text(text)
    load_zone(f)
    jsonschema.validate(yaml.safe_load(text), SCHEMA)


@pytest.mark.parametrize("path", ZONES, ids=[p.name for p in ZONES])
def test_zone_files_load_and_match_schema(path: Path) -> None:
    load_zone(path)
    jsonschema.validate(yaml.safe_load(path.read_text()), SCHEMA)


def test_schema_rejects_unknown_keys() -> None:
    doc = yaml.safe_load((ROOT / "zones" / "example.com.yaml").read_text())
    doc["recrods"] = {}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, SCHEMA)


def schema_keys(node: Any, out: set[str]) -> set[str]:
    if isinstance(node, dict):
        for k, v in node.get("properties", {}).items():
            out.add(k)
            schema_keys(v, out)
        for key in ("additionalProperties", "items"):
            if isinstance(node.get(key), dict):
                schema_keys(node[key], out)
        for alt in node.get("oneOf", []):
            schema_keys(alt, out)
    return out


def test_every_schema_key_is_documented() -> None:
    text = (ROOT / "docs" / "zone-format.md").read_text()
    documented = set(re.findall(r"^\| `([a-z0-9_.]+)` \|", text, re.M))
    documented |= {part for d in documented for part in d.split(".")}
    missing = schema_keys(SCHEMA, set()) - documented
    assert not missing, f"keys without a row in docs/zone-format.md: {sorted(missing)}"


def test_schema_select_matches_registry() -> None:
    sel = SCHEMA["properties"]["records"]["additionalProperties"]["items"]["oneOf"][0]
    assert set(sel["properties"]["answer"]["properties"]["select"]["enum"]) == set(REGISTRY)


def test_schema_command_prints_it() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "gslb", "schema"], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert json.loads(out.stdout) == json.loads(json.dumps(SCHEMA))
