"""``python -m feeder``: stream Binance spot 1m candles and best bid/ask into TimescaleDB."""

from __future__ import annotations

import asyncio

from feeder.service import Feeder, serve
from feeder.settings import FeederSettings
from quaint.service.logging import configure_logging
from quaint.service.runtime import install_stop_signals, run
from quaint.service.settings import load_settings


async def _amain(settings: FeederSettings) -> int:
    stop = asyncio.Event()
    install_stop_signals(stop)
    return await serve(Feeder(settings), stop)


def main() -> int:
    settings = load_settings(FeederSettings)
    configure_logging(settings.log_level, settings.log_format)
    return run(lambda: _amain(settings), use_uvloop=settings.use_uvloop)


if __name__ == "__main__":
    raise SystemExit(main())
