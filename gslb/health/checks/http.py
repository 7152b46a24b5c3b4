"""``type: http`` / ``https``: one request on a fresh connection, status and body checked.

A deliberately small HTTP/1.1 client on asyncio streams rather than aiohttp:
a probe needs one request, ``Connection: close``, a status line, headers and
at most ``MAX_BODY`` bytes of body. With aiohttp a probe cost about 0.8 ms of
CPU, which capped one core near 1,200 probes/s; this costs a fraction of that
(see docs/performance.md and docs/design-notes.md).

Response framing follows RFC 9112 section 6.3 as a client must read it:
interim 1xx responses (100 Continue, 103 Early Hints, ...) are read and
skipped up to the final one (RFC 9110 15.2); a response to HEAD, and 1xx,
204 and 304 responses, have no body whatever their headers say; otherwise
chunked transfer coding wins over Content-Length (chunk extensions ignored,
trailers read), then Content-Length, else the body runs to the close.
Obsolete line folding in headers is joined with a space (RFC 9112 5.2).

Every probe opens a new connection: a pooled keep-alive connection could hide
a host that no longer accepts new ones. ``host`` sets the Host header and the
TLS SNI name, which is also the name the certificate must match;
``tls_verify: false`` skips verification; ``ca_file`` adds a CA.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import re
import ssl

from gslb.health.checks import Target
from gslb.zones.model import Check

MAX_BODY = 64 * 1024
MAX_HEADER = 32 * 1024  # status lines and headers of all responses, interim ones included
MAX_INTERIM = 16  # interim (1xx) responses before the final one


class HttpClient:
    """Per-check TLS contexts, built once (they are costly to make), and the probes'
    source addresses (``--probe-source``: at most one per family)."""

    def __init__(self, sources: tuple[str, ...] = ()) -> None:
        self._ssl: dict[tuple[str | None, bool], ssl.SSLContext] = {}
        self._sources = {ipaddress.ip_address(a).version: a for a in sources}

    def source_for(self, address: str) -> tuple[str, int] | None:
        """The local address to probe ``address`` from (None: the kernel's choice; a host
        name: the kernel's too, its family is known only once it is resolved)."""
        if not self._sources:
            return None
        try:
            fam = ipaddress.ip_address(address).version
        except ValueError:
            return None
        src = self._sources.get(fam)
        return (src, 0) if src is not None else None

    def ssl_for(self, c: Check) -> ssl.SSLContext:
        key = (c.ca_file, c.tls_verify)
        ctx = self._ssl.get(key)
        if ctx is None:
            ctx = ssl.create_default_context(cafile=c.ca_file)
            if not c.tls_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._ssl[key] = ctx
        return ctx

    async def close(self) -> None:
        self._ssl.clear()


def _request(c: Check, target: Target) -> bytes:
    default_port = 443 if c.type == "https" else 80
    if c.host:
        host = c.host
    else:
        name = target.host or target.address
        host = f"[{name}]" if ":" in name else name
        if target.port != default_port:
            host = f"{host}:{target.port}"
    lines = [f"{c.method} {c.path} HTTP/1.1", f"Host: {host}"]
    names = {k.lower() for k, _ in c.headers}
    if "user-agent" not in names:
        lines.append("User-Agent: gslb-health/1")
    lines += [f"{k}: {v}" for k, v in c.headers if k.lower() not in ("host", "connection")]
    lines += ["Accept: */*", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


async def _line(reader: asyncio.StreamReader, budget: list[int]) -> bytes:
    line = await reader.readline()
    budget[0] -= len(line)
    if budget[0] < 0:
        raise ValueError("response headers larger than 32 KiB")
    return line


async def _response_head(reader: asyncio.StreamReader, budget: list[int]) -> tuple[int, dict[str, str]]:
    """One status line and its header fields (names lowercased)."""
    status_line = await _line(reader, budget)
    if not status_line:
        raise ConnectionResetError("server closed the connection")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise ValueError(f"not an HTTP response: {status_line[:40]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    last = ""
    while True:
        line = await _line(reader, budget)
        if line in (b"\r\n", b"\n", b""):
            break
        text = line.decode("latin-1")
        if text[0] in " \t":  # obs-fold: continues the previous field's value
            if not last:
                raise ValueError("folded header line without a field before it")
            headers[last] = f"{headers[last]} {text.strip()}".strip()
            continue
        name, sep, value = text.partition(":")
        if not sep:
            raise ValueError(f"malformed header line: {line[:40]!r}")
        last = name.strip().lower()
        # repeated fields are one comma-separated list (RFC 9110 5.3)
        headers[last] = f"{headers[last]}, {value.strip()}" if last in headers else value.strip()
    return status, headers


async def _headers(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """The final response's status and headers, after any interim (1xx) responses."""
    budget = [MAX_HEADER]
    for _ in range(MAX_INTERIM + 1):
        status, headers = await _response_head(reader, budget)
        if not 100 <= status <= 199 or status == 101:  # 101 ends HTTP/1.1 on this connection
            return status, headers
    raise ValueError(f"more than {MAX_INTERIM} interim (1xx) responses")


def has_body(method: str, status: int) -> bool:
    """RFC 9112 6.3: responses to HEAD, and 1xx, 204 and 304 responses, end at their headers."""
    return method != "HEAD" and status >= 200 and status not in (204, 304)


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        budget = [MAX_HEADER]
        body = b""
        while len(body) < MAX_BODY:
            size_line = await _line(reader, budget)
            if not size_line:
                raise asyncio.IncompleteReadError(b"", None)
            digits = size_line.split(b";", 1)[0].strip()  # chunk extensions are ignored
            try:
                size = int(digits, 16)
            except ValueError:
                raise ValueError(f"bad chunk size line: {size_line[:40]!r}") from None
            if size == 0:
                while await _line(reader, budget) not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields
                break
            body += await reader.readexactly(min(size, MAX_BODY - len(body)))
            if len(body) >= MAX_BODY:
                break
            await reader.readline()  # CRLF after the chunk
        return body
    length = headers.get("content-length")
    if length is not None:
        values = {v.strip() for v in length.split(",")}
        if len(values) != 1 or not next(iter(values)).isdigit():
            raise ValueError(f"bad Content-Length: {length[:40]!r}")
        return await reader.readexactly(min(int(values.pop()), MAX_BODY))
    body = b""
    while len(body) < MAX_BODY:
        chunk = await reader.read(MAX_BODY - len(body))
        if not chunk:
            break
        body += chunk
    return body


def _number(v: object) -> float | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        f = float(v)
    elif isinstance(v, str):
        try:
            f = float(v.strip())
        except ValueError:
            return None
    else:
        return None
    return f if math.isfinite(f) else None


def _header_load(c: Check, headers: dict[str, str]) -> float | None:
    if not c.load_header:
        return None
    return _number(headers.get(c.load_header.lower()))


def _json_load(c: Check, text: str) -> float | None:
    if not c.load_json:
        return None
    try:
        v: object = json.loads(text)
    except ValueError:
        return None
    for part in c.load_json.split("."):
        if not isinstance(v, dict) or part not in v:
            return None
        v = v[part]
    return _number(v)


async def check(client: HttpClient, target: Target) -> tuple[bool, str, float | None]:
    c = target.check
    tls: ssl.SSLContext | None = None
    server_hostname: str | None = None
    if c.type == "https":
        tls = client.ssl_for(c)
        server_hostname = target.server_name
    writer: asyncio.StreamWriter | None = None
    try:
        reader, writer = await asyncio.open_connection(
            target.address,
            target.port,
            ssl=tls,
            server_hostname=server_hostname,
            local_addr=client.source_for(target.address),
        )
        writer.write(_request(c, target))
        status, headers = await _headers(reader)
        if not any(status in r for r in c.expect_status):
            return False, f"HTTP {status}", None
        need_body = c.expect_body is not None or c.expect_body_regex is not None or c.load_json is not None
        if not need_body:
            return True, f"HTTP {status}", _header_load(c, headers)
        body = await _body(reader, headers) if has_body(c.method, status) else b""
        text = body.decode("utf-8", "replace")
        if c.expect_body is not None and c.expect_body not in text:
            return False, f"HTTP {status}, body does not contain {c.expect_body!r}", None
        if c.expect_body_regex is not None and not re.search(c.expect_body_regex, text):
            return False, f"HTTP {status}, body does not match /{c.expect_body_regex}/", None
        return True, f"HTTP {status}", _header_load(c, headers) if c.load_header else _json_load(c, text)
    except ConnectionRefusedError:
        return False, "connection refused", None
    except ssl.SSLCertVerificationError as e:
        return False, f"TLS certificate error: {e.verify_message or e.reason}", None
    except ssl.SSLError as e:
        return False, f"TLS error: {e.reason or e}", None
    except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
        return False, "server closed the connection", None
    except (ValueError, asyncio.LimitOverrunError) as e:
        return False, f"bad HTTP response: {e}", None
    except OSError as e:
        return False, f"{'connection error' if writer else 'connect failed'}: {e.strerror or e}", None
    finally:
        if writer is not None:
            writer.close()
