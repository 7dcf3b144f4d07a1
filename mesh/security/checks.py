"""What a device signs and what it accepts: its signing key, the trust store, the rules.

Pure checks (the trust store is data): who may sign each payload, and the time rules
that bound a command's life. The replay guard remembers signatures already acted on.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from mesh.clock import NS
from mesh.decide.rejection import Rejection
from mesh.documents import ConfigError
from mesh.protocol.models import (
    CameraAck,
    CancelAck,
    CancelRequest,
    RecordCancel,
    RecordStart,
    TriggerEvent,
)
from mesh.security.signing import P, PayloadSigner, SignedPayload
from mesh.security.trust import KeyRole, TrustStore


class SecurityConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    """Signed commands and acks (docs/security.md). Paths are relative to the config file."""

    # This device's Ed25519 key from `trigger-mesh keys new`: it signs what the device sends.
    signing_key: str | None = None
    # The trust store (`trigger-mesh keys`): with one, signed input is checked.
    trust_store: str | None = None
    # With a trust store: refuse unsigned input (false only while a fleet is provisioned).
    require_signed: bool = True
    max_command_validity_s: Annotated[float, Field(gt=0, le=3600)] = 600.0
    max_clock_skew_s: Annotated[float, Field(ge=0, le=300)] = 5.0


class CommandProblem:
    """Codes of commands refused for their timing (beside mesh.security.trust.Distrust)."""

    ISSUED_IN_FUTURE = "issued_in_future"
    VALIDITY_TOO_LONG = "validity_too_long"
    REPLAYED = "replayed"


@dataclass(frozen=True)
class Security:
    """A device's signing key (None: it signs nothing) and trust store (None: it checks
    nothing, the unsecured mode of a private test broker)."""

    signer: PayloadSigner | None = None
    trust: TrustStore | None = None
    # False lets unsigned payloads in while a fleet is being provisioned; signed ones
    # are still checked, and refused if the signature is wrong.
    require_signed: bool = True
    max_command_validity_s: float = 600.0
    max_clock_skew_s: float = 5.0

    @property
    def enforcing(self) -> bool:
        return self.trust is not None

    def sign(self, payload: P) -> P:
        return payload if self.signer is None else self.signer.sign(payload)

    def _check(
        self, payload: SignedPayload, signers: list[tuple[KeyRole, str | None]], now_ns: int
    ) -> Rejection | None:
        if self.trust is None or (payload.sig is None and not self.require_signed):
            return None
        return self.trust.check(payload, signers, now_ns=now_ns)

    def check_command(self, command: RecordStart | RecordCancel, now_ns: int) -> Rejection | None:
        """At a camera: ``precheck_command``, then the signature itself."""
        problem = self.precheck_command(command, now_ns)
        if problem is not None or self.trust is None or command.sig is None:
            return problem
        return self.trust.verify(command)

    def precheck_command(
        self, command: RecordStart | RecordCancel, now_ns: int
    ) -> Rejection | None:
        """At a camera, everything but the Ed25519 check (cheap, so it comes first): a
        record-start signed by a key of the issuing gateway (or of a dispatch console
        issuing under its own id), a record-cancel by a key of the issuing gateway only
        (dispatch cancels go through that gateway); issued no later than now (give or
        take the clock skew); a record-start valid no longer than the longest command
        life allowed."""
        if self.trust is None:
            return None
        signers: list[tuple[KeyRole, str | None]] = [(KeyRole.GATEWAY, command.issuer)]
        if isinstance(command, RecordStart):
            signers.append((KeyRole.DISPATCH, command.issuer))
        if command.sig is not None or self.require_signed:
            problem = self.trust.key_problem(command, signers, now_ns=now_ns)
            if problem is not None:
                return problem
        issued = command.issued_at_ns if isinstance(command, RecordStart) else command.at_ns
        skew_ns = int(self.max_clock_skew_s * NS)
        if issued > now_ns + skew_ns:
            ahead_s = (issued - now_ns) / NS
            return Rejection(
                CommandProblem.ISSUED_IN_FUTURE,
                f"issued {ahead_s:.1f} s in the future (clock skew allowed: "
                f"{self.max_clock_skew_s:g} s)",
            )
        if isinstance(command, RecordStart):
            life_s = (command.expires_at_ns - command.issued_at_ns) / NS
            if life_s > self.max_command_validity_s:
                return Rejection(
                    CommandProblem.VALIDITY_TOO_LONG,
                    f"valid for {life_s:.0f} s; at most {self.max_command_validity_s:g} s allowed",
                )
        return None

    def check_ack(self, ack: CameraAck | CancelAck, now_ns: int) -> Rejection | None:
        """At a gateway: signed by the camera it speaks for."""
        return self._check(ack, [(KeyRole.CAMERA, ack.camera_id)], now_ns)

    def check_request(
        self, request: TriggerEvent | CancelRequest, gateway_id: str, now_ns: int
    ) -> Rejection | None:
        """At a gateway, a trigger or cancel that came over MQTT: signed by a dispatch
        console, or by this gateway's own key (its in-car terminal)."""
        signers: list[tuple[KeyRole, str | None]] = [
            (KeyRole.DISPATCH, None),
            (KeyRole.GATEWAY, gateway_id),
        ]
        return self._check(request, signers, now_ns)


class ReplayGuard:
    """Signatures already acted on, each remembered until its command expires: the same
    signed command arriving again (a replay, or the broker's duplicate) is not acted on
    twice. Bounded: past ``capacity`` the oldest are forgotten (expiry still applies)."""

    def __init__(self, capacity: int = 8192) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[str, int] = OrderedDict()

    def first_time(self, signature: str, until_ns: int, now_ns: int) -> bool:
        """True the first time ``signature`` is seen (and remembers it); False after."""
        while self._seen:
            oldest, expiry = next(iter(self._seen.items()))
            if expiry >= now_ns and len(self._seen) < self.capacity:
                break
            del self._seen[oldest]
        if signature in self._seen:
            return False
        self._seen[signature] = until_ns
        return True


def load_security(config: SecurityConfig, config_path: Path | str) -> Security:
    """The Security a config file describes; ConfigError naming the key if a file is bad."""
    from mesh.security.keys import KeyFileError

    base = Path(config_path).parent
    signer = trust = None
    if config.signing_key is not None:
        try:
            signer = PayloadSigner.from_file(_resolve(base, config.signing_key))
        except KeyFileError as exc:
            raise ConfigError(config_path, "security.signing_key", str(exc)) from None
    if config.trust_store is not None:
        path = _resolve(base, config.trust_store)
        if not path.exists():
            raise ConfigError(config_path, "security.trust_store", f"{path} does not exist")
        trust = TrustStore.load(path)
    return Security(
        signer=signer,
        trust=trust,
        require_signed=config.require_signed,
        max_command_validity_s=config.max_command_validity_s,
        max_clock_skew_s=config.max_clock_skew_s,
    )


def _resolve(base: Path, name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else base / path
