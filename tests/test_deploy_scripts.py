"""deploy.sh, cleanup.sh, scripts/local_suite.sh and pgadmin/entrypoint.sh: the refusals and the
paths that need neither Docker nor a running suite (the end-to-end run is tests/test_deploy_local.py).

Docker itself is replaced by stubs that fail, so no test here can ever start a real container."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest
from deploy_env import ROOT, run, stub_env

from tests.support.services import free_port

SHELL_SCRIPTS = [
    "deploy.sh",
    "cleanup.sh",
    "scripts/local_suite.sh",
    "scripts/deploy_lib.sh",
    "scripts/local_procs.sh",
    "scripts/local_checks.sh",
    "scripts/supervise.sh",
    "scripts/pgadmin_env.sh",
    "pgadmin/entrypoint.sh",
    "scripts/pg_cluster.sh",
    "scripts/docker_engine.sh",
    "tests/docker/base/rootfs.sh",
    "tests/docker/timescaledb/docker-entrypoint.sh",
    "tests/docker/timescaledb/000_install_timescaledb.sh",
    "tests/docker/pgadmin/entrypoint.sh",
    "test.sh",
    ".ci/run",
]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    env: dict[str, str] = stub_env(tmp_path)
    return env


# Sourced by the scripts above (which set -euo pipefail), never run.
SOURCED_LIBRARIES = {"scripts/deploy_lib.sh", "scripts/local_procs.sh", "scripts/local_checks.sh"}


def test_shell_scripts_are_strict_and_shellcheck_clean() -> None:
    for script in SHELL_SCRIPTS:
        text = (ROOT / script).read_text()
        assert "set -euo pipefail" in text or script in SOURCED_LIBRARIES, f"{script} is not strict"
        if script not in SOURCED_LIBRARIES:
            assert os.access(ROOT / script, os.X_OK), f"{script} is not executable"
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian: apt-get install shellcheck)")
    done = subprocess.run(
        [shellcheck, "-x", *SHELL_SCRIPTS], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


# ---- deploy.sh (Docker): secrets first ----


def test_deploy_refuses_without_an_env_file(env: dict[str, str]) -> None:
    done = run([str(ROOT / "deploy.sh")], env)
    assert done.returncode == 1
    assert "cp .env.example .env" in done.stderr and "--generate-secrets" in done.stderr


def test_deploy_refuses_placeholder_passwords(env: dict[str, str]) -> None:
    shutil.copy(ROOT / ".env.example", env["QUAINT_ENV_FILE"])
    done = run([str(ROOT / "deploy.sh")], env)
    assert done.returncode == 1
    assert "refusing to start" in done.stderr
    assert "DB_PASSWORD" in done.stderr and "PGADMIN_DEFAULT_PASSWORD" in done.stderr
    assert "stub: no Docker here" not in done.stderr, "Docker must not even be asked"


def test_deploy_refuses_a_short_password(env: dict[str, str]) -> None:
    Path(env["QUAINT_ENV_FILE"]).write_text(
        "DB_PASSWORD=short\nPGADMIN_DEFAULT_PASSWORD=long-enough-password-1\n"
    )
    done = run([str(ROOT / "deploy.sh")], env)
    assert done.returncode == 1
    assert "DB_PASSWORD (shorter than 12 characters)" in done.stderr
    assert "PGADMIN_DEFAULT_PASSWORD" not in done.stderr


def test_the_shell_environment_overrides_the_env_file(env: dict[str, str]) -> None:
    shutil.copy(ROOT / ".env.example", env["QUAINT_ENV_FILE"])
    env = {
        **env,
        "DB_PASSWORD": "from-the-shell-0123456",
        "PGADMIN_DEFAULT_PASSWORD": "also-from-the-shell-01",
    }
    done = run([str(ROOT / "deploy.sh")], env)
    assert done.returncode == 1
    assert "refusing" not in done.stderr
    assert "Docker Compose v2 not found" in done.stderr


def test_generate_secrets_writes_strong_private_values(env: dict[str, str]) -> None:
    env_file = Path(env["QUAINT_ENV_FILE"])
    done = run([str(ROOT / "deploy.sh"), "--generate-secrets"], env)
    # The secrets are written, then the missing engine is reported clearly.
    assert done.returncode == 1
    assert "Docker Compose v2 not found" in done.stderr and "./deploy.sh --local" in done.stderr
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    values = dict(re.findall(r"^([A-Z_]+)=(.*)$", env_file.read_text(), re.M))
    secrets = [values["DB_PASSWORD"], values["PGADMIN_DEFAULT_PASSWORD"], values["ADMIN_TOKEN"]]
    assert all(re.fullmatch(r"[0-9a-f]{48}", s) for s in secrets), secrets
    assert len(set(secrets)) == 3
    for secret in secrets:
        assert secret not in done.stdout + done.stderr, "a generated secret was printed"
    # Everything else is .env.example verbatim; the token takes the place of its commented-out default.
    example = (ROOT / ".env.example").read_text().splitlines()
    written = env_file.read_text().splitlines()
    assert len(written) == len(example)
    assert [a for a, b in zip(example, written, strict=True) if a != b] == [
        "DB_PASSWORD=CHANGE_ME",
        "PGADMIN_DEFAULT_PASSWORD=CHANGE_ME",
        "# ADMIN_TOKEN=",
    ]
    # A second run keeps them.
    again = run([str(ROOT / "deploy.sh"), "--generate-secrets"], env)
    assert "nothing generated" in again.stderr
    assert env_file.read_text().splitlines() == written


def test_generate_secrets_keeps_an_admin_token_and_adds_a_missing_one(env: dict[str, str]) -> None:
    env_file = Path(env["QUAINT_ENV_FILE"])
    env_file.write_text("DB_PASSWORD=CHANGE_ME\nADMIN_TOKEN=my-own-token\n")
    run([str(ROOT / "deploy.sh"), "--generate-secrets"], env)
    assert re.findall(r"^ADMIN_TOKEN=.*$", env_file.read_text(), re.M) == ["ADMIN_TOKEN=my-own-token"]
    # A file without any ADMIN_TOKEN line gets one appended.
    env_file.write_text("DB_PASSWORD=CHANGE_ME\n")
    done = run([str(ROOT / "deploy.sh"), "--generate-secrets"], env)
    assert "generated DB_PASSWORD ADMIN_TOKEN" in done.stderr
    tokens = re.findall(r"^ADMIN_TOKEN=([0-9a-f]{48})$", env_file.read_text(), re.M)
    assert len(tokens) == 1 and tokens[0] not in done.stderr
    # Empty and placeholder lines, active or not, all get the same new token (no line contradicts it).
    env_file.write_text("# ADMIN_TOKEN=\nADMIN_TOKEN=\nADMIN_TOKEN=CHANGE_ME\n")
    run([str(ROOT / "deploy.sh"), "--generate-secrets"], env)
    tokens = re.findall(r"^ADMIN_TOKEN=(.*)$", env_file.read_text(), re.M)
    assert len(tokens) == 3 and len(set(tokens)) == 1 and re.fullmatch(r"[0-9a-f]{48}", tokens[0])


def test_generate_secrets_in_local_mode_writes_the_admin_token(env: dict[str, str]) -> None:
    """--local --generate-secrets writes .env, then local mode starts as usual (here it stops at once
    on a busy port, before anything runs)."""
    pytest.importorskip("simulator.__main__")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = {**env, "FEEDER_PORT": str(busy.getsockname()[1]), "GAP_HANDLER_PORT": str(free_port())}
        done = run([str(ROOT / "deploy.sh"), "--local", "--simulate", "--generate-secrets"], env)
    assert done.returncode == 1
    assert "generated DB_PASSWORD PGADMIN_DEFAULT_PASSWORD ADMIN_TOKEN" in done.stderr
    assert "is already in use; set FEEDER_PORT" in done.stderr
    assert re.search(r"^ADMIN_TOKEN=[0-9a-f]{48}$", Path(env["QUAINT_ENV_FILE"]).read_text(), re.M)
    assert not Path(env["QUAINT_RUN_DIR"]).exists()


def test_env_file_values_are_taken_literally(env: dict[str, str], tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    Path(env["QUAINT_ENV_FILE"]).write_text(
        "# comment\n\n"
        f"A=$(touch {marker})\n"
        'B="quoted value"\n'
        "export C='single'\n"
        "D=kept-from-file\r\n"
        "E=x=y\n"
    )
    script = (
        'source scripts/deploy_lib.sh; load_env_file "$(env_file)"; '
        'printf "%s|%s|%s|%s|%s\\n" "$A" "$B" "$C" "$D" "$E"'
    )
    done = run(["bash", "-c", script], {**env, "QUAINT_ROOT": str(ROOT), "D": "from-env"})
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"$(touch {marker})|quoted value|single|from-env|x=y\n"
    assert not marker.exists()


# ---- local mode refusals (before anything starts) ----


def test_local_mode_refuses_unreachable_binance_and_starts_nothing(env: dict[str, str]) -> None:
    pytest.importorskip("feeder.__main__")
    pytest.importorskip("gap_handler.__main__")
    closed = free_port()  # nothing listens there
    env = {
        **env,
        "BINANCE_REST_URL": f"http://127.0.0.1:{closed}",
        "BINANCE_WS_URL": f"ws://127.0.0.1:{closed}",
        "FEEDER_PORT": str(free_port()),
        "GAP_HANDLER_PORT": str(free_port()),
        "PROMETHEUS_PORT": str(free_port()),
    }
    done = run([str(ROOT / "deploy.sh"), "--local"], env)
    assert done.returncode == 1
    assert "Binance is unreachable" in done.stderr
    assert f"GET http://127.0.0.1:{closed}/api/v3/ping failed" in done.stderr
    assert "--simulate" in done.stderr  # the way out is named, never taken silently
    assert "nothing was started" in done.stderr
    assert not Path(env["QUAINT_RUN_DIR"]).exists()


def test_local_mode_refuses_a_busy_port(env: dict[str, str]) -> None:
    pytest.importorskip("simulator.__main__")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {
            **env,
            "FEEDER_PORT": str(port),
            "GAP_HANDLER_PORT": str(free_port()),
            "SIM_PORT": str(free_port()),
        }
        done = run([str(ROOT / "deploy.sh"), "--local", "--simulate"], env)
    assert done.returncode == 1
    assert f"port {port} is already in use; set FEEDER_PORT" in done.stderr
    assert not Path(env["QUAINT_RUN_DIR"]).exists()


def test_local_mode_rejects_a_bad_port_setting(env: dict[str, str]) -> None:
    done = run([str(ROOT / "deploy.sh"), "--local"], {**env, "GAP_HANDLER_PORT": "90000"})
    assert done.returncode == 1
    assert "GAP_HANDLER_PORT must be a port number" in done.stderr


def test_cleanup_local_with_nothing_running(env: dict[str, str]) -> None:
    done = run([str(ROOT / "cleanup.sh"), "--local"], env)
    assert done.returncode == 0, done.stderr
    assert "nothing to stop" in done.stderr


def test_cleanup_volumes_deletes_only_its_own_run_dir(env: dict[str, str]) -> None:
    run_dir = Path(env["QUAINT_RUN_DIR"])
    run_dir.mkdir()
    (run_dir / "precious.txt").write_text("not ours")
    done = run([str(ROOT / "cleanup.sh"), "--local", "--volumes"], env)
    assert done.returncode == 1
    assert "not deleting it" in done.stderr
    assert (run_dir / "precious.txt").exists()
    (run_dir / ".quaint-run").touch()
    done = run([str(ROOT / "cleanup.sh"), "--local", "--volumes"], env)
    assert done.returncode == 0, done.stderr
    assert not run_dir.exists()


def test_env_needs_a_running_suite(env: dict[str, str]) -> None:
    done = run([str(ROOT / "scripts" / "local_suite.sh"), "env"], env)
    assert done.returncode == 1
    assert done.stdout == ""  # nothing for eval to pick up
    assert f"no local suite runs in {env['QUAINT_RUN_DIR']}" in done.stderr
    assert "./deploy.sh --local" in done.stderr


def test_cleanup_docker_needs_compose(env: dict[str, str]) -> None:
    done = run([str(ROOT / "cleanup.sh"), "--volumes"], env)
    assert done.returncode == 1
    assert "Docker Compose v2 not found" in done.stderr and "./cleanup.sh --local" in done.stderr


def test_stale_pid_file_is_not_trusted(env: dict[str, str]) -> None:
    """A pid file pointing at some other process (pid reuse) must never get that process killed."""
    run_dir = Path(env["QUAINT_RUN_DIR"])
    run_dir.mkdir()
    (run_dir / ".quaint-run").touch()
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        (run_dir / "feeder.pid").write_text(str(bystander.pid))
        status = run([str(ROOT / "scripts" / "local_suite.sh"), "status"], env)
        assert "feeder: NOT running (stale pid file" in status.stdout
        done = run([str(ROOT / "cleanup.sh"), "--local"], env)
        assert done.returncode == 0, done.stderr
        assert bystander.poll() is None, "cleanup killed a process it did not start"
        assert not (run_dir / "feeder.pid").exists()
    finally:
        bystander.kill()
        bystander.wait()


def test_a_service_left_without_its_supervisor_is_stopped_too(env: dict[str, str]) -> None:
    """A supervisor killed by hand leaves its service running alone: status says so, and cleanup still
    stops that process (found through the supervisor's state file, checked by its command line)."""
    run_dir = Path(env["QUAINT_RUN_DIR"])
    run_dir.mkdir()
    (run_dir / ".quaint-run").touch()
    # A process whose command line is a feeder's, as `python -m feeder` would have.
    orphan = subprocess.Popen(["bash", "-c", 'exec -a "python3 -m feeder" sleep 600'])
    try:
        (run_dir / "feeder.state").write_text(f"state=running\nchild={orphan.pid}\nrestarts=0\n")
        (run_dir / "feeder.pid").write_text("999999999")  # the supervisor: gone

        def cmdline() -> str:
            return Path(f"/proc/{orphan.pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()

        deadline = time.monotonic() + 30
        while "-m feeder" not in cmdline() and time.monotonic() < deadline:
            time.sleep(0.05)
        status = run([str(ROOT / "scripts" / "local_suite.sh"), "status"], env)
        assert f"feeder: running (pid {orphan.pid}) WITHOUT its supervisor" in status.stdout
        done = run([str(ROOT / "cleanup.sh"), "--local"], env)
        assert done.returncode == 0, done.stderr
        assert f"stopping feeder (pid {orphan.pid}, without its supervisor)" in done.stderr
        assert orphan.wait(timeout=30) == -signal.SIGTERM
        assert not (run_dir / "feeder.state").exists()
    finally:
        if orphan.poll() is None:
            orphan.kill()
        orphan.wait()


# ---- pgadmin/entrypoint.sh ----


def run_entrypoint(tmp_path: Path, **overrides: str) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PGADMIN_DEFAULT_EMAIL": "ops@example.com",
        "DB_PASSWORD": "pa:ss\\word",
        "DB_HOST": "timescaledb",
        "DB_USER": "quaint",
        "DB_NAME": "btc_ml_production",
        "PGADMIN_STORAGE_DIR": str(tmp_path / "storage"),
        "PGADMIN_SERVER_JSON_FILE": str(tmp_path / "servers.json"),
        "QUAINT_SERVERS_TEMPLATE": str(ROOT / "pgadmin" / "servers.json"),
        **overrides,
    }
    env = {k: v for k, v in env.items() if v != ""}
    # The command after the entrypoint's own work: prints what the image's /entrypoint.sh would see.
    then = ["sh", "-c", 'echo "next: $PGADMIN_SERVER_JSON_FILE"']
    done: subprocess.CompletedProcess[str] = run(
        ["bash", str(ROOT / "pgadmin" / "entrypoint.sh"), *then], env
    )
    return done


def test_entrypoint_renders_servers_and_pgpass(tmp_path: Path) -> None:

    done = run_entrypoint(tmp_path, DB_PORT="6543")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"next: {tmp_path / 'servers.json'}\n"
    assert "pa:ss" not in done.stdout + done.stderr
    server = json.loads((tmp_path / "servers.json").read_text())["Servers"]["1"]
    assert server["Host"] == "timescaledb" and server["Port"] == 6543 and server["Username"] == "quaint"
    assert server["MaintenanceDB"] == server["DBRestriction"] == "btc_ml_production"
    pgpass = tmp_path / "storage" / "ops_example.com" / ".pgpass"
    assert pgpass.read_text() == "timescaledb:6543:*:quaint:pa\\:ss\\\\word\n"
    assert stat.S_IMODE(pgpass.stat().st_mode) == 0o600
    assert stat.S_IMODE(pgpass.parent.stat().st_mode) == 0o700
    # Every start rewrites it: a changed password takes effect.
    assert run_entrypoint(tmp_path, DB_PORT="6543", DB_PASSWORD="new").returncode == 0
    assert pgpass.read_text() == "timescaledb:6543:*:quaint:new\n"


def test_entrypoint_names_the_storage_dir_like_pgadmin(tmp_path: Path) -> None:
    done = run_entrypoint(tmp_path, PGADMIN_DEFAULT_EMAIL="9lives@example.com")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "storage" / "pga_user_9lives_example.com" / ".pgpass").exists()


@pytest.mark.parametrize("missing", ["DB_PASSWORD", "PGADMIN_DEFAULT_EMAIL"])
def test_entrypoint_requires_its_settings(tmp_path: Path, missing: str) -> None:
    done = run_entrypoint(tmp_path, **{missing: ""})
    assert done.returncode != 0
    assert f"{missing} must be set" in done.stderr
    assert not (tmp_path / "storage").exists()
