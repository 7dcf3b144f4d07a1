"""mosquitto 2.x password-file lines, in pure Python (no ``mosquitto_passwd`` needed).

The format is ``user:$7$ITERATIONS$SALT$HASH``: PBKDF2-HMAC-SHA512 of the password over a
12-byte random salt, salt and 64-byte hash in standard base64. The broker reads the
iteration count from the line, so any count works.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SALT_BYTES = 12  # what mosquitto_passwd uses
HASH_BYTES = 64  # SHA-512
# Every connect costs the broker one hash. The generated passwords are 192 random bits, so
# the count guards only against weak hand-set ones; 1000 keeps a reconnect storm cheap.
ITERATIONS = 1000


def password_line(
    user: str, password: str, *, iterations: int = ITERATIONS, salt: bytes | None = None
) -> str:
    """One line of a mosquitto ``password_file`` (without the newline)."""
    if not user or ":" in user or any(c.isspace() for c in user):
        raise ValueError(f"password-file user {user!r} must be non-empty, without ':' or spaces")
    if iterations < 1:
        raise ValueError("iterations must be positive")
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, HASH_BYTES)
    return f"{user}:$7${iterations}${_b64(salt)}${_b64(digest)}"


def verify_line(line: str, password: str) -> bool:
    """Whether ``password`` matches a ``$7$`` line (as the broker would decide)."""
    _, _, stored = line.strip().partition(":")
    parts = stored.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    iterations, salt, expected = int(parts[2]), base64.b64decode(parts[3]), parts[4]
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, HASH_BYTES)
    return hmac.compare_digest(_b64(digest), expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")
