"""docker-compose.yml beyond the default stack, checked without a Docker engine: the simulator profile
(./deploy.sh --simulate), the seed's POSTGRES_* names for the database login, the compose stack test's
override, and the labels of the TEST STAND-IN image recipes in tests/docker/."""

from __future__ import annotations

import json
import re
from pathlib import Path

from compose_cli import ROOT, SERVICES, TEST_SECRETS, rendered, run_compose


def test_database_login_accepts_the_seed_names(tmp_path: Path) -> None:
    seed = {
        "POSTGRES_USER": "seed_user",
        "POSTGRES_PASSWORD": "seed-password-0123456789",
        "POSTGRES_DB": "seed_db",
        "PGADMIN_DEFAULT_EMAIL": "admin@example.com",
        "PGADMIN_DEFAULT_PASSWORD": "test-pgadmin-password-0123",
    }
    services = rendered(tmp_path, seed)["services"]
    login = {
        "POSTGRES_USER": "seed_user",
        "POSTGRES_PASSWORD": "seed-password-0123456789",
        "POSTGRES_DB": "seed_db",
    }
    assert {k: services["timescaledb"]["environment"][k] for k in login} == login
    for name in ("data-feeder", "gap-handler"):
        env = services[name]["environment"]
        assert (env["DB_USER"], env["DB_PASSWORD"], env["DB_NAME"]) == tuple(login.values())
        # Both names reach the service, which refuses the pair when they differ.
        assert {k: env[k] for k in login} == login
    pgadmin = services["pgadmin"]["environment"]
    assert (pgadmin["DB_USER"], pgadmin["DB_PASSWORD"], pgadmin["DB_NAME"]) == tuple(login.values())
    # The project's names win in the file; the services see the disagreement.
    both = rendered(tmp_path, {**seed, "DB_USER": "project_user"})["services"]
    assert both["timescaledb"]["environment"]["POSTGRES_USER"] == "project_user"
    feeder = both["data-feeder"]["environment"]
    assert (feeder["DB_USER"], feeder["POSTGRES_USER"]) == ("project_user", "seed_user")


def test_without_any_database_password_it_is_empty(tmp_path: Path) -> None:
    values = {k: v for k, v in TEST_SECRETS.items() if k != "DB_PASSWORD"}
    services = rendered(tmp_path, values)["services"]
    assert services["timescaledb"]["environment"]["POSTGRES_PASSWORD"] == ""
    assert services["pgadmin"]["environment"]["DB_PASSWORD"] == ""


def test_the_simulator_runs_only_with_its_profile(tmp_path: Path) -> None:
    assert "simulator" not in rendered(tmp_path)["services"]
    services = rendered(tmp_path, simulate=True)["services"]
    assert set(services) == SERVICES | {"simulator"}
    sim = services["simulator"]
    assert sim["profiles"] == ["simulate"]
    assert sim["image"] == "quaint2/simulator:0.1.0"
    assert (sim["build"]["dockerfile"], sim["build"]["target"]) == ("Dockerfile", "simulator")
    assert sim["read_only"] is True and sim["cap_drop"] == ["ALL"]
    assert (sim["environment"]["SIM_HOST"], sim["environment"]["SIM_PORT"]) == ("0.0.0.0", "9443")
    assert sim["ports"][0]["host_ip"] == "127.0.0.1" and sim["ports"][0]["target"] == 9443
    assert "http://127.0.0.1:9443/api/v3/ping" in " ".join(sim["healthcheck"]["test"])
    # It serves the services' symbols unless SIM_SYMBOLS says otherwise.
    assert sim["environment"]["SIM_SYMBOLS"] == "BTCUSDT"
    own = rendered(tmp_path, {**TEST_SECRETS, "SYMBOLS": "ETHUSDT,SOLUSDT"}, simulate=True)
    assert own["services"]["simulator"]["environment"]["SIM_SYMBOLS"] == "ETHUSDT,SOLUSDT"


def test_the_e2e_override_only_builds_on_the_host_network(tmp_path: Path) -> None:
    """tests/docker/compose.e2e.yml (the compose stack test's COMPOSE_FILE addition) changes nothing but
    the build network of the project's images."""
    override = ROOT / "tests" / "docker" / "compose.e2e.yml"
    done = run_compose(tmp_path, "-f", str(override), "--profile", "simulate", "config", "--format", "json")
    assert done.returncode == 0, done.stderr
    merged = json.loads(done.stdout)["services"]
    plain = rendered(tmp_path, simulate=True)["services"]
    for name, svc in merged.items():
        if name in ("data-feeder", "gap-handler", "simulator"):
            assert svc["build"].pop("network") == "host"
        assert svc == plain[name], name


def test_stand_in_recipes_are_labelled_and_named_after_the_upstream_images(tmp_path: Path) -> None:
    """tests/docker/ holds TEST STAND-INS for the images users pull (scripts/docker_engine.sh builds
    them for the compose stack test); each recipe says so and names the image the project's files name."""
    services = rendered(tmp_path)["services"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    pgadmin = (ROOT / "pgadmin" / "Dockerfile").read_text()
    upstream = {
        "timescaledb": services["timescaledb"]["image"],
        "prometheus": services["prometheus"]["image"],
        "pgadmin": re.findall(r"^FROM (\S+)$", pgadmin, re.M)[0],
        "python": re.findall(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile, re.M)[0],
    }
    for name, image in upstream.items():
        first = (ROOT / "tests" / "docker" / name / "Dockerfile").read_text().splitlines()[0]
        assert first.startswith(f"# TEST STAND-IN for {image} "), (name, first)
    assert "TEST STAND-IN" in (ROOT / "tests" / "docker" / "base" / "rootfs.sh").read_text()
