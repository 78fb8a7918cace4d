"""One lifecycle for both services: :func:`serve` starts, serves and stops the feeder and
the gap handler alike. Each service names what it needs in a :class:`ServiceSpec`
(built by its ``service.spec()``); ``main()`` loads the settings, sets up logging and
runs ``serve(spec)``.

In order:

1. The HTTP address (``<NAME>_HOST``/``<NAME>_PORT``) is bound, not yet listening: a
   port in use is one line naming the variable and exit 2, before anything starts;
   until step 4 connections are refused, not left waiting.
2. The aiohttp app's ``cleanup_ctx`` opens the process's resources: one asyncpg pool
   (an unreachable database retried for ``DB_CONNECT_TIMEOUT_S``), the schema applied,
   one ``aiohttp.ClientSession``, all kept under :data:`RESOURCES_KEY`. A database that
   cannot be used (unreachable, credentials refused, no such database, no TimescaleDB)
   is one ``startup_failed`` line and exit 3, for both services.
3. The service is assembled on them (``spec.assemble``), kept under ``spec.key``, and
   its ``run()`` started: every background task in one TaskGroup.
4. The site listens: ``/health``, ``/metrics`` and the service's routes.
5. SIGTERM/SIGINT (or ``stop``), or the service stopping itself: the site closes,
   ``service.stop()`` stops intake, ``run()`` flushes and returns; if
   ``spec.shutdown_deadline_s`` passes first it is cancelled (the service logs what that
   cost). Then the session and the pool close. A stop during step 2 ends it at once.

Exit codes: 0 stopped when asked; 1 the service stopped by itself (``fatal``: nothing
can ever work) or crashed (a bug); 2 bad configuration (settings, the HTTP address, or a
``DATA_ORIGIN`` the database's marker disagrees with);
3 the database not usable at start.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import aiohttp
import asyncpg
import structlog
from aiohttp import web
from prometheus_client import CollectorRegistry

from quaint.service.health import HealthReport
from quaint.service.http import create_service_app
from quaint.service.retry import jittered_backoff
from quaint.service.runtime import freeze_start_up_heap, install_stop_signals
from quaint.service.settings import Settings
from quaint.store.errors import CONNECTION_LOST_ERRORS, DB_ERRORS, DbErrorClass, classify_db_error, describe
from quaint.store.origin import OriginClaim, claim_origin
from quaint.store.pool import DatabaseUnavailable, close_pool, create_pool
from quaint.store.schema import SchemaInfo, TimescaleUnavailable, apply_schema, log_schema_info

log = structlog.get_logger(__name__)

EXIT_STOPPED = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2
EXIT_DATABASE_UNAVAILABLE = 3

# What start-up (pool, schema, the service's own first reads) raises when the database
# cannot be used; anything else is a bug and keeps its traceback.
START_ERRORS: tuple[type[BaseException], ...] = (
    DatabaseUnavailable,
    TimescaleUnavailable,
    asyncpg.PostgresError,
    *CONNECTION_LOST_ERRORS,
)


class DataOriginMismatch(Exception):
    """DATA_ORIGIN disagrees with what the database says fed it: bad configuration (exit 2)."""


def check_origin(wanted: str, claim: OriginClaim) -> None:
    """Refuse to mix simulated and real candles in one database."""
    if claim.stored != wanted:
        raise DataOriginMismatch(
            f"DATA_ORIGIN: this service is configured for {wanted} market data, but the database holds "
            f"{claim.stored} data (its data_origin marker); give each its own database "
            f"(./cleanup.sh [--local] --volumes deletes it) or set DATA_ORIGIN={claim.stored}"
        )
    if claim.claimed_now:
        log.info("data_origin_marked", origin=wanted, candles_already_stored=claim.had_rows)


@dataclass(frozen=True, slots=True)
class Resources:
    """What a process holds once: the pool, the HTTP client session, the schema's facts."""

    pool: asyncpg.Pool
    session: aiohttp.ClientSession
    schema: SchemaInfo


