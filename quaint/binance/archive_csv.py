"""Archive CSVs -> :class:`KlineColumns`, sans-I/O: row by row, from a verified zip, in chunks.

The checks and values are :func:`quaint.binance.rest_parse.parse_rest_kline_columns`'s (the same
exact strings, no float, no ``Decimal`` kept per value), plus what an archive file promises: 12
fields, open times on minute boundaries, strictly increasing, inside the file's period. Each time
is read in ms or µs by its own magnitude, never by its date (binance-public-data#386, #474). A
header row (futures files have one, #246, #283) is tolerated as the first row.
"""

from __future__ import annotations

import csv
import io
import re
import zipfile
import zlib
from collections.abc import Sequence
from decimal import Decimal
from typing import IO

from quaint.binance.archive import CSV_COLUMNS, ArchiveFile, Coverage
from quaint.binance.errors import ProtocolError
from quaint.binance.models import MINUTE_MS, KlineColumns
from quaint.binance.parse import PLAIN_DECIMAL, parse_decimal_text, parse_timestamp

_BIGINT_MAX = 2**63 - 1  # number_of_trades is a bigint column
_DIGITS = re.compile(r"[0-9]{1,20}")
_HEADER_NAME = re.compile(r"[A-Za-z_ ]{1,40}")  # "open_time", "Open time": a header, not a value
# A row as the exchange writes it: integers, plain decimals (at most 64 characters, the fast path
# of parse_decimal_text) and the unused last field. Anything else is read field by field.
_I, _D = r"([0-9]{1,20})", r"([0-9]{1,32}(?:\.[0-9]{1,31})?)"
_PLAIN_ROW = re.compile(",".join([_I, _D, _D, _D, _D, _D, _I, _D, _I, _D, _D, r'[^,"\r\n]*']))
_DECIMAL_FIELDS = (
    (1, "open"),
    (2, "high"),
    (3, "low"),
    (4, "close"),
    (5, "volume"),
    (7, "quote asset volume"),
    (9, "taker buy base volume"),
    (10, "taker buy quote volume"),
)


class KlineCsvParser:
    """One archive CSV, row by row, into :class:`KlineColumns` (taken in chunks with
    :meth:`take`, so a caller never holds more than it asks for).

    The checks and values are :func:`parse_rest_kline_columns`'s (the same exact strings), plus
    what a file promises: 12 fields, open times on minute boundaries, strictly increasing, inside
    the file's period. Each time is read in ms or µs by its magnitude. The first row may be a
    header."""

    def __init__(self, file: ArchiveFile) -> None:
        self.file = file
        self._start, self._end = file.start_ms, file.end_ms
        self._next = self._start  # the first minute not yet seen
        self._missing: list[tuple[int, int]] = []
        self._rows = 0
        self._micros = 0
        self._header = False
        self._seen_any = False
        self._reset()

    def _reset(self) -> None:
        self._opens: list[int] = []
        self._closes: list[int] = []
        self._decimals: tuple[list[str], ...] = tuple([] for _ in range(8))
        self._trades: list[int] = []

    @property
    def pending(self) -> int:
        """Rows parsed and not yet taken."""
        return len(self._opens)

    def take(self) -> KlineColumns:
        """The rows parsed since the last take, oldest first."""
        out = KlineColumns(self.file.symbol, self._opens, self._closes, self._decimals, self._trades)
        self._reset()
        return out

    def feed_line(self, text: str, line: int) -> None:
        """One line of the file, without its line break. A plain row (what the exchange writes)
        is read by one regular expression; anything else goes field by field through
        :meth:`feed`, which names what is wrong with it."""
        m = _PLAIN_ROW.fullmatch(text)
        if m is None or not self._seen_any:
            self.feed(next(csv.reader([text])) if text else [], line)
            return
        t, o, h, lo, c, v, close_time, q, count, tb, tq = m.groups()
        self._add(line, int(t), int(close_time), [o, h, lo, c, v, q, tb, tq], int(count))

    def feed(self, fields: Sequence[str], line: int) -> None:
        """One CSV row as fields (``line`` numbers it in errors); an empty row is skipped."""
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            return
        first = not self._seen_any
        self._seen_any = True
        if first and len(fields) == CSV_COLUMNS and _HEADER_NAME.fullmatch(fields[0]) is not None:
            self._header = True  # futures-style "open_time,open,...": names, not values
            return
        if len(fields) != CSV_COLUMNS:
            raise ProtocolError(f"line {line}", f"expected {CSV_COLUMNS} fields, got {len(fields)}")
        # Field by field in row order, as parse_rest_kline_columns: the same first error.
        t = _integer(fields[0], f"line {line} [0] open time")
        texts = [_decimal(fields, j, name, line) for j, name in _DECIMAL_FIELDS]
        close_time = _integer(fields[6], f"line {line} [6] close time")
        count = _integer(fields[8], f"line {line} [8] number of trades")
        self._add(line, t, close_time, texts, count)

    def _add(self, line: int, t_raw: int, close_raw: int, texts: list[str], count: int) -> None:
        """A row whose fields have the right shapes: the checks that relate them, then keep it."""
        # parse_timestamp is the package's one rule for the unit: >= 1e14 is microseconds.
        t = parse_timestamp(t_raw, f"line {line} [0] open time")
        close_time = parse_timestamp(close_raw, f"line {line} [6] close time")
        if count > _BIGINT_MAX:
            raise ProtocolError(f"line {line} [8] number of trades", "out of range")
        if close_time <= t:
            raise ProtocolError(f"line {line} close time", "not after open time")
        o, h, lo, c = texts[0], texts[1], texts[2], texts[3]
        # Temporary Decimals for the comparison only (none is kept), as on the REST path.
        dl, dh, do, dc = Decimal(lo), Decimal(h), Decimal(o), Decimal(c)
        if not dl <= min(do, dc) <= max(do, dc) <= dh:
            raise ProtocolError(f"line {line} high/low", "open/close outside [low, high]")
        micros = t != t_raw
        if t % MINUTE_MS or (micros and t_raw % 1000):
            raise ProtocolError(f"line {line} [0] open time", "not on a minute boundary (not a 1m file?)")
        if not self._start <= t < self._end:
            raise ProtocolError(f"line {line} [0] open time", f"outside {self.file.label}")
        if t < self._next:
            raise ProtocolError(f"line {line} [0] open time", "not increasing")
        if t > self._next:
            self._missing.append((self._next, t))
        self._next = t + MINUTE_MS
        for col, text in zip(self._decimals, texts, strict=True):
            col.append(text)
        self._opens.append(t)
        self._closes.append(close_time)
        self._trades.append(count)
        self._rows += 1
        self._micros += micros

    def coverage(self) -> Coverage:
        """What the rows fed so far cover (call it after the last row)."""
        missing = list(self._missing)
        if self._next < self._end:
            missing.append((self._next, self._end))
        return Coverage(self.file.minutes, self._rows, tuple(missing), self._header, self._micros)


