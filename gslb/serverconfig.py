"""The server configuration file (``gslb serve --config gslb.yaml``).

Every ``serve`` option has a key of the same name (dashes become
underscores). A flag given on the command line wins over the file, the file
over the built-in default. Unknown keys, wrong types and bad values are errors
with ``file:line:col``, all reported at once, as for zone files.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from gslb.errors import ConfigError, Problem
from gslb.yamlsrc import Located, load

# key -> (kind, default); kinds: str, path, listen, listens, num, int, choice:<a|b>
OPTIONS: dict[str, tuple[str, Any]] = {
    "zones": ("path", "zones"),
    "listen": ("listens", ["127.0.0.1:5353"]),
    "api": ("listen_or_off", "127.0.0.1:8053"),
    "api_token_file": ("path", None),
    "state_dir": ("path", "state"),
    "geoip_db": ("path", None),
    "asn_db": ("path", None),
    "watch_interval": ("num", 1.0),
    "tcp_idle": ("num", 10.0),
    "tcp_max": ("int", 512),
    "probe_concurrency": ("int", 512),
    "stall_after": ("num", 10.0),
    "query_log_sample": ("int", 0),
    "rrl_rate": ("num", 0.0),
    "rrl_slip": ("int", 2),
    "axfr_allow": ("networks", []),
    "udp_io": ("choice:auto|mmsg|asyncio", "auto"),
    "workers": ("int", 1),
    "log_level": ("choice:debug|info|warning|error", "info"),
    "log_format": ("choice:text|json", "text"),
}


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ValueError(f"expected ADDR:PORT, e.g. 127.0.0.1:5353 or [::1]:5353, got {text!r}")
    return host.strip("[]"), int(port)


def load_server_config(path: str | Path) -> dict[str, Any]:
    p = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError([Problem(p, 1, 1, "", f"cannot read: {e}")]) from None
    doc = load(text, p)
    problems: list[Problem] = []
    out: dict[str, Any] = {}

    def err(loc: Located, key: str, msg: str, at_key: bool = False) -> None:
        line, col = (loc.key_line, loc.key_col) if at_key and loc.key_line else (loc.line, loc.col)
        problems.append(Problem(p, line, col, key, msg))

    if not isinstance(doc.value, dict):
        raise ConfigError([Problem(p, doc.line, doc.col, "", "expected a mapping of option: value")])
    for key, loc in doc.value.items():
        if key not in OPTIONS:
            import difflib

            close = difflib.get_close_matches(key, OPTIONS, n=1)
            err(loc, key, "unknown key" + (f" (did you mean '{close[0]}'?)" if close else ""), at_key=True)
            continue
        kind, _ = OPTIONS[key]
        v = loc.value
        try:
            out[key] = _value(kind, v)
        except ValueError as e:
            err(loc, key, str(e))
    if problems:
        raise ConfigError(problems)
    return out


def _value(kind: str, v: Any) -> Any:
    if kind == "path":
        if v is None or (isinstance(v, str) and not isinstance(v, bool)):
            return v
        raise ValueError(f"expected a path (a string), got {v!r}")
    if kind == "listens":
        items = v if isinstance(v, list) else [v]
        if not items:
            raise ValueError("list at least one ADDR:PORT")
        return [parse_listen(_str(i.value if isinstance(i, Located) else i)) for i in items]
    if kind == "networks":
        items = v if isinstance(v, list) else [v]
        nets = []
        for i in items:
            text = i.value if isinstance(i, Located) else i
            if not isinstance(text, str):
                raise ValueError(f"expected CIDR networks like 192.0.2.0/24, got {text!r}")
            try:
                nets.append(str(ipaddress.ip_network(text, strict=True)))
            except ValueError as e:
                raise ValueError(f"bad network {text!r}: {e}") from None
        return nets
    if kind == "listen_or_off":
        if v is None or v is False:
            return None
        return parse_listen(_str(v))
    if kind == "num":
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
            raise ValueError(f"expected a number >= 0, got {v!r}")
        return float(v)
    if kind == "int":
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"expected a whole number >= 0, got {v!r}")
        return v
    if kind.startswith("choice:"):
        choices = kind[7:].split("|")
        if v not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {v!r}")
        return v
    raise AssertionError(kind)


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected ADDR:PORT as a string, got {v!r}")
    return v


def resolve(cli: dict[str, Any], file: dict[str, Any]) -> dict[str, Any]:
    """Command line over file over defaults, for every option."""
    out = {}
    for key, (kind, default) in OPTIONS.items():
        if key in cli:
            out[key] = cli[key]
        elif key in file:
            out[key] = file[key]
        elif kind == "listens":
            out[key] = [parse_listen(x) for x in default]
        elif kind == "listen_or_off":
            out[key] = parse_listen(default) if default else None
        else:
            out[key] = default
    return out
