"""The control API under ``/_sim/``: faults, truth, stats and clock.

POST bodies are JSON objects; every answer is JSON; bad input -> 400 ``{"error": ...}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import orjson
from aiohttp import web

from quaint.binance.archive import ArchiveFile
from quaint.binance.encode import rest_kline_row
from simulator.faults import FaultError
from simulator.state import STATE


def _ok(body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


def _bad(msg: str) -> web.Response:
    return web.Response(body=orjson.dumps({"error": msg}), status=400, content_type="application/json")


async def _body(request: web.Request) -> Mapping[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FaultError(f"invalid JSON body: {exc.msg}") from None
    if not isinstance(body, dict):
        raise FaultError("body must be a JSON object")
    return body


def _number(body: Mapping[str, Any], key: str, default: float | None = None) -> float:
    value = body.get(key, default)
    if type(value) not in (int, float) or value is None:
        raise FaultError(f"{key} must be a number")
    return float(value)


def _int(body: Mapping[str, Any], key: str, default: int | None = None) -> int:
    value = body.get(key, default)
    if type(value) is not int:
        raise FaultError(f"{key} must be an integer")
    return value


def _query_int(request: web.Request, key: str) -> int:
    raw = request.query.get(key, "")
    if not raw.isdigit():
        raise FaultError(f"query parameter {key} must be integer ms")
    return int(raw)


@web.middleware
async def control_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
    except FaultError as exc:
        return _bad(str(exc))
    return response


async def truth(request: web.Request) -> web.Response:
    state = request.app[STATE]
    symbol = request.query.get("symbol", "").upper()
    if symbol not in state.symbol_set:
        raise FaultError(f"unknown symbol {symbol!r}")
    start, end = _query_int(request, "start"), _query_int(request, "end")
    if end <= start:
        raise FaultError("end must be after start")
    candles = state.exchange.truth(symbol, start, end, state.clock.now_ms())
    return _ok([rest_kline_row(c) for c in candles])


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return _ok(state.stats.snapshot(state.clock.wall()))


async def stats_reset(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.stats.reset(state.clock.wall())
    return _ok({"reset": True})


async def clock(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return _ok({"now": state.clock.now_ms(), "speed": state.clock.speed})


async def set_clock(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _body(request)
    speed = _number(body, "speed") if "speed" in body else None
    advance = _int(body, "advance_ms", 0)
    if speed is not None and not 0 <= speed <= 1_000_000:
        raise FaultError("speed must be within [0, 1000000]")
    try:
        state.clock.set(speed=speed, advance_ms=advance)
    except ValueError as exc:
        raise FaultError(str(exc)) from None
    return _ok({"now": state.clock.now_ms(), "speed": state.clock.speed})


async def drop(request: web.Request) -> web.Response:
    body = await _body(request)
    mode = body.get("mode", "abort")
    dropped = request.app[STATE].faults.drop_connections(str(mode))
    return _ok({"dropped": dropped})


async def stall(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _body(request)
    state.faults.stall(_number(body, "seconds"), state.clock.wall())
    return _ok({"stalled_s": _number(body, "seconds")})


async def shutdown(request: web.Request) -> web.Response:
    body = await _body(request)
    notified = request.app[STATE].faults.server_shutdown(_number(body, "grace_s", 1.0))
    return _ok({"notified": notified})


async def _range(request: web.Request, kind: str) -> web.Response:
    faults = request.app[STATE].faults
    body = await _body(request)
    symbol = body.get("symbol")
    add = faults.add_feed_gap if kind == "feed_gap" else faults.add_outage
    added = add(_int(body, "start"), _int(body, "end"), symbol if symbol is None else str(symbol))
    return _ok({"start": added.start, "end": added.end, "symbol": added.symbol})


async def feed_gap(request: web.Request) -> web.Response:
    return await _range(request, "feed_gap")


async def outage(request: web.Request) -> web.Response:
    return await _range(request, "outage")


async def message_fault(request: web.Request) -> web.Response:
    body = await _body(request)
    fault = request.app[STATE].faults.set_message_fault(request.match_info["name"], body)
    return _ok({"count": fault.count, "probability": fault.probability, "kind": fault.kind})


async def rest_errors(request: web.Request) -> web.Response:
    body = await _body(request)
    fault = request.app[STATE].faults.add_rest_fault(
        _int(body, "status"),
        _int(body, "count", 1),
        _int(body, "retry_after_s", 1),
        str(body.get("path", "/api/")),
    )
    return _ok({"status": fault.status, "count": fault.count, "path": fault.path})


async def rest_latency(request: web.Request) -> web.Response:
    body = await _body(request)
    request.app[STATE].faults.set_latency(_number(body, "seconds"))
    return _ok({"seconds": _number(body, "seconds")})


def _archive_file(request: web.Request, body: Mapping[str, Any]) -> ArchiveFile:
    symbol, label = body.get("symbol"), body.get("file")
    if type(symbol) is not str or symbol.upper() not in request.app[STATE].symbol_set:
        raise FaultError(f"symbol must be one of the served symbols, got {symbol!r}")
    if type(label) is not str:
        raise FaultError("file must be a month YYYY-MM or a day YYYY-MM-DD")
    try:
        return ArchiveFile.parse(symbol.upper(), label)
    except ValueError as exc:
        raise FaultError(str(exc)) from None


def _archive_answer(file: ArchiveFile, fault: Any) -> web.Response:
    return _ok({"symbol": file.symbol, "file": file.label, **asdict(fault)})


async def archive_fault(request: web.Request) -> web.Response:
    body = await _body(request)
    file = _archive_file(request, body)
    rows, count = body.get("rows"), body.get("count")
    fault = request.app[STATE].faults.archive.add(str(body.get("kind")), file, rows=rows, count=count)
    return _archive_answer(file, fault)


async def archive_reupload(request: web.Request) -> web.Response:
    body = await _body(request)
    file = _archive_file(request, body)
    fault = request.app[STATE].faults.archive.reupload(file, str(body.get("when", "now")))
    return _archive_answer(file, fault)


async def archive_latency(request: web.Request) -> web.Response:
    body = await _body(request)
    archive = request.app[STATE].faults.archive
    archive.set_speed(_number(body, "seconds", 0.0), _int(body, "bytes_per_s", 0))
    return _ok({"seconds": archive.latency_s, "bytes_per_s": archive.bytes_per_s})


async def faults_state(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return _ok(state.faults.snapshot(state.clock.wall()))


async def reset(request: web.Request) -> web.Response:
    request.app[STATE].faults.reset()
    return _ok({"reset": True})


def add_routes(app: web.Application) -> None:
    r = app.router
    r.add_get("/_sim/truth", truth)
    r.add_get("/_sim/stats", stats)
    r.add_post("/_sim/stats/reset", stats_reset)
    r.add_get("/_sim/clock", clock)
    r.add_post("/_sim/clock", set_clock)
    r.add_get("/_sim/faults", faults_state)
    r.add_post("/_sim/reset", reset)
    r.add_post("/_sim/drop", drop)
    r.add_post("/_sim/stall", stall)
    r.add_post("/_sim/server_shutdown", shutdown)
    r.add_post("/_sim/feed_gap", feed_gap)
    r.add_post("/_sim/outage", outage)
    r.add_post("/_sim/{name:duplicate|reorder|malformed}", message_fault)
    r.add_post("/_sim/rest_errors", rest_errors)
    r.add_post("/_sim/rest_latency", rest_latency)
    r.add_post("/_sim/archive_fault", archive_fault)
    r.add_post("/_sim/archive_reupload", archive_reupload)
    r.add_post("/_sim/archive_latency", archive_latency)
