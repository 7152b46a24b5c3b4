"""``select: hashed``: the same client subnet keeps the same answer.

Weighted rendezvous hashing (highest random weight): every member gets the
score ``-weight / ln(h)``, where ``h`` in (0, 1) mixes a hash of the member's
address (computed once) with the client's subnet (splitmix64) (``answer.hash_prefix``: /24 for IPv4 and /56
for IPv6 by default), and the ``count`` (default 1) highest scores answer.
A client's answer changes only when one of its members goes away (or comes
back): removing one of N members moves about 1/N of the clients, those that
were on it. Weights keep their meaning: a member of weight 2 gets about twice
the clients of one of weight 1. The answer depends on the client's subnet, so
the ECS scope is at least the hash prefix.
"""

from __future__ import annotations

import functools
import hashlib
import math
import random
from collections.abc import Sequence
from typing import TypeVar

from gslb.answer.policies import Candidates, FirstPool, Param, ParamValues, PickContext

T = TypeVar("T")
_SCALE = float(1 << 64)


_MASK = (1 << 64) - 1


@functools.lru_cache(maxsize=65536)
def _seed(key: bytes) -> int:
    """A member's 64-bit seed: a hash of its address, computed once."""
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


def _mix(x: int) -> int:
    """splitmix64's finalizer: a cheap, well-spread 64-bit mix."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


class Hashed(FirstPool):
    name = "hashed"
    default_count: int | None = 1
    doc = "rendezvous hash of the client subnet: sticky answers"
    uses_client = True
    params: tuple[Param, ...] = (
        Param(
            "hash_prefix",
            (("ipv4", 0, 32, 24), ("ipv6", 0, 128, 56)),
            "clients in the same subnet of this length get the same answer",
        ),
    )

    def client_prefixes(self, values: ParamValues) -> tuple[int, int]:
        return values["hash_prefix.ipv4"], values["hash_prefix.ipv6"]

    def pick(
        self, cands: Candidates[T], count: int | None, rng: random.Random, ctx: PickContext
    ) -> Sequence[T]:
        bits = 32 if ctx.family == 4 else 128
        shift = bits - ctx.hash_prefix
        net = ctx.addr >> shift  # up to 128 bits for IPv6: fold to 64 before mixing
        subnet = _mix(_mix((net >> 64) ^ (net & _MASK)) ^ (ctx.hash_prefix << 1 | (ctx.family == 6)))
        scored = sorted(
            (
                (-w / math.log((_mix(_seed(key) ^ subnet) + 0.5) / _SCALE), i)
                for i, (key, w) in enumerate(zip(cands.keys, cands.weights, strict=True))
            ),
            reverse=True,
        )
        k = len(scored) if count is None else min(count, len(scored))
        return tuple(cands.items[i] for _, i in scored[:k])


POLICY: Hashed = Hashed()
