"""scripts/ml_example.py's training mode (``--train-since``): the warm feature rows of a range,
each joined with the next minute's return from candles_1m; rows without a stored next minute,
and cold rows, are left out. (The serving mode is tested in tests/test_deploy_monitoring.py.)"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from quaint.binance.models import MINUTE_MS, Candle, datetime_to_ms
from quaint.store.candles import upsert_candles
from quaint.store.features import FeatureRow, upsert_features

ROOT = Path(__file__).resolve().parents[1]
START = datetime(2026, 11, 2, 10, 0, tzinfo=UTC)
T0 = datetime_to_ms(START)


def run_ml_example(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    url = urlsplit(db_url)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DB_")},
        "DB_HOST": url.hostname or "127.0.0.1",
        "DB_PORT": str(url.port or 5432),
        "DB_USER": url.username or "postgres",
        "DB_PASSWORD": url.password or "",
        "DB_NAME": url.path.lstrip("/"),
    }
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ml_example.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def close(m: int) -> Decimal:
    return Decimal(100 + m) + Decimal(m % 7) / 8


async def test_training_set_joins_warm_features_with_the_next_minutes_return(
    db_pool: asyncpg.Pool, db_url: str
) -> None:
    stored = [m for m in range(40) if m != 25]  # minute 25 missing: minute 24 has no label
    candles = [
        Candle(
            "BTCUSDT",
            T0 + m * MINUTE_MS,
            T0 + m * MINUTE_MS + MINUTE_MS - 1,
            close(m),
            close(m) + 1,
            close(m) - 1,
            close(m),
            Decimal(1),
            Decimal(1),
            1,
            Decimal(0),
            Decimal(0),
        )
        for m in stored
    ]
    features = [
        FeatureRow("BTCUSDT", T0 + m * MINUTE_MS, {"ret_1": m / 10, "warm": m >= 5, "regime": "calm"}, "v1")
        for m in stored
        if m < 39
    ]
    async with db_pool.acquire() as conn:
        await upsert_candles(conn, candles, "rest")
        await upsert_features(conn, features)
    done = await asyncio.to_thread(
        run_ml_example,
        db_url,
        "--symbol",
        "btcusdt",
        "--train-since",
        "2026-11-02T10:00:00Z",
        "--train-until",
        "2026-11-02T11:00:00Z",
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    # Warm (minute >= 5), with minute m + 1 stored: 5..38 without 24 and 25.
    labelled = [m for m in range(5, 39) if m not in (24, 25)]
    assert result["rows"] == len(labelled)
    assert result["first"] == datetime.fromtimestamp((T0 + 5 * MINUTE_MS) / 1000, UTC).isoformat()
    assert result["inputs"] == ["ret_1"]
    want = sum(float(close(m + 1)) / float(close(m)) - 1 for m in labelled) / len(labelled)
    assert abs(result["label_mean"] - want) < 1e-12

    empty = await asyncio.to_thread(
        run_ml_example, db_url, "--train-since", "2026-10-01", "--train-until", "2026-10-02"
    )
    assert empty.returncode == 1 and "no warm v1 features of BTCUSDT with a label" in empty.stderr
    bad = await asyncio.to_thread(run_ml_example, db_url, "--train-since", "last week")
    assert bad.returncode == 2 and "--train-since 'last week': not an ISO 8601" in bad.stderr
