"""Every signature the conformance kit makes or checks, in one place.

The kit builds payloads as models (``mesh.protocol.models``) and asks this module for
their bytes on the wire (``seal``), for a tampered copy of signed bytes (``forge``), and
for the model in bytes it received, with what is wrong with their signature
(``open_answer``, ``open_command``). Nothing else in the kit signs, verifies, or knows
where a signature lives, so that moving to protocol v2 changes this module only.

Protocol v2 (docs/security.md, "What a signature covers"): a signed message is a JWS
over the payload's exact bytes, so the kit sets whatever members a probe needs in the
JSON first and signs those bytes; a forger's copy changes the payload and keeps the
signature.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from mesh.documents import ConfigError
from mesh.protocol.codec import DEFAULT_MAX_BYTES, PayloadError, decode, encode
from mesh.protocol.jws import Jws, b64url
from mesh.protocol.models import CameraAck, CancelAck, RecordCancel, RecordStart
from mesh.security.checks import Received, Security, signed_envelope
from mesh.security.signing import PayloadSigner
from mesh.security.trust import KeyRole, TrustStore

Signer = PayloadSigner
Trust = TrustStore
Role = KeyRole

# A command whose signature a camera cannot verify (an unknown key, a bad signature) is
# dropped unanswered in v2 (security.md, "How a receiver checks a signed message", steps
# 1-3); v1 answered it `rejected`. False: an answer fails the check.
UNVERIFIABLE_ANSWERED = False
# Refused before a payload is parsed: nothing of such a message may be acted on.
_UNVERIFIED = ("bad_jws", "unknown_key", "bad_signature")

# An ack or cancel_ack larger than this is dropped unread by a gateway (protocol.md).
MAX_ANSWER_BYTES = 65_536

M = TypeVar("M")


class WireError(ValueError):
    """A key or trust store file the kit cannot use (the message names the file)."""


@dataclass(frozen=True)
class Opened(Generic[M]):
    """A payload read off the wire; ``problem`` is why its signature is not trusted
    (``code: reason``), None when trusted or when nothing is checked (no trust store)."""

    model: M
    problem: str | None = None

    @property
    def code(self) -> str | None:
        return None if self.problem is None else self.problem.split(":", 1)[0]


# --- keys -----------------------------------------------------------------------------
def load_signer(path: Path) -> Signer:
    from mesh.security.keys import KeyFileError

    try:
        return PayloadSigner.from_file(path)
    except KeyFileError as exc:
        raise WireError(str(exc)) from None


def new_signer() -> Signer:
    """A key nobody trusts: the attacker's."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    return PayloadSigner(Ed25519PrivateKey.generate())


def load_trust(path: Path) -> Trust:
    try:
        return TrustStore.load(path)
    except ConfigError as exc:
        raise WireError(str(exc)) from None


def subject_of(signer: Signer, trust: Trust, role: Role) -> str | None:
    """Whom ``signer``'s key speaks for in ``trust``, if it is held there in ``role``."""
    key = trust.keys.get(signer.key_id)
    return key.subject if key is not None and key.role is role else None


def trusts(trust: Trust, role: Role, subject: str) -> bool:
    return trust.has_subject(role, subject)


# --- sending ----------------------------------------------------------------------------
def _dumps(obj: object) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def seal(
    model: BaseModel, signer: Signer | None, *, fields: Mapping[str, Any] | None = None
) -> bytes:
    """The bytes to publish: ``model``'s JSON with ``fields`` set in it (members the model
    does not have, or other values for those it has: a receiver's view of what is
    malformed), then, with a ``signer``, a JWS of exactly those bytes."""
    body = encode(model)
    if fields:
        obj = json.loads(body)
        obj.update(fields)
        body = _dumps(obj)
    return body if signer is None else signer.seal_bytes(body).to_bytes()


def forge(sealed: bytes, changes: Mapping[str, Any]) -> bytes:
    """``sealed`` with ``changes`` made to its payload and its signature kept: what a
    forger who cannot sign sends."""
    jws = signed_envelope(sealed)
    if jws is None:
        obj = json.loads(sealed)
        obj.update(changes)
        return _dumps(obj)
    obj = json.loads(jws.payload_bytes)
    obj.update(changes)
    return Jws(jws.protected, b64url(_dumps(obj)), jws.signature, jws.kid).to_bytes()


def with_header(sealed: bytes, header: Mapping[str, Any]) -> bytes:
    """``sealed`` under another protected header, its payload and signature kept."""
    jws = signed_envelope(sealed)
    if jws is None:
        raise ValueError("not a signed message")
    return Jws(b64url(_dumps(dict(header))), jws.payload, jws.signature, jws.kid).to_bytes()


# --- receiving --------------------------------------------------------------------------
def _open(
    models: tuple[type[Any], type[Any]],
    raw: bytes,
    trust: Trust | None,
    max_bytes: int,
) -> tuple[Any, Received[Any] | None, str | None]:
    """The payload in ``raw`` as the first of ``models`` or the second, and either its
    Received (verified, with a trust store) or why its signature failed (read unverified:
    the kit reports what it saw). PayloadError for bytes that are neither."""
    problem = None
    try:
        payload, jws, key = Security(trust=trust).unwrap(raw, max_bytes=max_bytes)
    except PayloadError as exc:
        if exc.code not in _UNVERIFIED or exc.code == "bad_jws":
            raise
        problem = f"{exc.code}: {exc.reason}"
        payload, jws, key = Security().unwrap(raw, max_bytes=max_bytes)
    first, second = models
    try:
        model = decode(first, payload, max_bytes=max_bytes)
    except PayloadError as exc:
        if exc.code != "wrong_type":
            raise
        model = decode(second, payload, max_bytes=max_bytes)
    return model, (None if problem else Received(model, jws, key)), problem


def open_answer(raw: bytes, trust: Trust | None, now_ns: int) -> Opened[CameraAck | CancelAck]:
    """A camera's ``ack`` or ``cancel_ack``, its signature verified with its camera key in
    ``trust``. Raises PayloadError for bytes that are neither."""
    answer, received, problem = _open((CameraAck, CancelAck), raw, trust, MAX_ANSWER_BYTES)
    if trust is None or received is None:
        return Opened(answer, problem)
    refused = Security(trust=trust).check_ack(received, now_ns)
    return Opened(answer, None if refused is None else f"{refused.code}: {refused.reason}")


def open_command(
    raw: bytes, trust: Trust | None, now_ns: int
) -> Opened[RecordStart | RecordCancel]:
    """A gateway's ``record_start`` or ``record_cancel``, its signature verified with the
    key of its issuer in ``trust`` (and a command's time rules). Raises PayloadError for
    bytes that are neither."""
    command, received, problem = _open((RecordStart, RecordCancel), raw, trust, DEFAULT_MAX_BYTES)
    if trust is None or received is None:
        return Opened(command, problem)
    refused = Security(trust=trust).check_command(received, now_ns)
    return Opened(command, None if refused is None else f"{refused.code}: {refused.reason}")
