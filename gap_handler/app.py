"""Process wiring: the one pool, the one ClientSession, and the service built on them.

:func:`components` is the single place they are created (used by the HTTP service's
cleanup context and by the CLI); :func:`build_app` keeps them under ``web.AppKey``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp
import asyncpg
import structlog
from prometheus_client import CollectorRegistry

from gap_handler.background import NotifyListener, run_daily_jobs
from gap_handler.durable import DurableRequests
from gap_handler.engine import Engine
from gap_handler.exchange_clock import ExchangeClock
from gap_handler.fetcher import Fetcher
from gap_handler.metrics import GapMetrics
from gap_handler.rate import RateGate
from gap_handler.service import GapService
from gap_handler.settings import GapHandlerSettings
from gap_handler.timesync import TimeSync
from quaint.binance.models import ms_to_datetime
from quaint.binance.rest_client import RestClient
from quaint.service.health import HealthReport
from quaint.service.retry import jittered_backoff
from quaint.store.errors import DB_ERRORS
from quaint.store.pool import connect_kwargs, create_pool
from quaint.store.schema import SchemaInfo, apply_schema, log_schema_info, set_retention

log = structlog.get_logger(__name__)

NowMs = Callable[[], int]
_HEALTH_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *DB_ERRORS)


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


def steady_clock() -> NowMs:
    """Wall-clock ms as of now, then advanced by the monotonic clock: the service's local
    clock. Setting the host clock cannot move it, so the exchange offset measured against
    it stays a lower bound between two samples (see :mod:`gap_handler.exchange_clock`)."""
    wall0, mono0 = time.time_ns(), time.monotonic_ns()
    return lambda: (wall0 + time.monotonic_ns() - mono0) // 1_000_000


@dataclass(slots=True)
class Components:
    settings: GapHandlerSettings
    pool: asyncpg.Pool
    session: aiohttp.ClientSession
    metrics: GapMetrics
    fetcher: Fetcher
    engine: Engine
    service: GapService
    requests: DurableRequests  # the API's backfill requests, stored
    listener: NotifyListener
    schema: SchemaInfo
    clock: TimeSync
    now_ms: NowMs  # the exchange's time (clock.now_ms)


@contextlib.asynccontextmanager
async def components(
    settings: GapHandlerSettings, registry: CollectorRegistry, *, now_ms: NowMs | None = None
) -> AsyncIterator[Components]:
    """``now_ms``: the local clock (default :func:`steady_clock`; tests pass the simulator's).
    The service itself runs on the exchange's time estimated from it."""
    local_ms = now_ms or steady_clock()
    pool = await create_pool(settings)
    try:
        async with pool.acquire() as conn:
            info = await apply_schema(conn)
            await set_retention(conn, "book_ticker_retention", f"{settings.book_ticker_retention_days} days")
        log_schema_info(info)
        # The klines client's only session; closed after every user of it has stopped.
        async with aiohttp.ClientSession(raise_for_status=False) as session:
            metrics = GapMetrics(registry)
            client = RestClient(session, settings.binance_rest_url, timeout_s=settings.rest_timeout_s)
            gate = RateGate(
                settings.rate_limit_requests_per_sec, soft=settings.weight_soft_fraction,
                hard=settings.weight_hard_fraction, now=time.monotonic(),
            )  # fmt: skip
            metrics.weight_limit.set(gate.weight.limit)
            fetcher = Fetcher(
                client, gate, metrics,
                lambda: jittered_backoff(settings.retry_initial_s, settings.retry_cap_s),
                max_attempts=settings.retry_max_attempts,
            )  # fmt: skip
            exchange_clock = ExchangeClock(settings.exchange_time_sync_interval_s)
            clock = TimeSync(fetcher, exchange_clock, metrics, local_ms)
            engine = Engine(pool, fetcher, metrics, batch_size=settings.backfill_batch_size, clock=clock)
            service = GapService(settings, pool, engine, fetcher, metrics, clock=clock)
            requests = DurableRequests(service, pool)
            listener = NotifyListener(
                connect_kwargs(settings), service.on_notify, service.request_scan,
                lambda: jittered_backoff(0.5, 10.0),
            )  # fmt: skip
            yield Components(
                settings, pool, session, metrics, fetcher, engine, service, requests, listener, info,
                clock, clock.now_ms,
            )  # fmt: skip
    finally:
        await pool.close()


def service_loops(c: Components) -> list[Callable[[], Coroutine[Any, Any, None]]]:
    loops: list[Callable[[], Coroutine[Any, Any, None]]] = [
        c.service.scan_loop, c.listener.run, c.clock.run, c.requests.run,
    ]  # fmt: skip
    if c.schema.automation == "service":
        loops.append(lambda: run_daily_jobs(c.pool, lambda: ms_to_datetime(c.now_ms())))
    return loops


async def health(c: Components) -> HealthReport:
    try:
        async with asyncio.timeout(2):
            await c.pool.fetchval("SELECT 1")
        db = "connected"
    except _HEALTH_ERRORS:
        db = "unavailable"
    rate = c.fetcher.rate_state()
    until = c.fetcher.until_wall(rate)
    problems = []
    if db != "connected":
        problems.append("database unavailable")
    if rate.state == "banned":
        problems.append("banned by the exchange")
    if not c.listener.connected:
        problems.append("not listening for gap notifications")
    exchange_clock = c.clock.health()
    if exchange_clock is None:
        # Nothing is stored before the exchange's time is known (what is closed is its call).
        problems.append("exchange clock not synced yet (GET /api/v3/time): nothing is backfilled")
    svc = c.service
    body = {
        "backfills_completed": svc.backfills_completed,
        "candles_recovered": svc.candles_recovered,
        "database_status": db,
        "rate_limit": {
            "state": rate.state,
            "until": until.isoformat() if until else None,
            "used_weight": rate.used_weight,
            "weight_limit": rate.weight_limit,
        },
        "listener": "connected" if c.listener.connected else "disconnected",
        "backfills_in_flight": sum(len(v) for v in svc.running.values()),
        "backfills_queued": svc.queue.qsize(),
        "last_scan_at": svc.last_scan_at.isoformat() if svc.last_scan_at else None,
        "last_scan_s": None if svc.last_scan_s is None else round(svc.last_scan_s, 3),
        "automation": c.schema.automation,
        "exchange_clock": exchange_clock,
        "problems": problems,
    }
    return HealthReport("degraded" if problems else "healthy", body)
