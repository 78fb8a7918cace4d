"""Reading the history out: 13 months of one symbol's 1-minute candles read with quaint.data into
Arrow and into pandas (rows/s; pandas' default Arrow-backed decimals, and ``decimals="object"``'s
Decimal objects), and exported to Parquet by ``python -m quaint export``'s own function (MB/s of
the rows' COPY text), each as a ratio to ``psql`` running ``COPY (...) TO STDOUT`` of the same
query into /dev/null in the same run: the server's own output path and a client that does
nothing with the bytes, the ceiling. Each read runs in a fresh child process, which reports its
own peak RSS; every read must return every stored row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import ROOT, durable_cluster, machine, psql, result
from bench.scan import FILL, load, quiesce
from quaint.store.history import candles_args, candles_query
from quaint.store.schema import apply_schema

SYMBOL = "S0USDT"
# pandas: the default, exact decimals as Arrow-backed columns; pandas_objects: decimals="object".
CASES = ("arrow", "pandas", "pandas_objects", "export")


def psql_copy_seconds(url: str, start: datetime, end: datetime) -> float:
    """``psql`` running the store's own candles query as COPY TO STDOUT, output discarded;
    the parameters become psql variables (quoted by psql), so the SQL is the same text."""
    args = candles_args("1m", [SYMBOL], start, end, complete_only=False)
    values = ["{" + SYMBOL + "}", start.isoformat(), end.isoformat()]
    assert len(args) == len(values)
    query = re.sub(r"\$(\d+)", lambda m: f":'p{m.group(1)}'", candles_query("1m", complete_only=False))
    cmd, env = psql(url, *(f"--set=p{i}={value}" for i, value in enumerate(values, start=1)))
    started = time.perf_counter()
    subprocess.run(
        cmd,
        input=f"COPY ({query}) TO STDOUT (FORMAT csv)\n",
        stdout=subprocess.DEVNULL,
        check=True,
        env=env,
        text=True,
        timeout=600,
    )
    return time.perf_counter() - started


async def child_case(case: str, url: str, start: datetime, end: datetime, out: Path) -> dict[str, Any]:
    from quaint.data import read_candles
    from quaint.data.export import export_candles

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        if case == "export":
            done = await export_candles(conn, [SYMBOL], start, end, interval="1m", fmt="parquet", out=out)
            seconds = time.perf_counter() - started
            rows, text_bytes = done.rows, done.bytes_in
            written = sum(p.stat().st_size for p in done.files)
        else:
            frame = await read_candles(
                conn,
                SYMBOL,
                start,
                end,
                output="arrow" if case == "arrow" else "pandas",
                decimals="object" if case == "pandas_objects" else "exact",
            )
            seconds = time.perf_counter() - started
            rows, text_bytes, written = len(frame), 0, 0
    finally:
        await conn.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "seconds": seconds,
        "rows": rows,
        "bytes": text_bytes,
        "written": written,
        "peak_rss_mb": peak,
        "rss_after_imports_mb": rss_before,
    }


def run_child(case: str, url: str, start: datetime, end: datetime) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix="quaint-bench-export-"))
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bench.read", case, url, start.isoformat(), end.isoformat(), str(out)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=1200,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"bench.read {case} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")
        figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return figures
    finally:
        shutil.rmtree(out, ignore_errors=True)


async def seed(url: str, months: int) -> tuple[datetime, datetime, int]:
    conn = await asyncpg.connect(url)
    try:
        info = await apply_schema(conn)
        print(f"TimescaleDB licence: {info.license}")
        end = (await conn.fetchval("SELECT date_trunc('minute', now())")) - timedelta(minutes=1)
        start = end - timedelta(days=30 * months)
        loaded = time.perf_counter()
        await conn.execute(FILL, SYMBOL, start, end)
        rows = int(await conn.fetchval("SELECT count(*) FROM candles_1m"))
        print(f"loaded {rows:,} candles of {SYMBOL} in {time.perf_counter() - loaded:.1f} s")
        await quiesce(conn)
        return start, end, rows
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench read", description=__doc__.split("\n")[0])
    parser.add_argument("--months", type=int, default=13, help="history of the one symbol (30-day months)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per figure (median reported)")
    args = parser.parse_args(sys.argv[2:])
    print(machine())
    print(f"read: {args.months} months of 1-minute candles of one symbol, {args.rounds} rounds; {load()}")
    with durable_cluster() as url:
        start, end, rows = asyncio.run(seed(url, args.months))
        copy_s: list[float] = []
        runs: dict[str, list[dict[str, Any]]] = {case: [] for case in CASES}
        for _ in range(args.rounds):
            copy_s.append(psql_copy_seconds(url, start, end))
            for case in CASES:
                figures = run_child(case, url, start, end)
                assert figures["rows"] == rows, f"{case} read {figures['rows']} of {rows} rows"
                runs[case].append(figures)
    text_mb = runs["export"][0]["bytes"] / 1e6
    copy = statistics.median(copy_s)
    seconds = {case: statistics.median(r["seconds"] for r in runs[case]) for case in CASES}
    peaks = {case: max(r["peak_rss_mb"] for r in runs[case]) for case in CASES}
    print(f"psql COPY TO STDOUT: {', '.join(f'{s:.2f}' for s in copy_s)} s ({text_mb:.1f} MB of CSV text)")
    for case in CASES:
        r = runs[case][0]
        times = ", ".join(f"{x['seconds']:.2f}" for x in runs[case])
        print(
            f"{case}: {times} s; peak RSS {peaks[case]:.1f} MB"
            f" ({r['rss_after_imports_mb']:.1f} MB after imports)"
            + (f"; {r['written'] / 1e6:.1f} MB of Parquet" if case == "export" else "")
        )
    print(f"after the runs: {load()}")
    result("read_copy_rows_per_s", rows / copy, "rows/s")
    result("read_arrow_rows_per_s", rows / seconds["arrow"], "rows/s")
    result("read_pandas_rows_per_s", rows / seconds["pandas"], "rows/s")
    result("export_parquet_mb_per_s", text_mb / seconds["export"], "MB/s")
    result("read_arrow_ratio_to_copy", copy / seconds["arrow"], "ratio")
    result("read_pandas_ratio_to_copy", copy / seconds["pandas"], "ratio")
    result("read_pandas_objects_ratio_to_copy", copy / seconds["pandas_objects"], "ratio")
    result("export_parquet_ratio_to_copy", copy / seconds["export"], "ratio")
    # The defaults' peak; decimals="object" (a Python object per value) is its own figure.
    result("read_peak_rss_mb", max(peak for case, peak in peaks.items() if case != "pandas_objects"), "MB")
    result("read_pandas_objects_peak_rss_mb", peaks["pandas_objects"], "MB")


if __name__ == "__main__":
    # A child: one measured case (see run_child), one JSON line.
    case, url, lo, hi, out = sys.argv[1:6]
    figures = asyncio.run(
        child_case(case, url, datetime.fromisoformat(lo), datetime.fromisoformat(hi), Path(out))
    )
    print(json.dumps(figures))