def _integer(text: str, field: str) -> int:
    if _DIGITS.fullmatch(text) is None:
        raise ProtocolError(field, f"expected an integer, got {text[:32]!r}")
    return int(text)


def _decimal(fields: Sequence[str], j: int, name: str, line: int) -> str:
    value = fields[j]
    if len(value) <= 64 and PLAIN_DECIMAL.fullmatch(value) is not None:
        return value  # the exchange's own string: the fast path of every real row
    return parse_decimal_text(value, f"line {line} [{j}] {name}")


class ArchiveReader:
    """A verified zip (any seekable binary file) -> its rows in chunks of ``chunk_rows``,
    decompressed and parsed as they are read: the CSV is never held whole.

    Every way the content can be wrong (not a zip, not one CSV inside, too large for its
    period, a bad CRC, bad text, a bad row) is a :class:`ProtocolError` naming it."""

    def __init__(self, zip_bytes: IO[bytes], file: ArchiveFile, chunk_rows: int = 5000) -> None:
        if chunk_rows < 1:
            raise ValueError("chunk_rows must be >= 1")
        self.file = file
        self._chunk_rows = chunk_rows
        self._parser = KlineCsvParser(file)
        self._line = 0
        self._done = False
        try:
            self._zip = zipfile.ZipFile(zip_bytes)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise ProtocolError("zip", f"not a zip archive ({exc})") from None
        try:
            members = [i for i in self._zip.infolist() if not i.is_dir()]
            if len(members) != 1 or not members[0].filename.endswith(".csv"):
                names = [i.filename for i in members][:5]
                raise ProtocolError("zip", f"expected one CSV file, found {names}")
            if members[0].file_size > file.max_bytes:
                raise ProtocolError(
                    "zip", f"CSV of {members[0].file_size} bytes is too large for {file.label}"
                )
            member = self._zip.open(members[0])
        except ProtocolError:
            self._zip.close()
            raise
        except (zipfile.BadZipFile, RuntimeError, NotImplementedError, OSError, EOFError) as exc:
            self._zip.close()  # RuntimeError: encrypted; NotImplementedError: unknown compression
            raise ProtocolError("zip", str(exc)) from None
        # utf-8-sig: a byte-order mark before the first field is dropped, not parsed.
        self._text = io.TextIOWrapper(member, encoding="utf-8-sig", newline="")

    def next_chunk(self) -> KlineColumns | None:
        """Up to ``chunk_rows`` more rows, or ``None`` after the last one."""
        parser = self._parser
        if self._done:
            return None
        try:
            while parser.pending < self._chunk_rows:
                text = self._text.readline()
                if not text:
                    self._done = True
                    break
                self._line += 1
                parser.feed_line(text.rstrip("\r\n"), self._line)
        except ProtocolError:
            raise
        # A bad CRC (BadZipFile), bad deflate data (zlib.error), text that is not UTF-8.
        except (csv.Error, UnicodeDecodeError, zipfile.BadZipFile, zlib.error, OSError, EOFError) as exc:
            raise ProtocolError(f"line {self._line + 1}", f"unreadable ({exc})") from None
        if parser.pending == 0:
            return None
        return parser.take()

    def coverage(self) -> Coverage:
        return self._parser.coverage()

    def close(self) -> None:
        self._text.close()
        self._zip.close()

    def __enter__(self) -> ArchiveReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def concat_columns(symbol: str, chunks: Sequence[KlineColumns]) -> KlineColumns:
    """Consecutive chunks of one file as one :class:`KlineColumns` (the strings are shared)."""
    out = KlineColumns(symbol, [], [], tuple([] for _ in range(8)), [])
    for chunk in chunks:
        out.open_times.extend(chunk.open_times)
        out.close_times.extend(chunk.close_times)
        for mine, theirs in zip(out.decimals, chunk.decimals, strict=True):
            mine.extend(theirs)
        out.trades.extend(chunk.trades)
    return out
