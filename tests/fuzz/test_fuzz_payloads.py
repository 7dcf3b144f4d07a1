"""Every MQTT payload type through the codec (mesh/protocol/codec.py): arbitrary bytes, arbitrary
JSON, valid payloads generated from each model's JSON schema, and one mutation of a valid
payload (a field dropped, retyped, made huge, unicode, nested deep, NaN). Each is decoded
to a model that re-encodes to itself and keeps everything the sender said, or refused with
a PayloadError whose code is one of the codec's and whose reason names the field. Nothing
else is ever raised (docs/fuzzing.md)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import BaseModel

from mesh.protocol.codec import DEFAULT_MAX_BYTES, PayloadError, decode, encode, float_fields
from mesh.protocol.log_wire import LogBatch, LogSynced
from mesh.protocol.models import WIRE_MODELS, ActivationRecord, CameraAck, RecordStart, TriggerEvent
from tests.fuzz_helpers import (
    NON_FINITE,
    Mutation,
    Nested,
    apply,
    batch,
    budget,
    dumps,
    get,
    instances,
    json_values,
    mutations,
    paths,
    subset,
)

# Every payload that crosses MQTT: the protocol's and the archive's log sync.
MODELS: dict[str, type[BaseModel]] = {
    **WIRE_MODELS,
    "log_batch": LogBatch,
    "log_synced": LogSynced,
}
CODES = {
    "too_large",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "wrong_version",
    "invalid_field",
}
NAMES = sorted(MODELS)


def accepted_or_refused(model: type[BaseModel], payload: bytes) -> BaseModel | PayloadError:
    """Decode; an accepted payload must re-encode to an equal model, a refused one must
    carry a known code and a reason. Any other exception fails the test."""
    try:
        decoded = decode(model, payload)
    except PayloadError as exc:
        refused = exc
    else:
        assert decode(model, encode(decoded)) == decoded
        return decoded
    assert refused.code in CODES, refused
    assert refused.reason.strip(), refused.code
    return refused


@budget(70)
@given(st.sampled_from(NAMES), batch(st.binary(max_size=300), 40))
def test_any_bytes_are_a_model_or_a_payload_error(name: str, payloads: list[bytes]) -> None:
    for payload in payloads:
        accepted_or_refused(MODELS[name], payload)


@budget(25)
@given(st.sampled_from(NAMES), batch(json_values, 10))
def test_any_json_is_a_model_or_a_payload_error(name: str, values: list[Any]) -> None:
    for value in values:
        result = accepted_or_refused(MODELS[name], dumps(value))
        if not isinstance(value, dict):
            assert isinstance(result, PayloadError)
            assert result.code in ("not_object", "not_json"), result  # not_json: NaN


@budget(40)
@given(st.data())
def test_valid_payloads_decode_and_keep_everything_they_said(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(NAMES))
    sent = data.draw(instances(MODELS[name]))
    decoded = accepted_or_refused(MODELS[name], dumps(sent))
    assert not isinstance(decoded, PayloadError), (decoded, sent)
    assert subset(sent, json.loads(encode(decoded))), sent


@budget(105)
@given(st.data())
def test_one_mutation_is_accepted_whole_or_refused_naming_its_field(
    data: st.DataObject,
) -> None:
    name = data.draw(st.sampled_from(NAMES))
    model = MODELS[name]
    payload, mutation = data.draw(mutations(model))
    raw = apply(payload, mutation)
    result = accepted_or_refused(model, raw)
    if isinstance(result, PayloadError):
        check_refusal(result, mutation, raw)
        return
    assert mutation.op != "non_finite", ("NaN/Infinity accepted", mutation)
    if mutation.path == ("v",):
        return  # test_a_version_other_than_the_integer_2_is_refused covers the version
    # Accepted: it means exactly what was sent (nothing coerced, nothing lost).
    assert subset(json.loads(raw), json.loads(encode(result))), mutation


def check_refusal(exc: PayloadError, mutation: Mutation, raw: bytes) -> None:
    if exc.code == "too_large":
        assert len(raw) > DEFAULT_MAX_BYTES
        return
    if exc.code == "not_json":
        # Only text JSON cannot carry (a lone surrogate) or nesting past the parser's limit.
        value = mutation.value
        lone_surrogate = isinstance(value, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in value)
        assert lone_surrogate or (isinstance(value, Nested) and value.depth >= 150), (
            exc,
            mutation,
        )
        return
    if mutation.path == ("type",):
        assert exc.code in ("wrong_type", "missing_field"), exc
        return
    if mutation.path == ("v",):
        assert exc.code == "wrong_version", exc
        return
    # A list element dropped leaves the list too short: the list is the field named.
    named = mutation.path
    if mutation.op == "drop" and isinstance(named[-1], int):
        named = named[:-1]
    dotted = ".".join(str(p) for p in named)
    assert exc.code in ("invalid_field", "missing_field"), (exc, mutation)
    assert f"'{dotted}" in exc.reason, (exc.reason, mutation)


# The models with a field that holds a float (where NaN and infinities could hide).
FLOAT_MODELS = sorted(n for n, m in MODELS.items() if float_fields(m))


@budget(70)
@given(st.data())
def test_a_number_that_is_not_finite_is_never_accepted(data: st.DataObject) -> None:
    """NaN, ±Infinity, 1e400 or a 400-digit literal where a valid payload has a number
    (a float if it has one): refused, naming that field. Encoded again they would be null."""
    name = data.draw(st.sampled_from(FLOAT_MODELS))
    payload = data.draw(instances(MODELS[name]))
    numbers = [p for p in paths(payload) if type(get(payload, p)) in (int, float)]
    floats = [p for p in numbers if type(get(payload, p)) is float]
    assume(numbers)
    path = data.draw(st.sampled_from(floats or numbers))
    mutation = Mutation("non_finite", path, data.draw(NON_FINITE))
    with pytest.raises(PayloadError) as info:
        decode(MODELS[name], apply(payload, mutation))
    check_refusal(info.value, mutation, b"")


@budget(25)
@given(st.data())
def test_a_missing_required_field_is_named(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(NAMES))
    model = MODELS[name]
    sent = data.draw(instances(model))
    for field in model.model_json_schema()["required"]:
        rest = {k: v for k, v in sent.items() if k != field}
        with pytest.raises(PayloadError) as info:
            decode(model, dumps(rest))
        assert info.value.code == "missing_field"
        assert f"missing field '{field}'" in info.value.reason


@budget(25)
@given(st.data())
def test_unknown_fields_are_ignored(data: st.DataObject) -> None:
    name = data.draw(st.sampled_from(NAMES))
    model = MODELS[name]
    sent = data.draw(instances(model))
    extra = data.draw(
        st.dictionaries(
            st.text(max_size=10).filter(lambda k: k not in model.model_fields), json_values
        )
    )
    expected = decode(model, dumps(sent))
    with_extra = json.dumps({**sent, **extra}, allow_nan=True).encode()
    assert decode(model, with_extra) == expected


# --- findings, each pinned by an explicit example ---------------------------------------------
TRIGGER = {
    "type": "trigger",
    "v": 2,
    "event_id": "e-1",
    "kind": "manual",
    "source": {"type": "manual", "id": "button", "authenticated": True},
    "unit_id": "car-12",
    "observed_at_ns": "1700000000000000000",
}
ACK = {
    "type": "ack",
    "v": 2,
    "activation_id": "a-1",
    "camera_id": "bwc-1",
    "status": "started",
    "received_at_ns": "1700000000000000000",
}


def _text(payload: dict[str, Any], **changes: Any) -> bytes:
    return json.dumps({**payload, **changes}).encode()


@pytest.mark.parametrize(
    ("model", "payload", "field"),
    [
        (CameraAck, _text(ACK, pre_event_kept_s=float("inf")), "pre_event_kept_s"),
        (CameraAck, _text(ACK).replace(b"}", b', "pre_event_kept_s": 1e400}'), "pre_event_kept_s"),
        (TriggerEvent, _text(TRIGGER, detail={"speed": float("nan")}), "detail.speed"),
        (TriggerEvent, _text(TRIGGER, detail={"g": float("-inf")}), "detail.g"),
    ],
)
def test_non_finite_numbers_are_refused_naming_the_field(
    model: type[BaseModel], payload: bytes, field: str
) -> None:
    """Finding: NaN, Infinity and 1e400 were accepted as floats; encoded again they are
    null, so a trigger with ``detail: {speed: NaN}`` was logged as ``null`` and the log
    could no longer be read back by ``audit replay``."""
    with pytest.raises(PayloadError) as info:
        decode(model, payload)
    assert info.value.code == "invalid_field"
    assert info.value.reason == f"field '{field}': not a finite number"


def test_a_non_finite_number_deep_in_an_activation_record_is_named() -> None:
    record = {
        "type": "activation",
        "v": 2,
        "activation_id": "a-1",
        "issuer": "gw-1",
        "unit_id": "car-12",
        "trigger": {k: v for k, v in TRIGGER.items() if k not in ("type", "v")},
        "state": "confirmed",
        "decided_at_ns": "1",
        "expires_at_ns": "2",
        "origin": None,
        "radius_m": 150.0,
        "pre_event_s": 30,
        "cameras": [
            {
                "camera_id": f"bwc-{i}",
                "unit_id": None,
                "expected": True,
                "targeting": "unit",
                "status": "started",
                "latency_ms": float("inf") if i == 2 else 1.5,
            }
            for i in range(3)
        ],
    }
    with pytest.raises(PayloadError) as info:
        decode(ActivationRecord, json.dumps(record).encode())
    assert info.value.reason == "field 'cameras.2.latency_ms': not a finite number"


def test_a_nested_field_of_the_wrong_type_is_named_not_called_a_non_object() -> None:
    """Finding: a nested object of the wrong type (``"source": 5``) was reported as
    ``not_object: payload must be a JSON object``, naming no field."""
    with pytest.raises(PayloadError) as info:
        decode(TriggerEvent, _text(TRIGGER, source=5))
    assert info.value.code == "invalid_field"
    assert info.value.reason.startswith("field 'source': ")
    with pytest.raises(PayloadError) as whole:
        decode(TriggerEvent, b"[1, 2]")
    assert (whole.value.code, whole.value.reason) == ("not_object", "payload must be a JSON object")


def test_a_field_of_a_union_is_named_as_sent_with_what_it_could_be() -> None:
    """Finding: the reason named pydantic's union member (``field 'detail.speed.str'``)
    and counted each member's error as another field ("and 3 more")."""
    with pytest.raises(PayloadError) as info:
        decode(TriggerEvent, _text(TRIGGER, detail={"speed": [1]}))
    assert info.value.reason == (
        "field 'detail.speed': expected text or a number or true/false, not a list"
    )


