"""The archive planner (pure): which files, what REST keeps, what each file result leaves."""

from __future__ import annotations

from datetime import UTC, datetime

from gap_handler.core.archive_plan import (
    ARCHIVE_CHECKSUM_MISMATCH,
    ARCHIVE_MISSING,
    ARCHIVE_SHORT,
    FilePart,
    after_file,
    archive_end,
    archive_units,
    plan_archive,
    sample_page,
    slice_bounds,
)
from gap_handler.core.intervals import DAY_MS, MinuteRange, merge
from quaint.binance.archive import (
    ArchiveChecksumMismatch,
    ArchiveFile,
    ArchiveMissing,
    ArchiveOk,
    ArchiveShort,
    Coverage,
)
from quaint.binance.models import MINUTE_MS


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


NOW = ms("2025-03-10T12:34:00")


def labels(plan_files: list[FilePart]) -> list[str]:
    return [p.file.label for p in plan_files]


def test_whole_past_months_monthly_this_month_daily_the_lag_days_rest() -> None:
    hole = MinuteRange(ms("2024-12-15T00:00:00"), ms("2025-03-10T12:34:00"))
    plan = plan_archive("BTCUSDT", [hole], NOW, 2)
    assert labels(plan.files) == [
        "2024-12",
        "2025-01",
        "2025-02",
        *(f"2025-03-{d:02d}" for d in range(1, 8)),
    ]
    # December only from the hole's start; the two lag days (8th, 9th) and today to REST.
    assert plan.files[0].ranges == (MinuteRange(hole.start, ms("2025-01-01T00:00:00")),)
    assert archive_end(NOW, 2) == ms("2025-03-10T00:00:00") - 2 * DAY_MS
    assert plan.rest == [MinuteRange(ms("2025-03-08T00:00:00"), hole.end)]
    # Every minute is planned exactly once.
    planned = merge([*(r for p in plan.files for r in p.ranges), *plan.rest])
    assert planned == [hole]
    assert sum(p.minutes for p in plan.files) + sum(r.minutes for r in plan.rest) == hole.minutes


def test_lag_reaching_into_last_month_uses_its_daily_files() -> None:
    now = ms("2025-03-01T05:00:00")
    hole = MinuteRange(ms("2025-02-01T00:00:00"), now)
    plan = plan_archive("BTCUSDT", [hole], now, 2)
    # February's monthly file may not be out on March 1st: its days up to the lag instead.
    assert labels(plan.files) == [f"2025-02-{d:02d}" for d in range(1, 27)]
    assert plan.rest == [MinuteRange(ms("2025-02-27T00:00:00"), now)]


def test_small_holes_stay_with_rest() -> None:
    small = MinuteRange(ms("2025-01-05T00:00:00"), ms("2025-01-05T00:05:00"))
    plan = plan_archive("BTCUSDT", [small], NOW, 2)
    assert plan.files == [] and plan.rest == [small]
    files, rest = archive_units([small], NOW, 2, 1000)
    assert files == [] and rest == [small]


def test_archive_units_are_one_per_file() -> None:
    hole = MinuteRange(ms("2025-01-20T00:00:00"), ms("2025-03-03T00:00:00"))
    files, rest = archive_units([hole], NOW, 2, 1000)
    assert files == [
        MinuteRange(hole.start, ms("2025-02-01T00:00:00")),
        MinuteRange(ms("2025-02-01T00:00:00"), ms("2025-03-01T00:00:00")),
        MinuteRange(ms("2025-03-01T00:00:00"), ms("2025-03-02T00:00:00")),
        MinuteRange(ms("2025-03-02T00:00:00"), ms("2025-03-03T00:00:00")),
    ]
    assert rest == []


def part(label: str, ranges: list[MinuteRange] | None = None) -> FilePart:
    f = ArchiveFile.parse("BTCUSDT", label)
    return FilePart(f, tuple(ranges or [MinuteRange(f.start_ms, f.end_ms)]))


def test_a_missing_month_falls_back_to_its_days() -> None:
    p = part("2025-02", [MinuteRange(ms("2025-02-10T06:00:00"), ms("2025-02-12T00:00:00"))])
    fb = after_file(p, ArchiveMissing(p.file, p.file.key))
    assert fb.event == ARCHIVE_MISSING and fb.rest == []
    assert [(d.file.label, d.ranges) for d in fb.retry] == [
        ("2025-02-10", (MinuteRange(ms("2025-02-10T06:00:00"), ms("2025-02-11T00:00:00")),)),
        ("2025-02-11", (MinuteRange(ms("2025-02-11T00:00:00"), ms("2025-02-12T00:00:00")),)),
    ]
    day = fb.retry[0]
    fb = after_file(day, ArchiveMissing(day.file, day.file.key))
    assert fb.event == ARCHIVE_MISSING and fb.retry == [] and fb.rest == list(day.ranges)


def test_short_and_mismatched_files_leave_rest_the_minutes_they_lack() -> None:
    p = part("2025-03-02")
    start = p.file.start_ms
    cov = Coverage(1440, 1340, ((start + 1340 * MINUTE_MS, p.file.end_ms),), False, 1340)
    fb = after_file(p, ArchiveShort(p.file, "ab", 10, cov, None))
    assert fb.event == ARCHIVE_SHORT and fb.rest == [MinuteRange(start + 1340 * MINUTE_MS, p.file.end_ms)]
    # A short file whose missing minutes lie outside the hole lacks nothing we asked for.
    inside = part("2025-03-02", [MinuteRange(start, start + 100 * MINUTE_MS)])
    assert after_file(inside, ArchiveShort(p.file, "ab", 10, cov, None)).event is None
    fb = after_file(p, ArchiveChecksumMismatch(p.file, "a" * 64, "b" * 64, 2))
    assert fb.event == ARCHIVE_CHECKSUM_MISMATCH and fb.rest == list(p.ranges)
    full = Coverage(1440, 1440, (), False, 1440)
    assert after_file(p, ArchiveOk(p.file, "ab", 10, full, None)).event is None


def test_sample_page_and_slices() -> None:
    p = part("2025-03-02")
    page = sample_page(p, 1000)
    assert page.minutes == 1000 and p.file.start_ms <= page.start and page.end <= p.file.end_ms
    times = [p.file.start_ms + i * MINUTE_MS for i in range(10)]
    ranges = (MinuteRange(times[2], times[4]), MinuteRange(times[7], times[9] + MINUTE_MS * 5))
    assert slice_bounds(times, ranges) == [(2, 4), (7, 10)]
