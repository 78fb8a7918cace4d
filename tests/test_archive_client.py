"""The archive client over real HTTP: against the simulator's archive and its faults, and against a
small server of the test's own for the answers the simulator never gives (403, cut bodies, junk)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from quaint.binance.archive import (
    ArchiveChecksumMismatch,
    ArchiveFile,
    ArchiveMalformed,
    ArchiveMissing,
    ArchiveOk,
    ArchiveShort,
)
from quaint.binance.archive_client import ArchiveClient, ArchiveRejected, ArchiveUnavailable, ListingMalformed
from quaint.binance.models import MINUTE_MS, KlineColumns
from tests.support.simulator import SimHandle, running_simulator

SIM: dict[str, Any] = {"speed": 0, "start": "2025-03-10T12:00:00Z", "seed": 7, "history_days": 120}
DAY = ArchiveFile.parse("BTCUSDT", "2025-02-03")


def no_wait() -> Iterator[float]:
    return itertools.repeat(0.0)


class Sleeps:
    """The delays the client asked for, without waiting them."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
async def sim() -> AsyncIterator[SimHandle]:
    async with running_simulator(symbols=["BTCUSDT"], **SIM) as handle:
        yield handle


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def control(http: aiohttp.ClientSession, sim: SimHandle, path: str, body: Any) -> Any:
    async with http.post(f"{sim.rest_url}/_sim/{path}", data=orjson.dumps(body)) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def served(http: aiohttp.ClientSession, sim: SimHandle) -> Any:
    async with http.get(f"{sim.rest_url}/_sim/archive") as resp:
        return await resp.json()


def truth_columns(sim: SimHandle, file: ArchiveFile) -> list[Any]:
    return sim.truth(file.symbol, file.start_ms, file.end_ms)


async def test_a_checksum_mismatch_is_retried_then_reported(
    sim: SimHandle, http: aiohttp.ClientSession
) -> None:
    client = ArchiveClient(http, sim.rest_url, backoff=no_wait)
    await control(http, sim, "archive_fault", {"kind": "checksum", "symbol": "BTCUSDT", "file": DAY.label})
    result = await client.fetch(DAY)
    assert isinstance(result, ArchiveChecksumMismatch) and result.attempts == 2
    assert result.expected != result.actual and (await served(http, sim))["requests"]["zip"] == 2
    # Wrong once: the second attempt verifies and parses.
    other = ArchiveFile.parse("BTCUSDT", "2025-02-04")
    await control(
        http, sim, "archive_fault", {"kind": "checksum", "symbol": "BTCUSDT", "file": other.label, "count": 1}
    )
    result = await client.fetch(other)
    assert isinstance(result, ArchiveOk) and result.columns is not None
    assert result.columns.candles() == truth_columns(sim, other)


async def test_a_reupload_between_checksum_and_zip_heals_on_the_second_attempt(
    sim: SimHandle, http: aiohttp.ClientSession
) -> None:
    client = ArchiveClient(http, sim.rest_url, checksum_attempts=1)
    first = await client.fetch(DAY)
    assert isinstance(first, ArchiveOk)
    await control(
        http, sim, "archive_reupload", {"symbol": "BTCUSDT", "file": DAY.label, "when": "after_checksum"}
    )
    assert isinstance(await client.fetch(DAY), ArchiveChecksumMismatch)  # one attempt only: seen
    await control(
        http, sim, "archive_reupload", {"symbol": "BTCUSDT", "file": DAY.label, "when": "after_checksum"}
    )
    healed = await ArchiveClient(http, sim.rest_url).fetch(DAY)
    assert isinstance(healed, ArchiveOk) and healed.sha256 != first.sha256
    assert healed.columns == first.columns


async def test_missing_and_truncated_files_are_reported_not_raised(
    sim: SimHandle, http: aiohttp.ClientSession
) -> None:
    client = ArchiveClient(http, sim.rest_url)
    month = ArchiveFile.parse("BTCUSDT", "2025-01")
    await control(http, sim, "archive_fault", {"kind": "missing", "symbol": "BTCUSDT", "file": "2025-01"})
    assert await client.fetch(month) == ArchiveMissing(month, month.checksum_key)
    assert await client.fetch(ArchiveFile.parse("BTCUSDT", "2025-03-10")) == ArchiveMissing(
        ArchiveFile.parse("BTCUSDT", "2025-03-10"),
        "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-03-10.zip.CHECKSUM",
    )  # not published yet
    await control(
        http, sim, "archive_fault", {"kind": "truncated", "symbol": "BTCUSDT", "file": DAY.label, "rows": 600}
    )
    short = await client.fetch(DAY)
    assert isinstance(short, ArchiveShort) and short.columns is not None
    assert short.coverage.rows == 600 and short.coverage.missing == (
        (DAY.start_ms + 600 * MINUTE_MS, DAY.end_ms),
    )
    assert short.columns.candles() == truth_columns(sim, DAY)[:600]


