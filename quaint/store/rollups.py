"""The rollups (``candles_5m`` ... ``candles_1d``, defined in ``timescaledb/init.sql``):
reading bars of any interval, and bringing continuous aggregates up to date after a
repair.

On the Apache licence the rollups are views over ``candles_1m``: always current, so
:func:`refresh_rollups` does nothing. On the Community licence they are hierarchical
continuous aggregates whose refresh policy only covers the recent window: a repaired
minute older than that would never reach its 5m/1h/1d rows, so every writer of old
minutes (a backfill unit, an archive import) calls :func:`refresh_rollups` for the range
it touched. ``refresh_continuous_aggregate`` cannot run inside a transaction block: pass
a connection that is not in one (a pooled asyncpg connection is in autocommit).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

import asyncpg

from quaint.binance.models import datetime_to_ms, ms_to_datetime
from quaint.store.candles import VALUE_COLUMNS, row_values

# Interval name -> (relation, bucket width). Parents before children: a hierarchical
# aggregate refreshes from its parent's materialisation, so the order matters.
ROLLUPS: dict[str, tuple[str, timedelta]] = {
    "1m": ("candles_1m", timedelta(minutes=1)),
    "5m": ("candles_5m", timedelta(minutes=5)),
    "15m": ("candles_15m", timedelta(minutes=15)),
    "1h": ("candles_1h", timedelta(hours=1)),
    "4h": ("candles_4h", timedelta(hours=4)),
    "1d": ("candles_1d", timedelta(days=1)),
}

# time_bucket's default origin for these widths is aligned to the UNIX epoch at whole days
# (2000-01-03 is a multiple of one day from 1970-01-01), so bucket bounds are ms multiples.
CONTINUOUS = """SELECT view_name::text AS name FROM timescaledb_information.continuous_aggregates
                WHERE view_schema = current_schema() AND view_name = ANY($1::name[])"""


@dataclass(frozen=True, slots=True)
class Bar:
    """One stored bar: ``minutes`` 1-minute candles in [open_time, open_time + width)."""

    symbol: str
    open_time: int
    close_time: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    # NULL when every minute of the bucket lacks them (candles_1m allows NULL there).
    quote_asset_volume: Decimal | None
    number_of_trades: int | None
    taker_buy_base_asset_volume: Decimal | None
    taker_buy_quote_asset_volume: Decimal | None
    minutes: int


def bucket_span(start_ms: int, end_ms: int, width: timedelta) -> tuple[int, int]:
    """The whole buckets of ``width`` covering [start_ms, end_ms): what a refresh must name
    (a window that cuts a bucket leaves that bucket stale)."""
    w = int(width.total_seconds() * 1000)
    return start_ms // w * w, -(-end_ms // w) * w


async def refresh_rollups(conn: asyncpg.Connection, start_ms: int, end_ms: int) -> list[str]:
    """Refresh the continuous aggregates over the buckets touching [start_ms, end_ms);
    returns the ones refreshed (none on the Apache licence, where the rollups are views)."""
    if end_ms <= start_ms:
        return []
    names = [rel for rel, _ in list(ROLLUPS.values())[1:]]
    continuous = {r["name"] for r in await conn.fetch(CONTINUOUS, names)}
    done = []
    for rel, width in list(ROLLUPS.values())[1:]:
        if rel not in continuous:
            continue
        lo, hi = bucket_span(start_ms, end_ms, width)
        # The simple query protocol (no bind parameters): the procedure refuses to run in
        # any transaction block, and an extended-protocol round trip can count as one.
        # Every value here is ours (a ROLLUPS name, integer-derived timestamps).
        start, end = ms_to_datetime(lo).isoformat(), ms_to_datetime(hi).isoformat()
        await conn.execute(
            f"CALL refresh_continuous_aggregate('{rel}', '{start}'::timestamptz, '{end}'::timestamptz)"
        )
        done.append(rel)
    return done


async def fetch_bars(
    conn: asyncpg.Connection,
    symbol: str,
    interval: str,
    start_ms: int,
    end_ms: int,
    limit: int,
    *,
    newest: bool = False,
) -> list[Bar]:
    """Up to ``limit`` stored bars of ``symbol`` at ``interval`` (a key of ROLLUPS) with open
    time in [start_ms, end_ms], oldest first: the oldest ones, or the newest ones when
    ``newest`` (Binance's rule without a startTime). Missing buckets are missing."""
    rel, width = ROLLUPS[interval]
    minutes = "1" if interval == "1m" else "minutes"
    rows = await conn.fetch(
        f"""SELECT time, {", ".join(VALUE_COLUMNS)}, {minutes} AS minutes
            FROM {rel} WHERE symbol = $1 AND time >= $2 AND time <= $3
            ORDER BY time {"DESC" if newest else ""} LIMIT $4""",
        symbol,
        ms_to_datetime(start_ms),
        ms_to_datetime(end_ms),
        limit,
    )
    if newest:
        rows.reverse()
    w = int(width.total_seconds() * 1000)
    out = []
    for r in rows:
        t = datetime_to_ms(r["time"])
        out.append(Bar(symbol, t, t + w - 1, **row_values(r), minutes=r["minutes"]))
    return out


async def stored_symbols(conn: asyncpg.Connection) -> list[str]:
    """Symbols with at least one stored minute (a skip scan over the primary key)."""
    rows = await conn.fetch(
        """WITH RECURSIVE s AS (
               (SELECT symbol FROM candles_1m ORDER BY symbol LIMIT 1)
               UNION ALL
               SELECT (SELECT c.symbol FROM candles_1m AS c WHERE c.symbol > s.symbol
                       ORDER BY c.symbol LIMIT 1) FROM s WHERE s.symbol IS NOT NULL)
           SELECT symbol FROM s WHERE symbol IS NOT NULL"""
    )
    return [r["symbol"] for r in rows]


__all__ = ["ROLLUPS", "Bar", "bucket_span", "fetch_bars", "refresh_rollups", "stored_symbols"]
