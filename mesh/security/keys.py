"""The gateway's Ed25519 signing key: made by ``trigger-mesh keys new-gateway``, used to sign
checkpoints of the activation log, and its public half given to auditors (``--pubkey``)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
    load_pem_public_key,
)


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short name for a public key: the first 16 hex digits of SHA-256 over the lowercase
    hex text of its 32 raw bytes (64 ASCII characters), not over the bytes themselves
    (docs/security.md, "What a signature covers")."""
    return key_id_of_hex(public_key_hex(public_key))


def key_id_of_hex(public_hex: str) -> str:
    """``key_id`` of a public key given as its hex text."""
    return hashlib.sha256(public_hex.encode()).hexdigest()[:16]


def public_key_hex(public_key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


class KeyFileError(ValueError):
    pass


@dataclass(frozen=True)
class KeyFiles:
    private: Path
    public: Path
    key_id: str


def new_gateway_key(out_dir: Path, name: str) -> KeyFiles:
    """Write ``{name}.key`` (PKCS#8 PEM, mode 0600) and ``{name}.pub`` (PEM) into out_dir.
    An existing key is never overwritten: losing it would orphan every log it signed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    private_path, public_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise KeyFileError(f"{path} exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    # Created 0600 from the start: the key is never readable by others, not even briefly.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public_path.write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    return KeyFiles(private_path, public_path, key_id(key.public_key()))


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the signing key ({exc.strerror})") from None
    except (ValueError, TypeError) as exc:
        raise KeyFileError(f"{path}: not a PEM private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """A PEM public key, or its 32 raw bytes as 64 hex digits (what checkpoints record)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read the public key ({exc.strerror})") from None
    text = data.strip().decode(errors="replace")
    try:
        if len(text) == 64:
            return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))
        key = load_pem_public_key(data)
    except ValueError as exc:
        raise KeyFileError(f"{path}: not a PEM or hex Ed25519 public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: not an Ed25519 key ({type(key).__name__})")
    return key
