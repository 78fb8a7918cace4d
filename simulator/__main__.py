"""``python -m simulator``: run the Binance-compatible exchange simulator.

Flags mirror the ``SimSettings`` fields (``--book-rate`` <-> ``SIM_BOOK_RATE``); flags
override environment variables. Invalid settings print one line per bad value and
exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

import structlog
from aiohttp import web
from pydantic import ValidationError

from quaint.service.logging import configure_logging
from quaint.service.runtime import freeze_start_up_heap
from simulator.settings import SimSettings, describe_errors

_REPEATABLE = {"feed_gap", "outage", "listing", "halt", "delisting"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # One clear line and status 2, instead of argparse's usage dump.
        self.exit(2, f"{self.prog}: error: {message}\n")


def _metavar(name: str, annotation: object) -> str:
    if name.endswith("_s") and not name.endswith("_per_s"):
        return "SECONDS"
    if annotation is int:
        return "N"
    if annotation is float:
        return "P" if name.endswith("probability") else "X"
    return name.rsplit("_", 1)[-1].upper()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m simulator",
        description="Binance spot market-data simulator (REST + WebSocket on one port).",
        argument_default=argparse.SUPPRESS,
    )
    for name, info in SimSettings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = (info.description or "") + f" [env SIM_{name.upper()}]"
        if info.annotation is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=help_text)
        elif name in _REPEATABLE:
            metavar = "START..END" if name in ("feed_gap", "outage") else "SYMBOL@WHEN"
            parser.add_argument(flag, action="append", metavar=metavar, help=help_text + " (repeatable)")
        else:
            parser.add_argument(flag, metavar=_metavar(name, info.annotation), help=help_text)
    return parser


def load_settings(argv: list[str] | None = None) -> SimSettings:
    """CLI flags over ``SIM_*`` variables; exits with status 2 on bad values."""
    args = vars(build_parser().parse_args(argv))
    values: dict[str, Any] = {}
    for name, value in args.items():
        if name in _REPEATABLE:
            values[name] = [part for item in value for part in item.split(",") if part]
        else:
            values[name] = value
    try:
        return SimSettings(**values)
    except ValidationError as exc:
        for line in describe_errors(exc):
            print(f"python -m simulator: {line}", file=sys.stderr)
        raise SystemExit(2) from None


async def _freeze_heap(_app: web.Application) -> None:
    # A full collection walking the start-up heap paused the stream ~25 ms now and then: a
    # frame queued for one connection went out that much after the same frame on another.
    freeze_start_up_heap()


def main(argv: list[str] | None = None) -> None:
    settings = load_settings(argv)
    configure_logging(settings.log_level, settings.log_format)
    from simulator.app import create_app

    try:
        app = create_app(settings)
    except (OSError, ValueError) as exc:  # e.g. an unreadable or malformed replay CSV
        print(f"python -m simulator: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    app.on_startup.append(_freeze_heap)  # last: after the app's own start-up
    structlog.get_logger("simulator").info(
        "simulator_starting",
        host=settings.host,
        port=settings.port,
        symbols=settings.symbols if len(settings.symbols) <= 20 else len(settings.symbols),
        speed=settings.speed,
    )
    web.run_app(
        app, host=settings.host, port=settings.port, access_log=None, print=None, shutdown_timeout=3.0
    )


if __name__ == "__main__":
    main()
