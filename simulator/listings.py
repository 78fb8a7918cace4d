"""The simulated market's size and its symbols' lives: generated universes, listings, halts and
delistings (sans-I/O).

* ``--symbol-count N`` lists N symbols: the ``--symbols`` given first (the liquid ones), then
  generated pairs (``XAB`` + a quote asset: mostly USDT, then FDUSD, USDC, BTC, TRY), each a
  plausible market of its own (:func:`quaint.binance.symbols.make_profile`).
* Book activity is skewed as on Binance: the symbol of rank ``r`` updates its bookTicker every
  ``book_period(r)`` ticks of the book loop, 1 for the first three (``--book-rate`` times a
  second), doubling every few ranks, up to 256 (a few updates a minute) for the long tail.
* ``--listing SYMBOL@WHEN``: the symbol is absent from exchangeInfo and has no minute before
  WHEN; ``--halt SYMBOL@A..B``: status ``BREAK`` and no minute in ``[A, B)``, ``TRADING`` again
  after; ``--delisting SYMBOL@WHEN``: gone from exchangeInfo, no minute from WHEN on.
  Times as in ``--outage`` (ms, ISO-8601 or ``+minutes`` after the start minute).

Every answer (REST, truth, streams, archives) asks :meth:`Calendar.has_minute` through the
exchange, so they agree on what a halted or unlisted symbol has: nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from quaint.binance.models import MINUTE_MS

_QUOTE_MIX = ("USDT",) * 6 + ("FDUSD", "FDUSD", "USDC", "BTC", "TRY")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_EVENT_RE = re.compile(r"^([A-Za-z0-9]{2,20})@(.+)$")
MAX_BOOK_PERIOD = 256
_FOREVER = 1 << 62


class CalendarError(ValueError):
    """A bad --listing / --halt / --delisting value."""


def generated_symbols(count: int, given: list[str]) -> list[str]:
    """``given`` first, then generated names until ``count`` (never a duplicate)."""
    out = list(dict.fromkeys(given))
    seen = set(out)
    i = 0
    while len(out) < count:
        n, letters = i, ""
        for _ in range(3):
            n, digit = divmod(n, 26)
            letters = _LETTERS[digit] + letters
        name = f"X{letters}{_QUOTE_MIX[i % len(_QUOTE_MIX)]}"
        i += 1
        if name not in seen:
            seen.add(name)
            out.append(name)
    return out


def book_period(rank: int) -> int:
    """Book loop ticks between two updates of the symbol of ``rank`` (0: the most liquid)."""
    period = 1
    while period < MAX_BOOK_PERIOD and rank >= 3 * (2 * period - 1):
        period *= 2
    return period


def split_event(spec: str) -> tuple[str, str]:
    m = _EVENT_RE.match(spec)
    if m is None:
        raise CalendarError(f"bad value {spec!r}: expected SYMBOL@TIME (or SYMBOL@START..END for --halt)")
    return m.group(1).upper(), m.group(2)


@dataclass
class SymbolLife:
    listed_at: int = 0  # ms: no minute opens before it
    delisted_at: int = _FOREVER  # ms: no minute opens at or after it
    halts: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class Calendar:
    lives: dict[str, SymbolLife] = field(default_factory=dict)

    def _life(self, symbol: str) -> SymbolLife:
        return self.lives.setdefault(symbol, SymbolLife())

    def list_at(self, symbol: str, at_ms: int) -> None:
        self._life(symbol).listed_at = -(-at_ms // MINUTE_MS) * MINUTE_MS

    def delist_at(self, symbol: str, at_ms: int) -> None:
        self._life(symbol).delisted_at = -(-at_ms // MINUTE_MS) * MINUTE_MS

    def halt(self, symbol: str, start_ms: int, end_ms: int) -> None:
        if end_ms <= start_ms:
            raise CalendarError("a halt must end after it starts")
        first = -(-start_ms // MINUTE_MS) * MINUTE_MS
        self._life(symbol).halts.append((first, end_ms))

    def has_minute(self, symbol: str, open_time: int) -> bool:
        life = self.lives.get(symbol)
        if life is None:
            return True
        if not life.listed_at <= open_time < life.delisted_at:
            return False
        return not any(a <= open_time < b for a, b in life.halts)

    def blocked(self, symbol: str) -> list[tuple[int, int]]:
        """The ``[start, end)`` spans with no minute (for scans that jump over them)."""
        life = self.lives.get(symbol)
        if life is None:
            return []
        spans = [(0, life.listed_at)] if life.listed_at > 0 else []
        spans += life.halts
        if life.delisted_at < _FOREVER:
            spans.append((life.delisted_at, _FOREVER))
        return spans

    def listed(self, symbol: str, now_ms: int) -> bool:
        """In exchangeInfo at ``now_ms``."""
        life = self.lives.get(symbol)
        return life is None or life.listed_at <= now_ms < life.delisted_at

    def status(self, symbol: str, now_ms: int) -> str:
        """exchangeInfo's status: BREAK during a halt, TRADING otherwise (when listed)."""
        life = self.lives.get(symbol)
        if life is not None and any(a <= now_ms < b for a, b in life.halts):
            return "BREAK"
        return "TRADING"
