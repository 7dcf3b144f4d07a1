"""Signs checkpoints of the activation log's chain head with the gateway's Ed25519 key."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mesh.journal.chain import RETENTION_VOUCH, checkpoint_message
from mesh.security.keys import key_id, load_private_key, public_key_hex

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


class CheckpointSigner:
    """Signs the chain head; the body it returns is the checkpoint record's body."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public_key = key.public_key()
        self.public_hex = public_key_hex(self.public_key)
        self.key_id = key_id(key.public_key())

    @classmethod
    def from_file(cls, path: Path) -> CheckpointSigner:
        return cls(load_private_key(path))

    def body(
        self, log_id: str, head_seq: int, head_hash: str, reason: str, *, retention: bool = False
    ) -> dict[str, object]:
        """A checkpoint's body; ``retention``: the retention checkpoint a pass writes after
        its retention record (``mesh.journal.chain.checkpoint_message``)."""
        message = checkpoint_message(log_id, head_seq, head_hash, retention=retention)
        body: dict[str, object] = {
            "head_seq": head_seq,
            "head_hash": head_hash,
            "key_id": self.key_id,
            "public_key": self.public_hex,
            "signature": self._key.sign(message).hex(),
            "reason": reason,
        }
        if retention:
            body["vouches"] = RETENTION_VOUCH
        return body
