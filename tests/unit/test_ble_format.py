"""Sensor advert format v1 (docs/ble-format.md) and the AD-structure parser."""

from __future__ import annotations

import pytest

from tests.ble_helpers import KEY, advert, axon_like
from triggers.ble.adparse import ad_structures, to_advertisement_data, uuid16
from triggers.ble.format import (
    MAC_LEN,
    PAYLOAD_LEN,
    FormatError,
    SensorAdvert,
    SensorEvent,
    SensorKind,
    encode_advertising_data,
    encode_payload,
    parse_payload,
    verify,
)


def test_advert_fits_a_legacy_31_byte_advert() -> None:
    raw = encode_advertising_data(advert(2**32 - 1, sensor_id=2**32 - 1), KEY)
    assert len(raw) == 31  # exactly what a legacy (BLE 4.x) advert can carry
    assert raw[:3] == bytes([0x02, 0x01, 0x06])  # Flags
    assert raw[3:7] == bytes([27, 0xFF, 0xFF, 0xFF])  # manufacturer data, company 0xFFFF


def test_round_trip_and_mac() -> None:
    original = SensorAdvert(
        7, SensorKind.TASER, SensorEvent.ARC, 41, None, tamper=True, low_battery=True
    )
    payload = encode_payload(original, KEY, company_id=0x1234)
    assert len(payload) == PAYLOAD_LEN
    parsed, signed, tag = parse_payload(payload)
    assert parsed == original
    assert len(tag) == MAC_LEN
    assert verify(KEY, 0x1234, signed, tag)
    assert not verify(KEY, 0xFFFF, signed, tag)  # the company id is covered
    assert not verify(bytes(32), 0x1234, signed, tag)


def test_every_signed_byte_is_covered_by_the_mac() -> None:
    payload = encode_payload(advert(5), KEY)
    _, signed, tag = parse_payload(payload)
    for i in range(len(signed)):
        flipped = bytearray(signed)
        flipped[i] ^= 0x01
        assert not verify(KEY, 0xFFFF, bytes(flipped), tag), i


@pytest.mark.parametrize(
    ("mutate", "code"),
    [
        (lambda p: p[:-1], "truncated"),
        (lambda p: p + b"\x00", "oversized"),
        (lambda p: p[:1] + b"\x02" + p[2:], "wrong_version"),
        (lambda p: p[:6] + b"\x09" + p[7:], "bad_kind"),
        (lambda p: p[:7] + b"\x99" + p[8:], "bad_event"),
        (lambda p: p[:7] + bytes([SensorEvent.ARM]) + p[8:], "bad_event"),  # a holster's
        (lambda p: p[:12] + b"\x65" + p[13:], "bad_battery"),
        (lambda p: p[:13] + b"\x80" + p[14:], "bad_flags"),
    ],
)
def test_malformed_payloads_say_what_is_wrong(mutate: object, code: str) -> None:
    payload = encode_payload(advert(), KEY)
    with pytest.raises(FormatError) as info:
        parse_payload(mutate(payload))  # type: ignore[operator]
    assert info.value.code == code


def test_ad_parser_reads_what_bleak_would_report() -> None:
    raw = (
        bytes([0x02, 0x01, 0x06])
        + bytes([0x03, 0x03, 0x6C, 0xFE])
        + bytes([0x05, 0x09])
        + b"Holx"
        + bytes([0x02, 0x0A, 0xF4])
    )
    adv = to_advertisement_data(raw + axon_like()[3:], rssi=-61)
    assert adv.local_name == "Holx"
    assert adv.tx_power == -12
    assert adv.service_uuids == [uuid16(0xFE6C)]
    assert adv.service_data[uuid16(0xFE6C)][1:10] == b"TESTSER01"
    assert adv.rssi == -61


def test_ad_parser_stops_at_a_structure_that_overruns() -> None:
    assert ad_structures(bytes([0x02, 0x01, 0x06, 0x09, 0xFF, 0x01])) == [(0x01, b"\x06")]
    assert ad_structures(bytes([0x00, 0x02, 0x01, 0x06])) == []
    assert to_advertisement_data(bytes([0x01, 0xFF]), -50).manufacturer_data == {}
