"""The feeder, assembled: its cores, the shells around them, and what it does while it runs.

Assembled like the gap handler (:mod:`gap_handler.service`) and run by the shared
lifecycle (:func:`quaint.service.lifecycle.serve`, which owns the pool, the schema, the
HTTP app, the signals and the shutdown deadline): :func:`spec` names what ``serve()``
needs; :func:`assemble` builds a :class:`Feeder` on the process's resources (the clocks
and factories a test replaces are its parameters) and reads each symbol's newest stored
minute as the gap baseline.

:meth:`Feeder.run` owns every background task in one TaskGroup. On :meth:`Feeder.stop`
intake stops (connections closed), sampled ticks are flushed into the buffer and the
writer drains it; if ``SHUTDOWN_FLUSH_TIMEOUT_S`` (counted from the stop) passes first,
``serve()`` cancels the run and the rows still buffered are logged as lost. A feeder
whose every connection got a fatal answer (HTTP 451, 403, 404, a malformed URL: nothing
can ever work) sets :attr:`Feeder.fatal` and stops itself the same way: exit 1.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator, Mapping

import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from feeder.book_owner import BookOwnership
from feeder.core import reconnect
from feeder.core.accumulator import Accumulator
from feeder.core.connections import ConnectionPlan, ConnectRateLimiter, plan_connections, symbol_streams
from feeder.core.gaps import GapDetector
from feeder.core.health import Detail, HealthInputs, SymbolHealth, build_health
from feeder.core.router import FrameRouter
from feeder.core.watchdog import StaleWatchdog
from feeder.feature_task import FeatureTask
from feeder.metrics import FeederMetrics, StateCollector
from feeder.settings import FeederSettings
from feeder.stream import ConnectionSlot, Connector
from feeder.universe_task import UniverseFollower
from feeder.writer import Sender
from quaint.binance.rest_client import RestClient
from quaint.binance.universe import Resolution
from quaint.service.clock import wall_ms
from quaint.service.health import HealthReport
from quaint.service.lifecycle import Resources, ServiceSpec
from quaint.service.retry import jittered_backoff
from quaint.service.universe import ordered, resolve_at_start
from quaint.store.candles import newest_open_times
from quaint.store.pool import connect_kwargs

log = structlog.get_logger(__name__)

DelayPolicy = Callable[[], Iterator[float]]
TICK_S = 0.25  # sampled book ticks are released within this of their second ending


def default_reconnect_delays(settings: FeederSettings) -> DelayPolicy:
    s = settings
    return lambda: reconnect.reconnect_delays(s.websocket_reconnect_interval_s, s.websocket_reconnect_max_s)


def default_db_retry_delays(settings: FeederSettings) -> DelayPolicy:
    return lambda: jittered_backoff(settings.db_retry_interval_s, settings.db_retry_max_s)


class Feeder:
    """Built by :func:`assemble`; every part is an attribute (tests read them)."""

    def __init__(
        self,
        settings: FeederSettings,
        resources: Resources,
        *,
        registry: CollectorRegistry,
        reconnect_delays: DelayPolicy,
        db_retry_delays: DelayPolicy,
        connector: Connector | None,
        clock: Callable[[], float],
        symbols: list[str] | None = None,
        rest: RestClient | None = None,
        universe: Resolution | None = None,
    ) -> None:
        s = settings
        self.settings = s
        # Resolved by assemble() when SYMBOLS holds a pattern; the fixed list otherwise.
        self.symbols = list(s.universe.static_symbols() if symbols is None else symbols)
        self.clock = clock
        self.registry = registry
        self.pool = resources.pool
        self.reconnect_delays = reconnect_delays
        # The cores.
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
        # The shells around them.
        self.metrics = FeederMetrics.create(registry)
        # One writer per symbol's book ticks among redundant feeders (feeder.book_owner).
        self.books = BookOwnership(
            connect_kwargs(s), s.book_takeover_s, lambda: jittered_backoff(0.2, s.book_takeover_s / 4)
        )
        self.sender = Sender(
            self.pool,
            self.acc,
            self.metrics,
            retry_delays=db_retry_delays,
            clock=clock,
            book_owner=self.books.owned_ticks,
        )
        self.features = FeatureTask(
            self.pool,
            self.symbols,
            s.feature_version,
            s.feature_cache_interval_s,
            s.feature_horizon_minutes,
            self.router,
            self.metrics,
            clock=clock,
        )
        self._connector = connector
        self.slots = [self._make_slot(plan) for plan in self.plans]
        registry.register(
            StateCollector(
                self.router,
                self.acc,
                self.watchdog,
                self.symbols,
                connections_open=lambda: sum(slot.state.open_connections for slot in self.slots),
                database_up=lambda: self.sender.connected,
                clock=clock,
            )
        )
        self.slot_of = {sym: plan.index for plan in self.plans for sym in plan.symbols}
        # SYMBOLS with a pattern: followed at run time (listings, halts, delistings).
        self.follower = (
            UniverseFollower(self, rest, universe) if rest is not None and universe is not None else None
        )
        self._tg: asyncio.TaskGroup | None = None
        self._intake: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self.fatal: str | None = None  # set when every connection was refused for good
        self.started_at = clock()

    def _make_slot(self, plan: ConnectionPlan) -> ConnectionSlot:
        return ConnectionSlot(
            plan,
            self.settings,
            self.router,
            self.acc,
            self.gaps,
            self.watchdog,
            self.limiter,
            self.metrics,
            reconnect_delays=self.reconnect_delays,
            on_fatal=self._slot_stopped,
            connector=self._connector,
            clock=self.clock,
        )

    def spawn_slot(self, symbols: list[str]) -> ConnectionSlot:
        """A new connection for ``symbols`` (new listings no open connection has room for)."""
        mode = self.settings.book_ticker_mode
        streams = tuple(st for sym in symbols for st in symbol_streams(sym, mode))
        plan = ConnectionPlan(len(self.slots), tuple(symbols), streams)
        slot = self._make_slot(plan)
        self.slots.append(slot)
        self.plans.append(plan)
        self.slot_of.update(dict.fromkeys(symbols, plan.index))
        if self._tg is not None:
            self._intake.append(self._tg.create_task(slot.run(), name=f"ws-{plan.index}"))
        return slot

    def stop(self) -> None:
        self._stop.set()

    async def wait_stopping(self) -> None:
        await self._stop.wait()

    def _slot_stopped(self) -> None:
        """A slot got a fatal answer. When none is left, nothing can ever flow: stop
        (and exit non-zero); otherwise the others go on and /health says why."""
        reasons = [slot.state.fatal for slot in self.slots]
        if reasons and all(reason is not None for reason in reasons):
            self.fatal = "; ".join(sorted({str(reason) for reason in reasons}))
            log.error("feeder_cannot_run", reason=self.fatal, connections=len(self.slots))
            self._stop.set()

    async def prepare(self) -> None:
        """Each symbol's newest stored minute as the gap baseline (so the hole between it
        and the first live candle is reported like any other gap)."""
        async with self.pool.acquire() as conn:
            newest = await newest_open_times(conn, self.symbols)
        for symbol, open_time in newest.items():
            self.gaps.seed(symbol, open_time)
        log.info("gap_baseline", symbols_with_history=len(newest), symbols=len(self.symbols))

    async def run(self) -> None:
        sender = self.sender
        async with asyncio.TaskGroup() as tg:
            sender_task = tg.create_task(sender.run(), name="sender")
            aux = [
                tg.create_task(self._tick(), name="ticker"),
                tg.create_task(self.features.run(), name="features"),
                tg.create_task(self.books.run(), name="book-owner"),
            ]
            self._tg = tg
            intake = self._intake
            intake.extend(tg.create_task(slot.run(), name=f"ws-{slot.plan.index}") for slot in self.slots)
            following = [tg.create_task(self.follower.run(), name="universe")] if self.follower else []
            log.info(
                "feeder_running",
                symbols=len(self.symbols),
                connections=len(self.slots),
                book_ticker_mode=self.settings.book_ticker_mode,
            )
            await self._stop.wait()
            log.info("feeder_stopping", buffered=len(self.acc))
            for task in following:  # first: it may open connections
                task.cancel()
            try:
                for task in intake:
                    task.cancel()
                await asyncio.wait(intake)
                self.router.flush_samples(wall_ms(), self.clock(), force=True)
                self.acc.close()
                await asyncio.wait([sender_task])
            except asyncio.CancelledError:  # the shutdown deadline passed
                log.error(
                    "flush_deadline_passed", rows_lost=len(self.acc), database_connected=sender.connected
                )
                raise
            for task in aux:
                task.cancel()
        log.info("feeder_drained", candles_written=sender.candles_written)

    async def _tick(self) -> None:
        """Release sampled book ticks whose second is over (a quiet symbol sends no
        later tick that would release them)."""
        while True:
            await asyncio.sleep(TICK_S)
            self.router.flush_samples(wall_ms(), self.clock())

    async def health(self) -> HealthReport:
        return self._health(None)

    async def health_detail(self, query: Mapping[str, str]) -> HealthReport:
        """``/health?symbols=all``, ``?symbol=BTCUSDT,ETHUSDT``, ``?state=stale``: per-symbol detail."""
        return self._health(Detail.from_query(query))

    def _health(self, detail: Detail | None) -> HealthReport:
        now = self.clock()
        up = {slot.plan.index for slot in self.slots if slot.state.connected}
        connected = self.sender.connected
        return build_health(
            HealthInputs(
                connections_up=len(up),
                connections_planned=len(self.slots),
                database_connected=connected,
                shedding_drops=not connected and bool(self.acc.ledger),
                refused=[
                    f"connection {slot.plan.index}: {slot.state.fatal}"
                    for slot in self.slots
                    if slot.state.fatal is not None
                ],
                candles_processed=self.sender.candles_written,
                uptime_s=now - self.started_at,
                symbols=[
                    SymbolHealth(
                        symbol=sym,
                        last_candle_open=self.gaps.last(sym),
                        seconds_since_last_candle=self.watchdog.since_last_closed(sym, now),
                        stale=self.watchdog.is_stale(sym, now),
                        connected=self.slot_of.get(sym) in up,
                    )
                    for sym in self.symbols
                ],
            ),
            detail,
        )


FEEDER_KEY = web.AppKey("feeder", Feeder)


async def assemble(
    settings: FeederSettings,
    resources: Resources,
    *,
    registry: CollectorRegistry,
    reconnect_delays: DelayPolicy | None = None,
    db_retry_delays: DelayPolicy | None = None,
    connector: Connector | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Feeder:
    """Every part of the feeder on the process's resources, ready to run."""
    rest = RestClient(resources.session, settings.binance_rest_url)
    universe = await resolve_at_start(rest, settings.universe, default_reconnect_delays(settings))
    # The one place a shard's symbols are chosen (SHARD_INDEX/SHARD_COUNT/REPLICAS, quaint.sharding).
    static = settings.shard_symbols(settings.universe.static_symbols())
    feeder = Feeder(
        settings,
        resources,
        registry=registry,
        reconnect_delays=reconnect_delays or default_reconnect_delays(settings),
        db_retry_delays=db_retry_delays or default_db_retry_delays(settings),
        connector=connector,
        clock=clock,
        symbols=static if not settings.universe.dynamic else ordered(universe.trading),
        rest=rest if settings.universe.dynamic else None,
        universe=universe,
    )
    await feeder.prepare()
    return feeder


def spec(
    settings: FeederSettings,
    *,
    registry: CollectorRegistry | None = None,
    reconnect_delays: DelayPolicy | None = None,
    db_retry_delays: DelayPolicy | None = None,
    connector: Connector | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ServiceSpec[Feeder]:
    """What :func:`quaint.service.lifecycle.serve` needs to run the feeder."""
    registry = registry or CollectorRegistry()

    async def build(resources: Resources) -> Feeder:
        return await assemble(
            settings,
            resources,
            registry=registry,
            reconnect_delays=reconnect_delays,
            db_retry_delays=db_retry_delays,
            connector=connector,
            clock=clock,
        )

    return ServiceSpec(
        name="feeder",
        settings=settings,
        host=settings.feeder_host,
        port=settings.feeder_port,
        key=FEEDER_KEY,
        assemble=build,
        registry=registry,
        shutdown_deadline_s=settings.shutdown_flush_timeout_s,
    )