async def test_5xx_and_429_are_retried_honouring_retry_after(
    sim: SimHandle, http: aiohttp.ClientSession
) -> None:
    sleeps = Sleeps()
    client = ArchiveClient(http, sim.rest_url, sleep=sleeps, backoff=lambda: iter([0.25] * 10))
    await control(http, sim, "rest_errors", {"status": 503, "count": 2, "retry_after_s": 7, "path": "/data/"})
    await control(http, sim, "rest_errors", {"status": 429, "count": 1, "retry_after_s": 3, "path": "/data/"})
    result = await client.fetch(DAY)
    assert isinstance(result, ArchiveOk) and sleeps.delays == [7, 7, 3]
    # Out of attempts: classified, with the last status.
    await control(
        http, sim, "rest_errors", {"status": 500, "count": 10, "retry_after_s": 0, "path": "/data/"}
    )
    with pytest.raises(ArchiveUnavailable) as err:
        await ArchiveClient(http, sim.rest_url, sleep=sleeps, max_attempts=3, backoff=no_wait).fetch(DAY)
    assert (err.value.status, err.value.attempts) == (500, 3)
    # A Retry-After beyond the cap waits the cap.
    await control(http, sim, "reset", {})
    await control(http, sim, "rest_errors", {"status": 503, "count": 1, "retry_after_s": 9999, "path": "/"})
    capped = ArchiveClient(http, sim.rest_url, sleep=sleeps, max_retry_after_s=60.0)
    assert (await capped.list_objects("data/")).pages == 1 and sleeps.delays[-1] == 60.0


async def test_slow_answers_time_out_and_slow_downloads_complete(
    sim: SimHandle, http: aiohttp.ClientSession
) -> None:
    await control(http, sim, "archive_latency", {"seconds": 1.0})
    impatient = ArchiveClient(http, sim.rest_url, read_timeout_s=0.1, max_attempts=2, backoff=no_wait)
    with pytest.raises(ArchiveUnavailable, match="Timeout"):
        await impatient.fetch(DAY)
    # A throttled download (about 20 writes a second) arrives whole within a generous timeout.
    await control(http, sim, "archive_latency", {"seconds": 0.0, "bytes_per_s": 200_000})
    result = await ArchiveClient(http, sim.rest_url, read_timeout_s=30.0).fetch(DAY)
    assert isinstance(result, ArchiveOk) and result.columns is not None
    assert result.columns.candles() == truth_columns(sim, DAY)


