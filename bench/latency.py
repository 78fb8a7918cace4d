"""Closed candle receipt -> committed, at a realistic rate: 10 symbols, the default
book rate and BOOK_TICKER_MODE (sampled), the simulator at a modest speed so that
enough candles close in a short window (all symbols close together, as on Binance).
FEATURE_CACHE_INTERVAL_S is scaled with the speed (60 / speed wall s), so each
feature pass computes one minute per symbol, as in production; at the default 60 s a
pass in the window would compute ``speed`` minutes at once, a load production never
sees, and stall the candles that close meanwhile.

Two measurements of the same candles:

* the feeder's own histogram ``feeder_receipt_to_commit_seconds{kind="candle"}``
  (receipt after decoding -> commit acknowledged), read as the difference between
  two scrapes; quantiles are bucket upper bounds (buckets of 0.5-1 ms up to 10 ms);
* an independent probe in this process: a second WebSocket client subscribed to the
  same kline streams stamps each closing (``x: true``) frame on arrival (in a thread of
  its own, on return from the socket read, so a busy event loop cannot stamp it after
  the commit it caused), and a
  LISTEN connection stamps the NOTIFY that a bench-only ``AFTER INSERT`` trigger on
  ``candles_1m`` sends; PostgreSQL delivers a NOTIFY only when its transaction
  commits, so the difference is receipt -> committed on one clock, plus the NOTIFY's
  own delivery (two more process wake-ups): an upper bound. The simulator writes the
  frame to both sockets within a fraction of a millisecond. A lower bound comes with
  it: ``candles_1m.ingested_at`` (``now()``, the start of the feeder's upsert statement,
  which commits on its own) against the probe's wall-clock receipt time.

A sample whose NOTIFY was stamped before its frame (possible when this process got no CPU
for longer than the feeder's whole path, on a loaded machine) measures only the probe's
own delay: it is counted and printed, never put into the percentiles.

The ceiling, in the same window: a bare round trip, ``INSERT`` of one row into a plain
table in autocommit (so it includes the commit's WAL flush), timed in this process every
``ROUND_TRIP_EVERY_S`` on a connection of its own. A closed candle cannot commit faster
than that; ``latency_p99_over_round_trip`` is the probe's p99 over the round trip's p99
(both tails, under the same load). A second, tighter ceiling beside it: the feeder's own
statement (``upsert_candles`` of one candle per symbol into ``candles_1m``, the shape of a
minute's close, on symbols the feeder does not follow) timed the same way on a connection of
its own, for half as long right after the window (in it, its writes would load the server the
candles and round trips are measured on); ``latency_p99_over_upsert`` is what the feeder adds
to the write it cannot avoid.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import math
import socket
import statistics
import sys
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import asyncpg
import orjson
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from bench import services as sv
from bench.common import cpu_percent, durable_cluster, machine, result
from quaint.binance.models import MINUTE_MS, Candle
from quaint.store.candles import upsert_candles
from quaint.store.schema import apply_schema

CHANNEL = "bench_candle_commits"
ROUND_TRIP_EVERY_S = 0.05
ROUND_TRIP_TABLE = "CREATE TABLE IF NOT EXISTS bench_round_trip (id bigserial PRIMARY KEY, at timestamptz)"
ROUND_TRIP = "INSERT INTO bench_round_trip (at) VALUES (now())"
TRIGGER = f"""
CREATE OR REPLACE FUNCTION bench_notify_candle() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', NEW.symbol || ',' || (extract(epoch FROM NEW.time) * 1000)::bigint);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS bench_notify_candle ON candles_1m;
CREATE TRIGGER bench_notify_candle AFTER INSERT ON candles_1m
    FOR EACH ROW EXECUTE FUNCTION bench_notify_candle();
