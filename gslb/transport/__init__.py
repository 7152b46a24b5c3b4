"""Network transports: thin I/O around :func:`gslb.engine.respond`."""

from __future__ import annotations

import random
from typing import Protocol

from gslb.metrics import QueryStats
from gslb.rrl import RateLimiter
from gslb.serving import ServingState


class StateHolder(Protocol):
    """Whatever holds the current serving state; read once per query."""

    state: ServingState
    rng: random.Random
    stats: QueryStats
    query_log_every: int  # log one query in this many (0: no query log)
    rrl: RateLimiter | None  # response rate limiting for UDP, or None
