"""API/CLI input validation (sans-I/O)."""

from __future__ import annotations

import pytest

from gap_handler.core.intervals import MinuteRange
from gap_handler.core.validation import (
    BadInput,
    parse_backfill_body,
    parse_gap_status,
    parse_instant,
    parse_int,
    parse_range,
    parse_symbol,
)

M = 60_000
NOW = 1_767_225_600_000 + 12 * 3_600_000 + 30_000  # 2026-01-01T12:00:30Z
KNOWN = ["BTCUSDT", "ETHUSDT"]


def bad(exc: pytest.ExceptionInfo[BadInput]) -> tuple[str, int]:
    return exc.value.field, exc.value.status


def test_instants() -> None:
    assert parse_instant("2025-01-01", "start") == 1_735_689_600_000
    assert parse_instant("2025-01-01T00:01:00Z", "start") == 1_735_689_660_000
    assert parse_instant("2025-01-01T02:01:00+02:00", "start") == 1_735_689_660_000
    assert parse_instant(1_735_689_600_000, "start") == 1_735_689_600_000
    assert parse_instant("1735689600000", "start") == 1_735_689_600_000
    bad_values: list[object] = ["yesterday", "2025-13-01", "", None, True, 1.5, [], "-5"]
    for raw in bad_values:
        with pytest.raises(BadInput) as exc:
            parse_instant(raw, "start")
        assert bad(exc) == ("start", 400)


def test_symbols() -> None:
    assert parse_symbol("btcusdt", KNOWN) == "BTCUSDT"
    with pytest.raises(BadInput) as exc:
        parse_symbol("DOGEUSDT", KNOWN)
    assert bad(exc) == ("symbol", 404)
    for raw in (None, "", "BTC-USDT", 5, "X" * 30):
        with pytest.raises(BadInput) as exc:
            parse_symbol(raw, KNOWN)
        assert bad(exc) == ("symbol", 400)


def test_range_widens_to_minutes_and_defaults_to_now() -> None:
    rng = parse_range("2026-01-01T10:00:30Z", "2026-01-01T11:00:01Z", NOW)
    assert rng == MinuteRange(NOW - 30_000 - 2 * 3_600_000, NOW - 30_000 - 3_600_000 + M)
    assert parse_range("2026-01-01T11:00:00Z", None, NOW).end == NOW - 30_000


@pytest.mark.parametrize(
    ("start", "end", "field"),
    [
        ("2026-01-01T11:00:00Z", "2026-01-01T10:00:00Z", "end"),  # start > end
        ("2026-01-01T11:00:00Z", "2026-01-01T11:00:00Z", "end"),  # empty
        ("2026-01-01T11:00:00Z", "2026-01-02T00:00:00Z", "end"),  # future
        ("2024-01-01", "2024-01-02", "start"),  # beyond retention
        ("2024-01-01", None, "start"),  # oversized
        ("bad", None, "start"),
        ("2026-01-01", "bad", "end"),
    ],
)
def test_bad_ranges(start: str, end: str | None, field: str) -> None:
    with pytest.raises(BadInput) as exc:
        parse_range(start, end, NOW)
    assert bad(exc) == (field, 400)


def test_backfill_body() -> None:
    ok = parse_backfill_body({"symbol": "ethusdt", "start": "2026-01-01T00:00:00Z"}, KNOWN, NOW)
    assert ok.symbol == "ETHUSDT" and ok.range.start == 1_767_225_600_000
    cases: list[tuple[object, str]] = [
        ([1, 2], "body"),
        ("text", "body"),
        ({"symbol": "BTCUSDT"}, "start"),
        ({"start": "2026-01-01"}, "symbol"),
        ({"symbol": "BTCUSDT", "start": "2026-01-01", "extra": 1}, "extra"),
        ({"symbol": "BTCUSDT", "start": {"a": 1}}, "start"),
    ]
    for body, field in cases:
        with pytest.raises(BadInput) as exc:
            parse_backfill_body(body, KNOWN, NOW)
        assert exc.value.field == field


def test_ints_and_statuses() -> None:
    assert parse_int(None, "days", default=7, lo=1, hi=10) == 7
    assert parse_int("3", "days", default=7, lo=1, hi=10) == 3
    for raw in ("0", "11", "x", "1.5"):
        with pytest.raises(BadInput):
            parse_int(raw, "days", default=7, lo=1, hi=10)
    assert parse_gap_status(None) == "all"
    assert parse_gap_status("unrecoverable") == "unrecoverable"
    with pytest.raises(BadInput) as exc:
        parse_gap_status("weird")
    assert exc.value.field == "status"
