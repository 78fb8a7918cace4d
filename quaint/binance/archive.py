"""Binance's public data archive (data.binance.vision), sans-I/O: where files are, what they hold.

Layout: ``data/spot/{monthly|daily}/klines/<SYM>/1m/<SYM>-1m-YYYY-MM[-DD].zip``, each with a
``.zip.CHECKSUM`` beside it (``<sha256>  <file name>``, as ``sha256sum`` prints it), one CSV inside
with the 12 columns of ``GET /api/v3/klines``. Spot files have no header row (futures files gained
one in 2022, binance-public-data#246, #283); one is tolerated. From 2025-01-01 spot open and close
times are microseconds (#386), so the unit is read per value, by magnitude, never by date (a misread
unit once looked like a 2,750x volume drop, #474). The listing is S3's ListObjects v1 XML on the
bucket endpoint (see :mod:`quaint.binance.archive_listing`).

Everything here takes bytes or text and returns values: the layout, CHECKSUM files, and what
fetching a file came to (:data:`FileResult`). :mod:`quaint.binance.archive_csv` turns a file's
rows into the same exact-string :class:`KlineColumns` the REST path writes;
:mod:`quaint.binance.archive_client` does the HTTP.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Literal

from quaint.binance.errors import ProtocolError
from quaint.binance.models import MINUTE_MS, KlineColumns, datetime_to_ms

PUBLIC_BASE_URL = "https://data.binance.vision"
# data.binance.vision's own pages list the bucket through this endpoint (its index.html: BUCKET_URL).
PUBLIC_LISTING_URL = "https://s3-ap-northeast-1.amazonaws.com/data.binance.vision"
INTERVAL = "1m"
Period = Literal["monthly", "daily"]
PERIODS: tuple[Period, ...] = ("monthly", "daily")
CSV_COLUMNS = 12
# Refuse a file whose CSV would be larger than this many bytes per minute of its period: a real
# 1m row is about 150 bytes, so this only stops a zip bomb or a wrong file, never a real one.
MAX_BYTES_PER_MINUTE = 512
_SYMBOL = re.compile(r"[A-Z0-9]{2,20}")
_KEY = re.compile(
    r"data/spot/(monthly|daily)/klines/([A-Z0-9]{2,20})/1m/\2-1m-([0-9]{4})-([0-9]{2})(?:-([0-9]{2}))?"
    r"\.zip(\.CHECKSUM)?"
)
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


def default_listing_url(base_url: str) -> str:
    """Where to list ``base_url``'s files: the public host is listed through its S3 bucket
    endpoint; anything else (a mirror, the simulator) answers the listing itself."""
    base = base_url.rstrip("/")
    return PUBLIC_LISTING_URL if base == PUBLIC_BASE_URL else base


@dataclass(frozen=True, slots=True, order=True)
class ArchiveFile:
    """One archive file: a symbol's 1m klines of one UTC month (``day`` 0) or one UTC day."""

    symbol: str
    year: int
    month: int
    day: int = 0

    def __post_init__(self) -> None:
        if _SYMBOL.fullmatch(self.symbol) is None:
            raise ValueError(f"not a symbol: {self.symbol!r}")
        date(self.year, self.month, self.day or 1)  # ValueError for an impossible date

    @classmethod
    def monthly(cls, symbol: str, year: int, month: int) -> ArchiveFile:
        return cls(symbol, year, month)

    @classmethod
    def daily(cls, symbol: str, day: date) -> ArchiveFile:
        return cls(symbol, day.year, day.month, day.day)

    @classmethod
    def parse(cls, symbol: str, label: str) -> ArchiveFile:
        """``("BTCUSDT", "2024-03")`` is a monthly file, ``"2024-03-05"`` a daily one."""
        m = re.fullmatch(r"([0-9]{4})-([0-9]{2})(?:-([0-9]{2}))?", label)
        if m is None:
            raise ValueError(f"not a month (YYYY-MM) or a day (YYYY-MM-DD): {label!r}")
        return cls(symbol, int(m[1]), int(m[2]), int(m[3] or 0))

    @classmethod
    def containing(cls, symbol: str, period: Period, ms: int) -> ArchiveFile:
        """The file of ``period`` whose minutes include the instant ``ms``."""
        d = datetime.fromtimestamp(ms // 1000, UTC)
        return cls(symbol, d.year, d.month, d.day if period == "daily" else 0)

    @property
    def period(self) -> Period:
        return "daily" if self.day else "monthly"

    @property
    def label(self) -> str:
        return f"{self.year:04d}-{self.month:02d}" + (f"-{self.day:02d}" if self.day else "")

    @property
    def name(self) -> str:
        return f"{self.symbol}-{INTERVAL}-{self.label}.zip"

    @property
    def key(self) -> str:
        return archive_prefix(self.symbol, self.period) + self.name

    @property
    def checksum_key(self) -> str:
        return self.key + ".CHECKSUM"

    @property
    def start_ms(self) -> int:
        return datetime_to_ms(datetime(self.year, self.month, self.day or 1, tzinfo=UTC))

    @property
    def end_ms(self) -> int:
        """The first minute after the period (exclusive end)."""
        if self.day:
            return self.start_ms + 1440 * MINUTE_MS
        year, month = (self.year + 1, 1) if self.month == 12 else (self.year, self.month + 1)
        return datetime_to_ms(datetime(year, month, 1, tzinfo=UTC))

    @property
    def minutes(self) -> int:
        return (self.end_ms - self.start_ms) // MINUTE_MS

    @property
    def max_bytes(self) -> int:
        """The largest zip or CSV this file may be (see ``MAX_BYTES_PER_MINUTE``)."""
        return self.minutes * MAX_BYTES_PER_MINUTE + 4096


def archive_prefix(symbol: str, period: Period) -> str:
    """The folder (S3 prefix) holding a symbol's 1m files of one period."""
    return f"data/spot/{period}/klines/{symbol}/{INTERVAL}/"


def parse_key(key: str) -> tuple[ArchiveFile, bool] | None:
    """A listed key -> (its file, whether it is the CHECKSUM), or ``None`` for any other key."""
    m = _KEY.fullmatch(key)
    if m is None or (m[1] == "daily") != (m[5] is not None):
        return None
    try:
        return ArchiveFile(m[2], int(m[3]), int(m[4]), int(m[5] or 0)), m[6] is not None
    except ValueError:  # 2024-13, 2024-02-30
        return None


def parse_checksum(body: bytes, name: str) -> str:
    """A ``.CHECKSUM`` body (``<sha256>  <name>``, or ``sha256sum -b``'s ``*<name>``) -> the
    digest in lower case. It must name the zip it sits beside."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        raise ProtocolError("CHECKSUM", "not ASCII text") from None
    parts = text.split()
    if len(parts) != 2 or _HEX64.fullmatch(parts[0]) is None:
        raise ProtocolError("CHECKSUM", f"expected '<sha256>  <file name>', got {text[:100]!r}")
    if parts[1].removeprefix("*") != name:
        raise ProtocolError("CHECKSUM", f"names {parts[1][:100]!r}, not {name!r}")
    return parts[0].lower()


@dataclass(frozen=True, slots=True)
class Coverage:
    """Which minutes of its period a parsed file holds: ``missing`` are the ``[start, end)`` ms
    ranges without a row, oldest first. A file may be short legitimately (trading halted, a
    symbol listed mid-month) or because it was truncated: REST tells which."""

    expected: int  # minutes in the file's period
    rows: int
    missing: tuple[tuple[int, int], ...]
    header: bool  # the CSV began with a header row
    micros_rows: int  # rows whose times were microseconds

    @property
    def complete(self) -> bool:
        return not self.missing


# ---- what fetching one file can come to (the client returns one of these; callers decide) ------


@dataclass(frozen=True, slots=True)
class ArchiveOk:
    """Verified against its CHECKSUM and every minute of the period present. ``columns`` is
    ``None`` when the rows went to a sink as they were parsed (``ArchiveClient.stream``)."""

    file: ArchiveFile
    sha256: str
    size: int  # bytes of the zip
    coverage: Coverage
    columns: KlineColumns | None


@dataclass(frozen=True, slots=True)
class ArchiveShort:
    """Verified, but some minutes of the period have no row (``coverage.missing``): a
    truncated upload (binance-public-data#413, #436) or minutes the exchange never had."""

    file: ArchiveFile
    sha256: str
    size: int
    coverage: Coverage
    columns: KlineColumns | None


@dataclass(frozen=True, slots=True)
class ArchiveMissing:
    """HTTP 404 for the zip or its CHECKSUM (``key``): not published yet, or never (halted
    trading, a renamed or delisted symbol). Not an error: the caller falls back."""

    file: ArchiveFile
    key: str


@dataclass(frozen=True, slots=True)
class ArchiveChecksumMismatch:
    """The zip's SHA-256 differed from its CHECKSUM on every attempt (a corrupt transfer, or
    a file re-uploaded between the two downloads). Its rows were not parsed."""

    file: ArchiveFile
    expected: str
    actual: str
    attempts: int


@dataclass(frozen=True, slots=True)
class ArchiveMalformed:
    """The CHECKSUM or the content does not follow the format (``reason`` says where).
    ``rows_delivered`` rows, each valid, had already gone to the sink before the bad one."""

    file: ArchiveFile
    reason: str
    rows_delivered: int


FileResult = ArchiveOk | ArchiveShort | ArchiveMissing | ArchiveChecksumMismatch | ArchiveMalformed

__all__ = [
    "CSV_COLUMNS",
    "INTERVAL",
    "PERIODS",
    "PUBLIC_BASE_URL",
    "PUBLIC_LISTING_URL",
    "ArchiveChecksumMismatch",
    "ArchiveFile",
    "ArchiveMalformed",
    "ArchiveMissing",
    "ArchiveOk",
    "ArchiveShort",
    "Coverage",
    "FileResult",
    "Period",
    "archive_prefix",
    "default_listing_url",
    "parse_checksum",
    "parse_key",
]
