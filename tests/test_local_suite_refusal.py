"""The gap handler's CLI next to a running local suite (issue 16): with neither DB_HOST nor
DB_PORT set it refuses with one line naming ``eval "$(scripts/local_suite.sh env)"``
(exit 2) instead of reaching localhost:5432 and the real Binance. The check is the one
``scripts/ml_example.py`` makes (``quaint.service.local_suite``); the suite is a stand-in
(a suite.env and a listening socket), as in tests/test_deploy_ml_example.py."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from quaint.service import local_suite

ROOT = Path(__file__).resolve().parents[1]


def _env(run_dir: Path) -> dict[str, str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.upper().startswith(("DB_", "POSTGRES_", "BINANCE_"))
    }
    return {**clean, "QUAINT_RUN_DIR": str(run_dir)}


@pytest.mark.parametrize("command", ["backfill", "bootstrap"])
def test_the_cli_refuses_next_to_a_running_suite(tmp_path: Path, command: str) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        (run_dir / local_suite.SUITE_ENV).write_text(f"DB_HOST=127.0.0.1\nDB_PORT={port}\nDB_NAME=quaint\n")
        assert local_suite.running_local_suite(_env(run_dir)) == run_dir
        args = ["--symbol", "BTCUSDT", "--since", "2026-01-01"]
        if command == "bootstrap":
            args = ["--symbols", "BTCUSDT", "--since", "2026-01-01"]
        done = subprocess.run(
            [sys.executable, "-m", "gap_handler", command, *args],
            cwd=ROOT,
            env=_env(run_dir),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"gap_handler {command}: DB_HOST and DB_PORT are not set")
    assert str(run_dir) in lines[0] and 'eval "$(scripts/local_suite.sh env)"' in lines[0]
    # A named server is used as named: the same stand-in is then no reason to refuse.
    assert local_suite.running_local_suite({**_env(run_dir), "DB_PORT": "5432"}) is None
