"""The example cameras written from the docs alone (docs/examples/paho_camera.py and
docs/examples/node-camera/) pass `trigger-mesh conformance camera` over a real mosquitto:
every MUST, unsigned and signed, started, moved (through their --fix-file) and killed by the
kit, nothing skipped. docs/conformance.md ("Results of the example cameras") shows their
tables.

The Node camera needs node and `npm ci` in docs/examples/node-camera (`make test` does it):
under CI=true a missing one fails (test_node_camera's `node` fixture), elsewhere it skips."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.conformance.camera.catalog import CHECKS
from tests.integration.test_conformance_camera import junit_cases, kit
from tests.integration.test_node_camera import (
    NODE_CAMERA,
    make_keys,
    node,  # noqa: F401  (the fixture: node and the camera's `mqtt`; under CI=true, or it fails)
)

PAHO_CAMERA = Path(__file__).resolve().parents[2] / "docs" / "examples" / "paho_camera.py"
LAT, LON = 39.952583, -75.165222
UNIT = "car-1"


def camera_cmd(
    camera: str, binary: str | None, broker: MosquittoProcess, topics: Topics, camera_id: str,
    fix_file: Path, keys: tuple[Path, Path] | None,
) -> str:  # fmt: skip
    """The command that starts one example camera, as each one's usage says."""
    if camera == "paho":
        words = [sys.executable, str(PAHO_CAMERA), "127.0.0.1", str(broker.port), topics.prefix,
                 camera_id, UNIT, repr(LAT), repr(LON), *(str(k) for k in keys or ()),
                 "--fix-file", str(fix_file)]  # fmt: skip
    else:
        assert binary is not None
        words = [binary, str(NODE_CAMERA / "camera.mjs"), "--broker", f"mqtt://127.0.0.1:{broker.port}",
                 "--prefix", topics.prefix, "--id", camera_id, "--unit", UNIT,
                 "--lat", repr(LAT), "--lon", repr(LON), "--fix-file", str(fix_file)]  # fmt: skip
        if keys is not None:
            words += ["--key", str(keys[0]), "--trust", str(keys[1])]
    return shlex.join(words)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
@pytest.mark.parametrize("camera", ["paho", "node"])
def test_the_example_camera_passes_every_check(
    camera: str, signed: bool, request: pytest.FixtureRequest, mosquitto: MosquittoProcess,
    topics: Topics, tmp_path: Path,
) -> None:  # fmt: skip
    binary = request.getfixturevalue("node") if camera == "node" else None
    camera_id = f"{camera}-cam"
    fix_file = tmp_path / f"{camera_id}.fix"
    move = shlex.join(["sh", "-c", f"echo {{lat}} {{lon}} > {shlex.quote(str(fix_file))}"])
    keys = signing = None
    if signed:
        # `trigger-mesh keys new`, as docs/conformance.md "A signed run" says: the kit's two
        # gateways and the camera, in one trust store.
        trust = make_keys(
            tmp_path,
            ("gateway", "conformance-gw"),
            ("gateway", "conformance-gw-2"),
            ("camera", camera_id),
        )
        keys = (tmp_path / "keys" / f"{camera_id}.key", trust)
        signing = [
            "--trust", str(trust),
            "--gateway-key", str(tmp_path / "keys" / "conformance-gw.key"),
            "--other-gateway-key", str(tmp_path / "keys" / "conformance-gw-2.key"),
        ]  # fmt: skip
    report, log = tmp_path / "camera.xml", tmp_path / "camera.log"
    code, output = kit(
        mosquitto,
        topics,
        camera_id,
        "--camera-cmd",
        camera_cmd(camera, binary, mosquitto, topics, camera_id, fix_file, keys),
        "--move-cmd",
        move,
        "--camera-log",
        str(log),
        "--junit",
        str(report),
        *(signing or ()),
    )
    shown = f"{output}\n--- the camera's output:\n{log.read_text() if log.exists() else ''}"
    assert code == 0, shown
    assert "PASS: every MUST passed" in output, shown
    assert ("signed run as conformance-gw" if signed else "unsigned run") in output
    cases = junit_cases(report)
    assert set(cases) == {c.name for c in CHECKS}
    for check in CHECKS:
        case = cases[check.name]
        assert case.find("failure") is None, (check.name, shown)
        # Nothing out of scope but the signed checks of an unsigned run: the move and the
        # will ran, and every SHOULD was met (a SHOULD not met is `skipped` too).
        skipped = case.find("skipped") is not None
        assert skipped == (check.signed and not signed), (check.name, shown)
