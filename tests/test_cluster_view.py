"""The merged view is counted incrementally (only members whose votes changed);
it must always equal a full count of the same votes. No etcd here: the store's
events are applied as the watch would apply them."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from gslb.cluster.etcd import KV, Event
from gslb.cluster.node import Cluster, Options
from gslb.cluster.votes import Obs
from gslb.dns import names
from gslb.health.view import HealthView
from gslb.server.runtime import _quorums
from gslb.zones.load import load_zone

KEYS = [("z.test.", "p", f"192.0.2.{i}") for i in range(40)]
QUORUMS = ("majority", "any", "all", "60%")


def event(node: str, key: tuple[str, str, str], obs: Obs | None) -> Event:
    path = f"/gslb/obs/{node}/" + "/".join(key)
    return Event(obs is None, KV(path, json.dumps(obs.to_json()).encode() if obs else b"", 1, 0))


def registration(node: str, deleted: bool = False) -> Event:
    return Event(deleted, KV(f"/gslb/nodes/{node}", json.dumps({"node": node}).encode(), 1, 0))


def full(c: Cluster, local: HealthView) -> HealthView:
    """The same votes counted from scratch by a fresh node."""
    f = Cluster(Options(("127.0.0.1:1",), c.node), lambda: None)
    f.connected = True
    f.quorum, f.own = c.quorum, dict(c.own)
    f.peers, f.peer_obs = dict(c.peers), {n: dict(o) for n, o in c.peer_obs.items()}
    return f.view(local, 0)


def test_incremental_count_equals_a_full_count() -> None:
    rnd = random.Random(14)
    c = Cluster(Options(("127.0.0.1:1",), "a"), lambda: None)
    c.connected = True  # as if the store answered (else the node would be deciding alone)
    c.quorum = {k: rnd.choice(QUORUMS) for k in KEYS}
    local = HealthView()
    for step in range(3000):
        r = rnd.random()
        k = rnd.choice(KEYS)
        o = Obs(rnd.random() < 0.6, rnd.choice(["HTTP 200", "timeout after 1s", "HTTP 503"]), float(step))
        if r < 0.3:
            own = dict(c.own)
            if rnd.random() < 0.1:
                own.pop(k, None)
            else:
                own[k] = o
            c.set_own(own, {k})
        elif r < 0.85:
            node = rnd.choice("bcd")
            c._apply([event(node, k, None if rnd.random() < 0.1 else o)])
        elif r < 0.93:
            node = rnd.choice("bcd")
            c._apply([registration(node, deleted=rnd.random() < 0.4)])
        elif r < 0.97:
            c.set_zones({kk: rnd.choice(QUORUMS) for kk in KEYS}, {}, {})
        else:
            local = HealthView(frozenset(rnd.sample(KEYS, 3)))
        got = c.view(local, step)
        want = full(c, local)
        assert c.live_peers() or step < 50 or not c.peers
        assert got.down == want.down, f"step {step}"
        assert {k: str(t) for k, t in got.votes.items()} == {k: str(t) for k, t in want.votes.items()}


# -- stale votes: what a node counts after the store comes back (docs/cluster.md) -------
M = ("z.test.", "p", "192.0.2.1")
UP, DOWN = Obs(True, "HTTP 200", 0.0), Obs(False, "timeout after 1s", 0.0)


def vote(node: str, obs: Obs, lease: int) -> Event:
    return Event(False, KV(f"/gslb/obs/{node}/" + "/".join(M), json.dumps(obs.to_json()).encode(), 1, lease))


def beat(node: str, lease: int) -> Event:
    return Event(
        False, KV(f"/gslb/nodes/{node}", json.dumps({"node": node, "period": 2.0}).encode(), 1, lease)
    )


def node_a(own: Obs | None, quorum: str = "majority") -> Cluster:
    c = Cluster(Options(("127.0.0.1:1",), "a", stale_after=30.0), lambda: None)
    c.etcd.last_ok = time.monotonic()  # the store answers
    c.quorum = {M: quorum}
    if own is not None:
        c.set_own({M: own}, {M})
    return c


def down(c: Cluster) -> bool:
    return M in c.view(HealthView(), 0).down


def test_after_the_outage_a_fresh_down_wins_over_votes_from_before_it() -> None:
    """The issue's order: every node saw the member die while alone; the store comes
    back with the others' "up" votes from before the outage (their leases restored)."""
    c = node_a(DOWN)
    c._replace(10, [beat("b", 7).kv, vote("b", UP, 7).kv, beat("c", 8).kv, vote("c", UP, 8).kv])
    assert down(c), "stale up votes do not outvote this node's own fresh down"
    assert "[stale, not re-published yet: b, c]" in str(c.view(HealthView(), 0).votes[M])
    # b reconnects: its votes under its new lease, then its registration
    c._apply([vote("b", DOWN, 17), beat("b", 17)])
    assert down(c)
    c._apply([vote("c", DOWN, 18), beat("c", 18)])
    t = c.view(HealthView(), 0).votes[M]
    assert down(c) and not t.stale and str(t).startswith("3 of 3 down")


