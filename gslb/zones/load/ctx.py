"""Reading located YAML values with positioned problems: the readers every section uses."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from gslb.cluster.votes import parse_quorum
from gslb.dns import names
from gslb.zones.errors import Problem
from gslb.zones.model import (
    IPAddress,
)
from gslb.zones.yamlsrc import Located

T = TypeVar("T")

DEFAULT_TTL = 300
DEFAULT_BALANCED_TTL = 30

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


@dataclass
class _Ctx:
    """Problem collector bound to one file."""

    path: str
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    geo_db: bool | None = None  # None: not known (offline check); False: no GeoIP database loaded
    asn_db: bool | None = None
    ecs_default: bool = True

    def warn(self, loc: Located, key: str, message: str) -> None:
        self.warnings.append(Problem(self.path, loc.line, loc.col, key, message))

    def err(self, loc: Located, key: str, message: str, at_key: bool = False) -> None:
        line, col = (loc.key_line, loc.key_col) if at_key and loc.key_line else (loc.line, loc.col)
        self.problems.append(Problem(self.path, line, col, key, message))

    def mapping(
        self, loc: Located, key: str, required: tuple[str, ...], optional: tuple[str, ...]
    ) -> dict[str, Located] | None:
        """A mapping with known keys: report unknown and missing ones."""
        if not isinstance(loc.value, dict):
            self.err(loc, key, f"expected a mapping, got {_kind(loc)}")
            return None
        allowed = set(required) | set(optional)
        for k, v in loc.value.items():
            if k not in allowed:
                hint = _suggest(k, allowed)
                self.err(v, _join(key, k), "unknown key" + hint, at_key=True)
        for k in required:
            if k not in loc.value:
                self.err(loc, key, f"missing required key '{k}'")
        return {k: v for k, v in loc.value.items() if k in allowed}

    def seq(self, loc: Located, key: str) -> list[Located] | None:
        if not isinstance(loc.value, list):
            self.err(loc, key, f"expected a list, got {_kind(loc)}")
            return None
        return loc.value

    def str_(self, loc: Located, key: str) -> str | None:
        if isinstance(loc.value, str):
            return loc.value
        if isinstance(loc.value, bool):
            self.err(loc, key, f"expected a string, got {loc.value!r} (YAML reads it as a boolean: quote it)")
            return None
        if isinstance(loc.value, (int, float)) and not isinstance(loc.value, bool):
            return str(loc.value)
        self.err(loc, key, f"expected a string, got {_kind(loc)}")
        return None

    def int_(self, loc: Located, key: str, low: int, high: int) -> int | None:
        v = loc.value
        if isinstance(v, bool) or not isinstance(v, int):
            self.err(loc, key, f"expected an integer {low}..{high}, got {_kind(loc)}")
            return None
        if not low <= v <= high:
            self.err(loc, key, f"must be {low}..{high}, got {v}")
            return None
        return v

    def bool_(self, loc: Located, key: str) -> bool | None:
        if isinstance(loc.value, bool):
            return loc.value
        self.err(loc, key, f"expected true or false, got {_kind(loc)}")
        return None

    def float_(self, loc: Located, key: str, low: float, high: float) -> float | None:
        v = loc.value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.err(loc, key, f"expected a number {low}..{high}, got {_kind(loc)}")
            return None
        if not low <= float(v) <= high:
            self.err(loc, key, f"must be {low}..{high}, got {v}")
            return None
        return float(v)

    def duration(self, loc: Located, key: str, low: float, high: float) -> float | None:
        v = loc.value
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            secs = float(v)
        elif isinstance(v, str) and (m := _DURATION.match(v)):
            secs = float(m.group(1)) * _UNITS[m.group(2)]
        else:
            self.err(loc, key, f"expected a duration like 5s, 500ms or 1m, got {loc.value!r}")
            return None
        if not low <= secs <= high:
            self.err(loc, key, f"must be {_fmt_secs(low)}..{_fmt_secs(high)}, got {_fmt_secs(secs)}")
            return None
        return secs

    def quorum(self, loc: Located, key: str) -> str | None:
        try:
            return parse_quorum(loc.value)
        except ValueError as e:
            self.err(loc, key, str(e))
            return None

    def ip(self, loc: Located, key: str) -> IPAddress | None:
        text = self.str_(loc, key)
        if text is None:
            return None
        try:
            return ipaddress.ip_address(text)
        except ValueError:
            self.err(loc, key, f"not an IPv4 or IPv6 address: {text!r}")
            return None

    def name(self, loc: Located, key: str, origin: bytes | None) -> bytes | None:
        text = self.str_(loc, key)
        if text is None:
            return None
        try:
            return names.from_text(text, origin)
        except ValueError as e:
            self.err(loc, key, f"bad name {text!r}: {e}")
            return None


def _tname(rtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rtype))


def _name_wire(name: dns.name.Name) -> bytes:
    wire = name.canonicalize().to_wire()
    assert wire is not None  # absolute names always have a wire form
    return wire


def _kind(loc: Located) -> str:
    v = loc.value
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, list):
        return "a list"
    if v is None:
        return "nothing (null)"
    return f"{type(v).__name__} {v!r}"


def _join(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key


def _suggest(key: str, allowed: set[str]) -> str:
    import difflib

    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (expected one of: {', '.join(sorted(allowed))})"


def _fmt_secs(s: float) -> str:
    return f"{s * 1000:g}ms" if s < 1 else f"{s:g}s"


def _opt(m: dict[str, Located], key: str, fn: Callable[[Located], T | None], default: T) -> T | None:
    """Parse m[key] with fn if present; the default otherwise (None: invalid)."""
    return fn(m[key]) if key in m else default
