"""Test vectors of signed messages (docs/vectors/signed.json): fixed keys, a trust store,
messages exactly as they travel, and what a receiver must conclude of each.

Ed25519 signatures are deterministic, so the same keys and payloads give the same bytes
every time: ``trigger-mesh vectors`` writes them, ``tests/unit/test_signed_vectors.py``
checks the committed file against this code, against the receiver's real checks, and
against an independent JOSE implementation.

A verdict is one of:
- ``accept``: verified, parsed, and trusted (what the camera then decides, started or
  out_of_range, is the range rules' business);
- ``drop:<code>``: refused before the payload was parsed (or unparseable): nothing is
  answered (``bad_jws``, ``unknown_key``, ``bad_signature``, ``wrong_version``, …);
- ``refuse:<code>``: parsed and refused with an answer (a camera's `rejected` ack):
  ``unsigned``, ``wrong_signer``, ``key_revoked``, ``issued_in_future``,
  ``validity_too_long``, ``expired``, ``replayed``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mesh.clock import NS
from mesh.protocol.codec import encode
from mesh.protocol.jws import Jws, b64url
from mesh.protocol.models import (
    AckStatus,
    CameraAck,
    GeoPoint,
    RecordingEvent,
    RecordingFile,
    RecordingMessage,
    RecordingStopReason,
    RecordStart,
    SourceRef,
    SourceType,
    Targets,
    TriggerKind,
    TriggerSummary,
)
from mesh.security.signing import PayloadSigner
from mesh.security.trust import KeyRole, TrustStore, trusted_key

# The receiver's clock for every case: 2026-12-03T12:00:00Z.
NOW_NS = 1_796_299_200 * NS
# Secret keys (32-byte seeds, hex): RFC 8032 §7.1's tests 1, 2 and 3, and one made here
# (sha256 of "trigger-mesh vectors: stranger") that no trust store holds.
SEEDS: dict[str, str] = {
    "gateway gw-car-12": "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    "camera bwc-12a": "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
    "gateway gw-car-9 (revoked)": (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7"
    ),
    "stranger": hashlib.sha256(b"trigger-mesh vectors: stranger").hexdigest(),
}
REVOKED_AT = datetime(2026, 12, 1, tzinfo=UTC)


def private_key(name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(SEEDS[name]))


def trust_store() -> TrustStore:
    """The receiver's trust store: the gateway, the camera, and a revoked gateway key."""
    store = TrustStore(
        [
            trusted_key(
                private_key("gateway gw-car-12").public_key(), KeyRole.GATEWAY, "gw-car-12"
            ),
            trusted_key(private_key("camera bwc-12a").public_key(), KeyRole.CAMERA, "bwc-12a"),
            trusted_key(
                private_key("gateway gw-car-9 (revoked)").public_key(), KeyRole.GATEWAY, "gw-car-9"
            ),
        ]
    )
    store.revoke(PayloadSigner(private_key("gateway gw-car-9 (revoked)")).key_id, REVOKED_AT)
    return store


def command(**changes: Any) -> RecordStart:
    """The record-start of the vectors: issued a second before NOW_NS, valid 30 s."""
    fields: dict[str, Any] = {
        "activation_id": "a-77fd793654b858c3",
        "issuer": "gw-car-12",
        "trigger": TriggerSummary(
            event_id="b096c3a6cbd34bdc89e00b22e85257a7",
            kind=TriggerKind.WEAPON_DRAW,
            source=SourceRef(type=SourceType.MANUAL, id="demo:holster-1001", authenticated=False),
            unit_id="car-12",
            observed_at_ns=NOW_NS - 2 * NS,
        ),
        "issued_at_ns": NOW_NS - NS,
        "origin": GeoPoint(lat=39.952583, lon=-75.165222),
        "radius_m": 150.0,
        "pre_event_s": 60,
        "targets": Targets(units=("car-12",)),
        "expires_at_ns": NOW_NS + 29 * NS,
        "cancel_until_ns": NOW_NS + 9 * NS,
    }
    fields.update(changes)
    return RecordStart(**fields)


