"""Domain names as lowercased, uncompressed wire bytes.

Inside gslb a name is the bytes of its wire form with ASCII letters folded to
lower case (``b"\\x03www\\x07example\\x03com\\x00"``). That form is hashable,
compares case-insensitively by construction, and is what the hot path gets
from a query by slicing and ``bytes.lower()``, so zone data is indexed by it.
"""

from __future__ import annotations

ROOT = b"\x00"


def from_text(text: str, origin: bytes | None = None) -> bytes:
    """Parse a presentation-format name ("www", "www.example.com.", "@").

    Relative names are made absolute with ``origin``. Escapes (``\\.``, ``\\065``)
    are not supported: they are not needed for host names and are refused.
    Raises ValueError with a message fit for a config error.
    """
    if text == "@":
        if origin is None:
            raise ValueError("'@' needs an origin")
        return origin
    if text == ".":
        return ROOT
    if "\\" in text:
        raise ValueError("escapes in names are not supported")
    absolute = text.endswith(".")
    body = text[:-1] if absolute else text
    if not body:
        raise ValueError("empty name")
    out = bytearray()
    for label in body.split("."):
        raw = label.encode("ascii", "strict") if label.isascii() else None
        if raw is None:
            raise ValueError(f"label {label!r} is not ASCII (use its xn-- form)")
        if not raw:
            raise ValueError("empty label (two dots in a row)")
        if len(raw) > 63:
            raise ValueError(f"label {label[:20]!r}... is longer than 63 octets")
        out.append(len(raw))
        out += raw.lower()
    if absolute:
        out.append(0)
    else:
        if origin is None:
            raise ValueError("relative name without an origin")
        out += origin
    if len(out) > 255:
        raise ValueError("name is longer than 255 octets")
    return bytes(out)


def labels(name: bytes) -> list[bytes]:
    """The labels of a wire name, leftmost first, without the root."""
    out = []
    i = 0
    while name[i]:
        n = name[i]
        out.append(name[i + 1 : i + 1 + n])
        i += 1 + n
    return out


def to_text(name: bytes) -> str:
    parts = labels(name)
    return ".".join(p.decode("ascii", "backslashreplace") for p in parts) + "."


def parent(name: bytes) -> bytes:
    """The name one label up; the root's parent is the root."""
    return name[1 + name[0] :] if name[0] else name


def is_subdomain(name: bytes, apex: bytes) -> bool:
    """True when ``name`` equals ``apex`` or lies below it (label-wise)."""
    if not name.endswith(apex):
        return False
    if len(name) == len(apex):
        return True
    # the suffix must start on a label boundary
    i = 0
    cut = len(name) - len(apex)
    while i < cut:
        i += 1 + name[i]
    return i == cut


def ancestors(name: bytes, apex: bytes) -> list[bytes]:
    """Names strictly between ``apex`` and ``name`` plus ``name``, deepest first."""
    out = []
    while name != apex and name != ROOT:
        out.append(name)
        name = parent(name)
    return out


def is_wildcard(name: bytes) -> bool:
    return name[:2] == b"\x01*"
