"""The benchmarks' pure parts: Prometheus text parsing, histogram quantiles, latency
matching and percentiles, the throughput arithmetic and the bottleneck verdict. (The
benchmarks themselves print figures; they are run by hand, not here.)"""

from __future__ import annotations

import math

from bench.ingest import Window, bottleneck
from bench.latency import match, percentile
from bench.services import histogram_quantile, metric, parse_metrics

EXPOSITION = """\
# HELP feeder_messages_received_total WebSocket frames decoded, by stream type
# TYPE feeder_messages_received_total counter
feeder_messages_received_total{stream_type="kline"} 10.0
feeder_messages_received_total{stream_type="bookTicker"} 32.0
feeder_buffered_rows{kind="book_tick"} 7.0
feeder_receipt_to_commit_seconds_bucket{kind="candle",le="0.001"} 1.0
feeder_receipt_to_commit_seconds_bucket{kind="candle",le="0.002"} 90.0
feeder_receipt_to_commit_seconds_bucket{kind="candle",le="0.005"} 99.0
feeder_receipt_to_commit_seconds_bucket{kind="candle",le="+Inf"} 100.0
feeder_receipt_to_commit_seconds_bucket{kind="book_tick",le="0.001"} 0.0
feeder_receipt_to_commit_seconds_bucket{kind="book_tick",le="+Inf"} 5.0
feeder_receipt_to_commit_seconds_count{kind="candle"} 100.0
"""


def test_metrics_are_parsed_and_summed_by_label() -> None:
    samples = parse_metrics(EXPOSITION)
    assert metric(samples, "feeder_messages_received_total") == 42
    assert metric(samples, "feeder_messages_received_total", stream_type="kline") == 10
    assert metric(samples, "feeder_receipt_to_commit_seconds_count", kind="candle") == 100
    assert metric(samples, "no_such_metric") == 0


def test_histogram_quantile_is_the_upper_bound_of_the_bucket() -> None:
    samples = parse_metrics(EXPOSITION)
    name = "feeder_receipt_to_commit_seconds"
    assert histogram_quantile(samples, name, 0.5, kind="candle") == 0.002
    assert histogram_quantile(samples, name, 0.99, kind="candle") == 0.005
    assert histogram_quantile(samples, name, 1.0, kind="candle") == math.inf
    assert math.isnan(histogram_quantile(samples, "absent", 0.5))


def test_percentile_is_a_measured_value() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50 and percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100 and percentile([3.0], 0.99) == 3
    assert math.isnan(percentile([], 0.5))


def test_latencies_match_receipt_and_commit_per_candle() -> None:
    received = {("A", 0): 10.0, ("B", 0): 10.5, ("A", 60_000): 20.0, ("B", 60_000): 20.0}
    committed = {("A", 0): 10.002, ("A", 60_000): 20.004, ("B", 60_000): 20.001}
    matched = match(received, committed, since=10.2)
    assert sorted(round(x, 6) for x in matched.latencies) == [0.001, 0.004]
    assert matched.missing == 1  # ("B", 0) was received in the window and never committed
    assert matched.probe_late == 0


def test_a_commit_stamped_before_its_frame_is_counted_not_measured() -> None:
    # A busy probe can stamp the NOTIFY before the frame that caused it: no latency, a count.
    received = {("A", 0): 10.0, ("B", 0): 10.0}
    committed = {("A", 0): 10.003, ("B", 0): 9.999}
    matched = match(received, committed, since=9.0)
    assert [round(x, 6) for x in matched.latencies] == [0.003]
    assert (matched.missing, matched.probe_late) == (0, 1)


def window(frames: float, growth: float, rows: int) -> Window:
    cpu = {"feeder": 50.0, "simulator": 20.0, "postgres": 10.0, "machine": 80.0}
    return Window("x", 10.0, rows, frames, growth, frames, cpu, 60.0, "0.1 0.1 0.1")


def test_throughput_credits_only_frames_whose_rows_were_written() -> None:
    w = window(frames=1000, growth=200, rows=300)
    assert w.msgs_per_s == 80 and w.rows_per_s == 30
    assert window(frames=1000, growth=-100, rows=0).msgs_per_s == 110  # the backlog shrank
    assert window(frames=10, growth=50, rows=0).msgs_per_s == 0


def test_bottleneck_names_the_busy_process() -> None:
    assert bottleneck({"feeder": 97.0, "simulator": 30.0, "machine": 150.0}, 2).startswith("feeder")
    assert bottleneck({"feeder": 60.0, "simulator": 95.0, "machine": 170.0}, 2).startswith("simulator")
    machine = bottleneck({"feeder": 70.0, "simulator": 20.0, "postgres": 15.0, "machine": 195.0}, 2)
    assert machine.startswith("the machine") and "busiest here feeder at 70 %" in machine
    assert bottleneck({"feeder": 30.0, "simulator": 10.0, "postgres": 10.0, "machine": 60.0}, 2).startswith(
        "none"
    )
