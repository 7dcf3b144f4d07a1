"""Ed25519 signatures on the payloads that start, stop or confirm a recording.

A signed message is a JWS over the payload's exact bytes (``mesh.protocol.jws``,
docs/security.md): the signer serialises the payload once, signs those bytes, and sends
them base64url-encoded beside its key id and the signature. The receiver verifies the
bytes it received and only then parses them, so any JSON library may write a payload.

Which keys may sign what is the trust store's business (``mesh.security.trust``,
``mesh.security.checks``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel

from mesh.protocol.codec import encode
from mesh.protocol.jws import Jws, b64url, protected_header

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


class PayloadSigner:
    """Signs payloads with one Ed25519 key (a gateway's, a camera's or a dispatcher's)."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        from mesh.security.keys import key_id

        self._key = key
        self.key_id = key_id(key.public_key())
        self._protected = protected_header(self.key_id)

    @classmethod
    def from_file(cls, path: Path) -> PayloadSigner:
        """Raises mesh.security.keys.KeyFileError naming the file if it is not a usable key."""
        from mesh.security.keys import load_private_key

        return cls(load_private_key(path))

    def seal_bytes(self, payload: bytes) -> Jws:
        """A JWS of ``payload`` (a serialised payload, sent as it is)."""
        encoded = b64url(payload)
        signature = self._key.sign(f"{self._protected}.{encoded}".encode("ascii"))
        return Jws(self._protected, encoded, b64url(signature), self.key_id)

    def seal(self, payload: BaseModel) -> Jws:
        """A JWS of the payload's JSON."""
        return self.seal_bytes(encode(payload))
