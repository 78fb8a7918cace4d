"""Frame routing (sans-I/O): raw WebSocket text in, rows and decisions out.

For every frame the reader calls :meth:`FrameRouter.on_frame` with the receipt time
(wall ms, stored with book ticks) and a monotonic ``now`` (batching, watchdog). The
router decodes, validates, deduplicates and samples, then feeds the accumulator, the
gap detector and the watchdog. It returns what happened: an :class:`Outcome`, or for a
frame it skipped a :class:`BadFrame` with the reason, so the reader can act on the few
frames that need it (``serverShutdown``, errors to log). The router keeps no error state
for the reader to read back.

Hot path: counters are plain ints read by the metrics collector at scrape time (no
per-message metric call, no per-message log line, no per-message allocation beyond
what decoding itself creates).

Duplicates. Two connections overlap during a rollover, so every frame may arrive
twice. Closed candles: the gap detector drops a repeat of the newest minute. Book
ticks: per symbol, an ``update_id`` at or below the last one accepted is a duplicate
(Binance's ids increase per symbol), unless it is far below, which means the id
sequence restarted. Sampled mode keeps the last accepted tick per symbol per second of
receipt time and emits it when a tick of a later second arrives or at ``flush_samples``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from feeder.core.accumulator import Accumulator
from feeder.core.connections import BookTickerMode, symbol_streams
from feeder.core.events import gap_event
from feeder.core.gaps import GapDetector, Verdict
from feeder.core.watchdog import StaleWatchdog
from quaint.binance.decoder import OPEN_KLINE, FrameDecoder
from quaint.binance.errors import ProtocolError
from quaint.binance.models import MINUTE_MS, BookTick, KlineEvent, ServerShutdown, SubscriptionResult
from quaint.binance.parse import load_frame

# An update id this far below the last one is a restarted sequence, not a duplicate.
UPDATE_ID_RESET_WINDOW = 10_000_000
# Book state remembered per symbol at each candle close, for the feature task.
BOOK_SNAPSHOTS_KEPT = 240


class Outcome(IntEnum):
    # Data outcomes come first: the reader tests ``outcome <= DUPLICATE`` on the hot path.
    # MALFORMED and UNEXPECTED come as a BadFrame (with the reason).
    KLINE_OPEN = 0
    CANDLE = 1
    TICK = 2
    DUPLICATE = 3
    SHUTDOWN = 4
    CONTROL = 5
    MALFORMED = 6
    UNEXPECTED = 7


@dataclass(frozen=True, slots=True)
class BadFrame:
    """A frame the router skipped: ``outcome`` is MALFORMED (it does not parse; ``field``
    names what is wrong) or UNEXPECTED (it parses but is not for us)."""

    outcome: Outcome
    reason: str
    field: str | None = None


Routed = Outcome | BadFrame


class FrameRouter:
    def __init__(
        self,
        symbols: list[str],
        book_mode: BookTickerMode,
        accumulator: Accumulator,
        gaps: GapDetector,
        watchdog: StaleWatchdog,
    ) -> None:
        self.symbols = frozenset(symbols)
        self.book_mode = book_mode
        self.decoder = FrameDecoder(s for sym in symbols for s in symbol_streams(sym, book_mode))
        self.acc = accumulator
        self.gaps = gaps
        self.watchdog = watchdog
        self._last_update: dict[str, int] = {}
        self._latest_tick: dict[str, BookTick] = {}
        self._pending: dict[str, BookTick] = {}  # sampled mode: this second's last tick
        self._book_at_close: dict[str, dict[int, BookTick]] = {s: {} for s in symbols}
        # counters (exported at scrape time)
        self.kline_frames = 0
        self.book_frames = 0
        self.control_frames = 0
        self.malformed = 0
        self.unexpected = 0
        self.duplicate_candles = 0
        self.duplicate_ticks = 0
        self.late_candles = 0
        self.candles_accepted = 0
        self.gaps_detected = 0

    def set_symbols(self, symbols: list[str]) -> None:
        """The universe changed: frames of a symbol no longer followed are skipped as unexpected
        (an UNSUBSCRIBE crosses frames already on the way), a new one's are routed."""
        self.symbols = frozenset(symbols)
        self.decoder = FrameDecoder(s for sym in symbols for s in symbol_streams(sym, self.book_mode))
        # Kept for the symbols still followed, started for new ones: a delisted one's goes.
        self._book_at_close = {symbol: self._book_at_close.get(symbol, {}) for symbol in symbols}

    def on_frame(self, raw: str | bytes, received_at: int, now: float) -> Routed:
        try:
            event = self.decoder.decode(load_frame(raw), received_at)
        except ProtocolError as exc:
            self.malformed += 1
            return BadFrame(Outcome.MALFORMED, exc.reason, exc.field)
        if event is OPEN_KLINE:
            # An update of a still-open candle of a subscribed symbol (half of a kline
            # stream's frames): never stored, its numbers were not even converted.
            self.kline_frames += 1
            return Outcome.KLINE_OPEN
        if isinstance(event, BookTick):
            return self._on_tick(event, now)
        if isinstance(event, KlineEvent):
            return self._on_kline(event, now)
        self.control_frames += 1
        if isinstance(event, ServerShutdown):
            return Outcome.SHUTDOWN
        if isinstance(event, SubscriptionResult):
            return Outcome.CONTROL
        return self._unexpected(f"unexpected {type(event).__name__}")

    def _unexpected(self, reason: str) -> BadFrame:
        self.unexpected += 1
        return BadFrame(Outcome.UNEXPECTED, reason)

    def _on_kline(self, event: KlineEvent, now: float) -> Routed:
        self.kline_frames += 1
        symbol = event.symbol
        # The subscription checks of this frame (an open 1m kline of a subscribed symbol
        # never gets here: the decoder answered OPEN_KLINE for it).
        if symbol not in self.symbols:
            return self._unexpected("kline for an unsubscribed symbol")
        if event.interval != "1m":
            return self._unexpected("kline interval is not 1m")
        if not event.is_closed:
            return Outcome.KLINE_OPEN
        candle = event.row
        if candle.open_time % MINUTE_MS or candle.close_time != candle.open_time + MINUTE_MS - 1:
            # The database would refuse it (minute check) and poison the whole batch.
            return self._unexpected("closed candle not aligned to a minute")
        verdict, gap = self.gaps.on_closed(symbol, candle.open_time)
        if verdict is Verdict.DUPLICATE:
            self.duplicate_candles += 1
            return Outcome.DUPLICATE
        self.watchdog.on_closed(symbol, now)
        if gap is not None:
            self.gaps_detected += 1
            self.acc.add_event(gap_event(gap), now)
        if verdict is Verdict.NEW:
            latest = self._latest_tick.get(symbol)
            if latest is not None:
                snaps = self._book_at_close[symbol]
                snaps[candle.open_time] = latest
                if len(snaps) > BOOK_SNAPSHOTS_KEPT:
                    del snaps[next(iter(snaps))]
        else:
            self.late_candles += 1
        self.candles_accepted += 1
        self.acc.add_candle(candle, now)
        return Outcome.CANDLE

    def _on_tick(self, tick: BookTick, now: float) -> Routed:
        self.book_frames += 1
        symbol = tick.symbol
        if symbol not in self.symbols or self.book_mode == "off":
            return self._unexpected("bookTicker for an unsubscribed symbol")
        last = self._last_update.get(symbol, -1)
        uid = tick.update_id
        if uid <= last and last - uid < UPDATE_ID_RESET_WINDOW:
            self.duplicate_ticks += 1
            return Outcome.DUPLICATE
        self._last_update[symbol] = uid
        self._latest_tick[symbol] = tick
        if self.book_mode == "all":
            self.acc.add_tick(tick, now)
            return Outcome.TICK
        pending = self._pending.get(symbol)
        if pending is not None and pending.received_at // 1000 != tick.received_at // 1000:
            self.acc.add_tick(pending, now)
        self._pending[symbol] = tick
        return Outcome.TICK

    def flush_samples(self, received_at: int, now: float, *, force: bool = False) -> int:
        """Emit sampled ticks whose second (of receipt) is over; all of them if ``force``."""
        if not self._pending:
            return 0
        second = received_at // 1000
        done = [s for s, t in self._pending.items() if force or t.received_at // 1000 < second]
        for symbol in done:
            self.acc.add_tick(self._pending.pop(symbol), now)
        return len(done)

    def latest_tick(self, symbol: str) -> BookTick | None:
        return self._latest_tick.get(symbol)

    def book_at_close(self, symbol: str, open_time: int) -> BookTick | None:
        """The newest tick received before the closed candle of ``open_time`` arrived."""
        return self._book_at_close.get(symbol, {}).get(open_time)
