"""docker-compose.yml's "replica" profile (issue 18), checked without a Docker engine: a hot standby of
the timescaledb service (timescaledb/replica.sh: pg_basebackup -R, then the image's entrypoint), the
primary's pg_hba line that lets it stream (timescaledb/replication_hba.sh), and DOCKER_DB_HOST giving
the services both hosts. The two scripts are run for real with stand-ins for the image's programs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from compose_cli import ROOT, SERVICES, TEST_SECRETS, run_compose

from quaint.service.settings import Settings

REPLICA = "timescaledb-replica"
REPLICA_SH = ROOT / "timescaledb" / "replica.sh"
HBA_SH = ROOT / "timescaledb" / "replication_hba.sh"
FAILOVER = {"DOCKER_DB_HOST": "timescaledb,timescaledb-replica", "DB_TARGET_SESSION_ATTRS": "read-write"}


def render(tmp_path: Path, *profiles: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    args = [a for p in profiles for a in ("--profile", p)]
    done = run_compose(
        tmp_path, *args, "config", "--format", "json", env_file={**TEST_SECRETS, **(env or {})}
    )
    assert done.returncode == 0, done.stderr
    model: dict[str, Any] = json.loads(done.stdout)
    return model


def test_the_replica_runs_only_with_its_profile(tmp_path: Path) -> None:
    plain = render(tmp_path)["services"]
    assert REPLICA not in plain
    assert plain["data-feeder"]["environment"]["DB_HOST"] == "timescaledb"
    model = render(tmp_path, "replica")
    services = model["services"]
    assert set(services) == SERVICES | {REPLICA}
    replica, primary = services[REPLICA], services["timescaledb"]
    assert replica["profiles"] == ["replica"]
    assert replica["image"] == primary["image"]  # the same PostgreSQL and TimescaleDB on both
    assert replica["depends_on"] == {"timescaledb": {"condition": "service_healthy", "required": True}}
    assert replica["entrypoint"] == ["/usr/local/bin/quaint-replica.sh"]
    assert replica["environment"]["REPLICA_PRIMARY_HOST"] == "timescaledb"
    for name in ("POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"):
        assert replica["environment"][name] == primary["environment"][name]
    mounts = {(v["type"], v["source"], v["target"]) for v in replica["volumes"]}
    assert mounts == {
        ("volume", "timescaledb-replica-data", "/var/lib/postgresql/data"),
        ("bind", str(REPLICA_SH), "/usr/local/bin/quaint-replica.sh"),
    }
    assert "timescaledb-replica-data" in model["volumes"]
    # COMPOSE_PROFILES in .env (compose's own variable) does the same as --profile.
    assert REPLICA in render(tmp_path, env={"COMPOSE_PROFILES": "replica"})["services"]
    port = replica["ports"][0]
    assert (port["host_ip"], port["published"], port["target"]) == ("127.0.0.1", "5433", 5432)
    assert (
        replica["healthcheck"]["test"][0] == "CMD-SHELL" and "pg_isready" in replica["healthcheck"]["test"][1]
    )
    assert replica["restart"] == "unless-stopped" and list(replica["networks"]) == ["quaint"]
    # The primary lets it stream: its first initialisation runs the pg_hba script before the schema.
    primary_mounts = {v["target"]: v["source"] for v in primary["volumes"] if v["type"] == "bind"}
    assert primary_mounts["/docker-entrypoint-initdb.d/050_quaint_replication_hba.sh"] == str(HBA_SH)
    assert os.access(HBA_SH, os.X_OK), "the image's entrypoint sources, not runs, a non-executable script"
    assert os.access(REPLICA_SH, os.X_OK)


def test_the_services_get_both_hosts_and_accept_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    services = render(tmp_path, "replica", env=FAILOVER)["services"]
    for name in ("data-feeder", "gap-handler"):
        env = services[name]["environment"]
        assert (env["DB_HOST"], env["DB_TARGET_SESSION_ATTRS"]) == tuple(FAILOVER.values())
        for key in ("DB_HOST", "DB_PORT", "DB_TARGET_SESSION_ATTRS"):
            monkeypatch.setenv(key, env[key])
        assert Settings().db_hosts == [("timescaledb", 5432), ("timescaledb-replica", 5432)]
    assert services["pgadmin"]["environment"]["DB_HOST"] == "timescaledb"  # pgAdmin: the primary


def stand_ins(tmp_path: Path) -> tuple[Path, Path]:
    """A bin directory of programs that record their arguments (the image's su-exec, chown,
    pg_basebackup, docker-entrypoint.sh), and the record."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    for name in ("su-exec", "chown", "pg_basebackup", "docker-entrypoint.sh"):
        script = f'#!/bin/sh\necho "{name} $*" >>"{calls}"\n'
        if name == "su-exec":  # steps down, then runs the rest
            script += 'shift; exec "$@"\n'
        if name == "pg_basebackup":  # a base backup leaves an initialised data directory
            script += 'echo 15 >"$PGDATA/PG_VERSION"\n'
        (bin_dir / name).write_text(script)
        (bin_dir / name).chmod(0o755)
    return bin_dir, calls


def run_replica_sh(tmp_path: Path, pgdata: Path) -> list[str]:
    bin_dir, calls = stand_ins(tmp_path)
    env = {
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "PGDATA": str(pgdata),
        "POSTGRES_USER": "quaint",
        "POSTGRES_PASSWORD": "pw-0123",
        "REPLICA_PRIMARY_HOST": "primary-db",
    }
    done = subprocess.run([str(REPLICA_SH)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return calls.read_text().splitlines() if calls.exists() else []


def test_replica_sh_takes_a_base_backup_once_then_starts_postgres(tmp_path: Path) -> None:
    pgdata = tmp_path / "data"
    calls = run_replica_sh(tmp_path, pgdata)
    assert calls == [
        f"chown postgres:postgres {pgdata}",
        f"su-exec postgres pg_basebackup -h primary-db -p 5432 -U quaint -D {pgdata} -R -X stream -c fast",
        f"pg_basebackup -h primary-db -p 5432 -U quaint -D {pgdata} -R -X stream -c fast",
        "docker-entrypoint.sh postgres",
    ]
    assert oct(pgdata.stat().st_mode & 0o777) == "0o700"
    # An initialised volume (a restart, or after promotion): straight to PostgreSQL.
    shutil.rmtree(tmp_path / "bin")
    (tmp_path / "calls").unlink()
    assert run_replica_sh(tmp_path, pgdata) == ["docker-entrypoint.sh postgres"]


def test_replication_hba_sh_lets_the_user_stream(tmp_path: Path) -> None:
    (tmp_path / "pg_hba.conf").write_text("host all all all scram-sha-256\n")
    env = {"PATH": os.environ["PATH"], "PGDATA": str(tmp_path), "POSTGRES_USER": "quaint"}
    done = subprocess.run([str(HBA_SH)], env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = (tmp_path / "pg_hba.conf").read_text().splitlines()
    assert lines == ["host all all all scram-sha-256", 'host replication "quaint" all scram-sha-256']


def test_the_scripts_are_shellcheck_clean() -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (Debian: apt-get install shellcheck)")
    done = subprocess.run(
        [shellcheck, str(REPLICA_SH), str(HBA_SH)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout
