"""One way from a gateway's configuration to a Gateway.

The CLI (``trigger-mesh gateway``), the demo, the benchmarks and the tests all build their
gateway here, so a setting added to the config reaches every one of them. What the config
file names (the checkpoint key, the ``security:`` files, the BLE and CAN sources) is loaded
here unless the caller brings its own: the demo and the tests bring virtual radios and
buses, and keys made for the run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from bridge.mqtt.client import ProtocolChoice
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.clock import SYSTEM_CLOCK, Clock
from mesh.config import GatewayConfig, signing_key_path
from mesh.decide.policy import Policy
from mesh.decide.relay_cells import RelayLimits
from mesh.documents import ConfigError
from mesh.extras import require
from mesh.gateway.cell_relay import RelaySettings
from mesh.gateway.daemon import Gateway, GatewaySettings
from mesh.security.checks import Security, load_security

if TYPE_CHECKING:
    from mesh.journal.signer import CheckpointSigner
    from mesh.protocol.models import ActivationRecord, GeoPoint
    from triggers.source import TriggerSource


@dataclass(frozen=True)
class Overrides:
    """What a caller sets beyond the config file: the daemon's command-line options, or a
    test's tighter limits. ``None`` keeps the config's (or the default) value."""

    metrics_port: int | None = None
    systemd_notify: bool = False
    outbox_path: Path | None = None
    max_cameras: int = GatewaySettings.max_cameras
    camera_expiry_s: float = GatewaySettings.camera_expiry_s


def config_in_code(
    unit: str,
    log_path: Path,
    *,
    gateway_id: str | None = None,
    topics: Topics | None = None,
    position: GeoPoint | None = None,
    status_interval_s: float | None = None,
    checkpoint_interval_s: float | None = None,
    retention_days: float | None = None,
    retention_check_s: float | None = None,
    sync_log: bool = False,
    sync_interval_s: float | None = None,
    metrics_port: int | None = None,
    relay: Mapping[str, object] | None = None,
) -> GatewayConfig:
    """A gateway config made in code (the demo, the benchmarks, the tests), validated as a
    file's would be. Unlike a file's default, retention is off unless ``retention_days``
    is given: a run's log is kept whole. What is not given keeps the file's default."""
    document: dict[str, object] = {
        "unit": unit,
        "log": str(log_path),
        "sync_log": sync_log,
    }
    optional = {
        "gateway_id": gateway_id,
        "topic_prefix": None if topics is None else topics.prefix,
        "position": position,
        "status_interval_s": status_interval_s,
        "sync_interval_s": sync_interval_s,
    }
    document |= {key: value for key, value in optional.items() if value is not None}
    audit = {"checkpoint_interval_s": checkpoint_interval_s, "retention_check_s": retention_check_s}
    document["audit"] = {"retention_days": retention_days} | {
        key: value for key, value in audit.items() if value is not None
    }
    if metrics_port is not None:
        document["metrics"] = {"port": metrics_port}
    if relay is not None:
        document["relay"] = dict(relay)
    return GatewayConfig.model_validate(document)


def load_signer(cfg: GatewayConfig, config_path: Path) -> CheckpointSigner | None:
    """The checkpoint key ``audit.signing_key`` names, or None; ConfigError if it is bad."""
    from mesh.journal.signer import CheckpointSigner
    from mesh.security.keys import KeyFileError

    key_path = signing_key_path(cfg, config_path)
    if key_path is None:
        return None
    try:
        return CheckpointSigner.from_file(key_path)
    except KeyFileError as exc:
        raise ConfigError(config_path, "audit.signing_key", str(exc)) from None


def trigger_sources(cfg: GatewayConfig, config_path: Path) -> list[TriggerSource]:
    """The BLE and CAN sources the config enables; ConfigError naming the key if one
    cannot be built."""
    sources: list[TriggerSource] = []
    if cfg.ble is not None and cfg.ble.enabled:
        # bluez scans through bleak alone; bumble opens the HCI controller itself.
        require(cfg.ble.extra, f"{config_path}: ble: backend {cfg.ble.backend}")
        from triggers.ble.factory import build_source
        from triggers.ble.keystore import KeystoreError

        try:
            sources.append(build_source(cfg.ble, config_path))
        except KeystoreError as exc:
            raise ConfigError(config_path, "ble.keystore", str(exc)) from None
    if cfg.can is not None and cfg.can.enabled:
        require("can", f"{config_path}: can:")
        from triggers.can.factory import build_source as build_can_source
        from triggers.can.rules import RulesError

        try:
            sources.append(build_can_source(cfg.can, config_path, cfg.unit))
        except RulesError as exc:
            raise ConfigError(config_path, "can", str(exc)) from None
    return sources


def gateway_settings(
    cfg: GatewayConfig,
    policy: Policy,
    *,
    signer: CheckpointSigner | None,
    security: Security,
    overrides: Overrides = Overrides(),
) -> GatewaySettings:
    """The daemon's settings from its config (every field of it, in one place)."""
    return GatewaySettings(
        unit_id=cfg.unit,
        gateway_id=cfg.resolved_gateway_id,
        log_path=Path(cfg.log),
        topics=Topics(cfg.topic_prefix),
        position=cfg.position,
        policy=policy,
        status_interval_s=cfg.status_interval_s,
        signer=signer,
        checkpoint_interval_s=cfg.audit.checkpoint_interval_s,
        retention_days=cfg.audit.retention_days,
        retention_check_s=cfg.audit.retention_check_s,
        sync_log=cfg.sync_log,
        sync_interval_s=cfg.sync_interval_s,
        security=security,
        metrics_port=cfg.metrics.port if overrides.metrics_port is None else overrides.metrics_port,
        metrics_host=cfg.metrics.host,
        systemd_notify=overrides.systemd_notify,
        outbox_path=overrides.outbox_path,
        max_cameras=overrides.max_cameras,
        camera_expiry_s=overrides.camera_expiry_s,
        relay=None
        if cfg.relay is None
        else RelaySettings(
            BrokerUrl.parse(cfg.relay.url),
            RelayLimits(
                margin_m=cfg.relay.margin_m,
                hold_s=cfg.relay.hold_s,
                max_cells=cfg.relay.max_cells,
            ),
        ),
    )


def build_gateway(
    cfg: GatewayConfig,
    policy: Policy,
    *,
    url: BrokerUrl,
    config_path: Path | None = None,
    protocol: ProtocolChoice = "auto",
    sources: Sequence[TriggerSource] | None = None,
    signer: CheckpointSigner | None = None,
    security: Security | None = None,
    overrides: Overrides = Overrides(),
    clock: Clock = SYSTEM_CLOCK,
    client_id: str | None = None,
    on_finished: Callable[[ActivationRecord], None] | None = None,
) -> Gateway:
    """A gateway ready to ``run()``. With ``config_path``, what the config names and the
    caller does not bring (sources, checkpoint key, security files) is loaded from it;
    without one, nothing is loaded: no sources, no key, no security unless given.
    ConfigError names the file and key of anything that cannot be loaded."""
    if config_path is not None:
        if sources is None:
            sources = trigger_sources(cfg, config_path)
        if signer is None:
            signer = load_signer(cfg, config_path)
        if security is None:
            security = load_security(cfg.security, config_path)
    settings = gateway_settings(
        cfg, policy, signer=signer, security=security or Security(), overrides=overrides
    )
    return Gateway(
        settings,
        url=url,
        protocol=protocol,
        clock=clock,
        sources=sources or (),
        on_finished=on_finished,
        client_id=client_id,
    )