"""

Key = tuple[str, int]  # (symbol, open time ms)
INGESTED = """SELECT symbol, (extract(epoch FROM time) * 1000)::bigint AS t,
    extract(epoch FROM ingested_at) AS at FROM candles_1m"""


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: always a measured value)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered) - 1e-9)))  # 1e-9: float noise
    return ordered[rank - 1]


@dataclass
class Matched:
    latencies: list[float] = field(default_factory=list)  # receipt -> commit (s)
    missing: int = 0  # received in the window, never seen committed
    probe_late: int = 0  # the NOTIFY was stamped before the frame: the probe's own delay


def match(received: dict[Key, float], committed: dict[Key, float], since: float) -> Matched:
    """The candles received at or after ``since``, matched to their commits."""
    out = Matched()
    for key, at in received.items():
        if at < since:
            continue
        done = committed.get(key)
        if done is None:
            out.missing += 1
        elif done < at:
            out.probe_late += 1
        else:
            out.latencies.append(done - at)
    return out


async def _prepare(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await apply_schema(conn)
        await conn.execute(TRIGGER)
        await conn.execute(ROUND_TRIP_TABLE)
    finally:
        await conn.close()


class Probe(threading.Thread):
    """The second client: a blocking socket read in a thread of its own, the frame stamped as
    the read returns (before any parsing), websockets' sans-I/O protocol for the rest."""

    def __init__(self, port: int, symbols: list[str]) -> None:
        super().__init__(name="latency-probe", daemon=True)
        # The feeder's own streams (klines and book tickers), so the simulator queues this
        # connection the same frames in the same order and a closing kline reaches both alike.
        streams = "/".join(f"{s.lower()}@{kind}" for s in symbols for kind in ("kline_1m", "bookTicker"))
        self.uri = parse_uri(f"ws://127.0.0.1:{port}/stream?streams={streams}")
        self.received: dict[Key, float] = {}
        self.received_wall: dict[Key, float] = {}
        self.subscribed = threading.Event()
        self.stopping = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._read()
        except BaseException as exc:  # handed to the main thread by finish()
            self.error = exc
            self.subscribed.set()

    def _read(self) -> None:
        protocol = ClientProtocol(self.uri, max_size=None)
        with socket.create_connection((self.uri.host, self.uri.port), timeout=10) as sock:
            sock.settimeout(0.2)  # to see ``stopping``
            protocol.send_request(protocol.connect())
            pieces: list[bytes] = []
            while not self.stopping.is_set():
                for out in protocol.data_to_send():  # the request, pongs
                    sock.sendall(out)
                try:
                    data = sock.recv(1 << 16)
                except TimeoutError:
                    continue
                at, wall = time.monotonic(), time.time()
                if not data:
                    raise ConnectionError("the simulator closed the probe's stream")
                protocol.receive_data(data)
                for event in protocol.events_received():
                    if isinstance(event, Response):
                        if event.status_code != 101:
                            raise ConnectionError(f"probe handshake refused: HTTP {event.status_code}")
                        self.subscribed.set()
                    elif isinstance(event, Frame) and event.opcode in (Opcode.TEXT, Opcode.CONT):
                        pieces.append(bytes(event.data))
                        if event.fin:
                            self._stamp(b"".join(pieces), at, wall)
                            pieces.clear()

    def _stamp(self, raw: bytes, at: float, wall: float) -> None:
        data = orjson.loads(raw).get("data", {})
        k = data.get("k", {})
        if k.get("x") is True:
            key = (data["s"], int(k["t"]))
            self.received.setdefault(key, at)
            self.received_wall.setdefault(key, wall)

    def finish(self) -> None:
        self.stopping.set()
        self.join()
        if self.error is not None:
            raise RuntimeError(f"the latency probe failed: {self.error!r}") from self.error


async def _round_trips(url: str, out: list[float]) -> None:
    """Time a bare INSERT + COMMIT every ``ROUND_TRIP_EVERY_S`` until cancelled."""
    conn = await asyncpg.connect(url)
    try:
        while True:
            started = time.monotonic()
            await conn.execute(ROUND_TRIP)
            out.append(time.monotonic() - started)
            await asyncio.sleep(ROUND_TRIP_EVERY_S)
    finally:
        await conn.close()


