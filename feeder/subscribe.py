"""``SUBSCRIBE``/``UNSUBSCRIBE`` on an open connection, paced (the universe moving at run time).

Binance closes a connection that sends more than 5 messages a second, pings and pongs included;
each connection's requests go through its own pacer (``CONTROL_PER_S``), and a refresh's changes
are batched into as few requests as possible (``CONTROL_BATCH`` streams each).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import orjson
from structlog.typing import FilteringBoundLogger
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, WebSocketException

from feeder.core.connections import BookTickerMode, ConnectRateLimiter, control_messages, symbol_streams
from feeder.metrics import FeederMetrics

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
