"""``python -m feeder``: stream Binance spot 1m candles and best bid/ask into TimescaleDB."""

from __future__ import annotations

from feeder import service
from feeder.settings import FeederSettings
from quaint.service.lifecycle import serve
from quaint.service.logging import configure_logging
from quaint.service.runtime import run
from quaint.service.settings import load_settings


def main() -> int:
    settings = load_settings(FeederSettings)
    configure_logging(settings.log_level, settings.log_format)
    return run(lambda: serve(service.spec(settings)), use_uvloop=settings.use_uvloop)


if __name__ == "__main__":
    raise SystemExit(main())
