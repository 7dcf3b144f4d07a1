"""The secured deployment as an installer sets it up, command by command: `broker-config`,
`keys new`, mosquitto with the generated config, a gateway and a camera with `security:`
sections, and `trigger` signed by the in-car terminal (the gateway's key)."""

from __future__ import annotations

import time
from pathlib import Path

from bridge.mqtt.embedded import MosquittoProcess, free_port
from mesh.protocol.models import ActivationRecord
from tests.conftest import require_mosquitto
from tests.integration.test_cli import daemon, run

FLEET = """\
prefix: mesh/v2
gateways: [{id: gw-car-12, unit: car-12}]
cameras: [{id: bwc-101, unit: car-12}]
dispatch: [dispatch-1]
"""


def test_a_signed_fleet_on_the_generated_broker(tmp_path: Path) -> None:
    binary = require_mosquitto()
    (tmp_path / "fleet.yaml").write_text(FLEET)
    port = free_port()
    made = run(
        "broker-config", "--out", str(tmp_path / "broker"), "--fleet", str(tmp_path / "fleet.yaml"),
        "--port", str(port), "--bind", "127.0.0.1", "--run-as", "root",
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    trust = tmp_path / "trust.yaml"
    for role, ident in (
        ("gateway", "gw-car-12"),
        ("camera", "bwc-101"),
        ("dispatch", "dispatch-1"),
    ):
        made = run("keys", "new", "--role", role, "--id", ident, "--out", str(tmp_path / "keys"),
                   "--trust", str(trust))  # fmt: skip
        assert made.returncode == 0, made.stderr
    clients = tmp_path / "broker" / "clients"
    gateway_url = (clients / "gw-car-12.url").read_text().strip()
    camera_url = (clients / "bwc-101.url").read_text().strip()
    security = "security:\n  signing_key: keys/{id}.key\n  trust_store: trust.yaml\n"
    (tmp_path / "gateway.yaml").write_text(
        f"unit: car-12\nbroker: '{gateway_url}'\nlog: {tmp_path / 'car-12.db'}\n"
        "position: {lat: 39.952583, lon: -75.165222}\n" + security.format(id="gw-car-12")
    )
    (tmp_path / "camera.yaml").write_text(
        f"camera_id: bwc-101\nunit: car-12\nbroker: '{camera_url}'\n"
        "position: {lat: 39.952943, lon: -75.165222}\n" + security.format(id="bwc-101")
    )
    broker = MosquittoProcess(
        binary, port, tmp_path / "broker", config=tmp_path / "broker" / "mosquitto.conf"
    )
    broker.start()
    try:
        with (
            daemon(
                "gateway", "--config", str(tmp_path / "gateway.yaml"), "--log-format", "json"
            ) as gw,
            daemon(
                "camera", "--config", str(tmp_path / "camera.yaml"), "--log-format", "json"
            ) as cam,
        ):
            time.sleep(3)  # both connect over TLS, the camera announces itself
            assert gw.poll() is None
            assert cam.poll() is None
            trigger = ["trigger", "--kind", "manual", "--unit", "car-12", "--broker", gateway_url]
            unsigned = run(*trigger, "--timeout", "10")
            assert unsigned.returncode == 3, unsigned.stdout + unsigned.stderr
            assert "unsigned" in unsigned.stdout
            key = str(tmp_path / "keys" / "gw-car-12.key")
            signed = run(*trigger, "--json", "--signing-key", key, timeout=30)
            assert signed.returncode == 0, signed.stdout + signed.stderr
            record = ActivationRecord.model_validate_json(signed.stdout.strip().splitlines()[-1])
            assert [(c.camera_id, c.status) for c in record.cameras] == [("bwc-101", "started")]
    finally:
        broker.stop()
