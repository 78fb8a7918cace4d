"""The README's local-mode walk-through, run as written: its ```bash block (the one the README says this
file runs) is executed line by line in one bash, from ``./deploy.sh --local --simulate`` to
``./cleanup.sh --local``, in a fresh run directory with a settings file of its own. Each command must
succeed; the ML example, which the README says exits 1 until the first features exist, is retried
until then. What each command printed is then checked. Also: the README's statements a newcomer needs
(default symbols, the venv, what ./test.sh installs, Prometheus' classic pages) against the code."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from quaint.service.settings import Settings
from tests.support.services import free_port

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MARKER = "`tests/test_deploy_readme.py` runs this block"
# Commands the README says may fail until data exists, and how long they get.
RETRIED = {"scripts/ml_example.py": 120}


def walkthrough() -> list[str]:
    """The commands of the ```bash block after the README's MARKER, one per line."""
    after = README.split(MARKER, 1)
    assert len(after) == 2, f"README.md lost the line {MARKER!r}"
    block = re.search(r"```bash\n(.*?)\n```", after[1], re.S)
    assert block is not None
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert not [c for c in commands if c.rstrip().endswith("\\")], "one command per line, please"
    return commands


@dataclass
class Step:
    command: str
    rc: int
    attempts: int
    out: str
    err: str


def driver_script(commands: list[str], out_dir: Path) -> str:
    """One bash for all commands (the `eval` must carry over), each command's output in files."""
    lines = ["set -uo pipefail", f"cd {shlex.quote(str(ROOT))}"]
    for i, command in enumerate(commands):
        retry_s = next((s for key, s in RETRIED.items() if key in command), 0)
        o = shlex.quote(str(out_dir / str(i)))
        lines += [
            f"deadline=$((SECONDS + {retry_s})); attempts=0",
            "while :; do",
            "  attempts=$((attempts + 1))",
            # A newline before the brace: the README's trailing comments end at the line's end.
            f"  {{ {command}",
            f"  }} >{o}.out 2>{o}.err",
            "  rc=$?",
            "  [[ $rc -ne 0 && $SECONDS -lt $deadline ]] || break",
            "  sleep 1",
            "done",
            f'echo "$rc $attempts" >{o}.rc',
            '[[ $rc -eq 0 ]] || exit "$rc"',
        ]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def walked() -> Iterator[tuple[list[Step], Path, dict[str, str]]]:
    if not (ROOT / ".venv" / "bin" / "python").exists():
        pytest.skip("the README's commands use .venv/bin/python; make it with ./test.sh")
    if shutil.which("psql") is None:
        pytest.skip("psql missing (scripts/pg_cluster.sh install installs it)")
    # World-traversable, for the database's postgres user when the tests run as root.
    base = Path(tempfile.mkdtemp(prefix="quaint-readme-"))
    base.chmod(0o755)
    settings = base / ".env"
    # The user's .env: the ports (free ones here), a fast simulator, short intervals, and
    # .env.example's empty ADMIN_TOKEN line, which --generate-secrets fills in.
    settings.write_text(
        "\n".join(
            [
                f"FEEDER_PORT={free_port()}",
                f"GAP_HANDLER_PORT={free_port()}",
                f"SIM_PORT={free_port()}",
                f"PROMETHEUS_PORT={free_port()}",
                "SIM_SPEED=60",
                "SIM_SEED=7",
                "HISTORY_DAYS=2",
                "FEATURE_CACHE_INTERVAL_S=2",
                "BACKFILL_CHECK_INTERVAL_S=2",
                "DEPLOY_TIMEOUT_S=120",
                "STOP_TIMEOUT_S=20",
                "# ADMIN_TOKEN=",
                "",
            ]
        )
    )
    # A shell as a newcomer's: none of the project's settings, only where the settings file and the
    # run directory are (so that the developer's own .env and .run are never touched).
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "TERM")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env |= {"QUAINT_ENV_FILE": str(settings), "QUAINT_RUN_DIR": str(base / "run")}
    commands = walkthrough()
    out_dir = base / "out"
    out_dir.mkdir()
    script = base / "walkthrough.sh"
    script.write_text(driver_script(commands, out_dir))
    try:
        done = run(["bash", str(script)], env, timeout=600)
        steps = []
        for i, command in enumerate(commands):
            rc_file = out_dir / f"{i}.rc"
            if not rc_file.exists():
                break
            rc, attempts = (int(x) for x in rc_file.read_text().split())
            out = (out_dir / f"{i}.out").read_text()
            err = (out_dir / f"{i}.err").read_text()
            steps.append(Step(command, rc, attempts, out, err))
        failed = [s for s in steps if s.rc != 0]
        assert not failed and len(steps) == len(commands), (
            f"README walk-through failed at {failed[0].command if failed else '?'!r}:\n"
            + (f"{failed[0].out}\n{failed[0].err}" if failed else done.stderr)
        )
        yield steps, base, env
    finally:
        run([str(ROOT / "cleanup.sh"), "--local", "--volumes"], env, timeout=120)
        shutil.rmtree(base, ignore_errors=True)


def run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def step(steps: list[Step], fragment: str) -> Step:
    found = [s for s in steps if fragment in s.command]
    assert len(found) == 1, f"the walk-through has {len(found)} commands with {fragment!r}"
    return found[0]


def expect(text: str, *fragments: str) -> None:
    for fragment in fragments:
        assert fragment in text, f"{fragment!r} not in:\n{text}"


def deployed(step: Step) -> None:
    expect(step.out, "Quaint2 is up", "DB_HOST=127.0.0.1 DB_PORT=", 'eval "$(scripts/local_suite.sh env)"')
    expect(step.err, "generated ADMIN_TOKEN", "SIMULATED market data")


def healthy(step: Step) -> None:
    assert json.loads(step.out)["status"] == "healthy", step.out


def backfill_accepted(step: Step) -> None:
    assert re.fullmatch(r"[0-9a-f]{16}", json.loads(step.out)["id"]), step.out


# What each command of the walk-through must have printed (beyond succeeding), by a fragment of it.
CHECKS: dict[str, Callable[[Step], None]] = {
    "deploy.sh --local --simulate": deployed,
    "localhost:$FEEDER_PORT/health": healthy,
    "localhost:$GAP_HANDLER_PORT/health": healthy,
    "scripts/ml_example.py": lambda s: expect(json.loads(s.out)["symbol"], "BTCUSDT"),
    'psql "$DATABASE_URL"': lambda s: expect(s.out, "BTCUSDT", "(1 row)"),
    "gap_handler backfill": lambda s: expect(s.out + s.err, "complete:"),
    "/backfills": backfill_accepted,
    "local_suite.sh status": lambda s: expect(
        s.out, "feeder: running (pid", "gap_handler: running (pid", "simulator: running", "database: running"
    ),
    "./cleanup.sh --local": lambda s: expect(s.err, "local suite stopped"),
}


@pytest.mark.slow
@pytest.mark.timeout(720)
def test_the_readme_walkthrough_runs_as_written(walked: tuple[list[Step], Path, dict[str, str]]) -> None:
    steps, base, env = walked
    for fragment, check in CHECKS.items():
        check(step(steps, fragment))
    # The settings a shell gets come from the eval: this shell had none of them.
    assert not {"DB_HOST", "DB_PORT", "FEEDER_PORT", "ADMIN_TOKEN"} & env.keys()
    assert re.search(r"^ADMIN_TOKEN=[0-9a-f]{48}$", (base / ".env").read_text(), re.M)
    ml = step(steps, "scripts/ml_example.py")
    print(f"ml_example.py succeeded at attempt {ml.attempts}")
    # ./cleanup.sh --local stopped everything and kept the data.
    status = run([str(ROOT / "scripts" / "local_suite.sh"), "status"], env, timeout=60)
    assert status.returncode == 3 and "database: not running" in status.stdout
    assert "running (pid" not in status.stdout
    assert (base / "run" / "pgdata" / "PG_VERSION").exists()


def test_every_walkthrough_command_is_checked() -> None:
    commands = walkthrough()
    for fragment in CHECKS:
        assert sum(fragment in c for c in commands) == 1, f"{fragment!r} must match one README command"


# ---- what the README tells a newcomer, against the code ----


def test_readme_says_the_default_symbols(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SYMBOLS", raising=False)
    assert Settings().symbols == ["BTCUSDT"]
    assert "By default only `BTCUSDT` is collected (`SYMBOLS=BTCUSDT`)" in README


def test_readme_says_where_the_venv_is_and_how_to_use_it() -> None:
    assert "**The virtual environment** is `.venv/`" in README
    assert "`.venv/bin/python -m gap_handler ...`" in README and "`source .venv/bin/activate`" in README


def test_readme_names_what_test_sh_installs() -> None:
    test_sh = (ROOT / "test.sh").read_text()
    tools = re.search(r"for cmd in ([a-z -]+); do", test_sh)
    assert tools is not None, "test.sh's tool list moved"
    section = README.split("**What a first run installs**", 1)[1].split("\n\n", 1)[0]
    for tool in tools.group(1).split():
        assert f"`{tool}`" in section, f"README does not say that ./test.sh installs {tool}"
    packages = re.search(r"^PACKAGES=\(([^)]*)\)", (ROOT / "scripts" / "docker_engine.sh").read_text(), re.M)
    assert packages is not None, "scripts/docker_engine.sh's package list moved"
    assert f"`{packages.group(1)}`" in section, "README does not name the Docker engine's packages"
    for fragment in ("pgAdmin 4 virtual environment (about 600 MB", "~/.cache/quaint", "minutes"):
        assert fragment in section


def test_readme_links_prometheus_classic_pages() -> None:
    assert "(http://127.0.0.1:9090/classic/alerts)" in README
    assert "(http://127.0.0.1:9090/classic/targets)" in README
