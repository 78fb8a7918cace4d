"""init.sql against a real PostgreSQL + TimescaleDB: idempotence, hypertables,
automation per licence, the daily jobs' arithmetic and the schema's constraints."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import pytest

from quaint.store.quality_event import EVENT_TYPES
from quaint.store.schema import (
    SchemaInfo,
    TimescaleUnavailable,
    apply_schema,
    check_timescaledb,
    set_retention,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


async def test_init_sql_applies_twice(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        first = await apply_schema(conn)
        second = await apply_schema(conn)
    assert first == second
    assert first.license in {"apache", "timescale"}
    assert first.compression == (first.license == "timescale")


async def test_backfill_requests_table_survives_a_second_apply(db_pool: asyncpg.Pool) -> None:
    insert = (
        "INSERT INTO backfill_requests (id, symbol, range_start, range_end, state, finished_at,"
        " minutes_total) VALUES ($1, 'BTCUSDT', $2, $3, $4, $5, 10)"
    )
    await db_pool.execute(insert, "0123456789abcdef", NOW, NOW + timedelta(minutes=10), "running", None)
    async with db_pool.acquire() as conn:
        await apply_schema(conn)
        await apply_schema(conn)
    assert await db_pool.fetchval("SELECT count(*) FROM backfill_requests") == 1  # kept, not recreated
    hypertables = await db_pool.fetchval(
        "SELECT count(*) FROM timescaledb_information.hypertables WHERE hypertable_name = 'backfill_requests'"
    )
    assert hypertables == 0
    # What the gap handler resumes is unambiguous: finished exactly when the state is final.
    for values in (
        ("0123456789abcde0", NOW, NOW + timedelta(minutes=1), "complete", None),  # final, no finish time
        ("0123456789abcde1", NOW, NOW + timedelta(minutes=1), "running", NOW),  # open, with one
        ("0123456789abcde2", NOW, NOW + timedelta(minutes=1), "paused", None),  # unknown state
        ("0123456789abcde3", NOW, NOW, "running", None),  # empty range
        ("not-an-id", NOW, NOW + timedelta(minutes=1), "running", None),
    ):
        with pytest.raises(asyncpg.CheckViolationError):
            await db_pool.execute(insert, *values)


async def test_hypertables_and_chunk_intervals(db_pool: asyncpg.Pool) -> None:
    rows = await db_pool.fetch(
        "SELECT hypertable_name, column_name, time_interval FROM timescaledb_information.dimensions"
        # Community: the rollups' continuous aggregates add their own (internal) hypertables.
        " WHERE hypertable_schema = 'public'"
    )
    got = {r["hypertable_name"]: (r["column_name"], r["time_interval"]) for r in rows}
    assert got == {
        "candles_1m": ("time", timedelta(days=7)),
        "book_ticker": ("time", timedelta(days=1)),
        "feature_cache": ("time", timedelta(days=1)),
        "predictions": ("time", timedelta(days=7)),
    }
    pk = await db_pool.fetchval(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'candles_1m'::regclass"
        " AND contype = 'p'"
    )
    assert pk == 'PRIMARY KEY (symbol, "time")'


async def test_automation_matches_the_licence(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        info = await apply_schema(conn)
        if info.license == "timescale":
            procs = await conn.fetch("SELECT proc_name FROM timescaledb_information.jobs")
            names = {r["proc_name"] for r in procs}
            assert {"quaint_cleanup_job", "quaint_accuracy_job", "policy_compression"} <= names
        else:
            # A test database is not cron.database_name: the gap handler runs the jobs.
            assert info.automation == "service"
            with pytest.raises(asyncpg.FeatureNotSupportedError, match="apache"):
                await conn.execute("ALTER TABLE candles_1m SET (timescaledb.compress)")


async def test_community_path_calls_functions_that_exist(db_pool: asyncpg.Pool) -> None:
    """The Community branch cannot run under the Apache build, but the functions and
    argument names it calls must exist in the installed TimescaleDB version."""
    args = {
        r["proname"]: r["args"]
        for r in await db_pool.fetch(
            "SELECT p.proname, pg_get_function_arguments(p.oid) AS args FROM pg_proc p"
            " JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = 'public' AND p.proname IN ('add_job', 'add_compression_policy')"
        )
    }
    assert "initial_start" in args["add_job"]
    assert "if_not_exists" in args["add_compression_policy"]


@pytest.mark.slow
@pytest.mark.timeout(120)
async def test_pg_cron_path_for_real(cron_db_url: str) -> None:
    """In the database named by cron.database_name the schema registers the daily jobs
    in pg_cron, and pg_cron really runs jobs in this cluster."""
    conn = await asyncpg.connect(cron_db_url)
    try:
        info = await apply_schema(conn)
        if info.license == "timescale":
            pytest.skip("Community licence: TimescaleDB's scheduler is used instead of pg_cron")
        assert info == SchemaInfo(license="apache", automation="pg_cron")
        jobs = {
            r["jobname"]: (r["schedule"], r["command"])
            for r in await conn.fetch("SELECT jobname, schedule, command FROM cron.job")
        }
        assert jobs["quaint-cleanup"] == ("0 2 * * *", "SELECT quaint_cleanup()")
        assert jobs["quaint-accuracy"] == ("0 3 * * *", "SELECT quaint_resolve_predictions()")
        # Prove pg_cron's worker really executes our functions in this cluster. Debian 12 ships
        # pg_cron 1.4 (minute resolution), so the probe runs at the next minute boundary.
        job_id = await conn.fetchval(
            "SELECT cron.schedule('quaint-probe', '* * * * *', 'SELECT quaint_resolve_predictions()')"
        )
        try:
            status = await wait_for(
                conn,
                "SELECT status FROM cron.job_run_details WHERE jobid = $1 AND status IN "
                "('succeeded', 'failed') ORDER BY runid DESC LIMIT 1",
                job_id,
                within_s=75,
            )
            assert status == "succeeded"
        finally:
            await conn.execute("SELECT cron.unschedule('quaint-probe')")
    finally:
        await conn.close()


async def wait_for(conn: asyncpg.Connection, query: str, *args: Any, within_s: float = 15) -> Any:
    deadline = asyncio.get_running_loop().time() + within_s
    while (value := await conn.fetchval(query, *args)) is None:
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for: {query}"
        await asyncio.sleep(0.1)
    return value


async def test_accuracy_job_arithmetic(db_pool: asyncpg.Pool) -> None:
    t = NOW - timedelta(hours=1)
    await db_pool.executemany(
        "INSERT INTO candles_1m (symbol, time, open, high, low, close, volume) VALUES ($1,$2,1,200,1,$3,1)",
        [("BTCUSDT", t, Decimal(100)), ("BTCUSDT", t + timedelta(minutes=1), Decimal(50))],
    )
    await db_pool.executemany(
        "INSERT INTO predictions (time, symbol, model_id, prediction, confidence) VALUES ($1,$2,$3,$4,0.5)",
        [
            (t, "BTCUSDT", "exact", Decimal(100)),
            (t, "BTCUSDT", "high", Decimal(110)),  # 10 % off -> 0.9
            (t + timedelta(minutes=1), "BTCUSDT", "wild", Decimal(200)),  # 300 % off -> floored at 0
            (t + timedelta(minutes=2), "BTCUSDT", "no_candle", Decimal(1)),  # stays unresolved
            (NOW + timedelta(minutes=5), "BTCUSDT", "future", Decimal(1)),
        ],
    )
    assert await db_pool.fetchval("SELECT quaint_resolve_predictions($1)", NOW) == 3
    rows = {
        r["model_id"]: (r["actual"], r["accuracy"], r["resolved_at"])
        for r in await db_pool.fetch("SELECT model_id, actual, accuracy, resolved_at FROM predictions")
    }
    assert rows["exact"] == (Decimal(100), Decimal(1), NOW)
    assert rows["high"] == (Decimal(100), Decimal("0.9"), NOW)
    assert rows["wild"] == (Decimal(50), Decimal(0), NOW)
    assert rows["no_candle"] == (None, None, None)
    assert rows["future"] == (None, None, None)
    assert await db_pool.fetchval("SELECT quaint_resolve_predictions($1)", NOW) == 0  # idempotent


async def test_cleanup_drops_only_expired_chunks(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as conn:
        await set_retention(conn, "book_ticker_retention", "10 days")
        with pytest.raises(ValueError, match="unknown retention"):
            await set_retention(conn, "nonsense", "1 day")
    old, recent = NOW - timedelta(days=400), NOW - timedelta(days=1)
    for t in (old, recent):
        await db_pool.execute(
            "INSERT INTO candles_1m (symbol, time, open, high, low, close, volume)"
            " VALUES ('X1', $1, 1, 1, 1, 1, 1)",
            t,
        )
        await db_pool.execute(
            "INSERT INTO book_ticker VALUES ('X1', $1, 1, 1, 1, 2, 1)",
            t if t == recent else NOW - timedelta(days=20),
        )
    assert await db_pool.fetchval("SELECT quaint_cleanup($1)", NOW) >= 2
    assert await db_pool.fetchval("SELECT count(*) FROM candles_1m") == 1
    assert await db_pool.fetchval("SELECT min(time) FROM candles_1m") == recent
    assert await db_pool.fetchval("SELECT count(*) FROM book_ticker") == 1


@pytest.mark.parametrize(
    "values",
    [
        ("a", 1, ["m1", "m2"], [Decimal("0.5")], Decimal("0.1"), False),  # weight count mismatch
        ("a", 1, ["m1", "m2"], [Decimal("0.7"), Decimal("0.7")], Decimal("0.1"), False),  # sum != 1
        ("a", 1, ["m1", "m2"], [Decimal("1.5"), Decimal("-0.5")], Decimal("0.1"), False),  # negative
        ("a", 1, ["m1", "m1"], [Decimal("0.5"), Decimal("0.5")], Decimal("0.1"), False),  # duplicate member
        ("a", 1, [], [], Decimal("0.1"), False),  # no member
        ("a", 0, ["m1"], [Decimal(1)], Decimal("0.1"), False),  # version
        ("a", 1, ["m1"], [Decimal(1)], Decimal("1.5"), False),  # share > 1
        ("bad name!", 1, ["m1"], [Decimal(1)], Decimal("0.1"), False),
    ],
)
async def test_ensemble_constraints_refuse_bad_configurations(
    db_pool: asyncpg.Pool, values: tuple[Any, ...]
) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await db_pool.execute(
            "INSERT INTO ensemble_models (name, version, member_models, weights, traffic_share, is_active)"
            " VALUES ($1, $2, $3, $4, $5, $6)",
            *values,
        )


async def test_active_traffic_shares_cannot_exceed_one(db_pool: asyncpg.Pool) -> None:
    insert = (
        "INSERT INTO ensemble_models (name, version, member_models, weights, traffic_share, is_active)"
        " VALUES ($1, 1, ARRAY['m1','m2'], ARRAY[0.25, 0.75], $2, TRUE)"
    )
    await db_pool.execute(insert, "a", Decimal("0.6"))
    await db_pool.execute(insert, "b", Decimal("0.4"))
    with pytest.raises(asyncpg.CheckViolationError, match="100%"):
        await db_pool.execute(insert, "c", Decimal("0.1"))
    assert await db_pool.fetchval("SELECT count(*) FROM ensemble_models") == 2


async def test_gap_detected_insert_notifies(db_url: str) -> None:
    listener = await asyncpg.connect(db_url)
    got: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("quaint_gaps", lambda *args: got.put_nowait(args[3]))
    writer = await asyncpg.connect(db_url)
    try:
        await writer.execute(
            "INSERT INTO data_quality_logs (symbol, event_type, gap_start, gap_end, candles_missing, source)"
            " VALUES ('BTCUSDT', 'ws_reconnect', NULL, NULL, NULL, 'feeder')"
        )
        await writer.execute(
            "INSERT INTO data_quality_logs (symbol, event_type, gap_start, gap_end, candles_missing, source)"
            " VALUES ('BTCUSDT', 'gap_detected', $1, $2, 3, 'feeder')",
            NOW,
            NOW + timedelta(minutes=2),
        )
        payload = await asyncio.wait_for(got.get(), 5)
        assert '"symbol" : "BTCUSDT"' in payload and "2026-11-24" in payload
        assert got.empty()  # the ws_reconnect row did not notify
    finally:
        await writer.close()
        await listener.close()


class _NoTimescale:
    async def fetchrow(self, query: str) -> dict[str, Any]:
        return {"available": False, "preload": "pg_cron"}


async def test_missing_timescaledb_says_how_to_install() -> None:
    with pytest.raises(TimescaleUnavailable, match=r"scripts/pg_cluster\.sh install"):
        await check_timescaledb(_NoTimescale())


async def test_a_database_from_before_the_newer_event_types_is_widened(db_pool: asyncpg.Pool) -> None:
    """init.sql creates data_quality_logs only if missing, so an existing database keeps its old CHECK:
    the schema's migration step widens it once, and every event type the services know is then stored."""
    old = (
        "'gap_detected', 'gap_backfilled', 'gap_unrecoverable', 'ws_reconnect', 'db_unavailable', "
        "'data_dropped', 'error'"
    )
    async with db_pool.acquire() as conn:
        fresh = "INSERT INTO data_quality_logs (event_type, source) VALUES ($1, 'test')"
        for event_type in sorted(EVENT_TYPES):  # the CREATE TABLE's own list knows them all too
            await conn.execute(fresh, event_type)
        await conn.execute(
            "DELETE FROM data_quality_logs WHERE source = 'test'"
        )  # the old CHECK refuses them
        await conn.execute(
            "ALTER TABLE data_quality_logs DROP CONSTRAINT data_quality_logs_event_type_check,"
            f" ADD CONSTRAINT data_quality_logs_event_type_check CHECK (event_type IN ({old}))"
        )
        insert = (
            "INSERT INTO data_quality_logs (symbol, event_type, source) VALUES ('BTCUSDT', $1, 'archive')"
        )
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(insert, "archive_short")
        await apply_schema(conn)
        for event_type in sorted(EVENT_TYPES):
            await conn.execute(insert, event_type)
        await apply_schema(conn)  # and again: nothing left to widen
