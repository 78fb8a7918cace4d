"""ML integration example: a serving read and a training-set read with ``quaint.data``.

Serving (the default): the feeder writes one row per symbol, minute and feature version into
``feature_cache`` (``time`` = the minute the features describe, computed from data up to that
minute's close). A model serving the next minute reads the newest row and refuses stale data::

    eval "$(scripts/local_suite.sh env)"      # local mode: the running suite's DB_* settings
    .venv/bin/python scripts/ml_example.py --symbol BTCUSDT

Training (``--train-since``): the features of a range joined with the label a model learns,
the next minute's return (from ``candles_1m``, float64 for the maths), warm rows only::

    .venv/bin/python scripts/ml_example.py --symbol BTCUSDT --train-since 2026-11-01

Needs the ``data`` extra (``pip install -e '.[data]'``; ``.[test]`` has it). Connection settings
are the services' own (``DB_HOST``, ``DB_PORT``, ``DB_USER``, ``DB_PASSWORD``, ``DB_NAME``; see
.env.example). Prints one JSON object and exits 0, or explains on stderr and exits 1 when no row
is fresh enough (or the range has none; 2 for bad settings or arguments).

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
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from quaint.service.local_suite import refusal, running_local_suite
from quaint.service.settings import Settings, load_settings
from quaint.store.pool import connect_kwargs


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
    parser.add_argument(
        "--train-since",
        default=None,
        help="training mode: the features from this date/time (UTC) joined with the next minute's return",
    )
    parser.add_argument("--train-until", default=None, help="training mode: exclusive end (default: now)")
    return parser.parse_args(argv)


def model_input(features: dict[str, Any]) -> list[float]:
    """What a model would be fed: the numeric features in a fixed (sorted-name) order."""
    return [float(v) for _, v in sorted(features.items()) if isinstance(v, int | float)]


async def latest_features(
    conn: asyncpg.Connection, symbol: str, version: str, max_age_s: float
) -> dict[str, Any] | None:
    """Serving: the newest row of the last ``max_age_s`` seconds, as the model's input."""
    from quaint.data import read_features

    now = datetime.now(UTC)
    table = await read_features(
        conn, symbol, now - timedelta(seconds=max_age_s), version=version, output="arrow"
    )
    rows = table.to_pylist()
    if not rows:
        return None
    newest = rows[-1]
    time: datetime = newest.pop("time")
    features = {k: v for k, v in newest.items() if k not in ("symbol", "version")}
    return {
        "symbol": newest["symbol"],
        "time": time.isoformat(),
        "version": newest["version"],
        "age_s": round((now - time - timedelta(minutes=1)).total_seconds(), 3),
        "features": features,
        "model_input": model_input(features),
    }


async def training_set(
    conn: asyncpg.Connection, symbol: str, version: str, since: datetime, until: datetime | None
) -> dict[str, Any] | None:
    """Training: every warm feature row of the range with its label, the next minute's return
    close[t+1] / close[t] - 1 (rows whose next minute is not stored have none and are left out)."""
    from quaint.data import read_candles, read_features

    end = until or datetime.now(UTC)
    features = await read_features(conn, symbol, since, end, version=version, output="pandas")
    # One minute past the end: the last row's label. float64: a model's maths, not the ledger's.
    candles = await read_candles(
        conn, symbol, since, end + timedelta(minutes=1), output="pandas", decimals="float64"
    )
    if len(features) == 0 or len(candles) == 0:
        return None
    close = candles.set_index("time")["close"]
    label = close.shift(-1, freq="1min").reindex(close.index) / close - 1
    frame = features.set_index("time").join(label.rename("label"), how="inner").dropna(subset=["label"])
    if "warm" in frame.columns:
        frame = frame[frame["warm"].eq(True)]
    inputs = sorted(
        c for c in frame.columns if c not in ("symbol", "version", "label") and frame[c].dtype.kind in "fiu"
    )
    if len(frame) == 0:
        return None
    return {
        "symbol": symbol,
        "version": version,
        "rows": len(frame),
        "first": frame.index[0].isoformat(),
        "last": frame.index[-1].isoformat(),
        "inputs": inputs,
        "label_mean": float(frame["label"].mean()),
    }


async def run(
    settings: Settings, args: argparse.Namespace, train: tuple[datetime, datetime | None] | None
) -> dict[str, Any] | None:
    conn = await asyncpg.connect(**connect_kwargs(settings), timeout=settings.db_connect_timeout_s)
    try:
        if train is not None:
            return await training_set(conn, args.symbol.upper(), args.feature_version, *train)
        return await latest_features(conn, args.symbol.upper(), args.feature_version, args.max_age_s)
    finally:
        await conn.close()


def main(argv: list[str] | None = None) -> int:
    settings = load_settings(Settings)
    args = parse_args(argv, settings)
    run_dir = running_local_suite(os.environ)
    if run_dir is not None:
        print(refusal("ml_example", run_dir), file=sys.stderr)
        return 2
    try:
        from quaint.data.read import time_range  # the data extra: one clear line without it
    except ImportError as exc:
        print(f"ml_example: {exc}", file=sys.stderr)
        return 2
    try:
        train = None
        if args.train_since is not None:
            train = time_range(args.train_since, args.train_until, ("--train-since", "--train-until"))
    except ValueError as exc:
        print(f"ml_example: {exc}", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(run(settings, args, train))
    except (OSError, ValueError, asyncpg.PostgresError) as exc:
        where = f"{settings.db_host}:{settings.db_port}/{settings.db_name}"
        print(f"ml_example: cannot query {where}: {exc}", file=sys.stderr)
        return 1
    if result is None and args.train_since is not None:
        print(
            f"ml_example: no warm {args.feature_version} features of {args.symbol.upper()} with a label "
            f"from {args.train_since}",
            file=sys.stderr,
        )
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
