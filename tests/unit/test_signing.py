"""Signatures, the trust store and the command rules, as pure functions (no broker; the
``keys`` command line in processes of its own: tests/integration/test_keys_cli.py)."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mesh.clock import NS
from mesh.decide.rejection import Rejection
from mesh.documents import ConfigError
from mesh.protocol.codec import decode, encode
from mesh.protocol.models import (
    AckStatus,
    CameraAck,
    GeoPoint,
    RecordCancel,
    RecordStart,
    Targets,
    TriggerKind,
    TriggerSummary,
)
from mesh.security.checks import CommandProblem, ReplayGuard, Security
from mesh.security.signing import PayloadSigner, signed_bytes
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


def test_a_signed_command_survives_the_wire_and_verifies() -> None:
    now = time.time_ns()
    signed = PayloadSigner(GW).sign(_command(now))
    received = decode(RecordStart, encode(signed))
    assert received.sig == signed.sig
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
    now = time.time_ns()
    signed = PayloadSigner(GW).sign(_command(now))
    tampered = signed.model_copy(update=change)
    problem = Security(trust=_store()).check_command(tampered, now)
    assert _code(problem) in (Distrust.BAD_SIGNATURE, CommandProblem.VALIDITY_TOO_LONG), field


def test_who_may_sign_a_command() -> None:
    now = time.time_ns()
    security = Security(trust=_store())
    cases = {
        Distrust.UNSIGNED: _command(now),
        Distrust.UNKNOWN_KEY: PayloadSigner(STRANGER).sign(_command(now)),
        # A camera's own key cannot command other cameras.
        Distrust.WRONG_SIGNER: PayloadSigner(CAM).sign(_command(now)),
    }
    for code, command in cases.items():
        problem = security.check_command(command, now)
        assert _code(problem) == code, (code, problem)
    # A gateway's key speaks for that gateway only.
    other = PayloadSigner(GW).sign(_command(now, issuer="gw-car-7"))
    problem = security.check_command(other, now)
    assert _code(problem) == Distrust.WRONG_SIGNER
    assert problem is not None
    assert "gw-car-7" in problem.reason


def test_command_time_rules() -> None:
    now = time.time_ns()
    security = Security(trust=_store(), max_command_validity_s=120, max_clock_skew_s=5)
    future = PayloadSigner(GW).sign(_command(now + 60 * NS))
    problem = security.check_command(future, now)
    assert _code(problem) == CommandProblem.ISSUED_IN_FUTURE
    within_skew = PayloadSigner(GW).sign(_command(now + 2 * NS))
    assert security.check_command(within_skew, now) is None
    too_long = PayloadSigner(GW).sign(_command(now, ttl_s=3600))
    problem = security.check_command(too_long, now)
    assert _code(problem) == CommandProblem.VALIDITY_TOO_LONG


def test_cancel_and_ack_signers() -> None:
    now = time.time_ns()
    security = Security(trust=_store())
    cancel = RecordCancel(activation_id="a-1", issuer="gw-car-12", at_ns=now)
    assert security.check_command(PayloadSigner(GW).sign(cancel), now) is None
    unsigned = security.check_command(cancel, now)
    assert _code(unsigned) == Distrust.UNSIGNED
    assert security.check_ack(PayloadSigner(CAM).sign(_ack(now)), now) is None
    # Another camera's key, or the gateway's, cannot say this camera started.
    for key in (GW, STRANGER):
        problem = security.check_ack(PayloadSigner(key).sign(_ack(now)), now)
        assert _code(problem) in (Distrust.WRONG_SIGNER, Distrust.UNKNOWN_KEY)
    forged_for_other = security.check_ack(PayloadSigner(CAM).sign(_ack(now, "bwc-7a")), now)
    assert _code(forged_for_other) == Distrust.WRONG_SIGNER


def test_requests_signed_by_dispatch_or_the_units_own_gateway() -> None:
    now = time.time_ns()
    security = Security(trust=_store())
    event = manual_trigger(TriggerKind.DISPATCH, "car-12", source_id="d", observed_at_ns=now)
    assert security.check_request(PayloadSigner(DISPATCH).sign(event), "gw-car-12", now) is None
    assert security.check_request(PayloadSigner(GW).sign(event), "gw-car-12", now) is None
    other_gateway = security.check_request(PayloadSigner(GW).sign(event), "gw-car-7", now)
    assert _code(other_gateway) == Distrust.WRONG_SIGNER
    unsigned = security.check_request(event, "gw-car-12", now)
    assert _code(unsigned) == Distrust.UNSIGNED


def test_unsigned_allowed_while_provisioning_but_a_bad_signature_never() -> None:
    now = time.time_ns()
    lenient = Security(trust=_store(), require_signed=False)
    assert lenient.check_command(_command(now), now) is None
    tampered = PayloadSigner(GW).sign(_command(now)).model_copy(update={"radius_m": 9000.0})
    problem = lenient.check_command(tampered, now)
    assert _code(problem) == Distrust.BAD_SIGNATURE
    # Without a trust store nothing is checked: the private test broker's mode.
    assert Security().check_command(tampered, now) is None


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
    old_signed = PayloadSigner(GW).sign(_command(now))
    assert security.check_command(old_signed, now) is None  # within the overlap
    later = now + 2 * 3600 * NS
    problem = security.check_command(PayloadSigner(GW).sign(_command(later)), later)
    assert _code(problem) == Distrust.KEY_EXPIRED
    assert security.check_command(PayloadSigner(new_gw).sign(_command(later)), later) is None
    store.revoke(PayloadSigner(new_gw).key_id, start + timedelta(hours=1, minutes=30))
    problem = security.check_command(PayloadSigner(new_gw).sign(_command(later)), later)
    assert _code(problem) == Distrust.REVOKED


def test_trust_store_file_round_trip_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "trust.yaml"
    _store().save(path)
    loaded = TrustStore.load(path)
    assert set(loaded.keys) == set(_store().keys)
    now = time.time_ns()
    assert Security(trust=loaded).check_command(PayloadSigner(GW).sign(_command(now)), now) is None
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


def test_signed_bytes_exclude_only_the_signature() -> None:
    now = time.time_ns()
    command = _command(now)
    signed = PayloadSigner(GW).sign(command)
    assert signed_bytes(signed) == signed_bytes(command)
    assert b'"radius_m":150.0' in signed_bytes(command)
    assert b"sig" not in signed_bytes(signed).split(b"\n", 1)[1]


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
