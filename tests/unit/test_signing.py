"""Signatures, the trust store and the command rules, as pure functions (no broker; the
``keys`` command line in processes of its own: tests/integration/test_keys_cli.py)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel

from mesh.clock import NS
from mesh.decide.rejection import Rejection
from mesh.documents import ConfigError
from mesh.protocol.codec import PayloadError, encode
from mesh.protocol.jws import Jws, b64url, unb64url
from mesh.protocol.models import (
    AckStatus,
    CameraAck,
    GeoPoint,
    RecordCancel,
    RecordStart,
    Targets,
    TriggerEvent,
    TriggerKind,
    TriggerSummary,
)
from mesh.security.checks import CommandProblem, ReplayGuard, Security
from mesh.security.signing import PayloadSigner
from mesh.security.trust import Distrust, KeyRole, TrustStore, trusted_key
from triggers.manual import manual_trigger


def _code(problem: Rejection | None) -> str | None:
    return None if problem is None else problem.code


def _key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


GW, CAM, DISPATCH, STRANGER = _key(), _key(), _key(), _key()


def _store() -> TrustStore:
    return TrustStore(
        [
            trusted_key(GW.public_key(), KeyRole.GATEWAY, "gw-car-12"),
            trusted_key(CAM.public_key(), KeyRole.CAMERA, "bwc-12a"),
            trusted_key(DISPATCH.public_key(), KeyRole.DISPATCH, "dispatch-1"),
        ]
    )


def _command(now_ns: int, *, issuer: str = "gw-car-12", ttl_s: float = 30) -> RecordStart:
    event = manual_trigger(TriggerKind.WEAPON_DRAW, "car-12", source_id="t", observed_at_ns=now_ns)
    return RecordStart(
        activation_id="a-1",
        issuer=issuer,
        trigger=TriggerSummary.of(event),
        issued_at_ns=now_ns,
        origin=GeoPoint(lat=39.95, lon=-75.16),
        radius_m=150.0,
        pre_event_s=30,
        targets=Targets(units=("car-12",)),
        expires_at_ns=now_ns + int(ttl_s * NS),
    )


def _ack(now_ns: int, camera_id: str = "bwc-12a") -> CameraAck:
    return CameraAck(
        activation_id="a-1", camera_id=camera_id, status=AckStatus.STARTED, received_at_ns=now_ns
    )


def _signed(key: Ed25519PrivateKey, payload: BaseModel) -> bytes:
    """The message as a device with ``key`` sends it: a JWS of the payload's bytes."""
    return PayloadSigner(key).seal(payload).to_bytes()


def _command_verdict(
    security: Security, message: bytes, now: int, model: Any = RecordStart
) -> str | None:
    """A camera's verdict on a command message: refused before parsing (the PayloadError's
    code), refused after (the check's code), or None (accepted)."""
    try:
        received = security.open(model, message)
    except PayloadError as exc:
        return exc.code
    return _code(security.check_command(received, now))


def _ack_verdict(security: Security, message: bytes, now: int) -> str | None:
    try:
        received = security.open(CameraAck, message)
    except PayloadError as exc:
        return exc.code
    return _code(security.check_ack(received, now))


def _request_verdict(security: Security, message: bytes, gateway: str, now: int) -> str | None:
    try:
        received = security.open(TriggerEvent, message)
    except PayloadError as exc:
        return exc.code
    return _code(security.check_request(received, gateway, now))


def test_a_signed_command_survives_the_wire_and_verifies() -> None:
    now = time.time_ns()
    command = _command(now)
    message = _signed(GW, command)
    received = Security(trust=_store()).open(RecordStart, message)
    assert received.model == command
    assert received.key is not None
    assert received.key.subject == "gw-car-12"
    assert received.jws is not None
    assert received.jws.payload_bytes == encode(command)  # the bytes sent, as they were
    assert Security(trust=_store()).check_command(received, now) is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"radius_m": 5000.0}, "radius"),
        ({"targets": Targets(units=("car-7",))}, "targets"),
        ({"expires_at_ns": 2**62}, "expiry"),
        ({"activation_id": "a-2"}, "activation id"),
        ({"issued_at_ns": 1}, "issued_at"),
    ],
)
def test_changing_any_signed_field_breaks_the_signature(
    change: dict[str, object], field: str
) -> None:
    """The tampered payload put in a genuine message in place of the signed one: the
    signature no longer verifies, and the camera never parses it."""
    now = time.time_ns()
    genuine = PayloadSigner(GW).seal(_command(now))
    tampered = _command(now).model_copy(update=change)
    forged = Jws(genuine.protected, b64url(encode(tampered)), genuine.signature, genuine.kid)
    verdict = _command_verdict(Security(trust=_store()), forged.to_bytes(), now)
    assert verdict == Distrust.BAD_SIGNATURE, field


