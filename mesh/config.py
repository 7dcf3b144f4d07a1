"""Configuration files (YAML) for the gateway, a camera and the agency policy.

A bad file is rejected with a ConfigError naming the file, the key and the problem;
the CLI turns that into exit status 2.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bridge.mqtt.urls import BrokerUrl
from bridge.topics import DEFAULT_PREFIX, Topics
from mesh.decide.policy import Policy
from mesh.documents import ConfigError, read_yaml, validate
from mesh.media import SourceKind, parse_resolution, parse_source
from mesh.protocol.models import BleAddress, CameraRole, GeoPoint, Ident
from mesh.security.checks import SecurityConfig
from triggers.ble.settings import BleConfig
from triggers.can.settings import CanConfig

C = TypeVar("C", bound=BaseModel)


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Connection(_Config):
    """Where to find the broker and which topic prefix to use."""

    broker: str = "embedded"
    topic_prefix: str = DEFAULT_PREFIX

    @field_validator("broker")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        if value != "embedded":
            # ValueError naming what is wrong: the URL, or a TLS file (?ca=, cert=, key=,
            # relative to the working directory, as the daemon reads them) that cannot be
            # read or used; a daemon's link would otherwise die on it at its first connect.
            BrokerUrl.parse(value).tls_context()
        return value

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        Topics(value)
        return value


class AuditConfig(_Config):
    """Tamper evidence and retention of the gateway's activation log (docs/audit.md)."""

    # The Ed25519 key from `trigger-mesh keys new-gateway` (relative to the config file).
    # Without one the chain is kept but never signed: `audit verify` calls it all unsigned.
    signing_key: str | None = None
    checkpoint_interval_s: Annotated[float, Field(gt=0, le=86_400)] = 60.0
    # Records older than this are removed unless a legal hold keeps them; null keeps all.
    retention_days: Annotated[float, Field(gt=0)] | None = 365.0
    retention_check_s: Annotated[float, Field(gt=0)] = 3600.0


class MetricsConfig(_Config):
    """``/metrics`` and ``/health`` over HTTP (docs/observability.md); off without a port."""

    port: Annotated[int, Field(ge=0, le=65535)] | None = None
    # An address of this machine: loopback unless a scraper elsewhere must reach it.
    host: str = "127.0.0.1"

    @field_validator("host")
    @classmethod
    def _address(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an IP address to listen on") from None
        return value


class RelayConfig(_Config):
    """The cell relay (docs/broker.md § The cell relay): a car's gateway relays the
    geo-cell commands of the cells around the car from and to the central broker."""

    # Central's URL, with the relay's own credential (user tm-relay-{gateway_id}).
    url: str
    # Cells within this of a camera's fix or the gateway's position are relayed.
    margin_m: Annotated[float, Field(ge=0, le=5_000)] = 500.0
    # A cell no longer wanted is kept this long (no churn at a cell's edge).
    hold_s: Annotated[float, Field(ge=0, le=3_600)] = 60.0
    # At most this many cells; over it, those nearest the car (the rest counted).
    max_cells: Annotated[int, Field(ge=1, le=1024)] = 64

    @field_validator("url")
    @classmethod
    def _central_url(cls, value: str) -> str:
        BrokerUrl.parse(value).tls_context()
        return value


class GatewayConfig(_Connection):
    unit: Ident
    gateway_id: Ident | None = None
    # Relative to the working directory: it is data, not configuration (under systemd, the
    # service's state directory). The gateway creates no directory for it.
    log: str = "activations.db"
    position: GeoPoint | None = None
    # Inline rules, or a policy file (relative to this config file), or the built-in policy.
    policy: Policy | str | None = None
    status_interval_s: Annotated[float, Field(gt=0)] = 30.0
    # BLE trigger sensors heard by this gateway (docs/ble-format.md); none if absent.
    ble: BleConfig | None = None
    # The vehicle's CAN bus and its trigger rules (docs/can-rules.md); none if absent.
    can: CanConfig | None = None
    audit: AuditConfig = AuditConfig()
    # Send the activation log to the central archive whenever the broker is reachable
    # (docs/archive.md); off unless an archiver runs somewhere on the broker.
    sync_log: bool = False
    sync_interval_s: Annotated[float, Field(gt=0)] = 5.0
    security: SecurityConfig = SecurityConfig()
    metrics: MetricsConfig = MetricsConfig()
    relay: RelayConfig | None = None

    @property
    def resolved_gateway_id(self) -> str:
        return self.gateway_id or f"gw-{self.unit}"


class RecorderStorage(_Config):
    """Where an FFmpeg recorder writes (docs/config.md#recorder)."""

    # Relative to the working directory, like the gateway's log: it must exist and be
    # writable; the recorder makes <dir>/<camera_id>/buffer and /recordings in it.
    dir: str = "recordings"
    # The cap on buffer plus recordings; past it the oldest buffer segments go first, and
    # a recording that cannot go on stops (low_disk). null: no cap but min_free_bytes.
    max_bytes: Annotated[int, Field(gt=0)] | None = None
    min_free_bytes: Annotated[int, Field(ge=0)] = 256 * 1024 * 1024


class RecorderConfig(_Config):
    """The camera's recorder: simulated (no files) or FFmpeg (real video)."""

    backend: Literal["simulated", "ffmpeg"] = "simulated"
    # /dev/videoN, rtsp://… (or rtsps, rtp, udp, srt), or lavfi:NAME[=OPTIONS]
    source: str | None = None
    buffer_s: Annotated[float, Field(ge=0, le=120)] = 120.0
    segment_s: Annotated[float, Field(ge=0.2, le=10)] = 1.0
    storage: RecorderStorage = RecorderStorage()
    # copy: record the stream as it comes (encoded sources); h264: encode with libx264;
    # auto: copy for network URLs, h264 for devices and test sources.
    codec: Literal["auto", "copy", "h264"] = "auto"
    resolution: str | None = None  # WIDTHxHEIGHT: capture size (devices, test sources)
    fps: Annotated[int, Field(ge=1, le=120)] = 30
    preset: Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium"] = "ultrafast"
    bitrate: Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?[kM]?$")] | None = None
    source_timeout_s: Annotated[float, Field(gt=0, le=60)] = 3.0
    ffmpeg: str = "ffmpeg"  # the binary (a name on PATH, or a path)
    # What records, as the evidence manifests name it (docs/security.md).
    device_model: Annotated[str, Field(max_length=256)] = ""  # make and model
    device_serial: Annotated[str, Field(max_length=256)] = ""

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        if value is not None:
            parse_source(value)
        return value

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, value: str | None) -> str | None:
        if value is not None:
            parse_resolution(value)
        return value

    @model_validator(mode="after")
    def _coherent(self) -> RecorderConfig:
        if self.backend == "ffmpeg":
            if self.source is None:
                raise ValueError("backend ffmpeg needs a source")
            if self.codec == "copy" and parse_source(self.source).kind is SourceKind.LAVFI:
                raise ValueError("a lavfi test source is raw video: codec copy cannot record it")
        return self

    @property
    def encode(self) -> bool:
        if self.codec == "auto":
            return self.source is None or not parse_source(self.source).encoded
        return self.codec == "h264"


