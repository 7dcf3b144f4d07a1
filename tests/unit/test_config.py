"""Configuration files: good ones load, bad ones name the file, the key and the problem
(what the command line says of one: tests/integration/test_config_cli.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bridge.mqtt.mosquitto_conf import render_local_config
from mesh.config import load_camera_config, load_gateway_config
from mesh.documents import ConfigError
from mesh.protocol.models import TriggerKind

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_configs_load() -> None:
    config, policy = load_gateway_config(REPO / "configs" / "gateway.yaml")
    assert config.unit == "car-12"
    assert policy.rules(TriggerKind.WEAPON_DRAW).radius_m > 0
    assert load_camera_config(REPO / "configs" / "camera.yaml").camera_id
    ble_config, _ = load_gateway_config(REPO / "configs" / "gateway-ble.yaml")
    assert ble_config.ble is not None
    assert ble_config.ble.transport == "tcp-client:127.0.0.1:7400"


def test_policy_file_is_relative_to_the_gateway_config(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    write(tmp_path / "rules", "kinds: {taser_arm: {radius_m: 42}}\n", "p.yaml")
    config, policy = load_gateway_config(write(tmp_path, "unit: car-1\npolicy: rules/p.yaml\n"))
    assert policy.rules(TriggerKind.TASER_ARM).radius_m == 42
    assert config.resolved_gateway_id == "gw-car-1"


@pytest.mark.parametrize(
    ("text", "key", "problem"),
    [
        ("unit: car-1\nbroker: http://x\n", "broker", "scheme must be mqtt"),
        ("unit: car/1\n", "unit", "pattern"),
        ("broker: embedded\n", "unit", "required key is missing"),
        ("unit: car-1\nposition: {lat: 91, lon: 0}\n", "position.lat", "less than or equal"),
        (
            "unit: car-1\npolicy: {kinds: {taser_arm: {radius_m: -5}}}\n",
            "policy.kinds.taser_arm.radius_m",
            "greater than or equal",
        ),
        ("unit: car-1\ntopic_prefix: 'a/#'\n", "topic_prefix", "wildcards"),
        ("unit: car-1\nunitt: x\n", "unitt", "unknown key"),
        ("unit: car-1\npolicy: missing.yaml\n", "policy", "does not exist"),
        ("unit: [car-1\n", "", "not valid YAML at line"),
        ("- a\n- b\n", "", "expected a mapping"),
    ],
)
def test_bad_gateway_configs(tmp_path: Path, text: str, key: str, problem: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path)
    assert info.value.path == str(path)
    assert info.value.key == key
    assert problem in info.value.problem


def test_generated_mosquitto_config_turns_nagle_off() -> None:
    text = render_local_config(18830)
    assert "set_tcp_nodelay true" in text
    assert "listener 18830 127.0.0.1" in text


def test_documented_builtin_rules_match_the_code() -> None:
    from mesh.decide.policy import Policy

    policy = Policy()
    rows = {}
    for line in (REPO / "docs" / "policy.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0] in {k.value for k in TriggerKind}:
            rows[cells[0]] = tuple(float(c) for c in cells[1:])
    assert set(rows) == {k.value for k in TriggerKind}
    for kind in TriggerKind:
        r = policy.rules(kind)
        code = (r.radius_m, r.pre_event_s, r.cooldown_s, r.priority, r.cancel_window_s)
        assert rows[kind.value] == code, kind


def test_every_policy_key_is_documented() -> None:
    from mesh.decide.policy import KindRules, Policy

    text = (REPO / "docs" / "policy.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)(?:\.<source>)?` \|", text, re.MULTILINE))
    assert set(KindRules.model_fields) <= documented
    assert set(Policy.model_fields) - {"defaults", "kinds"} <= documented


@pytest.mark.parametrize(
    ("ble", "key", "problem"),
    [
        ("{keystore: k.yaml}", "ble", "needs a transport"),
        (
            "{transport: 'usb:0', keystore: k.yaml, min_rssi_dbm: {toaster: -50}}",
            "ble",
            "unknown sensor kind",
        ),
        (
            "{transport: 'usb:0', keystore: k.yaml, company_id: 70000}",
            "ble.company_id",
            "less than or equal",
        ),
        ("{transport: 'usb:0'}", "ble.keystore", "required key is missing"),
    ],
)
def test_bad_ble_sections(tmp_path: Path, ble: str, key: str, problem: str) -> None:
    path = write(tmp_path, f"unit: car-1\nble: {ble}\n")
    with pytest.raises(ConfigError) as info:
        load_gateway_config(path)
    assert info.value.key == key
    assert problem in info.value.problem
