"""Archive bootstrap: 13 months of 1-minute candles for one symbol from the simulator's
data.binance.vision layout, by the gap handler running as a real process
(``python -m gap_handler`` with ``HISTORY_DAYS=396``, ``ARCHIVE_ENABLED=true``,
``ARCHIVE_BASE_URL`` = the simulator): monthly files, this month's daily files, REST only for
the last ``ARCHIVE_LAG_DAYS`` and one cross-check page per file, all at 10 req/s.

In the same run, on the same database and simulator:

* the database write path alone (``bench.backfill.db_path_ceiling``: 1000-candle upserts from
  as many writers as the gap handler has workers): ``archive_ratio_to_db_path``;
* the REST path at 10 req/s for a second symbol over ``--rest-days`` (default 30) with archives
  off: ``archive_speedup_over_rest`` is the archive run's candles/s over that run's. A REST
  run of 13 months takes about a minute per symbol at the cap and its rate is flat (it is
  the cap), so the figure is **extrapolated** from the shorter run; ``--rest-days 396``
  measures it in full.

The simulator makes each archive file from its truth on the first request (CSV and deflate in
Python: most of a core for a month's file), where data.binance.vision serves files that exist. So
before the timed run every file of the symbol is listed and fetched once, into a cache that holds
them all (``--archive-cache-files``): the run then measures the gap handler, not the file factory
(``--cold`` measures with the factory in the way, as before).

The gap handler's RSS is sampled every 50 ms during the archive run: ``archive_peak_rss_mb``.
``--many-symbols N`` (``--many-days D``, 40) adds a run of N symbols bootstrapped at once from
cold archives for the same peak: ``archive_many_symbols_peak_rss_mb`` (files are streamed a
chunk at a time, ``ARCHIVE_CONCURRENCY`` at once, so the peak follows the symbols and the
concurrency, not the months).
The run ends with the same correctness check as ``bench backfill``: no minute missing, nothing
unrecoverable, sampled windows equal ``/_sim/truth``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import asyncpg

from bench.backfill import check, db_path_ceiling, health
from bench.common import cpu_percent, durable_cluster, machine, result, sample_process
from bench.services import ProcessGroupSampler, Service, gap_handler, loadavg, postmaster_pid, simulator
from gap_handler.core.intervals import history_start
from quaint.binance.archive_listing import S3_NAMESPACE

ARCHIVE_SYMBOL = "BTCUSDT"
REST_SYMBOL = "ETHUSDT"
HISTORY_DAYS = 396
REST_DAYS = 30
DEADLINE_S = 900.0
RECENT_DAYS = 45  # the daily files a bootstrap may read: this month's and the last one's
CACHE_FILES = 64  # the simulator keeps them all built: 13 or 14 monthly files and RECENT_DAYS daily
S3 = f"{{{S3_NAMESPACE}}}"  # ElementTree's spelling of a namespaced tag


@dataclass(frozen=True, slots=True)
class Run:
    candles: int
    seconds: float
    peak_rss_mb: float
    cpu: dict[str, float]  # percent of one core over the run, per process (tree)

    @property
    def candles_per_s(self) -> float:
        return self.candles / self.seconds


def wait_complete(svc: Service) -> tuple[int, float]:
    """Poll /health until the history is queued, run and drained; (candles, peak RSS MiB)."""
    deadline = time.monotonic() + DEADLINE_S
    peak = 0.0
    while time.monotonic() < deadline:
        if svc.proc.poll() is not None:
            raise RuntimeError(f"gap handler exited with {svc.proc.returncode}:\n{svc.log_tail()}")
        peak = max(peak, sample_process(svc.proc.pid).rss_mb)
        body = health(svc)
        idle = body["backfills_queued"] == 0 and body["backfills_in_flight"] == 0
        if idle and body["candles_recovered"] > 0 and body["last_scan_at"] is not None:
            return int(body["candles_recovered"]), peak
        time.sleep(0.05)  # polls the service's own state and RSS; bounded by the deadline
    raise TimeoutError(f"history not complete after {DEADLINE_S:g} s:\n{svc.log_tail()}")


def listed(sim: Service, prefix: str) -> list[str]:
    """Every key under ``prefix`` in the simulator's bucket listing (all pages), in order."""
    keys: list[str] = []
    while True:
        query = urllib.parse.urlencode({"prefix": prefix, "marker": keys[-1] if keys else ""})
        with urllib.request.urlopen(f"{sim.base}/?{query}", timeout=60) as resp:
            page = ET.fromstring(resp.read())
        got = [k.text or "" for k in page.iter(f"{S3}Key")]
        keys += got
        if page.findtext(f"{S3}IsTruncated") != "true" or not got:
            return keys


def warm(sim: Service, symbol: str) -> tuple[int, int]:
    """Fetch once the files a bootstrap of ``symbol`` reads, so the simulator keeps them built:
    the newest daily files (this month's, last month's while its monthly file is not out),
    then every monthly file. (files, bytes)."""
    base = f"data/spot/{{}}/klines/{symbol}/1m/"
    daily = [k for k in listed(sim, base.format("daily")) if k.endswith(".zip")][-RECENT_DAYS:]
    monthly = [k for k in listed(sim, base.format("monthly")) if k.endswith(".zip")]
    size = 0
    for key in daily + monthly:
        with urllib.request.urlopen(f"{sim.base}/{key}", timeout=300) as resp:
            size += len(resp.read())
    return len(daily) + len(monthly), size


