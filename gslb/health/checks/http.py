"""``type: http`` / ``https``: a request on a fresh connection, status and body checked.

Every probe opens a new connection (``force_close``): a pooled keep-alive
connection could hide a host that no longer accepts new ones. ``host`` sets
the Host header and the TLS SNI name (and the name the certificate must
match); ``tls_verify: false`` skips verification; ``ca_file`` adds a CA. At
most ``MAX_BODY`` bytes of the body are read.
"""

from __future__ import annotations

import re
import ssl

import aiohttp

from gslb.health.checks import Target
from gslb.model import Check

MAX_BODY = 64 * 1024


class HttpClient:
    """One aiohttp session for all probes, created inside the running loop."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        self._ssl: dict[Check, ssl.SSLContext | bool] = {}

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(force_close=True, limit=0, use_dns_cache=False)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False)
        return self._session

    def ssl_for(self, c: Check) -> ssl.SSLContext | bool:
        ctx = self._ssl.get(c)
        if ctx is None:
            if not c.tls_verify:
                ctx = False
            else:
                ctx = ssl.create_default_context(cafile=c.ca_file)
            self._ssl[c] = ctx
        return ctx

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def _url(target: Target) -> str:
    c = target.check
    host = f"[{target.address}]" if ":" in target.address else target.address
    return f"{c.type}://{host}:{target.port}{c.path}"


async def _read_body(resp: aiohttp.ClientResponse) -> bytes:
    body = b""
    while len(body) < MAX_BODY:
        chunk = await resp.content.read(MAX_BODY - len(body))
        if not chunk:
            break
        body += chunk
    return body


async def check(client: HttpClient, target: Target) -> tuple[bool, str]:
    c = target.check
    headers = dict(c.headers)
    if c.host:
        headers.setdefault("Host", c.host)
    headers.setdefault("User-Agent", "gslb-health/1")
    kwargs: dict[str, object] = {}
    if c.type == "https":
        kwargs["ssl"] = client.ssl_for(c)
        if c.host:
            kwargs["server_hostname"] = c.host
    try:
        async with client.session().request(
            c.method,
            _url(target),
            headers=headers,
            allow_redirects=False,
            **kwargs,  # type: ignore[arg-type]
        ) as resp:
            status = resp.status
            if not any(status in r for r in c.expect_status):
                return False, f"HTTP {status}"
            if c.expect_body is None and c.expect_body_regex is None:
                return True, f"HTTP {status}"
            text = (await _read_body(resp)).decode("utf-8", "replace")
            if c.expect_body is not None and c.expect_body not in text:
                return False, f"HTTP {status}, body does not contain {c.expect_body!r}"
            if c.expect_body_regex is not None and not re.search(c.expect_body_regex, text):
                return False, f"HTTP {status}, body does not match /{c.expect_body_regex}/"
            return True, f"HTTP {status}"
    except aiohttp.ClientConnectorCertificateError as e:
        return False, f"TLS certificate error: {e.certificate_error}"
    except aiohttp.ClientSSLError as e:
        return False, f"TLS error: {e}"
    except aiohttp.ClientConnectorError as e:
        if isinstance(e.os_error, ConnectionRefusedError):
            return False, "connection refused"
        return False, f"connect failed: {e.os_error.strerror or e.os_error}"
    except aiohttp.ServerDisconnectedError:
        return False, "server closed the connection"
    except aiohttp.ClientError as e:
        return False, f"HTTP error: {type(e).__name__}: {e}"
    except OSError as e:
        return False, f"connection error: {e.strerror or e}"