def test_a_fresh_up_vote_counts_once_it_is_re_published() -> None:
    c = node_a(DOWN)
    c._replace(10, [beat("b", 7).kv, vote("b", UP, 7).kv, beat("c", 8).kv, vote("c", UP, 8).kv])
    c._apply([vote("b", UP, 17), beat("b", 17), vote("c", UP, 18), beat("c", 18)])
    assert not down(c), "a's one down vote of three, all current: outvoted (majority)"


def test_a_vote_under_an_older_lease_than_the_registration_is_stale() -> None:
    """A peer's new session re-published what it has; a vote it did not rewrite (a member
    it no longer has, left under its previous lease) stays stale."""
    c = node_a(DOWN, "majority")
    c._apply([beat("b", 17), vote("b", UP, 7)])
    assert down(c), "b's vote under lease 7 while b registers under 17"
    c._apply([vote("b", UP, 17)])
    assert not down(c), "1 of 2 down, both current: a tie keeps it in"


def test_a_member_that_recovered_during_the_outage_comes_back_as_the_peers_re_publish() -> None:
    c = node_a(UP)
    c._replace(10, [beat("b", 7).kv, vote("b", DOWN, 7).kv, beat("c", 8).kv, vote("c", DOWN, 8).kv])
    assert down(c), "the peers last saw it down: it stays out until they say otherwise"
    c._apply([vote("b", UP, 17), beat("b", 17)])
    assert not down(c), "a and b current and up, c's stale down alone: back in"


def test_a_peer_that_stops_beating_goes_stale_after_two_periods() -> None:
    c = node_a(DOWN, "all")
    c._apply([vote("b", UP, 7), beat("b", 7)])
    assert not down(c), "all: b's current up keeps it in"
    c.peers["b"].heard = time.monotonic() - (2 * 2.0 + c.opts.timeout) - 0.1  # its beats stopped
    assert c.current_peers(c.live_peers()) == frozenset()
    assert down(c), "b's up vote waits: a's own fresh down decides"


def test_votes_heard_before_being_alone_stay_stale_after_it() -> None:
    """Alone, the node dropped the peers' votes; when the store answers again (a new
    session's first reply, or the same session's pending request once a frozen store
    resumes) those votes are from before the outage: stale until each peer's next beat."""
    c = node_a(DOWN)
    c._apply([vote("b", UP, 7), beat("b", 7), vote("c", UP, 8), beat("c", 8)])
    assert not down(c), "1 of 3 down, all current"
    c.etcd.last_ok = time.monotonic() - 31  # the store silent for longer than stale_after
    assert c.alone and down(c)
    c.etcd._ok()  # it answers again
    assert not c.alone
    assert c.current_peers(c.live_peers()) == frozenset()
    assert down(c), "b's and c's up votes are from before the outage"
    c._apply([beat("b", 7)])
    t = c.view(HealthView(), 0).votes[M]
    assert not down(c) and t.stale == {"c"}, "b heard since: a and b current, a tie keeps it in"
    c._apply([beat("c", 8)])
    assert not down(c) and not c.view(HealthView(), 0).votes[M].stale


def test_the_stale_clock_runs_from_the_last_successful_request() -> None:
    c = node_a(None)
    c.etcd.last_ok = time.monotonic() - 1.5
    assert 1.4 < c.stale_for < 1.7 and c.status()["last_sync_seconds"] == pytest.approx(1.5, abs=0.15)
    c.etcd.last_ok = time.monotonic() - 30.5
    assert c.alone


def test_an_alias_address_is_voted_under_its_check_s_quorum(tmp_path: Path) -> None:
    """An alias member's addresses are voted on one by one, each under the quorum of the
    pool's check (here `any`: one down vote of two takes the address out; without its
    quorum it would count under majority and stay in)."""
    z = tmp_path / "q.test.yaml"
    z.write_text(
        "zone: q.test.\nnameservers: {ns1.q.test.: [192.0.2.53]}\n"
        "checks:\n  web: {type: tcp, port: 80, quorum: any}\n"
        "pools:\n  p: {check: web, members: [{alias: lb.example.net.}]}\n"
        "records:\n  www: [{types: [A], rules: [{pools: [p]}]}]\n"
    )
    key = ("q.test.", "p", "lb.example.net. 192.0.2.7")
    c = Cluster(Options(("127.0.0.1:1",), "a"), lambda: None)
    c.connected = True
    c.set_zones(_quorums([load_zone(z)], {names.from_text("lb.example.net."): ("192.0.2.7",)}), {}, {})
    assert c.quorum[key] == "any"
    c.set_own({key: Obs(True, "connected", 0.0)}, {key})
    c._apply([registration("b"), event("b", key, Obs(False, "connection refused", 0.0))])
    assert key in c.view(HealthView(), 1).down
