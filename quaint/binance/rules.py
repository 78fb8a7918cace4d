"""Binance REST parameter rules and request-weight accounting (sans-I/O).

Error codes and messages follow Binance's documented ones (errors.md): -1100
illegal characters, -1102 mandatory parameter missing, -1120 bad interval, -1121 bad
symbol, -1128 bad combination, -1130 invalid value. Weight limits use Binance's
fixed one-minute windows: over the limit -> 429 with Retry-After; carrying on after
429s -> 418 (IP ban) with Retry-After.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import orjson

from quaint.binance.models import ApiError

# Every interval Binance accepts. The simulator serves 1m; the others are valid
# requests it answers with -1120 (see README: non-1m intervals are out of scope).
VALID_INTERVALS = frozenset(
    {"1s", "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M"}
)
SERVED_INTERVALS = frozenset({"1m"})
DEFAULT_LIMIT = 500
MAX_LIMIT = 1000
_SYMBOL_RE = re.compile(r"^[A-Z0-9\-_.]{1,20}$")
_LONG_RE = re.compile(r"^[0-9]{1,20}$")
_SYMBOLS_LEGAL = '^\\[("[A-Z0-9-_.]{1,20}"(,"[A-Z0-9-_.]{1,20}"){0,}){0,1}\\]$'
_MICROS_THRESHOLD = 10**14  # same rule as quaint.binance.parse: 16-digit values are µs
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
# timeZone values that mean UTC (Binance's default, "0").
_UTC_ZONES = frozenset({"0", "+0", "-0", "00:00", "+00:00", "-00:00", "0:00", "+0:00"})

# Weights as documented for the spot REST API.
WEIGHTS = {"/api/v3/ping": 1, "/api/v3/time": 1, "/api/v3/exchangeInfo": 20, "/api/v3/klines": 2}


def illegal(name: str, legal: str) -> ApiError:
    return ApiError(-1100, f"Illegal characters found in parameter '{name}'; legal range is '{legal}'.")


def mandatory(name: str) -> ApiError:
    return ApiError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def invalid(name: str) -> ApiError:
    return ApiError(-1130, f"Data sent for parameter '{name}' is not valid.")


INVALID_SYMBOL = ApiError(-1121, "Invalid symbol.")
INVALID_INTERVAL = ApiError(-1120, "Invalid interval.")


@dataclass(frozen=True, slots=True)
class KlinesQuery:
    symbol: str
    interval: str
    start_ms: int | None
    end_ms: int | None
    limit: int
    micros: bool  # answer timestamps in µs (X-MBX-TIME-UNIT: MICROSECOND)

    def window(self, now_ms: int) -> tuple[int, int, bool]:
        """(lo, hi, from_end): the inclusive open-time range to scan and which end
        of it the ``limit`` rows are taken from. Binance: with a startTime, rows
        start there; with only an endTime, or neither, the most recent rows."""
        lo = self.start_ms if self.start_ms is not None else 0
        hi = self.end_ms if self.end_ms is not None else now_ms
        return lo, hi, self.start_ms is None


def _timestamp(params: Mapping[str, str], name: str) -> int | ApiError | None:
    raw = params.get(name)
    if raw is None:
        return None
    if not _LONG_RE.match(raw):
        return illegal(name, "^[0-9]{1,20}$")
    value = int(raw)
    value = value // 1000 if value >= _MICROS_THRESHOLD else value
    # Binance takes any 20-digit time; beyond year 9999 nothing exists (nor is representable).
    return min(value, MAX_TIME_MS)


def parse_time_unit(header: str | None) -> bool | ApiError:
    """``X-MBX-TIME-UNIT`` -> True for microseconds."""
    if header is None or header.upper() == "MILLISECOND":
        return False
    if header.upper() == "MICROSECOND":
        return True
    return ApiError(-1194, "Invalid value for time unit; expected either MICROSECOND or MILLISECOND.")


def parse_symbol(params: Mapping[str, str], symbols: frozenset[str]) -> str | ApiError:
    raw = params.get("symbol")
    if not raw:
        return mandatory("symbol")
    if not _SYMBOL_RE.match(raw):
        return illegal("symbol", "^[A-Z0-9-_.]{1,20}$")
    return raw if raw in symbols else INVALID_SYMBOL


def parse_klines(
    params: Mapping[str, str],
    symbols: frozenset[str],
    time_unit: str | None = None,
    *,
    intervals: Collection[str] = SERVED_INTERVALS,
    utc_only: bool = False,
) -> KlinesQuery | ApiError:
    """A klines request -> the query, or Binance's error for the first bad parameter.
    ``intervals``: the ones answered (Binance's others are -1120). ``utc_only``: a
    ``timeZone`` other than UTC is refused (-1130) rather than ignored, for an answer
    whose buckets are UTC only (stored rollups)."""
    symbol = parse_symbol(params, symbols)
    if isinstance(symbol, ApiError):
        return symbol
    interval = params.get("interval")
    if not interval:
        return mandatory("interval")
    if interval not in VALID_INTERVALS or interval not in intervals:
        return INVALID_INTERVAL
    start = _timestamp(params, "startTime")
    end = _timestamp(params, "endTime")
    if isinstance(start, ApiError):
        return start
    if isinstance(end, ApiError):
        return end
    limit = DEFAULT_LIMIT
    if "limit" in params:
        if not _LONG_RE.match(params["limit"]):
            return illegal("limit", "^[0-9]{1,20}$")
        limit = int(params["limit"])
        if not 1 <= limit <= MAX_LIMIT:
            return invalid("limit")
    if start is not None and end is not None and start > end:
        return invalid("startTime")
    if utc_only and params.get("timeZone", "0") not in _UTC_ZONES:
        return invalid("timeZone")
    micros = parse_time_unit(time_unit)
    if isinstance(micros, ApiError):
        return micros
    return KlinesQuery(
        symbol=symbol, interval=interval, start_ms=start, end_ms=end, limit=limit, micros=micros
    )


def parse_exchange_info(params: Mapping[str, str], symbols: frozenset[str]) -> list[str] | ApiError:
    """The symbols an exchangeInfo request asks for (all of them by default)."""
    if "symbol" in params and "symbols" in params:
        return ApiError(-1128, "Combination of optional parameters invalid.")
    if "symbol" in params:
        one = parse_symbol(params, symbols)
        return one if isinstance(one, ApiError) else [one]
    if "symbols" in params:
        try:
            wanted = orjson.loads(params["symbols"])
        except orjson.JSONDecodeError:
            return illegal("symbols", _SYMBOLS_LEGAL)
        if not isinstance(wanted, list) or not wanted or not all(isinstance(s, str) for s in wanted):
            return invalid("symbols")
        if len(set(wanted)) != len(wanted):
            return ApiError(-1151, "Symbol is present multiple times in the list.")
        for s in wanted:
            if not _SYMBOL_RE.match(s):
                return illegal("symbols", "^[A-Z0-9-_.]{1,20}$")
            if s not in symbols:
                return INVALID_SYMBOL
        return list(wanted)
    return sorted(symbols)


@dataclass(frozen=True, slots=True)
class Verdict:
    status: int  # 200, 429 or 418
    used_weight: int
    retry_after_s: int | None = None


@dataclass(slots=True)
class _Account:
    window: int = -1
    used: int = 0
    rejected: int = 0
    banned_until_ms: int = 0


class WeightLimiter:
    """Per-IP request weight in fixed windows of ``window_ms`` (wall time).

    A request that pushes the window over ``limit`` gets 429; after ``ban_after``
    such rejections in one window, the IP is banned (418) for ``ban_ms``."""

    def __init__(
        self, limit: int, *, window_ms: int = 60_000, ban_after: int = 5, ban_ms: int = 120_000
    ) -> None:
        self.limit = limit
        self.window_ms = window_ms
        self.ban_after = ban_after
        self.ban_ms = ban_ms
        self._accounts: dict[str, _Account] = {}

    def charge(self, ip: str, weight: int, now_ms: int) -> Verdict:
        acct = self._accounts.setdefault(ip, _Account())
        if now_ms < acct.banned_until_ms:
            return Verdict(418, acct.used, math.ceil((acct.banned_until_ms - now_ms) / 1000))
        window = now_ms // self.window_ms
        if window != acct.window:
            acct.window, acct.used, acct.rejected = window, 0, 0
        acct.used += weight
        if acct.used <= self.limit:
            return Verdict(200, acct.used)
        acct.rejected += 1
        if acct.rejected > self.ban_after:
            acct.banned_until_ms = now_ms + self.ban_ms
            return Verdict(418, acct.used, math.ceil(self.ban_ms / 1000))
        window_end = (window + 1) * self.window_ms
        return Verdict(429, acct.used, max(1, math.ceil((window_end - now_ms) / 1000)))

    def used(self, ip: str, now_ms: int) -> int:
        acct = self._accounts.get(ip)
        if acct is None or acct.window != now_ms // self.window_ms:
            return 0
        return acct.used

    def too_much_weight(self) -> ApiError:
        return ApiError(
            -1003,
            f"Too much request weight used; current limit is {self.limit} request weight per 1 MINUTE. "
            "Please use WebSocket Streams for live updates to avoid polling the API.",
        )

    def banned(self, until_ms: int) -> ApiError:
        return ApiError(
            -1003,
            f"Way too much request weight used; IP banned until {until_ms}. "
            "Please use WebSocket Streams for live updates to avoid bans.",
        )

    def banned_until(self, ip: str) -> int:
        acct = self._accounts.get(ip)
        return 0 if acct is None else acct.banned_until_ms
