"""Property-based fuzzing of the packet path with Hypothesis: structured queries with
arbitrary names, types, classes, flags, opcodes and EDNS options (ECS included), and
arbitrary bytes. answer.respond.answer must never raise, must answer only what it should, and
a query it answers NOERROR must carry its own question back."""

from __future__ import annotations

import random
import struct

import dns.message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gslb.answer.respond import answer
from tests.fuzzing import serving_state

STATE = serving_state()
RNG = random.Random(0)

labels = st.one_of(
    st.sampled_from([b"static", b"conf", b"test", b"www", b"example", b"com", b"bal", b"wild", b"*", b"big"]),
    st.binary(min_size=0, max_size=70),
)
names = st.lists(labels, min_size=0, max_size=6).map(
    lambda ls: b"".join(bytes([len(x) & 0xFF]) + x for x in ls) + b"\x00"
)
options = st.lists(
    st.tuples(st.sampled_from([8, 10, 3, 12, 65001]), st.binary(max_size=24)).map(
        lambda t: struct.pack("!HH", t[0], len(t[1])) + t[1]
    ),
    max_size=3,
)


@st.composite
def queries(draw: st.DrawFn) -> bytes:
    qid = draw(st.integers(0, 0xFFFF))
    flags = draw(st.integers(0, 0xFFFF)) & ~0x8000 if draw(st.booleans()) else 0x0100
    qtype = draw(
        st.one_of(st.sampled_from([1, 28, 6, 2, 15, 16, 255, 252, 251, 41, 43]), st.integers(0, 0xFFFF))
    )
    qclass = draw(st.sampled_from([1, 1, 1, 3, 254, 255, 42]))
    wire = struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 0) + draw(names) + struct.pack("!HH", qtype, qclass)
    if draw(st.booleans()):
        opts = b"".join(draw(options))
        ttl = (
            (draw(st.integers(0, 255)) << 24)
            | (draw(st.integers(0, 3)) << 16)
            | (draw(st.integers(0, 0xFFFF)))
        )
        wire = (
            wire[:10]
            + b"\x00\x01"
            + wire[12:]
            + b"\x00"
            + struct.pack("!HHIH", 41, draw(st.integers(0, 0xFFFF)), ttl, len(opts))
            + opts
        )
    return wire


def check(wire: bytes) -> None:
    reply = answer(wire, STATE, "192.0.2.1", True, RNG)
    if reply is None:
        return
    assert len(wire) >= 12 and not wire[2] & 0x80, "answered a packet that must get no answer"
    assert reply[:2] == wire[:2] and reply[2] & 0x80
    if reply[3] & 0xF == 0 and reply[5] == 1 and (wire[2] >> 3) & 0xF == 0:
        msg = dns.message.from_wire(reply)
        q = dns.message.from_wire(wire, question_only=True)
        assert msg.question[0].name == q.question[0].name


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(queries())
def test_structured_queries(wire: bytes) -> None:
    check(wire)


@settings(max_examples=2000, deadline=None)
@given(st.binary(min_size=0, max_size=120))
def test_arbitrary_bytes(wire: bytes) -> None:
    check(wire)