async def test_concurrency_is_bounded(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    days = [ArchiveFile.parse("BTCUSDT", f"2025-02-{d:02d}") for d in range(1, 9)]
    await control(http, sim, "archive_latency", {"seconds": 0.2})
    client = ArchiveClient(http, sim.rest_url, concurrency=2)
    results = await asyncio.gather(*(client.fetch(d) for d in days))
    assert all(isinstance(r, ArchiveOk) for r in results)
    assert (await served(http, sim))["peak_in_flight"] <= 2
    async with running_simulator(symbols=["BTCUSDT"], archive_latency_s=0.2, **SIM) as other:
        wide = ArchiveClient(http, other.rest_url, concurrency=8)
        await asyncio.gather(*(wide.fetch(d) for d in days))
        assert (await served(http, other))["peak_in_flight"] > 2  # the bound above is what held it


async def test_streaming_hands_rows_on_in_chunks_and_spools_to_disk(
    sim: SimHandle, http: aiohttp.ClientSession
) -> None:
    chunks: list[KlineColumns] = []

    async def sink(chunk: KlineColumns) -> None:
        chunks.append(chunk)

    client = ArchiveClient(http, sim.rest_url, chunk_rows=100, spool_bytes=1024)  # the zip goes to disk
    result = await client.stream(DAY, sink)
    assert isinstance(result, ArchiveOk) and result.columns is None and result.coverage.rows == 1440
    assert [len(c) for c in chunks] == [100] * 14 + [40]
    assert [t for c in chunks for t in c.open_times] == [DAY.start_ms + i * MINUTE_MS for i in range(1440)]

    async def failing(chunk: KlineColumns) -> None:
        raise RuntimeError("database down")

    one_slot = ArchiveClient(http, sim.rest_url, concurrency=1)
    with pytest.raises(RuntimeError, match="database down"):
        await one_slot.stream(DAY, failing)
    assert isinstance(await one_slot.fetch(DAY), ArchiveOk)  # the slot was given back


# ---- a server of the test's own --------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def zip_of(text: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("BTCUSDT-1m-2025-02-03.csv", text)
    return buf.getvalue()


def files(body: bytes, checksum_name: str = DAY.name) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        if request.path.endswith(".CHECKSUM"):
            return web.Response(text=f"{hashlib.sha256(body).hexdigest()}  {checksum_name}\n")
        return web.Response(body=body)

    return handler


async def test_other_4xx_are_permanent(http: aiohttp.ClientSession) -> None:
    async def forbidden(request: web.Request) -> web.Response:
        return web.Response(status=403, text="<Error><Code>AccessDenied</Code></Error>")

    async with serving(forbidden) as url:
        client = ArchiveClient(http, url)
        with pytest.raises(ArchiveRejected) as err:
            await client.fetch(DAY)
        assert err.value.status == 403
        with pytest.raises(ArchiveRejected):
            await client.list_files("BTCUSDT", "daily")


async def test_bad_content_is_reported_malformed(http: aiohttp.ClientSession) -> None:
    good = "1738540800000000,1,2,0.5,1.5,10,1738540859999999,15,3,5,7.5,0\n"
    bad = good + "1738540860000000,1,2,0.5,1.5,10,1738540919999999,15,3,5,7.5\n"  # 11 fields
    async with serving(files(zip_of(bad))) as url:
        result = await ArchiveClient(http, url, chunk_rows=1).fetch(DAY)
        assert isinstance(result, ArchiveMalformed) and result.rows_delivered == 1
        assert "line 2: expected 12 fields" in result.reason
    async with serving(files(zip_of(good), checksum_name="ETHUSDT-1m-2025-02-03.zip")) as url:
        result = await ArchiveClient(http, url).fetch(DAY)
        assert isinstance(result, ArchiveMalformed) and "CHECKSUM" in result.reason
    async with serving(files(b"x" * (DAY.max_bytes + 1))) as url:
        result = await ArchiveClient(http, url).fetch(DAY)
        assert isinstance(result, ArchiveMalformed) and "too large" in result.reason
    async with serving(files(zip_of(good))) as url:
        result = await ArchiveClient(http, url).fetch(DAY)
        assert isinstance(result, ArchiveShort) and result.coverage.rows == 1


async def test_a_body_cut_short_is_retried(http: aiohttp.ClientSession) -> None:
    body = zip_of("1738540800000000,1,2,0.5,1.5,10,1738540859999999,15,3,5,7.5,0\n")
    zip_requests = 0

    async def cutting(request: web.Request) -> web.StreamResponse:
        nonlocal zip_requests
        if request.path.endswith(".CHECKSUM"):
            return web.Response(text=f"{hashlib.sha256(body).hexdigest()}  {DAY.name}\n")
        zip_requests += 1
        resp = web.StreamResponse()
        resp.content_length = len(body)
        await resp.prepare(request)
        if zip_requests == 1:  # half the promised bytes, then the connection goes
            await resp.write(body[: len(body) // 2])
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write(body)
        await resp.write_eof()
        return resp

    async with serving(cutting) as url:
        result = await ArchiveClient(http, url, backoff=no_wait).fetch(DAY)
    assert isinstance(result, ArchiveShort) and zip_requests == 2


async def test_a_listing_that_is_not_one_or_does_not_advance(http: aiohttp.ClientSession) -> None:
    async def html(request: web.Request) -> web.Response:
        return web.Response(text="<html><body>Binance Data Collection</body></html>")

    async with serving(html) as url:
        with pytest.raises(ListingMalformed, match="expected ListBucketResult"):
            await ArchiveClient(http, url).list_symbols()

    async def stuck(request: web.Request) -> web.Response:
        return web.Response(
            text="<ListBucketResult><IsTruncated>true</IsTruncated><NextMarker>a</NextMarker>"
            "<Contents><Key>a</Key></Contents></ListBucketResult>"
        )

    async with serving(stuck) as url:
        with pytest.raises(ListingMalformed, match="did not advance"):
            await ArchiveClient(http, url).list_objects("")
