"""The merged view is counted incrementally (only members whose votes changed);
it must always equal a full count of the same votes. No etcd here: the store's
events are applied as the watch would apply them."""

from __future__ import annotations

import json
import random

from gslb.cluster.etcd import KV, Event
from gslb.cluster.node import Cluster, Options
from gslb.cluster.votes import Obs
from gslb.health.view import HealthView

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
