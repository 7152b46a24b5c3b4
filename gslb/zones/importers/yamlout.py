"""Writing YAML by hand, for people: values quoted only where YAML needs it."""

from __future__ import annotations

import json

import yaml


def scalar(s: str) -> str:
    """``s`` as a YAML flow scalar: plain when it reads back as the same string inside
    a flow collection, else double-quoted (JSON's escaping is valid YAML)."""
    if s and s.strip() == s and not s.startswith(("#", "&", "*", "!", "|", ">", "'", '"', "%", "@", "`")):
        try:
            if yaml.safe_load(f"[{s}]") == [s] and yaml.safe_load(f"{{k: {s}}}") == {"k": s}:
                return s
        except yaml.YAMLError:
            pass
    if "'" not in s and "\n" not in s and s.isprintable():
        return f"'{s}'"  # single quotes keep a TXT value's double quotes readable
    return json.dumps(s)
