"""The simulator's data.binance.vision over real HTTP: archive = REST = truth for every minute,
in both time units; the S3 listing and its paging; publication; faults and their control API."""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from pydantic import ValidationError

from quaint.binance.archive import ArchiveFile, ArchiveMissing, ArchiveOk, ArchiveShort
from quaint.binance.archive_client import ArchiveClient
from quaint.binance.archive_listing import parse_list_page
from quaint.binance.models import MINUTE_MS, Candle
from quaint.binance.parse import parse_rest_klines
from quaint.binance.rest_client import RestClient
from simulator.archive_files import select_page
from simulator.settings import SimSettings, describe_errors
from tests.support.simulator import SimHandle, running_simulator

START = "2025-03-10T12:00:00Z"  # frozen: 2024-12 (ms), 2025-01 and 2025-02 (µs) are published
SIM: dict[str, Any] = {"speed": 0, "start": START, "seed": 7, "history_days": 120}


@pytest.fixture
async def sim() -> AsyncIterator[SimHandle]:
    async with running_simulator(symbols=["BTCUSDT", "ETHUSDT"], **SIM) as handle:
        yield handle


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def raw(http: aiohttp.ClientSession, url: str, **params: str) -> tuple[int, bytes]:
    async with http.get(url, params=params) as resp:
        return resp.status, await resp.read()


async def control(http: aiohttp.ClientSession, sim: SimHandle, path: str, body: Any) -> tuple[int, Any]:
    async with http.post(f"{sim.rest_url}/_sim/{path}", data=orjson.dumps(body)) as resp:
        return resp.status, await resp.json()


def csv_lines(zip_body: bytes) -> list[str]:
    with zipfile.ZipFile(io.BytesIO(zip_body)) as zf:
        (name,) = zf.namelist()
        return zf.read(name).decode().splitlines()


async def rest_month(rest: RestClient, symbol: str, file: ArchiveFile) -> list[Candle]:
    out: list[Candle] = []
    start = file.start_ms
    while start < file.end_ms:
        page = await rest.klines(symbol, start, file.end_ms - 1, 1000)
        out += page.rows.candles()
        start = page.rows.open_times[-1] + MINUTE_MS
    return out


@pytest.mark.slow
@pytest.mark.parametrize(("label", "digits"), [("2024-12", 13), ("2025-01", 16), ("2025-03-09", 16)])
async def test_archive_rows_equal_rest_and_truth_for_every_minute(
    sim: SimHandle, http: aiohttp.ClientSession, label: str, digits: int
) -> None:
    file = ArchiveFile.parse("BTCUSDT", label)
    result = await ArchiveClient(http, sim.rest_url).fetch(file)
    assert isinstance(result, ArchiveOk) and result.columns is not None, result
    archive = result.columns.candles()
    assert len(archive) == file.minutes and result.coverage.micros_rows == (
        file.minutes if digits == 16 else 0
    )
    assert archive == await rest_month(RestClient(http, sim.rest_url), "BTCUSDT", file)
    status, body = await raw(
        http, sim.rest_url + "/_sim/truth", symbol="BTCUSDT", start=str(file.start_ms), end=str(file.end_ms)
    )
    assert status == 200 and archive == parse_rest_klines(orjson.loads(body), "BTCUSDT")
    # The bytes as Binance writes them: ms before 2025, µs (close = last µs of the minute) after.
    status, zipped = await raw(http, f"{sim.rest_url}/{file.key}")
    first = csv_lines(zipped)[0].split(",")
    assert status == 200 and len(first[0]) == digits and len(first[6]) == digits
    assert first[6].endswith("999999" if digits == 16 else "59999") and first[11] == "0"
    assert hashlib.sha256(zipped).hexdigest() == result.sha256


