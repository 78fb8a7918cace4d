"""Process plumbing shared by the services: event loop choice, stop signals, HTTP site."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from aiohttp import web

log = structlog.get_logger(__name__)


def install_stop_signals(stop: asyncio.Event) -> None:
    """SIGTERM/SIGINT set ``stop``: the service stops intake, flushes, then exits 0."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, _on_signal, stop, sig)


def _on_signal(stop: asyncio.Event, sig: signal.Signals) -> None:
    log.info("stop_requested", signal=sig.name)
    stop.set()


async def start_http(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start serving ``app``; the caller owns ``await runner.cleanup()``."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, host, port, reuse_address=True).start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    """The port actually bound (useful when 0 was asked for)."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("the HTTP site is not bound to a TCP port")


def freeze_start_up_heap() -> None:
    """Keep what start-up allocated (modules, settings, the pool, the app, the tasks) out of
    the cyclic collector's scans: it lives as long as the process, and a full collection
    walking all of it held the event loop ~25 ms every couple of minutes while finding
    nothing (the feeder's closed candles waited for it: ``python -m bench latency``).
    Collected first, so no garbage is kept with it (the ``gc.freeze`` recipe)."""
    gc.collect()
    gc.freeze()


def run(main: Callable[[], Coroutine[Any, Any, int]], *, use_uvloop: bool) -> int:
    """Run ``main`` on uvloop when available and asked for, else asyncio's loop."""
    if use_uvloop:
        try:
            import uvloop
        except ImportError:  # e.g. Windows: fall back silently, the service still works
            pass
        else:
            return int(uvloop.run(main()))
    return asyncio.run(main())
