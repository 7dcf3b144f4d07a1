"""Property-based tests over every BLE decoder and the AD parser: untrusted radio input
must never raise, never authenticate by chance, and never survive a flipped bit.

Each example is a batch of adverts (hypothesis's per-example overhead is ~1 ms, the
decoders' ~10 µs), so the five properties check 125,000 generated adverts per run in a
few seconds; the batches still shrink to a minimal failing advert.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mesh.protocol.models import TriggerKind
from tests.ble_helpers import KEY, adv_data
from tests.fuzz_helpers import budget
from triggers.ble.adparse import ad_structures, to_advertisement_data
from triggers.ble.decoders import (
    AXON_SIGNAL_UUID,
    AdvertRejection,
    DecoderRegistry,
    LegacyDevice,
    Observation,
    axon_signal_decoder,
    sensor_decoder,
)
from triggers.ble.format import (
    DEV_COMPANY_ID,
    EVENTS_BY_KIND,
    MAGIC,
    SensorAdvert,
    SensorKind,
    encode_advertising_data,
    parse_payload,
)
from triggers.ble.keystore import Keystore, SensorKey

BATCH = 50
EXAMPLES = 500  # x BATCH x 5 properties = 125,000 adverts (`make fuzz`: FUZZ_EXAMPLES x …)
FUZZ = budget(EXAMPLES)
KINDS = {
    1: SensorKind.HOLSTER,
    2: SensorKind.TASER,
    3: SensorKind.MAN_DOWN,
    4: SensorKind.LONG_GUN_RACK,
    5: SensorKind.GENERIC_INPUT,
}
KEYSTORE = Keystore({sid: SensorKey(sid, kind, "car-12", "", KEY) for sid, kind in KINDS.items()})
DECODE = sensor_decoder(KEYSTORE, DEV_COMPANY_ID)
LEGACY = axon_signal_decoder({"TESTSER01": LegacyDevice(TriggerKind.WEAPON_DRAW, "car-12")})
REGISTRY = DecoderRegistry([("tm-v1", DECODE), ("axon", LEGACY)])


@st.composite
def sensor_adverts(draw: st.DrawFn) -> SensorAdvert:
    sensor_id = draw(st.sampled_from(sorted(KINDS)))
    kind = KINDS[sensor_id]
    return SensorAdvert(
        sensor_id=sensor_id,
        kind=kind,
        event=draw(st.sampled_from(sorted(EVENTS_BY_KIND[kind]))),
        counter=draw(st.integers(0, 2**32 - 1)),
        battery_pct=draw(st.one_of(st.none(), st.integers(0, 100))),
        tamper=draw(st.booleans()),
        low_battery=draw(st.booleans()),
    )


def batch(strategy: st.SearchStrategy[object]) -> st.SearchStrategy[list[object]]:
    return st.lists(strategy, min_size=BATCH, max_size=BATCH)


@FUZZ
@given(batch(st.tuples(st.binary(max_size=255), st.integers(-127, 20))))
def test_any_bytes_parse_and_decode_without_raising(cases: list[tuple[bytes, int]]) -> None:
    for raw, rssi in cases:
        adv = to_advertisement_data(raw, rssi)
        result = REGISTRY.decode("00:11:22:33:44:55", rssi, adv)
        assert result is None or isinstance(result, AdvertRejection | Observation)


@FUZZ
@given(batch(st.binary(max_size=40)))
def test_random_payloads_under_our_company_id_never_authenticate(tails: list[bytes]) -> None:
    for tail in tails:
        # Claiming to be ours (magic byte) but forged: at best a rejection with a reason.
        body = DEV_COMPANY_ID.to_bytes(2, "little") + bytes([MAGIC]) + tail
        result = DECODE("00:11:22:33:44:55", -50, adv_data(bytes([len(body) + 1, 0xFF]) + body))
        assert isinstance(result, AdvertRejection), (tail.hex(), result)
        assert result.reason


@FUZZ
@given(batch(st.tuples(sensor_adverts(), st.integers(0, 26 * 8 - 1))))
def test_a_flipped_bit_is_never_accepted(cases: list[tuple[SensorAdvert, int]]) -> None:
    for advert, bit in cases:
        raw = bytearray(encode_advertising_data(advert, KEY))
        accepted = DECODE("a", -50, adv_data(bytes(raw)))
        assert isinstance(accepted, Observation)
        assert (accepted.counter, accepted.sensor_id) == (advert.counter, str(advert.sensor_id))
        # Flip one bit of the manufacturer data: company id (2), payload (24, MAC included).
        raw[5 + bit // 8] ^= 1 << (bit % 8)
        assert not isinstance(DECODE("a", -50, adv_data(bytes(raw))), Observation), bit


@FUZZ
@given(batch(st.binary(max_size=60)))
def test_legacy_decoder_never_raises(payloads: list[bytes]) -> None:
    for service_data in payloads:
        adv = adv_data(bytes([len(service_data) + 3, 0x16, 0x6C, 0xFE]) + service_data)
        assert AXON_SIGNAL_UUID in adv.service_data
        result = LEGACY("00:25:DF:00:00:01", -50, adv)
        assert result is None or isinstance(result, AdvertRejection | Observation)
        if isinstance(result, Observation):
            assert not result.authenticated
            assert service_data[1:10] == b"TESTSER01"


@FUZZ
@given(batch(sensor_adverts()))
def test_encode_then_parse_is_the_identity(adverts: list[SensorAdvert]) -> None:
    for advert in adverts:
        parsed, _, _ = parse_payload(encode_advertising_data(advert, KEY)[7:])
        assert parsed == advert


AD_STRUCTURE = st.tuples(st.integers(0, 255), st.binary(max_size=30))


@budget(100)
@given(st.lists(st.tuples(st.lists(AD_STRUCTURE, max_size=6), st.integers(0, 250)), min_size=10))
def test_ad_structures_read_back_whole_and_a_cut_keeps_those_before_it(
    cases: list[tuple[list[tuple[int, bytes]], int]],
) -> None:
    for structures, cut in cases:
        raw = b"".join(bytes([len(value) + 1, ad_type]) + value for ad_type, value in structures)
        # Zero padding ends the data, as controllers pad a 31-byte advert.
        assert ad_structures(raw + bytes(5)) == structures
        # A truncated advert: the structures that fit whole, none cut in half.
        whole, end = [], 0
        for ad_type, value in structures:
            end += len(value) + 2
            if end > cut:
                break
            whole.append((ad_type, value))
        assert ad_structures(raw[:cut]) == whole
