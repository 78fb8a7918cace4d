"""When the stream publishes what (sans-I/O): kline updates and bookTicker ticks.

``KlineScheduler.due(now)`` returns every kline event that has come due by the
simulated instant ``now``, in time order: the final ``x:true`` event of each minute
``final_delay_ms`` after its close, and the partial ``x:false`` event of the latest
2-s checkpoint. When the caller falls behind (high speed, clock jump), every missed
final is still produced, but only the newest partial: older partials are stale.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from quaint.binance.encode import book_ticker_payload, kline_event_payload, kline_stream
from quaint.binance.models import MINUTE_MS
from simulator.clock import minute_floor
from simulator.exchange import Exchange
from simulator.market import CHECKPOINT_MS

# Finals produced per call at most, so a huge clock jump is worked off in slices
# that let the event loop breathe.
MAX_FINALS_PER_CALL = 2_000


@dataclass(frozen=True, slots=True)
class Publication:
    stream: str
    symbol: str
    payload: dict[str, Any]
    closed: bool
    time_ms: int


class KlineScheduler:
    def __init__(self, exchange: Exchange, now_ms: int, final_delay_ms: int = 1400) -> None:
        self.exchange = exchange
        self.final_delay_ms = final_delay_ms
        # The minute open at start-up is the first one whose final is streamed; one
        # that closed less than final_delay_ms ago still gets its (late) final.
        self.next_final = minute_floor(now_ms - final_delay_ms)
        self.next_checkpoint = (now_ms // CHECKPOINT_MS + 1) * CHECKPOINT_MS

    def next_due_ms(self) -> int:
        return min(self.next_final + MINUTE_MS + self.final_delay_ms, self.next_checkpoint)

    def due(self, now_ms: int, wanted: Callable[[str], bool]) -> list[Publication]:
        out: list[Publication] = []
        finals = 0
        while self.next_final + MINUTE_MS + self.final_delay_ms <= now_ms and finals < MAX_FINALS_PER_CALL:
            out.extend(self._final(self.next_final, wanted))
            self.next_final += MINUTE_MS
            finals += 1
        if self.next_checkpoint <= now_ms:
            latest = now_ms // CHECKPOINT_MS * CHECKPOINT_MS
            self.next_checkpoint = latest + CHECKPOINT_MS
            if latest % MINUTE_MS:  # a checkpoint on the minute boundary has no trades yet
                out.extend(self._partial(latest, wanted, now_ms))
        out.sort(key=lambda p: p.time_ms)
        return out

    def _final(self, open_time: int, wanted: Callable[[str], bool]) -> list[Publication]:
        event_time = open_time + MINUTE_MS + self.final_delay_ms
        return self._publish(open_time, MINUTE_MS // CHECKPOINT_MS, event_time, event_time, wanted)

    def _partial(self, at_ms: int, wanted: Callable[[str], bool], now_ms: int) -> list[Publication]:
        open_time = minute_floor(at_ms)
        return self._publish(open_time, (at_ms - open_time) // CHECKPOINT_MS, at_ms, now_ms, wanted)

    def _publish(
        self, open_time: int, checkpoint: int, event_time: int, now_ms: int, wanted: Callable[[str], bool]
    ) -> list[Publication]:
        """The kline event of minute ``open_time`` as of ``checkpoint`` for each wanted
        symbol that exists at ``now_ms``; the last checkpoint is the close (``x:true``),
        which a feed gap suppresses."""
        closed = checkpoint == MINUTE_MS // CHECKPOINT_MS
        out = []
        for symbol in self.exchange.symbols:
            stream = kline_stream(symbol)
            if not wanted(stream) or not self.exchange.exists(symbol, open_time, now_ms):
                continue
            if closed and self.exchange.faults.in_feed_gap(symbol, open_time):
                continue
            found = self.exchange.market.partial(symbol, open_time, checkpoint)
            if found is None:
                continue
            candle, first, last = found
            payload = kline_event_payload(
                candle, event_time=event_time, is_closed=closed, first_trade_id=first, last_trade_id=last
            )
            out.append(Publication(stream, symbol, payload, closed, event_time))
        return out


class BookSequencer:
    """bookTicker payloads with a strictly increasing update id per symbol."""

    def __init__(self, exchange: Exchange, now_ms: int) -> None:
        self.exchange = exchange
        # Ids start from the simulated time so a restarted simulator keeps counting
        # upwards, as a real order book's ids do.
        self._next_id = dict.fromkeys(exchange.symbols, now_ms // 10)

    def next_id(self, symbol: str) -> int:
        update_id = self._next_id[symbol]
        self._next_id[symbol] = update_id + 1
        return update_id

    def tick(self, symbol: str, now_ms: int) -> dict[str, Any] | None:
        if not self.exchange.exists(symbol, minute_floor(now_ms), now_ms):
            return None  # outage or no replay data: the book is silent too
        update_id = self.next_id(symbol)
        tick = self.exchange.market.book(symbol, now_ms, update_id)
        return None if tick is None else book_ticker_payload(tick)
