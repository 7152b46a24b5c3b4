"""The C loop (gslb/server/transport/_fastpath.c) built with AddressSanitizer and
UndefinedBehaviorSanitizer, fed resolver traffic and mutated packets, against the pure
Python path on a twin state.

    python -m tests.sanitized [--packets 20000] [--seed 1]    # builds, then runs itself

The build goes to a temporary directory (``build``); the run (``run``, in a child
process with the sanitizer runtime preloaded and Python's allocator off so every
allocation is the sanitizer's) loads that build in place of the installed module:
every datagram through the sanitized ``Batcher`` over a real UDP socket on loopback,
and through ``gslb.server.transport.udp.handle`` on the twin; a different reply, a
different counter or a sanitizer report fails the run. The packets: resolver queries
(cookies, DO=1, 0x20, ECS, signed answers) and each of them mutated
(tests/fuzzing.mutate_packet, plus lies in the OPT and COOKIE lengths), first with rate
limiting off, then limiting every answer after a key's first (slips, BADCOOKIE).
tests/test_sanitizers.py runs a short run; docs/reliability.md quotes a long one.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import logging
import os
import random
import select
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "gslb" / "server" / "transport" / "_fastpath.c"
FLAGS = [
    "-shared", "-fPIC", "-O1", "-g", "-fno-omit-frame-pointer",
    "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
]  # fmt: skip
# code each sanitizer must stop (tests/test_sanitizers.py shows they would stop ours)
CANARIES = {
    "address": "#include <stdlib.h>\n"
    "int canary(int i) { char *p = malloc(8); p[i] = 1; int r = p[0]; free(p); return r; }\n",
    "undefined": "int canary(int i) { int big = 0x7fffffff; return big + i; }\n",
}

log = logging.getLogger("gslb.sanitized")


def runtime() -> str | None:
    """The sanitizer runtime to preload into Python (not built with it), or None."""
    cc = shutil.which("gcc")
    if cc is None:
        return None
    path = subprocess.run([cc, "-print-file-name=libasan.so"], capture_output=True, text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


def build(out: Path) -> Path:
    """The sanitized module, built into ``out``, and beside it a canary library per
    sanitizer (canary-address.so: a heap overflow; canary-undefined.so: a signed overflow)."""
    include = sysconfig.get_paths()["include"]
    so = out / "_fastpath.so"
    subprocess.run(["gcc", *FLAGS, f"-I{include}", str(SOURCE), "-o", str(so)], check=True)
    for name, code in CANARIES.items():
        (out / f"canary-{name}.c").write_text(code)
        flags = [f for f in FLAGS if not f.startswith("-fsanitize=")] + [f"-fsanitize={name}"]
        cmd = ["gcc", *flags, str(out / f"canary-{name}.c"), "-o", str(out / f"canary-{name}.so")]
        subprocess.run(cmd, check=True)
    return so


def child_env() -> dict[str, str]:
    rt = runtime()
    assert rt is not None, "no libasan (gcc's sanitizer runtime)"
    env = dict(os.environ)
    env.update(
        LD_PRELOAD=rt,
        ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=0:exitcode=86",
        UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:exitcode=87",
        PYTHONMALLOC="malloc",
        GSLB_PURE_PYTHON="1",  # the twin: the Python path; the C one is loaded by hand
    )
    return env


def _load(so: Path) -> Any:
    name = "gslb.server.transport._fastpath"
    loader = importlib.machinery.ExtensionFileLoader(name, str(so))
    spec = importlib.util.spec_from_file_location(name, so, loader=loader)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


def _lies(rnd: random.Random, w: bytes) -> bytes:
    """A resolver query with its OPT or COOKIE lengths lying, or cut inside the option."""
    b = bytearray(w)
    i = w.find(b"\x00\x0a", 12)  # the COOKIE option's code, near enough
    op = rnd.randrange(4)
    if op == 0 and i > 0 and i + 4 <= len(b):
        b[i + 2 : i + 4] = rnd.choice([0, 1, 7, 8, 9, 23, 24, 25, 40, 41, 0xFFFF]).to_bytes(2, "big")
    elif op == 1 and len(b) > 14:  # the OPT's RDLENGTH is the last fixed field before the options
        j = rnd.randrange(12, len(b) - 1)
        b[j : j + 2] = rnd.randrange(0x10000).to_bytes(2, "big")
    elif op == 2 and i > 0:
        b = b[: rnd.randrange(i, len(b) + 1)]
    else:
        b += bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 30)))
    return bytes(b)


def run(so: Path, packets: int, seed: int) -> int:
    """The run itself (in the child): the number of differences (0 is the only pass)."""
    from gslb.answer.geo.maxmind import MaxMindGeo
    from gslb.dns.cookies import Cookies
    from gslb.dns.rrl import RateLimiter
    from gslb.dnssec import keys
    from gslb.server.metrics import log_query
    from gslb.server.transport import udp
    from tests import test_fastpath as fp
    from tests.fuzzing import mutate_packet
    from tests.geodb import write_asn, write_city

    mod = _load(so)
    tmp = Path(tempfile.mkdtemp(prefix="gslb-sanitized-"))
    keys.write_new(tmp / "fp.key", "ed25519")
    city = fp.SHARED if fp.SHARED.is_file() else write_city(tmp / "c.mmdb")
    geo = MaxMindGeo(city, write_asn(tmp / "a.mmdb"))
    a, b = fp._holder(fp._state(tmp, geo), seed), fp._holder(fp._state(tmp, geo), seed)
    a.cookies, b.cookies = Cookies(fp.SECRETS), Cookies(fp.SECRETS)
    a.query_log_every = b.query_log_every = 13
    logging.getLogger("gslb.query").setLevel(logging.WARNING)  # sampled, not printed
    server = udp.udp_socket("127.0.0.1", 0)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ca, cb = types.SimpleNamespace(errors=0, seen=0), types.SimpleNamespace(errors=0, seen=0)
    batcher = mod.Batcher(server.fileno(), a, udp.handle, ca, log_query, udp.SLIP_OPT)
    rnd = random.Random(seed)
    clean = list(fp._resolver_queries(geo, 3000, seed))
    corpus = sorted((ROOT / "tests" / "data" / "fuzz").glob("*.bin"))
    differences = 0
    t0 = time.monotonic()
    for i in range(packets):
        if i == packets // 2:  # the second half: every answer after a key's first is limited
            a.rrl, b.rrl = mod.RateLimiter(0.001, 2), RateLimiter(0.001, 2)
        if i < len(clean):
            p = clean[i]
        elif corpus and rnd.random() < 0.01:
            p = rnd.choice(corpus).read_bytes()
        else:
            w = rnd.choice(clean)
            p = _lies(rnd, w) if rnd.random() < 0.3 else mutate_packet(rnd, w)
        if len(p) > 4000:
            continue
        client.sendto(p, server.getsockname())
        select.select([server], [], [], 2)
        batcher.run()
        want = udp.handle(cb, b, p, "127.0.0.1")
        client.setblocking(False)
        try:
            got: bytes | None = client.recv(4096)
        except BlockingIOError:
            got = None
        if got != want:
            differences += 1
            if differences <= 5:
                log.error(
                    "packet %d differs: %s: C %s, Python %s",
                    i,
                    p.hex(),
                    got and got.hex(),
                    want and want.hex(),
                )
    same = (
        a.stats.queries == b.stats.queries
        and a.stats.cookies == b.stats.cookies
        and a.stats.rrl == b.stats.rrl
        and a.rng.getstate() == b.rng.getstate()
        and ca.seen == cb.seen
    )
    if not same:
        differences += 1
        log.error("the counters or the RNG differ")
    took = time.monotonic() - t0
    sys.stdout.write(
        f"sanitized C loop: {packets} packets in {took:.1f} s, {batcher.fast} answered in C, "
        f"{batcher.slow} in Python, {batcher.errors} errors, {differences} differences\n"
    )
    sys.stdout.flush()
    return differences


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--packets", type=int, default=20_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--so", help="(the child) the sanitized build to load")
    ap.add_argument("--canary", help="(the child) call the canary library's overflow")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if a.canary:
        import ctypes

        ctypes.CDLL(a.canary).canary(8)  # past the end, or past INT_MAX: the sanitizer must stop here
        return 0
    if a.so:
        return 1 if run(Path(a.so), a.packets, a.seed) else 0
    with tempfile.TemporaryDirectory() as d:
        so = build(Path(d))
        cmd = [sys.executable, "-m", "tests.sanitized", "--so", str(so), "--packets", str(a.packets)]
        return subprocess.run([*cmd, "--seed", str(a.seed)], env=child_env(), cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main())