class CameraConfig(_Connection):
    camera_id: Ident
    unit: Ident
    role: CameraRole = CameraRole.BODY
    broker: str = "mqtt://127.0.0.1:1883"
    position: GeoPoint | None = None
    accuracy_m: Annotated[float, Field(ge=0)] = 5.0
    pre_event_buffer_s: Annotated[float, Field(ge=0, le=600)] = 120.0
    record_s: Annotated[float, Field(gt=0)] = 300.0
    heartbeat_s: Annotated[float, Field(gt=0)] = 30.0
    officer: Annotated[str, Field(max_length=64)] | None = None
    groups: tuple[Ident, ...] = ()
    # The BLE address the camera advertises from: a gateway that hears it puts it at the car.
    ble_address: BleAddress | None = None
    security: SecurityConfig = SecurityConfig()
    recorder: RecorderConfig = RecorderConfig()
    # The local API's Unix socket (an officer's stop: `trigger-mesh recording stop`),
    # relative to this file's folder; none if absent.
    control_socket: str | None = None


def control_socket_path(config: CameraConfig, config_path: Path | str) -> Path | None:
    """The camera's control socket, resolved against the config file's folder."""
    if config.control_socket is None:
        return None
    path = Path(config.control_socket)
    return path if path.is_absolute() else Path(config_path).parent / path


def load_policy(path: Path | str) -> Policy:
    data = read_yaml(path)
    if isinstance(data, dict) and set(data) == {"policy"}:
        data = data["policy"]
    return validate(Policy, data or {}, path)


def load_gateway_config(path: Path | str) -> tuple[GatewayConfig, Policy]:
    """The gateway config and its effective policy (inline, from a file, or built in)."""
    config = read_gateway_config(path)
    return config, gateway_policy(config, path)


def read_gateway_config(path: Path | str) -> GatewayConfig:
    """The gateway config alone: a policy file it names is not read yet."""
    return validate(GatewayConfig, read_yaml(path), path)


def gateway_policy(config: GatewayConfig, path: Path | str) -> Policy:
    """The effective policy of a gateway config read from ``path``."""
    path = Path(path)
    if isinstance(config.policy, Policy):
        return config.policy
    if isinstance(config.policy, str):
        policy_path = Path(config.policy)
        if not policy_path.is_absolute():
            policy_path = path.parent / policy_path
        try:
            found = policy_path.exists()
        except OSError as exc:  # e.g. a name too long for the file system
            raise ConfigError(path, "policy", f"policy file: {exc.strerror or exc}") from None
        if not found:
            raise ConfigError(path, "policy", f"policy file {policy_path} does not exist")
        return load_policy(policy_path)
    return Policy()


def signing_key_path(config: GatewayConfig, config_path: Path | str) -> Path | None:
    """The gateway's signing key, resolved against the config file's folder."""
    if config.audit.signing_key is None:
        return None
    key = Path(config.audit.signing_key)
    return key if key.is_absolute() else Path(config_path).parent / key


def load_camera_config(path: Path | str) -> CameraConfig:
    return validate(CameraConfig, read_yaml(path), path)
