"""Alerting rules (prometheus/alerts.yml): valid, and each one unit-tested by promtool to fire on
the condition it names and to stay silent next to it (tests/prometheus/alerts_test.yml).

That the metrics they use are the ones the services really export, and that a real Prometheus
evaluates them without error, is checked on the running suite in test_deploy_local.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "tests" / "prometheus" / "alerts_test.yml"


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool missing (Debian: apt-get install --no-install-recommends prometheus)")
    return path


def test_rules_are_valid() -> None:
    done = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_rule_unit_tests_pass() -> None:
    done = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_is_tested_firing_and_silent() -> None:
    alerts = re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), re.M)
    assert len(alerts) == len(set(alerts)) >= 10
    tests = RULE_TESTS.read_text()
    fires = set(re.findall(r"alertname: (\w+)\n\s*exp_alerts:\n\s*- exp_labels", tests))
    silent = set(re.findall(r"alertname: (\w+)\n\s*exp_alerts: \[\]", tests))
    assert set(alerts) <= fires, f"never shown to fire: {set(alerts) - fires}"
    assert set(alerts) <= silent, f"never shown to stay silent: {set(alerts) - silent}"


def test_every_alert_says_how_bad_and_what_to_do() -> None:
    blocks = re.split(r"^\s*- alert: ", RULES.read_text(), flags=re.M)[1:]
    for block in blocks:
        name = block.split("\n", 1)[0]
        assert re.search(r"labels: \{severity: (page|ticket)\}", block), name
        assert "summary:" in block and "description:" in block, name
