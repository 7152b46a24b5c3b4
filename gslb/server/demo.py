"""``gslb demo``: three tiny HTTP backends on loopback, a zone balancing over
them with health checks, and the server on 127.0.0.1:5353 (``--listen``) with
its HTTP API on 127.0.0.1:8053 (``--api``, ``--no-api``). The backends take a
port that is free on all three addresses (``--backend-port`` to choose one).

Each backend is its own process with a pid file in the run directory, so you
can stop one and watch it leave the DNS answers:

    dig @127.0.0.1 -p 5353 www.demo.example A +short
    kill $(cat demo-run/backend-127.0.0.3.pid)
    sleep 3; dig @127.0.0.1 -p 5353 www.demo.example A +short

The backends answer after 30, 10 and 20 ms, so ``fast.demo.example`` (``select:
fastest``) answers with 127.0.0.3, the fastest, and with 127.0.0.4 once it is gone.

``python -m gslb.server.demo backend ADDR PORT [DELAY]`` runs one backend (used by the demo).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("gslb.server.demo")

BACKENDS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
DELAYS = {"127.0.0.2": 0.030, "127.0.0.3": 0.010, "127.0.0.4": 0.020}  # seconds before each answers

ZONE = """# Written by `gslb demo`: three loopback backends behind one balanced name.
zone: demo.example.
nameservers:
  ns1.demo.example.: [127.0.0.1]
checks:
  web:
    type: http
    port: {port}
    path: /healthz
    expect: {{status: 200, body: ok}}
    interval: 1s
    timeout: 500ms
    fall: 2
    rise: 2
pools:
  local:
    check: web
    members:
{members}
records:
  www:
    - types: [A]
      ttl: 5
      answer: {{select: all}}
      rules: [{{pools: [local]}}]
  fast:                       # the backend whose health checks come back soonest
    - types: [A]
      ttl: 5
      answer: {{select: fastest, hysteresis: {{ms: 3, percent: 10}}}}
      rules: [{{pools: [local]}}]
"""


async def _backend(addr: str, port: int, delay: float = 0.0) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            await reader.readuntil(b"\r\n\r\n")
            if delay:
                await asyncio.sleep(delay)
            body = f"ok from {addr}\n".encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, addr, port, reuse_address=True)
    async with server:
        await server.serve_forever()


def run_backend(addr: str, port: int, delay: float = 0.0) -> int:
    try:
        asyncio.run(_backend(addr, port, delay))
    except KeyboardInterrupt:
        pass
    except OSError as e:
        log.error("demo backend: cannot listen on %s:%d: %s", addr, port, (e.strerror or str(e)).lower())
        return 1
    return 0


def free_port(hosts: list[str]) -> int:
    """A TCP port that is free on every one of ``hosts`` right now."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind((hosts[0], 0))
            port = int(s.getsockname()[1])
        try:
            for h in hosts[1:]:
                with socket.socket() as s:
                    s.bind((h, port))
        except OSError:
            continue
        return port
    raise OSError(f"no TCP port is free on all of {', '.join(hosts)}")


def run_demo(
    rundir: Path,
    listen: tuple[str, int],
    api: tuple[str, int] | None = ("127.0.0.1", 8053),
    backend_port: int = 0,
) -> int:
    from gslb.server.options import ServeOptions
    from gslb.server.runtime import Server, serve_until_stopped

    port = backend_port or free_port(BACKENDS)
    zones = rundir / "zones"
    zones.mkdir(parents=True, exist_ok=True)
    members = "\n".join(f"      - {{address: {a}, name: backend-{a.rsplit('.', 1)[1]}}}" for a in BACKENDS)
    (zones / "demo.example.yaml").write_text(ZONE.format(port=port, members=members))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for addr in BACKENDS:
            argv = [sys.executable, "-m", "gslb.server.demo", "backend", addr, str(port), str(DELAYS[addr])]
            p = subprocess.Popen(argv)
            procs.append(p)
            (rundir / f"backend-{addr}.pid").write_text(f"{p.pid}\n")
        time.sleep(0.3)
        if any(p.poll() is not None for p in procs):
            log.error("demo: a backend could not start (see above); try another --backend-port")
            return 1
        host = f"[{listen[0]}]" if ":" in listen[0] else listen[0]
        log.info("demo backends on %s port %d; pid files in %s/", ", ".join(BACKENDS), port, rundir)
        if listen[1]:
            log.info("try: dig @%s -p %d www.demo.example A +short", host, listen[1])
            log.info("and: dig @%s -p %d fast.demo.example A +short (the fastest backend)", host, listen[1])
        log.info("then: kill $(cat %s/backend-127.0.0.3.pid), wait 3 s, and dig again", rundir)
        opts = ServeOptions(zones=str(zones), listen=(listen,), state_dir=str(rundir / "state"), api=api)
        server = Server(opts)
        problems = server.load_initial()
        if problems:
            return 1
        return serve_until_stopped(server)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(5)


if __name__ == "__main__":  # pragma: no cover
    if len(sys.argv) in (4, 5) and sys.argv[1] == "backend":
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
        sys.exit(
            run_backend(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) == 5 else 0.0)
        )
    sys.exit("usage: python -m gslb.server.demo backend ADDR PORT [DELAY]")
