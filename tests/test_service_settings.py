"""Settings: env names from the seed, clear errors, no secrets in logs."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from quaint.service.logging import LogThrottle, configure_logging
from quaint.service.settings import Settings, describe_errors


def test_defaults_follow_the_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DB_NAME", "SYMBOLS", "BINANCE_WS_URL", "BINANCE_REST_URL", "DB_PORT"):
        monkeypatch.delenv(name, raising=False)
    s = Settings()
    assert s.db_name == "btc_ml_production"
    assert s.symbols == ["BTCUSDT"]
    assert s.binance_ws_url == "wss://stream.binance.com:9443"
    assert s.binance_rest_url == "https://api.binance.com"
    assert s.binance_api_key is None


def test_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DB_HOST", "db.internal")
    monkeypatch.setenv("DB_PORT", "6543")
    monkeypatch.setenv("SYMBOLS", "btcusdt, ETHUSDT,solusdt")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    s = Settings()
    assert (s.db_host, s.db_port, s.log_level) == ("db.internal", 6543, "DEBUG")
    assert s.symbols == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"db_port": 70000}, "DB_PORT"),
        ({"symbols": "BTC-USDT"}, "SYMBOLS"),
        ({"symbols": ""}, "SYMBOLS"),
        ({"symbols": "BTCUSDT,btcusdt"}, "SYMBOLS"),
        ({"binance_ws_url": "https://x"}, "BINANCE_WS_URL"),
        ({"log_format": "xml"}, "LOG_FORMAT"),
    ],
)
def test_bad_values_name_the_variable(kwargs: dict[str, object], name: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(**kwargs)  # type: ignore[arg-type]
    lines = describe_errors(info.value)
    assert len(lines) == 1
    assert lines[0].startswith(f"invalid configuration: {name}: ")


def test_bad_config_exits_with_one_line_per_variable_and_no_traceback() -> None:
    env = {"DB_PORT": "abc", "SYMBOLS": "??", "DB_PASSWORD": "hunter2", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", "from quaint.service.settings import *; load_settings(Settings)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, proc.stderr
    assert {line.split(":")[1].strip() for line in lines} == {"DB_PORT", "SYMBOLS"}
    assert "Traceback" not in proc.stderr and "hunter2" not in proc.stderr


def test_json_logs_redact_secrets() -> None:
    import structlog

    out = io.StringIO()
    configure_logging("INFO", "json", stream=out)
    structlog.get_logger("t").info("connecting", db_password="hunter2", api_key="k", symbol="BTCUSDT")
    record = json.loads(out.getvalue())
    assert record["db_password"] == "***" and record["api_key"] == "***"
    assert record["symbol"] == "BTCUSDT" and record["level"] == "info"
    assert "hunter2" not in out.getvalue()


def test_log_throttle_counts_suppressed() -> None:
    throttle = LogThrottle(interval_s=10, burst=2)
    assert throttle.allow("bad_frame", 0.0) == (True, 0)
    assert throttle.allow("bad_frame", 1.0) == (True, 0)
    assert throttle.allow("bad_frame", 2.0) == (False, 1)
    assert throttle.allow("bad_frame", 3.0) == (False, 2)
    assert throttle.allow("other", 3.0) == (True, 0)
    assert throttle.allow("bad_frame", 12.0) == (True, 2)


# ---- the seed's POSTGRES_* names ----

ALIASES = {"DB_USER": "POSTGRES_USER", "DB_PASSWORD": "POSTGRES_PASSWORD", "DB_NAME": "POSTGRES_DB"}


@pytest.fixture
def clean_db_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*ALIASES, *ALIASES.values()):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_seed_names_are_aliases(clean_db_env: pytest.MonkeyPatch) -> None:
    clean_db_env.setenv("POSTGRES_USER", "seed")
    clean_db_env.setenv("POSTGRES_PASSWORD", "seed-secret")
    clean_db_env.setenv("POSTGRES_DB", "seed_db")
    s = Settings()
    assert (s.db_user, s.db_password.get_secret_value(), s.db_name) == ("seed", "seed-secret", "seed_db")
    # The aliases are input only: one place holds each value.
    assert (s.postgres_user, s.postgres_password, s.postgres_db) == (None, None, None)


def test_both_names_agreeing_or_one_empty_is_fine(clean_db_env: pytest.MonkeyPatch) -> None:
    clean_db_env.setenv("DB_PASSWORD", "same")
    clean_db_env.setenv("POSTGRES_PASSWORD", "same")
    clean_db_env.setenv("POSTGRES_DB", "")
    s = Settings()
    assert s.db_password.get_secret_value() == "same" and s.db_name == "btc_ml_production"
    assert Settings(db_password="", postgres_password="given").db_password.get_secret_value() == "given"


@pytest.mark.parametrize(("name", "alias"), ALIASES.items())
def test_disagreeing_names_are_one_clear_error(
    clean_db_env: pytest.MonkeyPatch, name: str, alias: str
) -> None:
    clean_db_env.setenv(name, "value_one")
    clean_db_env.setenv(alias, "value_two")
    with pytest.raises(ValidationError) as info:
        Settings()
    (line,) = describe_errors(info.value)
    assert line.startswith(f"invalid configuration: {name}: {alias} (the seed's name for {name}) is set too")
    assert "value_one" not in line and "value_two" not in line


def test_a_password_conflict_stops_the_service_with_exit_2() -> None:
    env = {"DB_PASSWORD": "hunter2", "POSTGRES_PASSWORD": "hunter3", "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-c", "from quaint.service.settings import *; load_settings(Settings)"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "invalid configuration: DB_PASSWORD: POSTGRES_PASSWORD (the seed's name for DB_PASSWORD) is set too, "
        "to a different value; keep one of them"
    ]
