"""The simulator's data.binance.vision, sans-I/O: which files exist, their bytes, the S3 listing.

Files are made from the exchange's own truth (:meth:`Exchange.truth`, the market model behind
REST and the stream), so archive = REST = stream for every minute. Like Binance's spot archives,
times are milliseconds before 2025-01-01 and microseconds from then on (binance-public-data#386).

A file exists once its period has closed and the publication delay has passed (daily files "the
next day", monthly ones days later), for periods wholly inside the exchange's history (older ones
answer 404, as for a symbol not yet listed), unless a fault says it is missing.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from xml.sax.saxutils import escape

from quaint.binance.archive import PERIODS, ArchiveFile, Period, archive_prefix
from quaint.binance.archive_listing import S3_NAMESPACE
from quaint.binance.encode import rest_kline_row
from quaint.binance.models import Candle
from simulator.exchange import Exchange
from simulator.faults import ArchiveFaults, ArchiveFileFault

MICROS_FROM_MS = 1_735_689_600_000  # 2025-01-01T00:00:00Z: spot archives switch to microseconds
BUCKET = "data.binance.vision"
MAX_KEYS = 1000  # S3's largest page
# The header futures files carry (binance-public-data#283); spot files have none.
HEADER = (
    "open_time,open,high,low,close,volume,close_time,quote_volume,count,taker_buy_volume,"
    "taker_buy_quote_volume,ignore\n"
)


def csv_line(candle: Candle) -> str:
    """One archive row: the REST row's 12 fields, times in µs from 2025 on."""
    row = rest_kline_row(candle)
    if candle.open_time >= MICROS_FROM_MS:
        row[0] = candle.open_time * 1000
        row[6] = candle.close_time * 1000 + 999  # the last µs of the minute, as Binance writes it
    return ",".join(map(str, row)) + "\n"


@dataclass(frozen=True, slots=True)
class BuiltFile:
    body: bytes
    sha256: str
    md5: str  # S3's ETag of a single-part upload
    rows: int


