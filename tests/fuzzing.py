"""Fuzz harnesses shared by the short runs in the test suite and bench/fuzz.py.

- zones: mutated zone files (character edits, deletions, line swaps, spliced runs)
  must load or raise ConfigError with positions: never another exception.
- packets: mutated real queries (flipped bits, truncations, random lengths,
  compression pointers, huge counts, EDNS and ECS garbage) and random bytes go
  through ``answer.respond.answer``, the function the transports call: no exception
  escapes, the reply is None or a parseable DNS message echoing the ID, and a
  malformed query gets FORMERR (or silence).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from pathlib import Path

import dns.edns
import dns.message
import dns.rcode

from gslb.answer.build import build_state
from gslb.answer.respond import answer
from gslb.answer.state import ServingState
from gslb.zones.errors import ConfigError
from gslb.zones.load import load_zone

ROOT = Path(__file__).resolve().parent.parent
ZONE_SEEDS = [
    *sorted(ROOT.glob("zones/*.yaml")),
    *sorted((ROOT / "tests/data/zones").glob("*.yaml")),
    ROOT / "tests/data/geo/geo.test.yaml",
    ROOT / "tests/conformance/conf.test.yaml",
]
TOKENS = [
    *" :-[]{}\"'#,.0123456789abcdefxyz*@\n\t!&|>%?",
    "ttl",
    "types",
    "value",
    "pools",
    "A",
    "AAAA",
    "null",
    "true",
    "- ",
    "  ",
    "10.0.0.0/8",
    "::",
    "999999999999",
    "-1",
    "1e9",
    "0x1f",
    "<<: ",
    "!tag ",
    "&a ",
    "*a",
]


def mutate_text(rnd: random.Random, text: str) -> str:
    s = list(text)
    for _ in range(rnd.randrange(1, 6)):
        if not s:
            break
        i = rnd.randrange(len(s))
        op = rnd.randrange(5)
        if op == 0:
            del s[i : i + rnd.randrange(1, 8)]
        elif op == 1:
            s[i:i] = list(rnd.choice(TOKENS))
        elif op == 2:
            s[i] = rnd.choice(TOKENS)
        elif op == 3:
            lines = "".join(s).split("\n")
            a, b = rnd.randrange(len(lines)), rnd.randrange(len(lines))
            lines[a], lines[b] = lines[b], lines[a]
            s = list("\n".join(lines))
        else:
            j = rnd.randrange(len(s))
            s[i:i] = s[j : j + rnd.randrange(1, 30)]
    return "".join(s)


def fuzz_zones(seed: int, n: int) -> Iterator[tuple[str, BaseException]]:
    """Yield (input, exception) for every input that did not load cleanly or fail cleanly."""
    rnd = random.Random(seed)
    texts = [p.read_text() for p in ZONE_SEEDS]
    for _ in range(n):
        text = mutate_text(rnd, rnd.choice(texts))
        try:
            load_zone("fuzz.yaml", text)
        except ConfigError as e:
            if any(p.line < 1 or p.col < 1 for p in e.problems):
                yield text, AssertionError(f"problem without a position: {e}")
        except Exception as e:
            yield text, e


def serving_state() -> ServingState:
    zones = [load_zone(p) for p in ZONE_SEEDS if "geo" not in p.name]
    return build_state([(z, 1) for z in zones])


def _queries() -> list[bytes]:
    out = []
    for name, t in [
        ("static.conf.test.", "A"),
        ("www.example.com.", "AAAA"),
        ("route.bal.test.", "A"),
        ("x.wild.conf.test.", "A"),
        ("nope.conf.test.", "MX"),
        ("big.conf.test.", "A"),
    ]:
        out.append(dns.message.make_query(name, t, use_edns=False).to_wire())
        out.append(
            dns.message.make_query(
                name, t, use_edns=0, payload=4096, options=[dns.edns.ECSOption("10.1.2.0", 24)]
            ).to_wire()
        )
    return out


def mutate_packet(rnd: random.Random, w: bytes) -> bytes:
    b = bytearray(w)
    op = rnd.randrange(8)
    if op == 0:  # flipped bits
        for _ in range(rnd.randrange(1, 8)):
            i = rnd.randrange(len(b))
            b[i] ^= 1 << rnd.randrange(8)
    elif op == 1:  # truncation
        b = b[: rnd.randrange(len(b) + 1)]
    elif op == 2:  # random length, random tail
        b = b[: rnd.randrange(len(b) + 1)] + bytes(rnd.randrange(256) for _ in range(rnd.randrange(40)))
    elif op == 3:  # a compression pointer somewhere
        i = rnd.randrange(12, len(b)) if len(b) > 12 else 0
        b[i : i + 2] = bytes([0xC0 | rnd.randrange(64), rnd.randrange(256)])
    elif op == 4:  # huge counts
        struct.pack_into("!HHHH", b, 4, *(rnd.choice((0, 1, 2, 0xFFFF)) for _ in range(4)))
    elif op == 5:  # EDNS / ECS garbage in the last bytes
        for _ in range(rnd.randrange(1, 6)):
            i = rnd.randrange(max(1, len(b) - 20), len(b)) if len(b) > 1 else 0
            if b:
                b[i] = rnd.randrange(256)
    elif op == 6:  # random bytes
        b = bytearray(rnd.randrange(256) for _ in range(rnd.randrange(0, 80)))
    else:  # flags and opcode
        if len(b) >= 4:
            b[2], b[3] = rnd.randrange(256), rnd.randrange(256)
    return bytes(b)


def fuzz_packets(seed: int, n: int, state: ServingState | None = None) -> Iterator[tuple[bytes, str]]:
    """Yield (input, what went wrong) for every packet the engine mishandled."""
    rnd = random.Random(seed)
    st = state or serving_state()
    base = _queries()
    for _ in range(n):
        w = mutate_packet(rnd, rnd.choice(base))
        try:
            reply = answer(w, st, "192.0.2.1", rnd.random() < 0.8, rnd)
        except Exception as e:
            yield w, f"{type(e).__name__}: {e}"
            continue
        if reply is None:
            continue
        if len(w) < 12 or w[2] & 0x80:
            yield w, "answered a packet that must get no answer"
            continue
        if reply[:2] != w[:2]:
            yield w, "ID not echoed"
            continue
        if not reply[2] & 0x80:
            yield w, "QR not set in the reply"
            continue
        opcode = (w[2] >> 3) & 0xF
        if opcode == 5:  # UPDATE: dnspython parses it by its own rules (zone section must be SOA)
            if reply[3] & 0xF not in (dns.rcode.NOTIMP, dns.rcode.FORMERR, 0):  # 0: BADVERS, in the OPT
                yield w, f"UPDATE answered with rcode {reply[3] & 0xF}"
            continue
        try:
            msg = dns.message.from_wire(reply, ignore_trailing=False)
        except Exception as e:
            if reply[3] & 0xF != dns.rcode.FORMERR:  # a bare FORMERR header need not parse as a full message
                yield w, f"unparseable reply: {type(e).__name__}: {e}"
            continue
        if opcode and msg.rcode() not in (dns.rcode.NOTIMP, dns.rcode.FORMERR, dns.rcode.BADVERS):
            yield w, f"opcode {opcode} answered with {dns.rcode.to_text(msg.rcode())}"
