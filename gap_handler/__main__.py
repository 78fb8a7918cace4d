"""``python -m gap_handler`` (the service) or ``python -m gap_handler backfill ...`` (one shot)."""

from __future__ import annotations

import os
import sys

from gap_handler import service
from gap_handler.bootstrap import run_bootstrap
from gap_handler.cli import run_backfill
from gap_handler.settings import GapHandlerSettings
from quaint.service.clock import NowMs
from quaint.service.lifecycle import EXIT_BAD_CONFIG, serve
from quaint.service.local_suite import refusal, running_local_suite
from quaint.service.logging import configure_logging
from quaint.service.runtime import run
from quaint.service.settings import load_settings

USAGE = (
    "usage: python -m gap_handler [backfill --symbol SYMBOL --since TIME [--until TIME]"
    " | bootstrap --symbols SYM1,SYM2 --since TIME [--until TIME]]"
)


def main(argv: list[str] | None = None, *, now_ms: NowMs | None = None) -> int:
    """``now_ms``: the local clock (default: the host's, see :func:`gap_handler.service.assemble`);
    the chaos run passes the simulator's."""
    args = sys.argv[1:] if argv is None else argv
    one_shot = bool(args) and args[0] in ("backfill", "bootstrap")
    # Not localhost:5432 and the real Binance by default next to a local suite (exit 2).
    if one_shot and (run_dir := running_local_suite(os.environ)) is not None:
        print(refusal(f"gap_handler {args[0]}", run_dir), file=sys.stderr)
        return EXIT_BAD_CONFIG
    settings = load_settings(GapHandlerSettings)
    configure_logging(settings.log_level, settings.log_format, stream=sys.stderr if args else None)
    if args and args[0] == "backfill":
        return run(lambda: run_backfill(settings, args[1:], now_ms=now_ms), use_uvloop=settings.use_uvloop)
    if args and args[0] == "bootstrap":
        return run(lambda: run_bootstrap(settings, args[1:], now_ms=now_ms), use_uvloop=settings.use_uvloop)
    if args:
        print(USAGE, file=sys.stderr)
        return EXIT_BAD_CONFIG
    return run(lambda: serve(service.spec(settings, now_ms=now_ms)), use_uvloop=settings.use_uvloop)


if __name__ == "__main__":
    sys.exit(main())
