"""RSS and CPU of the feeder and the gap handler, idle and loaded.

* idle: the simulator at speed 1 with its default book rate; the feeder with its
  defaults (sampled book ticks); the gap handler after filling ``HISTORY_DAYS=1``
  of history, waiting for the next scan;
* loaded: the firehose; the feeder with BOOK_TICKER_MODE=all (every frame a row,
  its buffer as full as the database lets it get); the gap handler at the same time
  filling 30 days of history for every symbol (REST pages at its rate limit, upserts),
  its busiest state (it does not read the WebSocket stream).

RSS is the largest of samples taken every 0.5 s during the window; CPU is % of one
core over the window. The RSS a process has after its imports alone is printed too:
most of an idle service is its libraries.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from dataclasses import dataclass

import asyncpg

from bench import services as sv
from bench.common import ROOT, cpu_percent, durable_cluster, machine, result

MINUTES_PER_DAY = 1440


@dataclass(frozen=True)
class Usage:
    rss_mb: float  # peak over the window
    cpu: float  # % of one core


def import_rss_mb(module: str) -> float:
    """RSS of a fresh interpreter that imported ``module`` and nothing else."""
    code = f"import {module}, pathlib; print(pathlib.Path('/proc/self/status').read_text())"
    out = subprocess.run([sv.PYTHON, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    line = next(x for x in out.stdout.splitlines() if x.startswith("VmRSS:"))
    return int(line.split()[1]) / 1024


def watch(services: list[sv.Service], seconds: float) -> dict[str, Usage]:
    first = {s.name: s.sample() for s in services}
    peak = {s.name: first[s.name].rss_mb for s in services}
    deadline = time.monotonic() + seconds
    last = first
    while time.monotonic() < deadline:
        time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
        last = {s.name: s.sample() for s in services}
        for name, sample in last.items():
            peak[name] = max(peak[name], sample.rss_mb)
    return {n: Usage(peak[n], cpu_percent(first[n], last[n])) for n in peak}


async def _count(url: str, sql: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


def wait_history(url: str, symbols: int, days: int, within: float) -> float:
    """Poll until the gap handler has filled (nearly) ``days`` of history per symbol."""
    want = int(symbols * days * MINUTES_PER_DAY * 0.98)
    started = time.monotonic()
    while time.monotonic() - started < within:
        if asyncio.run(_count(url, "SELECT count(*) FROM candles_1m WHERE source = 'rest'")) >= want:
            return time.monotonic() - started
        time.sleep(0.5)
    raise TimeoutError(f"the gap handler did not fill {days} day(s) of history within {within:g} s")


def phase(
    url: str,
    symbols: list[str],
    sim_args: list[str],
    feeder_env: dict[str, str],
    history_days: int,
    settle: float,
    seconds: float,
    wait_for_history: bool,
) -> dict[str, Usage]:
    asyncio.run(sv.reset_database(url, ("book_ticker", "candles_1m", "feature_cache", "data_quality_logs")))
    with (
        sv.simulator(symbols, *sim_args) as sim,
        sv.feeder(url, sim, symbols, LOG_LEVEL="ERROR", **feeder_env) as feeder,
        sv.gap_handler(url, sim, symbols, LOG_LEVEL="ERROR", HISTORY_DAYS=str(history_days)) as gaps,
    ):
        if wait_for_history:
            took = wait_history(url, len(symbols), history_days, 120)
            print(f"  gap handler filled {history_days} day(s) of history in {took:.1f} s")
        time.sleep(settle)
        return watch([feeder, gaps], seconds)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench memory", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per phase")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds before each window")
    parser.add_argument("--symbols", type=int, default=5)
    args = parser.parse_args(sys.argv[2:])
    symbols = [f"S{i}USDT" for i in range(args.symbols)]
    print(machine())
    print(f"{len(symbols)} symbols; load {sv.loadavg()}")
    feeder_imports, gap_imports = import_rss_mb("feeder.service"), import_rss_mb("gap_handler.service")
    print(f"RSS after imports alone: feeder {feeder_imports:.1f} MB, gap_handler {gap_imports:.1f} MB")
    with durable_cluster() as url:
        idle = phase(url, symbols, [], {}, 1, args.settle, args.seconds, wait_for_history=True)
        print(f"  idle phase done; load {sv.loadavg()}")
        loaded = phase(
            url,
            symbols,
            ["--firehose"],
            {"BOOK_TICKER_MODE": "all"},
            30,
            args.settle,
            args.seconds,
            wait_for_history=False,
        )
        print(f"  loaded phase done; load {sv.loadavg()}")
    for name in ("feeder", "gap_handler"):
        i, lo = idle[name], loaded[name]
        print(f"{name}: idle {i.rss_mb:.1f} MB, {i.cpu:.1f} % CPU; loaded {lo.rss_mb:.1f} MB, {lo.cpu:.1f} %")
    for name in ("feeder", "gap_handler"):
        result(f"memory_{name}_idle_rss_mb", idle[name].rss_mb, "MB")
        result(f"memory_{name}_loaded_rss_mb", loaded[name].rss_mb, "MB")
        result(f"cpu_{name}_idle_percent", idle[name].cpu, "%")
        result(f"cpu_{name}_loaded_percent", loaded[name].cpu, "%")
