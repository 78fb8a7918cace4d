"""scripts/monitoring.sql and scripts/ml_example.py against the real schema.

Every named monitoring query runs on a fresh database with known data, and the ones the README
points operators to are checked for the answers they must give (lag, missing minutes, gaps, tick
rates, feature freshness). The ML example runs as a user would run it: a subprocess configured by
the DB_* environment variables.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import pytest

from quaint.store.schema import apply_schema

ROOT = Path(__file__).resolve().parents[1]
MONITORING_SQL = ROOT / "scripts" / "monitoring.sql"
# The queries the README's monitoring and troubleshooting section refers to, by name.
EXPECTED_QUERIES = {
    "latest_candle_per_symbol",
    "missing_minutes_24h",
    "gaps_24h",
    "candle_sources_24h",
    "recent_data_quality_logs",
    "data_quality_summary_24h",
    "open_gaps",
    "hypertable_sizes",
    "chunks",
    "book_tick_rates",
    "book_ticks_per_minute_1h",
    "feature_freshness",
    "candles_without_features_1h",
    "ingest_rate_1h",
    "scheduled_jobs",
    "retention_settings",
    "database_sessions",
}
HOLE = (100, 103)  # minutes ago: BTCUSDT has no candles for 103, 102, 101, 100 minutes ago


def load_queries() -> dict[str, str]:
    """``-- name: x`` starts query x; it runs until the next name line. psql's own commands
    (the ``\\echo`` that labels each result) are left out: they are not SQL."""
    queries: dict[str, str] = {}
    name: str | None = None
    for line in MONITORING_SQL.read_text().splitlines():
        m = re.match(r"^-- name: ([a-z0-9_]+)\s*$", line)
        if m:
            name = m.group(1)
            assert name not in queries, f"duplicate query name {name}"
            queries[name] = ""
        elif name is not None and not line.startswith("\\"):
            queries[name] += line + "\n"
    return {k: v.strip() for k, v in queries.items()}


def test_every_query_is_labelled_for_psql() -> None:
    text = MONITORING_SQL.read_text()
    for name in load_queries():
        assert f"-- name: {name}\n\\echo '== {name} =='\n" in text, name


def test_queries_are_named_and_separated() -> None:
    queries = load_queries()
    assert set(queries) == EXPECTED_QUERIES
    for name, sql in queries.items():
        code = [line for line in sql.splitlines() if not line.lstrip().startswith("--")]
        assert code, f"{name} has no SQL"
        assert sql.endswith(";"), f"{name} must end with ';' (psql runs the file as a whole)"
        assert "\n".join(code).count(";") == 1, f"{name} must be a single statement"
        assert "$1" not in sql, f"{name} must not need parameters"


async def _seed(pool: asyncpg.Pool) -> datetime:
    """24 h of BTCUSDT candles with one 4-minute hole, ETHUSDT for the last hour, book ticks,
    features and data-quality events. Returns the minute everything is relative to."""
    async with pool.acquire() as conn:
        now: datetime = await conn.fetchval("SELECT date_trunc('minute', now())")
        candles = []
        for sym, minutes in (("BTCUSDT", range(1, 24 * 60 + 5)), ("ETHUSDT", range(1, 61))):
            for ago in minutes:
                if sym == "BTCUSDT" and HOLE[0] <= ago <= HOLE[1]:
                    continue
                price = Decimal(100 + ago % 7)
                candles.append(
                    (
                        sym,
                        now - timedelta(minutes=ago),
                        price,
                        price + 1,
                        price - 1,
                        price,
                        Decimal("2.5"),
                        "rest" if ago > 120 else "ws",
                    )
                )
        await conn.executemany(
            "INSERT INTO candles_1m (symbol, time, open, high, low, close, volume, source) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            candles,
        )
        real_now = await conn.fetchval("SELECT now()")
        one, bid, ask = Decimal(1), Decimal(100), Decimal(101)
        ticks = [
            ("BTCUSDT", real_now - timedelta(seconds=s), 1000 + s, bid, one, ask, one) for s in range(1, 61)
        ]
        await conn.executemany(
            "INSERT INTO book_ticker (symbol, time, update_id, bid_price, bid_qty, ask_price, ask_qty) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7)",
            ticks,
        )
        await conn.execute(
            "INSERT INTO feature_cache (symbol, time, features_json, version) VALUES "
            "('BTCUSDT', $1, '{\"ret_1\": 0.001}'::jsonb, 'v1'),"
            "('BTCUSDT', $2, '{\"ret_1\": 0.002}'::jsonb, 'v1')",
            now - timedelta(minutes=2),
            now - timedelta(minutes=1),
        )
        await conn.execute(
            "INSERT INTO data_quality_logs"
            " (symbol, event_type, gap_start, gap_end, candles_missing, message) VALUES"
            " ('BTCUSDT', 'gap_detected', $1, $2, 4, 'stream gap'), "
            "       ('ETHUSDT', 'ws_reconnect', NULL, NULL, NULL, 'connection reset')",
            now - timedelta(minutes=HOLE[1]),
            now - timedelta(minutes=HOLE[0]),
        )
    return now


async def test_every_query_runs_and_answers_correctly(db_pool: asyncpg.Pool) -> None:
    now = await _seed(db_pool)
    queries = load_queries()
    results: dict[str, list[asyncpg.Record]] = {}
    async with db_pool.acquire() as conn:
        for name, sql in queries.items():
            try:
                results[name] = await conn.fetch(sql)
            except asyncpg.PostgresError as exc:  # pragma: no cover - the failure message is the point
                pytest.fail(f"monitoring query {name} failed: {type(exc).__name__}: {exc}")

    def rows(name: str) -> list[dict[str, Any]]:
        return [dict(r) for r in results[name]]

    latest = {r["symbol"]: r for r in rows("latest_candle_per_symbol")}
    assert set(latest) == {"BTCUSDT", "ETHUSDT"}
    assert latest["BTCUSDT"]["latest_open_time"] == now - timedelta(minutes=1)
    assert timedelta(0) <= latest["BTCUSDT"]["lag_since_close"] < timedelta(minutes=1)
    assert latest["ETHUSDT"]["candles_last_7_days"] == 60

    missing = {r["symbol"]: r for r in rows("missing_minutes_24h")}
    assert missing["BTCUSDT"]["missing_minutes"] == 4
    assert missing["BTCUSDT"]["first_missing"] == now - timedelta(minutes=HOLE[1])
    assert missing["BTCUSDT"]["last_missing"] == now - timedelta(minutes=HOLE[0])
    # 1439 closed minutes are checked (24 h back to 2 minutes ago); ETHUSDT has 59 of them.
    assert missing["ETHUSDT"]["missing_minutes"] == 1439 - 59

    gaps = rows("gaps_24h")
    assert gaps == [
        {
            "symbol": "BTCUSDT",
            "gap_start": now - timedelta(minutes=HOLE[1]),
            "gap_end": now - timedelta(minutes=HOLE[0]),
            "missing_minutes": 4,
        }
    ]

    sources = {(r["symbol"], r["source"]): r["candles"] for r in rows("candle_sources_24h")}
    assert sources[("ETHUSDT", "ws")] == 60
    assert sources[("BTCUSDT", "ws")] == 120 - 4

    events = rows("recent_data_quality_logs")
    assert [e["event_type"] for e in events] == ["ws_reconnect", "gap_detected"]
    summary = {(r["event_type"], r["symbol"]): r for r in rows("data_quality_summary_24h")}
    assert summary[("gap_detected", "BTCUSDT")]["candles_missing"] == 4
    open_gaps = rows("open_gaps")
    assert len(open_gaps) == 1 and open_gaps[0]["candles_missing"] == 4

    sizes = {r["hypertable_name"]: r for r in rows("hypertable_sizes")}
    assert set(sizes) == {"candles_1m", "book_ticker", "feature_cache", "predictions"}
    assert sizes["candles_1m"]["num_chunks"] >= 1 and sizes["candles_1m"]["total_bytes"] > 0
    chunk_tables = {r["hypertable_name"] for r in rows("chunks")}
    assert {"candles_1m", "book_ticker", "feature_cache"} <= chunk_tables

    ticks = {r["symbol"]: r for r in rows("book_tick_rates")}
    assert ticks["BTCUSDT"]["ticks_last_5_min"] == 60
    assert ticks["BTCUSDT"]["ticks_per_second"] == Decimal("0.20")
    per_minute = rows("book_ticks_per_minute_1h")
    assert sum(r["ticks"] for r in per_minute if r["symbol"] == "BTCUSDT") == 60

    fresh = rows("feature_freshness")
    assert len(fresh) == 1 and fresh[0]["latest_feature_minute"] == now - timedelta(minutes=1)
    assert fresh[0]["lag_since_close"] < timedelta(minutes=1)
    without = {r["symbol"]: r["minutes_without_features"] for r in rows("candles_without_features_1h")}
    assert without["ETHUSDT"] >= 55 and without["BTCUSDT"] >= 55

    ingest = rows("ingest_rate_1h")
    # Everything was just ingested; "the last day" holds BTCUSDT's 1439 newest minutes but the hole.
    assert sum(r["candles"] for r in ingest) == (1439 - 4) + 60
    # Neither TimescaleDB's scheduler (Apache) nor pg_cron (not this database): the gap handler's.
    jobs = {r["job"]: r for r in rows("scheduled_jobs")}
    assert set(jobs) == {"quaint_cleanup()", "quaint_resolve_predictions()"}
    assert {r["scheduler"] for r in jobs.values()} == {"gap_handler"}
    assert jobs["quaint_cleanup()"]["schedule"] == "daily 02:00 UTC"
    assert {r["key"] for r in rows("retention_settings")} >= {"candles_retention", "book_ticker_retention"}
    assert isinstance(rows("database_sessions"), list)


# ---- scripts/ml_example.py ----


def run_ml_example(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    url = urlsplit(db_url)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DB_")},
        "DB_HOST": url.hostname or "127.0.0.1",
        "DB_PORT": str(url.port or 5432),
        "DB_USER": url.username or "postgres",
        "DB_PASSWORD": url.password or "",
        "DB_NAME": url.path.lstrip("/"),
        "SYMBOLS": "BTCUSDT,ETHUSDT",
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ml_example.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def insert_btc_features(pool: asyncpg.Pool, *rows: tuple[int, dict[str, Any], str]) -> datetime:
    """Insert BTCUSDT feature_cache rows (minutes before the current minute, features, version);
    returns the current minute. The pool's JSONB codec encodes the features, as the feeder's writer does."""
    async with pool.acquire() as conn:
        now: datetime = await conn.fetchval("SELECT date_trunc('minute', now())")
        await conn.executemany(
            "INSERT INTO feature_cache (symbol, time, features_json, version) VALUES ('BTCUSDT', $1, $2, $3)",
            [(now - timedelta(minutes=minutes), features, version) for minutes, features, version in rows],
        )
    return now


async def test_ml_example_reads_the_current_minutes_features(db_pool: asyncpg.Pool, db_url: str) -> None:
    now = await insert_btc_features(
        db_pool,
        (2, {"ret_1": 0.5}, "v1"),
        (1, {"ret_1": 0.25, "rsi_14": 61.5, "regime": "calm"}, "v1"),
        (1, {"ret_1": 9.0}, "v2"),
    )
    done = run_ml_example(db_url)  # the first of SYMBOLS, version v1
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["symbol"] == "BTCUSDT" and result["version"] == "v1"
    assert datetime.fromisoformat(result["time"]) == (now - timedelta(minutes=1)).astimezone(UTC)
    assert result["features"] == {"ret_1": 0.25, "rsi_14": 61.5, "regime": "calm"}
    assert result["model_input"] == [0.25, 61.5]  # numeric features in name order
    assert 0 <= result["age_s"] < 60

    done = run_ml_example(db_url, "--feature-version", "v2")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["features"] == {"ret_1": 9.0}


async def test_ml_example_refuses_stale_or_missing_features(db_pool: asyncpg.Pool, db_url: str) -> None:
    await insert_btc_features(db_pool, (30, {}, "v1"))
    stale = run_ml_example(db_url, "--symbol", "BTCUSDT", "--max-age-s", "300")
    assert stale.returncode == 1
    assert stale.stdout == ""
    assert "no v1 features for BTCUSDT newer than 300 s" in stale.stderr
    assert run_ml_example(db_url, "--symbol", "BTCUSDT", "--max-age-s", "3600").returncode == 0
    assert run_ml_example(db_url, "--symbol", "ETHUSDT").returncode == 1


def test_ml_example_reports_bad_settings_without_echoing_them() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ml_example.py")],
        env={**os.environ, "DB_PORT": "not-a-port", "DB_PASSWORD": "s3cret-value"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "invalid configuration: DB_PORT" in done.stderr
    assert "s3cret-value" not in done.stderr + done.stdout


async def test_psql_runs_the_whole_file_with_a_label_before_each_result(db_url: str) -> None:
    """As an operator runs it: ``psql -f scripts/monitoring.sql``, every result under its name."""
    url = urlsplit(db_url)
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    cmd = [
        "psql",
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-h",
        url.hostname or "127.0.0.1",
        "-p",
        str(url.port),
        "-U",
        url.username or "postgres",
        "-d",
        url.path.lstrip("/"),
        "-f",
        str(MONITORING_SQL),
    ]
    done = await asyncio.to_thread(
        subprocess.run, cmd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    labels = re.findall(r"^== ([a-z0-9_]+) ==$", done.stdout, re.M)
    assert labels == list(load_queries())  # every query, in the file's order
    # Each label is followed by its own result (a header line, or "(n rows)").
    for block in re.split(r"^== [a-z0-9_]+ ==$", done.stdout, flags=re.M)[1:]:
        assert re.search(r"^\(\d+ rows?\)$", block, re.M), block[:300]


async def test_scheduled_jobs_lists_pg_cron_jobs_where_pg_cron_runs_them(cron_db_url: str) -> None:
    conn = await asyncpg.connect(cron_db_url)
    try:
        info = await apply_schema(conn)
        rows = [dict(r) for r in await conn.fetch(load_queries()["scheduled_jobs"])]
    finally:
        await conn.close()
    if info.license == "timescale":
        assert {r["scheduler"] for r in rows} == {"timescaledb"}
        return
    assert {(r["scheduler"], r["job"], r["schedule"]) for r in rows} == {
        ("pg_cron", "quaint-cleanup", "0 2 * * *"),
        ("pg_cron", "quaint-accuracy", "0 3 * * *"),
    }
