"""Ingest throughput: simulator firehose -> ``python -m feeder`` (BOOK_TICKER_MODE=all)
-> committed rows, next to the database's own COPY ceiling on the same machine.

One durable cluster and one firehose simulator serve every configuration in turn:
default batches, a tuned batch size, and the tuned size on asyncio's loop instead of
uvloop. For each, after a warm-up, a fixed window is measured three ways:

* committed rows: ``count(*)`` of ``book_ticker`` + ``candles_1m`` at both ends
  (each count is a snapshot taken when its statement starts);
* the feeder's own counters (/metrics): frames decoded, rows written, rows buffered.
  ``msgs/s`` counts frames whose work is done, i.e. decoded minus the growth of the
  buffer, so a feeder that falls behind is not credited with rows it has not written;
* CPU% of the feeder, the simulator and PostgreSQL (all its processes), and of the
  whole machine, to say which one was the bottleneck.

The firehose interleaves bookTicker and (open) kline frames one to one and open
klines are not stored, so rows/s is about half of msgs/s: the worst case for rows. A
last run (tuned batches) uses a feed shaped like Binance's, ``--book-per-kline`` (20)
bookTicker frames per kline frame, where nearly every frame is a row.

The firehose sends no closed candle, so the closed-candle path is timed on its own, in
this process: a closed ``kline_1m`` frame decoded to the upsert's parameters as the
feeder does it (the exchange's strings kept: :class:`quaint.binance.models.CandleRow`),
against the same with the ``Decimal`` round trip it used to make (string -> ``Decimal``
-> string), as a ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
import orjson

from bench import ceiling
from bench import services as sv
from bench.common import cpu_percent, durable_cluster, machine, result
from quaint.binance.decoder import FrameDecoder
from quaint.binance.encode import combined, kline_event_payload, kline_stream
from quaint.binance.models import MINUTE_MS, Candle, KlineEvent
from quaint.binance.parse import load_frame
from quaint.store.candles import candle_columns


@dataclass(frozen=True)
class Window:
    """What one configuration did during the measured window."""

    label: str
    seconds: float
    committed_rows: int
    frames: float  # frames the feeder decoded
    buffered_growth: float  # rows added to the feeder's buffer (not yet written)
    sim_sent: float
    cpu: dict[str, float]  # feeder, simulator, postgres, machine (100 = one core)
    rss_mb: float
    load: str

    @property
    def rows_per_s(self) -> float:
        return self.committed_rows / self.seconds

    @property
    def msgs_per_s(self) -> float:
        return max(0.0, self.frames - self.buffered_growth) / self.seconds


def bottleneck(cpu: dict[str, float], cores: int) -> str:
    """Which process limited throughput. The feeder and the simulator are one Python
    thread each: from 85 % of a core on they are CPU-bound. Otherwise, a machine with
    (nearly) every core busy means the processes starved each other, or other users of
    the machine took the rest."""
    for name in ("feeder", "simulator"):
        if cpu.get(name, 0.0) >= 85.0:
            return f"{name} (CPU-bound at {cpu[name]:.0f} % of one core)"
    if cpu.get("machine", 0.0) >= 85.0 * cores:
        busiest = max(("feeder", "simulator", "postgres"), key=lambda n: cpu.get(n, 0.0))
        return (
            f"the machine ({cpu['machine']:.0f} % of {cores * 100} % busy: processes compete for cores;"
            f" busiest here {busiest} at {cpu.get(busiest, 0.0):.0f} %)"
        )
    if cpu.get("postgres", 0.0) >= 85.0:
        return f"postgres ({cpu['postgres']:.0f} %)"
    return "none CPU-bound (I/O, flow control or commit latency)"


async def _count_rows(url: str) -> tuple[int, float]:
    conn = await asyncpg.connect(url)
    try:
        at = time.monotonic()  # the statement's snapshot is taken when it starts
        n = await conn.fetchval(
            "SELECT (SELECT count(*) FROM book_ticker) + (SELECT count(*) FROM candles_1m)"
        )
        return int(n), at
    finally:
        await conn.close()


def _sim_sent(sim: sv.Service) -> float:
    return float(json.loads(sv.http_get(sim.base + "/_sim/stats")[1])["ws_messages_sent"])


def _wait_first_rows(url: str, feeder: sv.Service, deadline_s: float = 120.0) -> None:
    deadline = time.monotonic() + deadline_s
    while asyncio.run(_count_rows(url))[0] == 0:
        if feeder.proc.poll() is not None:
            raise RuntimeError(f"the feeder exited with {feeder.proc.returncode}:\n{feeder.log_tail()}")
        if time.monotonic() >= deadline:
            raise RuntimeError(f"the feeder committed no row in {deadline_s:g} s:\n{feeder.log_tail()}")
        time.sleep(0.1)  # polls the database until the first commit, bounded by the deadline


def measure(
    url: str, sim: sv.Service, symbols: list[str], label: str, warmup: float, seconds: float, **env: str
) -> Window:
    asyncio.run(sv.reset_database(url, ("book_ticker", "candles_1m")))
    pg = sv.ProcessGroupSampler(sv.postmaster_pid(url))
    with sv.feeder(url, sim, symbols, BOOK_TICKER_MODE="all", LOG_LEVEL="ERROR", **env) as feeder:
        # The warm-up starts once rows are committed: a feeder that answers /health may not be
        # streaming yet (its connections open after), and on a loaded machine a short window
        # could then fall before its first write.
        _wait_first_rows(url, feeder)
        time.sleep(warmup)
        m0, sent0, f0, s0 = feeder.metrics(), _sim_sent(sim), feeder.sample(), sim.sample()
        pg.start()
        machine_cpu = sv.MachineCpu()
        machine_cpu.start()
        rows0, t0 = asyncio.run(_count_rows(url))
        time.sleep(seconds)
        rows1, t1 = asyncio.run(_count_rows(url))
        m1, sent1, f1, s1 = feeder.metrics(), _sim_sent(sim), feeder.sample(), sim.sample()
        cpu = {
            "feeder": cpu_percent(f0, f1),
            "simulator": cpu_percent(s0, s1),
            "postgres": pg.cpu_percent(),
            "machine": machine_cpu.percent(),
        }

        def delta(name: str) -> float:
            return sv.metric(m1, name) - sv.metric(m0, name)

        window = Window(
            label=label,
            seconds=t1 - t0,
            committed_rows=rows1 - rows0,
            frames=delta("feeder_messages_received_total"),
            buffered_growth=delta("feeder_buffered_rows"),
            sim_sent=sent1 - sent0,
            cpu=cpu,
            rss_mb=f1.rss_mb,
            load=sv.loadavg(),
        )
    return window


def report(w: Window, cores: int) -> None:
    c = w.cpu
    sent = w.sim_sent / w.seconds
    # What the machine did besides these three: other users' work, unattributed softirq.
    others = max(0.0, c["machine"] - c["feeder"] - c["simulator"] - c["postgres"])
    print(
        f"  {w.label}: {w.msgs_per_s:,.0f} msgs/s done, {w.rows_per_s:,.0f} rows/s committed"
        f" (simulator sent {sent:,.0f} frames/s; buffer grew {w.buffered_growth:,.0f} rows)\n"
        f"    CPU: feeder {c['feeder']:.0f} %, simulator {c['simulator']:.0f} %,"
        f" postgres {c['postgres']:.0f} %, everything else {others:.0f} %;"
        f" machine {c['machine']:.0f} % of {cores * 100} %;"
        f" feeder RSS {w.rss_mb:.0f} MB; load {w.load}\n"
        f"    bottleneck: {bottleneck(c, cores)}",
        flush=True,
    )


def _closed_candle(symbol: str, i: int) -> Candle:
    """A candle with Binance's 8-decimal strings, different per row."""
    t = ceiling.T0 + i * MINUTE_MS
    price = Decimal(60_000 + i % 997) + Decimal("0.12345678")
    one = Decimal(1)
    volume = Decimal("12.34500000") + i % 13
    quote = volume * price
    return Candle(
        symbol,
        t,
        t + MINUTE_MS - 1,
        price,
        price + one,
        price - one,
        price,
        volume,
        quote,
        42,
        volume / 2,
        quote / 2,
    )


