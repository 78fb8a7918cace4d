"""The simulator's shared state, kept on the aiohttp application under ``STATE``."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from aiohttp import web

from quaint.binance.rules import WeightLimiter
from simulator.clock import LiveClock
from simulator.exchange import Exchange
from simulator.faults import FaultController
from simulator.hub import Hub
from simulator.market import MarketModel
from simulator.schedule import BookSequencer, KlineScheduler
from simulator.settings import SimSettings
from simulator.stats import Stats


@dataclass(eq=False)
class SimState:
    settings: SimSettings
    clock: LiveClock
    market: MarketModel
    faults: FaultController
    exchange: Exchange
    hub: Hub
    stats: Stats
    limiter: WeightLimiter
    klines: KlineScheduler
    books: BookSequencer
    # Set whenever the clock mapping changes, so schedulers sleeping towards a
    # simulated instant wake up and recompute their wall delay.
    clock_changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def symbol_set(self) -> frozenset[str]:
        return frozenset(self.market.symbols)


STATE = web.AppKey("simulator_state", SimState)
