"""Signed messages: a JWS in the flattened JSON serialisation (RFC 7515 §7.2.2), EdDSA
(RFC 8037), over the payload's exact bytes (docs/security.md, "What a signature covers").

This module is the envelope only: telling a signed message from a plain payload, taking
one apart and putting one together. No key is used here; signing and verifying are
``mesh.security.signing``'s. A receiver verifies ``signing_input`` before it parses
``payload_bytes``.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field
from pydantic_core import from_json

from mesh.protocol.codec import PayloadError
from mesh.protocol.models import Frozen

ALG = "EdDSA"  # what a signer writes (RFC 8037): the name every JOSE library knows
# What a receiver accepts: also RFC 9864's fully-specified name of the same algorithm
# (Ed25519 keys are the only keys of the protocol, so both mean Ed25519).
ACCEPTED_ALGS = (ALG, "Ed25519")
TYP = "trigger-mesh+json"
KID = re.compile(r"[0-9a-f]{16}")
# RFC 7515 §2: base64url without padding. An Ed25519 signature is 64 bytes: 86 characters.
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_SIGNATURE_CHARS = 86
# The protected header a sender writes; receivers read any JSON spelling of it.
_HEADER_KEYS = frozenset({"alg", "kid", "typ"})


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    """Raises ValueError unless ``text`` is unpadded base64url in its one canonical
    spelling: the unused low bits of its last character zero. Decoders ignore those bits,
    so without this check four texts name the same signature, and a replay guard keyed
    on the text (a camera's) would take each re-spelling for a new command."""
    if _B64URL.fullmatch(text) is None or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not unpadded base64url") from exc
    if b64url(data) != text:
        raise ValueError("not canonical base64url (unused bits of the last character set)")
    return data


@dataclass(frozen=True)
class Jws:
    """One signed message, as received (or as it will be sent): the three texts."""

    protected: str
    payload: str
    signature: str
    kid: str  # from the protected header

    @property
    def signing_input(self) -> bytes:
        """What the Ed25519 signature is over: ``protected.payload``, ASCII."""
        return f"{self.protected}.{self.payload}".encode("ascii")

    @property
    def signature_bytes(self) -> bytes:
        return unb64url(self.signature)

    @property
    def payload_bytes(self) -> bytes:
        return unb64url(self.payload)

    def to_json(self) -> str:
        return json.dumps(
            {"protected": self.protected, "payload": self.payload, "signature": self.signature},
            separators=(",", ":"),
        )

    def to_bytes(self) -> bytes:
        return self.to_json().encode("ascii")

    def as_dict(self) -> dict[str, str]:
        return {"protected": self.protected, "payload": self.payload, "signature": self.signature}


class JwsMessage(Frozen):
    """A signed message: a JWS in the flattened JSON serialisation (RFC 7515 §7.2.2) with
    EdDSA (RFC 8037). Its payload member is the payload's UTF-8 JSON bytes, base64url; the
    signature is Ed25519 over ``protected + "." + payload``; the protected header is
    ``{"alg": "EdDSA", "kid": <key id>, "typ": "trigger-mesh+json"}`` (docs/security.md,
    "What a signature covers"). A receiver verifies before it parses the payload.

    (The schema of the envelope, for documents; receivers use ``parse``.)"""

    protected: Annotated[
        str,
        Field(
            pattern=r"^[A-Za-z0-9_-]+$",
            description="base64url (no padding) of the protected header: "
            '{"alg":"EdDSA","kid":…,"typ":"trigger-mesh+json"}',
        ),
    ]
    payload: Annotated[
        str,
        Field(
            pattern=r"^[A-Za-z0-9_-]+$",
            description="base64url (no padding) of the payload's exact UTF-8 JSON bytes",
        ),
    ]
    signature: Annotated[
        str,
        Field(
            pattern=r"^[A-Za-z0-9_-]{86}$",
            description="base64url (no padding) of the 64-byte Ed25519 signature over "
            "ASCII(protected) || '.' || ASCII(payload)",
        ),
    ]


def protected_header(kid: str) -> str:
    """The protected header a signer with key ``kid`` puts on every message."""
    header = json.dumps({"alg": ALG, "kid": kid, "typ": TYP}, separators=(",", ":"))
    return b64url(header.encode("ascii"))


def is_signed(message: bytes | bytearray) -> bool:
    """Whether a message may be a JWS rather than a plain payload: its top-level object
    has a ``signature`` member (no payload has a field of that name). A cheap test on the
    bytes, so that plain payloads are not parsed twice: the member's name written out, or
    any JSON escape that could spell it (``\u0073ignature``); ``parse`` decides for good."""
    return b'"signature"' in message or b"\\u" in message


def parse(message: bytes | bytearray | str) -> Jws:
    """The JWS in ``message``, its header checked; PayloadError ``bad_jws`` naming what is
    wrong. The payload is neither verified nor parsed here."""
    try:
        document = from_json(message)
    except ValueError as exc:
        raise PayloadError("not_json", f"not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise PayloadError("not_object", "payload must be a JSON object")
    return from_members(document)


def from_members(document: dict[str, object]) -> Jws:
    """A JWS from its decoded members (a log record keeps them as an object)."""
    texts: dict[str, str] = {}
    for member in ("protected", "payload", "signature"):
        value = document.get(member)
        if not isinstance(value, str):
            raise PayloadError("bad_jws", f"member '{member}' missing or not a string")
        try:
            unb64url(value)
        except ValueError as exc:
            raise PayloadError("bad_jws", f"member '{member}': {exc}") from None
        texts[member] = value
    if len(texts["signature"]) != _SIGNATURE_CHARS:
        raise PayloadError(
            "bad_jws",
            f"signature is {len(texts['signature'])} characters; an Ed25519 signature is "
            f"{_SIGNATURE_CHARS}",
        )
    kid = _header_kid(texts["protected"])
    return Jws(texts["protected"], texts["payload"], texts["signature"], kid)


def _shown(value: object) -> str:
    """An unverified value, as a reason may quote it: at most 40 characters."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _header_kid(protected: str) -> str:
    try:
        header = from_json(unb64url(protected))
    except ValueError:
        raise PayloadError("bad_jws", "protected header is not base64url of JSON") from None
    if not isinstance(header, dict):
        raise PayloadError("bad_jws", "protected header is not a JSON object")
    if "crit" in header:
        raise PayloadError("bad_jws", "protected header has 'crit': no extension is understood")
    missing = sorted(_HEADER_KEYS - header.keys())
    if missing:
        raise PayloadError("bad_jws", f"protected header lacks {', '.join(missing)}")
    if header["alg"] not in ACCEPTED_ALGS:
        accepted = " or ".join(repr(alg) for alg in ACCEPTED_ALGS)
        raise PayloadError("bad_jws", f"alg {_shown(header['alg'])}; only {accepted} is accepted")
    if header["typ"] != TYP:
        raise PayloadError("bad_jws", f"typ {_shown(header['typ'])}; expected {TYP!r}")
    kid = header["kid"]
    if not isinstance(kid, str) or KID.fullmatch(kid) is None:
        raise PayloadError("bad_jws", f"kid {_shown(kid)} is not 16 lowercase hex digits")
    return kid
