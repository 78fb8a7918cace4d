"""Injected retry policies: capped, jittered delays as plain generators.

Callers take an ``Iterator[float]`` so tests can pass a fixed sequence and the
production code gets "full jitter" exponential backoff (AWS architecture blog's
recommendation: spreads reconnect storms while keeping the mean delay bounded).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator


def jittered_backoff(
    initial: float, cap: float, *, factor: float = 2.0, rng: random.Random | None = None
) -> Iterator[float]:
    """Delays in [initial/2, min(cap, initial * factor**n)], forever.

    The floor of ``initial/2`` keeps the first retry from hammering a server that
    just dropped us; the cap bounds how long a recovered service waits.
    """
    if initial <= 0 or cap < initial or factor < 1:
        raise ValueError("need 0 < initial <= cap and factor >= 1")
    rand = rng or random.Random()
    ceiling = initial
    while True:
        yield rand.uniform(initial / 2, ceiling)
        ceiling = min(cap, ceiling * factor)


def parse_retry_after(value: str | None, default: float) -> float:
    """``Retry-After`` in seconds (Binance sends an integer); fall back to ``default``
    when absent, unparsable, negative or not finite (``inf`` would pause for ever;
    HTTP-dates are not used by Binance)."""
    if value is None:
        return default
    try:
        seconds = float(value.strip())
    except ValueError:
        return default
    return seconds if math.isfinite(seconds) and seconds >= 0 else default
