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
from quaint.binance.rules import (
    DEFAULT_LIMIT,
    INVALID_INTERVAL,
    MAX_LIMIT,
    VALID_INTERVALS,
    KlinesQuery,
    illegal,
    invalid,
    mandatory,
    parse_symbol,
    parse_time_unit,
)

# The intervals stored (candles_1m and its rollups); Binance's others answer -1120.
SERVED_INTERVALS = ("1m", "5m", "15m", "1h", "4h", "1d")
INTERVAL_MS = {
    "1m": 60_000,
    "5m": 300_000,
    "15m": 900_000,
    "1h": 3_600_000,
    "4h": 14_400_000,
    "1d": 86_400_000,
}
_DIGITS = frozenset("0123456789")
_UTC_ZONES = frozenset({"0", "+0", "-0", "00:00", "+00:00", "-00:00", "0:00", "+0:00"})
_MICROS_THRESHOLD = 10**14  # Binance reads 16-digit times as µs
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def _timestamp(params: Mapping[str, str], name: str) -> int | ApiError | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not raw or len(raw) > 20 or not set(raw) <= _DIGITS:
        return illegal(name, "^[0-9]{1,20}$")
    value = int(raw)
    value = value // 1000 if value >= _MICROS_THRESHOLD else value
    # Binance takes any 20-digit time; beyond year 9999 nothing is stored (nor representable).
    return min(value, MAX_TIME_MS)


def parse_klines_request(
    params: Mapping[str, str], symbols: frozenset[str], time_unit: str | None = None
) -> KlinesQuery | ApiError:
    """A klines request -> the query, or Binance's error for the first bad parameter."""
    symbol = parse_symbol(params, symbols)
    if isinstance(symbol, ApiError):
        return symbol
    interval = params.get("interval")
    if not interval:
        return mandatory("interval")
    if interval not in VALID_INTERVALS or interval not in INTERVAL_MS:
        return INVALID_INTERVAL
    start = _timestamp(params, "startTime")
    if isinstance(start, ApiError):
        return start
    end = _timestamp(params, "endTime")
    if isinstance(end, ApiError):
        return end
    limit = DEFAULT_LIMIT
    if "limit" in params:
        raw = params["limit"]
        if not raw or len(raw) > 20 or not set(raw) <= _DIGITS:
            return illegal("limit", "^[0-9]{1,20}$")
        limit = int(raw)
        if not 1 <= limit <= MAX_LIMIT:
            return invalid("limit")
    if start is not None and end is not None and start > end:
        return invalid("startTime")
    # Buckets are UTC only: another timeZone would shift them, so it is refused, not ignored.
    if params.get("timeZone", "0") not in _UTC_ZONES:
        return invalid("timeZone")
    micros = parse_time_unit(time_unit)
    if isinstance(micros, ApiError):
        return micros
    return KlinesQuery(
        symbol=symbol, interval=interval, start_ms=start, end_ms=end, limit=limit, micros=micros
    )


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
