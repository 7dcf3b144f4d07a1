"""The key id, as docs/security.md ("What a signature covers") defines it, pinned on a
fixed key: the secret key of RFC 8032's first Ed25519 test vector."""

from __future__ import annotations

import hashlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from mesh.security.keys import key_id, public_key_hex
from mesh.security.signing import PayloadSigner

RFC8032_SECRET = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
PUBLIC_HEX = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
KEY_ID = "4ebbe859de728e52"


def _key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(RFC8032_SECRET))


def test_the_documented_example() -> None:
    public = _key().public_key()
    assert public_key_hex(public) == PUBLIC_HEX
    assert key_id(public) == KEY_ID
    assert PayloadSigner(_key()).key_id == KEY_ID


def test_the_key_id_hashes_the_lowercase_hex_text_not_the_raw_bytes() -> None:
    assert hashlib.sha256(PUBLIC_HEX.encode("ascii")).hexdigest()[:16] == KEY_ID
    # What security.md used to say, and what it is not:
    assert hashlib.sha256(bytes.fromhex(PUBLIC_HEX)).hexdigest()[:16] != KEY_ID
