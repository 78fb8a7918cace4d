"""Stale-stream decisions (sans-I/O): which symbols have gone quiet for too long.

A symbol is stale when no closed candle arrived for ``timeout_s`` (monotonic time)
since the later of its last closed candle and the moment its connection was (re)armed.
The first staleness recycles the connection (the usual cure: a half-dead socket or a
stalled server). If the symbol is still silent after that, reconnecting again every
``timeout_s`` would only churn the other symbols sharing the connection (a halted or
delisted market is silent on every connection), so each consecutive strike doubles
that symbol's allowance, up to ``max_factor`` times the timeout. A closed candle
clears the strikes.
"""

from __future__ import annotations

from collections.abc import Iterable


class StaleWatchdog:
    def __init__(self, timeout_s: float, max_factor: int = 64) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout must be positive")
        self.timeout_s = timeout_s
        self.max_factor = max_factor
        self._last_closed: dict[str, float] = {}
        self._armed: dict[str, float] = {}
        self._strikes: dict[str, int] = {}

    def arm(self, symbols: Iterable[str], now: float) -> None:
        """A connection carrying ``symbols`` was just opened: restart their clocks."""
        for symbol in symbols:
            self._armed[symbol] = now

    def on_closed(self, symbol: str, now: float) -> None:
        self._last_closed[symbol] = now
        if self._strikes:
            self._strikes.pop(symbol, None)

    def since_last_closed(self, symbol: str, now: float) -> float | None:
        last = self._last_closed.get(symbol)
        return None if last is None else now - last

    def _allowance(self, symbol: str) -> float:
        factor: int = min(2 ** self._strikes.get(symbol, 0), self.max_factor)
        return self.timeout_s * factor

    def _silent_for(self, symbol: str, now: float) -> float | None:
        """Time since the later of the last closed candle and the arming (None: not armed)."""
        armed = self._armed.get(symbol)
        if armed is None:
            return None
        return now - max(armed, self._last_closed.get(symbol, armed))

    def stale(self, symbols: Iterable[str], now: float) -> list[str]:
        """Symbols past their allowance; each one returned gets a strike, so the caller
        acts on it once per allowance."""
        out = []
        for symbol in symbols:
            silent = self._silent_for(symbol, now)
            if silent is not None and silent > self._allowance(symbol):
                out.append(symbol)
        for symbol in out:
            self._strikes[symbol] = self._strikes.get(symbol, 0) + 1
            self._armed[symbol] = now  # the next allowance counts from this decision
        return out

    def is_stale(self, symbol: str, now: float) -> bool:
        """For health: struck and not recovered yet, or silent for longer than the base
        timeout (no strike taken)."""
        if symbol in self._strikes:
            return True
        silent = self._silent_for(symbol, now)
        return silent is not None and silent > self.timeout_s
