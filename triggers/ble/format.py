"""Sensor advert format v1 (docs/ble-format.md): pure encoding, decoding and MAC.

A legacy advert (31 bytes) carries two AD structures:

    02 01 06                       Flags: LE General Discoverable, BR/EDR not supported
    1B FF <cid lo> <cid hi>        Manufacturer Specific Data, company id little-endian,
          <24-byte payload>        then the payload below

Payload (big-endian integers):

    offset  size  field
    0       1     magic 0x54 ('T')
    1       1     format version (1)
    2       4     sensor id
    6       1     sensor kind
    7       1     event
    8       4     counter: +1 for every new advert content, repeats keep it
    12      1     battery % (0-100; 255 unknown)
    13      1     flags: bit 0 tamper, bit 1 sensor reports low battery; others 0
    14      10    MAC: HMAC-SHA256(key, DOMAIN || company id (2, LE) || payload[0:14])[:10]
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from enum import IntEnum
from typing import NamedTuple

MAGIC = 0x54
VERSION = 1
DEV_COMPANY_ID = 0xFFFF  # the Bluetooth SIG's "no company": for development and tests
PAYLOAD_LEN = 24
SIGNED_LEN = 14
MAC_LEN = 10
KEY_LEN = 32
DOMAIN = b"trigger-mesh/ble/v1"
FLAGS_AD = bytes([0x02, 0x01, 0x06])
AD_MANUFACTURER = 0xFF
BATTERY_UNKNOWN = 255
FLAG_TAMPER = 0x01
FLAG_LOW_BATTERY = 0x02
KNOWN_FLAGS = FLAG_TAMPER | FLAG_LOW_BATTERY
_HEADER = struct.Struct(">BBIBBIBB")


class SensorKind(IntEnum):
    HOLSTER = 1
    TASER = 2
    LONG_GUN_RACK = 3
    MAN_DOWN = 4
    GENERIC_INPUT = 5


class SensorEvent(IntEnum):
    DRAW = 0x01
    HOLSTERED = 0x02
    ARM = 0x11
    SAFE = 0x12
    TRIGGER_PULL = 0x13
    ARC = 0x14
    RACK_UNLOCK = 0x21
    RACK_LOCK = 0x22
    RACK_REMOVED = 0x23
    RACK_RETURNED = 0x24
    DOWN = 0x31
    UP = 0x32
    INPUT_ON = 0x41
    INPUT_OFF = 0x42
    HEARTBEAT = 0xF0


EVENTS_BY_KIND: dict[SensorKind, frozenset[SensorEvent]] = {
    SensorKind.HOLSTER: frozenset({SensorEvent.DRAW, SensorEvent.HOLSTERED}),
    SensorKind.TASER: frozenset(
        {SensorEvent.ARM, SensorEvent.SAFE, SensorEvent.TRIGGER_PULL, SensorEvent.ARC}
    ),
    SensorKind.LONG_GUN_RACK: frozenset(
        {
            SensorEvent.RACK_UNLOCK,
            SensorEvent.RACK_LOCK,
            SensorEvent.RACK_REMOVED,
            SensorEvent.RACK_RETURNED,
        }
    ),
    SensorKind.MAN_DOWN: frozenset({SensorEvent.DOWN, SensorEvent.UP}),
    SensorKind.GENERIC_INPUT: frozenset({SensorEvent.INPUT_ON, SensorEvent.INPUT_OFF}),
}


_KINDS = {k.value: k for k in SensorKind}
_EVENTS = {e.value: e for e in SensorEvent}
KIND_NAMES = {k: k.name.lower() for k in SensorKind}
EVENT_NAMES = {e: e.name.lower() for e in SensorEvent}


class FormatError(ValueError):
    """An advert that claims to be ours but is not well formed. ``code`` is stable."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class SensorAdvert(NamedTuple):
    # A NamedTuple, not a frozen dataclass: immutable as well, and several times cheaper
    # to build, which matters for a decoder that sees every advert in a busy street.
    sensor_id: int
    kind: SensorKind
    event: SensorEvent
    counter: int
    battery_pct: int | None
    tamper: bool = False
    low_battery: bool = False


def mac(key: bytes, company_id: int, signed: bytes) -> bytes:
    message = DOMAIN + company_id.to_bytes(2, "little") + signed
    return hmac.digest(key, message, hashlib.sha256)[:MAC_LEN]


