"""``type: tcp``: the connection succeeds; optionally send bytes and expect a reply.

With ``send``, the bytes are written after connecting; with ``expect.body`` (or
``expect.body_regex``) up to 4 KiB of the reply are read until the text appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import TYPE_CHECKING

from gslb.health.checks import Target

if TYPE_CHECKING:
    from gslb.health.checks.http import HttpClient

MAX_READ = 4096


async def check(client: HttpClient, target: Target) -> tuple[bool, str, float | None]:
    c = target.check
    try:
        reader, writer = await asyncio.open_connection(
            target.address, target.port, local_addr=client.source_for(target.address)
        )
    except ConnectionRefusedError:
        return False, "connection refused", None
    except OSError as e:
        return False, f"connect failed: {e.strerror or e}", None
    try:
        if c.send:
            writer.write(c.send)
            await writer.drain()
        want = c.expect_body
        rx = re.compile(c.expect_body_regex) if c.expect_body_regex else None
        if want is None and rx is None:
            return True, "connected", None
        got = b""
        while len(got) < MAX_READ:
            chunk = await reader.read(MAX_READ - len(got))
            if not chunk:
                break
            got += chunk
            text = got.decode("utf-8", "replace")
            if (want is None or want in text) and (rx is None or rx.search(text)):
                return True, "reply matched", None
        return False, "reply mismatch", None
    except OSError as e:
        return False, f"connection error: {e.strerror or e}", None
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
