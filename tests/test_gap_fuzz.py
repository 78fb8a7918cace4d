"""Fuzzing the gap handler's inputs: whatever arrives, the answer is a typed value or a
JSON 4xx naming the field; never a 500, never an exception escaping.

- the pure validators (``gap_handler.core.validation``): the bulk of the examples;
- the real app on a real socket, wired to a real database and the simulator:
  ``POST /backfills`` bodies and bearer headers, query strings of ``/gaps``,
  ``/coverage`` and ``/backfills``, ``/backfills/{id}`` paths, and raw requests
  carrying non-UTF-8 bytes.

What the gap handler reads from the exchange and the database: ``test_gap_fuzz_sources.py``.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from unittest import mock
from urllib.parse import quote

import aiohttp
import orjson
import pytest
import yarl
from aiohttp import streams, web
from aiohttp.test_utils import make_mocked_request
from hypothesis import event, given, settings
from hypothesis import strategies as st

from gap_handler.api import GAP_HANDLER_KEY, post_backfill
from gap_handler.core.intervals import DAY_MS, RETENTION_DAYS, MinuteRange, closed_end
from gap_handler.core.rate import MAX_PAUSE_S, RateGate
from gap_handler.core.tracker import BACKFILL_STATES
from gap_handler.core.validation import (
    GAP_STATUSES,
    BadInput,
    parse_backfill_body,
    parse_backfill_id,
    parse_backfill_state,
    parse_gap_status,
    parse_instant,
    parse_int,
    parse_optional_symbol,
    parse_range,
)
from gap_handler.service import GapHandler
from quaint.binance.models import MINUTE_MS, ms_to_datetime
from tests.support.gap_handler import ONCE, header_text, json_values, served_api, settings_for
from tests.support.simulator import running_simulator

KNOWN = ["BTCUSDT", "ETHUSDT"]
TOKEN = "fuzz-token-0123456789"
NOW = 1_767_225_600_000 + 12 * 3_600_000 + 30_000  # 2026-01-01T12:00:30Z

# ---- strategies ---------------------------------------------------------------------

offsets = st.builds(
    timezone, st.timedeltas(timedelta(hours=-23, minutes=-59), timedelta(hours=23, minutes=59))
)
iso_times = st.datetimes(
    datetime(1960, 1, 1), datetime(2100, 1, 1), timezones=st.one_of(st.none(), offsets)
).map(datetime.isoformat)
instants = st.one_of(
    st.integers(-(2**66), 2**66),
    st.integers(NOW - 420 * DAY_MS, NOW + 2 * DAY_MS),  # mostly near-valid epoch milliseconds
    st.from_regex(r"\A-?[0-9]{1,20}\Z"),
    iso_times,
    iso_times.map(lambda s: s[:19] + "Z"),
    st.dates().map(lambda d: d.isoformat()),
    st.text(max_size=40),
    st.text(alphabet=st.characters(categories=["Nd"]), min_size=1, max_size=14),  # not ASCII digits
    st.floats(),
    st.booleans(),
    st.none(),
    st.lists(st.integers(), max_size=3),
)
symbols = st.one_of(
    st.sampled_from(["BTCUSDT", "ethusdt", " BTCUSDT\n", "DOGEUSDT", "BTC-USDT", "ß", "", "x" * 21]),
    st.text(max_size=30),
    st.integers(),
    st.none(),
    st.lists(st.text(max_size=5), max_size=2),
)
bodies = st.one_of(
    st.fixed_dictionaries({}, optional={"symbol": symbols, "start": instants, "end": instants}),
    st.fixed_dictionaries({"symbol": st.sampled_from(KNOWN), "start": instants}, optional={"end": instants}),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    json_values,
)
auth_headers = st.one_of(  # about half of them authorised, so the body gets parsed too
    st.just(f"Bearer {TOKEN}"),
    st.sampled_from([f"bearer   {TOKEN}  ", f"BEARER {TOKEN}", f"Bearer  {TOKEN}"]),
    st.sampled_from([None, f"Bearer {TOKEN}x", f"Basic {TOKEN}", TOKEN, "Bearer", f"Bearer\t{TOKEN}"]),
    header_text,
    header_text.map(lambda s: "Bearer " + s),
)


def authorised(header: str | None) -> bool:
    """The documented rule: scheme ``Bearer`` (any case), then the token, spaces trimmed."""
    if header is None:
        return False
    scheme, _, presented = header.strip().partition(" ")
    return scheme.lower() == "bearer" and presented.strip() == TOKEN


def outcome(parse: Callable[[], Any]) -> tuple[Any, BadInput | None]:
    try:
        return parse(), None
    except BadInput as exc:
        return None, exc


def refused(exc: BadInput) -> None:
    # The field may be "" when that is the name of an unknown key in the body.
    assert exc.status in (400, 404) and isinstance(exc.field, str) and exc.message


def typed_or_refused(parse: Callable[[], Any], valid: Callable[[Any], bool]) -> None:
    value, exc = outcome(parse)
    if exc is not None:
        refused(exc)
    else:
        assert valid(value), value


# ---- the pure validators ------------------------------------------------------------


@settings(max_examples=3000, deadline=None)
@given(body=bodies, now=st.one_of(st.just(NOW), st.integers(0, 2**45)))
def test_backfill_bodies_are_accepted_whole_or_refused_by_field(body: Any, now: int) -> None:
    req, exc = outcome(lambda: parse_backfill_body(body, KNOWN, now))
    if exc is not None:
        refused(exc)
        return
    r = req.range
    assert req.symbol in KNOWN and isinstance(r, MinuteRange) and r.start < r.end
    assert r.end <= closed_end(now) + MINUTE_MS and r.start >= now - RETENTION_DAYS * DAY_MS


@settings(max_examples=1500, deadline=None)
@given(raw=st.one_of(instants, json_values))
def test_instants_are_milliseconds_or_refused(raw: Any) -> None:
    value, exc = outcome(lambda: parse_instant(raw, "start"))
    if exc is not None:
        assert (exc.field, exc.status) == ("start", 400)
    else:
        assert type(value) is int and value >= 0


@settings(max_examples=1500, deadline=None)
@given(raw=st.none() | st.text(max_size=25) | st.from_regex(r"\A\s*-?[0-9]{1,25}\s*\Z"))
def test_query_parameters_are_typed_or_refused(raw: str | None) -> None:
    typed_or_refused(lambda: parse_int(raw, "limit", default=100, lo=1, hi=1000), lambda v: 1 <= v <= 1000)
    typed_or_refused(lambda: parse_gap_status(raw), lambda v: v in GAP_STATUSES)
    typed_or_refused(lambda: parse_optional_symbol(raw, KNOWN), lambda v: v is None or v in KNOWN)
    typed_or_refused(lambda: parse_backfill_state(raw), lambda v: v is None or v in BACKFILL_STATES)


# Mostly near-valid: the validator itself is fuzzed in test_gap_requests.py.
backfill_ids = st.one_of(
    st.from_regex(r"\A[0-9a-fA-F]{16}\Z"), st.from_regex(r"\A[0-9a-fA-F]{14,18}\s?\Z"), st.text(max_size=40)
)


@settings(max_examples=500, deadline=None)
@given(start_min=st.integers(0, RETENTION_DAYS * 1440 - 2), length=st.integers(1, 5000), iso=st.booleans())
def test_valid_ranges_round_trip(start_min: int, length: int, iso: bool) -> None:
    newest = NOW - NOW % MINUTE_MS
    start = newest - start_min * MINUTE_MS
    end = min(newest, start + length * MINUTE_MS)
    if end <= start:
        return
    show = (lambda ms: ms_to_datetime(ms).isoformat()) if iso else str
    assert parse_range(show(start), show(end), NOW) == MinuteRange(start, end)


@given(retry_after=st.floats() | st.integers(-(2**70), 2**70))
def test_a_retry_after_never_pauses_for_good(retry_after: float) -> None:
    gate = RateGate(10, now=0.0)
    gate.on_rate_limited(0.0, retry_after)
    gate.on_banned(0.0, retry_after)
    until = gate.state(0.0).until
    assert until is None or (math.isfinite(until) and until <= MAX_PAUSE_S)


# ---- the real app -------------------------------------------------------------------


@dataclass
class Live:
    base: str
    http: aiohttp.ClientSession
    app: web.Application

    @property
    def c(self) -> GapHandler:
        return self.app[GAP_HANDLER_KEY]


@pytest.fixture
async def live(db_url: str) -> AsyncIterator[Live]:
    # The simulator keeps 2 days: a valid request for older minutes ends quickly, as
    # proven outages, instead of backfilling months behind the fuzzer's back.
    async with running_simulator(symbols=KNOWN, speed=0, history_days=2) as sim:
        config = settings_for(
            db_url,
            sim.rest_url,
            symbols=KNOWN,
            history_days=1,
            admin_token=TOKEN,
            rate_limit_requests_per_sec=100,
        )
        async with served_api(config, sim.clock.now_ms) as (base, app), aiohttp.ClientSession() as http:
            yield Live(base, http, app)


async def json_answer(resp: aiohttp.ClientResponse) -> tuple[int, Any]:
    raw = await resp.read()
    assert resp.status < 500, (resp.status, raw[:300])
    assert resp.content_type == "application/json", (resp.status, resp.content_type, raw[:300])
    body = orjson.loads(raw)
    if resp.status >= 400:
        assert isinstance(body, dict) and isinstance(body["error"], str), body
        assert isinstance(body.get("field", ""), str), body
    return resp.status, body


payloads = st.one_of(
    bodies.map(lambda b: json.dumps(b).encode()),  # Python's json also writes NaN and 2**70
    st.binary(max_size=200),
    st.text(max_size=100).map(str.encode),
)


@dataclass(frozen=True)
class Recent:
    """A body near the valid ones, relative to the service's clock: mostly accepted."""

    symbol: str
    ago_min: int
    minutes: int | None
    iso: bool

    def encode(self, now_ms: int) -> bytes:
        start = now_ms - self.ago_min * MINUTE_MS
        show = (lambda ms: ms_to_datetime(ms).isoformat()) if self.iso else (lambda ms: ms)
        body: dict[str, Any] = {"symbol": self.symbol, "start": show(start)}
        if self.minutes is not None:
            body["end"] = show(start + self.minutes * MINUTE_MS)
        return orjson.dumps(body)


