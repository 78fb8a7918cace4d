"""``data_quality_logs`` rows the feeder writes, built from plain values (pure)."""

from __future__ import annotations

from feeder.core.accumulator import DropReport
from feeder.core.gaps import Gap, minute_ranges
from quaint.binance.models import ms_to_datetime
from quaint.store.quality_event import QualityEvent

SOURCE = "feeder"


def gap_event(gap: Gap) -> QualityEvent:
    return QualityEvent(
        event_type="gap_detected",
        symbol=gap.symbol,
        gap_start=ms_to_datetime(gap.start),
        gap_end=ms_to_datetime(gap.end),
        candles_missing=gap.missing,
        source=SOURCE,
        message=f"{gap.missing} closed candle(s) missing ({gap.reason})",
        details={"reason": gap.reason},
        resolved=False,
    )


def reconnect_event(symbols: list[str], reason: str, connection: int, attempt: int) -> QualityEvent:
    return QualityEvent(
        event_type="ws_reconnect",
        source=SOURCE,
        message=f"websocket connection {connection} reconnecting: {reason}",
        # Symbols are listed only for small connections: 512 names per row is noise.
        details={
            "reason": reason,
            "connection": connection,
            "attempt": attempt,
            "symbols": symbols if len(symbols) <= 20 else len(symbols),
        },
    )


def outage_event(started_wall_ms: int, ended_wall_ms: int, rows_buffered: int, error: str) -> QualityEvent:
    duration = max(0, ended_wall_ms - started_wall_ms) / 1000.0
    return QualityEvent(
        event_type="db_unavailable",
        source=SOURCE,
        message=f"database unavailable for {duration:.1f} s",
        details={
            "started_at": ms_to_datetime(started_wall_ms).isoformat(),
            "ended_at": ms_to_datetime(ended_wall_ms).isoformat(),
            "duration_s": duration,
            "rows_buffered": rows_buffered,
            "error": error,
        },
        resolved=True,
        resolved_at=ms_to_datetime(ended_wall_ms),
    )


def drop_events(report: DropReport) -> list[QualityEvent]:
    """One ``data_dropped`` summary, plus a ``gap_detected`` per run of dropped candle
    minutes so that the gap handler backfills them (book ticks cannot be recovered)."""
    events = [
        QualityEvent(
            event_type="data_dropped",
            source=SOURCE,
            message=(
                f"buffer full while the database was unavailable: dropped {report.ticks} book tick(s), "
                f"{report.candles} candle(s), {report.events} event(s)"
            ),
            details={
                "book_ticks": report.ticks_by_symbol,
                "candles": {s: len(t) for s, t in report.candles_by_symbol.items()},
                "events": report.events,
                "recoverable": "candles (backfill); book ticks are lost",
            },
        )
    ]
    for symbol, times in sorted(report.candles_by_symbol.items()):
        for start, end in minute_ranges(times):
            events.append(gap_event(Gap(symbol, start, end, "dropped")))
    return events


_UNIVERSE_MESSAGES = {
    "symbol_listed": "newly listed: subscribed",
    "symbol_halted": "left TRADING (halted): unsubscribed",
    "symbol_resumed": "TRADING again: subscribed",
    "symbol_delisted": "gone from exchangeInfo (delisted): unsubscribed",
}


def universe_event(kind: str, symbol: str, wall_ms: int) -> QualityEvent:
    """One ``symbol_*`` row per change the universe refresh saw (``kind`` from
    :meth:`quaint.binance.universe.UniverseChange.events`)."""
    return QualityEvent(
        event_type=kind,
        symbol=symbol,
        source=SOURCE,
        message=f"{symbol} {_UNIVERSE_MESSAGES[kind]}",
        details={"seen_at": ms_to_datetime(wall_ms).isoformat()},
    )