def test_record_start_radius_may_be_large_but_not_infinite() -> None:
    start = {
        "type": "record_start",
        "v": 2,
        "activation_id": "a-1",
        "issuer": "gw-1",
        "trigger": {k: v for k, v in TRIGGER.items() if k not in ("type", "v")},
        "issued_at_ns": "1",
        "origin": None,
        "radius_m": 1e300,
        "pre_event_s": 30,
        "targets": {},
        "expires_at_ns": "2",
    }
    assert decode(RecordStart, json.dumps(start).encode()).radius_m == 1e300
    with pytest.raises(PayloadError, match="field 'radius_m': not a finite number"):
        decode(RecordStart, json.dumps(start).encode().replace(b"1e+300", b"1e999"))


def test_a_time_past_64_bits_is_refused() -> None:
    with pytest.raises(PayloadError, match="field 'observed_at_ns'"):
        decode(TriggerEvent, _text(TRIGGER, observed_at_ns=str(10**30)))


@pytest.mark.parametrize("version", [b"true", b"2.0", b'"2"', b"1"])
def test_a_version_other_than_the_integer_2_is_refused(version: bytes) -> None:
    payload = _text(ACK).replace(b'"v": 2', b'"v": ' + version)
    with pytest.raises(PayloadError) as info:
        decode(CameraAck, payload)
    assert info.value.code == "wrong_version"
