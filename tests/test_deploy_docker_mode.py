"""deploy.sh and cleanup.sh in Docker mode without Docker: a stub ``docker`` answers every compose
command and records what it was given, so the options (--simulate, --pull, -f, COMPOSE_FILE), the
BINANCE_* endpoints and the seed's POSTGRES_* names are checked as they reach docker compose. The real
run is tests/test_compose_stack.py."""

from __future__ import annotations

import itertools
import json
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from deploy_env import ROOT, run, stub_env


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env: dict[str, str] = stub_env(tmp_path)
    return env


STRONG = {"DB_PASSWORD": "strong-db-password-0123", "PGADMIN_DEFAULT_PASSWORD": "strong-pgadmin-password-0"}


@pytest.fixture
def recorder(env: dict[str, str], tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A docker stub that answers every compose command and records each call's arguments, and the
    variables that decide what compose does, one JSON object per line."""
    log = tmp_path / "docker-calls.jsonl"
    stub = Path(env["PATH"].split(":", 1)[0]) / "docker"
    stub.write_text(
        textwrap.dedent(
            f"""\
            #!/usr/bin/env python3
            import json, os, sys
            keys = ("BINANCE_WS_URL", "BINANCE_REST_URL", "COMPOSE_FILE", "DB_PASSWORD", "DB_USER",
                    "DB_NAME", "POSTGRES_PASSWORD", "POSTGRES_USER", "POSTGRES_DB")
            call = {{"args": sys.argv[1:], "env": {{k: os.environ.get(k) for k in keys}}}}
            with open({str(log)!r}, "a") as f:
                f.write(json.dumps(call) + "\\n")
            if sys.argv[1:3] == ["compose", "version"]:
                print("Docker Compose version v2.40.3")
            """
        )
    )
    return env, log


def calls(log: Path, command: str) -> list[dict[str, Any]]:
    """The recorded compose calls whose compose command (after the global options) is COMMAND."""
    found = []
    for line in log.read_text().splitlines():
        call = json.loads(line)
        args = call["args"]
        if args[:1] == ["compose"] and command in args:
            found.append(call)
    return found


def test_simulate_in_docker_mode_runs_the_simulator_profile(recorder: tuple[dict[str, str], Path]) -> None:
    env, log = recorder
    Path(env["QUAINT_ENV_FILE"]).write_text("".join(f"{k}={v}\n" for k, v in STRONG.items()))
    done = run([str(ROOT / "deploy.sh"), "--simulate", "--pull", "never"], env)
    assert done.returncode == 0, done.stderr
    assert (
        "SIMULATED market data" in done.stderr
        and "Quaint2 is up (Docker; SIMULATED market data)" in done.stdout
    )
    (up,) = calls(log, "up")
    args = up["args"]
    assert args[args.index("--profile") + 1] == "simulate"
    assert args[args.index("--pull") + 1] == "never"
    assert ["-f", str(ROOT / "docker-compose.yml")] == args[args.index("-f") : args.index("-f") + 2]
    assert up["env"]["BINANCE_WS_URL"] == "ws://simulator:9443"
    assert up["env"]["BINANCE_REST_URL"] == "http://simulator:9443"
    assert STRONG["DB_PASSWORD"] not in done.stdout + done.stderr


def test_docker_mode_reads_binance_from_the_env_file(recorder: tuple[dict[str, str], Path]) -> None:
    env, log = recorder
    settings = {**STRONG, "BINANCE_REST_URL": "http://exchange.example:8000", "BINANCE_WS_URL": "ws://x:1"}
    Path(env["QUAINT_ENV_FILE"]).write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
    done = run([str(ROOT / "deploy.sh")], env)
    assert done.returncode == 0, done.stderr
    assert "market data from http://exchange.example:8000 and ws://x:1" in done.stderr
    (up,) = calls(log, "up")
    assert "--profile" not in up["args"] and "--pull" not in up["args"]
    assert up["env"]["BINANCE_WS_URL"] == "ws://x:1"


def test_extra_compose_files_are_passed_through(
    recorder: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, log = recorder
    Path(env["QUAINT_ENV_FILE"]).write_text("".join(f"{k}={v}\n" for k, v in STRONG.items()))
    override = tmp_path / "override.yml"
    override.write_text("services: {}\n")
    done = run([str(ROOT / "deploy.sh"), "-f", str(override)], env)
    assert done.returncode == 0, done.stderr
    args = calls(log, "up")[0]["args"]
    files = [arg for flag, arg in itertools.pairwise(args) if flag == "-f"]
    assert files == [str(ROOT / "docker-compose.yml"), str(override)]
    # COMPOSE_FILE, compose's own variable, is left to compose: no -f then.
    log.unlink()
    done = run([str(ROOT / "deploy.sh")], {**env, "COMPOSE_FILE": f"docker-compose.yml:{override}"})
    assert done.returncode == 0, done.stderr
    (up,) = calls(log, "up")
    assert "-f" not in up["args"] and up["env"]["COMPOSE_FILE"] == f"docker-compose.yml:{override}"
    done = run([str(ROOT / "cleanup.sh"), "--volumes", "-f", str(override)], env)
    assert done.returncode == 0, done.stderr
    (down,) = calls(log, "down")
    args = down["args"]
    assert args[args.index("--profile") + 1] == "simulate", "cleanup must remove the simulator too"
    assert args[-3:] == ["down", "--remove-orphans", "--volumes"]
    assert str(override) in args


def test_bad_pull_policy_and_missing_compose_file(env: dict[str, str]) -> None:
    done = run([str(ROOT / "deploy.sh"), "--pull", "sometimes"], env)
    assert done.returncode == 1 and "--pull needs always, missing or never" in done.stderr
    done = run([str(ROOT / "deploy.sh"), "-f", "no-such-override.yml"], env)
    assert done.returncode == 1 and "compose file no-such-override.yml not found" in done.stderr
    done = run([str(ROOT / "deploy.sh"), "--local", "--pull", "never"], env)
    assert done.returncode == 1 and "not --local" in done.stderr


def test_the_seed_names_are_accepted(recorder: tuple[dict[str, str], Path]) -> None:
    env, log = recorder
    seed = {
        "POSTGRES_PASSWORD": "seed-password-01234",
        "POSTGRES_USER": "seed",
        "POSTGRES_DB": "seed_db",
        "PGADMIN_DEFAULT_PASSWORD": STRONG["PGADMIN_DEFAULT_PASSWORD"],
    }
    Path(env["QUAINT_ENV_FILE"]).write_text("".join(f"{k}={v}\n" for k, v in seed.items()))
    done = run([str(ROOT / "deploy.sh")], env)
    assert done.returncode == 0, done.stderr
    (up,) = calls(log, "up")
    assert (up["env"]["DB_PASSWORD"], up["env"]["DB_USER"], up["env"]["DB_NAME"]) == (
        "seed-password-01234",
        "seed",
        "seed_db",
    )
    assert "database seed_db, user seed" in done.stdout


@pytest.mark.parametrize("name", ["DB_PASSWORD", "DB_USER", "DB_NAME"])
def test_the_seed_name_and_ours_must_agree(recorder: tuple[dict[str, str], Path], name: str) -> None:
    env, log = recorder
    alias = {"DB_PASSWORD": "POSTGRES_PASSWORD", "DB_USER": "POSTGRES_USER", "DB_NAME": "POSTGRES_DB"}[name]
    values = {**STRONG, name: "one-value-0123456789", alias: "another-value-0123456"}
    Path(env["QUAINT_ENV_FILE"]).write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    done = run([str(ROOT / "deploy.sh")], env)
    assert done.returncode == 1
    assert f"{name} and {alias} (the seed's name for {name}) are both set, to different values" in done.stderr
    assert "one-value" not in done.stderr and "another-value" not in done.stderr
    assert not log.exists(), "Docker must not even be asked"


def test_generated_secrets_fill_the_seed_password_too(env: dict[str, str]) -> None:
    env_file = Path(env["QUAINT_ENV_FILE"])
    env_file.write_text("DB_PASSWORD=CHANGE_ME\nPOSTGRES_PASSWORD=CHANGE_ME\nPGADMIN_DEFAULT_PASSWORD=\n")
    done = run([str(ROOT / "deploy.sh"), "--generate-secrets"], env)
    assert "Docker Compose v2 not found" in done.stderr, done.stderr
    values = dict(re.findall(r"^([A-Z_]+)=(.*)$", env_file.read_text(), re.M))
    assert values["DB_PASSWORD"] == values["POSTGRES_PASSWORD"] != values["PGADMIN_DEFAULT_PASSWORD"]
    assert all(re.fullmatch(r"[0-9a-f]{48}", v) for v in values.values()), values
