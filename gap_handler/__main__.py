"""``python -m gap_handler`` (the service) or ``python -m gap_handler backfill ...`` (one shot)."""

from __future__ import annotations

import asyncio
import sys

import structlog

from gap_handler.api import SUPERVISOR_KEY, build_app
from gap_handler.cli import run_backfill
from gap_handler.settings import GapHandlerSettings
from quaint.service.logging import configure_logging
from quaint.service.runtime import install_stop_signals, run, start_http
from quaint.service.settings import load_settings

log = structlog.get_logger("gap_handler")


async def serve(settings: GapHandlerSettings) -> int:
    stop = asyncio.Event()
    install_stop_signals(stop)
    app = build_app(settings)
    runner = await start_http(app, settings.gap_handler_host, settings.gap_handler_port)
    log.info("gap_handler_started", host=settings.gap_handler_host, port=settings.gap_handler_port,
             symbols=settings.symbols)  # fmt: skip
    supervisor = app[SUPERVISOR_KEY]
    stopper = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({stopper, supervisor}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        await runner.cleanup()
    if supervisor.done() and not supervisor.cancelled() and supervisor.exception() is not None:
        log.error("gap_handler_failed", error=repr(supervisor.exception()))
        return 1
    log.info("gap_handler_stopped")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    settings = load_settings(GapHandlerSettings)
    configure_logging(settings.log_level, settings.log_format, stream=sys.stderr if args else None)
    if args and args[0] == "backfill":
        return run(lambda: run_backfill(settings, args[1:]), use_uvloop=settings.use_uvloop)
    if args:
        print("usage: python -m gap_handler [backfill --symbol SYMBOL --since TIME [--until TIME]]",
              file=sys.stderr)  # fmt: skip
        return 2
    return run(lambda: serve(settings), use_uvloop=settings.use_uvloop)


if __name__ == "__main__":
    sys.exit(main())
