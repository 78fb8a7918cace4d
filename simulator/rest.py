"""REST endpoints under ``/api/v3`` (thin shell over ``rules`` and ``exchange``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from quaint.binance.encode import rest_kline_row
from quaint.binance.exchange_info import exchange_info
from quaint.binance.models import ApiError
from quaint.binance.rules import INVALID_SYMBOL, WEIGHTS, parse_exchange_info, parse_klines
from simulator.state import STATE

_JSON = "application/json;charset=UTF-8"
_INTERNAL = ApiError(-1001, "Internal error; unable to process your request. Please try again.")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_bytes(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=body, status=status, headers=headers, content_type="application/json", charset="UTF-8"
    )


def api_error(err: ApiError, status: int = 400, headers: dict[str, str] | None = None) -> web.Response:
    return json_bytes(orjson.dumps({"code": err.code, "msg": err.msg}), status, headers)


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Counting, injected latency and failures, and request-weight limits for /api/."""
    if not request.path.startswith("/api/"):
        return await handler(request)
    state = request.app[STATE]
    faults = state.faults
    state.stats.record_request(request.path, state.clock.wall())
    if faults.rest_latency_s > 0:
        await asyncio.sleep(faults.rest_latency_s)  # injected latency, by design
    response = await _guarded(request, handler)
    state.stats.record_status(response.status)
    return response


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[STATE]
    faults, limiter = state.faults, state.limiter
    injected = faults.next_rest_fault(request.path)
    if injected is not None:
        if injected.status == 429:
            return api_error(limiter.too_much_weight(), 429, {"Retry-After": str(injected.retry_after_s)})
        return api_error(_INTERNAL, injected.status)
    ip = request.remote or "unknown"
    now_ms = int(state.clock.wall() * 1000)
    verdict = limiter.charge(ip, WEIGHTS.get(request.path, 1), now_ms)
    headers = {
        "X-MBX-USED-WEIGHT-1M": str(verdict.used_weight),
        "X-MBX-USED-WEIGHT": str(verdict.used_weight),
    }
    if verdict.status == 418:
        headers["Retry-After"] = str(verdict.retry_after_s)
        return api_error(
            limiter.banned(limiter.banned_until(ip) + state.clock.now_ms() - now_ms), 418, headers
        )
    if verdict.status == 429:
        headers["Retry-After"] = str(verdict.retry_after_s)
        return api_error(limiter.too_much_weight(), 429, headers)
    response = await handler(request)
    response.headers.update(headers)
    return response


async def ping(request: web.Request) -> web.Response:
    return json_bytes(b"{}")


async def server_time(request: web.Request) -> web.Response:
    return json_bytes(orjson.dumps({"serverTime": request.app[STATE].clock.now_ms()}))


async def get_exchange_info(request: web.Request) -> web.Response:
    state = request.app[STATE]
    wanted = parse_exchange_info(request.query, state.symbol_set)
    if isinstance(wanted, ApiError):
        return api_error(wanted)
    now, calendar = state.clock.now_ms(), state.exchange.calendar
    # Not listed yet, or delisted: absent, as from Binance's answer (asked by name: invalid symbol).
    listed = [s for s in wanted if calendar.listed(s, now)]
    if ("symbol" in request.query or "symbols" in request.query) and len(listed) < len(wanted):
        return api_error(INVALID_SYMBOL)
    profiles = [state.market.profiles[s] for s in listed]
    body = exchange_info(
        profiles, now, state.settings.weight_limit, [calendar.status(s, now) for s in listed]
    )
    return json_bytes(orjson.dumps(body))


async def klines(request: web.Request) -> web.Response:
    state = request.app[STATE]
    query = parse_klines(request.query, state.symbol_set, request.headers.get("X-MBX-TIME-UNIT"))
    if isinstance(query, ApiError):
        return api_error(query)
    now = state.clock.now_ms()
    lo, hi, from_end = query.window(now)
    candles = state.exchange.klines(query.symbol, lo, hi, query.limit, from_end=from_end, now_ms=now)
    if candles:
        state.stats.record_klines(query.symbol, candles[0].open_time, candles[-1].open_time)
    rows = [rest_kline_row(c) for c in candles]
    if query.micros:
        for row in rows:
            row[0] = row[0] * 1000
            row[6] = row[6] * 1000 + 999
    return json_bytes(orjson.dumps(rows))


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v3/ping", ping)
    app.router.add_get("/api/v3/time", server_time)
    app.router.add_get("/api/v3/exchangeInfo", get_exchange_info)
    app.router.add_get("/api/v3/klines", klines)
    app.router.add_get("/api/v3/uiKlines", klines)
