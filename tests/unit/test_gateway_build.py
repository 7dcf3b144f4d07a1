"""The one way from a gateway config to a Gateway (mesh/gateway/build.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.config import load_gateway_config
from mesh.decide.policy import Policy
from mesh.documents import ConfigError
from mesh.extras import MissingExtra
from mesh.gateway.build import Overrides, build_gateway, config_in_code, trigger_sources
from mesh.protocol.models import GeoPoint
from mesh.security.keys import new_gateway_key
from triggers.ble.keystore import Keystore

NOWHERE = BrokerUrl.parse("mqtt://127.0.0.1:1")  # never connected: run() is not called


def write_config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(
        "unit: car-9\n"
        "gateway_id: gw-nine\n"
        "topic_prefix: agency/mesh/v2\n"
        f"log: {tmp_path / 'log.db'}\n"
        "position: {lat: 39.9, lon: -75.1}\n"
        "status_interval_s: 7\n"
        "sync_log: true\n"
        "sync_interval_s: 3\n"
        "audit: {signing_key: keys/gw.key, checkpoint_interval_s: 11, retention_days: 30,"
        " retention_check_s: 13}\n"
        "metrics: {port: 9931, host: 127.0.0.2}\n" + extra
    )
    return path


def test_every_config_field_reaches_the_gateway(tmp_path: Path) -> None:
    keys = new_gateway_key(tmp_path / "keys", "gw")
    path = write_config(tmp_path)
    cfg, policy = load_gateway_config(path)
    gateway = build_gateway(cfg, policy, url=NOWHERE, config_path=path)
    settings = gateway.settings
    assert (settings.unit_id, settings.issuer) == ("car-9", "gw-nine")
    assert settings.topics == Topics("agency/mesh/v2")
    assert settings.log_path == tmp_path / "log.db"
    assert settings.position == GeoPoint(lat=39.9, lon=-75.1)
    assert (settings.status_interval_s, settings.sync_log, settings.sync_interval_s) == (7, True, 3)
    assert settings.signer is not None
    assert settings.signer.key_id == keys.key_id
    assert (settings.checkpoint_interval_s, settings.retention_days) == (11, 30)
    assert settings.retention_check_s == 13
    assert (settings.metrics_port, settings.metrics_host) == (9931, "127.0.0.2")
    assert not settings.systemd_notify
    assert gateway.sources == []


def test_overrides_win_over_the_file(tmp_path: Path) -> None:
    new_gateway_key(tmp_path / "keys", "gw")
    path = write_config(tmp_path)
    cfg, policy = load_gateway_config(path)
    overrides = Overrides(metrics_port=0, systemd_notify=True, max_cameras=5)
    settings = build_gateway(
        cfg, policy, url=NOWHERE, config_path=path, overrides=overrides
    ).settings
    assert (settings.metrics_port, settings.systemd_notify, settings.max_cameras) == (0, True, 5)


def test_a_missing_checkpoint_key_is_named(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    cfg, policy = load_gateway_config(path)
    with pytest.raises(ConfigError) as caught:
        build_gateway(cfg, policy, url=NOWHERE, config_path=path)
    assert caught.value.key == "audit.signing_key"
    assert str(path) in str(caught.value)


def test_a_config_in_code_keeps_its_log_whole_and_loads_nothing(tmp_path: Path) -> None:
    cfg = config_in_code("car-9", tmp_path / "log.db", topics=Topics("t/mesh/v2"))
    assert cfg.audit.retention_days is None
    settings = build_gateway(cfg, Policy(), url=NOWHERE).settings
    assert settings.retention_days is None
    assert settings.signer is None
    assert not settings.security.enforcing
    assert settings.topics == Topics("t/mesh/v2")


def test_a_config_in_code_is_validated_as_a_file_is(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="status_interval_s"):
        config_in_code("car-9", tmp_path / "log.db", status_interval_s=-1.0)


@pytest.mark.parametrize(
    ("backend", "built"),
    [("backend: bumble, transport: 'usb:0'", False), ("backend: bluez", True)],
)
def test_the_ble_backend_decides_the_extra_the_gateway_needs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str, built: bool
) -> None:
    # A `[ble]` install, bumble absent (None in sys.modules marks a module as not
    # importable): a BlueZ gateway builds its source, a bumble one names `[bumble]`.
    monkeypatch.setitem(sys.modules, "bumble", None)
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"unit: car-9\nlog: {tmp_path / 'log.db'}\n"
        f"ble: {{{backend}, keystore: keys.yaml, counters: {tmp_path / 'counters.db'}}}\n"
    )
    Keystore().save(tmp_path / "keys.yaml")  # made by `keys new-sensor`; none: a config error
    cfg, _ = load_gateway_config(path)
    if built:
        assert [source.name for source in trigger_sources(cfg, path)] == ["ble"]
        return
    with pytest.raises(MissingExtra) as caught:
        trigger_sources(cfg, path)
    assert (caught.value.package, caught.value.extra) == ("bumble", "bumble")
    assert str(caught.value).startswith(f"{path}: ble: backend bumble needs bumble")


def test_a_missing_keystore_stops_the_ble_source_naming_the_command_that_makes_it(
    tmp_path: Path,
) -> None:
    # It used to load as an empty keystore: a gateway that refused every sensor, silently.
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"unit: car-9\nlog: {tmp_path / 'log.db'}\n"
        f"ble: {{backend: bluez, keystore: keys.yaml, counters: {tmp_path / 'counters.db'}}}\n"
    )
    cfg, _ = load_gateway_config(path)
    with pytest.raises(ConfigError) as caught:
        trigger_sources(cfg, path)
    keystore = tmp_path / "keys.yaml"
    assert caught.value.problems == (
        (
            "ble.keystore",
            f"{keystore}: no such keystore (make it with `trigger-mesh keys new-sensor "
            f"--keystore {keystore} --kind KIND --unit UNIT --key-file FILE`)",
        ),
    )
    assert not keystore.exists()
