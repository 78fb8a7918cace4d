"""Which streams go on which connection, and how fast connections may be opened (sans-I/O)."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from quaint.binance.encode import book_ticker_stream, kline_stream

# BOOK_TICKER_MODE: every bookTicker update, the last one per symbol per second, or none
# (and no bookTicker stream subscribed).
BookTickerMode = Literal["all", "sampled", "off"]


@dataclass(frozen=True, slots=True)
class ConnectionPlan:
    index: int
    symbols: tuple[str, ...]
    streams: tuple[str, ...]

    def url(self, base: str) -> str:
        return f"{base.rstrip('/')}/stream?streams={'/'.join(self.streams)}"


def symbol_streams(symbol: str, book_mode: BookTickerMode) -> list[str]:
    streams = [kline_stream(symbol)]
    if book_mode != "off":
        streams.append(book_ticker_stream(symbol))
    return streams


def symbols_per_connection(book_mode: BookTickerMode, streams_per_connection: int) -> int:
    return max(1, streams_per_connection // (1 if book_mode == "off" else 2))


def plan_connections(
    symbols: list[str], book_mode: BookTickerMode, streams_per_connection: int
) -> list[ConnectionPlan]:
    """Pack symbols into as few connections as the stream limit allows, keeping a
    symbol's streams together (the watchdog recycles the connection a symbol is on)."""
    per_conn = symbols_per_connection(book_mode, streams_per_connection)
    plans: list[ConnectionPlan] = []
    for i in range(0, len(symbols), per_conn):
        group = tuple(symbols[i : i + per_conn])
        streams = tuple(s for sym in group for s in symbol_streams(sym, book_mode))
        plans.append(ConnectionPlan(len(plans), group, streams))
    return plans


def control_messages(method: str, streams: list[str], ids: Iterator[int]) -> list[dict[str, object]]:
    """``SUBSCRIBE``/``UNSUBSCRIBE`` requests for ``streams``, ``CONTROL_BATCH`` streams each
    (a whole refresh's changes are usually one message); ids from ``ids``."""
    return [
        {"method": method, "params": streams[i : i + CONTROL_BATCH], "id": next(ids)}
        for i in range(0, len(streams), CONTROL_BATCH)
    ]


# Binance closes a connection sent more than 5 messages a second, pings and pongs included
# (the client answers the server's pings, and pings it itself): control messages keep well under.
CONTROL_PER_S = 2.0
CONTROL_BATCH = 200


class ConnectRateLimiter:
    """Sliding-window limits on opening connections (Binance: 5 per second, 300 per
    5 minutes per IP). ``delay(now)`` says how long to wait; ``record(now)`` books one."""

    def __init__(self, per_second: float, per_window: int, window_s: float = 300.0) -> None:
        self.min_spacing = 1.0 / per_second
        self.per_window = per_window
        self.window_s = window_s
        self._opened: deque[float] = deque(maxlen=per_window)

    def delay(self, now: float) -> float:
        if not self._opened:
            return 0.0
        wait = self._opened[-1] + self.min_spacing - now
        if len(self._opened) == self.per_window:
            wait = max(wait, self._opened[0] + self.window_s - now)
        return max(0.0, wait)

    def record(self, now: float) -> None:
        self._opened.append(now)
