"""Which minutes come from Binance's public archives and which from REST (sans-I/O).

Given the holes to fill and the exchange's now, :func:`plan_archive` picks monthly files for
whole past months, daily files for the current month (and for a just-ended month whose monthly
file may not be published yet), and leaves to REST the last ``lag_days`` (daily files appear
the next day, monthly ones days into the month) and today. What a file turned out to lack is
decided by :func:`after_file`: a 404 monthly file falls back to its daily files, anything else
an archive cannot serve goes to REST, each with one quality event naming the range.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from gap_handler.core.intervals import DAY_MS, MinuteRange, merge, subtract
from quaint.binance.archive import (
    ArchiveChecksumMismatch,
    ArchiveFile,
    ArchiveMalformed,
    ArchiveMissing,
    ArchiveOk,
    ArchiveShort,
    FileResult,
)
from quaint.binance.models import MINUTE_MS

# The quality events a fallback records (data_quality_logs), one per file and range.
ARCHIVE_MISSING = "archive_missing"
ARCHIVE_CHECKSUM_MISMATCH = "archive_checksum_mismatch"
ARCHIVE_SHORT = "archive_short"
ARCHIVE_MALFORMED = "archive_malformed"
ARCHIVE_MISMATCH = "archive_mismatch"  # the sampled REST cross-check disagreed


@dataclass(frozen=True, slots=True)
class FilePart:
    """One archive file and the minutes of the holes it is to fill (sorted, inside it)."""

    file: ArchiveFile
    ranges: tuple[MinuteRange, ...]

    @property
    def minutes(self) -> int:
        return sum(r.minutes for r in self.ranges)


@dataclass(frozen=True, slots=True)
class ArchivePlan:
    files: list[FilePart]
    rest: list[MinuteRange]  # left to REST from the start (the lag days, today)


@dataclass(frozen=True, slots=True)
class Fallback:
    """What a file's result leaves to do: ``retry`` files to try instead (daily files for a
    missing month), ``rest`` ranges for REST, and the quality event (``None``: nothing lacked)."""

    event: str | None
    rest: list[MinuteRange]
    retry: list[FilePart]
    reason: str = ""


def _day(ms: int) -> date:
    return datetime.fromtimestamp(ms // 1000, UTC).date()


def _ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)


def archive_end(now_ms: int, lag_days: int) -> int:
    """Exclusive end of what archives may serve: midnight (UTC) ``lag_days`` before today."""
    return _ms(_day(now_ms)) - lag_days * DAY_MS


def _parts(files: list[ArchiveFile], holes: list[MinuteRange]) -> list[FilePart]:
    out = []
    for f in files:
        inside = tuple(c for h in holes if (c := h.clip(f.start_ms, f.end_ms)) is not None)
        if inside:
            out.append(FilePart(f, inside))
    return out


def daily_files(symbol: str, lo: int, hi: int) -> list[ArchiveFile]:
    """The daily files whose days overlap ``[lo, hi)``."""
    if hi <= lo:
        return []
    day, last = _day(lo), _day(hi - MINUTE_MS)
    out = []
    while day <= last:
        out.append(ArchiveFile.daily(symbol, day))
        day += timedelta(days=1)
    return out


def plan_archive(
    symbol: str, holes: list[MinuteRange], now_ms: int, lag_days: int, page_minutes: int = 1000
) -> ArchivePlan:
    """Files for what archives can serve of ``holes``; a file is used only where it replaces
    more than one REST page of ``page_minutes`` (a few missing minutes are one request, a
    monthly file megabytes)."""
    holes = merge(holes)
    if not holes:
        return ArchivePlan([], [])
    end = archive_end(now_ms, lag_days)
    this_month = _ms(_day(now_ms).replace(day=1))
    hi = min(end, holes[-1].end)
    files: list[ArchiveFile] = []
    month = _day(holes[0].start).replace(day=1)
    while _ms(month) < hi:
        f = ArchiveFile.monthly(symbol, month.year, month.month)
        if f.end_ms <= this_month and f.end_ms <= end:
            files.append(f)  # a whole past month: its monthly file
        else:  # the current month, or a month whose monthly file may not be out yet
            files += [d for d in daily_files(symbol, f.start_ms, min(f.end_ms, hi)) if d.end_ms <= end]
        month = (month + timedelta(days=32)).replace(day=1)
    parts = [p for p in _parts(files, holes) if p.minutes > page_minutes]
    covered = [r for p in parts for r in p.ranges]
    return ArchivePlan(parts, subtract(holes, covered))


# File boundaries do not depend on the symbol; cutting work units needs none.
_ANY_SYMBOL = "ANY"


def archive_units(
    holes: list[MinuteRange], now_ms: int, lag_days: int, page_minutes: int
) -> tuple[list[MinuteRange], list[MinuteRange]]:
    """``holes`` cut for work units: (one range per archive file to use, the rest for REST)."""
    plan = plan_archive(_ANY_SYMBOL, holes, now_ms, lag_days, page_minutes)
    files = [MinuteRange(p.ranges[0].start, p.ranges[-1].end) for p in plan.files]
    return files, subtract(holes, files)


def after_file(part: FilePart, result: FileResult) -> Fallback:
    """What ``result`` (of fetching ``part.file``) leaves to fill, and the event to record."""
    if isinstance(result, ArchiveOk):
        return Fallback(None, [], [])
    if isinstance(result, ArchiveMissing):
        if part.file.period == "monthly":
            days = [
                FilePart(f, tuple(c for r in part.ranges if (c := r.clip(f.start_ms, f.end_ms)) is not None))
                for f in daily_files(part.file.symbol, part.file.start_ms, part.file.end_ms)
            ]
            retry = [d for d in days if d.ranges]
            return Fallback(ARCHIVE_MISSING, [], retry, f"404 for {result.key}")
        return Fallback(ARCHIVE_MISSING, list(part.ranges), [], f"404 for {result.key}")
    if isinstance(result, ArchiveShort):
        gaps = [MinuteRange(a, b) for a, b in result.coverage.missing]
        lacking = merge(c for r in part.ranges for g in gaps if (c := r.clip(g.start, g.end)) is not None)
        return Fallback(
            ARCHIVE_SHORT if lacking else None,
            lacking,
            [],
            f"{result.coverage.rows} of {result.coverage.expected} minutes",
        )
    if isinstance(result, ArchiveChecksumMismatch):
        reason = f"sha256 {result.actual} != CHECKSUM {result.expected} ({result.attempts} attempts)"
        return Fallback(ARCHIVE_CHECKSUM_MISMATCH, list(part.ranges), [], reason)
    assert isinstance(result, ArchiveMalformed)
    # Rows delivered before the bad one were stored; the caller rescans the file's ranges.
    return Fallback(ARCHIVE_MALFORMED, list(part.ranges), [], result.reason)


def sample_page(part: FilePart, page_minutes: int) -> MinuteRange:
    """The minutes one REST page re-fetches to cross-check ``part``: the middle of its
    largest range (the start and end of a file are where truncation shows anyway)."""
    largest = max(part.ranges, key=lambda r: r.minutes)
    n = min(page_minutes, largest.minutes)
    mid = largest.start + (largest.minutes - n) // 2 * MINUTE_MS
    return MinuteRange(mid, mid + n * MINUTE_MS)


def slice_bounds(open_times: list[int], ranges: tuple[MinuteRange, ...]) -> list[tuple[int, int]]:
    """Index slices ``[i, j)`` of the sorted ``open_times`` that fall in ``ranges``."""
    out = []
    for r in ranges:
        i, j = bisect_left(open_times, r.start), bisect_left(open_times, r.end)
        if i < j:
            out.append((i, j))
    return out


__all__ = [
    "ARCHIVE_CHECKSUM_MISMATCH",
    "ARCHIVE_MALFORMED",
    "ARCHIVE_MISMATCH",
    "ARCHIVE_MISSING",
    "ARCHIVE_SHORT",
    "ArchivePlan",
    "Fallback",
    "FilePart",
    "after_file",
    "archive_end",
    "archive_units",
    "daily_files",
    "plan_archive",
    "sample_page",
    "slice_bounds",
]
