"""Advertising data (the AD structures of Core spec Vol 3 Part C §11) to bleak's
AdvertisementData, the way bleak's BlueZ backend presents it: 128-bit lowercase UUID
strings, manufacturer data keyed by company id. Pure and total: malformed input yields
what could be read, never an exception (an advert is untrusted radio input)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bleak.backends.scanner import AdvertisementData

_BASE_UUID_TAIL = "-0000-1000-8000-00805f9b34fb"


def uuid16(value: int) -> str:
    return f"0000{value:04x}{_BASE_UUID_TAIL}"


def _uuid32(value: int) -> str:
    return f"{value:08x}{_BASE_UUID_TAIL}"


def _uuid128(little_endian: bytes) -> str:
    h = little_endian[::-1].hex()
    return f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def ad_structures(data: bytes) -> list[tuple[int, bytes]]:
    """(type, value) pairs; stops at a zero length (padding) or a structure that overruns."""
    data = bytes(data)  # one copy, so every slice below is already bytes
    out = []
    i, end = 0, len(data)
    while i < end:
        length = data[i]
        nxt = i + 1 + length
        if length == 0 or nxt > end:
            break
        out.append((data[i + 1], data[i + 2 : nxt]))
        i = nxt
    return out


def to_advertisement_data(
    data: bytes, rssi: int, platform_data: tuple[Any, ...] = ()
) -> AdvertisementData:
    # bleak (the [ble] extra) only here: uuid16 above serves the decoders without it.
    from bleak.backends.scanner import AdvertisementData

    local_name: str | None = None
    manufacturer: dict[int, bytes] = {}
    service_data: dict[str, bytes] = {}
    uuids: list[str] = []
    tx_power: int | None = None
    for ad_type, value in ad_structures(data):
        if ad_type == 0xFF and len(value) >= 2:
            manufacturer[int.from_bytes(value[:2], "little")] = value[2:]
        elif ad_type == 0x16 and len(value) >= 2:
            service_data[uuid16(int.from_bytes(value[:2], "little"))] = value[2:]
        elif ad_type == 0x20 and len(value) >= 4:
            service_data[_uuid32(int.from_bytes(value[:4], "little"))] = value[4:]
        elif ad_type == 0x21 and len(value) >= 16:
            service_data[_uuid128(value[:16])] = value[16:]
        elif ad_type in (0x02, 0x03):
            uuids += [
                uuid16(int.from_bytes(value[k : k + 2], "little"))
                for k in range(0, len(value) - 1, 2)
            ]
        elif ad_type in (0x04, 0x05):
            uuids += [
                _uuid32(int.from_bytes(value[k : k + 4], "little"))
                for k in range(0, len(value) - 3, 4)
            ]
        elif ad_type in (0x06, 0x07):
            uuids += [_uuid128(value[k : k + 16]) for k in range(0, len(value) - 15, 16)]
        elif ad_type in (0x08, 0x09):
            local_name = value.decode("utf-8", errors="replace")
        elif ad_type == 0x0A and len(value) == 1:
            tx_power = int.from_bytes(value, "little", signed=True)
    return AdvertisementData(
        local_name=local_name,
        manufacturer_data=manufacturer,
        service_data=service_data,
        service_uuids=uuids,
        tx_power=tx_power,
        rssi=rssi,
        platform_data=platform_data,
    )
