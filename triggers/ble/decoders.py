"""Advert decoders: pure functions from (address, RSSI, advertisement data) to a decoded
observation, a rejection with a reason, or nothing (not ours).

The registry tries each decoder in turn; the first that recognises the advert decides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple, TypeAlias

from mesh.protocol.models import TriggerKind
from triggers.ble.adparse import uuid16
from triggers.ble.format import (
    EVENT_NAMES,
    KIND_NAMES,
    FormatError,
    SensorEvent,
    SensorKind,
    Verifier,
    is_ours,
    parse_payload,
)
from triggers.ble.keystore import Keystore

if TYPE_CHECKING:  # bleak is the [ble] extra: a gateway config loads without it
    from bleak.backends.scanner import AdvertisementData

# What each sensor event means to the mesh; events not listed are information only
# (holstered, safe, rack locked, heartbeat …): they update health, they start nothing.
TRIGGERS: dict[tuple[SensorKind, SensorEvent], TriggerKind] = {
    (SensorKind.HOLSTER, SensorEvent.DRAW): TriggerKind.WEAPON_DRAW,
    (SensorKind.TASER, SensorEvent.ARM): TriggerKind.TASER_ARM,
    (SensorKind.TASER, SensorEvent.TRIGGER_PULL): TriggerKind.TASER_ARM,
    (SensorKind.TASER, SensorEvent.ARC): TriggerKind.TASER_ARM,
    (SensorKind.LONG_GUN_RACK, SensorEvent.RACK_UNLOCK): TriggerKind.GUN_RACK,
    (SensorKind.LONG_GUN_RACK, SensorEvent.RACK_REMOVED): TriggerKind.GUN_RACK,
    (SensorKind.MAN_DOWN, SensorEvent.DOWN): TriggerKind.MAN_DOWN,
    (SensorKind.GENERIC_INPUT, SensorEvent.INPUT_ON): TriggerKind.MANUAL,
}


class Observation(NamedTuple):
    """A recognised, and (where the format allows) authenticated, sensor advert."""

    decoder: str
    sensor_id: str
    unit_id: str
    officer: str
    sensor_kind: str
    event: str
    trigger_kind: TriggerKind | None  # None: information only
    counter: int | None  # None: the format has no counter (legacy devices)
    battery_pct: int | None
    authenticated: bool
    address: str
    rssi: int
    low_battery: bool = False
    tamper: bool = False


@dataclass(frozen=True)
class AdvertRejection:
    decoder: str
    code: str
    reason: str
    address: str
    sensor_id: str | None = None


Decoded = Observation | AdvertRejection | None
Decoder: TypeAlias = "Callable[[str, int, AdvertisementData], Decoded]"


def sensor_decoder(keystore: Keystore, company_id: int) -> Decoder:
    """Format v1 (docs/ble-format.md): structure, keystore, MAC, kind — in that order, so
    nothing an unauthenticated advert claims is believed before its MAC is checked."""
    verifiers: dict[int, Verifier] = {}

    def verifier(sensor_id: int, key: bytes) -> Verifier:
        found = verifiers.get(sensor_id)
        if found is None:
            found = verifiers[sensor_id] = Verifier(key, company_id)
        return found

    def decode(address: str, rssi: int, adv: AdvertisementData) -> Decoded:
        payload = adv.manufacturer_data.get(company_id)
        if payload is None or not is_ours(payload):
            return None
        try:
            advert, signed, tag = parse_payload(payload)
        except FormatError as exc:
            return AdvertRejection("tm-v1", exc.code, exc.reason, address)
        sensor_id = str(advert.sensor_id)
        sensor = keystore.get(advert.sensor_id)
        if sensor is None:
            return AdvertRejection(
                "tm-v1",
                "unknown_sensor",
                f"sensor {sensor_id} is not in the keystore",
                address,
                sensor_id,
            )
        if not verifier(advert.sensor_id, sensor.key).verify(signed, tag):
            return AdvertRejection(
                "tm-v1",
                "bad_mac",
                f"MAC does not verify for sensor {sensor_id}",
                address,
                sensor_id,
            )
        if advert.kind is not sensor.kind:
            return AdvertRejection(
                "tm-v1",
                "kind_mismatch",
                f"advert says {advert.kind.name.lower()}, keystore says {sensor.kind.name.lower()}",
                address,
                sensor_id,
            )
        return Observation(
            decoder="tm-v1",
            sensor_id=sensor_id,
            unit_id=sensor.unit_id,
            officer=sensor.officer,
            sensor_kind=KIND_NAMES[advert.kind],
            event=EVENT_NAMES[advert.event],
            trigger_kind=TRIGGERS.get((advert.kind, advert.event)),
            counter=advert.counter,
            battery_pct=advert.battery_pct,
            authenticated=True,
            address=address,
            rssi=rssi,
            low_battery=advert.low_battery,
            tamper=advert.tamper,
        )

    return decode


# Axon Signal devices broadcast service data under 16-bit UUID 0xFE6C (assigned to TASER
# International). The only public description of the payload is the AxonCadabra spoofer
# (github.com/WithLoveFromMinneapolis/AxonCadabra, MainActivity.kt): 24 bytes, byte 0
# 0x01, bytes 1-9 ASCII (read as the device serial by a Flipper port); nothing is
# authenticated and a captured advert can be replayed. See docs/ble-format.md.
AXON_SIGNAL_UUID = uuid16(0xFE6C)


@dataclass(frozen=True)
class LegacyDevice:
    trigger_kind: TriggerKind
    unit_id: str
    officer: str = ""


def axon_signal_decoder(allow: Mapping[str, LegacyDevice]) -> Decoder:
    """Unauthenticated legacy broadcasts, only from serials an agency allow-listed."""

    def decode(address: str, rssi: int, adv: AdvertisementData) -> Decoded:
        payload = adv.service_data.get(AXON_SIGNAL_UUID)
        if payload is None:
            return None
        if len(payload) < 10:
            return AdvertRejection(
                "axon-signal", "truncated", f"{len(payload)} bytes of service data", address
            )
        raw = payload[1:10]
        serial = (
            raw.decode("ascii")
            if raw.isascii() and raw.decode("ascii").isprintable()
            else raw.hex()
        )
        device = allow.get(serial)
        if device is None:
            return AdvertRejection(
                "axon-signal",
                "not_allowed",
                f"serial {serial} is not on the legacy allow-list",
                address,
                serial,
            )
        return Observation(
            decoder="axon-signal",
            sensor_id=f"axon:{serial}",
            unit_id=device.unit_id,
            officer=device.officer,
            sensor_kind="axon_signal",
            event="signal",
            trigger_kind=device.trigger_kind,
            counter=None,
            battery_pct=None,
            authenticated=False,
            address=address,
            rssi=rssi,
        )

    return decode


class DecoderRegistry:
    def __init__(self, decoders: Sequence[tuple[str, Decoder]]) -> None:
        self.decoders = list(decoders)

    def decode(self, address: str, rssi: int, adv: AdvertisementData) -> Decoded:
        for _name, decoder in self.decoders:
            result = decoder(address, rssi, adv)
            if result is not None:
                return result
        return None
