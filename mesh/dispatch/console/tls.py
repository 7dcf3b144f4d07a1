"""The console's TLS files (``--tls-cert``, ``--tls-key``), checked before it starts.

uvicorn loads them itself (``ssl_certfile``/``ssl_keyfile``), but only once it serves, and
a bad file then surfaces as ``[SSL] PEM lib (_ssl.c:…)`` deep in a traceback. Checked
here first, each problem is one line naming the option and the file.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

# A certificate chain or a key is a few kB; a larger file is not one.
_MAX_BYTES = 1 << 20


class TlsError(ValueError):
    """A TLS file the console cannot serve with; the message is one line."""


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    key_password: str | None = None


def _read(option: str, path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            data = handle.read(_MAX_BYTES + 1)
    except OSError as exc:
        raise TlsError(f"{option} {path}: {exc.strerror or exc}") from None
    if len(data) > _MAX_BYTES:
        raise TlsError(f"{option} {path}: larger than {_MAX_BYTES} bytes, not a PEM file")
    return data


def check_tls(files: TlsFiles) -> x509.Certificate:
    """The server certificate (the first of the chain), once the files are shown to work
    together; raises TlsError otherwise."""
    cert_pem = _read("--tls-cert", files.cert)
    key_pem = _read("--tls-key", files.key)
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise TlsError(f"--tls-cert {files.cert}: not a PEM certificate") from None
    password = None if files.key_password is None else files.key_password.encode()
    try:
        serialization.load_pem_private_key(key_pem, password)
    except TypeError:  # encrypted without a password, or a password for a plain key
        need = "is encrypted: give --tls-key-password" if password is None else "is not encrypted"
        raise TlsError(f"--tls-key {files.key}: the key {need}") from None
    except ValueError:
        raise TlsError(
            f"--tls-key {files.key}: not a PEM private key, or the wrong password"
        ) from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(files.cert, files.key, files.key_password)
    except ssl.SSLError as exc:
        raise TlsError(
            f"--tls-key {files.key} does not belong to --tls-cert {files.cert} ({exc.reason})"
        ) from None
    return chain[0]
