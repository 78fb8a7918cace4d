"""FeederSettings from the environment, the /health body, and the metrics collector (pure)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import ValidationError

from feeder.core.accumulator import Accumulator
from feeder.core.gaps import GapDetector
from feeder.core.health import HealthInputs, SymbolHealth, build_health
from feeder.core.router import FrameRouter
from feeder.core.watchdog import StaleWatchdog
from feeder.metrics import FeederMetrics, StateCollector
from feeder.settings import FeederSettings
from tests.support.feeder import T0, candle, kline_frame, metric_value


def test_defaults_follow_the_issue(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("FEEDER_PORT", "BOOK_TICKER_MODE", "BATCH_SIZE", "GAP_DETECTION_THRESHOLD_S"):
        monkeypatch.delenv(name, raising=False)
    s = FeederSettings()
    assert (s.feeder_host, s.feeder_port) == ("0.0.0.0", 8080)
    assert (s.batch_size, s.batch_timeout_ms, s.book_ticker_mode) == (10, 1000, "sampled")
    assert (s.websocket_reconnect_interval_s, s.websocket_reconnect_max_s) == (5.0, 60.0)
    assert s.gap_detection_threshold_s == 70 and s.stale_timeout_s == 70
    assert s.ws_max_connection_age_s == 23 * 3600
    assert (s.feature_cache_interval_s, s.feature_version) == (60.0, "v1")


def test_environment_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDER_PORT", "9000")
    monkeypatch.setenv("BOOK_TICKER_MODE", "all")
    monkeypatch.setenv("WS_MAX_CONNECTION_AGE_S", "3600")
    monkeypatch.setenv("STALE_STREAM_TIMEOUT_S", "5")
    monkeypatch.setenv("MAX_BUFFERED_ROWS", "500")
    s = FeederSettings()
    assert (s.feeder_port, s.book_ticker_mode, s.ws_max_connection_age_s) == (9000, "all", 3600)
    assert s.stale_timeout_s == 5 and s.max_buffered_rows == 500
    monkeypatch.setenv("STALE_STREAM_TIMEOUT_S", "")  # empty = default: the gap threshold
    monkeypatch.setenv("GAP_DETECTION_THRESHOLD_S", "90")
    assert FeederSettings().stale_timeout_s == 90


@pytest.mark.parametrize(
    "values",
    [
        {"book_ticker_mode": "some"},
        {"gap_detection_threshold_s": 30},  # below a minute: every candle would be a gap
        {"websocket_reconnect_interval_s": 10, "websocket_reconnect_max_s": 5},
        {"batch_size": 100, "batch_max_rows": 10},
        {"streams_per_connection": 2000},  # Binance: 1024 at most
        {"ws_connects_per_second": 6},
    ],
)
def test_nonsense_is_refused(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        FeederSettings(**values)


def sym(name: str, *, stale: bool = False, connected: bool = True, last: int | None = T0) -> SymbolHealth:
    return SymbolHealth(name, last, 1.0 if last else None, stale, connected)


def health(**kw: object) -> tuple[str, dict[str, object]]:
    values: dict[str, object] = {
        "connections_up": 1,
        "connections_planned": 1,
        "database_connected": True,
        "shedding_drops": False,
        "candles_processed": 7,
        "uptime_s": 12.3456,
        "symbols": [sym("BTCUSDT"), sym("ETHUSDT", last=None)],
    }
    values.update(kw)
    report = build_health(HealthInputs(**values))  # type: ignore[arg-type]
    return report.status, report.body


def test_health_healthy_body() -> None:
    status, body = health()
    assert status == "healthy"
    assert body["database_status"] == "connected" and body["websocket_connected"] is True
    assert body["last_candle_time"] == "2025-11-24T12:00:00Z"
    assert body["uptime_seconds"] == 12.346 and body["candles_processed"] == 7
    assert body["symbols"] == {
        "BTCUSDT": {
            "last_candle_time": "2025-11-24T12:00:00Z",
            "seconds_since_last_candle": 1.0,
            "stale": False,
            "websocket_connected": True,
        },
        "ETHUSDT": {
            "last_candle_time": None,
            "seconds_since_last_candle": None,
            "stale": False,
            "websocket_connected": True,
        },
    }


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"database_connected": False}, "degraded"),
        ({"connections_up": 0}, "degraded"),
        ({"symbols": [sym("BTCUSDT", stale=True), sym("ETHUSDT")]}, "degraded"),
        ({"symbols": [sym("BTCUSDT", stale=True), sym("ETHUSDT", stale=True)]}, "unhealthy"),
        ({"database_connected": False, "shedding_drops": True}, "unhealthy"),
    ],
)
def test_health_states(change: dict[str, object], expected: str) -> None:
    assert health(**change)[0] == expected


def test_collector_reads_the_cores_at_scrape_time() -> None:
    registry = CollectorRegistry()
    acc = Accumulator(batch_size=10, linger_s=1, max_batch_rows=10, max_buffered=100, signal=asyncio.Event)
    watchdog = StaleWatchdog(70)
    router = FrameRouter(["BTCUSDT"], "all", acc, GapDetector(70), watchdog)
    FeederMetrics.create(registry)
    registry.register(
        StateCollector(router, acc, watchdog, ["BTCUSDT"], lambda: 1, lambda: True, lambda: 100.0)
    )
    router.on_frame(b"not json", 0, 0.0)
    router.on_frame(kline_frame(candle(0)), 0, 90.0)
    text = generate_latest(registry).decode()
    assert metric_value(text, "feeder_bad_frames_total", reason="malformed") == 1
    assert metric_value(text, "feeder_messages_received_total", stream_type="kline") == 1
    assert metric_value(text, "feeder_buffered_rows", kind="candle") == 1
    assert metric_value(text, "feeder_seconds_since_last_closed_candle", symbol="BTCUSDT") == 10.0
    assert metric_value(text, "feeder_database_up") == 1
