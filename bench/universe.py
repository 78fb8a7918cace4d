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

Then (unless ``--no-gap-handler``) the gap handler filling the whole market: one
``python -m gap_handler`` process with ``SYMBOLS=ALL`` and ``HISTORY_DAYS=--gap-days`` against
the same simulator (whose REST history reaches a day further back) finds, for every symbol, the
day before the feeder's window (and any minute due since the feeder stopped), and fills it from
REST at ``--gap-rate`` requests per second (its default cap, 10), in one scan's work. Measured:
its peak RSS while it fills (sampled every 0.5 s), its klines requests per second over the cap (the
simulator's own count; the token bucket runs 2 % under the cap on purpose), and its ``/metrics``
page at that size. Checked: every symbol's candles from the window's start to the first scan's
due end equal the model, and the page's all-symbols total equals the candles it reports recovered.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from bench import services as sv
from bench.backfill import klines_count
from bench.common import durable_cluster, machine, result, sample_process
from gap_handler import store
from gap_handler.core.intervals import DAY_MS, due_end, history_start
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


@dataclass(frozen=True, slots=True)
class Fill:
    rss_mb: float
    seconds: float
    requests: int
    candles: int
    exact: int  # symbols whose candles of [lo, hi) equal the model
    compared: int
    lo: int
    hi: int
    unrecoverable: int
    samples: int  # on the gap handler's /metrics page
    page_total: float  # candles_recovered_all_symbols_total on that page
    load: str  # load average when it was done


def wait_filled(gh: sv.Service, deadline_s: float) -> dict[str, Any]:
    """Until the first scan has run and every unit it queued has ended (``/health``)."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if gh.proc.poll() is not None:
            raise RuntimeError(f"gap handler exited with {gh.proc.returncode}:\n{gh.log_tail()}")
        status, text = sv.http_get(gh.base + "/health")
        if status in (200, 503):
            body: dict[str, Any] = orjson.loads(text)
            idle = body["backfills_queued"] == 0 and body["backfills_in_flight"] == 0
            if idle and body["last_scan_at"] is not None and body["candles_recovered"] != 0:
                return body
        time.sleep(0.5)
    raise TimeoutError(f"the fill was not done within {deadline_s:g} s:\n{gh.log_tail()}")


async def unrecoverable_rows(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        sql = "SELECT count(*) FROM data_quality_logs WHERE event_type = 'gap_unrecoverable'"
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


def fill_history(url: str, sim: sv.Service, symbols: list[str], days: int, rate: float) -> Fill:
    """The gap handler filling ``days`` of history of the whole market (module docstring)."""
    pages = math.ceil(days * DAY_MS / MINUTE_MS / 1000) + 1  # plus the minutes since the feeder
    deadline = 120 + 3 * len(symbols) * pages / rate
    requests0 = klines_count(sim)
    spawned_at = int(orjson_get(sim.base + "/_sim/clock")["now"])
    settings = {"HISTORY_DAYS": str(days), "RATE_LIMIT_REQUESTS_PER_SEC": f"{rate:g}"}
    # One scan: the next periodic one and the universe refresh (which scans too) an hour away,
    # so the fill is what the first scan found, not also the live edge the stopped feeder leaves.
    settings.update(BACKFILL_CHECK_INTERVAL_S="3600", UNIVERSE_REFRESH_S="3600")
    with sv.gap_handler(url, sim, ["ALL"], **settings) as gh:
        started = time.monotonic()
        with RssPeak(gh.proc.pid) as rss:
            body = wait_filled(gh, deadline)
            seconds = time.monotonic() - started
        done_at = int(orjson_get(sim.base + "/_sim/clock")["now"])
        page = sv.parse_metrics(sv.http_get(gh.base + "/metrics")[1])
        peak = max(rss.peak, gh.sample().rss_mb)
        load = sv.loadavg()
    requests = klines_count(sim) - requests0
    # The first scan ran between spawn and done: what it saw is [its window start, its due end),
    # which holds [the window start at done, the due end at spawn).
    lo, hi = history_start(done_at, days), due_end(spawned_at, 70)
    ok, compared = asyncio.run(exact(url, symbols, lo, hi))
    return Fill(
        rss_mb=peak,
        seconds=seconds,
        requests=requests,
        candles=int(body["candles_recovered"]),
        exact=ok,
        compared=compared,
        lo=lo,
        hi=hi,
        unrecoverable=asyncio.run(unrecoverable_rows(url)),
        samples=len(page),
        page_total=sv.metric(page, "quaint_gap_handler_candles_recovered_all_symbols_total"),
        load=load,
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench universe", description=__doc__.split("\n")[0])
    parser.add_argument("--symbols", type=int, default=2000)
    parser.add_argument("--minutes", type=int, default=10, help="whole minutes measured")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per wall second")
    parser.add_argument("--no-gap-handler", action="store_true", help="skip the gap handler's fill")
    parser.add_argument("--gap-days", type=int, default=1, help="HISTORY_DAYS of the gap handler's fill")
    parser.add_argument(
        "--gap-rate", type=float, default=10.0, help="its RATE_LIMIT_REQUESTS_PER_SEC (the default cap: 10)"
    )
    args = parser.parse_args(sys.argv[2:])
    symbols = SimSettings.without_env(symbols=LIQUID, symbol_count=args.symbols).symbols
    print(machine())
    print(f"load average at start: {sv.loadavg()}")
    print(f"{len(symbols)} symbols (SYMBOLS=ALL), {args.minutes} minutes at speed {args.speed:g}")
    sim_args = ["--symbol-count", str(args.symbols), "--book-skew", "--book-rate", "10"]
    # REST history a day beyond the gap handler's window: its oldest minutes still exist when asked.
    sim_args += ["--speed", str(args.speed), "--history-days", str(args.gap_days + 1)]
    # Klines weigh 2: above ~30 requests/s the default weight limit (6000 a minute) would throttle.
    sim_args += ["--weight-limit", str(max(6000, math.ceil(args.gap_rate * 2 * 60 * 2)))]
    fill = None
    with durable_cluster() as url:
        asyncio.run(sv.reset_database(url, ("book_ticker", "candles_1m", "data_quality_logs")))
        with sv.simulator(LIQUID, *sim_args) as sim:
            with sv.feeder(url, sim, ["ALL"], DB_POOL_MAX_SIZE="6") as feeder:
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
            # The feeder's own work, checked before the gap handler may write anything.
            ok, compared = asyncio.run(exact(url, symbols, first, end))
            scan_ms = asyncio.run(incremental_scan_ms(url, symbols, end))
            if not args.no_gap_handler:
                fill = fill_history(url, sim, symbols, args.gap_days, args.gap_rate)
    cpu_share = (cpu1.cpu_s - cpu0.cpu_s) / (cpu1.at - cpu0.at)
    delta = histogram_delta(before, after)
    p50_ms, p90_ms, p99_ms = (
        sv.histogram_quantile(delta, HISTOGRAM, q, kind="candle") * 1000 for q in (0.5, 0.9, 0.99)
    )
    candles = sv.metric(delta, f"{HISTOGRAM}_bucket", kind="candle", le="+Inf")
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
    filled = fill is None or report_fill(fill, symbols, args.gap_rate)
    if not every:
        raise SystemExit(f"{len(symbols) - ok} symbol(s) not stored exactly as the exchange has them")
    if not filled:
        raise SystemExit("the gap handler did not fill every symbol's history exactly")


def report_fill(fill: Fill, symbols: list[str], rate: float) -> bool:
    """Prints the fill's figures; whether it filled every symbol exactly."""
    per_s = fill.requests / fill.seconds
    print(
        f"gap handler fill: {fill.candles:,} candles recovered in {fill.seconds:.1f} s by {fill.requests:,}"
        f" klines requests ({per_s:.2f}/s, cap {rate:g}/s); {fill.exact}/{len(symbols)} symbols exact over"
        f" {(fill.hi - fill.lo) // MINUTE_MS:,} minutes ({fill.compared:,} candles compared with the model);"
        f" {fill.unrecoverable} gap_unrecoverable rows; /metrics {fill.samples} samples, all-symbols"
        f" candles recovered {fill.page_total:,.0f}; load at end {fill.load}"
    )
    every = fill.exact == len(symbols) and fill.compared > 0 and fill.page_total == fill.candles
    result("universe_gap_handler_rss_mb", fill.rss_mb, "MB")
    result("universe_gap_handler_ratio_to_cap", per_s / rate, "ratio")
    result("universe_gap_handler_exact", 1.0 if every else 0.0, "bool")
    return every


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
