"""Who may use the console: a users file of names, roles and scrypt password hashes.

    users:
      alice: {role: dispatcher, password: "scrypt$16384$8$1$<salt hex>$<hash hex>"}
      bob: {role: viewer, password: "scrypt$…"}

``viewer`` sees everything; ``dispatcher`` may also activate and cancel. Passwords are
checked with HTTP Basic authentication: serve the console on a closed network, or over
TLS (``--tls-cert``/``--tls-key``, or a reverse proxy), never in clear over an open one.

A login costs the same whether the user exists or not (an unknown name is checked against
a dummy hash), runs in a small thread pool rather than on the event loop (at most
``LoginLimits.concurrent_checks`` at once; more are refused at once, 503), and failures back
off per client address and per user name (429; see throttle.py). Credentials that passed
once from an address are remembered for that address (keyed with a secret of this
process), so an open page pays scrypt once and is not locked out by someone guessing its
user's password elsewhere; from any other address they wait out the back-off like a
guess, or a blocked guesser could still tell the right password by its answer.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import math
import os
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field

from mesh.dispatch.console.throttle import FailureBackoff, LoginLimits
from mesh.documents import read_yaml, validate

# scrypt cost: 16 MiB and ~50 ms per check on this machine; RFC 7914 §2 gives the roles of
# N, r, p. The parameters are stored with each hash, so they can be raised later.
_N, _R, _P = 1 << 14, 8, 1
# Credentials that passed, remembered; at the cap the oldest is forgotten (it pays scrypt again).
_MAX_REMEMBERED = 1024


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


class LoginRefused(Exception):
    """Not checked at all: backed off (429) or too many checks running (503)."""

    def __init__(self, status: int, detail: str, retry_after_s: float) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.retry_after_s = max(1, math.ceil(retry_after_s))


class Users:
    def __init__(self, entries: dict[str, _User], limits: LoginLimits | None = None) -> None:
        self._entries = entries
        self.limits = limits or LoginLimits()
        # Checking scrypt costs ~50 ms: a page's every request must not pay it again. The
        # cache key is keyed with a secret of this process, so it reveals no password.
        self._verified: OrderedDict[tuple[str, str, str], User] = OrderedDict()
        self._cache_key = os.urandom(32)
        # An unknown name is checked against this, so that it costs what a known one does.
        self._dummy_hash = hash_password(os.urandom(16).hex())
        self._by_address = FailureBackoff(self.limits)
        self._by_user = FailureBackoff(self.limits)
        self._checking = 0
        self._pool = ThreadPoolExecutor(
            max_workers=self.limits.concurrent_checks, thread_name_prefix="console-login"
        )

    @classmethod
    def load(cls, path: Path | str, limits: LoginLimits | None = None) -> Users:
        data = read_yaml(path)
        if data is None:
            data = {"users": {}}
        return cls(dict(validate(_UsersFile, data, path).users), limits)

    async def authenticate(self, header: str | None, client: str = "") -> User | None:
        """The user of an ``Authorization: Basic …`` header, or None; ``client`` is the
        caller's address. Raises LoginRefused when the password is not even checked."""
        if not header or not header.startswith("Basic "):
            return None
        try:
            name, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        key = (client, name, hmac.new(self._cache_key, password.encode(), "sha256").hexdigest())
        if (known := self._verified.get(key)) is not None:
            return known
        now = time.monotonic()
        address, user_key = f"address {client}", f"user {name}"
        wait = max(self._by_address.wait_s(address, now), self._by_user.wait_s(user_key, now))
        if wait > 0:
            raise LoginRefused(429, "too many failed logins: wait, then try again", wait)
        if self._checking >= self.limits.concurrent_checks:
            raise LoginRefused(503, "too many logins at once: try again", 1)
        entry = self._entries.get(name)
        stored = self._dummy_hash if entry is None else entry.password
        self._checking += 1
        try:
            loop = asyncio.get_running_loop()
            matches = await loop.run_in_executor(self._pool, check_password, password, stored)
        finally:
            self._checking -= 1
        now = time.monotonic()
        if entry is None or not matches:
            self._by_address.failed(address, now)
            self._by_user.failed(user_key, now)
            return None
        self._by_address.succeeded(address)
        self._by_user.succeeded(user_key)
        user = User(name, entry.role)
        self._verified[key] = user
        while len(self._verified) > _MAX_REMEMBERED:
            self._verified.popitem(last=False)
        return user

    @property
    def tracked(self) -> tuple[int, int]:
        """Addresses and user names with recent failures (bounded by ``max_tracked``)."""
        return len(self._by_address), len(self._by_user)


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