def test_one_byte_changed_breaks_the_signature_even_if_it_means_the_same() -> None:
    """v2 signs bytes: re-spelling a number (150.0 as 150) is a different message."""
    now = time.time_ns()
    genuine = PayloadSigner(GW).seal(_command(now))
    text = genuine.payload_bytes.replace(b'"radius_m":150.0', b'"radius_m":150')
    assert text != genuine.payload_bytes
    respelled = Jws(genuine.protected, b64url(text), genuine.signature, genuine.kid)
    assert _command_verdict(Security(trust=_store()), respelled.to_bytes(), now) == (
        Distrust.BAD_SIGNATURE
    )


def test_who_may_sign_a_command() -> None:
    now = time.time_ns()
    security = Security(trust=_store())
    cases = {
        Distrust.UNSIGNED: encode(_command(now)),
        Distrust.UNKNOWN_KEY: _signed(STRANGER, _command(now)),
        # A camera's own key cannot command other cameras.
        Distrust.WRONG_SIGNER: _signed(CAM, _command(now)),
    }
    for code, message in cases.items():
        assert _command_verdict(security, message, now) == code, code
    # A gateway's key speaks for that gateway only.
    received = security.open(RecordStart, _signed(GW, _command(now, issuer="gw-car-7")))
    problem = security.check_command(received, now)
    assert _code(problem) == Distrust.WRONG_SIGNER
    assert problem is not None
    assert "gw-car-7" in problem.reason


def test_command_time_rules() -> None:
    now = time.time_ns()
    security = Security(trust=_store(), max_command_validity_s=120, max_clock_skew_s=5)
    future = _signed(GW, _command(now + 60 * NS))
    assert _command_verdict(security, future, now) == CommandProblem.ISSUED_IN_FUTURE
    within_skew = _signed(GW, _command(now + 2 * NS))
    assert _command_verdict(security, within_skew, now) is None
    too_long = _signed(GW, _command(now, ttl_s=3600))
    assert _command_verdict(security, too_long, now) == CommandProblem.VALIDITY_TOO_LONG


def test_cancel_and_ack_signers() -> None:
    now = time.time_ns()
    security = Security(trust=_store())
    cancel = RecordCancel(activation_id="a-1", issuer="gw-car-12", at_ns=now)
    assert _command_verdict(security, _signed(GW, cancel), now, RecordCancel) is None
    assert _command_verdict(security, encode(cancel), now, RecordCancel) == Distrust.UNSIGNED
    assert _ack_verdict(security, _signed(CAM, _ack(now)), now) is None
    # Another camera's key, or the gateway's, cannot say this camera started.
    assert _ack_verdict(security, _signed(GW, _ack(now)), now) == Distrust.WRONG_SIGNER
    assert _ack_verdict(security, _signed(STRANGER, _ack(now)), now) == Distrust.UNKNOWN_KEY
    forged_for_other = _ack_verdict(security, _signed(CAM, _ack(now, "bwc-7a")), now)
    assert forged_for_other == Distrust.WRONG_SIGNER


def test_requests_signed_by_dispatch_or_the_units_own_gateway() -> None:
    now = time.time_ns()
    security = Security(trust=_store())
    event = manual_trigger(TriggerKind.DISPATCH, "car-12", source_id="d", observed_at_ns=now)
    assert _request_verdict(security, _signed(DISPATCH, event), "gw-car-12", now) is None
    assert _request_verdict(security, _signed(GW, event), "gw-car-12", now) is None
    other_gateway = _request_verdict(security, _signed(GW, event), "gw-car-7", now)
    assert other_gateway == Distrust.WRONG_SIGNER
    assert _request_verdict(security, encode(event), "gw-car-12", now) == Distrust.UNSIGNED


def test_unsigned_allowed_while_provisioning_but_a_bad_signature_never() -> None:
    now = time.time_ns()
    lenient = Security(trust=_store(), require_signed=False)
    assert _command_verdict(lenient, encode(_command(now)), now) is None
    genuine = PayloadSigner(GW).seal(_command(now))
    wider = encode(_command(now).model_copy(update={"radius_m": 9000.0}))
    tampered = Jws(genuine.protected, b64url(wider), genuine.signature, genuine.kid).to_bytes()
    assert _command_verdict(lenient, tampered, now) == Distrust.BAD_SIGNATURE
    # Without a trust store nothing is checked: the private test broker's mode.
    assert _command_verdict(Security(), tampered, now) is None


