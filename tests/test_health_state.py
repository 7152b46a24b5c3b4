"""The rise/fall state machine as a table of result sequences."""

from __future__ import annotations

import pytest

from gslb.health.state import Result, TargetState, observe

# (start up?, rise, fall, results as a string of +/-, expected up after each result)
CASES = [
    (True, 2, 3, "---", [True, True, False]),
    (True, 2, 3, "--+--", [True, True, True, True, True]),  # a success resets the failure count
    (True, 2, 3, "---++", [True, True, False, False, True]),
    (False, 2, 3, "+-+", [False, False, False]),  # a failure resets the success count
    (False, 1, 1, "+-+", [True, False, True]),
    (True, 2, 1, "-", [False]),
]


@pytest.mark.parametrize(
    ("up", "rise", "fall", "seq", "want"), CASES, ids=[c[3] + f"r{c[1]}f{c[2]}" for c in CASES]
)
def test_rise_fall(up: bool, rise: int, fall: int, seq: str, want: list[bool]) -> None:
    st = TargetState.initial(up, 0.0)
    got = []
    transitions = 0
    for i, ch in enumerate(seq):
        st, t = observe(
            st, Result(ch == "+", "ok" if ch == "+" else "HTTP 500", 0.01, float(i + 1)), rise, fall
        )
        got.append(st.up)
        transitions += t is not None
    assert got == want
    changes = sum(1 for a, b in zip([up, *got], got, strict=False) if a != b)
    assert transitions == changes  # exactly one transition per change, none otherwise


def test_transition_carries_reason_and_time() -> None:
    st = TargetState.initial(True, 0.0)
    for i in range(2):
        st, t = observe(st, Result(False, "timeout after 2s", 2.0, 10.0 + i), 2, 2)
    assert t is not None and not t.up and t.reason == "timeout after 2s" and t.count == 2
    assert st.since == 11.0 and st.last_error is not None and st.last_error.reason == "timeout after 2s"
