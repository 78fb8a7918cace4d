"""``COPY ... FROM STDIN`` in PostgreSQL's text format, built from exact strings.

Why not asyncpg's ``copy_records_to_table``: its binary format encodes every
``Decimal`` (and ``datetime``) row by row at about 7 µs per book-tick row of client
CPU, the feeder's largest single cost under load (bench/ingest.py), against about
1.5 µs for this text form. ``str(Decimal)`` is exact (it is the exchange's own string,
or scientific notation such as ``1E-8`` that ``numeric_in`` reads to the same value
and scale), so the server parses each NUMERIC from the digits Binance sent: nothing
is rounded on the way.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import asyncpg

# COPY text format: backslash, tab, newline and carriage return must be escaped.
_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


class TextEncoder:
    """Values as COPY text. A feed stamps thousands of rows per second with a few
    hundred symbols, so the encoder remembers the text of the seconds and strings it
    has made (at most ``cache_max`` of each): one encoder per writer, kept for its life.
    What it returns never depends on what it encoded before."""

    __slots__ = ("_cache_max", "_seconds", "_strings")

    def __init__(self, cache_max: int = 4096) -> None:
        self._cache_max = cache_max
        self._seconds: dict[int, str] = {}
        self._strings: dict[str, str] = {}

    def timestamp(self, ms: int) -> str:
        """Epoch ms -> ``YYYY-MM-DD HH:MM:SS.mmm+00``, exact to the millisecond."""
        second, millis = divmod(ms, 1000)
        prefix = self._seconds.get(second)
        if prefix is None:
            if len(self._seconds) >= self._cache_max:
                self._seconds.clear()
            prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%d %H:%M:%S")
            self._seconds[second] = prefix
        return f"{prefix}.{millis:03d}+00"

    def text(self, value: str) -> str:
        """A string escaped for the text format."""
        safe = self._strings.get(value)
        if safe is None:
            safe = value.translate(_ESCAPES)
            if len(self._strings) < self._cache_max:
                self._strings[value] = safe
        return safe


async def copy_text(
    conn: asyncpg.Connection, table: str, columns: Sequence[str], lines: Sequence[str]
) -> None:
    """COPY ``lines`` (each one row, fields tab-separated, ending in a newline)."""
    payload = "".join(lines).encode()

    async def source() -> AsyncIterator[bytes]:
        # An async iterable, not a file object: asyncpg reads files in a thread.
        yield payload

    await conn.copy_to_table(table, source=source(), columns=list(columns), format="text")
