"""The decoders: ours, not ours, and every way an advert is refused."""

from __future__ import annotations

from mesh.protocol.models import TriggerKind
from tests.ble_helpers import KEY, OTHER_KEY, adv_data, axon_like, signed
from triggers.ble.decoders import (
    AdvertRejection,
    DecoderRegistry,
    LegacyDevice,
    Observation,
    axon_signal_decoder,
    sensor_decoder,
)
from triggers.ble.format import DEV_COMPANY_ID, SensorEvent, SensorKind
from triggers.ble.keystore import Keystore, SensorKey


def keystore() -> Keystore:
    return Keystore({1001: SensorKey(1001, SensorKind.HOLSTER, "car-12", "Ofc. Rivera", KEY)})


def decode(adv: object) -> object:
    return sensor_decoder(keystore(), DEV_COMPANY_ID)("AA:BB:CC:DD:EE:FF", -50, adv)  # type: ignore[arg-type]


def test_a_signed_draw_is_a_weapon_draw_observation() -> None:
    result = decode(signed(7))
    assert isinstance(result, Observation)
    assert (result.sensor_id, result.unit_id, result.officer) == ("1001", "car-12", "Ofc. Rivera")
    assert result.trigger_kind is TriggerKind.WEAPON_DRAW
    assert (result.counter, result.battery_pct, result.authenticated) == (7, 88, True)


def test_information_only_events_trigger_nothing() -> None:
    result = decode(signed(8, event=SensorEvent.HOLSTERED))
    assert isinstance(result, Observation)
    assert result.trigger_kind is None


def test_refusals() -> None:
    forged = decode(signed(1, key=OTHER_KEY))
    assert isinstance(forged, AdvertRejection)
    assert forged.code == "bad_mac"
    unknown = decode(signed(1, sensor_id=4242))
    assert isinstance(unknown, AdvertRejection)
    assert (unknown.code, unknown.sensor_id) == ("unknown_sensor", "4242")
    # Signed with the right key, but claiming to be a TASER: the keystore knows better.
    liar = decode(signed(1, kind=SensorKind.TASER, event=SensorEvent.ARM))
    assert isinstance(liar, AdvertRejection)
    assert liar.code == "kind_mismatch"


def test_other_adverts_are_not_ours() -> None:
    assert decode(signed(1, company_id=0x004C)) is None  # another company id
    assert decode(adv_data(bytes([0x05, 0xFF, 0xFF, 0xFF, 0x01, 0x02]))) is None  # no magic
    assert decode(adv_data(axon_like())) is None


def test_legacy_decoder_needs_the_allow_list() -> None:
    allow = {"TESTSER01": LegacyDevice(TriggerKind.WEAPON_DRAW, "car-12", "Ofc. Kim")}
    legacy = axon_signal_decoder(allow)
    hit = legacy("00:25:DF:01:02:03", -60, adv_data(axon_like()))
    assert isinstance(hit, Observation)
    assert (hit.sensor_id, hit.authenticated, hit.counter) == ("axon:TESTSER01", False, None)
    assert hit.trigger_kind is TriggerKind.WEAPON_DRAW
    stranger = legacy("00:25:DF:01:02:03", -60, adv_data(axon_like(b"OTHERSER9")))
    assert isinstance(stranger, AdvertRejection)
    assert stranger.code == "not_allowed"


def test_registry_asks_each_decoder_in_turn() -> None:
    registry = DecoderRegistry(
        [
            ("tm-v1", sensor_decoder(keystore(), DEV_COMPANY_ID)),
            ("axon", axon_signal_decoder({"TESTSER01": LegacyDevice(TriggerKind.MANUAL, "u-1")})),
        ]
    )
    assert isinstance(registry.decode("a", -50, signed(3)), Observation)
    assert isinstance(registry.decode("a", -50, adv_data(axon_like())), Observation)
    assert registry.decode("a", -50, adv_data(bytes([0x02, 0x01, 0x06]))) is None
