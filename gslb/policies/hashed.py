"""``select: hashed``: the same client subnet keeps the same answer.

Weighted rendezvous hashing (highest random weight): every member gets the
score ``-weight / ln(h)``, where ``h`` in (0, 1) is a hash of the member's
address and the client's subnet (``answer.hash_prefix``: /24 for IPv4 and /56
for IPv6 by default), and the ``count`` (default 1) highest scores answer.
A client's answer changes only when one of its members goes away (or comes
back): removing one of N members moves about 1/N of the clients, those that
were on it. Weights keep their meaning: a member of weight 2 gets about twice
the clients of one of weight 1. The answer depends on the client's subnet, so
the ECS scope is at least the hash prefix.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from typing import TypeVar

from gslb.policies import Candidates, FirstPool, PickContext

T = TypeVar("T")
_SCALE = float(1 << 64)


def _unit(member: bytes, subnet: bytes) -> float:
    """A hash of (member, subnet) mapped into the open interval (0, 1)."""
    h = int.from_bytes(hashlib.blake2b(member + b"|" + subnet, digest_size=8).digest(), "big")
    return (h + 0.5) / _SCALE


class Hashed(FirstPool):
    name = "hashed"
    default_count: int | None = 1
    doc = "rendezvous hash of the client subnet: sticky answers"
    uses_client = True

    def pick(
        self, cands: Candidates[T], count: int | None, rng: random.Random, ctx: PickContext
    ) -> Sequence[T]:
        bits = 32 if ctx.family == 4 else 128
        shift = bits - ctx.hash_prefix
        subnet = bytes([ctx.family, ctx.hash_prefix]) + ((ctx.addr >> shift) << shift).to_bytes(
            bits // 8, "big"
        )
        scored = sorted(
            (
                (-w / math.log(_unit(key, subnet)), i)
                for i, (key, w) in enumerate(zip(cands.keys, cands.weights, strict=True))
            ),
            reverse=True,
        )
        k = len(scored) if count is None else min(count, len(scored))
        return tuple(cands.items[i] for _, i in scored[:k])


POLICY: Hashed = Hashed()
