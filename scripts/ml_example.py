"""ML integration example: read the current minute's features from ``feature_cache``.

The feeder writes one row per symbol, minute and feature version into ``feature_cache``
(``time`` = the minute the features describe, computed from data up to that minute's close).
A model serving the next minute reads the newest row and refuses stale data::

    eval "$(scripts/local_suite.sh env)"      # local mode: the running suite's DB_* settings
    .venv/bin/python scripts/ml_example.py --symbol BTCUSDT

Connection settings are the services' own (``DB_HOST``, ``DB_PORT``, ``DB_USER``,
``DB_PASSWORD``, ``DB_NAME``; see .env.example). Prints one JSON object and exits 0, or
explains on stderr and exits 1 when no row is fresh enough (2 for bad settings).

Next to a running local suite (``./deploy.sh --local``), whose database listens on a port
of its own, the defaults (localhost:5432) would reach some other server or none: with
neither ``DB_HOST`` nor ``DB_PORT`` set, the script then refuses with one line naming
``eval "$(scripts/local_suite.sh env)"`` (exit 2) rather than guess. It does not adopt the
suite's settings by itself: what a command connects to is always what its environment says.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import datetime
from typing import Any

import asyncpg

from quaint.service.local_suite import refusal, running_local_suite
from quaint.service.settings import Settings, load_settings

QUERY = """
SELECT symbol, time, version, features_json, created_at,
       extract(epoch FROM now() - (time + INTERVAL '1 minute'))::float8 AS age_s
FROM feature_cache
WHERE symbol = $1 AND version = $2 AND time >= now() - make_interval(secs => $3)
ORDER BY time DESC
LIMIT 1
"""


def parse_args(argv: list[str] | None, settings: Settings) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--symbol", default=settings.symbols[0], help="default: the first of SYMBOLS")
    parser.add_argument(
        "--feature-version",
        default=os.environ.get("FEATURE_VERSION", "v1"),
        help="feature version, default FEATURE_VERSION or v1",
    )
    parser.add_argument(
        "--max-age-s",
        type=float,
        default=180.0,
        help="refuse features describing a minute that closed longer ago than this (default 180)",
    )
    return parser.parse_args(argv)


def model_input(features: dict[str, Any]) -> list[float]:
    """What a model would be fed: the numeric features in a fixed (sorted-name) order."""
    return [float(v) for _, v in sorted(features.items()) if isinstance(v, int | float)]


async def latest_features(
    settings: Settings, symbol: str, version: str, max_age_s: float
) -> dict[str, Any] | None:
    conn = await asyncpg.connect(
        host=settings.db_host,
        port=settings.db_port,
        user=settings.db_user,
        password=settings.db_password.get_secret_value() or None,
        database=settings.db_name,
        timeout=settings.db_connect_timeout_s,
    )
    try:
        row = await conn.fetchrow(QUERY, symbol.upper(), version, max_age_s)
    finally:
        await conn.close()
    if row is None:
        return None
    raw = row["features_json"]
    features = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(features, dict):
        raise ValueError(f"features_json of {symbol} at {row['time']} is not a JSON object")
    time: datetime = row["time"]
    return {
        "symbol": row["symbol"],
        "time": time.isoformat(),
        "version": row["version"],
        "age_s": round(float(row["age_s"]), 3),
        "features": features,
        "model_input": model_input(features),
    }


def main(argv: list[str] | None = None) -> int:
    settings = load_settings(Settings)
    args = parse_args(argv, settings)
    run_dir = running_local_suite(os.environ)
    if run_dir is not None:
        print(refusal("ml_example", run_dir), file=sys.stderr)
        return 2
    try:
        result = asyncio.run(latest_features(settings, args.symbol, args.feature_version, args.max_age_s))
    except (OSError, ValueError, asyncpg.PostgresError) as exc:
        where = f"{settings.db_host}:{settings.db_port}/{settings.db_name}"
        print(f"ml_example: cannot query {where}: {exc}", file=sys.stderr)
        return 1
    if result is None:
        print(
            f"ml_example: no {args.feature_version} features for {args.symbol.upper()} "
            f"newer than {args.max_age_s:g} s; "
            "is the feeder running and receiving candles? (see scripts/monitoring.sql: feature_freshness)",
            file=sys.stderr,
        )
        return 1
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
