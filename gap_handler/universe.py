"""The gap handler following the universe (``SYMBOLS`` with a pattern), every ``UNIVERSE_REFRESH_S``
between two scans.

* A listing is added to the scans: its history is filled from ``HISTORY_DAYS`` back, the minutes
  before its first candle proven absent by the exchange's answer (one outage row), as for any hole.
* A halted or delisted symbol is no longer scanned, so nothing is asked for minutes that cannot
  exist; a resumed one is scanned again, and the halt's minutes, proven absent by the first
  answer after it, are one ``gap_unrecoverable`` row whose details say ``reason: symbol_halted``
  (:attr:`gap_handler.engine.Engine.halts`), never a gap retried for ever.

The ``symbol_*`` rows themselves are the feeder's (one row per change, not one per service).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog

from quaint.binance.universe import Resolution, diff
from quaint.service.universe import ordered, refresh

if TYPE_CHECKING:
    from gap_handler.backfills import Backfills

log = structlog.get_logger(__name__)

# exchangeInfo without a symbol weighs 20.
EXCHANGE_INFO_WEIGHT = 20


class GapUniverse:
    def __init__(self, backfills: Backfills, refresh_s: float | None) -> None:
        self.backfills = backfills
        self.refresh_s = refresh_s  # None: a fixed SYMBOLS list, nothing to follow
        self.current: Resolution | None = None
        self.inactive: set[str] = set()  # halted or delisted: not scanned
        self._next = float("inf")

    def start(self, found: Resolution) -> None:
        self.current = found
        self.backfills.add_symbols(ordered(found.trading))
        self.inactive = set(found.halted)

    def due(self, now: float) -> bool:
        if self.refresh_s is None or self.current is None:
            return False
        if self._next == float("inf"):
            self._next = now + self.refresh_s
        return now >= self._next

    def until_due(self, now: float) -> float:
        return max(0.0, self._next - now) if self.refresh_s is not None else float("inf")

    async def refresh(self, now: float) -> None:
        assert self.refresh_s is not None and self.current is not None
        self._next = now + self.refresh_s
        b = self.backfills
        await b.fetcher.acquire(EXCHANGE_INFO_WEIGHT)
        found = await refresh(b.fetcher.client, b.settings.universe)
        if found is None:
            return
        change = diff(self.current, found)
        self.current = found
        if not change:
            return
        at = b.now_ms()
        halts = b.engine.halts
        for symbol in change.halted:
            halts.setdefault(symbol, []).append((at, None))
        for symbol in change.resumed:
            spans = halts.get(symbol) or [(at, None)]
            spans[-1] = (spans[-1][0], at)
            halts[symbol] = spans
        self.inactive = (self.inactive | change.stopped) - change.started
        added = b.add_symbols(sorted(change.listed))
        for symbol in change.started:
            b.request_scan(symbol)
        log.info(
            "universe_followed",
            listed=len(added),
            halted=len(change.halted),
            resumed=len(change.resumed),
            delisted=len(change.delisted),
            scanned=len(b.symbols) - len(self.inactive),
        )