class ZipBuilder:
    """A file's zip, written row by row (``add`` a day of candles at a time): deterministic
    bytes for the same rows and fault, so its CHECKSUM is stable across requests."""

    def __init__(self, file: ArchiveFile, fault: ArchiveFileFault | None, published_ms: int) -> None:
        self.file = file
        self._keep = None if fault is None else fault.keep_rows
        self.rows = 0
        self._buffer = io.BytesIO()
        self._zip = zipfile.ZipFile(self._buffer, "w", zipfile.ZIP_DEFLATED)
        generation = 0 if fault is None else fault.generation
        if generation:
            self._zip.comment = f"re-upload {generation}".encode()  # other bytes, same rows
        stamp = datetime.fromtimestamp(published_ms // 1000, UTC)
        info = zipfile.ZipInfo(file.name.removesuffix(".zip") + ".csv", stamp.timetuple()[:6])
        info.compress_type = zipfile.ZIP_DEFLATED
        self._member = self._zip.open(info, "w")
        if fault is not None and fault.header:
            self._member.write(HEADER.encode())

    @property
    def full(self) -> bool:
        """A truncated file has all the rows it will get."""
        return self._keep is not None and self.rows >= self._keep

    def add(self, candles: Iterable[Candle]) -> None:
        lines = []
        for candle in candles:
            if self.full:
                break
            lines.append(csv_line(candle))
            self.rows += 1
        self._member.write("".join(lines).encode())

    def finish(self) -> BuiltFile:
        self._member.close()
        self._zip.close()
        body = self._buffer.getvalue()
        return BuiltFile(body, hashlib.sha256(body).hexdigest(), hashlib.md5(body).hexdigest(), self.rows)


def checksum_body(digest: str, file: ArchiveFile) -> bytes:
    return f"{digest}  {file.name}\n".encode()


def iso_time(ms: int) -> str:
    """S3's LastModified format."""
    return datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class ArchiveCatalog:
    """Which files exist at a simulated instant, and the listing of a prefix."""

    def __init__(
        self, exchange: Exchange, faults: ArchiveFaults, *, daily_delay_ms: int, monthly_delay_ms: int
    ) -> None:
        self.exchange = exchange
        self.faults = faults
        self._delay = {"daily": daily_delay_ms, "monthly": monthly_delay_ms}

    def published_ms(self, file: ArchiveFile) -> int:
        return file.end_ms + self._delay[file.period]

    def exists(self, file: ArchiveFile, now_ms: int) -> bool:
        fault = self.faults.of(file)
        return (
            file.symbol in self.exchange.symbols
            and file.start_ms >= self.exchange.earliest_open(now_ms)
            and self.published_ms(file) <= now_ms
            and not (fault is not None and fault.missing)
        )

    def files(self, symbol: str, period: Period, now_ms: int) -> Iterator[ArchiveFile]:
        """The files of one folder that exist now, oldest first."""
        earliest = self.exchange.earliest_open(now_ms)
        file = ArchiveFile.containing(symbol, period, earliest)
        if file.start_ms < earliest:
            file = ArchiveFile.containing(symbol, period, file.end_ms)
        while self.published_ms(file) <= now_ms:
            if self.exists(file, now_ms):
                yield file
            file = ArchiveFile.containing(symbol, period, file.end_ms)

    def keys(self, prefix: str, now_ms: int) -> list[tuple[str, ArchiveFile]]:
        """Every key (zips and CHECKSUMs) starting with ``prefix``, in S3's order."""
        out = []
        for symbol in self.exchange.symbols:
            for period in PERIODS:
                folder = archive_prefix(symbol, period)
                if not (folder.startswith(prefix) or prefix.startswith(folder)):
                    continue
                for file in self.files(symbol, period, now_ms):
                    out += [(file.key, file), (file.checksum_key, file)]
        out = [(k, f) for k, f in out if k.startswith(prefix)]
        out.sort(key=lambda item: item[0])
        return out


@dataclass(frozen=True, slots=True)
class Page:
    contents: list[tuple[str, ArchiveFile]]
    prefixes: list[str]
    truncated: bool
    next_marker: str | None


def select_page(
    keys: Iterable[tuple[str, ArchiveFile]], prefix: str, delimiter: str, marker: str, max_keys: int
) -> Page:
    """S3 ListObjects v1 over sorted keys: keys after ``marker``; with a delimiter, keys with
    one after the prefix roll up into common prefixes; at most ``max_keys`` of both together.
    ``NextMarker`` is given (as S3 does) only for a truncated page listed with a delimiter."""
    contents: list[tuple[str, ArchiveFile]] = []
    prefixes: list[str] = []
    last = None
    for key, file in keys:
        if key <= marker:
            continue
        if delimiter and marker.endswith(delimiter) and key.startswith(marker):
            continue  # the marker is a common prefix: everything under it was listed as it
        rolled = None
        if delimiter:
            cut = key.find(delimiter, len(prefix))
            if cut >= 0:
                rolled = key[: cut + len(delimiter)]
                if prefixes and prefixes[-1] == rolled:
                    continue  # keys are sorted: one prefix's keys come together
        if len(contents) + len(prefixes) >= max_keys:
            return Page(contents, prefixes, True, last if delimiter else None)
        if rolled is not None:
            prefixes.append(rolled)
            last = rolled
        else:
            contents.append((key, file))
            last = key
    return Page(contents, prefixes, False, None)


def page_xml(
    page: Page, prefix: str, delimiter: str, marker: str, max_keys: int, catalog: ArchiveCatalog
) -> bytes:
    """The ``ListBucketResult`` document of a page. Sizes and ETags are left out: files are
    made on request, and a listing must not build every file it names."""
    parts = [
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{S3_NAMESPACE}">',
        f"<Name>{BUCKET}</Name><Prefix>{escape(prefix)}</Prefix><Marker>{escape(marker)}</Marker>",
        f"<MaxKeys>{max_keys}</MaxKeys>",
    ]
    if delimiter:
        parts.append(f"<Delimiter>{escape(delimiter)}</Delimiter>")
    parts.append(f"<IsTruncated>{'true' if page.truncated else 'false'}</IsTruncated>")
    if page.next_marker is not None:
        parts.append(f"<NextMarker>{escape(page.next_marker)}</NextMarker>")
    for key, file in page.contents:
        modified = iso_time(catalog.published_ms(file))
        parts.append(
            f"<Contents><Key>{escape(key)}</Key><LastModified>{modified}</LastModified>"
            "<StorageClass>STANDARD</StorageClass></Contents>"
        )
    parts += [f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>" for p in page.prefixes]
    parts.append("</ListBucketResult>")
    return "".join(parts).encode()


def error_xml(code: str, message: str, key: str | None = None) -> bytes:
    """An S3 error document (``NoSuchKey``, ``InvalidArgument``, ...)."""
    where = "" if key is None else f"<Key>{escape(key)}</Key>"
    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{escape(message)}</Message>{where}</Error>"
    ).encode()
