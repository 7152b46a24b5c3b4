"""``type: http`` / ``https``: one request on a fresh connection, status and body checked.

A deliberately small HTTP/1.1 client on asyncio streams rather than aiohttp:
a probe needs one request, ``Connection: close``, a status line, headers and
at most ``MAX_BODY`` bytes of body (plain, Content-Length or chunked). With
aiohttp a probe cost about 0.8 ms of CPU, which capped one core near 1,200
probes/s; this costs a fraction of that (see docs/performance.md).

Every probe opens a new connection: a pooled keep-alive connection could hide
a host that no longer accepts new ones. ``host`` sets the Host header and the
TLS SNI name, which is also the name the certificate must match;
``tls_verify: false`` skips verification; ``ca_file`` adds a CA.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import ssl

from gslb.health.checks import Target
from gslb.model import Check

MAX_BODY = 64 * 1024
MAX_HEADER = 32 * 1024


class HttpClient:
    """Per-check TLS contexts, built once (they are costly to make)."""

    def __init__(self) -> None:
        self._ssl: dict[Check, ssl.SSLContext] = {}

    def ssl_for(self, c: Check) -> ssl.SSLContext:
        ctx = self._ssl.get(c)
        if ctx is None:
            ctx = ssl.create_default_context(cafile=c.ca_file)
            if not c.tls_verify:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._ssl[c] = ctx
        return ctx

    async def close(self) -> None:
        self._ssl.clear()


def _request(c: Check, target: Target) -> bytes:
    default_port = 443 if c.type == "https" else 80
    if c.host:
        host = c.host
    else:
        host = f"[{target.address}]" if ":" in target.address else target.address
        if target.port != default_port:
            host = f"{host}:{target.port}"
    lines = [f"{c.method} {c.path} HTTP/1.1", f"Host: {host}"]
    names = {k.lower() for k, _ in c.headers}
    if "user-agent" not in names:
        lines.append("User-Agent: gslb-health/1")
    lines += [f"{k}: {v}" for k, v in c.headers if k.lower() not in ("host", "connection")]
    lines += ["Accept: */*", "Connection: close", "", ""]
    return "\r\n".join(lines).encode("latin-1")


async def _headers(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionResetError("server closed the connection")
    parts = status_line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {status_line[:40]!r}")
    status = int(parts[1])
    headers: dict[str, str] = {}
    size = len(status_line)
    while True:
        line = await reader.readline()
        size += len(line)
        if size > MAX_HEADER:
            raise ValueError("response headers larger than 32 KiB")
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = b""
        while len(body) < MAX_BODY:
            size_line = await reader.readline()
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                break
            body += await reader.readexactly(min(size, MAX_BODY - len(body)))
            if len(body) >= MAX_BODY:
                break
            await reader.readexactly(2)  # CRLF after the chunk
        return body
    length = headers.get("content-length")
    if length is not None and length.isdigit():
        return await reader.readexactly(min(int(length), MAX_BODY))
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
        server_hostname = c.host or target.address
    writer: asyncio.StreamWriter | None = None
    try:
        reader, writer = await asyncio.open_connection(
            target.address, target.port, ssl=tls, server_hostname=server_hostname
        )
        writer.write(_request(c, target))
        status, headers = await _headers(reader)
        if not any(status in r for r in c.expect_status):
            return False, f"HTTP {status}", None
        need_body = c.expect_body is not None or c.expect_body_regex is not None or c.load_json is not None
        if c.method == "HEAD" or not need_body:
            return True, f"HTTP {status}", _header_load(c, headers)
        text = (await _body(reader, headers)).decode("utf-8", "replace")
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
