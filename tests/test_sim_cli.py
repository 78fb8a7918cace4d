"""``python -m simulator`` as a user runs it: flags, environment, errors, a live server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import aiohttp
import pytest

from simulator.__main__ import load_settings
from tests.support.services import free_port


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "simulator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_invalid_settings_print_one_line_each_and_exit_2() -> None:
    result = _run("--speed", "-1", "--port", "http", "--symbols", "BTC-USDT", env={"SIM_BOOK_RATE": "fast"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 4, result.stderr
    assert all(line.startswith("python -m simulator: invalid --") for line in lines)
    assert any("--book-rate / SIM_BOOK_RATE" in line for line in lines)
    assert "Traceback" not in result.stderr


def test_unknown_flag_and_bad_replay_file_exit_2() -> None:
    unknown = _run("--sped", "60")
    assert unknown.returncode == 2 and len(unknown.stderr.strip().splitlines()) == 1
    replay = _run("--replay-csv", "/nonexistent.csv", "--replay-symbol", "BTCUSDT")
    assert replay.returncode == 2 and "no such file" in replay.stderr and "Traceback" not in replay.stderr


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_SPEED", "5")
    monkeypatch.setenv("SIM_SEED", "11")
    settings = load_settings(["--speed", "60", "--feed-gap", "+1..+2", "--feed-gap", "+5..+6", "--firehose"])
    assert (settings.speed, settings.seed, settings.firehose) == (60.0, 11, True)
    assert settings.feed_gap == ["+1..+2", "+5..+6"]


async def test_the_documented_command_serves_rest_and_stops_cleanly() -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulator",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--symbols",
        "BTCUSDT,ETHUSDT",
        "--speed",
        "60",
        "--seed",
        "7",
        "--log-format",
        "json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        async with aiohttp.ClientSession() as http:
            while True:  # wait for the server to listen (condition with a deadline)
                try:
                    async with http.get(url + "/api/v3/ping") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.05)
            params = {"symbol": "ETHUSDT", "interval": "1m", "limit": "2"}
            async with http.get(url + "/api/v3/klines", params=params) as resp:
                assert resp.status == 200 and len(await resp.json()) == 2
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 0, stderr.decode()[-2000:]
