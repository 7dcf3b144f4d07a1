"""Ed25519 signatures on the payloads that start, stop or confirm a recording.

A signed payload carries ``sig``: the signer's key id and a signature over every other
field, as canonical JSON (sorted keys, no spaces, UTF-8) after a fixed domain string. The
receiver re-serialises the model it decoded, so a field it does not know (a newer
sender's) is not covered: signed payloads may only grow by bumping ``v``.

Which keys may sign what is the trust store's business (``mesh.security.trust``,
``mesh.security.checks``).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from mesh.protocol.models import (
    CameraAck,
    CancelAck,
    CancelRequest,
    RecordCancel,
    RecordStart,
    Signature,
    TriggerEvent,
)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

SIGN_DOMAIN = b"trigger-mesh/v1 signed payload\n"

SignedPayload = RecordStart | RecordCancel | CameraAck | TriggerEvent | CancelRequest | CancelAck
P = TypeVar("P", RecordStart, RecordCancel, CameraAck, TriggerEvent, CancelRequest, CancelAck)
# Fields added to v1 after signed payloads shipped: absent (null), they are not in the
# signed bytes, so a camera of this version still accepts an older gateway's commands.
OMITTED_WHEN_NULL = frozenset({"cancel_until_ns"})


def signed_bytes(payload: SignedPayload) -> bytes:
    """What a signature covers: the domain string, then the payload without ``sig`` (and
    without the later optional fields that are null)."""
    body = payload.model_dump(mode="json", exclude={"sig"})
    for name in OMITTED_WHEN_NULL:
        if name in body and body[name] is None:
            del body[name]
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return SIGN_DOMAIN + canonical.encode()


def encode_signature(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_signature(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PayloadSigner:
    """Signs payloads with one Ed25519 key (a gateway's, a camera's or a dispatcher's)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        from mesh.security.keys import key_id

        self._key = key
        self.key_id = key_id(key.public_key())

    @classmethod
    def from_file(cls, path: Path) -> PayloadSigner:
        """Raises mesh.security.keys.KeyFileError naming the file if it is not a usable key."""
        from mesh.security.keys import load_private_key

        return cls(load_private_key(path))

    def sign(self, payload: P) -> P:
        """The same payload with ``sig`` set (any previous signature replaced)."""
        raw = self._key.sign(signed_bytes(payload))
        signature = Signature(key_id=self.key_id, value=encode_signature(raw))
        return payload.model_copy(update={"sig": signature})
