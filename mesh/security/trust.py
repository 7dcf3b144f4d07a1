"""The trust store: which Ed25519 public keys may sign what, and for how long.

One YAML file, public keys only (safe to copy to every device), kept by
``trigger-mesh keys``. Each key has a role (gateway, camera, dispatch) and a subject (the
gateway, camera or console id it speaks for), an optional validity window (rotation
retires a key by giving it a ``not_after``) and an optional revocation time.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from mesh.decide.rejection import Rejection
from mesh.documents import ConfigError, read_yaml, validate
from mesh.protocol.jws import Jws
from mesh.protocol.models import Ident

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class KeyRole(StrEnum):
    GATEWAY = "gateway"  # signs record-start and record-cancel commands
    CAMERA = "camera"  # signs its acks
    DISPATCH = "dispatch"  # signs remote activations and cancel requests


class Distrust(StrEnum):
    """Why a signed payload was not trusted (stable codes, for counters and acks)."""

    UNSIGNED = "unsigned"
    UNKNOWN_KEY = "unknown_key"
    WRONG_SIGNER = "wrong_signer"  # a known key, but not one allowed to sign this payload
    BAD_SIGNATURE = "bad_signature"
    REVOKED = "key_revoked"
    NOT_YET_VALID = "key_not_yet_valid"
    KEY_EXPIRED = "key_expired"


_TIME = "RFC 3339 date-time with its offset (Z or +hh:mm)"


class TrustedKey(BaseModel):
    """One public key, what it may sign and when (docs/security.md, "The trust store file")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key_id: Annotated[
        str,
        Field(
            pattern=r"^[0-9a-f]{16}$",
            description="First 16 hex digits of SHA-256 over public_key's 64 hex characters",
        ),
    ]
    role: Annotated[KeyRole, Field(description="What the key may sign")]
    subject: Annotated[Ident, Field(description="The gateway, camera or console id it speaks for")]
    public_key: Annotated[
        str,
        Field(pattern=r"^[0-9a-f]{64}$", description="The 32 raw bytes of the Ed25519 key, hex"),
    ]
    not_before: Annotated[
        AwareDatetime | None, Field(description=f"Valid from (null: always); {_TIME}")
    ] = None
    not_after: Annotated[
        AwareDatetime | None, Field(description=f"Retired from (null: never); {_TIME}")
    ] = None
    revoked_at: Annotated[
        AwareDatetime | None, Field(description=f"Refused from (null: not revoked); {_TIME}")
    ] = None
    note: Annotated[str, Field(max_length=256, description="Free text for people")] = ""

    def problem_at(self, now_ns: int) -> Rejection | None:
        """Is this key usable at ``now_ns``, and if not, why."""
        now = datetime.fromtimestamp(now_ns / 1e9, UTC)
        if self.revoked_at is not None and now >= self.revoked_at:
            return Rejection(
                Distrust.REVOKED, f"key {self.key_id} revoked at {_iso(self.revoked_at)}"
            )
        if self.not_before is not None and now < self.not_before:
            return Rejection(
                Distrust.NOT_YET_VALID, f"key {self.key_id} is valid from {_iso(self.not_before)}"
            )
        if self.not_after is not None and now >= self.not_after:
            return Rejection(
                Distrust.KEY_EXPIRED, f"key {self.key_id} retired at {_iso(self.not_after)}"
            )
        return None


def trusted_key(
    public: Ed25519PublicKey, role: KeyRole, subject: str, *, note: str = ""
) -> TrustedKey:
    """The trust-store entry of a public key (valid from now until retired or revoked)."""
    from mesh.security.keys import key_id, public_key_hex

    return TrustedKey(
        key_id=key_id(public),
        role=role,
        subject=subject,
        public_key=public_key_hex(public),
        note=note,
    )