def ack(**changes: Any) -> CameraAck:
    fields: dict[str, Any] = {
        "activation_id": "a-77fd793654b858c3",
        "camera_id": "bwc-12a",
        "unit_id": "car-12",
        "status": AckStatus.STARTED,
        "reason": "unit car-12 targeted",
        "received_at_ns": NOW_NS,
        "recording_started_at_ns": NOW_NS + 90_000,
        "pre_event_kept_s": 30.0,
    }
    fields.update(changes)
    return CameraAck(**fields)


def recording(**changes: Any) -> RecordingMessage:
    """A camera's `recording` stop message: an officer's stop, with a note and one file."""
    fields: dict[str, Any] = {
        "camera_id": "bwc-12a",
        "unit_id": "car-12",
        "recording_id": "r-5f0c2a9e81d34b7a6c1e",
        "activation_ids": ("a-77fd793654b858c3",),
        "event": RecordingEvent.STOP,
        "started_at_ns": NOW_NS - 600 * NS,
        "first_frame_ns": NOW_NS - 630 * NS,
        "pre_event_kept_s": 30.0,
        "stopped_at_ns": NOW_NS - NS,
        "reason": RecordingStopReason.OFFICER,
        "note": "scene secured, subject in custody",
        "files": (
            RecordingFile(
                name="seg-000001.mkv",
                sha256=hashlib.sha256(b"trigger-mesh vectors: segment 1").hexdigest(),
                first_frame_ns=NOW_NS - 630 * NS,
                last_frame_ns=NOW_NS - NS - 33_333_333,
            ),
        ),
    }
    fields.update(changes)
    return RecordingMessage(**fields)


def sealed(signer: str, payload: bytes) -> Jws:
    return PayloadSigner(private_key(signer)).seal_bytes(payload)


_B64URL_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def respell(text: str) -> str:
    """``text`` with the unused low bits of its last character set: the same bytes to a
    lenient decoder, another text (86 characters carry 516 bits for a 512-bit signature)."""
    last = _B64URL_ALPHABET.index(text[-1])
    return text[:-1] + _B64URL_ALPHABET[last | 1]


def with_header(jws: Jws, header: dict[str, object]) -> Jws:
    """The same payload and signature under another protected header."""
    protected = b64url(json.dumps(header, separators=(",", ":")).encode())
    return Jws(protected, jws.payload, jws.signature, jws.kid)


def resigned(signer: str, header: dict[str, object], payload: bytes) -> Jws:
    """A message signed under another protected header (by the same key, validly)."""
    protected = b64url(json.dumps(header, separators=(",", ":")).encode())
    encoded = b64url(payload)
    signature = private_key(signer).sign(f"{protected}.{encoded}".encode("ascii"))
    return Jws(protected, encoded, b64url(signature), PayloadSigner(private_key(signer)).key_id)


def with_payload(jws: Jws, payload: bytes) -> Jws:
    """Another payload under the same header and signature (a tampered message)."""
    return Jws(jws.protected, b64url(payload), jws.signature, jws.kid)


@dataclass(frozen=True)
class Case:
    name: str
    receiver: str  # "camera" (record_start) or "gateway" (ack, recording)
    messages: tuple[str, ...]  # in the order received; each exactly as on the wire
    verdicts: tuple[str, ...]  # one per message
    why: str


def _text(message: Jws | bytes) -> str:
    return message.to_json() if isinstance(message, Jws) else message.decode()


