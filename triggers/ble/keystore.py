"""Sensor keys: the gateway's keystore and the sensor's own key file.

The keystore (YAML, mode 0600) maps a sensor id to its key, kind, unit and officer:

    sensors:
      1001: {kind: holster, unit: car-12, officer: "Ofc. Rivera #4411", key: "<64 hex>"}

A sensor (or ``trigger-mesh ble-sensor``) holds a key file (JSON, mode 0600) with its id,
kind, key, company id and the counter of its last advert, so the counter keeps rising
across runs.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mesh.documents import DocumentError, load_json, load_yaml
from mesh.protocol.codec import type_name
from triggers.ble.format import DEV_COMPANY_ID, KEY_LEN, SensorKind

# Unit ids end up in MQTT topics: the same rule as mesh.protocol.models.Ident.
_IDENT = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class KeystoreError(ValueError):
    pass


@dataclass(frozen=True)
class SensorKey:
    sensor_id: int
    kind: SensorKind
    unit_id: str
    officer: str
    key: bytes


def kind_from_name(name: str) -> SensorKind:
    try:
        return SensorKind[name.upper()]
    except KeyError:
        names = ", ".join(k.name.lower() for k in SensorKind)
        raise KeystoreError(f"unknown sensor kind {name!r} (one of {names})") from None


def _write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


class Keystore:
    def __init__(self, sensors: dict[int, SensorKey] | None = None) -> None:
        self.sensors: dict[int, SensorKey] = dict(sensors or {})

    def get(self, sensor_id: int) -> SensorKey | None:
        return self.sensors.get(sensor_id)

    def __len__(self) -> int:
        return len(self.sensors)

    @classmethod
    def load(cls, path: Path | str, *, missing_ok: bool = False) -> Keystore:
        """The keystore at ``path``. A missing file is an error: a gateway with an empty
        keystore refuses every sensor and nobody notices. Only the command that adds
        sensors (``keys new-sensor``) starts from nothing, with ``missing_ok``."""
        path = Path(path)
        try:
            found = path.exists()
        except OSError as exc:  # e.g. a name too long for the file system
            raise KeystoreError(f"{path}: {exc.strerror or exc}") from None
        if not found:
            if missing_ok:
                return cls()
            raise KeystoreError(
                f"{path}: no such keystore (make it with `trigger-mesh keys new-sensor "
                f"--keystore {path} --kind KIND --unit UNIT --key-file FILE`)"
            )
        try:
            data = load_yaml(path) or {}
        except DocumentError as exc:
            raise KeystoreError(f"{path}: {exc}") from None
        entries = data.get("sensors") if isinstance(data, dict) else None
        if not isinstance(entries, dict):
            raise KeystoreError(f"{path}: expected a mapping under 'sensors'")
        sensors = {}
        for raw_id, entry in entries.items():
            sensor = _sensor_entry(raw_id, entry, f"{path}: sensors.{raw_id}")
            sensors[sensor.sensor_id] = sensor
        return cls(sensors)

    def save(self, path: Path | str) -> None:
        body: dict[str, Any] = {
            "sensors": {
                s.sensor_id: {
                    "kind": s.kind.name.lower(),
                    "unit": s.unit_id,
                    "officer": s.officer,
                    "key": s.key.hex(),
                }
                for s in sorted(self.sensors.values(), key=lambda s: s.sensor_id)
            }
        }
        header = "# trigger-mesh sensor keystore: keep it secret (mode 0600)\n"
        _write_private(Path(path), header + yaml.safe_dump(body, sort_keys=False))

    def provision(
        self,
        kind: SensorKind,
        unit_id: str,
        *,
        officer: str = "",
        sensor_id: int | None = None,
    ) -> SensorKey:
        """Add a sensor with a fresh random key (and a random free id if none is given)."""
        if sensor_id is None:
            sensor_id = secrets.randbelow(2**32 - 1) + 1
            while sensor_id in self.sensors:
                sensor_id = secrets.randbelow(2**32 - 1) + 1
        elif sensor_id in self.sensors:
            raise KeystoreError(f"sensor {sensor_id} is already in the keystore")
        elif not 0 < sensor_id < 2**32:
            raise KeystoreError(f"sensor id {sensor_id} must be in 1..{2**32 - 1}")
        if not _IDENT.fullmatch(unit_id):
            raise KeystoreError(f"unit {unit_id!r} is not a valid unit id")
        sensor = SensorKey(sensor_id, kind, unit_id, officer, secrets.token_bytes(KEY_LEN))
        self.sensors[sensor_id] = sensor
        return sensor


@dataclass
class SensorKeyFile:
    """What a sensor keeps: its identity, its key, and its last counter."""

    sensor_id: int
    kind: SensorKind
    key: bytes
    company_id: int = DEV_COMPANY_ID
    counter: int = 0

    @classmethod
    def of(cls, sensor: SensorKey, company_id: int = DEV_COMPANY_ID) -> SensorKeyFile:
        return cls(sensor.sensor_id, sensor.kind, sensor.key, company_id)

    @classmethod
    def load(cls, path: Path | str) -> SensorKeyFile:
        path = Path(path)
        try:
            data = load_json(path)
        except DocumentError as exc:
            raise KeystoreError(f"{path}: not a sensor key file: {exc}") from None
        if not isinstance(data, dict):
            raise KeystoreError(
                f"{path}: not a sensor key file: expected a JSON object, got {type_name(data)}"
            )
        try:
            return cls(
                sensor_id=_integer(data, "sensor_id", 2**32 - 1),
                kind=kind_from_name(_text(data, "kind")),
                key=_key(_text(data, "key")),
                company_id=_integer(data, "company_id", 0xFFFF, DEV_COMPANY_ID),
                counter=_integer(data, "counter", 2**32 - 1, 0),
            )
        except KeystoreError as exc:
            raise KeystoreError(f"{path}: not a sensor key file: {exc}") from None

    def save(self, path: Path | str) -> None:
        body = {
            "sensor_id": self.sensor_id,
            "kind": self.kind.name.lower(),
            "key": self.key.hex(),
            "company_id": self.company_id,
            "counter": self.counter,
        }
        _write_private(Path(path), json.dumps(body, indent=2) + "\n")


# --- reading entries written by hand -------------------------------------------------------
def _sensor_entry(raw_id: object, entry: object, where: str) -> SensorKey:
    """One ``sensors:`` entry of the keystore, checked field by field."""
    if not isinstance(entry, dict):
        raise KeystoreError(
            f"{where}: expected a mapping of kind, unit, key (and officer), got {type_name(entry)}"
        )
    try:
        sensor_id = _sensor_id(raw_id)
        kind = kind_from_name(_text(entry, "kind"))
        unit = _text(entry, "unit", numbers=True)
        officer = _text(entry, "officer", numbers=True, default="")
        key = _key(_text(entry, "key"))
    except KeystoreError as exc:
        raise KeystoreError(f"{where}: {exc}") from None
    if not _IDENT.fullmatch(unit):
        raise KeystoreError(f"{where}: unit {unit!r} is not a valid unit id")
    return SensorKey(sensor_id=sensor_id, kind=kind, unit_id=unit, officer=officer, key=key)


def _sensor_id(raw: object) -> int:
    value: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit():
        value = int(raw)
    if value is None or not 0 <= value < 2**32:
        raise KeystoreError(f"sensor id must be an integer in 0..{2**32 - 1}")
    return value


def _text(
    entry: dict[Any, Any], name: str, *, numbers: bool = False, default: str | None = None
) -> str:
    """A text field; ``numbers``: a plain number is taken as its digits (unit: 12)."""
    if name not in entry or (entry[name] is None and default is not None):
        if default is None:
            raise KeystoreError(f"missing {name!r}")
        return default
    value = entry[name]
    if isinstance(value, str):
        return value
    if numbers and isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise KeystoreError(f"{name} must be text, not {type_name(value)}")


def _integer(entry: dict[Any, Any], name: str, maximum: int, default: int | None = None) -> int:
    value = entry.get(name, default)
    if value is None:
        raise KeystoreError(f"missing {name!r}")
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= maximum:
        raise KeystoreError(f"{name} must be an integer in 0..{maximum}")
    return value


def _key(text: str) -> bytes:
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise KeystoreError(f"key must be {KEY_LEN * 2} hex digits") from None
    if len(key) != KEY_LEN:
        raise KeystoreError(f"key must be {KEY_LEN} bytes ({KEY_LEN * 2} hex)")
    return key