def fill(url: str, sim: Service, symbols: list[str], days: int, *, archives: bool) -> Run:
    with gap_handler(
        url,
        sim,
        symbols,
        RATE_LIMIT_REQUESTS_PER_SEC="10",
        HISTORY_DAYS=str(days),
        BACKFILL_CHECK_INTERVAL_S="3600",
        ARCHIVE_ENABLED="true" if archives else "false",
        ARCHIVE_BASE_URL=sim.base,
    ) as gh:
        ready = time.monotonic()
        pg = ProcessGroupSampler(postmaster_pid(url))
        pg.start()
        gh0, sim0 = gh.sample(), sim.sample()
        candles, peak = wait_complete(gh)
        cpu = {
            "gap_handler": cpu_percent(gh0, gh.sample()),
            "simulator": cpu_percent(sim0, sim.sample()),
            "postgres": pg.cpu_percent(),
        }
        return Run(candles, time.monotonic() - ready, peak, cpu)


async def complete(url: str, symbols: list[str]) -> str:
    """Every symbol's stored minutes have no hole (as many rows as minutes oldest to newest)."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """SELECT symbol, count(*) AS n, (extract(epoch FROM max(time) - min(time)) / 60)::bigint + 1 AS m
               FROM candles_1m WHERE symbol = ANY($1::text[]) GROUP BY symbol""",
            symbols,
        )
    finally:
        await conn.close()
    assert len(rows) == len(symbols), f"{len(symbols) - len(rows)} symbols have no candle"
    holey = [r["symbol"] for r in rows if r["n"] != r["m"]]
    assert not holey, f"holes in {holey[:5]}"
    return f"{len(rows)} symbols, {sum(r['n'] for r in rows):,} rows, no hole"


def many(url: str, count: int, days: int) -> Run:
    """``count`` symbols bootstrapped at once from archives the simulator builds as they are
    fetched (cold: memory, not speed, is measured here)."""
    symbols = [f"M{i:04d}USDT" for i in range(count)]
    with simulator(symbols, "--history-days", str(days + 40)) as sim:
        run = fill(url, sim, symbols, days, archives=True)
    print(
        f"{count} symbols x {days} days from archives: {run.candles:,} candles in {run.seconds:.1f} s,"
        f" peak RSS {run.peak_rss_mb:.1f} MiB; CPU {cpu_text(run)}; {asyncio.run(complete(url, symbols))}"
    )
    return run


def cpu_text(r: Run) -> str:
    return ", ".join(f"{k} {v:.0f} %" for k, v in r.cpu.items())


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench archive", description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=HISTORY_DAYS, help="history from archives (days)")
    parser.add_argument("--rest-days", type=int, default=REST_DAYS, help="the REST run's history (days)")
    parser.add_argument(
        "--cold", action="store_true", help="no warm-up: the simulator builds each file as it is fetched"
    )
    parser.add_argument(
        "--many-symbols",
        type=int,
        default=0,
        help="then bootstrap this many symbols at once from archives, for the gap handler's peak RSS",
    )
    parser.add_argument("--many-days", type=int, default=40, help="the many-symbol run's history (days)")
    args = parser.parse_args(sys.argv[2:])
    print(machine())
    print(f"archive: {args.days} days of {ARCHIVE_SYMBOL} from archives; load {loadavg()}")
    symbols = [ARCHIVE_SYMBOL, REST_SYMBOL]
    with (
        durable_cluster() as url,
        simulator(
            symbols,
            "--history-days",
            str(max(args.days, args.rest_days) + 40),
            "--archive-cache-files",
            str(CACHE_FILES),
        ) as sim,
    ):
        if not args.cold:
            t0 = time.monotonic()
            files, size = warm(sim, ARCHIVE_SYMBOL)
            print(
                f"warm-up: {files} files, {size / 1e6:.1f} MB built by the simulator"
                f" in {time.monotonic() - t0:.1f} s"
            )
        window_start = history_start(time.time_ns() // 1_000_000, args.days)
        archive = fill(url, sim, [ARCHIVE_SYMBOL], args.days, archives=True)
        verdict = asyncio.run(check(url, sim, window_start))
        print(
            f"archives: {archive.candles:,} candles in {archive.seconds:.1f} s, "
            f"{archive.candles_per_s:,.0f} candles/s, peak RSS {archive.peak_rss_mb:.1f} MiB; "
            f"CPU {cpu_text(archive)}; load {loadavg()}"
        )
        print(f"  check: {verdict}")
        ceiling = asyncio.run(db_path_ceiling(url))
        print(f"write path alone: {ceiling:,.0f} candles/s; load {loadavg()}")
        rest = fill(url, sim, [REST_SYMBOL], args.rest_days, archives=False)
        extrapolated = args.rest_days < args.days
        print(
            f"REST at 10 req/s: {rest.candles:,} candles of {REST_SYMBOL} in {rest.seconds:.1f} s, "
            f"{rest.candles_per_s:,.0f} candles/s"
            + (
                f" ({args.rest_days} days; 13 months extrapolated at that rate: "
                f"{archive.candles / rest.candles_per_s:.0f} s)"
                if extrapolated
                else ""
            )
        )
        crowd = many(url, args.many_symbols, args.many_days) if args.many_symbols else None
    result("archive_candles_per_s", archive.candles_per_s, "candles/s")
    result("archive_ratio_to_db_path", archive.candles_per_s / ceiling, "ratio")
    result("archive_speedup_over_rest", archive.candles_per_s / rest.candles_per_s, "ratio")
    result("archive_peak_rss_mb", archive.peak_rss_mb, "MiB")
    if crowd is not None:
        result("archive_many_symbols_peak_rss_mb", crowd.peak_rss_mb, "MiB")


if __name__ == "__main__":
    main()
