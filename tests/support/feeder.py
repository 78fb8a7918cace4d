"""Test support for the feeder: builders of candles, ticks and wire frames (pure)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import asyncpg
import orjson
from prometheus_client.parser import text_string_to_metric_families

from feeder.service import Feeder, spec
from feeder.settings import FeederSettings
from quaint.binance.encode import (
    book_ticker_payload,
    book_ticker_stream,
    combined,
    kline_event_payload,
    kline_stream,
)
from quaint.binance.models import MINUTE_MS, BookTick, Candle
from quaint.service.settings import db_fields_from_url
from quaint.store.candles import fetch_candles, upsert_candles
from quaint.store.pool import prepare_connection
from tests.support.services import Served, served
from tests.support.simulator import SimHandle, running_simulator
from tests.support.waiting import wait_for, wait_until

T0 = 1_763_985_600_000  # 2025-11-24T12:00:00Z, a minute boundary


def candle(
    minute: int,
    close: float | str | Decimal = 100,
    *,
    symbol: str = "BTCUSDT",
    open_: float | str | Decimal | None = None,
    volume: float | str | Decimal = 1,
    quote: float | str | None = None,
    trades: int = 10,
    taker: float | str | None = None,
) -> Candle:
    t = T0 + minute * MINUTE_MS
    c = Decimal(str(close))
    o = Decimal(str(open_)) if open_ is not None else c
    v = Decimal(str(volume))
    return Candle(
        symbol=symbol,
        open_time=t,
        close_time=t + MINUTE_MS - 1,
        open=o,
        high=max(o, c),
        low=min(o, c),
        close=c,
        volume=v,
        quote_asset_volume=Decimal(str(quote)) if quote is not None else v * c,
        number_of_trades=trades,
        taker_buy_base_asset_volume=Decimal(str(taker)) if taker is not None else v / 2,
        taker_buy_quote_asset_volume=(Decimal(str(taker)) if taker is not None else v / 2) * c,
    )


def tick(
    update_id: int,
    received_at: int = T0,
    *,
    symbol: str = "BTCUSDT",
    bid: str = "99.99",
    ask: str = "100.01",
    bid_qty: str = "3",
    ask_qty: str = "1",
) -> BookTick:
    return BookTick(
        symbol=symbol,
        update_id=update_id,
        bid_price=Decimal(bid),
        bid_qty=Decimal(bid_qty),
        ask_price=Decimal(ask),
        ask_qty=Decimal(ask_qty),
        received_at=received_at,
    )


def kline_frame(c: Candle, *, closed: bool = True, **overrides: Any) -> bytes:
    payload = kline_event_payload(
        c, event_time=c.close_time + 1400, is_closed=closed, first_trade_id=1, last_trade_id=2
    )
    payload["k"].update(overrides)
    return orjson.dumps(combined(kline_stream(c.symbol), payload))


def book_frame(t: BookTick) -> bytes:
    return orjson.dumps(combined(book_ticker_stream(t.symbol), book_ticker_payload(t)))


# ---- running a whole feeder in the test's event loop ----


def settings_for(db_url: str, ws_url: str, **overrides: Any) -> FeederSettings:
    """Feeder settings for a test database and simulator; wall-time knobs shrunk for a
    simulator at speed 60 (1 simulated minute = 1 wall second)."""
    values: dict[str, Any] = {
        **db_fields_from_url(db_url),
        "db_connect_timeout_s": 20,
        "binance_ws_url": ws_url,
        "feeder_host": "127.0.0.1",
        "feeder_port": 0,
        "symbols": ["BTCUSDT"],
        "websocket_reconnect_interval_s": 0.2,
        "websocket_reconnect_max_s": 1.0,
        "stale_stream_timeout_s": 2.5,  # 2.5 simulated minutes at speed 60
        "batch_timeout_ms": 100,
        "feature_cache_interval_s": 0.3,
        "db_retry_interval_s": 0.2,
        "db_retry_max_s": 1.0,
        "shutdown_flush_timeout_s": 5.0,
        "use_uvloop": False,
        "log_format": "json",
    }
    values.update(overrides)
    return FeederSettings(**values)


@dataclass
class FeederHandle:
    served: Served[Feeder]

    @property
    def feeder(self) -> Feeder:
        return self.served.service

    @property
    def port(self) -> int:
        return self.served.port

    @property
    def task(self) -> asyncio.Task[int]:
        return self.served.task

    @property
    def url(self) -> str:
        return self.served.url

    async def get(self, path: str) -> tuple[int, bytes]:
        async with aiohttp.ClientSession() as session, session.get(self.url + path) as resp:
            return resp.status, await resp.read()

    async def health(self) -> tuple[int, dict[str, Any]]:
        status, body = await self.get("/health")
        return status, orjson.loads(body)

    async def shutdown(self) -> int:
        return await self.served.shutdown()


@asynccontextmanager
async def running_feeder(settings: FeederSettings, **feeder_kwargs: Any) -> AsyncIterator[FeederHandle]:
    """The feeder run by ``serve()`` in this loop (``feeder_kwargs``: the clocks and
    factories :func:`feeder.service.spec` takes); on exit stopped as SIGTERM would."""
    async with served(spec(settings, **feeder_kwargs)) as handle:
        yield FeederHandle(handle)


# ---- end-to-end helpers: the simulator, the database, metrics ----

SIM_START = 1_763_985_600_000 + 5_000  # 2025-11-24T12:00:05Z: 5 s into a minute
SIM_SPEED = 60.0  # one simulated minute per wall second
HISTORY_MINUTES = 120  # stored before the feeder starts: features are warm from the first live minute


def minute_of(ms: int) -> int:
    return ms - ms % MINUTE_MS


async def connect(db_url: str) -> asyncpg.Connection:
    """A connection set up like the services' (JSONB as Python objects)."""
    conn = await asyncpg.connect(db_url)
    await prepare_connection(conn)
    return conn


