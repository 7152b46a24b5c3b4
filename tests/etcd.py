"""A real etcd cluster for tests: N members on 127.0.0.1, free ports, temporary data.

``.ci/system-deps`` installs etcd (Debian's etcd-server). Members can be
stopped (SIGSTOP), resumed, killed and restarted, to test what gslb does while
its store is away.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class EtcdCluster:
    def __init__(self, root: Path, members: int = 3, tls: tuple[Path, Path, Path] | None = None) -> None:
        """``tls``: (CA, server certificate, server key): clients must present a
        certificate signed by the CA (``--client-cert-auth``)."""
        self.root = root
        self.tls = tls
        root.mkdir(parents=True, exist_ok=True)
        self.names = [f"e{i}" for i in range(members)]
        ports = _free_ports(2 * members)
        self.client_ports, self.peer_ports = ports[:members], ports[members:]
        self.initial = ",".join(
            f"{n}=http://127.0.0.1:{p}" for n, p in zip(self.names, self.peer_ports, strict=True)
        )
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * members
        for i in range(members):
            self.start(i, new=True)
        self.wait_healthy()

    @property
    def url(self) -> str:
        """The --cluster value naming every member."""
        return "etcd://" + ",".join(f"127.0.0.1:{p}" for p in self.client_ports)

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def start(self, i: int, new: bool = False) -> None:
        name = self.names[i]
        cmd = [
            ETCD,
            "--name", name,
            "--data-dir", str(self.root / name),
            "--listen-client-urls", f"{self.scheme}://127.0.0.1:{self.client_ports[i]}",
            "--advertise-client-urls", f"{self.scheme}://127.0.0.1:{self.client_ports[i]}",
            "--listen-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer_ports[i]}",
            "--initial-cluster", self.initial,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", f"gslb-test-{os.getpid()}-{id(self)}",
            "--heartbeat-interval", "50",
            "--election-timeout", "500",
            "--log-level", "warn",
            "--pre-vote",  # a member that comes back does not force an election (3.5+ default)
        ]  # fmt: skip
        if self.tls:
            ca, cert, key = self.tls
            cmd += ["--trusted-ca-file", str(ca), "--cert-file", str(cert), "--key-file", str(key),
                    "--client-cert-auth"]  # fmt: skip
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - the child keeps it
        self.procs[i] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    def health(self, i: int, timeout: float = 1.0) -> bool:
        if self.tls:  # etcd wants a client certificate: a TLS handshake that completes will do
            return self._tls_up(i, timeout)
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.client_ports[i]}/health", timeout=timeout
            ) as r:
                return bool(json.loads(r.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _tls_up(self, i: int, timeout: float) -> bool:
        import ssl

        try:
            with socket.create_connection(("127.0.0.1", self.client_ports[i]), timeout) as s:
                ctx = ssl.create_default_context(cafile=str(self.tls[0]) if self.tls else None)
                with ctx.wrap_socket(s, server_hostname="127.0.0.1"):
                    return True
        except OSError:
            return False

    def wait_healthy(self, timeout: float = 30.0, members: list[int] | None = None) -> None:
        deadline = time.monotonic() + timeout
        which = members if members is not None else range(len(self.names))
        while time.monotonic() < deadline:
            if all(self.health(i) for i in which):
                return
            time.sleep(0.1)
        logs = "\n".join((self.root / f"{n}.log").read_text(errors="replace")[-2000:] for n in self.names)
        raise RuntimeError(f"etcd did not become healthy:\n{logs}")

    def signal(self, i: int, sig: int) -> None:
        p = self.procs[i]
        if p is not None and p.poll() is None:
            p.send_signal(sig)

    def kill(self, i: int) -> None:
        p = self.procs[i]
        if p is not None:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
                p.kill()
            p.wait(10)
            self.procs[i] = None

    def close(self) -> None:
        for i in range(len(self.procs)):
            self.kill(i)
