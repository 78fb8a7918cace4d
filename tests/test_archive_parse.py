"""The archive core (no I/O): layout, CHECKSUM files, CSV rows -> the REST path's exact columns.

Real-shaped rows: the ms rows are the 10 real 1m rows of tests/fixtures/binance/
rest_api_v3_klines_response.json written as the archive writes them (the archive's klines files
are /api/v3/klines rows, binance-public-data's README); the µs row and the header are verbatim
from binance-public-data#386 (DOGEUSDT-1s-2025-01-01.zip) and #283 (a futures CSV's header).
"""

from __future__ import annotations

import hashlib
import io
import json
import tracemalloc
import zipfile
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quaint.binance.archive import (
    ArchiveFile,
    default_listing_url,
    parse_checksum,
    parse_key,
)
from quaint.binance.archive_csv import ArchiveReader, KlineCsvParser, concat_columns
from quaint.binance.errors import ProtocolError
from quaint.binance.models import MINUTE_MS
from quaint.binance.rest_parse import parse_rest_kline_columns

FIXTURES = Path(__file__).parent / "fixtures" / "binance"
REST_ROWS: list[list[Any]] = json.loads((FIXTURES / "rest_api_v3_klines_response.json").read_text())
OCT_2021 = ArchiveFile("BTCUSDT", 2021, 10)
JAN_2025_DAY = ArchiveFile.daily("DOGEUSDT", date(2025, 1, 1))
# binance-public-data#386, first row of DOGEUSDT-1s-2025-01-01.zip: µs open and close times.
REAL_MICROS_ROW = (
    "1735689600000000,0.31600000,0.31600000,0.31600000,0.31600000,27.00000000,1735689600999999,"
    "8.53200000,1,0.00000000,0.00000000,0"
)
# binance-public-data#283: the header futures files carry.
REAL_HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
    "taker_buy_quote_volume,ignore"
)


def csv_line(row: list[Any], micros: bool = False) -> str:
    fields = list(row)
    if micros:
        fields[0], fields[6] = fields[0] * 1000, fields[6] * 1000 + 999
    return ",".join(map(str, fields))


def parse_lines(file: ArchiveFile, lines: list[str]) -> tuple[Any, Any]:
    parser = KlineCsvParser(file)
    for i, text in enumerate(lines, start=1):
        parser.feed_line(text, i)
    return parser.take(), parser.coverage()


def zipped(text: str, name: str = "X-1m-2021-10.csv", **kwargs: Any) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(name, text, **kwargs)
    buf.seek(0)
    return buf


def read_all(reader: ArchiveReader) -> None:
    while reader.next_chunk() is not None:
        pass


# ---- layout -----------------------------------------------------------------------------------


def test_layout_of_monthly_and_daily_files() -> None:
    f = ArchiveFile.monthly("BNBUSDT", 2019, 1)
    assert f.key == "data/spot/monthly/klines/BNBUSDT/1m/BNBUSDT-1m-2019-01.zip"  # the README's example
    assert f.checksum_key == f.key + ".CHECKSUM" and f.name == "BNBUSDT-1m-2019-01.zip"
    assert (f.period, f.label, f.minutes) == ("monthly", "2019-01", 31 * 1440)
    assert ArchiveFile.monthly("X1", 2024, 2).minutes == 29 * 1440  # a leap February
    assert ArchiveFile.monthly("X1", 2024, 12).end_ms == ArchiveFile.monthly("X1", 2025, 1).start_ms
    d = ArchiveFile.parse("BTCUSDT", "2025-01-01")
    assert d.key == "data/spot/daily/klines/BTCUSDT/1m/BTCUSDT-1m-2025-01-01.zip"
    assert (d.period, d.start_ms, d.minutes) == ("daily", 1_735_689_600_000, 1440)
    assert ArchiveFile.containing("BTCUSDT", "monthly", d.start_ms + 5 * 86_400_000) == ArchiveFile(
        "BTCUSDT", 2025, 1
    )
    assert ArchiveFile.containing("BTCUSDT", "daily", d.end_ms - 1) == d
    for bad in ("2024-13", "2024-02-30", "24-01", "2024-1"):
        with pytest.raises(ValueError):  # noqa: PT011 - the message names the value
            ArchiveFile.parse("BTCUSDT", bad)
    with pytest.raises(ValueError, match="not a symbol"):
        ArchiveFile("btcusdt", 2024, 1)


