"""WebSocket I/O shell: one :class:`ConnectionSlot` per planned connection.

A slot keeps its streams flowing forever:

* **reconnect**: any transport failure (``OPEN_ERRORS`` to open,
  ``ConnectionClosed``/``OSError`` while reading) or a stale symbol ends the
  connection; the slot waits the next injected delay (the first within a second, then
  backing off: :mod:`feeder.core.reconnect`) and opens a new one. Gap detection then
  compares each symbol's last closed minute with its first new one.
* **a fatal answer** to an open (451, 403, 404, a malformed URL; classified once by
  :func:`feeder.core.reconnect.classify_open_failure`) stops the slot: one error line,
  the reason in ``/health``, and ``on_fatal`` so that the feeder can exit when no slot
  is left. 429/418 wait out ``Retry-After``; everything else backs off.
* **rollover**: before the connection reaches ``ws_max_connection_age_s``, or when the
  server announces ``serverShutdown``, a replacement is opened *while the old one
  keeps reading*; the old one is closed once the replacement has delivered a frame.
  Both feed the same router, which drops the overlap's duplicates.

Everything else (decoding, dedupe, batching, gaps, staleness) is decided by the
sans-I/O cores; this module only moves frames and reacts to their outcomes.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import structlog
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidStatus,
    InvalidURI,
    WebSocketException,
)

from feeder.core.accumulator import Accumulator
from feeder.core.connections import (
    CONTROL_PER_S,
    ConnectionPlan,
    ConnectRateLimiter,
    symbols_per_connection,
)
from feeder.core.events import reconnect_event
from feeder.core.gaps import GapDetector
from feeder.core.reconnect import OpenAction, OpenVerdict, classify_open_failure
from feeder.core.router import BadFrame, FrameRouter, Outcome
from feeder.core.watchdog import StaleWatchdog
from feeder.metrics import FeederMetrics
from feeder.settings import FeederSettings
from feeder.subscribe import Subscribing
from quaint.service.logging import LogThrottle

log = structlog.get_logger(__name__)

# Failing to open a connection: refused/reset, handshake timeout, HTTP error (429/418...),
# a URL that cannot be used (InvalidURI; ValueError from the URL parser: a bad port...).
OPEN_ERRORS: tuple[type[BaseException], ...] = (OSError, TimeoutError, WebSocketException, ValueError)
# A connection dying while being read.
READ_ERRORS: tuple[type[BaseException], ...] = (ConnectionClosed, OSError, TimeoutError, WebSocketException)
Connector = Callable[[str], Any]  # url -> awaitable ClientConnection (injectable for tests)
# recv() does not yield while frames are queued, and a minute's close queues one closed candle
# per symbol (2,000 for the whole market). The reader yields to the express lanes after this
# many closed candles, so their writes start (and their commits are read) during a long burst;
# a short burst (the candles of one socket read) goes whole into the write that starts when
# recv() next waits. Yielding after each candle sent a read's candles one statement each,
# the last ones queued behind the first ones' round trips.
CANDLES_PER_YIELD = 16


@dataclass(eq=False)
class Conn:
    ws: ClientConnection
    opened_at: float
    number: int
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    delivered: bool = False
    shutdown_notice: bool = False
    ended: str | None = None  # why the reader stopped
    reader: asyncio.Task[None] | None = None
    symbols: set[str] = field(default_factory=set)  # subscribed (URL, then SUBSCRIBE/UNSUBSCRIBE)
    # Control messages sent on this connection (Binance: at most 5 incoming messages a second).
    pacer: ConnectRateLimiter = field(default_factory=lambda: ConnectRateLimiter(CONTROL_PER_S, 5, 1.0))


@dataclass
class SlotState:
    connected: bool = False
    open_connections: int = 0
    connections_opened: int = 0
    reconnects: int = 0
    fatal: str | None = None  # why the slot stopped for good


def open_verdict(exc: BaseException) -> OpenVerdict:
    """The one place an open error's type and status are looked at."""
    if isinstance(exc, InvalidURI | ValueError):
        return classify_open_failure(malformed_url=True, error=str(exc)[:200])
    if isinstance(exc, InvalidStatus):
        response = exc.response
        return classify_open_failure(
            status=response.status_code, retry_after=response.headers.get("Retry-After"), error=str(exc)[:200]
        )
    return classify_open_failure(error=f"{type(exc).__name__}: {exc}"[:300])


