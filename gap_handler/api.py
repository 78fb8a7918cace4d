"""HTTP API: /gaps, /backfills, /coverage (``/health`` and ``/metrics`` come with every
service's app, :mod:`quaint.service.http`).

The handlers read the running :class:`gap_handler.service.GapHandler` under
:data:`GAP_HANDLER_KEY`, where :func:`quaint.service.lifecycle.serve` keeps it.
"""

from __future__ import annotations

import hmac
import time
from typing import TYPE_CHECKING, Any

import orjson
import structlog
from aiohttp import web

from gap_handler import store
from gap_handler.core.intervals import DAY_MS, RETENTION_DAYS, MinuteRange, closed_end
from gap_handler.core.validation import (
    BadInput,
    parse_backfill_body,
    parse_backfill_id,
    parse_backfill_state,
    parse_gap_status,
    parse_int,
    parse_optional_symbol,
    parse_symbol,
)
from gap_handler.coverage_page import render_coverage_page
from quaint.binance.models import MINUTE_MS, ms_to_datetime
from quaint.service.http import json_error, json_response
from quaint.store.errors import DB_ERRORS

if TYPE_CHECKING:
    from gap_handler.service import GapHandler

log = structlog.get_logger(__name__)

# The type only for the checker: gap_handler.service imports this module (for the routes).
GAP_HANDLER_KEY: web.AppKey[GapHandler] = web.AppKey("gap_handler")
_MAX_BODY = 16 * 1024
_EVENT_TYPES = {
    "all": ["gap_detected", "gap_backfilled", "gap_unrecoverable"],
    "detected": ["gap_detected"],
    "backfilled": ["gap_backfilled"],
    "unrecoverable": ["gap_unrecoverable"],
    "open": [],
}


def _bad(exc: BadInput) -> web.Response:
    return json_error(exc.status, exc.message, exc.field)


def _range_json(symbol: str, r: MinuteRange, state: str) -> dict[str, Any]:
    return {
        "symbol": symbol,
        "start": ms_to_datetime(r.start).isoformat(),
        "end": ms_to_datetime(r.end).isoformat(),
        "minutes": r.minutes,
        "state": state,
    }


async def get_gaps(request: web.Request) -> web.Response:
    c = request.app[GAP_HANDLER_KEY]
    svc = c.backfills
    try:
        symbol = parse_optional_symbol(request.query.get("symbol"), svc.symbols)
        status = parse_gap_status(request.query.get("status"))
        limit = parse_int(request.query.get("limit"), "limit", default=100, lo=1, hi=1000)
    except BadInput as exc:
        return _bad(exc)
    current: list[dict[str, Any]] = []
    if status in ("all", "open"):
        for sym in [symbol] if symbol else svc.symbols:
            running = svc.running[sym]
            for hole in svc.current_holes[sym]:
                state = "backfilling" if any(hole.overlaps(u) for u in running) else "queued"
                if any(hole.overlaps(p) for p in svc.parked[sym]):
                    state = "failed"
                current.append(_range_json(sym, hole, state))
    recent: list[dict[str, Any]] = []
    if _EVENT_TYPES[status]:
        try:
            async with c.pool.acquire() as conn:
                recent = await store.recent_gap_events(conn, _EVENT_TYPES[status], symbol, limit)
        except DB_ERRORS:
            return json_error(503, "database unavailable")
    return json_response({"current": current, "recent": recent})


def _authorised(request: web.Request, token: str) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    # Constant-time comparison of bytes: the token is never logged or echoed. aiohttp
    # decodes header bytes that are not UTF-8 as surrogates; surrogateescape turns them
    # back into the bytes that were sent (a plain encode() would raise: a 500).
    sent = presented.strip().encode("utf-8", "surrogateescape")
    return scheme.lower() == "bearer" and hmac.compare_digest(sent, token.encode())


async def _read_capped(request: web.Request) -> bytes:
    """The body, but never more than the cap + 1 byte. One read() returns only what has
    arrived so far: a body sent in several pieces would be cut short."""
    raw = b""
    while len(raw) <= _MAX_BODY:
        chunk = await request.content.read(_MAX_BODY + 1 - len(raw))
        if not chunk:
            break
        raw += chunk
    return raw


