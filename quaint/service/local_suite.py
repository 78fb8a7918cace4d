"""Next to a running local suite (``./deploy.sh --local``), the defaults are wrong.

The local suite's database listens on a port of its own and its services may read the
simulator, so a command that falls back to ``localhost:5432`` and the real Binance
reaches some other server, or none, or the wrong market. With neither ``DB_HOST`` nor
``DB_PORT`` set next to a running suite, the tools (``scripts/ml_example.py``, the gap
handler's CLI) refuse with one line naming ``eval "$(scripts/local_suite.sh env)"``
rather than guess; they never adopt the suite's settings by themselves.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path

# The project's layout: <root>/quaint/service/local_suite.py and <root>/.run (an installed
# package has no run directory next to it: no suite is ever found there).
ROOT = Path(__file__).resolve().parents[2]
# What scripts/local_suite.sh up writes into its run directory, and down deletes.
SUITE_ENV = "suite.env"


def running_local_suite(environ: Mapping[str, str], root: Path = ROOT) -> Path | None:
    """The run directory of a local suite that runs while this environment names no database
    server (neither DB_HOST nor DB_PORT set): then the defaults are not that suite's database.
    None when a server is named, or no local suite runs. The run directory is found as
    scripts/local_suite.sh finds it: QUAINT_RUN_DIR (relative to the repository), else .run."""
    names = {key.upper() for key in environ}
    if {"DB_HOST", "DB_PORT"} & names:
        return None
    run_dir = root / (environ.get("QUAINT_RUN_DIR") or ".run")
    suite_env = run_dir / SUITE_ENV
    if not suite_env.exists():
        return None
    try:
        values = dict(line.split("=", 1) for line in suite_env.read_text().splitlines() if "=" in line)
    except PermissionError:
        return run_dir  # another user's suite (mode 600): it runs, but it is not ours to read
    try:
        with socket.create_connection((values["DB_HOST"], int(values["DB_PORT"])), timeout=2):
            return run_dir
    except (KeyError, ValueError, OSError):
        return None  # left behind by a suite that is not running any more


def refusal(program: str, run_dir: Path) -> str:
    """The one line a tool prints (then exits 2) next to a running suite."""
    return (
        f"{program}: DB_HOST and DB_PORT are not set, and the local suite in {run_dir} runs on a "
        'port of its own: run  eval "$(scripts/local_suite.sh env)"  first (or set DB_HOST and DB_PORT)'
    )
