"""`trigger-mesh conformance gateway` against the real `trigger-mesh gateway` daemon over a
real mosquitto: it passes every MUST (unsigned and signed), and a gateway broken on
purpose (tests/conformance_gateway.py) makes the kit exit 1 naming the check it fails."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import yaml

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.conformance.gateway.catalog import CHECKS
from mesh.conformance.gateway.scene import cameras
from mesh.security.keys import load_public_key, new_gateway_key
from mesh.security.trust import KeyRole, TrustStore, trusted_key
from tests.chaos_tools import GatewayRunner, write_gateway_config
from tests.harness import UNIT

HELPER = Path(__file__).resolve().parents[1] / "conformance_gateway.py"
GATEWAY = "gw-conf"
# Retries at 0.2 and 0.6 s, the end at 1.4 s: the run takes seconds, not the shipped 15.
FAST = {"defaults": {"ack_deadline_ms": 200, "max_retries": 2}}
KIT_TIMEOUT_S = 120


def kit(broker: MosquittoProcess, topics: Topics, *args: str) -> tuple[int, str]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mesh",
            "conformance",
            "gateway",
            "--broker",
            f"mqtt://127.0.0.1:{broker.port}",
            "--prefix",
            topics.prefix,
            "--unit",
            UNIT,
            "--gateway-id",
            GATEWAY,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=KIT_TIMEOUT_S,
        env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def junit_cases(path: Path) -> dict[str, ET.Element]:
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    return {case.get("name") or "": case for case in suite.findall("testcase")}


def row(output: str, check: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(check + " "))


def config_for(broker: MosquittoProcess, topics: Topics, tmp_path: Path) -> Path:
    return write_gateway_config(
        tmp_path / "gateway.yaml",
        broker=broker.url,
        topics=topics,
        gateway_id=GATEWAY,
        log_path=tmp_path / "activations.db",
        policy=FAST,
    )


def test_the_project_gateway_passes_every_must(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    runner = GatewayRunner(config_for(mosquitto, topics, tmp_path), tmp_path)
    runner.start()
    report = tmp_path / "gateway.xml"
    try:
        code, output = kit(mosquitto, topics, "--junit", str(report))
    finally:
        runner.close()
    assert code == 0, output + runner.output()[-3000:]
    cases = junit_cases(report)
    assert set(cases) == {c.name for c in CHECKS}
    for check in CHECKS:
        case = cases[check.name]
        assert case.find("failure") is None, output
        assert (case.find("skipped") is not None) == check.signed, (check.name, output)
    assert "`partial`" in row(output, "final_state")


def test_a_gateway_that_skips_the_cells_fails_naming_the_check(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    config = config_for(mosquitto, topics, tmp_path)
    with (tmp_path / "flawed-gateway.log").open("wb") as log:
        gateway = subprocess.Popen(
            [sys.executable, str(HELPER), "no-cells", "gateway", "--config", str(config)],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    report = tmp_path / "gateway.xml"
    try:
        code, output = kit(mosquitto, topics, "--junit", str(report))
    finally:
        gateway.terminate()
        gateway.wait(10)
    assert code == 1, output
    assert "FAIL" in row(output, "command_to_covering_cells"), output
    failure = junit_cases(report)["command_to_covering_cells"].find("failure")
    assert failure is not None
    # The camera in range answered only the retry (it hears its cell, and its own topic).
    assert "after 2 attempt(s)" in row(output, "answers_recorded")


def test_a_signed_run_against_the_project_gateway(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    keys = tmp_path / "mesh-keys"
    camera_keys = tmp_path / "camera-keys"
    gateway_key = new_gateway_key(keys, GATEWAY)
    dispatch_key = new_gateway_key(keys, "dispatch-1")
    entries = [
        trusted_key(load_public_key(gateway_key.public), KeyRole.GATEWAY, GATEWAY),
        trusted_key(load_public_key(dispatch_key.public), KeyRole.DISPATCH, "dispatch-1"),
    ]
    for camera in cameras(UNIT):
        made = new_gateway_key(camera_keys, camera.camera_id)
        entries.append(trusted_key(load_public_key(made.public), KeyRole.CAMERA, camera.camera_id))
    trust = tmp_path / "trust.yaml"
    TrustStore(entries).save(trust)
    config = config_for(mosquitto, topics, tmp_path)
    settings = yaml.safe_load(config.read_text())
    settings["security"] = {"signing_key": str(gateway_key.private), "trust_store": str(trust)}
    config.write_text(yaml.safe_dump(settings))
    runner = GatewayRunner(config, tmp_path)
    runner.start()
    report = tmp_path / "gateway.xml"
    try:
        code, output = kit(
            mosquitto,
            topics,
            "--trust",
            str(trust),
            "--dispatch-key",
            str(dispatch_key.private),
            "--camera-keys",
            str(camera_keys),
            "--junit",
            str(report),
        )
    finally:
        runner.close()
    assert code == 0, output + runner.output()[-3000:]
    assert "signed run" in output
    cases = junit_cases(report)
    for check in CHECKS:
        assert cases[check.name].find("failure") is None, (check.name, output)
        assert cases[check.name].find("skipped") is None, (check.name, output)
    assert "a stranger's key" in row(output, "bad_acks_ignored")