class Service(Protocol):
    """What :func:`serve` runs (``feeder.service.Feeder``, ``gap_handler.service.GapHandler``)."""

    @property
    def fatal(self) -> str | None:
        """Why the service stopped itself (nothing can ever work), else None."""

    async def run(self) -> None:
        """Every background task, in one TaskGroup, until :meth:`stop`; then flush and return."""

    def stop(self) -> None:
        """Stop intake (idempotent); :meth:`run` then flushes and returns."""

    async def wait_stopping(self) -> None:
        """Return once :meth:`stop` was called, by :func:`serve` or by the service itself."""

    async def health(self) -> HealthReport: ...


S = TypeVar("S", bound=Service)


@dataclass(frozen=True, slots=True)
class ServiceSpec(Generic[S]):
    name: str  # "feeder", "gap_handler": the prefix of its log events and of its HOST/PORT variables
    settings: Settings
    host: str
    port: int
    key: web.AppKey[S]  # where the app keeps the service (its routes read it there)
    assemble: Callable[[Resources], Awaitable[S]]  # build the service on the process's resources
    registry: CollectorRegistry
    shutdown_deadline_s: float  # from stop() to the end of the flush
    routes: Sequence[web.AbstractRouteDef] = ()


RESOURCES_KEY = web.AppKey("resources", Resources)
RUN_KEY: web.AppKey[asyncio.Task[None]] = web.AppKey("run")


@asynccontextmanager
async def open_resources(settings: Settings) -> AsyncIterator[Resources]:
    """The process's pool (retried while the database is unreachable, see
    :func:`quaint.store.pool.create_pool`) with the schema applied, and its one
    ``ClientSession``; closed in reverse order. Also what the one-shot CLI runs on."""
    pool = await create_pool(settings)
    try:
        schema, origin = await _prepare_database(pool, settings)
        log_schema_info(schema)
        check_origin(settings.data_origin, origin)
        async with aiohttp.ClientSession(raise_for_status=False) as session:
            yield Resources(pool, session, schema)
    finally:
        await close_pool(pool)


async def _prepare_database(
    pool: asyncpg.Pool, settings: Settings, delays: Iterator[float] | None = None
) -> tuple[SchemaInfo, OriginClaim]:
    """Apply the schema and claim the data origin. A database that goes away meanwhile
    (restarted, connection cut: the pool already reached it once) is retried like an
    unreachable one, for ``DB_CONNECT_TIMEOUT_S``; anything else fails the start."""
    deadline = time.monotonic() + settings.db_connect_timeout_s
    delays = delays or jittered_backoff(0.5, 5.0)
    while True:
        try:
            async with pool.acquire() as conn:
                schema = await apply_schema(conn)
                origin = await claim_origin(conn, settings.data_origin)
            return schema, origin
        except DB_ERRORS as exc:
            kind = classify_db_error(exc)
            if kind not in (DbErrorClass.CONNECTION_LOST, DbErrorClass.TRANSIENT):
                raise
            delay = next(delays)
            if time.monotonic() + delay >= deadline:
                raise
            log.warning("schema_retry", error=describe(exc), retry_in_s=round(delay, 2))
            await asyncio.sleep(delay)


async def _health_of(service: Service, query: Mapping[str, str]) -> HealthReport:
    """The service's report; with query parameters, its detailed one if it has one
    (the feeder's ``health_detail``: per-symbol detail on request)."""
    detailed = getattr(service, "health_detail", None)
    if query and detailed is not None:
        report: HealthReport = await detailed(query)
        return report
    return await service.health()


def build_app(spec: ServiceSpec[S]) -> web.Application:
    """The service's app: ``/health`` (the service's own report), ``/metrics``, its routes,
    and the cleanup contexts that open the resources and run the service."""
    app = create_service_app(spec.registry, lambda query: _health_of(app[spec.key], query))

    async def resources_ctx(app: web.Application) -> AsyncIterator[None]:
        async with open_resources(spec.settings) as resources:
            app[RESOURCES_KEY] = resources
            yield

    async def service_ctx(app: web.Application) -> AsyncIterator[None]:
        service = await spec.assemble(app[RESOURCES_KEY])
        app[spec.key] = service
        task = asyncio.create_task(service.run(), name=spec.name)
        app[RUN_KEY] = task
        yield
        await stop_within(service, task, spec.shutdown_deadline_s, spec.name)

    app.add_routes(spec.routes)
    app.cleanup_ctx.extend([resources_ctx, service_ctx])
    return app


