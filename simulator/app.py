"""The aiohttp application: ``create_app(settings)`` wires state, routes and the
background publishers (owned by one TaskGroup inside a cleanup context)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web

from quaint.binance.encode import book_ticker_stream
from quaint.binance.models import Candle
from quaint.binance.rules import WeightLimiter
from simulator import archive, control, rest
from simulator.clock import LiveClock
from simulator.exchange import Exchange
from simulator.faults import FaultController, parse_archive_fault
from simulator.hub import Hub
from simulator.listings import MAX_BOOK_PERIOD, Calendar, book_period, split_event
from simulator.market import MarketModel
from simulator.replay import load_csv
from simulator.schedule import BookSequencer, KlineScheduler
from simulator.settings import SimSettings, resolve_instant, resolve_range
from simulator.state import STATE, SimState
from simulator.stats import Stats
from simulator.ws import handle_ws

log = structlog.get_logger(__name__)
_DAY_MS = 86_400_000
_SHUTDOWN_GRACE_S = 1.5


def build_calendar(settings: SimSettings, start: int) -> Calendar:
    calendar = Calendar()
    for spec in settings.listing:
        symbol, when = split_event(spec)
        calendar.list_at(symbol, resolve_instant(when, start))
    for spec in settings.delisting:
        symbol, when = split_event(spec)
        calendar.delist_at(symbol, resolve_instant(when, start))
    for spec in settings.halt:
        symbol, span = split_event(spec)
        calendar.halt(symbol, *resolve_range(span, start))
    return calendar


def build_state(settings: SimSettings, time_source: Callable[[], float] = time.monotonic) -> SimState:
    replay: dict[str, dict[int, Candle]] = {}
    if settings.replay_csv is not None and settings.replay_symbol is not None:
        replay[settings.replay_symbol] = load_csv(settings.replay_csv, settings.replay_symbol)
    start = settings.start
    if start is None:
        # Replaying a file: start where the file starts, so the stream plays it.
        start = min(min(rows) for rows in replay.values()) if replay else int(time.time() * 1000)
    clock = LiveClock(start, settings.speed, time_source)
    market = MarketModel(settings.seed, settings.symbols, replay)
    faults = FaultController(seed=settings.seed)
    for spec in settings.feed_gap:
        faults.add_feed_gap(*resolve_range(spec, start))
    for spec in settings.outage:
        faults.add_outage(*resolve_range(spec, start))
    for name in ("duplicate", "reorder", "malformed"):
        count, probability = getattr(settings, name), getattr(settings, f"{name}_probability")
        if count or probability:
            faults.set_message_fault(name, {"count": count, "probability": probability})
    if settings.rest_429:
        faults.add_rest_fault(429, settings.rest_429, settings.rest_retry_after_s)
    if settings.rest_5xx:
        faults.add_rest_fault(settings.rest_5xx_status, settings.rest_5xx, settings.rest_retry_after_s)
    faults.set_latency(settings.rest_latency_s)
    for spec in settings.archive_fault:
        kind, file = parse_archive_fault(spec)
        faults.archive.add(kind, file)
    faults.archive.set_speed(settings.archive_latency_s, settings.archive_bytes_per_s)
    exchange = Exchange(
        market,
        faults,
        history_ms=int(settings.history_days * _DAY_MS),
        calendar=build_calendar(settings, start),
    )
    now = clock.now_ms()
    return SimState(
        settings=settings,
        clock=clock,
        market=market,
        faults=faults,
        exchange=exchange,
        hub=Hub(faults, clock),
        stats=Stats(clock.wall()),
        limiter=WeightLimiter(
            settings.weight_limit,
            window_ms=int(settings.weight_window_s * 1000),
            ban_after=settings.ban_after,
            ban_ms=int(settings.ban_s * 1000),
        ),
        klines=KlineScheduler(exchange, now, settings.final_delay_ms),
        books=BookSequencer(exchange, now),
    )


def create_app(
    settings: SimSettings, *, time_source: Callable[[], float] = time.monotonic
) -> web.Application:
    """The whole simulator (REST, WebSocket, control API) as one aiohttp app."""
    app = web.Application(middlewares=[control.control_errors, rest.api_middleware])
    state = build_state(settings, time_source)
    app[STATE] = state
    state.clock.on_change(state.clock_changed.set)
    rest.add_routes(app)
    control.add_routes(app)
    archive.add_routes(app)
    app.router.add_get("/ws", handle_ws)
    app.router.add_get("/ws/{streams:.+}", handle_ws)
    app.router.add_get("/stream", handle_ws)
    app.cleanup_ctx.append(_background)
    app.on_shutdown.append(_close_sockets)
    return app


async def _background(app: web.Application) -> AsyncIterator[None]:
    task = asyncio.create_task(_run_publishers(app[STATE]), name="simulator-publishers")
    yield
    task.cancel()
    await asyncio.wait([task])  # wait for it to finish; never swallow our own cancellation
    if not task.cancelled() and task.exception() is not None:
        log.error("publishers_failed", error=repr(task.exception()))


async def _run_publishers(state: SimState) -> None:
    s = state.settings
    async with asyncio.TaskGroup() as tg:
        tg.create_task(_kline_loop(state))
        if s.book_rate > 0 and not s.firehose:
            tg.create_task(_book_loop(state))
        if s.drop_every_s:
            tg.create_task(_every(state, s.drop_every_s, lambda: state.faults.drop_connections("abort")))
        if s.stall_every_s:
            tg.create_task(
                _every(state, s.stall_every_s, lambda: state.faults.stall(s.stall_s, state.clock.wall()))
            )


async def _kline_loop(state: SimState) -> None:
    clock, hub = state.clock, state.hub
    while True:
        for pub in state.klines.due(clock.now_ms(), hub.has_subscribers):
            hub.publish(pub.stream, pub.payload, "kline_closed" if pub.closed else "kline")
        delay = clock.wall_delay(state.klines.next_due_ms())
        if delay <= 0:
            await asyncio.sleep(0)  # still catching up after a jump: yield, then continue
            continue
        state.clock_changed.clear()
        with contextlib.suppress(TimeoutError):
            # Sleep until the next event is due, or until the clock is changed.
            await asyncio.wait_for(state.clock_changed.wait(), None if math.isinf(delay) else delay)


def book_rounds(symbols: list[str], skew: bool) -> list[list[tuple[str, str]]]:
    """The symbols the book loop ticks in each of its rounds: all of them every round, or with
    ``--book-skew`` each one every ``book_period(rank)`` rounds (phases spread, so that the
    long tail's updates do not all land in the same round)."""
    if not skew:
        return [[(s, book_ticker_stream(s)) for s in symbols]]
    rounds: list[list[tuple[str, str]]] = [[] for _ in range(MAX_BOOK_PERIOD)]
    for rank, symbol in enumerate(symbols):
        period = book_period(rank)
        for r in range(rank % period, MAX_BOOK_PERIOD, period):
            rounds[r].append((symbol, book_ticker_stream(symbol)))
    return rounds


async def _book_loop(state: SimState) -> None:
    clock, hub = state.clock, state.hub
    interval = 1.0 / state.settings.book_rate
    rounds = book_rounds(state.market.symbols, state.settings.book_skew)
    next_at = clock.wall()
    for round_no in itertools.count():
        now = clock.now_ms()
        for symbol, stream in rounds[round_no % len(rounds)]:
            if hub.has_subscribers(stream):
                payload = state.books.tick(symbol, now)
                if payload is not None:
                    hub.publish(stream, payload, "bookTicker")
        next_at += interval
        delay = next_at - clock.wall()
        if delay < -1.0:
            next_at = clock.wall()  # fell far behind (paused process): do not burst
        await asyncio.sleep(max(0.0, delay))


async def _every(state: SimState, period_s: float, action: Callable[[], object]) -> None:
    while True:
        await asyncio.sleep(period_s)
        action()


async def _close_sockets(app: web.Application) -> None:
    """Close WebSockets politely on shutdown (their handlers would otherwise keep the
    runner waiting), then abort whatever has not gone within the grace period."""
    hub = app[STATE].hub
    for conn in list(hub.connections):
        conn.request_close(1001, "server shutdown")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(hub.idle.wait(), _SHUTDOWN_GRACE_S)
    for conn in list(hub.connections):
        conn.abort("server shutdown")
