"""Wire models and the codec: round trips, strictness, and reasons for bad payloads."""

from __future__ import annotations

import json

import pytest

from mesh.protocol.codec import PayloadError, decode, encode
from mesh.protocol.models import (
    WIRE_MODELS,
    AckStatus,
    CameraAck,
    RecordStart,
    SourceRef,
    SourceType,
    Targets,
    TriggerEvent,
    TriggerKind,
    TriggerSummary,
)

NOW = 1_790_000_000_123_456_789


def trigger(**changes: object) -> TriggerEvent:
    fields: dict[str, object] = {
        "event_id": "e1",
        "kind": TriggerKind.WEAPON_DRAW,
        "source": SourceRef(type=SourceType.BLE, id="holster-7", authenticated=True),
        "unit_id": "car-12",
        "observed_at_ns": NOW,
    }
    fields.update(changes)
    return TriggerEvent(**fields)  # type: ignore[arg-type]


def ack_json(**changes: object) -> bytes:
    body: dict[str, object] = {
        "type": "ack",
        "v": 2,
        "activation_id": "a-1",
        "camera_id": "c-1",
        "status": "started",
        "received_at_ns": str(NOW),
    }
    body.update(changes)
    return json.dumps(body).encode()


def test_every_payload_carries_type_and_version() -> None:
    event = trigger()
    body = json.loads(encode(event))
    assert body["type"] == "trigger"
    assert body["v"] == 2
    for name, model in WIRE_MODELS.items():
        assert model.model_fields["type"].default == name
        assert model.model_fields["v"].default == 2


def test_times_are_decimal_strings_on_the_wire() -> None:
    """Protocol v2: a nanosecond time above 2^53 travels as a string, so a parser that
    reads JSON numbers into doubles (JavaScript's JSON.parse) still gets it exactly."""
    body = json.loads(encode(trigger()))
    assert body["observed_at_ns"] == str(NOW)
    assert float(NOW) != NOW  # the number itself would not survive a double
    with pytest.raises(PayloadError) as info:
        decode(CameraAck, ack_json(received_at_ns=NOW))
    assert info.value.code == "invalid_field"
    assert "received_at_ns" in info.value.reason
    assert "string of decimal digits" in info.value.reason
    for bad in ("-1", "01", "1.5", "1e9", " 1", "9223372036854775808", ""):
        with pytest.raises(PayloadError) as info:
            decode(CameraAck, ack_json(received_at_ns=bad))
        assert info.value.code == "invalid_field", bad
    assert decode(CameraAck, ack_json(received_at_ns="9223372036854775807")).received_at_ns == (
        2**63 - 1
    )


def test_a_v1_payload_is_refused_naming_its_version() -> None:
    with pytest.raises(PayloadError) as info:
        decode(CameraAck, ack_json(v=1, received_at_ns=NOW))
    assert info.value.code == "wrong_version"
    assert info.value.reason == "v1 payload; this peer speaks protocol v2 only"


def test_a_v1_log_body_is_still_read() -> None:
    """Logs written by v1 gateways hold v1 bodies: read outside the wire, they still parse
    (integer times, "v": 1, a v1 signature object ignored)."""
    body = json.loads(ack_json(v=1, received_at_ns=NOW, sig={"alg": "ed25519"}))
    ack = CameraAck.model_validate_json(json.dumps(body))
    assert ack.received_at_ns == NOW
    assert ack.v == 2


def test_trigger_round_trip_keeps_nanoseconds() -> None:
    event = trigger(detail={"holster": "left", "battery": 88})
    back = decode(TriggerEvent, encode(event))
    assert back == event
    assert back.observed_at_ns == NOW  # not rounded to micro- or milliseconds


def test_record_start_round_trip() -> None:
    command = RecordStart(
        activation_id="a-1",
        issuer="gw-car-12",
        trigger=TriggerSummary.of(trigger()),
        issued_at_ns=NOW,
        origin=None,
        radius_m=150,
        pre_event_s=60,
        targets=Targets(units=("car-12",), cameras=("c-9",)),
        expires_at_ns=NOW + 30 * 10**9,
    )
    assert decode(RecordStart, encode(command)) == command


def test_models_are_immutable() -> None:
    event = trigger()
    with pytest.raises(ValueError, match="frozen"):
        event.unit_id = "car-13"  # type: ignore[misc]


def test_strict_types_no_coercion() -> None:
    with pytest.raises(PayloadError) as info:
        decode(CameraAck, ack_json(attempt="1"))
    assert info.value.code == "invalid_field"
    assert "attempt" in info.value.reason


def test_identifiers_cannot_inject_topic_levels() -> None:
    for bad in ("car/12", "car+", "#", ""):
        with pytest.raises(PayloadError) as info:
            decode(CameraAck, ack_json(camera_id=bad))
        assert "camera_id" in info.value.reason


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    ack = decode(CameraAck, ack_json(battery_pct=80))
    assert ack.status is AckStatus.STARTED


@pytest.mark.parametrize(
    ("payload", "code", "needle"),
    [
        (b"not json at all", "not_json", "not valid JSON"),
        (b"[1, 2, 3]", "not_object", "JSON object"),
        (b'"a string"', "not_object", "JSON object"),
        (ack_json(type="trigger"), "wrong_type", "expected type 'ack', got 'trigger'"),
        (ack_json(v=3), "wrong_version", "v3 payload"),
        (ack_json(v=True), "wrong_version", "True payload"),
        (
            json.dumps(
                {
                    "type": "ack",
                    "v": 2,
                    "camera_id": "c-1",
                    "status": "started",
                    "received_at_ns": str(NOW),
                }
            ).encode(),
            "missing_field",
            "activation_id",
        ),
        (ack_json(status="maybe"), "invalid_field", "status"),
        (b"x" * (1024 * 1024), "too_large", "1048576 bytes"),
    ],
)
def test_bad_payloads_are_rejected_with_a_reason(payload: bytes, code: str, needle: str) -> None:
    with pytest.raises(PayloadError) as info:
        decode(CameraAck, payload)
    assert info.value.code == code
    assert needle in info.value.reason
