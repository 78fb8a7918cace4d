"""What fed this database: ``'simulated'`` (the bundled simulator) or ``'binance'``.

A database-level marker, one row of ``quaint_config`` (key ``data_origin``), written by
the first service that starts on the database and checked by every later one: simulated
history must never pass for real (``deploy.sh --simulate`` and a real run share
``.run/pgdata`` and the Docker volume).
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

ORIGIN_KEY = "data_origin"

_CLAIM = """
INSERT INTO quaint_config (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING
"""
_READ = "SELECT value FROM quaint_config WHERE key = $1"
_ANY_CANDLE = "SELECT EXISTS (SELECT 1 FROM candles_1m)"


@dataclass(frozen=True, slots=True)
class OriginClaim:
    stored: str  # what the database says fed it (after this claim)
    claimed_now: bool  # this process wrote the marker
    had_rows: bool  # candles were there already when the marker was written (an older database)


async def claim_origin(conn: asyncpg.Connection, origin: str) -> OriginClaim:
    """Mark an unmarked database as fed from ``origin``; return what it is marked with."""
    async with conn.transaction():
        had_rows = bool(await conn.fetchval(_ANY_CANDLE))
        status = await conn.execute(_CLAIM, ORIGIN_KEY, origin)
        stored = await conn.fetchval(_READ, ORIGIN_KEY)
    return OriginClaim(str(stored), status == "INSERT 0 1", had_rows)
