"""A feeder's gap report made while no gap handler listened is still filled.

The feeder reports minutes it dropped (a ``gap_detected`` row, which NOTIFYs). Such a hole is at
the live edge, newer than GAP_DETECTION_THRESHOLD_S, where the scan does not look by itself; the
NOTIFY makes the scan cover it. A report committed while no listener was connected (before the
gap handler started, between two leader terms, during a reconnect) never arrives as a NOTIFY:
the scan reads the unresolved rows instead. The stressed CI saw it with a failover: the feeder
reported its dropped minutes at the moment the new leader's listener connected, and nothing
filled them.
"""

from __future__ import annotations

import pytest

from gap_handler.core.intervals import MinuteRange, history_start
from quaint.binance.models import MINUTE_MS, ms_to_datetime
from quaint.store.candles import upsert_candles
from quaint.store.quality import log_event
from quaint.store.quality_event import QualityEvent
from tests.support.gap_handler import idle, running_service, settings_for
from tests.support.simulator import running_simulator
from tests.support.waiting import wait_for

SYMBOL = "BTCUSDT"
pytestmark = pytest.mark.slow


async def test_a_report_made_before_the_gap_handler_listened_is_filled(db_url: str) -> None:
    async with running_simulator(symbols=[SYMBOL], speed=0) as sim:
        now = sim.clock.now_ms()
        closed = now - now % MINUTE_MS
        stored = MinuteRange(history_start(now, 1), closed)
        # Dropped by the feeder 5 to 3 minutes ago: inside the threshold, so no scan finds it.
        hole = MinuteRange(closed - 5 * MINUTE_MS, closed - 2 * MINUTE_MS)
        settings = settings_for(
            db_url,
            sim.rest_url,
            symbols=[SYMBOL],
            history_days=1,
            gap_detection_threshold_s=3600,
            backfill_check_interval_s=3600,
            full_scan_interval_s=3600,
        )
        async with running_service(settings, now_ms=sim.clock.now_ms, loops=False) as c:
            truth = sim.truth(SYMBOL, stored.start, stored.end)
            async with c.pool.acquire() as conn:
                kept = [k for k in truth if not hole.start <= k.open_time < hole.end]
                await upsert_candles(conn, kept, "ws")
                # Reported with nobody listening (this handler's listener loop is not running).
                report = QualityEvent(
                    "gap_detected",
                    symbol=SYMBOL,
                    gap_start=ms_to_datetime(hole.start),
                    gap_end=ms_to_datetime(hole.end - MINUTE_MS),  # the feeder names the last minute
                    candles_missing=hole.minutes,
                    source="feeder",
                    details={"reason": "dropped"},
                )
                await log_event(conn, report)
            assert await c.backfills.scan() == 1, "the report's minutes were not queued"
            await wait_for(idle(c), 30, "the reported hole backfilled")
            assert await c.backfills.scan() == 0  # nothing left, and the report is resolved
            async with c.pool.acquire() as conn:
                got = await conn.fetch(
                    "SELECT time FROM candles_1m WHERE symbol = $1 AND time >= $2 AND time < $3"
                    " ORDER BY time",
                    SYMBOL,
                    ms_to_datetime(hole.start),
                    ms_to_datetime(hole.end),
                )
                resolved = await conn.fetchval(
                    "SELECT resolved FROM data_quality_logs"
                    " WHERE event_type = 'gap_detected' AND symbol = $1",
                    SYMBOL,
                )
            assert [ms_to_datetime(hole.start + i * MINUTE_MS) for i in range(hole.minutes)] == [
                r["time"] for r in got
            ]
            assert resolved is True
