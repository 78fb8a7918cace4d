"""scripts/ml_example.py next to a local suite: with neither DB_HOST nor DB_PORT set and a local suite
running (its run dir's suite.env names a database that answers), it refuses with one line naming
``eval "$(scripts/local_suite.sh env)"`` instead of trying localhost:5432. The suite here is a stand-in
(a suite.env and a listening socket); tests/test_deploy_local.py runs it next to the real one."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[1]


def load_ml_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ml_example", ROOT / "scripts" / "ml_example.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ml_example = load_ml_example()


@pytest.fixture
def listening() -> Iterator[int]:
    """A port where something accepts connections, as the suite's database does."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def write_suite_env(run_dir: Path, port: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "suite.env").write_text(
        f"# Written by scripts/local_suite.sh up\nDB_HOST=127.0.0.1\nDB_PORT={port}\nDB_NAME=quaint\n"
    )


def test_a_running_suite_is_found_when_no_server_is_named(tmp_path: Path, listening: int) -> None:
    write_suite_env(tmp_path / ".run", listening)
    assert ml_example.running_local_suite({}, tmp_path) == tmp_path / ".run"
    assert ml_example.running_local_suite({"HOME": "/root"}, tmp_path) == tmp_path / ".run"
    # QUAINT_RUN_DIR, absolute or relative to the repository, as local_suite.sh takes it.
    write_suite_env(tmp_path / "elsewhere", listening)
    assert ml_example.running_local_suite({"QUAINT_RUN_DIR": "elsewhere"}, tmp_path) == tmp_path / "elsewhere"
    absolute = str(tmp_path / "elsewhere")
    assert ml_example.running_local_suite({"QUAINT_RUN_DIR": absolute}, ROOT) == tmp_path / "elsewhere"


@pytest.mark.parametrize("named", ["DB_HOST", "DB_PORT", "db_host"])
def test_a_named_server_is_used_as_named(tmp_path: Path, listening: int, named: str) -> None:
    write_suite_env(tmp_path / ".run", listening)
    assert ml_example.running_local_suite({named: "5432"}, tmp_path) is None


def test_no_suite_or_a_stopped_one_is_not_in_the_way(tmp_path: Path) -> None:
    assert ml_example.running_local_suite({}, tmp_path) is None
    # A suite.env left behind by a suite that no longer runs (nothing listens on its port).
    write_suite_env(tmp_path / ".run", free_port())
    assert ml_example.running_local_suite({}, tmp_path) is None


def test_the_refusal_is_one_line_naming_the_eval(tmp_path: Path, listening: int) -> None:
    run_dir = tmp_path / "run"
    write_suite_env(run_dir, listening)
    env = {
        **{k: v for k, v in os.environ.items() if not k.upper().startswith(("DB_", "POSTGRES_"))},
        "QUAINT_RUN_DIR": str(run_dir),
    }
    done = subprocess.run(
        [sys.executable, "scripts/ml_example.py", "--symbol", "BTCUSDT"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert 'eval "$(scripts/local_suite.sh env)"' in lines[0]
    assert str(run_dir) in lines[0] and "DB_HOST and DB_PORT are not set" in lines[0]