async def test_the_checksum_file_is_sha256sums_line(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    file = ArchiveFile.parse("ETHUSDT", "2025-03-01")
    _, zipped = await raw(http, f"{sim.rest_url}/{file.key}")
    _, checksum = await raw(http, f"{sim.rest_url}/{file.checksum_key}")
    assert checksum.decode() == f"{hashlib.sha256(zipped).hexdigest()}  ETHUSDT-1m-2025-03-01.zip\n"
    _, again = await raw(http, f"{sim.rest_url}/{file.key}")
    assert again == zipped  # deterministic bytes: the CHECKSUM stays true across requests
    assert zipfile.ZipFile(io.BytesIO(zipped)).namelist() == ["ETHUSDT-1m-2025-03-01.csv"]


async def test_publication_and_history(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    url = sim.rest_url + "/"

    async def status(symbol: str, label: str) -> int:
        return (await raw(http, url + ArchiveFile.parse(symbol, label).key))[0]

    assert await status("BTCUSDT", "2025-03-09") == 200  # yesterday's file (1 h after midnight)
    assert await status("BTCUSDT", "2025-03-10") == 404  # today is not over
    assert await status("BTCUSDT", "2025-03") == 404  # nor is this month
    assert await status("BTCUSDT", "2025-02") == 200
    assert await status("BTCUSDT", "2024-11") == 404  # starts before the exchange's history
    assert await status("BTCUSDT", "2024-11-11") == 200
    code, body = await raw(http, url + "data/spot/monthly/klines/XRPUSDT/1m/XRPUSDT-1m-2025-01.zip")
    assert code == 404 and b"<Code>NoSuchKey</Code>" in body
    assert (await raw(http, url + "data/spot/monthly/klines/BTCUSDT/1h/BTCUSDT-1h-2025-01.zip"))[0] == 404
    async with running_simulator(symbols=["BTCUSDT"], archive_monthly_delay_h=24 * 12, **SIM) as late:
        path = late.rest_url + "/" + ArchiveFile.parse("BTCUSDT", "2025-02").key
        assert (await raw(http, path))[0] == 404  # published 12 days after the month
        await control(http, late, "clock", {"advance_ms": 3 * 86_400_000})
        assert (await raw(http, path))[0] == 200


async def test_listing_pages_as_s3_does(http: aiohttp.ClientSession) -> None:
    async with (
        running_simulator(symbols=["BTCUSDT", "ETHUSDT"], **SIM) as whole,
        running_simulator(symbols=["BTCUSDT", "ETHUSDT"], archive_max_keys=3, **SIM) as paged,
    ):
        listed = {}
        for name, handle in (("whole", whole), ("paged", paged)):
            client = ArchiveClient(http, handle.rest_url, max_keys=1000)
            result = await client.list_objects("data/spot/daily/klines/BTCUSDT/1m/")
            listed[name] = (result, await client.list_files("BTCUSDT", "daily"), await client.list_symbols())
        (whole_all, whole_files, symbols), (paged_all, paged_files, paged_symbols) = listed.values()
        assert whole_all.pages == 1 and paged_all.pages == -(-len(whole_all.objects) // 3)
        assert paged_all.objects == whole_all.objects and len(whole_all.objects) == 2 * 119
        assert [f.file.label for f in paged_files][:2] == ["2024-11-11", "2024-11-12"]
        assert paged_files == whole_files and all(f.has_checksum for f in paged_files)
        assert paged_files[-1].file.label == "2025-03-09" and paged_files[0].last_modified == (
            "2024-11-12T01:00:00.000Z"
        )
        assert symbols == paged_symbols == ["BTCUSDT", "ETHUSDT"]
        # One level down with a delimiter: the interval folder, as a common prefix.
        _, body = await raw(
            http, paged.rest_url + "/", prefix="data/spot/monthly/klines/BTCUSDT/", delimiter="/"
        )
        page = parse_list_page(body)
        assert page.common_prefixes == ["data/spot/monthly/klines/BTCUSDT/1m/"] and page.objects == []
        code, body = await raw(http, paged.rest_url + "/", prefix="data/", **{"max-keys": "x"})
        assert code == 400 and b"InvalidArgument" in body
        code, body = await raw(http, paged.rest_url + "/", **{"list-type": "2"})
        assert code == 400 and b"version 1" in body


def test_select_page_follows_s3s_rules() -> None:
    f = ArchiveFile("BTCUSDT", 2025, 1)
    keys = [(k, f) for k in ["a/1", "a/2", "b/x/1", "b/x/2", "b/y/1", "c"]]
    page = select_page(keys, "", "/", "", 2)
    assert ([k for k, _ in page.contents], page.prefixes, page.truncated) == ([], ["a/", "b/"], True)
    assert page.next_marker == "b/"
    # Continuing from a common prefix skips the keys under it.
    page = select_page(keys, "", "/", "b/", 2)
    assert ([k for k, _ in page.contents], page.prefixes, page.truncated) == (["c"], [], False)
    page = select_page(keys, "b/", "", "b/x/1", 2)  # no delimiter: keys only, no NextMarker
    assert [k for k, _ in page.contents] == ["b/x/2", "b/y/1"] and page.next_marker is None


async def test_archive_faults_through_the_control_api(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    client = ArchiveClient(http, sim.rest_url)
    month = ArchiveFile.parse("BTCUSDT", "2025-01")
    day = ArchiveFile.parse("ETHUSDT", "2025-02-03")
    assert (
        await control(http, sim, "archive_fault", {"kind": "missing", "symbol": "btcusdt", "file": "2025-01"})
    )[0] == 200
    assert isinstance(await client.fetch(month), ArchiveMissing)
    assert month not in [f.file for f in await client.list_files("BTCUSDT", "monthly")]
    # "Missing until reported": a re-upload publishes it.
    code, state = await control(http, sim, "archive_reupload", {"symbol": "BTCUSDT", "file": "2025-01"})
    assert code == 200 and state["generation"] == 1 and not state["missing"]
    assert month in [f.file for f in await client.list_files("BTCUSDT", "monthly")]

    await control(http, sim, "archive_fault", {"kind": "header", "symbol": "ETHUSDT", "file": "2025-02-03"})
    _, zipped = await raw(http, f"{sim.rest_url}/{day.key}")
    lines = csv_lines(zipped)
    assert lines[0].startswith("open_time,open,high") and len(lines) == 1441
    result = await client.fetch(day)
    assert isinstance(result, ArchiveOk) and result.coverage.header

    await control(
        http,
        sim,
        "archive_fault",
        {"kind": "truncated", "symbol": "ETHUSDT", "file": "2025-02-03", "rows": 100},
    )
    _, zipped = await raw(http, f"{sim.rest_url}/{day.key}")
    _, checksum = await raw(http, f"{sim.rest_url}/{day.checksum_key}")
    assert len(csv_lines(zipped)) == 101 and checksum.decode().startswith(hashlib.sha256(zipped).hexdigest())

    code, _ = await control(http, sim, "archive_reupload", {"symbol": "ETHUSDT", "file": "2025-02-03"})
    _, fixed = await raw(http, f"{sim.rest_url}/{day.key}")
    assert code == 200 and len(csv_lines(fixed)) == 1440 and fixed != zipped

    for body, reason in (
        ({"kind": "flaky", "symbol": "BTCUSDT", "file": "2025-01"}, "kind must be"),
        ({"kind": "missing", "symbol": "XRPUSDT", "file": "2025-01"}, "served symbols"),
        ({"kind": "missing", "symbol": "BTCUSDT", "file": "2025-13"}, "month"),
        ({"kind": "truncated", "symbol": "BTCUSDT", "file": "2025-01-02", "rows": 1440}, "rows must be"),
        ({"kind": "checksum", "symbol": "BTCUSDT", "file": "2025-01", "count": 0}, "count must be"),
    ):
        code, answer = await control(http, sim, "archive_fault", body)
        assert code == 400 and reason in answer["error"], (body, answer)
    code, answer = await control(
        http, sim, "archive_reupload", {"symbol": "BTCUSDT", "file": "2025-01", "when": "later"}
    )
    assert code == 400 and "when must be" in answer["error"]
    code, answer = await control(http, sim, "archive_latency", {"seconds": 0.01, "bytes_per_s": 10_000_000})
    assert code == 200 and answer == {"seconds": 0.01, "bytes_per_s": 10_000_000}

    _, faults = await raw(http, f"{sim.rest_url}/_sim/faults")
    archive = orjson.loads(faults)["archive"]
    assert {(f["symbol"], f["file"]) for f in archive["files"]} == {
        ("BTCUSDT", "2025-01"),
        ("ETHUSDT", "2025-02-03"),
    }
    await control(http, sim, "reset", {})
    _, faults = await raw(http, f"{sim.rest_url}/_sim/faults")
    assert orjson.loads(faults)["archive"] == {"files": [], "latency_s": 0.0, "bytes_per_s": 0}
    _, stats = await raw(http, f"{sim.rest_url}/_sim/archive")
    served = orjson.loads(stats)
    assert served["requests"]["zip"] >= 4 and served["requests"]["not_found"] >= 1 and served["builds"] >= 3


async def test_an_outage_is_missing_from_the_archive_too(sim: SimHandle, http: aiohttp.ClientSession) -> None:
    day = ArchiveFile.parse("BTCUSDT", "2025-02-03")
    client = ArchiveClient(http, sim.rest_url)
    before = await client.fetch(day)
    assert isinstance(before, ArchiveOk)
    lo, hi = day.start_ms + 100 * MINUTE_MS, day.start_ms + 130 * MINUTE_MS
    await control(http, sim, "outage", {"start": lo, "end": hi, "symbol": "BTCUSDT"})
    after = await client.fetch(day)
    assert isinstance(after, ArchiveShort) and after.coverage.missing == ((lo, hi),)
    assert after.sha256 != before.sha256  # made again, not the cached file
    assert after.columns is not None and after.columns.candles() == sim.truth(
        "BTCUSDT", day.start_ms, day.end_ms
    )


async def test_archive_faults_as_flags(http: aiohttp.ClientSession) -> None:
    faults = ["missing:BTCUSDT:2025-01", "checksum:BTCUSDT:2025-02-01"]
    async with running_simulator(symbols=["BTCUSDT"], archive_fault=faults, **SIM) as sim:
        client = ArchiveClient(http, sim.rest_url)
        assert isinstance(await client.fetch(ArchiveFile.parse("BTCUSDT", "2025-01")), ArchiveMissing)
        assert type(await client.fetch(ArchiveFile.parse("BTCUSDT", "2025-02-01"))).__name__ == (
            "ArchiveChecksumMismatch"
        )
    with pytest.raises(ValidationError) as err:
        SimSettings.without_env(archive_fault="missing:BTCUSDT:2025-1")
    assert "--archive-fault / SIM_ARCHIVE_FAULT" in describe_errors(err.value)[0]
    with pytest.raises(ValidationError, match="KIND one of"):
        SimSettings.without_env(archive_fault=["lost:BTCUSDT:2025-01"])
