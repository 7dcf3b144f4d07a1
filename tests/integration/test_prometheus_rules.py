"""deploy/prometheus/alerts.yml: valid for promtool, and its unit tests (alerts.test.yml:
the first missed camera fires CamerasMissed, …) pass under Debian's promtool."""

from __future__ import annotations

import subprocess

from tests.prometheus_tools import ALERT_TESTS, ALERTS, require


def test_the_alert_rules_are_valid() -> None:
    promtool = require("promtool")
    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 8 rules found" in result.stdout


def test_the_alert_rules_unit_tests_pass() -> None:
    promtool = require("promtool")
    result = subprocess.run(
        [promtool, "test", "rules", ALERT_TESTS.name],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ALERT_TESTS.parent,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
