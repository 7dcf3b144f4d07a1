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

from triggers.ble.format import DEV_COMPANY_ID, KEY_LEN, SensorKind

# Unit ids end up in MQTT topics: the same rule as mesh.models.Ident.
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
    def load(cls, path: Path | str) -> Keystore:
        path = Path(path)
        if not path.exists():
            return cls()
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise KeystoreError(f"{path}: not valid YAML: {exc}") from None
        entries = data.get("sensors") if isinstance(data, dict) else None
        if not isinstance(entries, dict):
            raise KeystoreError(f"{path}: expected a mapping under 'sensors'")
        sensors = {}
        for raw_id, entry in entries.items():
            where = f"{path}: sensors.{raw_id}"
            try:
                sensor_id = int(raw_id)
                key = bytes.fromhex(str(entry["key"]))
                sensor = SensorKey(
                    sensor_id=sensor_id,
                    kind=kind_from_name(str(entry["kind"])),
                    unit_id=str(entry["unit"]),
                    officer=str(entry.get("officer", "")),
                    key=key,
                )
            except KeyError as exc:
                raise KeystoreError(f"{where}: missing {exc.args[0]!r}") from None
            except (TypeError, ValueError) as exc:
                raise KeystoreError(f"{where}: {exc}") from None
            if not 0 <= sensor_id < 2**32:
                raise KeystoreError(f"{where}: sensor id must fit in 32 bits")
            if not _IDENT.fullmatch(sensor.unit_id):
                raise KeystoreError(f"{where}: unit {sensor.unit_id!r} is not a valid unit id")
            if len(key) != KEY_LEN:
                raise KeystoreError(f"{where}: key must be {KEY_LEN} bytes ({KEY_LEN * 2} hex)")
            sensors[sensor_id] = sensor
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
            data = json.loads(path.read_text())
            return cls(
                sensor_id=int(data["sensor_id"]),
                kind=kind_from_name(str(data["kind"])),
                key=bytes.fromhex(data["key"]),
                company_id=int(data.get("company_id", DEV_COMPANY_ID)),
                counter=int(data.get("counter", 0)),
            )
        except OSError as exc:
            raise KeystoreError(f"{path}: {exc.strerror or exc}") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise KeystoreError(f"{path}: not a sensor key file ({exc})") from None

    def save(self, path: Path | str) -> None:
        body = {
            "sensor_id": self.sensor_id,
            "kind": self.kind.name.lower(),
            "key": self.key.hex(),
            "company_id": self.company_id,
            "counter": self.counter,
        }
        _write_private(Path(path), json.dumps(body, indent=2) + "\n")