async def stored_candles(db_url: str, symbol: str, start: int, end: int) -> list[Candle]:
    conn = await connect(db_url)
    try:
        return await fetch_candles(conn, symbol, start, end)
    finally:
        await conn.close()


async def wait_stored(db_url: str, sim: SimHandle, symbols: list[str], start: int, end: int) -> None:
    """Until every candle the exchange has for [start, end) is stored, per symbol."""

    async def complete() -> bool:
        for sym in symbols:
            if len(await stored_candles(db_url, sym, start, end)) < len(sim.truth(sym, start, end)):
                return False
        return True

    await wait_for(complete, 30, f"candles in [{start}, {end}) stored")


async def until_sim(sim: SimHandle, ms: int, within: float = 60) -> None:
    await wait_until(lambda: sim.clock.now_ms() >= ms, within, f"simulated time {ms}")


async def quality_rows(db_url: str, event_type: str) -> list[asyncpg.Record]:
    conn = await connect(db_url)
    try:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT symbol, gap_start, gap_end, candles_missing, source, resolved, message, details"
            " FROM data_quality_logs WHERE event_type = $1 ORDER BY symbol, gap_start, id",
            event_type,
        )
    finally:
        await conn.close()
    return rows


@asynccontextmanager
async def gap_notifications(db_url: str) -> AsyncIterator[list[dict[str, Any]]]:
    """Collect the payloads of ``NOTIFY quaint_gaps`` while the block runs."""
    got: list[dict[str, Any]] = []
    conn = await asyncpg.connect(db_url)

    def on_notify(_c: object, _pid: int, _channel: str, payload: object) -> None:
        got.append(orjson.loads(str(payload)))

    await conn.add_listener("quaint_gaps", on_notify)
    try:
        yield got
    finally:
        await conn.close()


def metric_value(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus exposition (``KeyError`` if absent)."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    raise KeyError(f"{name}{labels}")


@asynccontextmanager
async def sim_and_feeder(
    db_url: str,
    symbols: list[str],
    *,
    sim: dict[str, Any] | None = None,
    feeder: dict[str, Any] | None = None,
    unstored_minutes: int = 0,
    feeder_symbols: list[str] | None = None,
    **settings: Any,
) -> AsyncIterator[tuple[SimHandle, FeederHandle]]:
    """A frozen simulator, ``HISTORY_MINUTES`` of its history in the database, a feeder
    connected to it; then simulated time runs at ``SIM_SPEED``. So no minute is lost
    to start-up by accident, and the first live minute is ``minute_of(SIM_START)``.
    ``unstored_minutes``: leave that many minutes before the first live one unstored
    (as if the feeder had been down). ``feeder_symbols``: the feeder's SYMBOLS (patterns), if
    not ``symbols``."""
    sim_args = {"start": SIM_START, "speed": 0, "symbols": symbols, "history_days": 1, **(sim or {})}
    async with running_simulator(**sim_args) as s:
        first_live = minute_of(SIM_START)
        conn = await connect(db_url)
        try:
            for sym in symbols:
                history_end = first_live - unstored_minutes * MINUTE_MS
                history = s.truth(sym, history_end - HISTORY_MINUTES * MINUTE_MS, history_end)
                await upsert_candles(conn, history, "rest")
        finally:
            await conn.close()
        async with running_feeder(
            settings_for(
                db_url, s.ws_url, symbols=feeder_symbols or symbols, binance_rest_url=s.rest_url, **settings
            ),
            **(feeder or {}),
        ) as f:
            planned = len(f.feeder.plans)
            await wait_until(lambda: len(s.state.hub.connections) >= planned, 10, "feeder connected")
            s.clock.set(speed=SIM_SPEED)
            yield s, f