def test_keys_of_a_listing_map_back_to_files() -> None:
    f = ArchiveFile.parse("ETHUSDT", "2024-03-05")
    assert parse_key(f.key) == (f, False) and parse_key(f.checksum_key) == (f, True)
    m = ArchiveFile.parse("ETHUSDT", "2024-03")
    assert parse_key(m.key) == (m, False)
    for other in (
        "data/spot/monthly/klines/ETHUSDT/1m/ETHUSDT-1m-2024-03-05.zip",  # a day under monthly/
        "data/spot/daily/klines/ETHUSDT/1m/ETHUSDT-1m-2024-03.zip",  # a month under daily/
        "data/spot/monthly/klines/ETHUSDT/1h/ETHUSDT-1h-2024-03.zip",  # another interval
        "data/spot/monthly/klines/ETHUSDT/1m/BTCUSDT-1m-2024-03.zip",  # another symbol's name
        "data/spot/monthly/klines/ETHUSDT/1m/ETHUSDT-1m-2024-13.zip",
        "data/spot/monthly/klines/ETHUSDT/1m/",
    ):
        assert parse_key(other) is None, other


def test_listing_url_of_the_public_host_and_of_anything_else() -> None:
    assert default_listing_url("https://data.binance.vision/") == (
        "https://s3-ap-northeast-1.amazonaws.com/data.binance.vision"
    )
    assert default_listing_url("http://127.0.0.1:9443/") == "http://127.0.0.1:9443"


def test_checksum_files() -> None:
    digest = hashlib.sha256(b"zip").hexdigest()
    name = "BTCUSDT-1m-2021-01.zip"
    assert parse_checksum(f"{digest}  {name}\n".encode(), name) == digest
    assert parse_checksum(f"{digest.upper()} *{name}".encode(), name) == digest  # sha256sum -b
    for body, reason in (
        (f"{digest}  ETHUSDT-1m-2021-01.zip\n", "names"),
        (f"{digest[:-1]}  {name}", "expected"),
        (f"{digest}", "expected"),
        ("<html>404</html>", "expected"),
        (f"{digest}  {name} extra", "expected"),
    ):
        with pytest.raises(ProtocolError, match=reason):
            parse_checksum(body.encode(), name)
    with pytest.raises(ProtocolError, match="ASCII"):
        parse_checksum("é".encode(), name)


# ---- rows -------------------------------------------------------------------------------------


def test_real_ms_rows_give_the_rest_paths_columns() -> None:
    columns, coverage = parse_lines(OCT_2021, [csv_line(r) for r in REST_ROWS])
    assert columns == parse_rest_kline_columns(REST_ROWS, "BTCUSDT")  # the same exact strings
    assert columns.candles() == parse_rest_kline_columns(REST_ROWS, "BTCUSDT").candles()
    assert (coverage.rows, coverage.micros_rows, coverage.header) == (10, 0, False)
    assert coverage.expected == 31 * 1440 and not coverage.complete


def test_microsecond_rows_are_read_by_magnitude_not_by_date() -> None:
    # The same real rows with µs times: the same columns (ms), counted as µs.
    micros, coverage = parse_lines(OCT_2021, [csv_line(r, micros=True) for r in REST_ROWS])
    assert micros == parse_rest_kline_columns(REST_ROWS, "BTCUSDT") and coverage.micros_rows == 10
    # The real 2025 row (#386): µs, first minute of the day.
    columns, coverage = parse_lines(JAN_2025_DAY, [REAL_MICROS_ROW])
    assert columns.open_times == [1_735_689_600_000] and columns.close_times == [1_735_689_600_999]
    assert columns.decimals[4] == ["27.00000000"] and columns.trades == [1] and coverage.micros_rows == 1
    # A file mixing both units (each value decides for itself).
    mixed = [csv_line(r, micros=i % 2 == 1) for i, r in enumerate(REST_ROWS)]
    again, coverage = parse_lines(OCT_2021, mixed)
    assert again == micros and coverage.micros_rows == 5


