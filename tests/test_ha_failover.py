"""PostgreSQL failover (issue 18): a primary and a hot standby (``pg_basebackup -R``, streaming,
both with TimescaleDB); the feeder and the gap handler are given both hosts
(``DB_HOST=primary,standby``, ``DB_TARGET_SESSION_ATTRS=read-write``). With candles flowing the
primary is stopped and the standby promoted: the feeder buffers through the switch as
through an outage and carries on on the new primary, the gap handler finds it too, every
closed candle of the window is stored on the new primary (nothing acknowledged lost), and
one ``db_failover`` row names the switch.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest
from pydantic import ValidationError

from feeder.settings import FeederSettings
from quaint.binance.models import MINUTE_MS, ms_to_datetime
from quaint.service.settings import describe_errors
from quaint.store.pool import connect_kwargs
from quaint.store.schema import apply_schema
from tests.support.database import PgServer
from tests.support.feeder import (
    HISTORY_MINUTES,
    SIM_START,
    minute_of,
    quality_rows,
    sim_and_feeder,
    stored_candles,
    until_sim,
    wait_stored,
)
from tests.support.gap_handler import running_service
from tests.support.gap_handler import settings_for as gap_settings
from tests.support.replication import replicated_pair
from tests.support.waiting import wait_for, wait_until

pytestmark = pytest.mark.ha

SYMBOLS = ["BTCUSDT", "ETHUSDT"]
FIRST = minute_of(SIM_START)


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("bound", "outage_minutes"),
    [
        pytest.param(50_000, 3, id="buffered"),
        # A buffer too small for the switch: candles are dropped (and reported), and the gap
        # handler fills those minutes from REST on the new primary.
        pytest.param(10, 8, id="overflowing"),
    ],
)
async def test_primary_stopped_and_standby_promoted_loses_no_candle(
    pg_server: PgServer, bound: int, outage_minutes: int
) -> None:
    if pg_server.source != "local":
        pytest.skip(f"the PostgreSQL server is {pg_server.source}: no private clusters to replicate")
    async with replicated_pair() as pair:
        conn = await asyncpg.connect(pair.primary.url)
        try:
            await apply_schema(conn)
        finally:
            await conn.close()
        db: dict[str, Any] = {
            "db_host": pair.hosts,
            "db_target_session_attrs": "read-write",
            "db_connect_timeout_s": 30,
        }
        async with sim_and_feeder(pair.primary.url, SYMBOLS, max_buffered_rows=bound, **db) as (sim, feeder):
            gap = gap_settings(
                pair.primary.url,
                sim.rest_url,
                symbols=SYMBOLS,
                history_days=1,
                leader_takeover_s=2,
                # Minutes the feeder still holds in its buffer are not holes yet (at speed 60 the
                # default 70 s is about a wall second): the gap handler fills what is reported.
                gap_detection_threshold_s=3600,
                **db,
            )
            async with running_service(gap, now_ms=sim.clock.now_ms) as handler:
                await until_sim(sim, FIRST + 3 * MINUTE_MS + 2_000)
                await wait_stored(pair.primary.url, sim, SYMBOLS, FIRST, FIRST + 3 * MINUTE_MS)
                await wait_until(lambda: handler.leadership.role == "leader", 30, "the gap handler leading")
                await pair.replay_caught_up()
                await pair.stop_primary()

                async def feeder_degraded() -> bool:
                    status, body = await feeder.health()
                    return status == 503 and body["database_status"] == "unavailable"

                await wait_for(feeder_degraded, 30, "the feeder degraded")
                stopped_at = sim.clock.now_ms()
                # Simulated minutes without a primary: the feeder buffers them (or drops some).
                await until_sim(sim, stopped_at + outage_minutes * MINUTE_MS)
                buffered = feeder.feeder.acc.candle_depth
                await pair.promote_standby()

                async def feeder_healthy() -> bool:
                    status, body = await feeder.health()
                    return status == 200 and body["database_status"] == "connected"

                # Bounded, on any machine: the services find the new primary by themselves.
                await wait_for(feeder_healthy, 60, "the feeder healthy on the new primary")
                await wait_until(
                    lambda: handler.leadership.role == "leader" and handler.leadership.terms >= 2,
                    60,
                    "the gap handler leading on the new primary",
                )
                end = minute_of(sim.clock.now_ms()) + MINUTE_MS
                await until_sim(sim, end + 2_000)
                await wait_stored(pair.standby.url, sim, SYMBOLS, FIRST - HISTORY_MINUTES * MINUTE_MS, end)

                async def failover_recorded() -> bool:
                    return len(await quality_rows(pair.standby.url, "db_failover")) >= 1

                await wait_for(failover_recorded, 30, "the db_failover row")
            start = FIRST - HISTORY_MINUTES * MINUTE_MS
            for sym in SYMBOLS:
                assert await stored_candles(pair.standby.url, sym, start, end) == sim.truth(sym, start, end)
        failovers = await quality_rows(pair.standby.url, "db_failover")
        dropped = await quality_rows(pair.standby.url, "data_dropped")
        outages = await quality_rows(pair.standby.url, "db_unavailable")
        from_rest = await rest_minutes(pair.standby.url, FIRST)
    if bound > 1000:
        assert dropped == [] and from_rest == 0  # the feeder wrote every live minute itself
    else:
        (row,) = dropped
        lost = sum(row["details"]["candles"].values())
        assert lost > 0
        assert from_rest >= lost  # the dropped minutes came back from REST, on the new primary
    assert len(outages) == 1  # the feeder's: the switch was one outage to it
    assert buffered > 0  # candles waited in memory during the switch
    assert len(failovers) == 1
    details = failovers[0]["details"]
    assert details["from"].endswith(f":{pair.primary.port}") and details["to"].endswith(
        f":{pair.standby.port}"
    )


async def rest_minutes(db_url: str, since: int) -> int:
    conn = await asyncpg.connect(db_url)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM candles_1m WHERE source = 'rest' AND time >= $1", ms_to_datetime(since)
            )
        )
    finally:
        await conn.close()


def test_several_hosts_are_tried_in_order_for_the_primary() -> None:
    s = FeederSettings(
        db_host=" db1, db2:5433 ,[::1]:5434", db_port=6432, db_target_session_attrs="read-write"
    )
    assert s.db_hosts == [("db1", 6432), ("db2", 5433), ("::1", 5434)]
    kwargs = connect_kwargs(s)
    assert (kwargs["host"], kwargs["port"]) == (["db1", "db2", "::1"], [6432, 5433, 5434])
    assert kwargs["target_session_attrs"] == "read-write"
    one = connect_kwargs(FeederSettings(db_host="db1"))
    assert (one["host"], one["port"], one["target_session_attrs"]) == ("db1", 5432, "any")


@pytest.mark.parametrize("host", ["db1,,db2", "db1:0", "db1:x", ":5432", "db1:70000"])
def test_a_bad_host_list_is_refused(host: str) -> None:
    with pytest.raises(ValidationError) as info:
        FeederSettings(db_host=host, db_target_session_attrs="read-write")
    assert describe_errors(info.value)[0].startswith("invalid configuration: DB_HOST: ")


@pytest.mark.parametrize("attrs", ["any", "standby", "prefer-standby", "read-only"])
def test_several_hosts_need_a_writable_target(attrs: str) -> None:
    with pytest.raises(ValidationError) as info:
        FeederSettings(db_host="db1,db2", db_target_session_attrs=attrs)
    (line,) = describe_errors(info.value)
    assert line.startswith("invalid configuration: DB_TARGET_SESSION_ATTRS: DB_HOST lists several hosts")
