"""Backfill: 13 months of 1-minute candles for one symbol, fetched from the simulator's
REST API by the gap handler running as a real process (``python -m gap_handler`` with
``HISTORY_DAYS=396``: a new symbol's history bootstrap, oldest first).

Two runs, each with its own durable database and simulator:

1. ``RATE_LIMIT_REQUESTS_PER_SEC=10``: candles/s and the ratio to the cap (10 requests/s
   x 1000 candles per request). The token bucket runs 2 % under the configured rate on
   purpose (see ``gap_handler.core.rate``), so 0.98 is the best possible ratio.
2. The cap lifted (1000 requests/s, the simulator's weight limit raised so the weight
   budget never throttles): what the rest of the path (simulator, parse, upsert, commit
   per page) sustains on this machine, with the process CPU that says who limits it; then
   the database write path alone (``upsert_candles`` from as many writers as the gap
   handler has workers), the database-side ceiling.

Each run ends with a correctness check: no minute missing between the oldest and the
newest stored candle, the oldest one where the service's window starts, nothing
recorded as unrecoverable, and sampled windows equal to the simulator's ``/_sim/truth``.

Two figures that were once test assertions, as ratios to the cap's request interval
(1 s / 10 requests): the time from a feeder's ``gap_detected`` row (its NOTIFY) to the
gap handler's first klines request for it, with the next periodic scan minutes away;
and the simulator's cost of generating one 1000-candle page (it must not be what a
backfill at the cap waits for).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from bench.common import cpu_percent, durable_cluster, machine, result
from bench.services import (
    ProcessGroupSampler,
    Service,
    gap_handler,
    http_get,
    loadavg,
    postmaster_pid,
    simulator,
)
from gap_handler.core.intervals import history_start
from gap_handler.store import scan_holes
from quaint.binance.models import MINUTE_MS, datetime_to_ms, ms_to_datetime
from quaint.binance.parse import parse_rest_klines
from quaint.store.candles import fetch_candles, upsert_candles
from quaint.store.pool import prepare_connection
from quaint.store.quality import log_event
from quaint.store.quality_event import QualityEvent
from simulator.market import MarketModel

SYMBOL = "BTCUSDT"
HISTORY_DAYS = 396  # 13 months (the default of --days)
CANDLES_PER_REQUEST = 1000
SAMPLE_WINDOWS = 5
DEADLINE_S = 900.0
WORKERS = 5  # the gap handler's MAX_CONCURRENT_BACKFILLS default
DB_PATH_PAGES = 150
NOTIFY_ROUNDS = 5
HOLE_MINUTES = 30


@dataclass(frozen=True, slots=True)
class Run:
    rate: float
    candles: int
    seconds: float  # from the service answering /health to the bootstrap being complete
    seconds_from_spawn: float
    klines_requests: int
    max_requests_1s: int
    cpu: dict[str, float]
    check: str
    notify_to_request_s: float | None = None  # median over NOTIFY_ROUNDS

    @property
    def candles_per_s(self) -> float:
        return self.candles / self.seconds


def health(svc: Service) -> dict[str, Any]:
    status, body = http_get(svc.base + "/health")
    data = json.loads(body)
    if not isinstance(data, dict):
        raise RuntimeError(f"/health answered {status}: {body[:200]}")
    return data


def wait_complete(svc: Service) -> dict[str, Any]:
    """Poll /health until the bootstrap has been queued, run and drained."""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        if svc.proc.poll() is not None:
            raise RuntimeError(f"gap handler exited with {svc.proc.returncode}:\n{svc.log_tail()}")
        body = health(svc)
        idle = body["backfills_queued"] == 0 and body["backfills_in_flight"] == 0
        if idle and body["candles_recovered"] > 0 and body["last_scan_at"] is not None:
            return body
        time.sleep(0.1)  # polls the service's own state; bounded by the deadline
    raise TimeoutError(f"bootstrap not complete after {DEADLINE_S:g} s:\n{svc.log_tail()}")


async def check(db_url: str, sim: Service, window_start_ms: int) -> str:
    """The stored history is complete, starts where the service's window starts, and
    sampled windows equal the exchange's truth to the last digit."""
    conn = await asyncpg.connect(db_url)
    try:
        n, first, last = await conn.fetchrow(
            "SELECT count(*), min(time), max(time) FROM candles_1m WHERE symbol = $1", SYMBOL
        )
        lo, hi = datetime_to_ms(first), datetime_to_ms(last) + MINUTE_MS
        minutes = (hi - lo) // MINUTE_MS
        assert n == minutes, f"{n} rows for {minutes} minutes between the oldest and newest candle"
        # The window starts HISTORY_DAYS before the first scan, which ran within seconds
        # of the service answering.
        assert abs(lo - window_start_ms) <= 2 * MINUTE_MS, f"history starts at {first}"
        assert await scan_holes(conn, SYMBOL, lo, hi) == []
        unrecoverable = await conn.fetchval(
            "SELECT count(*) FROM data_quality_logs WHERE event_type = 'gap_unrecoverable'"
        )
        assert unrecoverable == 0, f"{unrecoverable} gap_unrecoverable rows"
        span = (hi - lo) // MINUTE_MS - CANDLES_PER_REQUEST
        compared = 0
        for i in range(SAMPLE_WINDOWS):
            start = lo + span * i // (SAMPLE_WINDOWS - 1) * MINUTE_MS
            end = start + CANDLES_PER_REQUEST * MINUTE_MS
            stored = await fetch_candles(conn, SYMBOL, start, end)
            query = f"/_sim/truth?symbol={SYMBOL}&start={start}&end={end}"
            status, body = await asyncio.to_thread(http_get, sim.base + query)
            assert status == 200, body[:200]
            truth = parse_rest_klines(json.loads(body), SYMBOL)
            assert stored == truth, f"stored candles differ from the truth in [{start}, {end})"
            compared += len(stored)
    finally:
        await conn.close()
    return f"{n:,} rows = {minutes:,} minutes, no hole, {compared:,} sampled candles equal /_sim/truth"


