"""The read API's request rules (sans-I/O): Binance's ``GET /api/v3/klines`` parameters
for the intervals the rollups store, and a per-client token bucket.

The parameter rules, error codes and messages are the simulator's (``quaint.binance.rules``,
pure, written from Binance's errors.md): one implementation of Binance's validation,
here asked for a wider set of intervals.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from gap_handler.core.rate import TokenBucket
from quaint.binance.models import ApiError
from quaint.binance.rules import KlinesQuery, parse_klines

# The intervals stored (candles_1m and its rollups) and their widths; Binance's others answer -1120.
INTERVAL_MS = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}


def parse_klines_request(
    params: Mapping[str, str], symbols: frozenset[str], time_unit: str | None = None
) -> KlinesQuery | ApiError:
    """A klines request -> the query, or Binance's error for the first bad parameter: the
    simulator's rules over the stored intervals, UTC buckets only."""
    return parse_klines(params, symbols, time_unit, intervals=INTERVAL_MS, utc_only=True)


TOO_MANY_REQUESTS = ApiError(
    -1003, "Too many requests; current limit of the local klines API is exceeded. Please use a lower rate."
)


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after_s: int  # whole seconds, as Binance's Retry-After


class ClientBuckets:
    """One token bucket per client address; the least recently seen addresses are
    forgotten beyond ``max_clients`` (a full bucket is what a forgotten client gets back)."""

    def __init__(self, rate: float, burst: int, max_clients: int = 10_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def charge(self, client: str, now: float) -> Verdict:
        bucket = self._buckets.pop(client, None) or TokenBucket(self.rate, self.burst, now=now)
        self._buckets[client] = bucket
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        wait = bucket.wait_time(now)
        if wait > 0:
            return Verdict(False, max(1, int(-(-wait // 1))))
        bucket.take(now)
        return Verdict(True, 0)
