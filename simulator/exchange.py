"""What the simulated exchange *has* at a given simulated instant (sans-I/O).

Combines the market model (the candles that would exist) with time (nothing after
"now", nothing older than the history depth) and outages (minutes lost for good).
The REST handlers, the truth endpoint and the stream all ask this one object, so
they cannot disagree.
"""

from __future__ import annotations

from quaint.binance.models import MINUTE_MS, Candle
from simulator.clock import minute_floor
from simulator.faults import FaultController, MinuteRange
from simulator.listings import Calendar
from simulator.market import CHECKPOINT_MS, MarketModel

# Upper bound on minutes scanned for one request: a page is at most 1000 rows, but
# outages can make the scan longer than the page; this keeps a pathological
# outage list from turning one request into a CPU hog.
_MAX_SCAN = 2_000_000


class Exchange:
    def __init__(
        self, market: MarketModel, faults: FaultController, history_ms: int, calendar: Calendar | None = None
    ) -> None:
        self.market = market
        self.faults = faults
        self.history_ms = history_ms
        self.calendar = calendar or Calendar()  # listings, halts, delistings: minutes that never were

    @property
    def symbols(self) -> list[str]:
        return self.market.symbols

    def earliest_open(self, now_ms: int) -> int:
        """Open time of the oldest minute still kept (ceil of now - depth)."""
        return -(-(now_ms - self.history_ms) // MINUTE_MS) * MINUTE_MS

    def exists(self, symbol: str, open_time: int, now_ms: int) -> bool:
        return (
            self.earliest_open(now_ms) <= open_time <= now_ms
            and not self.faults.in_outage(symbol, open_time)
            and self.calendar.has_minute(symbol, open_time)
            and self.market.raw(symbol, open_time // MINUTE_MS) is not None
        )

    def open_times(
        self, symbol: str, lo: int, hi: int, limit: int, *, from_end: bool, now_ms: int
    ) -> list[int]:
        """Up to ``limit`` open times of existing minutes in ``[lo, hi]`` (inclusive),
        ascending; the first ones from ``lo`` or, with ``from_end``, the last ones."""
        lo = max(-(-lo // MINUTE_MS) * MINUTE_MS, self.earliest_open(now_ms))
        hi = min(minute_floor(hi), minute_floor(now_ms))
        found: list[int] = []
        if hi < lo or limit <= 0:
            return found
        step = -MINUTE_MS if from_end else MINUTE_MS
        t = hi if from_end else lo
        replay = self.market.has_gaps(symbol)
        spans = [MinuteRange(a, b, symbol) for a, b in self.calendar.blocked(symbol)]
        outages = [
            r
            for r in (*self.faults.outages, *spans)
            if r.symbol in (None, symbol) and r.end > lo and r.start <= hi
        ]
        for _ in range(_MAX_SCAN):
            if not lo <= t <= hi or len(found) >= limit:
                break
            blocked = next((r for r in outages if r.start <= t < r.end), None)
            if blocked is not None:
                # Jump over the whole outage instead of walking it minute by minute.
                t = (
                    (minute_floor(blocked.start) - MINUTE_MS)
                    if from_end
                    else -(-blocked.end // MINUTE_MS) * MINUTE_MS
                )
                continue
            if not replay or self.market.raw(symbol, t // MINUTE_MS) is not None:
                found.append(t)
            t += step
        if from_end:
            found.reverse()
        return found

    def candle_at(self, symbol: str, open_time: int, now_ms: int) -> Candle | None:
        """The candle as the exchange shows it at ``now_ms``: final when closed,
        partial (as of the last 2-s checkpoint) while the minute is still open."""
        if now_ms >= open_time + MINUTE_MS:
            return self.market.candle(symbol, open_time)
        found = self.market.partial(symbol, open_time, (now_ms - open_time) // CHECKPOINT_MS)
        return None if found is None else found[0]

    def klines(
        self, symbol: str, lo: int, hi: int, limit: int, *, from_end: bool, now_ms: int
    ) -> list[Candle]:
        times = self.open_times(symbol, lo, hi, limit, from_end=from_end, now_ms=now_ms)
        if not times:
            return []
        closed = [t for t in times if t + MINUTE_MS <= now_ms]
        result: list[Candle] = []
        # Contiguous closed runs are generated in one batch (much cheaper per row).
        run_start = 0
        for i in range(1, len(closed) + 1):
            if i == len(closed) or closed[i] != closed[i - 1] + MINUTE_MS:
                batch = self.market.candles(symbol, closed[run_start], i - run_start)
                result.extend(c for c in batch if c is not None)
                run_start = i
        if len(closed) < len(times):
            current = self.candle_at(symbol, times[-1], now_ms)
            if current is not None:
                result.append(current)
        return result

    def truth(self, symbol: str, start: int, end: int, now_ms: int) -> list[Candle]:
        """Every closed candle with open time in ``[start, end)`` that exists."""
        hi = min(end - 1, now_ms - MINUTE_MS)
        return self.klines(symbol, start, hi, _MAX_SCAN, from_end=False, now_ms=now_ms)
