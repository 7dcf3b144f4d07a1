"""A small certificate authority for the broker's TLS: a CA, server and client certificates.

ECDSA P-256 with SHA-256 throughout: every OpenSSL that mosquitto or Python links against
accepts it, and keys are small enough for cameras. Certificates are PEM; private keys are
unencrypted PKCS#8 PEM (mosquitto cannot prompt for a passphrase) and are created with
mode 0600 (never world-readable, not even for an instant).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Names become file names and certificate common names (the broker username in cert mode).
_NAME_RE = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
# Certificates start a little in the past: a device whose clock lags must still accept them.
_BACKDATE = dt.timedelta(minutes=5)


class PkiError(ValueError):
    """A certificate could not be made (a bad name or host, an existing CA, an unusable key)."""


@dataclass(frozen=True)
class CertPair:
    """A certificate and its private key, both PEM files."""

    cert: Path
    key: Path


def new_ca(out_dir: Path, name: str = "trigger-mesh CA", days: int = 3650) -> CertPair:
    """A self-signed CA: ``out_dir/ca.crt`` and ``out_dir/private/ca.key`` (0600).

    An existing CA is never replaced: every certificate it issued would stop working.
    """
    cert_path, key_path = out_dir / "ca.crt", out_dir / "private" / "ca.key"
    for path in (cert_path, key_path):
        if path.exists():
            raise PkiError(f"{path} exists: refusing to replace a CA (remove it to start over)")
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        _builder(subject, subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    key_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_key(key_path, key, replace=False)
    _write_cert(cert_path, cert)
    return CertPair(cert_path, key_path)


def issue_server(
    ca: CertPair,
    out_dir: Path,
    name: str,
    hosts: Sequence[str],
    days: int = 825,
    *,
    client_too: bool = False,
) -> CertPair:
    """A TLS server certificate ``out_dir/NAME.crt`` + ``.key`` valid for ``hosts`` (DNS
    names and IP addresses, in the subjectAltName: what clients check the host against).
    ``client_too``: also a client certificate (a cluster's nodes connect to each other)."""
    if not hosts:
        raise PkiError("a server certificate needs at least one host name or address")
    san = x509.SubjectAlternativeName([_general_name(h) for h in hosts])
    usages = [ExtendedKeyUsageOID.SERVER_AUTH]
    if client_too:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    eku = x509.ExtendedKeyUsage(usages)
    return _issue(ca, out_dir, name, days, [(san, False), (eku, False)])


def issue_client(ca: CertPair, out_dir: Path, common_name: str, days: int = 825) -> CertPair:
    """A TLS client certificate ``out_dir/CN.crt`` + ``.key``; with the broker's
    ``use_identity_as_username`` the common name is the MQTT username the ACL names."""
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH])
    return _issue(ca, out_dir, common_name, days, [(eku, False)])


def check_ca(ca: CertPair) -> None:
    """Raise PkiError unless ``ca`` is a CA certificate with its own (EC or RSA) key."""
    _load_ca(ca)


def check_host(host: str) -> None:
    """Raise PkiError unless ``host`` can go in a server certificate (DNS name or IP)."""
    _general_name(host)


def check_name(name: str) -> str:
    """A principal or certificate name: an identifier of the protocol, usable as a file name."""
    if not _NAME_RE.match(name) or name in (".", ".."):
        raise PkiError(f"name {name!r} must be 1-64 of [A-Za-z0-9._:-] (and not . or ..)")
    return name


# --- internals ------------------------------------------------------------------------------
Extension = tuple[x509.ExtensionType, bool]


def _issue(
    ca: CertPair, out_dir: Path, name: str, days: int, extensions: list[Extension]
) -> CertPair:
    check_name(name)
    ca_cert, ca_key = _load_ca(ca)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        _builder(subject, ca_cert.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(ca=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(_authority_key_id(ca_cert), False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    cert = builder.sign(ca_key, hashes.SHA256())
    out_dir.mkdir(parents=True, exist_ok=True)
    pair = CertPair(out_dir / f"{name}.crt", out_dir / f"{name}.key")
    # A re-issue replaces the old pair: the key first, so a crash leaves no cert for it.
    _write_key(pair.key, key, replace=True)
    _write_cert(pair.cert, cert)
    return pair


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    if days < 1:
        raise PkiError(f"validity must be at least one day, not {days}")
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        # 159 random bits: positive, under the 20-byte limit, unpredictable.
        .serial_number(secrets.randbits(159) | 1)
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not re.fullmatch(r"(?=.{1,253}$)[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?", host):
        raise PkiError(f"{host!r} is neither an IP address nor a DNS name")
    return x509.DNSName(host.lower())


CaKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _load_ca(ca: CertPair) -> tuple[x509.Certificate, CaKey]:
    """An agency's own CA may be RSA; what this module makes is always P-256."""
    try:
        cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
        key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"cannot load the CA {ca.cert} / {ca.key}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise PkiError(f"CA key {ca.key} is neither an EC nor an RSA key")
    if key.public_key() != cert.public_key():
        raise PkiError(f"CA key {ca.key} does not belong to {ca.cert}")
    try:
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise PkiError(f"{ca.cert} is not a CA certificate (basicConstraints CA:TRUE)")
    return cert, key


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """Names the issuing key the way the CA names itself (strict verifiers compare them)."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, *, replace: bool) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(path, data, replace=replace)


def write_private(path: Path, data: bytes, *, replace: bool) -> None:
    """Write a secret with mode 0600 from its creation. ``replace``: an existing file is
    swapped for the new one atomically (a temporary file renamed over it); otherwise an
    existing file is an error."""
    target = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp") if replace else path
    try:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise PkiError(f"{path} exists: refusing to overwrite it") from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        if replace:
            os.replace(target, path)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    path.chmod(0o644)
