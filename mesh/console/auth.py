"""Who may use the console: a users file of names, roles and scrypt password hashes.

    users:
      alice: {role: dispatcher, password: "scrypt$16384$8$1$<salt hex>$<hash hex>"}
      bob: {role: viewer, password: "scrypt$…"}

``viewer`` sees everything; ``dispatcher`` may also activate and cancel. Passwords are
checked with HTTP Basic authentication: serve the console on a closed network, or behind
TLS (uvicorn's --ssl options, or a reverse proxy), never in clear over an open one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field

from mesh.config import read_yaml, validate

# scrypt cost: 16 MiB and ~50 ms per check on this machine; RFC 7914 §2 gives the roles of
# N, r, p. The parameters are stored with each hash, so they can be raised later.
_N, _R, _P = 1 << 14, 8, 1


class Role(StrEnum):
    VIEWER = "viewer"
    DISPATCHER = "dispatcher"


class _User(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    password: Annotated[str, Field(pattern=r"^scrypt\$\d+\$\d+\$\d+\$[0-9a-f]+\$[0-9a-f]+$")]


class _UsersFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    users: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")], _User]


@dataclass(frozen=True)
class User:
    name: str
    role: Role

    @property
    def may_dispatch(self) -> bool:
        return self.role is Role.DISPATCHER


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return f"scrypt${_N}${_R}${_P}${salt.hex()}${digest.hex()}"


def check_password(password: str, stored: str) -> bool:
    _, n, r, p, salt, digest = stored.split("$")
    computed = hashlib.scrypt(
        password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32
    )
    return hmac.compare_digest(computed.hex(), digest)


class Users:
    def __init__(self, entries: dict[str, _User]) -> None:
        self._entries = entries
        # Checking scrypt costs ~50 ms: a page's every request must not pay it again. The
        # cache key is keyed with a secret of this process, so it reveals no password.
        self._verified: dict[tuple[str, str], User] = {}
        self._cache_key = os.urandom(32)

    @classmethod
    def load(cls, path: Path | str) -> Users:
        data = read_yaml(path)
        if data is None:
            data = {"users": {}}
        return cls(dict(validate(_UsersFile, data, path).users))

    def authenticate(self, header: str | None) -> User | None:
        """The user of an ``Authorization: Basic …`` header, or None."""
        if not header or not header.startswith("Basic "):
            return None
        try:
            name, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        key = (name, hmac.new(self._cache_key, password.encode(), "sha256").hexdigest())
        if key in self._verified:
            return self._verified[key]
        entry = self._entries.get(name)
        if entry is None or not check_password(password, entry.password):
            return None
        user = User(name, entry.role)
        self._verified[key] = user
        return user


def add_user(path: Path, name: str, role: Role, password: str) -> None:
    """Add or replace one user in a users file (created if missing)."""
    data: dict[str, dict[str, dict[str, str]]] = {"users": {}}
    if path.exists():
        loaded = read_yaml(path) or {"users": {}}
        data = {"users": dict(loaded.get("users") or {})}
    data["users"][name] = {"role": role.value, "password": hash_password(password)}
    _UsersFile.model_validate(data)  # refuse to write a file we could not read back
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=True))
    path.chmod(0o600)
