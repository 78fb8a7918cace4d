"""The whole market (issue 17): one feeder process following ``SYMBOLS=ALL`` on a simulator of
``--symbols`` symbols (default 2,000: 4,000 streams over 4 connections) at Binance's pace (speed
1: klines every 2 s, bookTicker skewed: the three liquid symbols 10 times a second, the long
tail a few times a minute), for ``--minutes`` whole minutes.

Measured in the window, on the feeder's process: CPU share of one core (CPU seconds over wall
seconds), peak RSS (sampled every 0.5 s), closed-candle receipt -> commit p99 from the feeder's own
histogram (the difference of two scrapes; a bucket's upper bound), which at each minute boundary
sees all the market's candles close at once. Correctness: every closed candle of the window's
minutes, for every symbol, stored once and equal to the simulator's model (the same pure function
of seed, symbol and minute), else ``universe_candles_exact`` is 0.

Then the gap scan as the universe grows: the incremental scan the gap handler runs between full
scans (its store's ``scan_holes`` over the minutes since the previous scan, here the last 5) timed
over every symbol, per symbol.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time

import asyncpg
import orjson

from bench import services as sv
from bench.common import durable_cluster, machine, result, sample_process
from gap_handler import store
from quaint.binance.models import MINUTE_MS
from quaint.store.candles import fetch_candles
from simulator.market import MarketModel
from simulator.settings import SimSettings

LIQUID = ["BTCUSDT", "ETHUSDT", "BNBUSDT"]
HISTOGRAM = "feeder_receipt_to_commit_seconds"


def histogram_delta(
    before: dict[sv.MetricKey, float], after: dict[sv.MetricKey, float]
) -> dict[sv.MetricKey, float]:
    return {k: v - before.get(k, 0.0) for k, v in after.items() if k[0] == f"{HISTOGRAM}_bucket"}


def wait_streaming(feeder: sv.Service, symbols: int, deadline_s: float) -> None:
    """Until every symbol is followed and every connection up (the feeder's /health summary)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        status, body = sv.http_get(feeder.base + "/health")
        if status in (200, 503):
            health = orjson.loads(body)
            if health.get("websocket_connected") and sum(health.get("symbol_states", {}).values()) == symbols:
                return
        time.sleep(0.5)
    raise TimeoutError(f"the feeder did not follow {symbols} symbols within {deadline_s:g} s")


class RssPeak:
    def __init__(self, pid: int) -> None:
        self.pid, self.peak, self._stop = pid, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self.peak = max(self.peak, sample_process(self.pid).rss_mb)

    def __enter__(self) -> RssPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def exact(url: str, symbols: list[str], lo: int, hi: int) -> tuple[int, int]:
    """(symbols whose stored candles of [lo, hi) equal the model's, candles compared)."""
    market = MarketModel(0, symbols)
    minutes = (hi - lo) // MINUTE_MS
    conn = await asyncpg.connect(url)
    ok = compared = 0
    try:
        for symbol in symbols:
            truth = [c for c in market.candles(symbol, lo, minutes) if c is not None]
            stored = await fetch_candles(conn, symbol, lo, hi)
            compared += len(truth)
            ok += stored == truth
    finally:
        await conn.close()
    return ok, compared


async def incremental_scan_ms(url: str, symbols: list[str], hi: int) -> float:
    conn = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        for symbol in symbols:
            await store.scan_holes(conn, symbol, hi - 5 * MINUTE_MS, hi)
        return (time.perf_counter() - started) * 1000 / len(symbols)
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench universe", description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=2000)
    parser.add_argument("--minutes", type=int, default=10, help="whole minutes measured")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second")
    args = parser.parse_args(sys.argv[2:])
    symbols = SimSettings.without_env(symbols=LIQUID, symbol_count=args.symbols).symbols
    print(machine())
    print(f"load average at start: {sv.loadavg()}")
    print(f"{len(symbols)} symbols (SYMBOLS=ALL), {args.minutes} minutes at speed {args.speed:g}")
    sim_args = ["--symbol-count", str(args.symbols), "--book-skew", "--book-rate", "10"]
    sim_args += ["--speed", str(args.speed), "--history-days", "1"]
    with durable_cluster() as url:
        asyncio.run(sv.reset_database(url, ("book_ticker", "candles_1m", "data_quality_logs")))
        with (
            sv.simulator(LIQUID, *sim_args) as sim,
            sv.feeder(url, sim, ["ALL"], DB_POOL_MAX_SIZE="6") as feeder,
        ):
            wait_streaming(feeder, len(symbols), 120)
            clock = orjson_get(sim.base + "/_sim/clock")
            now = int(clock["now"])
            first = now - now % MINUTE_MS + MINUTE_MS  # the first minute wholly streamed
            end = first + args.minutes * MINUTE_MS
            wait_sim(sim, first, args.speed)
            before, cpu0 = feeder.metrics(), feeder.sample()
            with RssPeak(feeder.proc.pid) as rss:
                wait_sim(sim, end + 5_000, args.speed)  # the last minute's finals, committed
                after, cpu1 = feeder.metrics(), feeder.sample()
            load = sv.loadavg()
        cpu_share = (cpu1.cpu_s - cpu0.cpu_s) / (cpu1.at - cpu0.at)
        delta = histogram_delta(before, after)
        p50_ms, p90_ms, p99_ms = (
            sv.histogram_quantile(delta, HISTOGRAM, q, kind="candle") * 1000 for q in (0.5, 0.9, 0.99)
        )
        candles = sv.metric(delta, f"{HISTOGRAM}_bucket", kind="candle", le="+Inf")
        ok, compared = asyncio.run(exact(url, symbols, first, end))
        scan_ms = asyncio.run(incremental_scan_ms(url, symbols, end))
    print(
        f"window: {args.minutes} min, {candles:,.0f} closed candles committed in it (the window's own:"
        f" {compared:,}, compared with the model); {ok}/{len(symbols)} symbols exact; load at end {load}"
    )
    print(f"closed candle receipt -> commit (bucket bounds): p50 {p50_ms:g} ms, p90 {p90_ms:g} ms")
    result("universe_symbols", len(symbols), "symbols")
    result("universe_feeder_cpu_share", cpu_share, "cores")
    result("universe_feeder_rss_mb", max(rss.peak, cpu1.rss_mb), "MB")
    result("universe_candle_p99_ms", p99_ms, "ms")
    every = ok == len(symbols) and compared > 0
    result("universe_candles_exact", 1.0 if every else 0.0, "bool")
    result("scan_incremental_ms_per_symbol", scan_ms, "ms")
    if not every:
        raise SystemExit(f"{len(symbols) - ok} symbol(s) not stored exactly as the exchange has them")


def orjson_get(url: str) -> dict[str, int | float]:
    status, body = sv.http_get(url)
    if status != 200:
        raise RuntimeError(f"{url}: HTTP {status}")
    decoded: dict[str, int | float] = orjson.loads(body)
    return decoded


def wait_sim(sim: sv.Service, ms: int, speed: float) -> None:
    """Until the simulator's clock passes ``ms``."""
    while True:
        now = int(orjson_get(sim.base + "/_sim/clock")["now"])
        if now >= ms:
            return
        time.sleep(min(1.0, max(0.05, (ms - now) / 1000 / speed)))
