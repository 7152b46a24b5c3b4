"""Pure rise/fall state machine for one probe target (no clock, no I/O).

A check reports pass or fail with a reason. ``observe`` counts consecutive
results: ``fall`` failures in a row take an UP target DOWN, ``rise`` successes
in a row bring a DOWN target back UP. Anything else keeps the state, so a
single flap changes nothing. The prober is the one owner that calls this.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Result:
    """One probe's outcome."""

    ok: bool
    reason: str  # "HTTP 200", "timeout after 2s", "connection refused", ...
    duration: float  # seconds the probe took
    at: float  # wall-clock time it finished (Unix seconds)
    load: float | None = None  # the member's reported load (least_loaded), from a passing check


@dataclass(frozen=True, slots=True)
class TargetState:
    up: bool
    since: float  # wall-clock time of the last transition (or of the first knowledge)
    successes: int = 0  # consecutive
    failures: int = 0  # consecutive
    last: Result | None = None
    last_error: Result | None = None  # the most recent failed result, kept for status

    @classmethod
    def initial(cls, up: bool, since: float) -> TargetState:
        return cls(up=up, since=since)


@dataclass(frozen=True, slots=True)
class Transition:
    up: bool
    at: float
    reason: str
    count: int  # consecutive results that caused it


def observe(st: TargetState, result: Result, rise: int, fall: int) -> tuple[TargetState, Transition | None]:
    """Apply one result; return the new state and the transition it caused, if any."""
    if result.ok:
        successes, failures = st.successes + 1, 0
    else:
        successes, failures = 0, st.failures + 1
    last_error = st.last_error if result.ok else result
    if st.up and failures >= fall:
        t = Transition(False, result.at, result.reason, failures)
        return TargetState(False, result.at, successes, failures, result, last_error), t
    if not st.up and successes >= rise:
        t = Transition(True, result.at, result.reason, successes)
        return TargetState(True, result.at, successes, failures, result, last_error), t
    return TargetState(st.up, st.since, successes, failures, result, last_error), None