recent = st.builds(
    Recent,
    st.sampled_from([*KNOWN, "btcusdt", "DOGEUSDT"]),
    st.integers(-5, (RETENTION_DAYS + 5) * 1440),
    st.none() | st.integers(-5, 3000),
    st.booleans(),
)


@settings(ONCE, max_examples=250)
@given(
    payload=payloads | recent,
    auth=auth_headers,
    ctype=st.sampled_from([None, "application/json", "text/plain", "x/y"]),
)
async def test_post_backfills_answers_json_4xx_or_202(
    live: Live, payload: bytes | Recent, auth: str | None, ctype: str | None
) -> None:
    headers = {k: v for k, v in (("Authorization", auth), ("Content-Type", ctype)) if v is not None}
    data = payload.encode(live.c.now_ms()) if isinstance(payload, Recent) else payload
    async with live.http.post(live.base + "/backfills", data=data, headers=headers) as resp:
        status, body = await json_answer(resp)
    event(f"POST /backfills -> {status}")  # --hypothesis-show-statistics: what was reached
    if not authorised(auth):
        assert status == 401, (status, body)
        return
    assert status in (202, 400, 404), (status, body)
    if status == 202:
        # Stored before the answer: the id is the row's.
        stored = await live.c.pool.fetchval(
            "SELECT count(*) FROM backfill_requests WHERE id = $1", body["id"]
        )
        assert stored == 1
        async with live.http.get(f"{live.base}/backfills/{body['id']}") as resp:
            assert (await json_answer(resp))[0] == 200