def test_a_header_row_is_tolerated_only_first() -> None:
    columns, coverage = parse_lines(OCT_2021, [REAL_HEADER] + [csv_line(r) for r in REST_ROWS])
    assert coverage.header and columns == parse_rest_kline_columns(REST_ROWS, "BTCUSDT")
    with pytest.raises(ProtocolError, match="line 2 \\[0\\] open time"):
        parse_lines(OCT_2021, [csv_line(REST_ROWS[0]), REAL_HEADER])
    # A first row that is a bad value, not names, is an error, never skipped as a "header".
    with pytest.raises(ProtocolError, match="line 1 \\[0\\] open time"):
        parse_lines(OCT_2021, ["-" + csv_line(REST_ROWS[0])])


def test_coverage_names_the_missing_minutes() -> None:
    rows = REST_ROWS[:3] + REST_ROWS[5:]  # two minutes cut out of the middle
    _, coverage = parse_lines(OCT_2021, [csv_line(r) for r in rows])
    t = [r[0] for r in REST_ROWS]
    assert coverage.missing == (
        (OCT_2021.start_ms, t[0]),
        (t[3], t[5]),
        (t[-1] + MINUTE_MS, OCT_2021.end_ms),
    )
    assert coverage.rows == 8
    _, empty = parse_lines(OCT_2021, [])
    assert empty.missing == ((OCT_2021.start_ms, OCT_2021.end_ms),) and empty.rows == 0


@pytest.mark.parametrize(
    ("change", "where"),
    [
        (lambda r: r[:11], "expected 12 fields"),
        (lambda r: [*r, "x"], "expected 12 fields"),
        (lambda r: [r[0] + 1, *r[1:]], "minute boundary"),
        (lambda r: [r[0] * 1000 + 7, *r[1:6], r[6] * 1000, *r[7:]], "minute boundary"),
        (lambda r: [1_633_046_400_000 - MINUTE_MS, *r[1:]], "outside 2021-10"),
        (lambda r: [*r[:2], "NaN", *r[3:]], "\\[2\\] high"),
        (lambda r: [*r[:5], "-1", *r[6:]], "\\[5\\] volume"),
        (lambda r: [*r[:2], r[3], r[2], *r[4:]], "high/low"),
        (lambda r: [*r[:6], r[0], *r[7:]], "close time"),
        (lambda r: [*r[:8], "1.5", *r[9:]], "number of trades"),
        (lambda r: [*r[:8], str(2**63), *r[9:]], "out of range"),
        (lambda r: [f"{r[0]}.0", *r[1:]], "\\[0\\] open time"),
    ],
)
def test_bad_rows_are_named(change: Any, where: str) -> None:
    with pytest.raises(ProtocolError, match=where):
        parse_lines(OCT_2021, [csv_line(REST_ROWS[0]), csv_line(change(REST_ROWS[1]))])


def test_rows_must_increase() -> None:
    for rows in ([REST_ROWS[1], REST_ROWS[0]], [REST_ROWS[1], REST_ROWS[1]]):
        with pytest.raises(ProtocolError, match="line 2 \\[0\\] open time: not increasing"):
            parse_lines(OCT_2021, [csv_line(r) for r in rows])


odd_decimal = st.one_of(
    st.from_regex(r"[0-9]{1,12}\.[0-9]{1,8}", fullmatch=True),
    st.sampled_from(["1e2", "1_000", " 5", "+5", "5.", ".5", "0E-8", "1" * 65, "١", "NaN", "-1", ""]),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(odd_decimal, min_size=8, max_size=8), st.sampled_from(["0", "", "x"]))
