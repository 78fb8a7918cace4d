"""One-shot range backfill: ``python -m gap_handler backfill --symbol BTCUSDT --since 2025-01-01``.

Runs on the same resources and parts as the service (:func:`quaint.service.lifecycle.open_resources`,
:func:`gap_handler.service.assemble`), without its scans and loops. Exit 0 only when the
range is complete (every minute stored or proven absent at the exchange); 1 when something
is still missing; 2 for bad arguments; 3 when the database cannot be used (as the services).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

import aiohttp
import structlog
from prometheus_client import CollectorRegistry

from gap_handler.core.intervals import MinuteRange
from gap_handler.core.tracker import RangeTask
from gap_handler.core.validation import BadInput, parse_range, parse_symbol
from gap_handler.service import GapHandler, assemble
from gap_handler.settings import GapHandlerSettings
from quaint.binance.rest_client import ApiRejected, RestClient, RestError
from quaint.service.clock import NowMs, wall_ms
from quaint.service.lifecycle import (
    EXIT_DATABASE_UNAVAILABLE,
    START_ERRORS,
    DataOriginMismatch,
    open_resources,
)
from quaint.service.logging import configure_logging
from quaint.service.terminal import StatusLine
from quaint.store.errors import describe

log = structlog.get_logger(__name__)
_BAR = 30


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gap_handler backfill", description=__doc__)
    parser.add_argument("--symbol", required=True, help="e.g. BTCUSDT (must be in SYMBOLS)")
    parser.add_argument("--since", required=True, help="ISO 8601 date/time (UTC) or epoch ms")
    parser.add_argument("--until", default=None, help="exclusive end; default: now")
    return parser


def render_progress(task: RangeTask, now: float, *, tty: bool) -> str:
    """One progress line: a bar on a terminal, plain key=value text otherwise."""
    total = max(task.total_minutes, 1)
    done = task.minutes_done
    eta = task.eta_s(now)
    eta_text = "?" if eta is None else f"{eta:.0f}s"
    rate = task.rate_per_s(now)
    if tty:
        filled = int(_BAR * done / total)
        bar = "#" * filled + "." * (_BAR - filled)
        pct = 100 * done / total
        return f"\r[{bar}] {pct:5.1f}% {done}/{task.total_minutes} min {rate:.0f} min/s ETA {eta_text} "
    return (
        f"progress symbol={task.symbol} done={done} total={task.total_minutes} "
        f"rate={rate:.0f}/s eta={eta_text}\n"
    )


async def _watch(task: RangeTask, draw: Callable[[str], None], tty: bool, interval: float) -> None:
    last = float("-inf")
    while not task.done:
        if time.monotonic() - last >= interval:
            last = time.monotonic()
            draw(render_progress(task, last, tty=tty))
        await asyncio.sleep(0.05)  # polls the in-memory task; prints every ``interval``


async def _backfill(
    handler: GapHandler, symbol: str, rng: MinuteRange, out: TextIO, bar: StatusLine | None
) -> RangeTask:
    """``rng`` of ``symbol`` backfilled by the handler's workers, with progress on ``out``
    (on a terminal: ``bar``, which the log lines pass above)."""

    def draw(text: str) -> None:
        if bar is not None:
            bar.show(text)
        else:
            out.write(text)
            out.flush()

    await handler.fetcher.load_weight_limit(symbol)
    await handler.clock.try_sync(max_attempts=1, only_if="unsynced")  # the range's end: the exchange's now
    runner = asyncio.create_task(handler.backfills.run())
    try:
        task = await handler.backfills.submit_range(symbol, rng)
        tty = bar is not None
        await _watch(task, draw, tty, 0.2 if tty else 5.0)
        draw(render_progress(task, time.monotonic(), tty=tty))
        if bar is not None:
            bar.finish()
    finally:
        handler.backfills.stop()
        await runner
    return task


async def unlisted_symbol(settings: GapHandlerSettings, symbol: str) -> str | None:
    """Why the exchange refuses ``symbol`` (exchangeInfo answers -1121), or None. Asked
    first: a symbol it does not list would only collect one rejected klines page per unit."""
    async with aiohttp.ClientSession() as session:
        client = RestClient(session, settings.binance_rest_url, timeout_s=settings.rest_timeout_s)
        try:
            await client.exchange_limits(symbol)
        except ApiRejected as exc:
            return f"{symbol} is not listed by the exchange at {settings.binance_rest_url} ({exc.msg})"
        except RestError:
            return None  # not answering now: the backfill's own retries decide
    return None


async def assembled_handler(
    stack: contextlib.AsyncExitStack, settings: GapHandlerSettings, now_ms: NowMs | None
) -> GapHandler | int:
    """The service's parts on the process's resources (closed with ``stack``), for a one-shot
    command; or its exit code, after one line: 3 for a database that cannot be used, 2 for
    one of the other data origin."""
    try:
        resources = await stack.enter_async_context(open_resources(settings))
        return await assemble(settings, resources, registry=CollectorRegistry(), now_ms=now_ms)
    except START_ERRORS as exc:
        print(f"error: the database cannot be used: {describe(exc)}", file=sys.stderr)
        return EXIT_DATABASE_UNAVAILABLE
    except DataOriginMismatch as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


@contextlib.contextmanager
def progress_bar(settings: GapHandlerSettings, out: TextIO) -> Iterator[StatusLine | None]:
    """On a terminal, a status line on ``out`` with the log lines passing above it (and the
    log back on plain stderr afterwards); elsewhere None: progress goes out as lines."""
    if not out.isatty():
        yield None
        return
    bar = StatusLine(out)
    configure_logging(settings.log_level, settings.log_format, stream=bar.above(sys.stderr))
    try:
        yield bar
    finally:
        configure_logging(settings.log_level, settings.log_format, stream=sys.stderr)


async def run_backfill(
    settings: GapHandlerSettings, argv: list[str], out: TextIO = sys.stdout, *, now_ms: NowMs | None = None
) -> int:
    args = build_parser().parse_args(argv)
    try:
        symbol = parse_symbol(args.symbol, [args.symbol.strip().upper()], "--symbol")
        rng = parse_range(
            args.since, args.until, (now_ms or wall_ms)(), start_field="--since", end_field="--until"
        )
    except BadInput as exc:
        print(f"error: {exc.field}: {exc.message}", file=sys.stderr)
        return 2
    # Any symbol the exchange lists may be backfilled, not only the configured ones.
    if (problem := await unlisted_symbol(settings, symbol)) is not None:
        print(f"error: --symbol: {problem}", file=sys.stderr)
        return 2
    settings = settings.model_copy(update={"symbols": [symbol]})
    async with contextlib.AsyncExitStack() as stack:
        handler = await assembled_handler(stack, settings, now_ms)
        if isinstance(handler, int):
            return handler
        with progress_bar(settings, out) as bar:
            task = await _backfill(handler, symbol, rng, out, bar)
    note = f" ({task.error})" if task.error else ""
    print(
        f"{task.state}: {task.recovered} candles recovered, "
        f"{task.unrecoverable_minutes} minutes the exchange does not have{note}",
        file=out,
    )
    return 0 if task.state == "complete" else 1
