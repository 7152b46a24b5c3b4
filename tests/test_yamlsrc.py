"""The zone loader's YAML: libyaml with a leaner resolver must type every scalar as
PyYAML's SafeLoader does (YAML 1.1: yes/no/on/off are booleans, 0x1F and 1_000 are
integers, 12:30 is sexagesimal, ~ is null, quoted text is text)."""

from __future__ import annotations

import yaml

from gslb.zones import yamlsrc

SCALARS = [
    "yes", "No", "on", "OFF", "true", "False", "y", "n", "null", "Null", "~", "", "0", "-1", "+7",
    "0x1F", "0o17", "017", "1_000", "1e3", "-.5", ".inf", "-.Inf", ".nan", "12:30:00", "190:20:30.15",
    "2026-01-01", "2026-01-01 10:00:00", "192.0.2.1", "2001:db8::1", "10s", "www", "x.user",
    "v=spf1 -all", "=", "0.5s", "1.", "1.5", "a b",
]  # fmt: skip


def tags(loader: type) -> list[tuple[str, str]]:
    doc = "\n".join(f"k{i}: {s}" if s else f"k{i}:" for i, s in enumerate(SCALARS))
    doc += "\n" + "\n".join(f"q{i}: '{s}'" for i, s in enumerate(SCALARS))
    doc += "\nseq: [1, a, yes, ~]\nmap: {x: 1}\n"
    node = yaml.compose(doc, Loader=loader)
    assert node is not None
    out = []
    stack = [node]
    while stack:
        n = stack.pop()
        out.append((str(n.value) if isinstance(n, yaml.ScalarNode) else type(n).__name__, n.tag))
        if isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                stack += [k, v]
        elif isinstance(n, yaml.SequenceNode):
            stack += n.value
    return out


def test_fast_loader_types_scalars_like_safe_loader() -> None:
    got, want = tags(yamlsrc._LOADER), tags(yaml.SafeLoader)
    assert got == want
    assert ("yes", "tag:yaml.org,2002:bool") in got and ("0x1F", "tag:yaml.org,2002:int") in got
    assert ("yes", "tag:yaml.org,2002:str") in got  # the quoted one


def test_located_values() -> None:
    doc = yamlsrc.load("a: yes\nb: '1'\nc: [1, x]\nd: 12:30\n", "t.yaml")
    assert isinstance(doc.value, dict)
    v = {k: loc.value for k, loc in doc.value.items()}
    assert v["a"] is True and v["b"] == "1" and v["d"] == 750
    c = doc.value["c"].value
    assert isinstance(c, list) and [x.value for x in c] == [1, "x"]
    assert (doc.value["c"].line, doc.value["c"].col, doc.value["c"].key_line) == (3, 4, 3)