class ConnectionSlot(Subscribing):
    def __init__(
        self,
        plan: ConnectionPlan,
        settings: FeederSettings,
        router: FrameRouter,
        acc: Accumulator,
        gaps: GapDetector,
        watchdog: StaleWatchdog,
        limiter: ConnectRateLimiter,
        metrics: FeederMetrics,
        *,
        reconnect_delays: Callable[[], Iterator[float]],
        on_fatal: Callable[[], None] = lambda: None,
        connector: Connector | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.plan = plan
        self.settings = settings
        self.symbols = list(plan.symbols)  # changed by add_symbols/remove_symbols as the universe moves
        self.capacity = symbols_per_connection(settings.book_ticker_mode, settings.streams_per_connection)
        self.router = router
        self.acc = acc
        self.gaps = gaps
        self.watchdog = watchdog
        self.limiter = limiter
        self.metrics = metrics
        self.reconnect_delays = reconnect_delays
        self.on_fatal = on_fatal
        self.connector = connector or self._connect
        self.clock = clock
        self.state = SlotState()
        self.log = log.bind(connection=plan.index, symbols=len(self.symbols))
        self._throttle = LogThrottle(interval_s=10.0, burst=5)
        self._check_s = min(1.0, settings.stale_timeout_s / 4)
        self._tg: asyncio.TaskGroup | None = None
        self._numbers = 0
        self._open_conns: set[Conn] = set()  # closed on the way out, even mid-rollover
        self._control_ids = itertools.count(1)

    def _connections(self) -> list[Conn]:
        return list(self._open_conns)

    def _connect(self, url: str) -> Any:
        return connect(
            url,
            open_timeout=self.settings.ws_open_timeout_s,
            close_timeout=2,
            max_queue=1024,  # absorb bursts; the router drains much faster than the exchange sends
            proxy=None,
        )

    # ---- lifecycle ----

    async def run(self) -> None:
        """Keep the streams flowing until cancelled (then close whatever is open), or
        until a fatal answer (``state.fatal``) stops the slot."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            await self._supervise_forever()
        if self.state.fatal is not None:
            self.on_fatal()

    async def _supervise_forever(self) -> None:
        delays = self.reconnect_delays()
        current: Conn | None = None
        # Staleness counts from now: a connection that cannot even be opened makes
        # the symbols stale (health) just like a silent one.
        self.watchdog.arm(self.symbols, self.clock())
        try:
            while True:
                if current is None:
                    current = await self._open_with_backoff(delays)
                    if current is None:
                        return  # a fatal answer
                ending = await self._watch(current)
                if ending in ("age", "server_shutdown"):
                    self.metrics.rollovers.labels(ending).inc()
                    age = round(self.clock() - current.opened_at, 1)
                    self.log.info("ws_rollover", reason=ending, age_s=age)
                    replacement = await self._rollover(current, delays)
                    if replacement is not None:
                        current = replacement
                        continue
                    if self.state.fatal is not None:
                        return  # the replacement got a fatal answer: so would every reconnect
                    ending = current.ended or "rollover failed"
                # A failure: the stream was interrupted.
                if self.clock() - current.opened_at >= self.settings.ws_stable_after_s and current.delivered:
                    delays = self.reconnect_delays()  # it had been healthy: start the backoff over
                await self._close(current, graceful=False)
                current = None
                self._interrupted(ending)
                await asyncio.sleep(next(delays))
        finally:
            for conn in list(self._open_conns):
                await self._close(conn, graceful=True)
            self.state.connected = False

    def _interrupted(self, reason: str) -> None:
        self.state.connected = False
        self.state.reconnects += 1
        kind = "stale" if reason.startswith("stale") else "error"
        self.metrics.reconnects.labels(kind).inc()
        self.gaps.mark_reconnect(self.symbols)
        self.acc.add_event(
            reconnect_event(self.symbols, reason, self.plan.index, self.state.reconnects), self.clock()
        )
        self.log.warning("ws_reconnecting", reason=reason, attempt=self.state.reconnects)

    # ---- opening ----

    async def _open(self) -> Conn:
        while True:
            wait = self.limiter.delay(self.clock())
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        self.limiter.record(self.clock())  # booked before the await: no other slot can take it
        symbols = set(self.url_symbols())
        ws = await self.connector(self.url)
        self._numbers += 1
        conn = Conn(ws=ws, opened_at=self.clock(), number=self._numbers, symbols=symbols)
        assert self._tg is not None
        conn.reader = self._tg.create_task(self._read(conn))
        self.state.connections_opened += 1
        self.state.open_connections += 1
        self._open_conns.add(conn)
        self.metrics.connections_opened.inc()
        self.watchdog.arm(self.symbols, conn.opened_at)
        if conn.symbols != set(self.symbols):  # the universe moved while it was opening
            await self._sync(conn)
        return conn

    async def _open_with_backoff(self, delays: Iterator[float]) -> Conn | None:
        """A new connection, retrying failures; ``None`` after a fatal answer."""
        while True:
            try:
                conn = await self._open()
            except OPEN_ERRORS as exc:
                self.metrics.reconnects.labels("open_failed").inc()
                verdict = open_verdict(exc)
                if verdict.fatal:
                    self._stop_for_good(verdict)
                    return None
                delay = next(delays)
                if verdict.action is OpenAction.RETRY_AFTER:
                    delay = max(delay, verdict.retry_after_s)
                self.log.warning("ws_open_failed", error=verdict.reason, retry_in_s=round(delay, 3))
                await asyncio.sleep(delay)
                continue
            self.state.connected = True
            self.log.info("ws_connected", number=conn.number, subscribed=len(conn.symbols))
            return conn

    def _stop_for_good(self, verdict: OpenVerdict) -> None:
        self.state.fatal = verdict.reason
        self.state.connected = False
        base = self.settings.binance_ws_url
        self.log.error("ws_refused_for_good", reason=verdict.reason, url=base, streams=len(self.streams()))

    async def _close(self, conn: Conn, *, graceful: bool) -> None:
        """Close handshake for a healthy connection (rollover, shutdown); a failed or
        stale one is aborted at once: a silent peer would not answer the close frame
        and waiting for it would only delay the reconnect."""
        if conn not in self._open_conns:
            return
        self._open_conns.discard(conn)
        if graceful:
            try:
                async with asyncio.timeout(3):
                    await conn.ws.close()
            except (TimeoutError, OSError, WebSocketException):
                conn.ws.transport.abort()
        else:
            conn.ws.transport.abort()
        if conn.reader is not None and not conn.reader.done():
            await asyncio.wait([conn.reader], timeout=1.0)
            if not conn.reader.done():
                conn.reader.cancel()
                await asyncio.wait([conn.reader])
        self.state.open_connections -= 1

    # ---- watching one connection ----

    async def _watch(self, conn: Conn) -> str:
        """Return why ``conn`` should be replaced: age, server_shutdown (planned), or
        a failure: the reader's ending, or stale symbols."""
        deadline = conn.opened_at + self.settings.ws_max_connection_age_s
        while True:
            now = self.clock()
            if conn.reader is not None and conn.reader.done():
                return conn.ended or "closed"
            if conn.shutdown_notice:
                return "server_shutdown"
            if now >= deadline:
                return "age"
            stale = self.watchdog.stale(self.symbols, now)
            if stale:
                self.log.warning("ws_stale", stale=stale[:20], count=len(stale))
                timeout = self.settings.stale_timeout_s
                return f"stale: no closed candle for {timeout:g} s ({len(stale)} symbol(s))"
            conn.changed.clear()
            try:
                async with asyncio.timeout(min(self._check_s, max(0.0, deadline - now))):
                    await conn.changed.wait()
            except TimeoutError:
                pass

    async def _rollover(self, old: Conn, delays: Iterator[float]) -> Conn | None:
        """Open a replacement while ``old`` keeps reading; close ``old`` once the new one
        delivers. ``None`` if ``old`` died before any replacement could deliver."""
        while True:
            try:
                new = await self._open()
            except OPEN_ERRORS as exc:
                verdict = open_verdict(exc)
                if verdict.fatal:
                    self._stop_for_good(verdict)
                    return None
                self.log.warning("ws_rollover_open_failed", error=verdict.reason)
                if old.reader is not None and old.reader.done():
                    return None
                delay = next(delays)
                await asyncio.sleep(max(delay, verdict.retry_after_s))
                continue
            try:
                async with asyncio.timeout(self.settings.ws_rollover_timeout_s):
                    while not new.delivered and not (new.reader is not None and new.reader.done()):
                        new.changed.clear()
                        await new.changed.wait()
            except TimeoutError:
                pass
            if new.delivered:
                await self._close(old, graceful=True)
                self.state.connected = True
                self.log.info("ws_rolled_over", number=new.number)
                return new
            await self._close(new, graceful=False)
            if old.reader is not None and old.reader.done():
                return None
            await asyncio.sleep(next(delays))

    # ---- reading ----

    async def _read(self, conn: Conn) -> None:
        space = self.acc.space_free
        on_frame = self.router.on_frame
        clock = self.clock
        recv = conn.ws.recv
        candles = 0
        try:
            while True:
                # Bytes, not str: orjson parses UTF-8 directly (invalid UTF-8 is then a
                # malformed frame), so websockets' per-frame decoding step is skipped.
                raw = await recv(False)
                routed = on_frame(raw, time.time_ns() // 1_000_000, clock())
                if isinstance(routed, BadFrame):
                    self._on_bad_frame(routed)
                elif routed <= Outcome.DUPLICATE:  # data: the common case
                    if routed is Outcome.CANDLE:
                        candles += 1
                        if candles % CANDLES_PER_YIELD == 0:
                            await asyncio.sleep(0)  # see CANDLES_PER_YIELD
                    if not conn.delivered:
                        conn.delivered = True
                        conn.changed.set()
                    # Backpressure: the accumulator clears ``space_free`` when a row
                    # filled the buffer (never during an outage: it sheds then).
                    while not space.is_set():
                        await space.wait()
                else:
                    self._on_control(conn, routed)
        except ConnectionClosedOK:
            conn.ended = "closed by server"
        except READ_ERRORS as exc:
            conn.ended = f"{type(exc).__name__}: {exc}"[:300]
        finally:
            conn.changed.set()

    def _on_control(self, conn: Conn, outcome: Outcome) -> None:
        if outcome is Outcome.SHUTDOWN:
            conn.shutdown_notice = True
            conn.changed.set()
            self.log.info("ws_server_shutdown_notice", number=conn.number)
        elif not conn.delivered:  # CONTROL: an answer to a request proves the connection works
            conn.delivered = True
            conn.changed.set()

    def _on_bad_frame(self, bad: BadFrame) -> None:
        allowed, suppressed = self._throttle.allow(bad.outcome.name, self.clock())
        if not allowed:
            return
        if bad.outcome is Outcome.MALFORMED:
            self.log.warning(
                "ws_malformed_frame", field=bad.field, reason=bad.reason[:200], suppressed=suppressed
            )
        else:
            self.log.warning("ws_unexpected_frame", reason=bad.reason, suppressed=suppressed)