query_values = st.one_of(
    st.sampled_from(["BTCUSDT", "ethusdt", "open", "all", "unrecoverable", "7", "1", "403"]),
    st.sampled_from(["BTCUSDT", "ethusdt", "open", "all", "unrecoverable", "7", "1", "403"]),
    st.sampled_from(BACKFILL_STATES),
    st.text(max_size=30),
    st.from_regex(r"\A-?[0-9]{1,24}\Z"),
)


@settings(ONCE, max_examples=250)
@given(
    path=st.sampled_from(["/gaps", "/coverage", "/backfills", "/backfills/", "/health", "/nope"]),
    params=st.dictionaries(
        st.sampled_from(["symbol", "status", "state", "limit", "days", "x"]), query_values, max_size=4
    ),
    ident=backfill_ids,
)
async def test_queries_and_paths_answer_json(
    live: Live, path: str, params: dict[str, str], ident: str
) -> None:
    if path == "/backfills/":
        url = yarl.URL(live.base + path + quote(ident, safe=""), encoded=True)
        async with live.http.get(url) as resp:
            status, body = await json_answer(resp)
        event(f"GET /backfills/{{id}} -> {status}")
        well_formed = outcome(lambda: parse_backfill_id(ident))[1] is None
        # 404 also when the path does not reach the handler (an empty id, a "/" in it).
        assert status == (404 if well_formed else 400) or (status == 404 and "field" not in body), body
        if status == 400:
            assert body["field"] == "id"
        return
    async with live.http.get(live.base + path, params=params) as resp:
        status, _ = await json_answer(resp)
    event(f"GET {path} -> {status}")
    assert status in ((200, 503) if path == "/health" else (200, 400, 404))


