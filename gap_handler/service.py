"""The gap handler, assembled: its cores, the shells around them, and what it does while it runs.

Assembled like the feeder (:mod:`feeder.service`) and run by the shared lifecycle
(:func:`quaint.service.lifecycle.serve`, which owns the pool, the schema, the HTTP app,
the signals and the shutdown deadline): :func:`spec` names what ``serve()`` needs, with
the HTTP API's routes (:mod:`gap_handler.api`); :func:`assemble` builds a
:class:`GapHandler` on the process's resources (the local clock ``now_ms`` is a
parameter: tests and the chaos run pass the simulator's) and sets the retention the
settings ask for. The one-shot CLI (:mod:`gap_handler.cli`) assembles the same parts.

:meth:`GapHandler.run` runs the backfill workers and the loops (scans, the NOTIFY
listener, the exchange-clock sync, the durable requests, the daily jobs when the schema
leaves them to us) in one TaskGroup. On :meth:`GapHandler.stop` intake stops and units
in flight run to their next page boundary; ``serve()`` cancels them if
``SHUTDOWN_DEADLINE_S`` passes first.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from gap_handler.api import GAP_HANDLER_KEY, ROUTES
from gap_handler.archive_fill import ArchiveFill
from gap_handler.backfills import Backfills
from gap_handler.background import NotifyListener, run_daily_jobs
from gap_handler.core.exchange_clock import ExchangeClock
from gap_handler.core.health import HealthInputs, build_health
from gap_handler.core.klines import ClientBuckets
from gap_handler.core.rate import RateGate
from gap_handler.durable import DurableRequests
from gap_handler.engine import Engine
from gap_handler.fetcher import Fetcher
from gap_handler.klines_api import KLINES_ROUTES
from gap_handler.leader import Leadership, instance_name
from gap_handler.metrics import GapMetrics
from gap_handler.settings import GapHandlerSettings
from gap_handler.timesync import TimeSync
from quaint.binance.models import ms_to_datetime
from quaint.binance.rest_client import RestClient
from quaint.service.clock import NowMs, steady_clock
from quaint.service.health import HealthReport
from quaint.service.lifecycle import Resources, ServiceSpec
from quaint.service.retry import jittered_backoff
from quaint.store import leadership
from quaint.store.errors import DB_ERRORS, describe
from quaint.store.pool import connect_kwargs
from quaint.store.quality import log_event
from quaint.store.quality_event import QualityEvent
from quaint.store.schema import set_retention

log = structlog.get_logger(__name__)

_HEALTH_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, *DB_ERRORS)


class GapHandler:
    """Built by :func:`assemble`; every part is an attribute (the API and tests read them)."""

    fatal: str | None = None  # nothing stops it for good: every failure is retried

    def __init__(
        self,
        settings: GapHandlerSettings,
        resources: Resources,
        *,
        registry: CollectorRegistry,
        now_ms: NowMs,
    ) -> None:
        s = settings
        self.settings = s
        self.pool = resources.pool
        self.session = resources.session  # the klines client's; closed after every user has stopped
        self.schema = resources.schema
        self.metrics = GapMetrics(registry)
        client = RestClient(resources.session, s.binance_rest_url, timeout_s=s.rest_timeout_s)
        gate = RateGate(
            s.rate_limit_requests_per_sec,
            soft=s.weight_soft_fraction,
            hard=s.weight_hard_fraction,
            now=time.monotonic(),
        )
        self.metrics.weight_limit.set(gate.weight.limit)
        self.fetcher = Fetcher(
            client,
            gate,
            self.metrics,
            lambda: jittered_backoff(s.retry_initial_s, s.retry_cap_s),
            max_attempts=s.retry_max_attempts,
        )
        # The service runs on the exchange's time, estimated from the local clock.
        self.clock = TimeSync(
            self.fetcher, ExchangeClock(s.exchange_time_sync_interval_s), self.metrics, now_ms
        )
        self.now_ms = self.clock.now_ms
        self.engine = Engine(
            self.pool, self.fetcher, self.metrics, batch_size=s.backfill_batch_size, clock=self.clock
        )
        self.klines_buckets = ClientBuckets(s.klines_api_rate_per_s, s.klines_api_burst)  # the read API's
        self.leadership = Leadership(
            connect_kwargs(s), s.leader_takeover_s, lambda: jittered_backoff(0.2, s.leader_takeover_s / 4)
        )
        self._stop = asyncio.Event()
        self._build_work()
        # What /metrics breaks down per symbol: the current term's scans' symbols.
        self.metrics.followed = lambda: self.backfills.symbols

    def _build_work(self) -> None:
        """The leader's parts, fresh: built again after a term ends, so nothing of the
        cancelled term's state (claims, queue, live requests) carries into the next."""
        s = self.settings
        self.backfills = Backfills(s, self.pool, self.engine, self.fetcher, self.metrics, clock=self.clock)
        if s.archive_enabled:
            self.backfills.archive = ArchiveFill(s, self.engine, self.session, self.fetcher, self.now_ms)
        self.requests = DurableRequests(self.backfills, self.pool)  # the API's backfill requests, stored
        self.listener = NotifyListener(
            connect_kwargs(s),
            self.backfills.on_notify,
            self.backfills.on_listening,
            lambda: jittered_backoff(0.5, 10.0),
        )

    async def prepare(self) -> None:
        """What the settings ask of the database before anything runs."""
        async with self.pool.acquire() as conn:
            await set_retention(
                conn, "book_ticker_retention", f"{self.settings.book_ticker_retention_days} days"
            )

    def loops(self) -> list[Callable[[], Coroutine[Any, Any, None]]]:
        """The long-running loops beside the workers."""
        b = self.backfills
        loops: list[Callable[[], Coroutine[Any, Any, None]]] = [
            b.scan_loop,
            self.listener.run,
            self.clock.run,
            self.requests.run,
        ]
        if self.schema.automation == "service":
            loops.append(lambda: run_daily_jobs(self.pool, lambda: ms_to_datetime(self.now_ms())))
        return loops

    async def run(self) -> None:
        """Stand by until elected, then work until stopped or the leadership is lost (the
        term's work is cancelled at once: another instance may be taking over), and so on."""
        election = asyncio.create_task(self.leadership.run(), name="leader-election")
        try:
            while True:
                await _any(election, self._stop, self.leadership.gained)
                if self._stop.is_set() or election.done():
                    break
                self.metrics.leader.set(1)
                self.metrics.leader_terms.inc()
                work = asyncio.create_task(
                    self.backfills.run([*self.loops(), self._record_term]), name="leader-term"
                )
                await _any(work, self._stop, self.leadership.lost)
                if self._stop.is_set() or work.done():
                    await work  # stopped: units run to a page boundary (serve() enforces the deadline)
                    break
                work.cancel()
                await asyncio.wait([work])
                self.metrics.leader.set(0)
                log.warning("leader_term_ended", term=self.leadership.terms)
                self._build_work()
        finally:
            election.cancel()
            await asyncio.wait([election])
            self.metrics.leader.set(0)
        if not election.cancelled() and (error := election.exception()) is not None:
            raise error  # the election never ends by itself: a bug

    async def _record_term(self) -> None:
        """One ``leader_changed`` row for the term, naming the server it started on, and one
        ``db_failover`` row when that is not the server the previous term started on (a
        promotion happened since). Retried while the database is away (the pool may still
        hold connections to a primary that is gone); the term's work does not wait for it."""
        me = instance_name()
        delays = jittered_backoff(0.5, 5.0)
        while True:
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    server = await leadership.server_identity(conn)
                    previous = await leadership.last_leader_server(conn)
                    details = {"instance": me, "term": self.leadership.terms, "server": server}
                    message = f"{me} is the active gap handler"
                    await log_event(
                        conn,
                        QualityEvent(
                            "leader_changed", source="gap_handler", message=message, details=details
                        ),
                    )
                    if previous is not None and previous != server:
                        log.warning("db_failover", previous=previous, server=server)
                        failover = QualityEvent(
                            "db_failover",
                            source="gap_handler",
                            message=f"the primary is now {server} (was {previous})",
                            details={"from": previous, "to": server, "instance": me},
                        )
                        await log_event(conn, failover)
                return
            except DB_ERRORS as exc:
                delay = next(delays)
                log.warning("leader_changed_not_recorded", error=describe(exc), retry_in_s=round(delay, 2))
                await asyncio.sleep(delay)

    def stop(self) -> None:
        self._stop.set()
        self.backfills.stop()

    async def wait_stopping(self) -> None:
        await self._stop.wait()

    async def health(self) -> HealthReport:
        try:
            async with asyncio.timeout(2):
                await self.pool.fetchval("SELECT 1")
            database_connected = True
        except _HEALTH_ERRORS:
            database_connected = False
        rate = self.fetcher.rate_state()
        b = self.backfills
        return build_health(
            HealthInputs(
                database_connected=database_connected,
                rate=rate,
                rate_until=self.fetcher.until_wall(rate),
                listener_connected=self.listener.connected,
                role=self.leadership.role,
                election_connected=self.leadership.connected,
                exchange_clock=self.clock.health(),
                backfills_completed=b.backfills_completed,
                candles_recovered=b.candles_recovered,
                backfills_in_flight=sum(len(v) for v in b.running.values()),
                backfills_queued=b.queue.qsize(),
                last_scan_at=b.last_scan_at,
                last_scan_s=b.last_scan_s,
                automation=self.schema.automation,
            )
        )


