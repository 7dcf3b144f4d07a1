"""The BLE commands as a user runs them: keys, a virtual radio for several processes, a
gateway scanning it through bumble, and a sensor advertising through it."""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import yaml

from bridge.mqtt.embedded import MosquittoProcess, free_port
from bridge.topics import Topics
from mesh.protocol.models import ActivationRecord
from tests.integration.test_cli import daemon, run


def test_keys_new_sensor_writes_private_files(tmp_path: Path) -> None:
    keystore, key_file = tmp_path / "keystore.yaml", tmp_path / "holster.json"
    result = run(
        "keys",
        "new-sensor",
        "--keystore",
        str(keystore),
        "--kind",
        "holster",
        "--unit",
        "car-12",
        "--officer",
        "Ofc. Rivera #4411",
        "--sensor-id",
        "1001",
        "--key-file",
        str(key_file),
    )
    assert result.returncode == 0, result.stderr
    for path in (keystore, key_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    entry = yaml.safe_load(keystore.read_text())["sensors"][1001]
    sensor = json.loads(key_file.read_text())
    assert entry["key"] == sensor["key"]
    assert len(bytes.fromhex(sensor["key"])) == 32
    assert (entry["kind"], entry["unit"], sensor["counter"]) == ("holster", "car-12", 0)
    again = run(
        "keys",
        "new-sensor",
        "--keystore",
        str(keystore),
        "--kind",
        "taser",
        "--unit",
        "car-12",
        "--sensor-id",
        "1001",
        "--key-file",
        str(tmp_path / "x"),
    )
    assert again.returncode == 2
    assert "already in the keystore" in again.stderr
    bad = run(
        "keys",
        "new-sensor",
        "--keystore",
        str(keystore),
        "--kind",
        "toaster",
        "--unit",
        "car-12",
        "--key-file",
        str(tmp_path / "y"),
    )
    assert bad.returncode == 2
    assert "unknown sensor kind 'toaster'" in bad.stderr


def test_sensor_to_gateway_through_a_virtual_radio_in_other_processes(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    keys = run(
        "keys",
        "new-sensor",
        "--keystore",
        str(tmp_path / "keystore.yaml"),
        "--kind",
        "taser",
        "--unit",
        "car-12",
        "--sensor-id",
        "2001",
        "--key-file",
        str(tmp_path / "taser.json"),
    )
    assert keys.returncode == 0, keys.stderr
    port = free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "unit": "car-12",
                "broker": str(mosquitto.url),
                "topic_prefix": topics.prefix,
                "log": str(tmp_path / "car-12.db"),
                "position": {"lat": 39.952583, "lon": -75.165222},
                "ble": {
                    "transport": f"tcp-client:127.0.0.1:{port}",
                    "keystore": "keystore.yaml",
                    "counters": str(tmp_path / "counters.db"),
                },
            }
        )
    )
    common = ["--broker", str(mosquitto.url), "--prefix", topics.prefix]
    with (
        daemon("ble-radio", "--port", str(port), "--controllers", "2") as radio,
        daemon("tail", "--json", *common) as tail,
    ):
        time.sleep(1.5)
        assert radio.poll() is None
        with (
            daemon("gateway", "--config", str(config), "--log-format", "json") as gw,
            daemon("cameras", "--count", "4", "--spread-m", "50", *common) as fleet,
        ):
            time.sleep(3)
            assert gw.poll() is None
            assert fleet.poll() is None
            sent = run(
                "ble-sensor",
                "--key-file",
                str(tmp_path / "taser.json"),
                "--event",
                "arm",
                "--kind",
                "taser",
                "--sensor-id",
                "2001",
                "--duration",
                "0.8",
                "--transport",
                f"tcp-client:127.0.0.1:{port + 1}",
                timeout=30,
            )
            assert sent.returncode == 0, sent.stderr
            assert "counter 1" in sent.stdout
            time.sleep(1.5)
    assert json.loads((tmp_path / "taser.json").read_text())["counter"] == 1
    records = [
        ActivationRecord.model_validate_json(line)
        for line in tail.stdout.read().splitlines()
        if line.strip()
    ]
    final = [r for r in records if r.state != "pending"]
    assert len(final) == 1
    assert final[0].state == "confirmed"
    assert final[0].trigger.kind == "taser_arm"
    assert final[0].trigger.source.type == "ble"
    assert final[0].trigger.event_id == "ble-2001-1"
    logs = [json.loads(line) for line in gw.stderr.read().splitlines() if line.strip()]
    assert any(e.get("event") == "ble scanner started" for e in logs)
