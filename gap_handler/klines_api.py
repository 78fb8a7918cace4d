"""A Binance-compatible read API over the stored history: ``GET /api/v3/klines`` (1m and
the rollups 5m..1d), ``/api/v3/exchangeInfo`` (the symbols stored), ``/api/v3/time`` and
``/api/v3/ping``, so Binance clients (ccxt, python-binance, binance-sdk-spot) can read the
local history unchanged.

Read-only and answered only from the database: missing minutes are missing, as on
Binance. No admin token; each client address gets a token bucket (KLINES_API_RATE_PER_S,
KLINES_API_BURST) and, beyond it, Binance's 429 with code -1003 and Retry-After. Request
rules: :mod:`gap_handler.core.klines`; SQL: :mod:`quaint.store.rollups`.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from gap_handler.api import GAP_HANDLER_KEY
from gap_handler.core.klines import TOO_MANY_REQUESTS, parse_klines_request
from quaint.binance.encode import rest_kline_row
from quaint.binance.exchange_info import exchange_info
from quaint.binance.models import ApiError, Candle
from quaint.binance.rules import parse_exchange_info
from quaint.binance.symbols import SymbolProfile, split_symbol
from quaint.store.errors import DB_ERRORS
from quaint.store.rollups import Bar, fetch_bars, stored_symbols

_UNAVAILABLE = ApiError(-1001, "Internal error; unable to process your request. Please try again.")


def _json(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body),
        status=status,
        headers=headers,
        content_type="application/json",
        charset="UTF-8",
    )


def _error(err: ApiError, status: int = 400, headers: dict[str, str] | None = None) -> web.Response:
    return _json({"code": err.code, "msg": err.msg}, status, headers)


def _limited(request: web.Request) -> web.Response | None:
    verdict = request.app[GAP_HANDLER_KEY].klines_buckets.charge(
        request.remote or "unknown", time.monotonic()
    )
    if verdict.allowed:
        return None
    return _error(TOO_MANY_REQUESTS, 429, {"Retry-After": str(verdict.retry_after_s)})


def _row(bar: Bar) -> list[Any]:
    # Binance's shape and 8-decimal strings, from the one encoder the simulator uses too.
    # Binance has no nulls: a column stored as NULL reads as 0.
    zero = Decimal(0)
    return rest_kline_row(
        Candle(
            symbol=bar.symbol,
            open_time=bar.open_time,
            close_time=bar.close_time,
            open=bar.open,
            high=bar.high,
            low=bar.low,
            close=bar.close,
            volume=bar.volume,
            quote_asset_volume=bar.quote_asset_volume if bar.quote_asset_volume is not None else zero,
            number_of_trades=bar.number_of_trades or 0,
            taker_buy_base_asset_volume=(
                bar.taker_buy_base_asset_volume if bar.taker_buy_base_asset_volume is not None else zero
            ),
            taker_buy_quote_asset_volume=(
                bar.taker_buy_quote_asset_volume if bar.taker_buy_quote_asset_volume is not None else zero
            ),
        )
    )


async def klines(request: web.Request) -> web.Response:
    if (limited := _limited(request)) is not None:
        return limited
    handler = request.app[GAP_HANDLER_KEY]
    try:
        async with handler.pool.acquire() as conn:
            symbols = frozenset(await stored_symbols(conn))
            query = parse_klines_request(request.query, symbols, request.headers.get("X-MBX-TIME-UNIT"))
            if isinstance(query, ApiError):
                return _error(query)
            lo, hi, from_end = query.window(handler.now_ms())
            bars = await fetch_bars(conn, query.symbol, query.interval, lo, hi, query.limit, newest=from_end)
    except DB_ERRORS:
        return _error(_UNAVAILABLE, 503)
    rows = [_row(b) for b in bars]
    if query.micros:
        for row in rows:
            row[0] = row[0] * 1000
            row[6] = row[6] * 1000 + 999
    return _json(rows)


def _profile(symbol: str) -> SymbolProfile:
    # Stored rows say nothing of tick or lot sizes: the finest (1e-8) is reported.
    base, quote = split_symbol(symbol)
    return SymbolProfile(symbol, base, quote, 0.0, 1, 1, 0.0, 0.0, 0.0, 0)


async def get_exchange_info(request: web.Request) -> web.Response:
    if (limited := _limited(request)) is not None:
        return limited
    handler = request.app[GAP_HANDLER_KEY]
    try:
        async with handler.pool.acquire() as conn:
            symbols = await stored_symbols(conn)
    except DB_ERRORS:
        return _error(_UNAVAILABLE, 503)
    wanted = parse_exchange_info(request.query, frozenset(symbols))
    if isinstance(wanted, ApiError):
        return _error(wanted)
    # The local API's own limit, stated as Binance states its per-minute weight.
    per_minute = int(60 * handler.settings.klines_api_rate_per_s)
    return _json(exchange_info([_profile(s) for s in wanted], handler.now_ms(), per_minute))


async def server_time(request: web.Request) -> web.Response:
    if (limited := _limited(request)) is not None:
        return limited
    return _json({"serverTime": request.app[GAP_HANDLER_KEY].now_ms()})


async def ping(request: web.Request) -> web.Response:
    if (limited := _limited(request)) is not None:
        return limited
    return _json({})


KLINES_ROUTES = [
    web.get("/api/v3/ping", ping),
    web.get("/api/v3/time", server_time),
    web.get("/api/v3/exchangeInfo", get_exchange_info),
    web.get("/api/v3/klines", klines),
    web.get("/api/v3/uiKlines", klines),
]
