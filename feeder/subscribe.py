"""``SUBSCRIBE``/``UNSUBSCRIBE`` on an open connection, paced (the universe moving at run time).

Binance closes a connection that sends more than 5 messages a second, pings and pongs included;
each connection's requests go through its own pacer (``CONTROL_PER_S``), and a refresh's changes
are batched into as few requests as possible (``CONTROL_BATCH`` streams each).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import orjson
from structlog.typing import FilteringBoundLogger
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, WebSocketException

from feeder.core.connections import (
    BookTickerMode,
    ConnectRateLimiter,
    control_messages,
    symbol_streams,
    symbols_per_connection,
)
from feeder.core.watchdog import StaleWatchdog
from feeder.metrics import FeederMetrics
from feeder.settings import FeederSettings

URL_MAX_STREAMS = 200  # ~4 kB of URL; the rest of a connection's streams by SUBSCRIBE
_SEND_ERRORS: tuple[type[BaseException], ...] = (ConnectionClosed, OSError, WebSocketException)


async def paced(pacer: ConnectRateLimiter, clock: Callable[[], float]) -> None:
    """Wait for ``pacer``'s next slot and book it."""
    while True:
        wait = pacer.delay(clock())
        if wait <= 0:
            break
        await asyncio.sleep(wait)
    pacer.record(clock())


async def send_changes(
    ws: ClientConnection,
    pacer: ConnectRateLimiter,
    added: list[str],
    removed: list[str],
    mode: BookTickerMode,
    ids: Iterator[int],
    clock: Callable[[], float],
    metrics: FeederMetrics,
    log: FilteringBoundLogger,
) -> bool:
    """Subscribe ``added``'s streams and unsubscribe ``removed``'s; False if the connection went
    (its replacement is opened with the current streams in its URL)."""
    for method, symbols in (("SUBSCRIBE", added), ("UNSUBSCRIBE", removed)):
        streams = [st for sym in symbols for st in symbol_streams(sym, mode)]
        for msg in control_messages(method, streams, ids):
            await paced(pacer, clock)
            try:
                await ws.send(orjson.dumps(msg).decode())
            except _SEND_ERRORS:
                return False
            metrics.control_messages.labels(method.lower()).inc()
            log.info("ws_" + method.lower(), id=msg["id"], streams=len(streams))
    return True


class Subscribed(Protocol):
    """An open connection as subscriptions see it (:class:`feeder.stream.Conn`)."""

    ws: ClientConnection
    pacer: ConnectRateLimiter
    symbols: set[str]  # subscribed on it (its URL, then SUBSCRIBE/UNSUBSCRIBE)
    number: int


class Subscribing:
    """A slot's symbols as they change at run time (:class:`feeder.stream.ConnectionSlot`)."""

    symbols: list[str]
    settings: FeederSettings
    capacity: int
    watchdog: StaleWatchdog
    metrics: FeederMetrics
    clock: Callable[[], float]
    log: FilteringBoundLogger
    _control_ids: Iterator[int]

    def _connections(self) -> Sequence[Subscribed]:
        raise NotImplementedError

    def streams(self) -> list[str]:
        return [st for sym in self.symbols for st in symbol_streams(sym, self.settings.book_ticker_mode)]

    def url_symbols(self) -> list[str]:
        """The symbols a new connection's URL names: at most ``URL_MAX_STREAMS`` streams (a URL of
        1024 streams is ~20 kB, past common request-line limits such as aiohttp's 8 kB); the
        rest are subscribed on the open connection (:meth:`_sync`)."""
        return self.symbols[: symbols_per_connection(self.settings.book_ticker_mode, URL_MAX_STREAMS)]

    @property
    def url(self) -> str:
        mode = self.settings.book_ticker_mode
        streams = [st for sym in self.url_symbols() for st in symbol_streams(sym, mode)]
        return f"{self.settings.binance_ws_url}/stream?streams={'/'.join(streams)}"

    @property
    def room(self) -> int:
        """Symbols this slot can still take (1024 streams per connection)."""
        return self.capacity - len(self.symbols)

    # ---- the universe moving: SUBSCRIBE / UNSUBSCRIBE on the open connection(s) ----

    async def add_symbols(self, symbols: list[str]) -> None:
        self.symbols.extend(s for s in symbols if s not in self.symbols)
        self.watchdog.arm(symbols, self.clock())
        for conn in self._connections():
            await self._sync(conn)

    async def remove_symbols(self, symbols: list[str]) -> None:
        gone = set(symbols)
        self.symbols[:] = [s for s in self.symbols if s not in gone]
        for conn in self._connections():
            await self._sync(conn)

    async def _sync(self, conn: Subscribed) -> None:
        """Bring ``conn``'s subscriptions to ``self.symbols``, paced (a connection opened with an
        older URL while the set changed is caught up here too)."""
        wanted = set(self.symbols)
        added, removed = sorted(wanted - conn.symbols), sorted(conn.symbols - wanted)
        conn.symbols = wanted  # before any await: a concurrent sync sends only what is left
        await send_changes(
            conn.ws,
            conn.pacer,
            added,
            removed,
            self.settings.book_ticker_mode,
            self._control_ids,
            self.clock,
            self.metrics,
            self.log.bind(number=conn.number),
        )
