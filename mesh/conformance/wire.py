"""Every signature the conformance kit makes or checks, in one place.

The kit builds payloads as models (``mesh.protocol.models``) and asks this module for
their bytes on the wire (``seal``), for a tampered copy of signed bytes (``forge``), and
for the model in bytes it received, with what is wrong with their signature
(``open_answer``, ``open_command``). Nothing else in the kit signs, verifies, or knows
where a signature lives, so that moving to protocol v2 changes this module only.

Protocol v1 today: a signed payload carries ``sig`` inside it, over a re-serialisation of
its known fields (``mesh.security.signing``); fields the model does not know are not
covered. v2 (docs/security.md, "What a signature covers") sends a JWS over the payload's
exact bytes instead.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from mesh.documents import ConfigError
from mesh.protocol.codec import PayloadError, decode, encode
from mesh.protocol.models import CameraAck, CancelAck, RecordCancel, RecordStart
from mesh.security.checks import Security
from mesh.security.signing import P, PayloadSigner
from mesh.security.trust import KeyRole, TrustStore

Signer = PayloadSigner
Trust = TrustStore
Role = KeyRole

# Where protocol v1 differs from what the v2 text asks of a receiver: a v1 camera answers
# a command whose signature it cannot verify (an unknown key, a bad signature) with a
# signed `rejected` ack; v2 drops it unanswered (security.md, "How a receiver checks a
# signed message", steps 1-3). The kit accepts either answer while this is True.
UNVERIFIABLE_ANSWERED = True

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
def seal(model: P, signer: Signer | None, *, fields: Mapping[str, Any] | None = None) -> bytes:
    """The bytes to publish: ``model`` signed by ``signer`` (as it is without one), with
    ``fields`` set in its JSON object (members the model does not have, or other values
    for those it has: a receiver's view of what is malformed). v1 signs the model, then
    sets the fields; v2 will set them, then sign the bytes."""
    body = encode(model if signer is None else signer.sign(model))
    if not fields:
        return body
    obj = json.loads(body)
    obj.update(fields)
    return json.dumps(obj, separators=(",", ":")).encode()


def forge(sealed: bytes, changes: Mapping[str, Any]) -> bytes:
    """``sealed`` with ``changes`` made to its payload and its signature kept: what a
    forger who cannot sign sends."""
    obj = json.loads(sealed)
    obj.update(changes)
    return json.dumps(obj, separators=(",", ":")).encode()


# --- receiving --------------------------------------------------------------------------
def open_answer(raw: bytes, trust: Trust | None, now_ns: int) -> Opened[CameraAck | CancelAck]:
    """A camera's ``ack`` or ``cancel_ack``, checked against its camera key in ``trust``.
    Raises PayloadError for bytes that are neither."""
    answer: CameraAck | CancelAck
    try:
        answer = decode(CameraAck, raw, max_bytes=MAX_ANSWER_BYTES)
    except PayloadError as exc:
        if exc.code != "wrong_type":
            raise
        answer = decode(CancelAck, raw, max_bytes=MAX_ANSWER_BYTES)
    if trust is None:
        return Opened(answer)
    refused = Security(trust=trust).check_ack(answer, now_ns)
    return Opened(answer, None if refused is None else f"{refused.code}: {refused.reason}")


def open_command(
    raw: bytes, trust: Trust | None, now_ns: int
) -> Opened[RecordStart | RecordCancel]:
    """A gateway's ``record_start`` or ``record_cancel``, checked against the key of its
    issuer in ``trust`` (and a command's time rules). Raises PayloadError for bytes that
    are neither."""
    command: RecordStart | RecordCancel
    try:
        command = decode(RecordStart, raw)
    except PayloadError as exc:
        if exc.code != "wrong_type":
            raise
        command = decode(RecordCancel, raw)
    if trust is None:
        return Opened(command)
    refused = Security(trust=trust).check_command(command, now_ns)
    return Opened(command, None if refused is None else f"{refused.code}: {refused.reason}")
