"""The kit's one module that signs and checks (mesh/conformance/wire.py), by what it must do
whatever the protocol version: sealed bytes open to the same model and verify, a forged
copy does not, fields set on the wire are what a receiver reads."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from mesh.conformance import wire
from mesh.conformance.camera.probes import SOURCE
from mesh.protocol.codec import PayloadError
from mesh.protocol.models import (
    AckStatus,
    CameraAck,
    CancelAck,
    CancelOutcome,
    RecordCancel,
    RecordStart,
    Targets,
    TriggerKind,
    TriggerSummary,
)
from mesh.security.keys import load_public_key, new_gateway_key
from mesh.security.trust import KeyRole, TrustStore, trusted_key

NOW = 1_796_000_000_000_000_000


@dataclass(frozen=True)
class Keys:
    gateway: wire.Signer
    camera: wire.Signer
    trust: TrustStore


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("keys")
    gateway, camera = new_gateway_key(folder, "gw-1"), new_gateway_key(folder, "cam-1")
    trust = TrustStore(
        [
            trusted_key(load_public_key(gateway.public), KeyRole.GATEWAY, "gw-1"),
            trusted_key(load_public_key(camera.public), KeyRole.CAMERA, "cam-1"),
        ]
    )
    return Keys(wire.load_signer(gateway.private), wire.load_signer(camera.private), trust)


def ack(**changes: object) -> CameraAck:
    base = CameraAck(
        activation_id="a-1",
        camera_id="cam-1",
        status=AckStatus.OUT_OF_RANGE,
        reason="far",
        received_at_ns=NOW,
    )
    return base.model_copy(update=changes)


def command() -> RecordStart:
    return RecordStart(
        activation_id="a-1",
        issuer="gw-1",
        trigger=TriggerSummary(
            event_id="e-1", kind=TriggerKind.MANUAL, source=SOURCE, unit_id="u", observed_at_ns=NOW
        ),
        issued_at_ns=NOW,
        origin=None,
        radius_m=0.0,
        pre_event_s=0,
        targets=Targets(units=("u",)),
        expires_at_ns=NOW + 30 * 10**9,
    )


def test_a_sealed_answer_opens_to_the_same_model_and_is_trusted(keys: Keys) -> None:
    opened = wire.open_answer(wire.seal(ack(), keys.camera), keys.trust, NOW)
    assert opened.problem is None
    assert opened.model.model_dump(exclude={"sig"}) == ack().model_dump(exclude={"sig"})


def test_answers_that_must_not_be_trusted_say_why(keys: Keys) -> None:
    trust = keys.trust
    assert wire.open_answer(wire.seal(ack(), None), trust, NOW).code == "unsigned"
    assert wire.open_answer(wire.seal(ack(), keys.gateway), trust, NOW).code == "wrong_signer"
    assert wire.open_answer(wire.seal(ack(), wire.new_signer()), trust, NOW).code == "unknown_key"
    forged = wire.forge(wire.seal(ack(), keys.camera), {"status": "started"})
    assert wire.open_answer(forged, trust, NOW).code == "bad_signature"
    # Nothing is checked without a trust store.
    assert wire.open_answer(wire.seal(ack(), None), None, NOW).problem is None


def test_a_cancel_ack_opens_as_one(keys: Keys) -> None:
    model = CancelAck(
        activation_id="a-1",
        camera_id="cam-1",
        outcome=CancelOutcome.STOPPED,
        cancel_issuer="gw-1",
        cancel_at_ns=NOW,
        received_at_ns=NOW,
    )
    opened = wire.open_answer(wire.seal(model, keys.camera), keys.trust, NOW)
    assert isinstance(opened.model, CancelAck)
    assert opened.problem is None


def test_commands_open_and_verify_against_their_issuer(keys: Keys) -> None:
    trust = keys.trust
    opened = wire.open_command(wire.seal(command(), keys.gateway), trust, NOW)
    assert isinstance(opened.model, RecordStart)
    assert opened.problem is None
    cancel = RecordCancel(activation_id="a-1", issuer="gw-1", at_ns=NOW)
    assert isinstance(
        wire.open_command(wire.seal(cancel, keys.gateway), trust, NOW).model, RecordCancel
    )
    assert wire.open_command(wire.seal(command(), keys.camera), trust, NOW).code == "wrong_signer"
    with pytest.raises(PayloadError):
        wire.open_command(b"{}", trust, NOW)


def test_fields_set_on_the_wire_are_what_a_receiver_reads(keys: Keys) -> None:
    padded = wire.seal(command(), keys.gateway, fields={"padding": "x" * 100})
    assert wire.open_command(padded, keys.trust, NOW).problem is None  # unknown members ignored
    wrong = wire.seal(command(), keys.gateway, fields={"v": 99})
    with pytest.raises(PayloadError) as refused:
        wire.open_command(wrong, keys.trust, NOW)
    assert refused.value.code == "wrong_version"
    assert json.loads(wire.seal(command(), None, fields={"radius_m": 5.0}))["radius_m"] == 5.0


def test_the_keys_of_a_trust_store_are_found_by_role(keys: Keys) -> None:
    trust = keys.trust
    assert wire.subject_of(keys.gateway, trust, wire.Role.GATEWAY) == "gw-1"
    assert wire.subject_of(keys.gateway, trust, wire.Role.CAMERA) is None
    assert wire.subject_of(wire.new_signer(), trust, wire.Role.GATEWAY) is None
    assert wire.trusts(trust, wire.Role.CAMERA, "cam-1")
