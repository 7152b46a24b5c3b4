"""N minimal HTTP health targets, one listening socket each, on 127.1.x.y:PORT.

    python bench/many_targets.py N PORT

Loopback only: 127.1.(i // 250).(i % 250 + 1). Prints "ready" once all listen.
"""

from __future__ import annotations

import asyncio
import resource
import socket
import sys

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def address(i: int) -> str:
    return f"127.1.{i // 250}.{i % 250 + 1}"


class Http(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.t = transport

    def data_received(self, data: bytes) -> None:
        if b"\r\n\r\n" in data:
            self.t.write(RESPONSE)  # type: ignore[attr-defined]
            self.t.close()


async def main(n: int, port: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, n * 2 + 1000)), hard))
    loop = asyncio.get_running_loop()
    for i in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((address(i), port))
        s.listen(64)
        await loop.create_server(Http, sock=s)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