def _minute_of_candles(symbols: int, open_time: int) -> list[Candle]:
    """One closed candle per symbol of a set the feeder does not follow, for ``open_time``."""
    price = Decimal("100.12345678")
    return [
        Candle(
            f"UPSERT{i}USDT",
            open_time,
            open_time + MINUTE_MS - 1,
            price,
            price + 1,
            price - 1,
            price,
            Decimal("12.5"),
            Decimal("1251.54320975"),
            42,
            Decimal("6.25"),
            Decimal("625.77160487"),
        )
        for i in range(symbols)
    ]


async def _upserts(url: str, symbols: int, out: list[float]) -> None:
    """Time the feeder's candle upsert of a minute's close every ``ROUND_TRIP_EVERY_S``."""
    conn = await asyncpg.connect(url)
    open_time = (int(time.time() * 1000) // MINUTE_MS - 10 * 24 * 60) * MINUTE_MS  # 10 days ago
    try:
        while True:
            candles = _minute_of_candles(symbols, open_time)
            started = time.monotonic()
            await upsert_candles(conn, candles, "ws")
            out.append(time.monotonic() - started)
            open_time += MINUTE_MS
            await asyncio.sleep(ROUND_TRIP_EVERY_S)
    finally:
        await conn.close()


async def _timed(timer: Coroutine[Any, Any, None], seconds: float) -> None:
    """Run ``timer`` (one of the loops above) for ``seconds``."""
    task = asyncio.create_task(timer)
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.wait([task])


@dataclass
class Measured:
    matched: Matched  # receipt -> NOTIFY delivered
    lower: list[float]  # receipt -> upsert statement start (s)
    round_trips: list[float]  # bare INSERT + COMMIT (s), during the window
    upserts: list[float]  # the feeder's candle upsert of one minute (s), just after the window
    before: dict[sv.MetricKey, float]
    after: dict[sv.MetricKey, float]


async def _measure(
    url: str, sim: sv.Service, feeder: sv.Service, symbols: list[str], warmup: float, seconds: float
) -> Measured:
    committed: dict[Key, float] = {}

    def on_notify(_c: object, _pid: int, _channel: str, payload: object) -> None:
        symbol, ms = str(payload).split(",")
        committed.setdefault((symbol, int(ms)), time.monotonic())

    listener = await asyncpg.connect(url)
    await listener.add_listener(CHANNEL, on_notify)
    probe = Probe(sim.port, symbols)
    probe.start()
    try:
        await asyncio.to_thread(probe.subscribed.wait, 30)
        await asyncio.sleep(warmup)
        # No collection in this process while it stamps: a pause there would be counted as
        # the feeder's (a NOTIFY stamped late) or hide it (a frame stamped late).
        gc.collect()
        gc.disable()
        m0 = await asyncio.to_thread(feeder.metrics)
        since = time.monotonic()
        round_trips: list[float] = []
        await _timed(_round_trips(url, round_trips), seconds)
        m1 = await asyncio.to_thread(feeder.metrics)
        # The statement's own ceiling after the window, not in it: its writes would load the
        # server (and the round trips) while the candles are measured.
        upserts: list[float] = []
        await _timed(_upserts(url, len(symbols), upserts), seconds / 2)
        rows = await listener.fetch(INGESTED)
    finally:
        gc.enable()
        await asyncio.to_thread(probe.finish)
        await listener.close()
    in_window = {k: v for k, v in probe.received.items() if v < since + seconds}
    matched = match(in_window, committed, since)
    started = {(r["symbol"], int(r["t"])): float(r["at"]) for r in rows}
    wall = probe.received_wall
    lower = [started[k] - wall[k] for k, v in in_window.items() if v >= since and k in started]
    return Measured(matched, lower, round_trips, upserts, m0, m1)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench latency", description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=40.0, help="measured window")
    parser.add_argument("--warmup", type=float, default=8.0)
    parser.add_argument("--symbols", type=int, default=10)
    parser.add_argument("--speed", type=float, default=30.0, help="simulated seconds per wall second")
    args = parser.parse_args(sys.argv[2:])
    symbols = [f"S{i}USDT" for i in range(args.symbols)]
    print(machine())
    print(
        f"{len(symbols)} symbols, simulator speed {args.speed:g} (a candle closes every"
        f" {60 / args.speed:.1f} wall s per symbol), default book rate and BOOK_TICKER_MODE,"
        f" {args.seconds:g} s window; load {sv.loadavg()}"
    )
    with durable_cluster() as url:
        asyncio.run(_prepare(url))
        with (
            sv.simulator(symbols, "--speed", str(args.speed)) as sim,
            sv.feeder(
                url, sim, symbols, LOG_LEVEL="ERROR", FEATURE_CACHE_INTERVAL_S=f"{60 / args.speed:g}"
            ) as feeder,
        ):
            cpu0 = feeder.sample()
            got = asyncio.run(_measure(url, sim, feeder, symbols, args.warmup, args.seconds))
            feeder_cpu = cpu_percent(cpu0, feeder.sample())
    window = {k: v - got.before.get(k, 0.0) for k, v in got.after.items()}
    name, kind = "feeder_receipt_to_commit_seconds", {"kind": "candle"}
    count = sv.metric(window, f"{name}_count", **kind)
    hist_p50 = sv.histogram_quantile(window, name, 0.50, **kind)
    hist_p99 = sv.histogram_quantile(window, name, 0.99, **kind)
    ms = [x * 1000 for x in got.matched.latencies]
    low = [x * 1000 for x in got.lower]
    trip = [x * 1000 for x in got.round_trips]
    upsert = [x * 1000 for x in got.upserts]
    print(
        f"probe: {len(ms)} closed candles, receipt -> NOTIFY at commit p50 {percentile(ms, 0.5):.2f} ms,"
        f" p99 {percentile(ms, 0.99):.2f} ms, max {max(ms, default=float('nan')):.2f} ms,"
        f" mean {statistics.fmean(ms) if ms else float('nan'):.2f} ms; {got.matched.missing} never committed,"
        f" {got.matched.probe_late} left out (the probe stamped their frame after their commit)"
    )
    print(
        f"lower bound, receipt -> upsert start (ingested_at): p50 {percentile(low, 0.5):.2f} ms,"
        f" p99 {percentile(low, 0.99):.2f} ms, max {max(low, default=float('nan')):.2f} ms"
    )
    print(
        f"ceiling, bare INSERT + COMMIT round trip ({len(trip)} in the window):"
        f" p50 {percentile(trip, 0.5):.2f} ms, p99 {percentile(trip, 0.99):.2f} ms;"
        f" candle p99 / round trip p99 {percentile(ms, 0.99) / percentile(trip, 0.99):.2f}, / round trip p50"
        f" {percentile(ms, 0.99) / percentile(trip, 0.5):.2f}"
    )
    print(
        f"the feeder's statement alone, upsert of {len(symbols)} candles ({len(upsert)} in the window):"
        f" p50 {percentile(upsert, 0.5):.2f} ms, p99 {percentile(upsert, 0.99):.2f} ms"
        f" ({percentile(upsert, 0.99) / percentile(trip, 0.99):.2f} x the round trip's p99);"
        f" candle p99 / upsert p99 {percentile(ms, 0.99) / percentile(upsert, 0.99):.2f}"
    )
    print(
        f"feeder histogram: {count:.0f} candles, p50 <= {hist_p50 * 1000:g} ms, p99 <= {hist_p99 * 1000:g} ms"
        f"; feeder CPU {feeder_cpu:.0f} % of one core; load {sv.loadavg()}"
    )
    result("latency_p50_ms", percentile(ms, 0.5), "ms")
    result("latency_p99_ms", percentile(ms, 0.99), "ms")
    result("latency_max_ms", max(ms, default=float("nan")), "ms")
    result("latency_feeder_hist_p50_ms", hist_p50 * 1000, "ms")
    result("latency_feeder_hist_p99_ms", hist_p99 * 1000, "ms")
    result("latency_round_trip_p99_ms", percentile(trip, 0.99), "ms")
    result("latency_p99_over_round_trip", percentile(ms, 0.99) / percentile(trip, 0.99), "ratio")
    result("latency_upsert_p99_ms", percentile(upsert, 0.99), "ms")
    result("latency_p99_over_upsert", percentile(ms, 0.99) / percentile(upsert, 0.99), "ratio")