class Verifier:
    """MAC checks for one key with the HMAC key schedule and the domain label computed
    once: each check is a copy, an update and a digest."""

    def __init__(self, key: bytes, company_id: int) -> None:
        self._base = hmac.new(key, DOMAIN + company_id.to_bytes(2, "little"), hashlib.sha256)

    def verify(self, signed: bytes, tag: bytes) -> bool:
        h = self._base.copy()
        h.update(signed)
        return hmac.compare_digest(h.digest()[:MAC_LEN], tag)


def encode_payload(advert: SensorAdvert, key: bytes, company_id: int = DEV_COMPANY_ID) -> bytes:
    """The 24-byte manufacturer-data payload (without the company id)."""
    if not 0 <= advert.counter < 2**32:
        raise ValueError("counter must fit in 32 bits")
    if not 0 <= advert.sensor_id < 2**32:
        raise ValueError("sensor id must fit in 32 bits")
    battery = BATTERY_UNKNOWN if advert.battery_pct is None else advert.battery_pct
    flags = (FLAG_TAMPER if advert.tamper else 0) | (FLAG_LOW_BATTERY if advert.low_battery else 0)
    signed = _HEADER.pack(
        MAGIC, VERSION, advert.sensor_id, advert.kind, advert.event, advert.counter, battery, flags
    )
    return signed + mac(key, company_id, signed)


def encode_advertising_data(
    advert: SensorAdvert, key: bytes, company_id: int = DEV_COMPANY_ID
) -> bytes:
    """The whole legacy advertising data (31 bytes, the most a legacy advert holds):
    Flags + Manufacturer Specific Data."""
    body = company_id.to_bytes(2, "little") + encode_payload(advert, key, company_id)
    return FLAGS_AD + bytes([len(body) + 1, AD_MANUFACTURER]) + body


def is_ours(payload: bytes) -> bool:
    """Cheap test: does this manufacturer payload claim to be a trigger-mesh sensor advert?"""
    return len(payload) >= 1 and payload[0] == MAGIC


def parse_payload(payload: bytes) -> tuple[SensorAdvert, bytes, bytes]:
    """Structure only: (advert, signed bytes, MAC). Raises FormatError; does not verify."""
    if len(payload) < PAYLOAD_LEN:
        raise FormatError("truncated", f"{len(payload)} bytes, a v1 payload has {PAYLOAD_LEN}")
    if len(payload) > PAYLOAD_LEN:
        raise FormatError("oversized", f"{len(payload)} bytes, a v1 payload has {PAYLOAD_LEN}")
    magic, version, sensor_id, kind, event, counter, battery, flags = _HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise FormatError("not_ours", f"magic 0x{magic:02x}")
    if version != VERSION:
        raise FormatError("wrong_version", f"format version {version}; this gateway reads 1")
    # Dict lookups, not Enum(value): this runs for every advert a busy street produces.
    sensor_kind = _KINDS.get(kind)
    if sensor_kind is None:
        raise FormatError("bad_kind", f"unknown sensor kind {kind}")
    sensor_event = _EVENTS.get(event)
    if sensor_event is None:
        raise FormatError("bad_event", f"unknown event 0x{event:02x}")
    if (
        sensor_event is not SensorEvent.HEARTBEAT
        and sensor_event not in EVENTS_BY_KIND[sensor_kind]
    ):
        raise FormatError(
            "bad_event",
            f"event {sensor_event.name.lower()} is not one a {sensor_kind.name.lower()} sends",
        )
    if battery > 100 and battery != BATTERY_UNKNOWN:
        raise FormatError("bad_battery", f"battery {battery} %")
    if flags & ~KNOWN_FLAGS:
        raise FormatError("bad_flags", f"reserved flag bits set (0x{flags:02x})")
    advert = SensorAdvert(
        sensor_id=sensor_id,
        kind=sensor_kind,
        event=sensor_event,
        counter=counter,
        battery_pct=None if battery == BATTERY_UNKNOWN else battery,
        tamper=bool(flags & FLAG_TAMPER),
        low_battery=bool(flags & FLAG_LOW_BATTERY),
    )
    return advert, payload[:SIGNED_LEN], payload[SIGNED_LEN:]


def verify(key: bytes, company_id: int, signed: bytes, tag: bytes) -> bool:
    return hmac.compare_digest(mac(key, company_id, signed), tag)