def closed_candle_us(frames: int, rounds: int = 5) -> tuple[float, float]:
    """µs per closed candle, frame -> upsert parameters: with the exchange's strings kept
    (the feeder's path), and through ``Decimal`` and back. Best of ``rounds``."""
    symbols = [f"S{i}USDT" for i in range(10)]
    decoder = FrameDecoder(kline_stream(s) for s in symbols)
    raw = []
    for i in range(frames):
        symbol = symbols[i % len(symbols)]
        candle = _closed_candle(symbol, i)
        payload = kline_event_payload(
            candle, event_time=candle.close_time + 1, is_closed=True, first_trade_id=1, last_trade_id=2
        )
        raw.append(orjson.dumps(combined(kline_stream(symbol), payload)))

    def rows(through_decimal: bool) -> float:
        started = time.perf_counter()
        for frame in raw:
            event = decoder.decode(load_frame(frame), 0)
            assert isinstance(event, KlineEvent)
            candle_columns([event.candle if through_decimal else event.row])
        return (time.perf_counter() - started) / len(raw) * 1e6

    text = min(rows(False) for _ in range(rounds))
    decimal = min(rows(True) for _ in range(rounds))
    return text, decimal


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench ingest", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="measured window per configuration")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before each window")
    parser.add_argument("--symbols", type=int, default=5)
    # Measured on this machine (1000/20000, 500/5000, 5000/20000 and the defaults within 3 %
    # of each other): the writer group-commits whatever piled up behind a write in flight,
    # so under a firehose every setting ends up writing large batches.
    parser.add_argument("--tuned-batch", type=int, default=1000, help="BATCH_SIZE of the tuned runs")
    parser.add_argument("--tuned-max-rows", type=int, default=20_000, help="their BATCH_MAX_ROWS")
    parser.add_argument("--ceiling-rows", type=int, default=300_000)
    parser.add_argument(
        "--book-per-kline", type=int, default=20, help="the mixed run's bookTicker frames per kline frame"
    )
    args = parser.parse_args(sys.argv[2:])
    cores = os.cpu_count() or 1
    symbols = [f"S{i}USDT" for i in range(args.symbols)]
    max_rows = max(args.tuned_max_rows, args.tuned_batch)
    tuned = {"BATCH_SIZE": str(args.tuned_batch), "BATCH_MAX_ROWS": str(max_rows)}
    asyncio_loop = {**tuned, "USE_UVLOOP": "false"}
    configs: list[tuple[str, str, dict[str, str]]] = [
        ("default", "defaults (BATCH_SIZE=10, BATCH_TIMEOUT_MS=1000), uvloop", {}),
        ("", f"tuned (BATCH_SIZE={args.tuned_batch}, BATCH_MAX_ROWS={max_rows}), uvloop", tuned),
        (
            "asyncio",
            f"tuned (BATCH_SIZE={args.tuned_batch}, BATCH_MAX_ROWS={max_rows}), USE_UVLOOP=false",
            asyncio_loop,
        ),
    ]
    print(machine())
    print(f"load average at start: {sv.loadavg()}")
    print(
        f"firehose: {len(symbols)} symbols; per configuration {args.warmup:g} s warm-up,"
        f" {args.seconds:g} s window"
    )
    with durable_cluster() as url:
        asyncio.run(sv.reset_database(url, ("book_ticker", "candles_1m")))
        ticks = ceiling.book_ticks(args.ceiling_rows)
        psql_rate = ceiling.psql_copy_rows_per_s(url, ticks)
        asyncio.run(sv.reset_database(url, ("book_ticker", "candles_1m")))
        project_rate = asyncio.run(ceiling.asyncpg_copy_rows_per_s(url, ticks))
        del ticks
        text_us, decimal_us = closed_candle_us(20_000)
        print(
            f"closed candle, frame -> upsert parameters: {text_us:.1f} µs with the exchange's strings,"
            f" {decimal_us:.1f} µs through Decimal and back ({text_us / decimal_us:.2f} of it)"
        )
        print(
            f"ceiling ({args.ceiling_rows:,} book_ticker rows): psql \\copy {psql_rate:,.0f} rows/s,"
            f" the feeder's COPY path (copy_book_ticks) {project_rate:,.0f} rows/s; load {sv.loadavg()}"
        )
        windows: dict[str, Window] = {}
        with sv.simulator(symbols, "--firehose") as sim:
            for key, label, env in configs:
                windows[key] = w = measure(url, sim, symbols, label, args.warmup, args.seconds, **env)
                report(w, cores)
        # The same, with a feed shaped like Binance's: a kline_1m stream updates every 2 s, a
        # liquid symbol's bookTicker many times a second (here 20 book frames per kline frame).
        mix = ["--firehose", "--firehose-book-per-kline", str(args.book_per_kline)]
        with sv.simulator(symbols, *mix) as sim:
            label = f"tuned, {args.book_per_kline} bookTicker frames per kline frame, uvloop"
            windows["mix"] = w = measure(url, sim, symbols, label, args.warmup, args.seconds, **tuned)
            report(w, cores)
    for key, w in windows.items():
        suffix = f"_{key}" if key else ""
        result(f"ingest_msgs_per_s{suffix}", w.msgs_per_s, "msg/s")
        result(f"ingest_rows_per_s{suffix}", w.rows_per_s, "rows/s")
    result("copy_ceiling_psql_rows_per_s", psql_rate, "rows/s")
    result("copy_ceiling_project_rows_per_s", project_rate, "rows/s")
    result("ingest_ceiling_ratio", windows[""].rows_per_s / psql_rate, "ratio")
    result("closed_candle_text_over_decimal", text_us / decimal_us, "ratio")