def test_the_plain_row_fast_path_agrees_with_the_field_path(values: list[str], ignore: str) -> None:
    """feed_line (one regular expression for a plain row) and feed (field by field, the REST
    rules) keep the same values and refuse the same rows."""
    o, h, lo, c, v, q, tb, tq = values
    t = OCT_2021.start_ms + 7 * MINUTE_MS
    fields = [str(t), o, h, lo, c, v, str(t + MINUTE_MS - 1), q, "12", tb, tq, ignore]
    results = []
    for feed in ("line", "fields"):
        parser = KlineCsvParser(OCT_2021)
        parser.feed_line(csv_line(REST_ROWS[0]), 1)
        try:
            if feed == "line":
                parser.feed_line(",".join(fields), 2)
            else:
                parser.feed(fields, 2)
            results.append(parser.take())
        except ProtocolError as exc:
            results.append(str(exc))  # type: ignore[arg-type]
    assert results[0] == results[1]


# ---- zips -------------------------------------------------------------------------------------


def test_a_zip_is_read_in_chunks_of_the_rows_asked_for() -> None:
    lines = "\r\n".join(csv_line(r) for r in REST_ROWS) + "\r\n"  # CRLF line ends are read too
    with ArchiveReader(zipped("\ufeff" + lines), OCT_2021, chunk_rows=3) as reader:  # and a BOM
        chunks = []
        while (chunk := reader.next_chunk()) is not None:
            chunks.append(chunk)
        coverage = reader.coverage()
    assert [len(c) for c in chunks] == [3, 3, 3, 1]
    assert concat_columns("BTCUSDT", chunks) == parse_rest_kline_columns(REST_ROWS, "BTCUSDT")
    assert coverage.rows == 10


def test_what_is_not_one_sound_csv_in_a_zip_is_refused() -> None:
    with pytest.raises(ProtocolError, match="not a zip"):
        ArchiveReader(io.BytesIO(b"<html>503</html>"), OCT_2021)
    two = io.BytesIO()
    with zipfile.ZipFile(two, "w") as zf:
        zf.writestr("a.csv", "")
        zf.writestr("b.csv", "")
    with pytest.raises(ProtocolError, match="expected one CSV file"):
        ArchiveReader(two, OCT_2021)
    with pytest.raises(ProtocolError, match="expected one CSV file"):
        ArchiveReader(zipped("x", name="data.txt"), OCT_2021)
    day = ArchiveFile.parse("BTCUSDT", "2021-10-22")
    with pytest.raises(ProtocolError, match="too large"):  # a bomb: more than any real day's CSV
        ArchiveReader(zipped("0" * (day.max_bytes + 1)), day)
    # A flipped byte inside the compressed data: the CRC (or inflate) fails on reading.
    body = bytearray(zipped("\n".join(csv_line(r) for r in REST_ROWS) * 50).getvalue())
    body[60] ^= 0xFF
    with ArchiveReader(io.BytesIO(bytes(body)), OCT_2021) as reader, pytest.raises(ProtocolError):
        read_all(reader)
    with ArchiveReader(zipped("\xff\xfe garbage"), OCT_2021) as reader, pytest.raises(ProtocolError):
        reader.next_chunk()


def test_reading_holds_a_chunk_not_the_csv() -> None:
    """Bounded memory, by construction: reading a whole month in chunks of 500 rows never
    holds as much as the month's CSV text, while the month's columns are many times more."""
    month = ArchiveFile("BTCUSDT", 2021, 10)
    proto = REST_ROWS[0]
    lines = []
    for i in range(month.minutes):
        t = month.start_ms + i * MINUTE_MS
        lines.append(csv_line([t, *proto[1:6], t + MINUTE_MS - 1, *proto[7:]]))
    text = "\n".join(lines) + "\n"
    data = zipped(text).getvalue()
    tracemalloc.start()
    try:
        with ArchiveReader(io.BytesIO(data), month, chunk_rows=500) as reader:
            rows = 0
            while (chunk := reader.next_chunk()) is not None:
                rows += len(chunk)
                del chunk
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert rows == month.minutes and reader.coverage().complete
    assert peak < len(text) / 2, (peak, len(text))
