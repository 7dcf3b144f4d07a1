"""`trigger-mesh conformance camera` against real cameras over a real mosquitto: the
project's own camera passes every MUST (unsigned and signed, started and moved by the kit;
the `trigger-mesh camera` daemon too), and cameras broken on purpose
(tests/conformance_camera.py --flaw) make the kit exit 1 naming the check they fail."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import yaml

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.conformance.camera.catalog import CHECKS
from mesh.security.keys import load_public_key, new_gateway_key
from mesh.security.trust import KeyRole, TrustStore, trusted_key

HELPER = Path(__file__).resolve().parents[1] / "conformance_camera.py"
LAT, LON = 39.952583, -75.165222
KIT_TIMEOUT_S = 120


def camera_cmd(broker: MosquittoProcess, topics: Topics, camera_id: str, *extra: str) -> str:
    words = [
        sys.executable,
        str(HELPER),
        "run",
        "--broker",
        f"mqtt://127.0.0.1:{broker.port}",
        "--prefix",
        topics.prefix,
        "--camera-id",
        camera_id,
        "--unit",
        "car-1",
        "--lat",
        str(LAT),
        "--lon",
        str(LON),
        *extra,
    ]
    return shlex.join(words)


def kit(broker: MosquittoProcess, topics: Topics, camera_id: str, *args: str) -> tuple[int, str]:
    """Run the kit; (exit status, what it printed)."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mesh",
            "conformance",
            "camera",
            "--broker",
            f"mqtt://127.0.0.1:{broker.port}",
            "--prefix",
            topics.prefix,
            "--camera-id",
            camera_id,
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


def test_the_project_camera_passes_every_must(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    control = tmp_path / "position"
    move = shlex.join([sys.executable, str(HELPER), "move", str(control), "{lat}", "{lon}"])
    report = tmp_path / "camera.xml"
    code, output = kit(
        mosquitto,
        topics,
        "cam-ok",
        "--camera-cmd",
        camera_cmd(mosquitto, topics, "cam-ok", "--control", str(control)),
        "--move-cmd",
        move,
        "--camera-log",
        str(tmp_path / "camera.log"),
        "--junit",
        str(report),
    )
    assert code == 0, output
    cases = junit_cases(report)
    assert set(cases) == {c.name for c in CHECKS}
    for check in CHECKS:
        case = cases[check.name]
        assert case.find("failure") is None, output
        if check.signed:
            assert case.find("skipped") is not None  # an unsigned run
        else:
            # Everything else ran and passed: the will (the kit killed it), the move …
            assert case.find("skipped") is None, (check.name, output)
    assert "killed with SIGKILL" in row(output, "last_will_offline")
    assert "PASS: every MUST passed" in output


def test_the_camera_daemon_passes_too(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """`trigger-mesh camera --config`, as shipped: it cannot be moved, so that check is
    put out of scope (and reported so)."""
    config = tmp_path / "camera.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "camera_id": "cam-daemon",
                "unit": "car-1",
                "broker": f"mqtt://127.0.0.1:{mosquitto.port}",
                "topic_prefix": topics.prefix,
                "position": {"lat": LAT, "lon": LON},
            }
        )
    )
    daemon = shlex.join(
        [sys.executable, "-m", "mesh", "camera", "--config", str(config), "--log-format", "json"]
    )
    code, output = kit(
        mosquitto,
        topics,
        "cam-daemon",
        "--camera-cmd",
        daemon,
        "--skip",
        "cell_follows_move",
    )
    assert code == 0, output
    assert "out of scope" in row(output, "cell_follows_move")
    assert "pass" in row(output, "last_will_offline")


@pytest.mark.parametrize(
    ("flaw", "failed_check"),
    [("started-out-of-range", "out_of_range_direct"), ("no-will", "last_will_offline")],
)
def test_a_broken_camera_fails_naming_the_check(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, flaw: str, failed_check: str
) -> None:
    report = tmp_path / "camera.xml"
    code, output = kit(
        mosquitto,
        topics,
        "cam-broken",
        "--camera-cmd",
        camera_cmd(mosquitto, topics, "cam-broken", "--flaw", flaw),
        "--skip",
        "cell_follows_move",
        "--timeout",
        "2",
        "--quiet",
        "0.5",
        "--junit",
        str(report),
    )
    assert code == 1, output
    assert "FAIL" in row(output, failed_check), output
    failure = junit_cases(report)[failed_check].find("failure")
    assert failure is not None
    assert failure.get("type") == "fail"


def test_a_camera_the_kit_did_not_start_leaves_its_will_unchecked_which_fails(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """Without --camera-cmd the kit cannot end the camera's connection: last_will_offline
    is not run, and a MUST not run fails the run unless skipped."""
    camera = subprocess.Popen(shlex.split(camera_cmd(mosquitto, topics, "cam-ext")))
    try:
        report = tmp_path / "camera.xml"
        code, output = kit(
            mosquitto, topics, "cam-ext", "--skip", "cell_follows_move", "--junit", str(report)
        )
    finally:
        camera.terminate()
        camera.wait(10)
    assert code == 1, output
    assert "NOT RUN" in row(output, "last_will_offline")
    failure = junit_cases(report)["last_will_offline"].find("failure")
    assert failure is not None
    assert failure.get("type") == "not_run"
    # Every other MUST passed: the camera is fine, the run is incomplete.
    assert "FAIL: 1 MUST" in output


def test_a_signed_run_against_the_project_camera(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    gateway = new_gateway_key(keys, "gw-conf")
    other = new_gateway_key(keys, "gw-other")
    camera = new_gateway_key(keys, "cam-signed")

    store = TrustStore(
        [
            trusted_key(load_public_key(gateway.public), KeyRole.GATEWAY, "gw-conf"),
            trusted_key(load_public_key(other.public), KeyRole.GATEWAY, "gw-other"),
            trusted_key(load_public_key(camera.public), KeyRole.CAMERA, "cam-signed"),
        ]
    )
    trust = tmp_path / "trust.yaml"
    store.save(trust)
    report = tmp_path / "camera.xml"
    code, output = kit(
        mosquitto,
        topics,
        "cam-signed",
        "--camera-cmd",
        camera_cmd(
            mosquitto,
            topics,
            "cam-signed",
            "--trust",
            str(trust),
            "--key",
            str(camera.private),
        ),
        "--trust",
        str(trust),
        "--gateway-key",
        str(gateway.private),
        "--other-gateway-key",
        str(other.private),
        "--skip",
        "cell_follows_move",
        "--junit",
        str(report),
    )
    assert code == 0, output
    assert "signed run as gw-conf" in output
    cases = junit_cases(report)
    for check in CHECKS:
        if check.signed:
            assert cases[check.name].find("skipped") is None, (check.name, output)
            assert cases[check.name].find("failure") is None, (check.name, output)
    assert "replayed:" in row(output, "replayed_refused")