async def post_backfill(request: web.Request) -> web.Response:
    c = request.app[GAP_HANDLER_KEY]
    token = c.settings.admin_token_value
    if token is None:
        return json_error(403, "backfill requests are disabled: ADMIN_TOKEN is not configured")
    if not _authorised(request, token):
        return web.Response(
            body=orjson.dumps({"error": "missing or wrong bearer token"}),
            status=401,
            content_type="application/json",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if request.content_length is not None and request.content_length > _MAX_BODY:
        return json_error(413, "body too large", "body")
    raw = await _read_capped(request)
    if len(raw) > _MAX_BODY:
        return json_error(413, "body too large", "body")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json_error(400, "body is not valid JSON", "body")
    try:
        wanted = parse_backfill_body(body, c.backfills.symbols, c.now_ms())
    except BadInput as exc:
        return _bad(exc)
    if c.backfills.stopping:
        return json_error(503, "shutting down")
    if c.leadership.role != "leader":
        # Only the leader works; a request stored here would wait for the next takeover.
        return json_error(503, "standby: another gap handler is the leader; send the request to it")
    try:
        task = await c.requests.submit(wanted.symbol, wanted.range)
    except DB_ERRORS:
        return json_error(503, "database unavailable")
    body_out = task.as_json(time.monotonic())
    return json_response(body_out, 202)


async def get_backfill(request: web.Request) -> web.Response:
    """Live in this process: from memory (rate, ETA); otherwise (finished before a
    restart, or not yet resumed) from ``backfill_requests``, in the same shape."""
    c = request.app[GAP_HANDLER_KEY]
    try:
        ident = parse_backfill_id(request.match_info["id"])
    except BadInput as exc:
        return _bad(exc)
    task = c.backfills.tasks.get(ident)
    if task is not None:
        return json_response(task.as_json(time.monotonic()))
    try:
        async with c.pool.acquire() as conn:
            stored = await store.backfill_request(conn, ident)
    except DB_ERRORS:
        return json_error(503, "database unavailable")
    if stored is None:
        return json_error(404, "no such backfill", "id")
    return json_response(stored.as_json())


async def list_backfills(request: web.Request) -> web.Response:
    """The most recent requests first; live ones with their current progress."""
    c = request.app[GAP_HANDLER_KEY]
    try:
        symbol = parse_optional_symbol(request.query.get("symbol"), c.backfills.symbols)
        state = parse_backfill_state(request.query.get("state"))
        limit = parse_int(request.query.get("limit"), "limit", default=50, lo=1, hi=1000)
    except BadInput as exc:
        return _bad(exc)
    try:
        async with c.pool.acquire() as conn:
            rows = await store.recent_backfill_requests(conn, symbol, state, limit)
    except DB_ERRORS:
        return json_error(503, "database unavailable")
    now = time.monotonic()
    tasks = c.backfills.tasks
    out = [t.as_json(now) if (t := tasks.get(r.id)) is not None else r.as_json() for r in rows]
    return json_response({"backfills": out})


async def get_coverage(request: web.Request) -> web.Response:
    c = request.app[GAP_HANDLER_KEY]
    try:
        symbol = parse_symbol(request.query.get("symbol"), c.backfills.symbols)
        days = parse_int(request.query.get("days"), "days", default=7, lo=1, hi=RETENTION_DAYS)
    except BadInput as exc:
        return _bad(exc)
    end = closed_end(c.now_ms())
    today = end - end % DAY_MS
    first = today - (days - 1) * DAY_MS
    try:
        async with c.pool.acquire() as conn:
            rows = await store.coverage(conn, symbol, first, end)
    except DB_ERRORS:
        return json_error(503, "database unavailable")
    out = []
    for row in rows:
        start_ms = int(row.day.timestamp() * 1000)
        expected = (min(start_ms + DAY_MS, end) - start_ms) // MINUTE_MS
        missing = max(0, expected - row.stored - row.unrecoverable)
        out.append(
            {
                "date": row.day.date().isoformat(),
                "expected": expected,
                "stored": row.stored,
                "unrecoverable": row.unrecoverable,
                "missing": missing,
                "completeness": round(row.stored / expected, 6) if expected else 1.0,
            }
        )
    return json_response({"symbol": symbol, "days": out})


async def get_coverage_page(request: web.Request) -> web.Response:
    """The heat map of ``/coverage`` for every configured symbol (:mod:`gap_handler.coverage_page`)."""
    c = request.app[GAP_HANDLER_KEY]
    try:
        days = parse_int(request.query.get("days"), "days", default=7, lo=1, hi=RETENTION_DAYS)
    except BadInput as exc:
        return _bad(exc)
    return web.Response(text=render_coverage_page(c.backfills.symbols, days), content_type="text/html")


ROUTES = [
    web.get("/gaps", get_gaps),
    web.post("/backfills", post_backfill),
    web.get("/backfills", list_backfills),
    web.get("/backfills/{id}", get_backfill),
    web.get("/coverage", get_coverage),
    web.get("/coverage.html", get_coverage_page),
]