def cases() -> list[Case]:
    gateway, camera = "gateway gw-car-12", "camera bwc-12a"
    genuine = sealed(gateway, encode(command()))
    respelled = Jws(genuine.protected, genuine.payload, respell(genuine.signature), genuine.kid)
    # For another car's unit, 2 km north: concerns no camera of car-12.
    elsewhere = sealed(
        gateway,
        encode(
            command(targets=Targets(units=("car-7",)), origin=GeoPoint(lat=39.97, lon=-75.165222))
        ),
    )
    v1_payload = json.loads(encode(command()))
    v1_payload["v"] = 1
    number_time = json.loads(encode(command()))
    number_time["issued_at_ns"] = int(number_time["issued_at_ns"])

    def one(name: str, receiver: str, message: Jws | bytes, verdict: str, why: str) -> Case:
        return Case(name, receiver, (_text(message),), (verdict,), why)

    return [
        one("genuine command", "camera", genuine, "accept", "signed by its issuer's gateway key"),
        Case(
            "the same command twice, to a camera it does not concern",
            "camera",
            (elsewhere.to_json(), elsewhere.to_json()),
            ("accept", "refuse:replayed"),
            "a signature that passed the checks is remembered until the command expires, "
            "whatever the camera decided (here out_of_range): the same bytes again are never "
            "acted on (on the camera's own topic answered `rejected`, on a shared topic "
            "ignored), so a command captured out of range cannot start it later",
        ),
        Case(
            "the same command with its signature re-spelled",
            "camera",
            (respelled.to_json(),),
            ("drop:bad_jws",),
            "base64url has one spelling per value: the unused low bits of the last "
            "character must be zero. Decoders ignore them, so without the rule a replay "
            "guard keyed on the signature text would take a re-spelled copy of a captured "
            "command for a new one",
        ),
        one(
            "unsigned command",
            "camera",
            encode(command()),
            "refuse:unsigned",
            "a trust store requires signatures (require_signed: true)",
        ),
        one(
            "radius changed after signing",
            "camera",
            with_payload(genuine, encode(command(radius_m=5000.0))),
            "drop:bad_signature",
            "the signature is over the bytes sent; any change breaks it",
        ),
        one(
            "a number spelled differently (150.0 as 150)",
            "camera",
            with_payload(
                genuine, encode(command()).replace(b'"radius_m":150.0', b'"radius_m":150')
            ),
            "drop:bad_signature",
            "the same value in other bytes is another message: bytes are signed, not values",
        ),
        one(
            "signed by an unknown key",
            "camera",
            sealed("stranger", encode(command())),
            "drop:unknown_key",
            "its kid is in no trust store",
        ),
        one(
            "signed by a camera key",
            "camera",
            sealed(camera, encode(command())),
            "refuse:wrong_signer",
            "only the issuing gateway (or a dispatch console under its own id) may command",
        ),
        one(
            "signed by the gateway for another issuer",
            "camera",
            sealed(gateway, encode(command(issuer="gw-car-7"))),
            "refuse:wrong_signer",
            "a gateway key speaks for its own gateway id only",
        ),
        one(
            "signed by a revoked key",
            "camera",
            sealed("gateway gw-car-9 (revoked)", encode(command(issuer="gw-car-9"))),
            "refuse:key_revoked",
            f"revoked at {REVOKED_AT.isoformat()}",
        ),
        one(
            "alg none",
            "camera",
            with_header(genuine, {"alg": "none", "kid": genuine.kid, "typ": "trigger-mesh+json"}),
            "drop:bad_jws",
            "only EdDSA (or Ed25519) is accepted",
        ),
        one(
            "alg HS256",
            "camera",
            with_header(genuine, {"alg": "HS256", "kid": genuine.kid, "typ": "trigger-mesh+json"}),
            "drop:bad_jws",
            "only EdDSA (or Ed25519) is accepted",
        ),
        one(
            "alg Ed25519 (RFC 9864's name for the same algorithm)",
            "camera",
            resigned(
                gateway,
                {"alg": "Ed25519", "kid": genuine.kid, "typ": "trigger-mesh+json"},
                encode(command(activation_id="a-5d1c0e6f9b2a4c77")),
            ),
            "accept",
            "a receiver accepts EdDSA and Ed25519 alike",
        ),
        one(
            "crit in the protected header",
            "camera",
            resigned(
                gateway,
                {"alg": "EdDSA", "kid": genuine.kid, "typ": "trigger-mesh+json", "crit": ["exp"]},
                encode(command(activation_id="a-9e3b7d2c1f0a5e48")),
            ),
            "drop:bad_jws",
            "no JWS extension is understood, so none may be critical",
        ),
        one(
            "no typ",
            "camera",
            with_header(genuine, {"alg": "EdDSA", "kid": genuine.kid}),
            "drop:bad_jws",
            "typ trigger-mesh+json is required",
        ),
        one(
            "expired command",
            "camera",
            sealed(
                gateway,
                encode(command(issued_at_ns=NOW_NS - 40 * NS, expires_at_ns=NOW_NS - 10 * NS)),
            ),
            "refuse:expired",
            "now is past its expires_at_ns (answered `rejected`, `command expired 10000 ms ago`)",
        ),
        one(
            "issued in the future",
            "camera",
            sealed(
                gateway,
                encode(command(issued_at_ns=NOW_NS + 60 * NS, expires_at_ns=NOW_NS + 90 * NS)),
            ),
            "refuse:issued_in_future",
            "more than max_clock_skew_s (5 s) ahead of the camera's clock",
        ),
        one(
            "valid for too long",
            "camera",
            sealed(gateway, encode(command(expires_at_ns=NOW_NS + 3600 * NS))),
            "refuse:validity_too_long",
            "alive longer than max_command_validity_s (600 s)",
        ),
        one(
            "a v1 payload, signed",
            "camera",
            sealed(gateway, json.dumps(v1_payload, separators=(",", ":")).encode()),
            "drop:wrong_version",
            "v2 peers refuse v1 payloads, signed or not",
        ),
        one(
            "a time as a JSON number, signed",
            "camera",
            sealed(gateway, json.dumps(number_time, separators=(",", ":")).encode()),
            "drop:invalid_field",
            "times are strings of decimal digits in v2",
        ),
        one(
            "genuine ack",
            "gateway",
            sealed(camera, encode(ack())),
            "accept",
            "signed by its camera",
        ),
        one(
            "ack signed by the gateway's key",
            "gateway",
            sealed(gateway, encode(ack())),
            "refuse:wrong_signer",
            "only the camera's own key may say it started",
        ),
        one(
            "ack for another camera",
            "gateway",
            sealed(camera, encode(ack(camera_id="bwc-7a"))),
            "refuse:wrong_signer",
            "bwc-12a's key cannot speak for bwc-7a",
        ),
        one(
            "genuine recording stop",
            "gateway",
            sealed(camera, encode(recording())),
            "accept",
            "signed by its camera, like its acks",
        ),
        one(
            "recording for another camera",
            "gateway",
            sealed(camera, encode(recording(camera_id="bwc-7a"))),
            "refuse:wrong_signer",
            "a stolen bwc-12a key cannot report (or end) bwc-7a's recording",
        ),
        one(
            "recording signed by the gateway's key",
            "gateway",
            sealed(gateway, encode(recording())),
            "refuse:wrong_signer",
            "only the camera's own key may say what it recorded",
        ),
    ]


def _key_entry(name: str) -> dict[str, str]:
    key = private_key(name)
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return {
        "name": name,
        "seed": SEEDS[name],
        "public_key": public.hex(),
        "key_id": PayloadSigner(key).key_id,
    }


def signed_vectors() -> dict[str, object]:
    store = trust_store()
    return {
        "description": (
            "signed messages (JWS, flattened JSON serialisation, EdDSA over the payload's "
            "exact bytes; docs/security.md) and a receiver's verdict on each, in order, at "
            "now_ns, with trust_store; accept, drop:<code> (refused before parsing or "
            "unparseable, never answered), refuse:<code> (parsed, refused, answered)"
        ),
        "now_ns": str(NOW_NS),
        "max_clock_skew_s": 5,
        "max_command_validity_s": 600,
        "keys": [_key_entry(name) for name in SEEDS],
        "trust_store": store.document(),
        "cases": [
            {
                "name": case.name,
                "receiver": case.receiver,
                "messages": list(case.messages),
                "verdicts": list(case.verdicts),
                "why": case.why,
            }
            for case in cases()
        ],
    }


VECTOR_FILES: dict[str, Callable[[], dict[str, object]]] = {"signed": signed_vectors}
