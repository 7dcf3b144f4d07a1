"""Building adverts for tests: what a scanner would hand the decoders."""

from __future__ import annotations

from bleak.backends.scanner import AdvertisementData

from triggers.ble.adparse import to_advertisement_data
from triggers.ble.format import (
    DEV_COMPANY_ID,
    SensorAdvert,
    SensorEvent,
    SensorKind,
    encode_advertising_data,
)

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))


def advert(
    counter: int = 1,
    *,
    sensor_id: int = 1001,
    kind: SensorKind = SensorKind.HOLSTER,
    event: SensorEvent = SensorEvent.DRAW,
    battery: int | None = 88,
) -> SensorAdvert:
    return SensorAdvert(sensor_id, kind, event, counter, battery)


def adv_data(raw: bytes, rssi: int = -50) -> AdvertisementData:
    return to_advertisement_data(raw, rssi)


def signed(
    counter: int = 1,
    *,
    key: bytes = KEY,
    company_id: int = DEV_COMPANY_ID,
    rssi: int = -50,
    **fields: object,
) -> AdvertisementData:
    raw = encode_advertising_data(advert(counter, **fields), key, company_id)  # type: ignore[arg-type]
    return adv_data(raw, rssi)


def axon_like(serial: bytes = b"TESTSER01") -> bytes:
    """An advert laid out like the public Axon Signal descriptions: Flags, then service data
    under 0xFE6C: byte 0 = 0x01, bytes 1-9 the serial, 14 more bytes we do not interpret."""
    payload = bytes([0x01]) + serial + bytes(14)
    body = (0xFE6C).to_bytes(2, "little") + payload
    return bytes([0x02, 0x01, 0x06, len(body) + 1, 0x16]) + body