async def db_path_ceiling(db_url: str, pages: int = DB_PATH_PAGES) -> float:
    """Candles/s through the gap handler's write path alone (``upsert_candles`` of
    1000-candle pages, client-side encoding included) with as many concurrent writers
    as it runs workers: stored candles written again under a new symbol (pure inserts)."""
    conn = await asyncpg.connect(db_url)
    try:
        first = datetime_to_ms(
            await conn.fetchval("SELECT min(time) FROM candles_1m WHERE symbol = $1", SYMBOL)
        )
        stored = await fetch_candles(conn, SYMBOL, first, first + pages * CANDLES_PER_REQUEST * MINUTE_MS)
    finally:
        await conn.close()
    copies = [dataclasses.replace(c, symbol="COPYUSDT") for c in stored]
    queue = [copies[i : i + CANDLES_PER_REQUEST] for i in range(0, len(copies), CANDLES_PER_REQUEST)]
    pool = await asyncpg.create_pool(db_url, min_size=WORKERS, max_size=WORKERS, init=prepare_connection)
    try:

        async def writer() -> None:
            while queue:
                page = queue.pop()
                async with pool.acquire() as c:
                    await upsert_candles(c, page, "rest")

        started = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(WORKERS)))
        return len(copies) / (time.perf_counter() - started)
    finally:
        await pool.close()


def klines_count(sim: Service) -> int:
    return int(json.loads(http_get(sim.base + "/_sim/stats")[1])["requests_by_path"].get("/api/v3/klines", 0))


