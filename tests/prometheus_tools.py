"""Debian's Prometheus (package ``prometheus``: promtool and the server) for the tests of
deploy/prometheus/ and deploy/grafana/. Under CI=true a missing binary fails the test."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from bridge.mqtt.embedded import free_port
from tests.conftest import IN_CI

REPO = Path(__file__).resolve().parents[1]
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = REPO / "deploy" / "prometheus" / "alerts.test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "trigger-mesh.json"


def require(name: str) -> str:
    binary = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/sbin")
    if binary is None:
        message = f"{name} is not installed (apt-get install -y prometheus)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return binary


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the decoded answer, whatever its status (errors are JSON)."""
        url = f"{self.base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as error:  # 400/422 for a bad query: JSON too
            return json.load(error)

    def query(self, expr: str) -> Any:
        return self.api("query", query=expr)


@contextmanager
def prometheus(tmp_path: Path, targets: dict[str, str]) -> Iterator[Prometheus]:
    """A Prometheus of our own on a free loopback port with its own storage, scraping
    ``targets`` (job name: host:port) every second and evaluating alerts.yml; yields once it
    answers."""
    binary = require("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [target]}]}
            for job, target in targets.items()
        ],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        server = Prometheus(port)
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                with urllib.request.urlopen(f"{server.base}/-/ready", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "prometheus did not become ready in 30 s"
            time.sleep(0.1)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
