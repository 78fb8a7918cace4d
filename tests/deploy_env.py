"""A clean environment for running deploy.sh, cleanup.sh and scripts/local_suite.sh in tests: stub
docker/docker-compose that always fail (so nothing can start a real container), a private env file and
run directory."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def stub_env(tmp_path: Path) -> dict[str, str]:
    """The environment: the stubs first on PATH (in tmp_path/stubs), QUAINT_ENV_FILE, QUAINT_RUN_DIR."""
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name in ("docker", "docker-compose"):
        stub = stubs / name
        stub.write_text("#!/bin/sh\necho 'stub: no Docker here' >&2\nexit 1\n")
        stub.chmod(0o755)
    keep = {k: v for k, v in os.environ.items() if k in ("HOME", "LANG", "LC_ALL", "TMPDIR", "USER")}
    return {
        **keep,
        "PATH": f"{stubs}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "QUAINT_ENV_FILE": str(tmp_path / "deploy.env"),
        "QUAINT_RUN_DIR": str(tmp_path / "run"),
    }


def run(args: list[str], env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
