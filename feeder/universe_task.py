"""The feeder following the universe at run time (``SYMBOLS`` with a pattern).

Every ``UNIVERSE_REFRESH_S`` exchangeInfo is resolved again (:mod:`quaint.service.universe`) and
compared with the set followed (:func:`quaint.binance.universe.diff`). A symbol that left
``TRADING`` (halted, delisted) is unsubscribed on its connection (``UNSUBSCRIBE``); a new listing or a
resumed symbol goes on a connection with room (``SUBSCRIBE`` on the open socket, paced under
Binance's 5 messages a second), else on a new connection (opened under the connection-rate
limits). Each change is one ``data_quality_logs`` row (``symbol_listed``, ``symbol_halted``,
``symbol_resumed``, ``symbol_delisted``) and a count in ``feeder_universe_changes_total``. A failed
refresh keeps the current set and tries again at the next period.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from feeder.core.events import universe_event
from quaint.binance.rest_client import RestClient
from quaint.binance.universe import Resolution, UniverseChange, diff
from quaint.service.clock import wall_ms
from quaint.service.universe import refresh

if TYPE_CHECKING:
    from feeder.service import Feeder

log = structlog.get_logger(__name__)


class UniverseFollower:
    def __init__(self, feeder: Feeder, rest: RestClient, current: Resolution) -> None:
        self.feeder = feeder
        self.rest = rest
        self.current = current
        self.refreshes = 0

    async def run(self) -> None:
        period = self.feeder.settings.universe_refresh_s
        while True:
            await asyncio.sleep(period)
            await self.refresh_once()

    async def refresh_once(self) -> UniverseChange | None:
        found = await refresh(self.rest, self.feeder.settings.universe)
        if found is None:
            return None
        self.refreshes += 1
        change = diff(self.current, found)
        self.current = found
        if change:
            await self.apply(change)
        return change

    async def apply(self, change: UniverseChange) -> None:
        f = self.feeder
        stopped, started = change.stopped, sorted(change.started)
        for slot in f.slots:
            gone = [s for s in slot.symbols if s in stopped]
            if gone:
                await slot.remove_symbols(gone)
        f.symbols[:] = [s for s in f.symbols if s not in stopped]
        f.symbols.extend(s for s in started if s not in f.symbols)
        f.router.set_symbols(f.symbols)
        pending = [s for s in started if s not in f.slot_of]
        for slot in f.slots:
            if not pending:
                break
            if slot.state.fatal is None and slot.room > 0:
                take, pending = pending[: slot.room], pending[slot.room :]
                f.slot_of.update(dict.fromkeys(take, slot.plan.index))
                await slot.add_symbols(take)
        while pending:
            per = f.slots[0].capacity if f.slots else f.settings.streams_per_connection
            take, pending = pending[:per], pending[per:]
            f.spawn_slot(take)
        for symbol in change.stopped:
            f.slot_of.pop(symbol, None)
        now = wall_ms()
        for kind, symbol in change.events():
            f.acc.add_event(universe_event(kind, symbol, now), f.clock())
            f.metrics.universe_changes.labels(kind.removeprefix("symbol_")).inc()
            log.info("universe_change", change=kind, symbol=symbol)
        log.info(
            "universe_followed",
            symbols=len(f.symbols),
            connections=len(f.slots),
            listed=len(change.listed),
            halted=len(change.halted),
            resumed=len(change.resumed),
            delisted=len(change.delisted),
        )