async def notify_latency(db_url: str, sim: Service, gh: Service, rounds: int = NOTIFY_ROUNDS) -> float:
    """Median seconds from a committed gap_detected row to the first klines request after
    it: delete a stored half hour near the newest candle, report it as the feeder would,
    poll the simulator."""
    conn = await asyncpg.connect(db_url)
    await prepare_connection(conn)
    try:
        # Near the live edge, where a feeder's gaps are: the NOTIFY's scan runs from the gap on.
        newest = datetime_to_ms(
            await conn.fetchval("SELECT max(time) FROM candles_1m WHERE symbol = $1", SYMBOL)
        )
        took = []
        for i in range(rounds):
            start = newest - (i + 1) * 2 * HOLE_MINUTES * MINUTE_MS
            end = start + HOLE_MINUTES * MINUTE_MS
            await conn.execute(
                "DELETE FROM candles_1m WHERE symbol = $1 AND time >= $2 AND time < $3",
                SYMBOL,
                ms_to_datetime(start),
                ms_to_datetime(end),
            )
            before = await asyncio.to_thread(klines_count, sim)
            event = QualityEvent(
                "gap_detected",
                symbol=SYMBOL,
                gap_start=ms_to_datetime(start),
                gap_end=ms_to_datetime(end - MINUTE_MS),
                candles_missing=HOLE_MINUTES,
                source="ws",
            )
            await log_event(conn, event)
            sent = time.perf_counter()
            deadline = sent + 60
            while await asyncio.to_thread(klines_count, sim) == before:
                if time.perf_counter() > deadline:
                    raise TimeoutError(f"no klines request within 60 s of a NOTIFY:\n{gh.log_tail()}")
                await asyncio.sleep(0.002)  # polling the simulator's counter: the probe's resolution
            took.append(time.perf_counter() - sent)
            wait_complete(gh)
            holes = await scan_holes(conn, SYMBOL, start, end)
            assert holes == [], f"the reported hole was not filled: {holes}"
    finally:
        await conn.close()
    return sorted(took)[len(took) // 2]


def sim_page_seconds(rounds: int = 5) -> float:
    """Best of ``rounds``: the simulator's market model generating one 1000-candle page."""
    model = MarketModel(seed=7, symbols=[SYMBOL])
    t0 = 1_700_000_000_000
    best = float("inf")
    for k in range(rounds):
        started = time.perf_counter()
        model.candles(SYMBOL, t0 + k * 10**8, CANDLES_PER_REQUEST)
        best = min(best, time.perf_counter() - started)
    return best


def run(rate: float, sim_weight_limit: int, days: int, *, db_path: bool = False) -> tuple[Run, float | None]:
    with (
        durable_cluster() as url,
        simulator([SYMBOL], "--history-days", str(days + 4), "--weight-limit", str(sim_weight_limit)) as sim,
    ):
        pg = ProcessGroupSampler(postmaster_pid(url))
        spawned = time.monotonic()
        # The periodic scan is an hour away: only a NOTIFY starts the notify rounds' backfills.
        with gap_handler(
            url,
            sim,
            [SYMBOL],
            RATE_LIMIT_REQUESTS_PER_SEC=f"{rate:g}",
            HISTORY_DAYS=str(days),
            BACKFILL_CHECK_INTERVAL_S="3600",
        ) as gh:
            ready = time.monotonic()
            window_start = history_start(time.time_ns() // 1_000_000, days)
            pg.start()
            gh0, sim0 = gh.sample(), sim.sample()
            body = wait_complete(gh)
            done = time.monotonic()
            cpu = {
                "gap_handler": cpu_percent(gh0, gh.sample()),
                "simulator": cpu_percent(sim0, sim.sample()),
                "postgres": pg.cpu_percent(),
            }
            notify = None if db_path else asyncio.run(notify_latency(url, sim, gh))
        stats = json.loads(http_get(sim.base + "/_sim/stats")[1])
        verdict = asyncio.run(check(url, sim, window_start))
        ceiling = asyncio.run(db_path_ceiling(url)) if db_path else None
    return Run(
        rate=rate,
        candles=int(body["candles_recovered"]),
        seconds=done - ready,
        seconds_from_spawn=done - spawned,
        klines_requests=int(stats["requests_by_path"].get("/api/v3/klines", 0)),
        max_requests_1s=int(stats["max_requests_1s"]),
        cpu=cpu,
        check=verdict,
        notify_to_request_s=notify,
    ), ceiling


def report(label: str, r: Run) -> None:
    cpu = ", ".join(f"{k} {v:.0f} %" for k, v in r.cpu.items())
    print(
        f"{label}: {r.candles:,} candles in {r.seconds:.1f} s ({r.seconds_from_spawn:.1f} s from spawn), "
        f"{r.candles_per_s:,.0f} candles/s; {r.klines_requests} klines requests, at most "
        f"{r.max_requests_1s} in any 1 s; CPU {cpu}; load {loadavg()}"
    )
    print(f"  check: {r.check}")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench backfill", description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=HISTORY_DAYS, help="history to backfill (days, >= 1)")
    args = parser.parse_args(sys.argv[2:])
    print(machine())
    print(f"backfill: {args.days} days of 1-minute candles for {SYMBOL}; load {loadavg()}")
    capped, _ = run(10.0, 6000, args.days)
    report("10 req/s", capped)
    assert capped.max_requests_1s <= 10, "the simulator saw more than 10 requests in a second"
    uncapped, ceiling = run(1000.0, 10_000_000, args.days, db_path=True)
    report("cap lifted (1000 req/s)", uncapped)
    assert ceiling is not None
    print(
        f"write path alone ({WORKERS} writers, {DB_PATH_PAGES} pages of {CANDLES_PER_REQUEST}): "
        f"{ceiling:,.0f} candles/s; load {loadavg()}"
    )
    ratio = capped.candles_per_s / (capped.rate * CANDLES_PER_REQUEST)
    result("backfill_candles_per_s", capped.candles_per_s, "candles/s")
    result("backfill_ratio_to_cap", ratio, "ratio")
    result("backfill_uncapped_candles_per_s", uncapped.candles_per_s, "candles/s")
    result("backfill_db_path_candles_per_s", ceiling, "candles/s")
    interval = 1.0 / capped.rate
    assert capped.notify_to_request_s is not None
    page = sim_page_seconds()
    print(
        f"NOTIFY -> first klines request: median {capped.notify_to_request_s * 1000:.1f} ms "
        f"of {NOTIFY_ROUNDS}; simulator 1000-candle page: {page * 1000:.2f} ms "
        f"(cap interval {interval * 1000:.0f} ms)"
    )
    result("notify_to_request_over_cap_interval", capped.notify_to_request_s / interval, "ratio")
    result("sim_page_over_cap_interval", page / interval, "ratio")