async def stop_within(service: Service, task: asyncio.Task[None], deadline_s: float, name: str) -> None:
    """Stop ``service`` and wait for its ``run()`` (``task``); cancel it when ``deadline_s``
    passes first. The task's outcome is left to the caller."""
    service.stop()
    done, _ = await asyncio.wait([task], timeout=deadline_s)
    if not done:
        log.error(f"{name}_stop_deadline_passed", deadline_s=deadline_s)
        task.cancel()
        await asyncio.wait([task])


def bound_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` but not listening yet (the site listens on it
    once the service runs). Raises ``OSError`` when the address cannot be had."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


async def _first(task: asyncio.Task[None], *events: Callable[[], Awaitable[object]]) -> bool:
    """Wait until ``task`` is done or one of ``events`` returns; True if the task is done."""
    waiters = [asyncio.ensure_future(event()) for event in events]
    try:
        await asyncio.wait([task, *waiters], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
    return task.done()


async def serve(
    spec: ServiceSpec[S],
    *,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[web.Application, int], None] | None = None,
) -> int:
    """Run the service until ``stop`` is set (default: SIGTERM/SIGINT) or it stops itself;
    returns the exit code. ``on_ready(app, port)`` is called once the site listens. Without
    a ``stop`` of the caller's, it owns the process: its signals, and its start-up heap
    (frozen once listening: :func:`~quaint.service.runtime.freeze_start_up_heap`)."""
    owns_process = stop is None
    if stop is None:
        stop = asyncio.Event()
        install_stop_signals(stop)
    variable = f"{spec.name.upper()}_PORT"
    try:
        sock = bound_socket(spec.host, spec.port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        print(
            f"invalid configuration: {variable}: cannot listen on {spec.host}:{spec.port} ({reason})",
            file=sys.stderr,
        )
        return EXIT_BAD_CONFIG
    app = build_app(spec)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    setup = asyncio.create_task(runner.setup(), name=f"{spec.name}-start")
    try:
        if not await _first(setup, stop.wait):
            setup.cancel()  # stopped while the database was being retried: nothing runs yet
            await asyncio.wait([setup])
            log.info(f"{spec.name}_stopped", during="start-up", exit_code=EXIT_STOPPED)
            return EXIT_STOPPED
        error = setup.exception()
        if isinstance(error, DataOriginMismatch):
            print(f"invalid configuration: {error}", file=sys.stderr)
            return EXIT_BAD_CONFIG
        if isinstance(error, START_ERRORS):
            log.error("startup_failed", service=spec.name, error=describe(error))
            return EXIT_DATABASE_UNAVAILABLE
        if error is not None:
            raise error
        await web.SockSite(runner, sock).start()
        port = int(sock.getsockname()[1])
        log.info(f"{spec.name}_http_listening", host=spec.host, port=port)
        if owns_process:
            freeze_start_up_heap()
        if on_ready is not None:
            on_ready(app, port)
        await _first(app[RUN_KEY], stop.wait, app[spec.key].wait_stopping)
    finally:
        if not setup.done():  # serve() itself cancelled during start-up
            setup.cancel()
            await asyncio.wait([setup])
        await runner.cleanup()  # the site, then the service (stop, flush), then session and pool
        sock.close()
    code = _exit_code(spec, app)
    log.info(f"{spec.name}_stopped", exit_code=code)
    return code


def _exit_code(spec: ServiceSpec[S], app: web.Application) -> int:
    task = app[RUN_KEY]
    if task.cancelled():  # the shutdown deadline passed (logged): stopped all the same
        return EXIT_STOPPED
    error = task.exception()
    if error is not None:
        log.error(f"{spec.name}_failed", exc_info=error)
        return EXIT_FAILED
    return EXIT_STOPPED if app[spec.key].fatal is None else EXIT_FAILED
