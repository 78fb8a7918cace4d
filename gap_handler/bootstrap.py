"""History in bulk: ``python -m gap_handler bootstrap --symbols BTCUSDT,ETHUSDT --since 2025-12-01``.

What is missing of ``[since, until)`` for each symbol is filled as the service fills history
(the same workers, units and store path): archive files where archives serve
(``ARCHIVE_ENABLED``, ``ARCHIVE_BASE_URL``), REST for the last ``ARCHIVE_LAG_DAYS`` and for
whatever an archive lacks. A terminal shows one progress line (files, candles, MB, ETA);
anything else gets a log-style line every few seconds. Ends with a summary. Exit codes as
``backfill``: 0 complete, 1 something still missing, 2 bad arguments, 3 no database.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from typing import TextIO

from gap_handler.archive_fill import ArchiveStats
from gap_handler.cli import assembled_handler, progress_bar
from gap_handler.core.intervals import MinuteRange
from gap_handler.core.tracker import RangeTask
from gap_handler.core.validation import BadInput, parse_range, parse_symbol
from gap_handler.service import GapHandler
from gap_handler.settings import GapHandlerSettings
from quaint.service.clock import NowMs, wall_ms
from quaint.service.terminal import StatusLine


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m gap_handler bootstrap", description=__doc__)
    parser.add_argument("--symbols", required=True, help="comma-separated, e.g. BTCUSDT,ETHUSDT")
    parser.add_argument("--since", required=True, help="ISO 8601 date/time (UTC) or epoch ms")
    parser.add_argument("--until", default=None, help="exclusive end; default: now")
    return parser


def render(tasks: list[RangeTask], stats: ArchiveStats, started: float, now: float, *, tty: bool) -> str:
    total = max(sum(t.total_minutes for t in tasks), 1)
    done = sum(t.minutes_done for t in tasks)
    elapsed = max(now - started, 1e-9)
    eta = (total - done) * elapsed / done if done else None
    eta_text = "?" if eta is None else f"{eta:.0f}s"
    mb = stats.bytes / 1e6
    if tty:
        pct = 100 * done / total
        return (
            f"\r{pct:5.1f}% files {stats.files} candles {done}/{total} {mb:.1f} MB "
            f"{done / elapsed:.0f} min/s ETA {eta_text} "
        )
    return f"bootstrap_progress files={stats.files} minutes={done}/{total} mb={mb:.1f} eta={eta_text}\n"


async def _run(
    handler: GapHandler, ranges: dict[str, MinuteRange], out: TextIO, bar: StatusLine | None
) -> list[RangeTask]:
    """The ranges backfilled by the handler's workers, with progress on ``out`` (on a
    terminal: ``bar``, which the log lines pass above)."""

    def draw(text: str) -> None:
        if bar is not None:
            bar.show(text)
        else:
            out.write(text)
            out.flush()

    backfills = handler.backfills
    first = next(iter(ranges))
    await handler.fetcher.load_weight_limit(first)
    await handler.clock.try_sync(max_attempts=1, only_if="unsynced")
    runner = asyncio.create_task(backfills.run())
    stats = backfills.archive.stats if backfills.archive is not None else ArchiveStats()
    started = time.monotonic()
    tty = bar is not None
    interval = 0.2 if tty else 5.0
    try:
        tasks = [await backfills.submit_range(s, r) for s, r in ranges.items()]
        last = float("-inf")
        while not all(t.done for t in tasks):
            if time.monotonic() - last >= interval:
                last = time.monotonic()
                draw(render(tasks, stats, started, last, tty=tty))
            await asyncio.sleep(0.05)  # polls the in-memory tasks; prints every ``interval``
        draw(render(tasks, stats, started, time.monotonic(), tty=tty))
        if bar is not None:
            bar.finish()
    finally:
        backfills.stop()
        await runner
    return tasks


def summary(tasks: list[RangeTask], stats: ArchiveStats, archives: bool, seconds: float) -> str:
    lines = [
        f"{t.symbol}: {t.state}, {t.recovered} candles stored, "
        f"{t.unrecoverable_minutes} minutes the exchange does not have" + (f" ({t.error})" if t.error else "")
        for t in tasks
    ]
    if archives:
        lines.append(
            f"archives: {stats.files} files, {stats.candles} candles, {stats.bytes / 1e6:.1f} MB, "
            f"{stats.fallbacks} fallbacks to REST, {stats.cross_checks} cross-checks, "
            f"{stats.mismatches} mismatches"
        )
    else:
        lines.append("archives: disabled (ARCHIVE_ENABLED=false), REST only")
    lines.append(f"took {seconds:.1f} s")
    return "\n".join(lines) + "\n"


async def run_bootstrap(
    settings: GapHandlerSettings, argv: list[str], out: TextIO = sys.stdout, *, now_ms: NowMs | None = None
) -> int:
    args = build_parser().parse_args(argv)
    try:
        raw = [s for s in args.symbols.split(",") if s.strip()]
        if not raw:
            raise BadInput("--symbols", "required")
        symbols = list(dict.fromkeys(parse_symbol(s, [s.strip().upper()], "--symbols") for s in raw))
        rng = parse_range(
            args.since, args.until, (now_ms or wall_ms)(), start_field="--since", end_field="--until"
        )
    except BadInput as exc:
        print(f"error: {exc.field}: {exc.message}", file=sys.stderr)
        return 2
    settings = settings.model_copy(update={"symbols": symbols})
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        handler = await assembled_handler(stack, settings, now_ms)
        if isinstance(handler, int):
            return handler
        with progress_bar(settings, out) as bar:
            tasks = await _run(handler, dict.fromkeys(symbols, rng), out, bar)
        archive = handler.backfills.archive
        stats = archive.stats if archive is not None else ArchiveStats()
    out.write(summary(tasks, stats, archive is not None, time.monotonic() - started))
    return 0 if all(t.state == "complete" for t in tasks) else 1
