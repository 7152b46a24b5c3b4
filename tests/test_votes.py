"""Counting the nodes' votes (gslb.cluster.votes): the quorum rules, by example."""

from __future__ import annotations

import pytest

from gslb.cluster.votes import Obs, needed, parse_quorum, tally

UP, DOWN = Obs(True, "HTTP 200", 0.0), Obs(False, "timeout after 2s", 0.0)


@pytest.mark.parametrize(
    ("quorum", "downs", "voters", "down"),
    [
        ("majority", 1, 3, False),  # one broken uplink of three is outvoted
        ("majority", 2, 3, True),
        ("majority", 1, 2, False),  # a tie keeps the member in
        ("majority", 2, 2, True),
        ("majority", 2, 4, False),
        ("majority", 3, 5, True),
        ("any", 1, 3, True),
        ("any", 0, 3, False),
        ("all", 2, 3, False),
        ("all", 3, 3, True),
        ("82%", 4, 5, False),  # Route 53: healthy while more than 18% say healthy
        ("82%", 5, 5, True),
        ("82%", 9, 10, True),
        ("50%", 1, 2, True),  # at least half, unlike majority
        ("majority", 1, 1, True),  # a node alone decides alone, under every rule
        ("all", 1, 1, True),
        ("any", 0, 1, False),
    ],
)
def test_quorum_rules(quorum: str, downs: int, voters: int, down: bool) -> None:
    votes = [(f"n{i}", DOWN if i < downs else UP) for i in range(voters)]
    assert tally(votes, quorum).down is down


def test_nobody_voted_means_up() -> None:
    assert tally([], "any").down is False
    assert needed("majority", 0) == 1


def test_the_tally_says_who_voted_what() -> None:
    t = tally([("n3", UP), ("n1", DOWN), ("n2", Obs(False, "HTTP 503", 0.0))], "majority")
    assert t.down and t.down_votes == 2
    assert str(t) == "2 of 3 down (majority): n1 timeout after 2s, n2 HTTP 503; n3 up"


@pytest.mark.parametrize("text", ["majority", "any", "all", "60%", "18.5 %", "100%"])
def test_quorum_spellings(text: str) -> None:
    parse_quorum(text)


@pytest.mark.parametrize("bad", ["most", "0%", "101%", 60, None, "%"])
def test_bad_quorums_are_refused(bad: object) -> None:
    with pytest.raises(ValueError, match="majority, any, all or a percentage"):
        parse_quorum(bad)


def test_observations_survive_json() -> None:
    o = Obs(False, "connection refused", 12.5, 0.001, 3.0)
    assert Obs.from_json(o.to_json()) == o


@pytest.mark.parametrize(
    ("quorum", "votes", "stale", "down"),
    [
        # the node's own fresh down against two stale ups from before an outage
        ("majority", "DUU", "bc", True),
        ("majority", "DUU", "", False),  # the same votes, all current: outvoted
        # stale downs still count: a member the peers last saw down stays out
        ("majority", "UDD", "bc", True),
        ("majority", "UDD", "c", True),  # a, b current: 1 of 2 (a tie) up; all: 2 of 3 down
        ("majority", "UUD", "c", False),  # current a, b up; all: 1 of 3
        ("all", "DUU", "bc", True),  # all: the current votes alone say down
        ("all", "DDU", "c", True),
        ("all", "DDU", "", False),
        ("any", "UUU", "bc", False),
        ("majority", "UUU", "abc", False),  # nothing current: all votes decide
        ("majority", "DDU", "abc", True),
    ],
)
def test_stale_votes_count_as_down_votes_only(quorum: str, votes: str, stale: str, down: bool) -> None:
    ballot = [(n, UP if v == "U" else DOWN) for n, v in zip("abc", votes, strict=True)]
    t = tally(ballot, quorum, stale)
    assert t.down is down
    assert t.stale == frozenset(stale)
    assert ("[stale, not re-published yet" in str(t)) is bool(stale)
