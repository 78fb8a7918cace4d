"""In-process simulator for tests: ``async with running_simulator(speed=60) as sim``.

Starts the real aiohttp app on 127.0.0.1, port 0 (a free port), with real sockets;
point ``BINANCE_WS_URL`` at ``sim.ws_url`` and ``BINANCE_REST_URL`` at ``sim.rest_url``.
Settings come only from the arguments (``SIM_*`` variables are ignored) so tests
are reproducible on any machine.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from quaint.binance.models import Candle
from simulator.app import create_app
from simulator.clock import LiveClock
from simulator.exchange import Exchange
from simulator.faults import FaultController
from simulator.settings import SimSettings
from simulator.state import STATE, SimState
from simulator.stats import Stats
from tests.support.waiting import wait_until


@dataclass(frozen=True)
class SimHandle:
    app: web.Application
    host: str
    port: int

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    @property
    def state(self) -> SimState:
        return self.app[STATE]

    @property
    def faults(self) -> FaultController:
        return self.state.faults

    @property
    def clock(self) -> LiveClock:
        return self.state.clock

    @property
    def exchange(self) -> Exchange:
        return self.state.exchange

    @property
    def stats(self) -> Stats:
        return self.state.stats

    def truth(self, symbol: str, start: int, end: int) -> list[Candle]:
        """Closed candles the exchange has for open times in [start, end), now."""
        return self.exchange.truth(symbol, start, end, self.clock.now_ms())

    async def wait_for(
        self, predicate: Callable[[], bool], within: float = 30.0, what: str = "condition"
    ) -> None:
        """Poll ``predicate`` until true; ``TimeoutError`` after ``within`` seconds."""
        await wait_until(predicate, within, what)


@asynccontextmanager
async def running_simulator(
    settings: SimSettings | None = None,
    *,
    time_source: Callable[[], float] = time.monotonic,
    **overrides: Any,
) -> AsyncIterator[SimHandle]:
    """Run the simulator in this event loop until the block exits.

    Either pass ``settings`` or keyword overrides of ``SimSettings`` fields
    (``speed=60, symbols=["BTCUSDT"], weight_limit=50`` ...)."""
    if settings is None:
        overrides.setdefault("port", 0)
        settings = SimSettings.without_env(**overrides)
    elif overrides:
        raise TypeError("pass either settings or keyword overrides, not both")
    app = create_app(settings, time_source=time_source)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.host, settings.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield SimHandle(app=app, host=str(host), port=int(port))
    finally:
        await runner.cleanup()