async def _any(task: asyncio.Task[None], *events: asyncio.Event) -> None:
    """Return once ``task`` is done or one of ``events`` is set."""
    waiters = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait([task, *waiters], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def assemble(
    settings: GapHandlerSettings,
    resources: Resources,
    *,
    registry: CollectorRegistry,
    now_ms: NowMs | None = None,
) -> GapHandler:
    """Every part of the gap handler on the process's resources, ready to run.
    ``now_ms``: the local clock (default :func:`quaint.service.clock.steady_clock`)."""
    handler = GapHandler(settings, resources, registry=registry, now_ms=now_ms or steady_clock())
    await handler.prepare()
    return handler


def spec(
    settings: GapHandlerSettings,
    *,
    registry: CollectorRegistry | None = None,
    now_ms: NowMs | None = None,
) -> ServiceSpec[GapHandler]:
    """What :func:`quaint.service.lifecycle.serve` needs to run the gap handler."""
    registry = registry or CollectorRegistry()

    async def build(resources: Resources) -> GapHandler:
        return await assemble(settings, resources, registry=registry, now_ms=now_ms)

    return ServiceSpec(
        name="gap_handler",
        settings=settings,
        host=settings.gap_handler_host,
        port=settings.gap_handler_port,
        key=GAP_HANDLER_KEY,
        assemble=build,
        registry=registry,
        shutdown_deadline_s=settings.shutdown_deadline_s,
        routes=[*ROUTES, *KLINES_ROUTES],
    )
