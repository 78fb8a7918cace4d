"""Every benchmark command runs end to end, on a small size: ``python -m bench <name>`` starts
what it needs itself (its own database, simulator and services), passes its own correctness
checks, and ends with one ``RESULT <figure> <value> <unit>`` line per headline figure.

These are not timed: the figures are only checked to be positive numbers. The real sizes are
the commands' defaults (README, "Performance").
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULT = re.compile(r"^RESULT (\S+) (\S+) (\S+)$", re.M)

SMALL = {
    "ingest": ["--seconds", "1", "--warmup", "1", "--symbols", "2", "--ceiling-rows", "2000"],
    "latency": ["--seconds", "6", "--warmup", "2", "--symbols", "2"],
    "backfill": ["--days", "1"],
    "archive": ["--days", "5", "--rest-days", "1"],
    "scan": ["--months", "1", "--symbols", "2", "--rounds", "1"],
    "memory": ["--seconds", "1", "--settle", "0.5", "--symbols", "2"],
    "read": ["--months", "1", "--rounds", "1"],
    "universe": ["--symbols", "100", "--minutes", "1", "--speed", "10"],
    "scan-scale": ["--sizes", "2,4", "--days", "1", "--rounds", "1"],
}
FIGURES = {
    "ingest": {
        f"ingest_{kind}_per_s{suffix}"
        for kind in ("msgs", "rows")
        for suffix in ("", "_default", "_asyncio", "_mix")
    }
    | {"copy_ceiling_psql_rows_per_s", "copy_ceiling_project_rows_per_s", "ingest_ceiling_ratio"}
    | {"closed_candle_text_over_decimal"},
    "latency": {
        "latency_p50_ms",
        "latency_p99_ms",
        "latency_max_ms",
        "latency_feeder_hist_p50_ms",
        "latency_feeder_hist_p99_ms",
        "latency_round_trip_p99_ms",
        "latency_p99_over_round_trip",
        "latency_upsert_p99_ms",
        "latency_p99_over_upsert",
    },
    "backfill": {
        "backfill_candles_per_s",
        "backfill_ratio_to_cap",
        "backfill_uncapped_candles_per_s",
        "backfill_db_path_candles_per_s",
        "notify_to_request_over_cap_interval",
        "sim_page_over_cap_interval",
    },
    "archive": {
        "archive_candles_per_s",
        "archive_ratio_to_db_path",
        "archive_speedup_over_rest",
        "archive_peak_rss_mb",
    },
    "scan": {
        "scan_full_seconds",
        "scan_per_symbol_ms",
        "scan_full_two_connections_seconds",
        "scan_bytes_per_candle",
    },
    "read": {
        "read_copy_rows_per_s",
        "read_arrow_rows_per_s",
        "read_pandas_rows_per_s",
        "export_parquet_mb_per_s",
        "read_arrow_ratio_to_copy",
        "read_pandas_ratio_to_copy",
        "export_parquet_ratio_to_copy",
        "read_peak_rss_mb",
        "read_pandas_objects_ratio_to_copy",
        "read_pandas_objects_peak_rss_mb",
    },
    "universe": {
        "universe_symbols",
        "universe_feeder_cpu_share",
        "universe_feeder_rss_mb",
        "universe_candle_p99_ms",
        "universe_candles_exact",
        "scan_incremental_ms_per_symbol",
        "universe_gap_handler_rss_mb",
        "universe_gap_handler_ratio_to_cap",
        "universe_gap_handler_exact",
    },
    "scan-scale": {
        *(f"scan_full_ms_per_symbol_day_{n}" for n in (2, 4)),
        *(f"scan_incremental_ms_per_symbol_{n}" for n in (2, 4)),
        "scan_incremental_days_over_one_day",
        "scan_full_per_symbol_day_4_over_2",
    },
    "memory": {
        f"{what}_{service}_{phase}_{unit}"
        for service in ("feeder", "gap_handler")
        for phase in ("idle", "loaded")
        for what, unit in (("memory", "rss_mb"), ("cpu", "percent"))
    },
}
# CPU of an idle service may measure 0 %.
MAY_BE_ZERO = {"cpu_feeder_idle_percent", "cpu_gap_handler_idle_percent"}


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("name", sorted(SMALL))
def test_benchmark_runs_and_reports_its_figures(name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", name, *SMALL[name]],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=220,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.startswith("machine: "), done.stdout[:200]
    figures = {m[0]: float(m[1]) for m in RESULT.findall(done.stdout)}
    assert set(figures) == FIGURES[name], done.stdout[-2000:]
    for figure, value in figures.items():
        assert math.isfinite(value) and (value > 0 or (figure in MAY_BE_ZERO and value == 0)), (figure, value)