# What HTTP allows in a header value: tab, space, visible ASCII and obs-text (0x80-0xFF,
# which is not UTF-8 on its own); other bytes are refused by aiohttp's parser itself.
header_bytes = st.lists(st.sampled_from([9, *range(0x20, 0x7F), *range(0x80, 0x100)]), max_size=40).map(bytes)


async def raw_request(live: Live, request: bytes) -> tuple[bytes, bytes]:
    """One request on its own connection: (status line, headers + body as sent back)."""
    host, port = live.base.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(request)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    status, _, rest = answer.partition(b"\r\n")
    return status, rest


@settings(ONCE, max_examples=100)
@given(token=header_bytes, query=st.binary(max_size=40))
async def test_raw_requests_with_bytes_that_are_not_utf8(live: Live, token: bytes, query: bytes) -> None:
    body = b'{"symbol": "NOPEUSDT", "start": "2025-12-31"}'
    status, rest = await raw_request(
        live,
        b"POST /backfills HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer "
        + token
        + b"\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body,
    )
    assert status == b"HTTP/1.1 401 Unauthorized" and b"application/json" in rest.lower(), (
        status,
        rest[:300],
    )
    # Percent-encoded bytes that do not decode as UTF-8, in a query string.
    request = (
        b"GET /gaps?symbol=" + quote(query).encode() + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    status, rest = await raw_request(live, request)
    assert status.split(b" ")[1] in (b"200", b"400", b"404") and b"application/json" in rest.lower(), status


async def test_a_body_arriving_in_pieces_is_read_whole(live: Live) -> None:
    """One read() returns what has arrived so far; the handler must keep reading."""
    body = b'{"symbol": "NOPEUSDT",' + b" " * 9000 + b'"start": "2025-12-31"}'  # whole only at the end
    payload = streams.StreamReader(mock.Mock(_reading_paused=False), 2**16, loop=asyncio.get_running_loop())
    request = make_mocked_request(
        "POST", "/backfills", headers={"Authorization": f"Bearer {TOKEN}"}, payload=payload, app=live.app
    )
    payload.feed_data(body[:4000])
    handling = asyncio.create_task(post_backfill(request))

    def rest() -> None:  # runs after the handler's first read, in FIFO order
        payload.feed_data(body[4000:])
        payload.feed_eof()

    asyncio.get_running_loop().call_soon(rest)
    response = await handling
    assert response.status == 404 and orjson.loads(response.body)["field"] == "symbol"  # type: ignore[arg-type]

    # Streamed without a Content-Length, a body over the cap is still refused, not cut.
    async def pieces() -> AsyncIterator[bytes]:
        for _ in range(20):
            yield b" " * 1000

    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with live.http.post(live.base + "/backfills", data=pieces(), headers=headers) as resp:
        assert (await json_answer(resp))[0] == 413
