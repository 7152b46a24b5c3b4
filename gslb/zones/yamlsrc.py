"""YAML loading that keeps positions and rejects duplicate keys.

PyYAML's composer gives a node tree with marks; this module turns it into
``Located`` values (value + line + column) without losing where anything came
from, so config validation can say ``file:line:col`` for every problem.
Only the YAML core we need is accepted: mappings with string keys, sequences
and scalars. Anchors and aliases are resolved by the composer; merge keys
(``<<``) are refused because they hide where a value came from.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from gslb.zones.errors import ConfigError, Problem

Scalar = str | int | float | bool | None


@dataclass(slots=True, eq=False)
class Located:
    """A YAML node: ``value`` is a dict[str, Located], a list[Located] or a scalar.

    Not frozen, though nothing changes one after parsing: a frozen dataclass sets
    each field through ``object.__setattr__``, and a large zone has 400,000 nodes."""

    value: dict[str, Located] | list[Located] | Scalar
    line: int
    col: int
    key_line: int = 0  # for mapping values: where their key stood
    key_col: int = 0


# libyaml's parser where PyYAML was built with it (the wheels are): zone files of
# 100,000 records compose about ten times faster than with the pure-Python one
_C_LOADER: type[yaml.SafeLoader] | None = getattr(yaml, "CSafeLoader", None)
_SAFE = yaml.SafeLoader
_IMPLICIT: dict[
    str, list[Any]
] = {  # first character -> implicit resolvers to try, wildcard ones included (as SafeLoader)
    c: _SAFE.yaml_implicit_resolvers.get(c, []) + _SAFE.yaml_implicit_resolvers.get(None, [])
    for c in [*_SAFE.yaml_implicit_resolvers, ""]
    if c is not None
}
_WILD: list[Any] = _SAFE.yaml_implicit_resolvers.get(None) or []


if _C_LOADER is not None:

    class _FastLoader(_C_LOADER):  # type: ignore[valid-type,misc]
        """libyaml's parser with SafeLoader's tag resolution, minus its per-node overhead.

        The composer asks the resolver about every node (724,000 calls for a
        100,000-record zone). SafeLoader has no path resolvers, so descending and
        ascending are no-ops, and the implicit resolvers for a scalar's first
        character are looked up in one merged table: the same tags, in less time.
        """

        def descend_resolver(self, current_node: object, current_index: object) -> None:
            pass

        def ascend_resolver(self) -> None:
            pass

        def resolve(self, kind: type, value: str, implicit: tuple[bool, bool]) -> str:
            if kind is yaml.ScalarNode:
                if implicit[0]:
                    for tag, regexp in _IMPLICIT.get(value[:1], _WILD):
                        if regexp.match(value):
                            return str(tag)
                return _STR
            return _SEQ if kind is yaml.SequenceNode else _MAP

    _LOADER: type[yaml.SafeLoader] = _FastLoader
else:  # pragma: no cover - PyYAML without libyaml
    _LOADER = yaml.SafeLoader
_CONSTRUCTOR = yaml.constructor.SafeConstructor()
_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"


def _scalar(node: yaml.ScalarNode) -> Scalar:
    # the composer resolved the implicit tag (int, float, bool, null, str); build the value
    # with SafeConstructor's function for it (construct_object would keep every node)
    if node.tag == _STR:
        return str(node.value)
    build = _CONSTRUCTOR.yaml_constructors.get(node.tag)
    if build is None:
        return str(node.value)
    try:
        value = build(_CONSTRUCTOR, node)
    except (yaml.YAMLError, ValueError, TypeError):
        return str(node.value)  # e.g. an explicit !!int on text that is not one: checked as text
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    # dates and other exotic types stay as the text the user wrote
    return str(node.value)


def _convert(node: yaml.Node, path: str, problems: list[Problem], kl: int = 0, kc: int = 0) -> Located:
    line, col = node.start_mark.line + 1, node.start_mark.column + 1
    if not str(node.tag).startswith("tag:yaml.org,2002:"):
        problems.append(Problem(path, line, col, "", f"YAML tags like {node.tag!r} are not supported"))
        return Located(None, line, col, kl, kc)
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Located] = {}
        pairs = node.value
        node.value = []
        pairs.reverse()
        while pairs:  # popped one by one: each converted subtree is freed as we go, not all at the end
            knode, vnode = pairs.pop()
            kline, kcol = knode.start_mark.line + 1, knode.start_mark.column + 1
            if knode.tag == "tag:yaml.org,2002:merge":
                problems.append(Problem(path, kline, kcol, "", "YAML merge keys (<<) are not supported"))
                continue
            if not isinstance(knode, yaml.ScalarNode):
                problems.append(Problem(path, kline, kcol, "", "mapping keys must be plain strings"))
                continue
            key = knode.value if knode.tag == _STR else str(_scalar(knode))
            if key in out:
                first = out[key]
                problems.append(
                    Problem(path, kline, kcol, key, f"duplicate key (first at line {first.key_line})")
                )
                continue
            out[key] = _convert(vnode, path, problems, kline, kcol)
        return Located(out, line, col, kl, kc)
    if isinstance(node, yaml.SequenceNode):
        children = node.value
        node.value = []
        children.reverse()
        items = []
        while children:
            items.append(_convert(children.pop(), path, problems))
        return Located(items, line, col, kl, kc)
    assert isinstance(node, yaml.ScalarNode)
    return Located(_scalar(node), line, col, kl, kc)


def load(text: str, path: str) -> Located:
    """Parse one YAML document; raise ConfigError with positions on any problem."""
    try:
        try:
            node = yaml.compose(text, Loader=_LOADER)
        except yaml.YAMLError:
            if _LOADER is yaml.SafeLoader:
                raise
            # broken file: PyYAML's own parser says what it expected more plainly than libyaml
            node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        msg = e.problem or e.context or "invalid YAML"
        if e.context and e.context_mark and e.problem:
            cm = e.context_mark
            msg = f"{msg} ({e.context} started at {cm.line + 1}:{cm.column + 1})"
        raise ConfigError([Problem(path, line, col, "", f"YAML syntax: {msg}")]) from None
    except yaml.YAMLError as e:
        raise ConfigError([Problem(path, 1, 1, "", f"YAML: {e}")]) from None
    if node is None:
        raise ConfigError([Problem(path, 1, 1, "", "empty file: expected a zone mapping")])
    problems: list[Problem] = []
    doc = _convert(node, path, problems)
    if problems:
        raise ConfigError(problems)
    return doc


def release(doc: Located) -> None:
    """Take a parsed document apart node by node.

    Dropping the root of a large document frees every node in one C call that
    holds the interpreter lock (about 100 ms for 100,000 records); a reload runs
    in a thread beside the DNS event loop, which would wait that long.
    """
    stack = [doc]
    while stack:
        v = stack.pop().value
        if isinstance(v, dict):
            stack.extend(v.values())
            v.clear()
        elif isinstance(v, list):
            stack.extend(v)
            v.clear()
