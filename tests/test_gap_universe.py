"""The gap handler follows the universe (issue 17), against the simulator and a real database:
SYMBOLS=*USDT resolved from exchangeInfo, a listing's history filled from its first candle, a
halted symbol not scanned while halted and its minutes one outage row (reason symbol_halted),
never asked for again."""

from __future__ import annotations

import orjson
import pytest

from quaint.binance.models import MINUTE_MS, datetime_to_ms
from quaint.store.candles import fetch_candles
from tests.support.gap_handler import idle, running_service, settings_for
from tests.support.simulator import running_simulator
from tests.support.waiting import wait_for, wait_until

pytestmark = pytest.mark.slow

START = 1_700_000_040_000 + 1_000  # one second into a minute
M0 = START - START % MINUTE_MS
SPEED = 30.0  # one simulated minute every 2 wall seconds: the 10-minute halt spans ~10 refreshes


async def _true(value: bool) -> bool:
    return value


async def test_listing_and_halt(db_url: str) -> None:
    sim_args = {
        "symbols": ["BTCUSDT", "ETHUSDT", "ETHBTC"],
        "listing": ["NEWUSDT@+3"],
        "halt": ["ETHUSDT@+2..+12"],
        "history_days": 2,  # more than the gap handler asks for: its first minute exists
    }
    async with running_simulator(speed=0, start=START, **sim_args) as sim:  # type: ignore[arg-type]
        settings = settings_for(
            db_url,
            sim.rest_url,
            symbols=["*USDT"],
            history_days=1,
            universe_refresh_s=1.0,
            backfill_check_interval_s=0.5,
            rate_limit_requests_per_sec=100,
        )
        async with running_service(settings, now_ms=sim.clock.now_ms) as c:
            b = c.backfills
            await wait_for(idle(c), 120, "the history of the symbols trading at start filled")
            assert sorted(b.symbols) == ["BTCUSDT", "ETHUSDT"]  # NEWUSDT not listed yet, ETHBTC not *USDT
            sim.clock.set(speed=SPEED)
            await wait_until(lambda: "ETHUSDT" in b.universe.inactive, 60, "the halt seen")
            await wait_until(lambda: "NEWUSDT" in b.symbols, 60, "the listing seen")
            await wait_until(lambda: sim.clock.now_ms() >= M0 + 16 * MINUTE_MS, 120, "the halt over")
            sim.clock.set(speed=0)
            await wait_until(lambda: "ETHUSDT" not in b.universe.inactive, 60, "the resumption seen")
            scans = b.scans
            await wait_for(lambda: _true(b.scans >= scans + 2), 60, "two scans after the resumption")
            await wait_for(idle(c), 120, "everything due filled")

            now = sim.clock.now_ms()
            # From an hour before the start (the simulator's 1-day history slid with its clock).
            lo, hi = M0 - 60 * MINUTE_MS, now - 2 * MINUTE_MS
            async with c.pool.acquire() as conn:
                for symbol in ("BTCUSDT", "ETHUSDT", "NEWUSDT"):
                    stored = await fetch_candles(conn, symbol, lo, hi)
                    assert stored == sim.truth(symbol, lo, hi), symbol
                rows = await conn.fetch(
                    "SELECT symbol, gap_start, gap_end, details FROM data_quality_logs"
                    " WHERE event_type = 'gap_unrecoverable' ORDER BY symbol, gap_start"
                )
            outages = {
                (r["symbol"], datetime_to_ms(r["gap_start"]), datetime_to_ms(r["gap_end"])): r for r in rows
            }
            halt = ("ETHUSDT", M0 + 2 * MINUTE_MS, M0 + 11 * MINUTE_MS)  # gap_end: the last missing minute
            assert halt in outages, sorted(outages)
            details = outages[halt]["details"]
            details = orjson.loads(details) if isinstance(details, str) else details
            assert details["reason"] == "symbol_halted"
            assert [k for k in outages if k[0] == "ETHUSDT"] == [halt]  # one row, nothing else missing
            # Before its first candle the new listing has nothing: one proven outage up to it.
            assert [k[2] for k in outages if k[0] == "NEWUSDT"] == [M0 + 2 * MINUTE_MS]
            assert not any(k[0] == "BTCUSDT" for k in outages)

            # No retry loop: further scans ask the exchange for nothing.
            requests = sim.stats.requests_by_path["/api/v3/klines"]
            scans = b.scans
            await wait_for(lambda: _true(b.scans >= scans + 3), 60, "three more scans")
            assert sim.stats.requests_by_path["/api/v3/klines"] == requests
