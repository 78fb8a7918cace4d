"""Request rate control shared by every worker (sans-I/O: callers pass monotonic time).

Three limits, checked in order by :meth:`RateGate.try_acquire`:

1. an IP ban (HTTP 418) or a 429 pause: nothing is sent until it ends;
2. the exchange's per-minute request weight, read from ``X-MBX-USED-WEIGHT-1M``:
   above the soft fraction of the limit requests are spread so the remaining budget
   lasts until the window resets; above the hard fraction they wait for the reset;
3. a token bucket at the configured requests per second.

The bucket holds one token and refills slightly slower than the configured rate
(``margin``): any ``rate + 1`` consecutive grants then span at least ``1 + margin``
seconds, so the server never counts more than ``rate`` requests in a 1-s window even
when requests arrive a few milliseconds late.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Binance bans last from 2 minutes to 3 days. A Retry-After beyond that, or one that is
# not a number at all ("inf" and "nan" parse as floats), must not stop every request
# for good: it is capped, or replaced by the usual one-minute pause.
MAX_PAUSE_S = 3 * 86_400.0
DEFAULT_PAUSE_S = 60.0


def pause_s(retry_after: float) -> float:
    if not math.isfinite(retry_after) or retry_after < 0:
        return DEFAULT_PAUSE_S
    return min(retry_after, MAX_PAUSE_S)


class TokenBucket:
    def __init__(self, rate: float, capacity: float = 1.0, *, now: float = 0.0) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("need rate > 0 and capacity >= 1")
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._at = now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now

    def wait_time(self, now: float) -> float:
        """Seconds until a token is available (0 when one is)."""
        self._refill(now)
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    def take(self, now: float) -> None:
        self._refill(now)
        if self._tokens < 1:
            raise RuntimeError("no token available")
        self._tokens -= 1


class WeightBudget:
    """The exchange's per-minute request weight as last reported, plus what we have
    sent since that report."""

    def __init__(self, limit: int, soft: float = 0.7, hard: float = 0.9) -> None:
        if limit <= 0 or not 0 < soft < hard <= 1:
            raise ValueError("need limit > 0 and 0 < soft < hard <= 1")
        self.limit = limit
        self.soft = soft
        self.hard = hard
        self.used = 0
        self._reset_at = 0.0
        self._last_grant = float("-inf")

    def set_limit(self, limit: int) -> None:
        if limit > 0:
            self.limit = limit

    def observe(self, used: int, now: float, reset_in: float) -> None:
        """A response said ``used`` weight is spent in the window ending ``reset_in`` s from now."""
        self.used = max(0, used)
        self._reset_at = now + max(0.0, reset_in)

    def estimated_used(self, now: float) -> int:
        return 0 if now >= self._reset_at else self.used

    def wait_time(self, now: float, weight: int) -> float:
        used = self.estimated_used(now)
        remaining_s = self._reset_at - now
        if used + weight > self.hard * self.limit:
            return remaining_s
        if used + weight > self.soft * self.limit:
            # Spread what is left below the hard line over the rest of the window.
            slots = max(1.0, (self.hard * self.limit - used) / weight)
            return max(0.0, self._last_grant + remaining_s / slots - now)
        return 0.0

    def take(self, now: float, weight: int) -> None:
        if now < self._reset_at:
            self.used += weight
        self._last_grant = now


@dataclass(frozen=True, slots=True)
class RateState:
    state: str  # ok | throttled | banned
    until: float | None = None  # monotonic time the pause/ban ends
    used_weight: int = 0
    weight_limit: int = 0


class RateGate:
    def __init__(
        self,
        rate: float,
        weight_limit: int = 6000,
        *,
        soft: float = 0.7,
        hard: float = 0.9,
        margin: float = 0.02,
        now: float = 0.0,
    ) -> None:
        self.bucket = TokenBucket(rate / (1 + margin), now=now)
        self.weight = WeightBudget(weight_limit, soft, hard)
        self._paused_until = float("-inf")
        self._banned_until = float("-inf")

    def try_acquire(self, now: float, weight: int = 1) -> float:
        """0 and the grant is recorded, or the seconds to wait before asking again."""
        wait = max(
            self._banned_until - now,
            self._paused_until - now,
            self.weight.wait_time(now, weight),
            self.bucket.wait_time(now),
        )
        if wait > 0:
            return wait
        self.bucket.take(now)
        self.weight.take(now, weight)
        return 0.0

    def on_rate_limited(self, now: float, retry_after: float) -> None:
        """HTTP 429: everyone pauses for Retry-After."""
        self._paused_until = max(self._paused_until, now + pause_s(retry_after))

    def on_banned(self, now: float, retry_after: float) -> None:
        """HTTP 418: the IP is banned; nothing is sent until the ban ends."""
        self._banned_until = max(self._banned_until, now + pause_s(retry_after))

    def observe_weight(self, used: int, now: float, reset_in: float) -> None:
        self.weight.observe(used, now, reset_in)

    def state(self, now: float) -> RateState:
        used, limit = self.weight.estimated_used(now), self.weight.limit
        if now < self._banned_until:
            return RateState("banned", self._banned_until, used, limit)
        if now < self._paused_until:
            return RateState("throttled", self._paused_until, used, limit)
        if used > self.weight.soft * limit:
            return RateState("throttled", None, used, limit)
        return RateState("ok", None, used, limit)