class _TrustFile(BaseModel):
    """A trust store: public keys and what each may sign (docs/security.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="TrustStore")

    version: Literal[1] = 1
    keys: tuple[TrustedKey, ...] = ()


# Beside the payload schemas that `trigger-mesh schema` writes (mesh.protocol.schema).
TRUST_STORE_SCHEMA_FILE = "trust-store.schema.json"


def trust_store_schema() -> dict[str, Any]:
    """The JSON Schema of the trust store file. ``version`` and ``keys`` are required of a
    writer (``keys`` writes both), though the loader reads a file without them as
    version 1 with no keys."""
    schema = _TrustFile.model_json_schema()
    schema["required"] = ["version", "keys"]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://trigger-mesh.example/schemas/v1/{TRUST_STORE_SCHEMA_FILE}"
    return schema


def write_trust_store_schema(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / TRUST_STORE_SCHEMA_FILE
    path.write_text(json.dumps(trust_store_schema(), indent=2, sort_keys=True) + "\n")
    return path


class TrustStore:
    def __init__(self, keys: Iterable[TrustedKey] = ()) -> None:
        self.keys: dict[str, TrustedKey] = {}
        self._public: dict[str, Ed25519PublicKey] = {}
        # Every (role, subject) with a key, for a look-up per message (a camera checks
        # each own-topic message's claimed issuer as it is read).
        self._subjects: set[tuple[KeyRole, str]] = set()
        for key in keys:
            self._put(key)

    # --- file ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path | str, *, missing_ok: bool = False) -> TrustStore:
        """Raises ConfigError naming the file, the place in it that is wrong and, for an
        entry, the key it describes (its key_id, role and subject as written)."""
        path = Path(path)
        if missing_ok and not path.exists():
            return cls()
        data = read_yaml(path)
        try:
            parsed = validate(_TrustFile, {} if data is None else data, path)
        except ConfigError as exc:
            raise ConfigError(path, exc.key, exc.problem + _entry_named(data, exc.key)) from None
        store = cls()
        first: dict[str, int] = {}
        for index, key in enumerate(parsed.keys):
            if key.key_id in first:
                raise ConfigError(
                    path,
                    f"keys.{index}.key_id",
                    f"key {key.key_id} is listed twice (also keys.{first[key.key_id]}): "
                    "one entry per key",
                )
            first[key.key_id] = index
            try:
                store._put(key)
            except ValueError as exc:
                raise ConfigError(path, f"keys.{index}", str(exc)) from None
        return store

    def document(self) -> dict[str, Any]:
        """The trust store file's content (docs/schemas/trust-store.schema.json), as data."""
        return _TrustFile(keys=tuple(self.keys.values())).model_dump(mode="json")

    def save(self, path: Path | str) -> None:
        """Written whole to a temporary file, then renamed over the old one."""
        path = Path(path)
        body = self.document()
        text = (
            "# trigger-mesh trust store: public keys and what each may sign (docs/security.md).\n"
            "# Public: copy it to every gateway, camera and console; edit: `trigger-mesh keys`.\n"
            + yaml.safe_dump(body, sort_keys=False)
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)

    # --- editing ------------------------------------------------------------------------
    def add(self, key: TrustedKey) -> None:
        if key.key_id in self.keys:
            raise ValueError(f"key {key.key_id} is already in the trust store")
        self._put(key)

    def replace(self, key: TrustedKey) -> None:
        """Change a key's window or revocation (the key material itself never changes)."""
        old = self.keys.get(key.key_id)
        if old is None:
            raise ValueError(f"no key {key.key_id} in the trust store")
        if old.public_key != key.public_key:
            raise ValueError(f"key {key.key_id}: the public key cannot change")
        self.keys[key.key_id] = key
        self._subjects.add((key.role, key.subject))

    def rotate(self, new: TrustedKey, *, now: datetime, overlap: timedelta) -> list[TrustedKey]:
        """Add ``new`` and retire the other keys of its role and subject at ``now +
        overlap`` (sooner if they already end sooner): devices still holding the old key
        are believed until then. Returns the retired keys as they are now."""
        until = now + overlap
        retired = []
        for key in self.find(new.role, new.subject):
            if key.revoked_at is None and (key.not_after is None or key.not_after > until):
                key = key.model_copy(update={"not_after": until})  # noqa: PLW2901
                self.replace(key)
            retired.append(key)
        self.add(new)
        return retired

    def revoke(self, key_id: str, at: datetime) -> TrustedKey:
        key = self.keys.get(key_id)
        if key is None:
            raise ValueError(f"no key {key_id} in the trust store")
        revoked = key.model_copy(update={"revoked_at": at})
        self.replace(revoked)
        return revoked

    def find(self, role: KeyRole, subject: str) -> list[TrustedKey]:
        return [k for k in self.keys.values() if k.role is role and k.subject == subject]

    def has_subject(self, role: KeyRole, subject: str) -> bool:
        """Whether any key (valid or not) is held for ``subject`` in ``role``."""
        return (role, subject) in self._subjects

    def _put(self, key: TrustedKey) -> None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        from mesh.security.keys import key_id

        public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(key.public_key))
        if key_id(public) != key.key_id:
            raise ValueError(
                f"key_id {key.key_id} does not match its public key ({key_id(public)})"
            )
        self.keys[key.key_id] = key
        self._public[key.key_id] = public
        self._subjects.add((key.role, key.subject))

    # --- checking -----------------------------------------------------------------------
    def verify(self, jws: Jws) -> TrustedKey | Rejection:
        """Steps 2 and 3 of a receiver's check (docs/security.md): the key ``kid`` names
        is known, and the signature over the signing input is its. Nothing is parsed."""
        from cryptography.exceptions import InvalidSignature

        key = self.keys.get(jws.kid)
        public = self._public.get(jws.kid)
        if key is None or public is None:
            return Rejection(Distrust.UNKNOWN_KEY, f"signed by unknown key {jws.kid}")
        try:
            public.verify(jws.signature_bytes, jws.signing_input)
        except (InvalidSignature, ValueError):
            return Rejection(
                Distrust.BAD_SIGNATURE, f"signature by key {jws.kid} does not match the bytes sent"
            )
        return key

    def known_subject(self, kid: str) -> tuple[KeyRole, str] | None:
        """The role and subject of key ``kid``, if the store holds it (no check made)."""
        key = self.keys.get(kid)
        return None if key is None else (key.role, key.subject)

    @staticmethod
    def signer_problem(
        key: TrustedKey,
        payload_type: str,
        signers: Iterable[tuple[KeyRole, str | None]],
        *,
        now_ns: int,
    ) -> Rejection | None:
        """Steps 5 and 6, once the signature verified: the key may sign this payload
        (role and subject; subject None: any of that role) and is valid now."""
        allowed = list(signers)
        if not any(
            key.role is role and subject in (None, key.subject) for role, subject in allowed
        ):
            wanted = " or ".join(f"{r.value} {s or '(any)'}" for r, s in allowed)
            return Rejection(
                Distrust.WRONG_SIGNER,
                f"signed by {key.role.value} {key.subject} (key {key.key_id}); "
                f"{payload_type} must be signed by {wanted}",
            )
        return key.problem_at(now_ns)


def _entry_named(data: object, key: str) -> str:
    """`` (key_id …, role …, subject …)`` for an error inside ``keys.N``, from what the
    entry says (whatever of it is text); empty otherwise."""
    parts = key.split(".")
    if len(parts) < 2 or parts[0] != "keys" or not parts[1].isdigit():
        return ""
    entries = data.get("keys") if isinstance(data, dict) else None
    index = int(parts[1])
    if not isinstance(entries, list) or index >= len(entries):
        return ""
    entry = entries[index]
    if not isinstance(entry, dict):
        return ""
    named = [
        f"{f} {entry[f]}" for f in ("key_id", "role", "subject") if isinstance(entry.get(f), str)
    ]
    return f" (the entry of {', '.join(named)})" if named else ""


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