@pytest.mark.parametrize(
    ("header", "needle"),
    [
        ({"alg": "HS256", "kid": "0" * 16, "typ": "trigger-mesh+json"}, "alg 'HS256'"),
        ({"alg": "none", "kid": "0" * 16, "typ": "trigger-mesh+json"}, "alg 'none'"),
        ({"alg": "EdDSA", "kid": "0" * 16}, "lacks typ"),
        ({"alg": "EdDSA", "kid": "0" * 16, "typ": "JWT"}, "typ 'JWT'"),
        ({"alg": "EdDSA", "kid": "0" * 16, "typ": "trigger-mesh+json", "crit": ["b64"]}, "crit"),
        ({"alg": "EdDSA", "kid": "NOT-HEX", "typ": "trigger-mesh+json"}, "kid"),
    ],
)
def test_a_bad_protected_header_is_refused_before_any_key_is_used(
    header: dict[str, object], needle: str
) -> None:
    now = time.time_ns()
    genuine = PayloadSigner(GW).seal(_command(now))
    protected = b64url(json.dumps(header).encode())
    message = Jws(protected, genuine.payload, genuine.signature, genuine.kid).to_bytes()
    with pytest.raises(PayloadError) as refused:
        Security(trust=_store()).open(RecordStart, message)
    assert refused.value.code == "bad_jws"
    assert needle in refused.value.reason


def test_rotation_overlap_then_retirement_and_revocation() -> None:
    store = _store()
    new_gw = _key()
    start = datetime.now(UTC)
    retired = store.rotate(
        trusted_key(new_gw.public_key(), KeyRole.GATEWAY, "gw-car-12"),
        now=start,
        overlap=timedelta(hours=1),
    )
    assert [k.not_after for k in retired] == [start + timedelta(hours=1)]
    security = Security(trust=store)
    now = int(start.timestamp() * NS)
    assert _command_verdict(security, _signed(GW, _command(now)), now) is None  # overlap
    later = now + 2 * 3600 * NS
    assert _command_verdict(security, _signed(GW, _command(later)), later) == (Distrust.KEY_EXPIRED)
    assert _command_verdict(security, _signed(new_gw, _command(later)), later) is None
    store.revoke(PayloadSigner(new_gw).key_id, start + timedelta(hours=1, minutes=30))
    assert _command_verdict(security, _signed(new_gw, _command(later)), later) == Distrust.REVOKED


def test_trust_store_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "trust.yaml"
    _store().save(path)
    loaded = TrustStore.load(path)
    assert set(loaded.keys) == set(_store().keys)
    now = time.time_ns()
    assert _command_verdict(Security(trust=loaded), _signed(GW, _command(now)), now) is None
    # A key id that does not match its key is named, with where it is.
    text = path.read_text()
    first_id = next(iter(loaded.keys))
    path.write_text(text.replace(first_id, "f" * 16, 1))
    with pytest.raises(ConfigError, match=r"keys\.0.*does not match"):
        TrustStore.load(path)
    path.write_text("keys:\n  - role: gateway\n")
    with pytest.raises(ConfigError, match=r"trust\.yaml: key 'keys\.0\.key_id'"):
        TrustStore.load(path)


def test_replay_guard_remembers_until_expiry() -> None:
    guard = ReplayGuard(capacity=3)
    assert guard.first_time("sig-a", until_ns=100, now_ns=0)
    assert not guard.first_time("sig-a", until_ns=100, now_ns=50)
    # Forgotten once expired (the expiry check refuses it by then anyway).
    assert guard.first_time("sig-a", until_ns=300, now_ns=200)
    for name in ("b", "c", "d"):
        assert guard.first_time(name, until_ns=10**9, now_ns=201)
    assert len(guard._seen) <= 3


def test_a_signed_message_is_a_flattened_jws_of_the_exact_bytes() -> None:
    """docs/security.md: exactly protected, payload and signature; the header EdDSA, the
    key id, the protocol's typ; the signature Ed25519 over "protected.payload"."""
    command = _command(time.time_ns())
    message = json.loads(_signed(GW, command))
    assert set(message) == {"protected", "payload", "signature"}
    header = json.loads(unb64url(message["protected"]))
    assert header == {"alg": "EdDSA", "kid": PayloadSigner(GW).key_id, "typ": "trigger-mesh+json"}
    assert unb64url(message["payload"]) == encode(command)
    signing_input = f"{message['protected']}.{message['payload']}".encode()
    GW.public_key().verify(unb64url(message["signature"]), signing_input)  # raises if not


def test_a_config_security_section_loads_and_names_bad_files(tmp_path: Path) -> None:
    from mesh.config import load_camera_config
    from mesh.security.checks import load_security

    key = tmp_path / "cam.key"
    key.write_bytes(b"not a key")
    config = tmp_path / "camera.yaml"
    config.write_text(
        "camera_id: bwc-12a\nunit: car-12\nsecurity:\n  signing_key: cam.key\n"
        "  trust_store: trust.yaml\n"
    )
    cfg = load_camera_config(config)
    with pytest.raises(ConfigError, match=r"camera\.yaml: key 'security\.signing_key'"):
        load_security(cfg.security, config)
    key.unlink()
    from mesh.security.keys import new_gateway_key

    new_gateway_key(tmp_path, "cam")
    with pytest.raises(ConfigError, match=r"key 'security\.trust_store'.*does not exist"):
        load_security(cfg.security, config)
    _store().save(tmp_path / "trust.yaml")
    security = load_security(cfg.security, config)
    assert security.enforcing
    assert security.signer is not None
