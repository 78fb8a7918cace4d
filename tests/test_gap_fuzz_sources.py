"""Fuzzing what the gap handler reads from outside its API: the exchange's answers
(the REST client against a server answering garbage: a page or a typed error, nothing
else) and the database (the hole scan against a model, on random tables: exactly the
missing minutes, minus proven outages). The API's inputs: ``test_gap_fuzz.py``."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from gap_handler import store
from gap_handler.core.intervals import MinuteRange, merge, subtract
from quaint.binance.models import MINUTE_MS, Candle
from quaint.binance.rest_client import (
    ApiRejected,
    IpBanned,
    MalformedResponse,
    RateLimited,
    RestClient,
    RestError,
    ServerError,
)
from quaint.service.runtime import bound_port, start_http
from tests.support.gap_handler import ONCE, header_text, json_scalars, json_values

# ---- the REST client against garbage ------------------------------------------------


@dataclass
class Canned:
    status: int = 200
    headers: dict[str, str] | None = None
    body: bytes = b"[]"


@pytest.fixture
async def garbage() -> AsyncIterator[tuple[RestClient, list[Canned]]]:
    answer = [Canned()]

    async def handler(request: web.Request) -> web.Response:
        a = answer[0]
        return web.Response(status=a.status, headers=a.headers, body=a.body)

    app = web.Application()
    app.router.add_get("/api/v3/klines", handler)
    app.router.add_get("/api/v3/exchangeInfo", handler)
    app.router.add_get("/api/v3/time", handler)
    runner = await start_http(app, "127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            yield RestClient(session, f"http://127.0.0.1:{bound_port(runner)}", timeout_s=5), answer
    finally:
        await runner.cleanup()


KLINE_ROW = [
    1_767_225_600_000,
    "1.5",
    "2.5",
    "1.0",
    "2.0",
    "10.0",
    1_767_225_659_999,
    "15.0",
    7,
    "5.0",
    "7.5",
    "0",
]
rows = st.lists(st.one_of(st.just(KLINE_ROW), st.lists(json_scalars, max_size=13)), max_size=3)
statuses = st.one_of(
    st.sampled_from([200, 400, 403, 404, 418, 429, 451, 500, 502, 503, 504]), st.integers(200, 599)
)


@settings(ONCE, max_examples=300)
@given(
    status=statuses,
    retry_after=st.none() | header_text | st.sampled_from(["inf", "nan", "-1", "1e400", "7"]),
    weight=st.none() | header_text | st.from_regex(r"\A-?[0-9]{1,30}\Z"),
    body=st.one_of(rows, json_values, st.fixed_dictionaries({"serverTime": json_scalars})).map(
        lambda v: json.dumps(v).encode()
    )
    | st.binary(max_size=80)
    | st.sampled_from([b"[" * 100_000, b'{"serverTime": 1e400}', b"[NaN]"]),
    endpoint=st.sampled_from(["klines", "limits", "time"]),
)
async def test_rest_client_turns_any_answer_into_a_page_or_a_typed_error(
    garbage: tuple[RestClient, list[Canned]],
    status: int,
    retry_after: str | None,
    weight: str | None,
    body: bytes,
    endpoint: str,
) -> None:
    client, answer = garbage
    headers = {k: v for k, v in (("Retry-After", retry_after), ("X-MBX-USED-WEIGHT-1M", weight)) if v}
    answer[0] = Canned(status, headers, body)
    error: RestError | None = None
    try:
        if endpoint == "limits":
            await client.exchange_limits("BTCUSDT")
        elif endpoint == "time":
            assert type((await client.server_time()).server_ms) is int
        else:
            page = await client.klines("BTCUSDT", 0, None, 5)
            assert all(isinstance(c, Candle) for c in page.rows.candles())
    except RestError as exc:
        error = exc
    if error is None:
        assert 200 <= status < 300
        return
    expected: type[RestError] = {429: RateLimited, 418: IpBanned}.get(status) or (
        ServerError if status >= 500 else ApiRejected if status >= 400 else MalformedResponse
    )
    assert isinstance(error, expected), (status, error)
    assert not isinstance(error, RateLimited | IpBanned) or error.retry_after >= 0


# ---- the hole scan against a model --------------------------------------------------

T0 = 1_767_225_600_000  # 2026-01-01T00:00Z: hour and day boundaries fall inside the data
SPAN = 4 * 1440  # minutes of data around T0: short hours more than a day apart, too
_symbols = itertools.count()
INSERT = """
INSERT INTO candles_1m (symbol, time, open, high, low, close, volume, source)
SELECT $1, to_timestamp(($2::bigint + m::bigint * 60000) / 1000.0), 1.5, 2.5, 1.0, 2.0, 10.0, 'archive'
FROM unnest($3::int[]) AS m
"""


@settings(ONCE, max_examples=60)
@given(
    holes=st.lists(st.tuples(st.integers(-60, SPAN), st.integers(1, 90) | st.integers(1, 3000)), max_size=6),
    every=st.sampled_from([1, 1, 1, 2, 7, 61]),  # keep every n-th minute: many short hours
    window=st.tuples(st.integers(-120, SPAN + 60), st.integers(0, SPAN + 240)),
    outages=st.lists(st.tuples(st.integers(-60, SPAN), st.integers(1, 300)), max_size=3),
)
async def test_scan_finds_exactly_the_missing_minutes(
    db_pool: asyncpg.Pool,
    holes: list[tuple[int, int]],
    every: int,
    window: tuple[int, int],
    outages: list[tuple[int, int]],
) -> None:
    symbol = f"FZ{next(_symbols)}USDT"
    punched = {m for start, n in holes for m in range(start, start + n)}
    stored = [m for m in range(SPAN) if m % every == 0 and m not in punched]

    def minute(m: int) -> int:
        return T0 + m * MINUTE_MS

    known = [MinuteRange(minute(s), minute(s + n)) for s, n in outages]
    async with db_pool.acquire() as conn:
        await conn.execute(INSERT, symbol, T0, stored)
        for outage in known:
            await store.record_unrecoverable(conn, symbol, outage, datetime.now(UTC), {})
        lo, hi = minute(window[0]), minute(window[0] + window[1])
        found = await store.scan_holes(conn, symbol, lo, hi)
    present = set(stored)
    missing = [
        MinuteRange(minute(m), minute(m + 1))
        for m in range(window[0], window[0] + window[1])
        if m not in present
    ]
    assert found == subtract(merge(missing), known)
