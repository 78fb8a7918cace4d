"""The feeder process: wiring of the cores and shells, the aiohttp app, the lifecycle.

Lifecycle. ``serve()`` starts the aiohttp app, whose ``cleanup_ctx`` creates the
process's single asyncpg pool (kept under ``POOL_KEY``), applies the schema, and
starts :meth:`Feeder.run`, which owns every background task in one TaskGroup. On
SIGTERM/SIGINT (``stop``): intake stops (connections closed), sampled ticks are
flushed into the buffer, the writer drains it within ``SHUTDOWN_FLUSH_TIMEOUT_S``, then
the pool closes and the process exits 0. A crashed task (a bug: errors we expect
are handled where they occur) ends the TaskGroup and the process exits 1; so does a
feeder whose every connection got a fatal answer (HTTP 451, 403, 404, a malformed URL:
nothing can ever work), after the same orderly stop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import asyncpg
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from feeder.core import reconnect
from feeder.core.accumulator import Accumulator
from feeder.core.connections import ConnectRateLimiter, plan_connections
from feeder.core.gaps import GapDetector
from feeder.core.health import HealthInputs, SymbolHealth, build_health
from feeder.core.router import FrameRouter
from feeder.core.watchdog import StaleWatchdog
from feeder.feature_task import FeatureTask
from feeder.metrics import FeederMetrics, StateCollector
from feeder.settings import FeederSettings
from feeder.stream import ConnectionSlot, Connector
from feeder.writer import Sender, wall_ms
from quaint.binance.models import datetime_to_ms
from quaint.service.health import HealthReport
from quaint.service.http import create_service_app
from quaint.service.retry import jittered_backoff
from quaint.service.runtime import bound_port, start_http
from quaint.store.pool import DatabaseUnavailable, create_pool
from quaint.store.schema import TimescaleUnavailable, apply_schema, log_schema_info

log = structlog.get_logger(__name__)

DelayPolicy = Callable[[], Iterator[float]]
NEWEST_STORED = "SELECT symbol, max(time) AS t FROM candles_1m WHERE symbol = ANY($1::text[]) GROUP BY symbol"
TICK_S = 0.25  # sampled book ticks are released within this of their second ending


class Feeder:
    def __init__(
        self,
        settings: FeederSettings,
        *,
        registry: CollectorRegistry | None = None,
        reconnect_delays: DelayPolicy | None = None,
        db_retry_delays: DelayPolicy | None = None,
        connector: Connector | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        s = settings
        self.settings = s
        self.symbols = list(s.symbols)
        self.clock = clock
        self.registry = registry or CollectorRegistry()
        self.reconnect_delays = reconnect_delays or (
            lambda: reconnect.reconnect_delays(s.websocket_reconnect_interval_s, s.websocket_reconnect_max_s)
        )
        self.db_retry_delays = db_retry_delays or (
            lambda: jittered_backoff(s.db_retry_interval_s, s.db_retry_max_s)
        )
        self.connector = connector
        self.acc = Accumulator(
            batch_size=s.batch_size,
            linger_s=s.batch_timeout_s,
            max_batch_rows=s.batch_max_rows,
            max_buffered=s.max_buffered_rows,
            signal=asyncio.Event,
        )
        self.gaps = GapDetector(s.gap_detection_threshold_s)
        self.watchdog = StaleWatchdog(s.stale_timeout_s)
        self.router = FrameRouter(self.symbols, s.book_ticker_mode, self.acc, self.gaps, self.watchdog)
        self.plans = plan_connections(self.symbols, s.book_ticker_mode, s.streams_per_connection)
        self.limiter = ConnectRateLimiter(s.ws_connects_per_second, s.ws_connects_per_5min)
        self.metrics = FeederMetrics.create(self.registry)
        self.registry.register(
            StateCollector(
                self.router,
                self.acc,
                self.watchdog,
                self.symbols,
                connections_open=lambda: sum(slot.state.open_connections for slot in self.slots),
                database_up=lambda: self.sender is None or self.sender.connected,
                clock=clock,
            )
        )
        self.sender: Sender | None = None
        self.features: FeatureTask | None = None
        self.slots: list[ConnectionSlot] = []
        self._slot_of = {sym: plan.index for plan in self.plans for sym in plan.symbols}
        self._stop = asyncio.Event()
        self.fatal: str | None = None  # set when every connection was refused for good
        self.started_at = clock()

    def request_stop(self) -> None:
        self._stop.set()

    def _slot_stopped(self) -> None:
        """A slot got a fatal answer. When none is left, nothing can ever flow: stop
        (and exit non-zero); otherwise the others go on and /health says why."""
        reasons = [slot.state.fatal for slot in self.slots]
        if reasons and all(reason is not None for reason in reasons):
            self.fatal = "; ".join(sorted({str(reason) for reason in reasons}))
            log.error("feeder_cannot_run", reason=self.fatal, connections=len(self.slots))
            self._stop.set()

    async def prepare(self, pool: asyncpg.Pool) -> None:
        """Schema, then each symbol's newest stored minute as the gap baseline (so the
        hole between it and the first live candle is reported like any other gap)."""
        async with pool.acquire() as conn:
            log_schema_info(await apply_schema(conn))
            rows = await conn.fetch(NEWEST_STORED, self.symbols)
        for row in rows:
            self.gaps.seed(row["symbol"], datetime_to_ms(row["t"]))
        log.info("gap_baseline", symbols_with_history=len(rows), symbols=len(self.symbols))

    async def run(self, pool: asyncpg.Pool) -> None:
        s = self.settings
        self.sender = sender = Sender(
            pool, self.acc, self.metrics, retry_delays=self.db_retry_delays, clock=self.clock
        )
        self.features = FeatureTask(
            pool,
            self.symbols,
            s.feature_version,
            s.feature_cache_interval_s,
            s.feature_horizon_minutes,
            self.router,
            self.metrics,
            clock=self.clock,
        )
        self.slots = [
            ConnectionSlot(
                plan,
                s,
                self.router,
                self.acc,
                self.gaps,
                self.watchdog,
                self.limiter,
                self.metrics,
                reconnect_delays=self.reconnect_delays,
                on_fatal=self._slot_stopped,
                connector=self.connector,
                clock=self.clock,
            )
            for plan in self.plans
        ]
        async with asyncio.TaskGroup() as tg:
            sender_task = tg.create_task(sender.run(), name="sender")
            aux = [
                tg.create_task(self._tick(), name="ticker"),
                tg.create_task(self.features.run(), name="features"),
            ]
            intake = [tg.create_task(slot.run(), name=f"ws-{slot.plan.index}") for slot in self.slots]
            log.info(
                "feeder_running",
                symbols=len(self.symbols),
                connections=len(self.slots),
                book_ticker_mode=s.book_ticker_mode,
            )
            await self._stop.wait()
            log.info("feeder_stopping", buffered=len(self.acc))
            for task in intake:
                task.cancel()
            await asyncio.wait(intake)
            self.router.flush_samples(wall_ms(), self.clock(), force=True)
            self.acc.close()
            try:
                async with asyncio.timeout(s.shutdown_flush_timeout_s):
                    await asyncio.wait([sender_task])
            except TimeoutError:
                log.error(
                    "flush_deadline_passed", rows_lost=len(self.acc), database_connected=sender.connected
                )
                sender_task.cancel()
            for task in aux:
                task.cancel()
        log.info("feeder_stopped", candles_written=sender.candles_written)

    async def _tick(self) -> None:
        """Release sampled book ticks whose second is over (a quiet symbol sends no
        later tick that would release them)."""
        while True:
            await asyncio.sleep(TICK_S)
            self.router.flush_samples(wall_ms(), self.clock())

    async def health(self) -> HealthReport:
        now = self.clock()
        up = {slot.plan.index for slot in self.slots if slot.state.connected}
        sender = self.sender
        connected = sender is None or sender.connected
        return build_health(
            HealthInputs(
                connections_up=len(up),
                connections_planned=len(self.plans),
                database_connected=connected,
                shedding_drops=not connected and bool(self.acc.ledger),
                refused=[
                    f"connection {slot.plan.index}: {slot.state.fatal}"
                    for slot in self.slots
                    if slot.state.fatal is not None
                ],
                candles_processed=0 if sender is None else sender.candles_written,
                uptime_s=now - self.started_at,
                symbols=[
                    SymbolHealth(
                        symbol=sym,
                        last_candle_open=self.gaps.last(sym),
                        seconds_since_last_candle=self.watchdog.since_last_closed(sym, now),
                        stale=self.watchdog.is_stale(sym, now),
                        connected=self._slot_of[sym] in up,
                    )
                    for sym in self.symbols
                ],
            )
        )


POOL_KEY = web.AppKey("pool", asyncpg.Pool)
FEEDER_KEY = web.AppKey("feeder", Feeder)
FEEDER_TASK_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("feeder_task")


async def _pool_ctx(app: web.Application) -> AsyncIterator[None]:
    pool = await create_pool(app[FEEDER_KEY].settings)
    app[POOL_KEY] = pool
    yield
    try:
        async with asyncio.timeout(10):
            await pool.close()
    except TimeoutError:
        pool.terminate()


async def _feeder_ctx(app: web.Application) -> AsyncIterator[None]:
    feeder = app[FEEDER_KEY]
    await feeder.prepare(app[POOL_KEY])
    task = asyncio.create_task(feeder.run(app[POOL_KEY]), name="feeder")
    app[FEEDER_TASK_KEY] = task
    yield
    feeder.request_stop()
    await asyncio.wait([task])  # the outcome is read by serve()


def build_app(feeder: Feeder) -> web.Application:
    app = create_service_app(feeder.registry, feeder.health)
    app[FEEDER_KEY] = feeder
    app.cleanup_ctx.extend([_pool_ctx, _feeder_ctx])
    return app


async def serve(
    feeder: Feeder,
    stop: asyncio.Event,
    on_ready: Callable[[web.Application, int], None] | None = None,
) -> int:
    """Run until ``stop`` is set (exit code 0) or the feeder fails (1)."""
    s = feeder.settings
    app = build_app(feeder)
    try:
        runner = await start_http(app, s.feeder_host, s.feeder_port)
    except (DatabaseUnavailable, TimescaleUnavailable) as exc:
        log.error("startup_failed", error=str(exc))
        return 1
    port = bound_port(runner)
    log.info("feeder_http_listening", host=s.feeder_host, port=port)
    if on_ready is not None:
        on_ready(app, port)
    task = app[FEEDER_TASK_KEY]
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        feeder.request_stop()
        await runner.cleanup()
    if task.cancelled():
        return 1
    error = task.exception()
    if error is not None:
        log.error("feeder_failed", exc_info=error)
        return 1
    return 0 if feeder.fatal is None else 1
