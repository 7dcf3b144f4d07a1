"""What a device signs and what it accepts: its signing key, the trust store, the rules.

Pure checks (the trust store is data): who may sign each payload, and the time rules
that bound a command's life. The replay guard remembers signatures already acted on.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import from_json

from mesh.clock import NS
from mesh.decide.rejection import Rejection
from mesh.documents import ConfigError
from mesh.protocol.codec import DEFAULT_MAX_BYTES, PayloadError, decode, encode
from mesh.protocol.jws import Jws, from_members, is_signed
from mesh.protocol.models import (
    CameraAck,
    CancelAck,
    CancelRequest,
    RecordCancel,
    RecordingMessage,
    RecordStart,
    TriggerEvent,
)
from mesh.security.signing import PayloadSigner
from mesh.security.trust import Distrust, KeyRole, TrustedKey, TrustStore


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


M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Received(Generic[M]):
    """A message as it arrived: the payload, and if it came signed, the JWS (verified when
    ``key`` is set: the trust store's key that signed it)."""

    model: M
    jws: Jws | None = None
    key: TrustedKey | None = None

    @property
    def signature(self) -> str | None:
        """The JWS signature text: what identifies a signed command (replay memory)."""
        return None if self.jws is None else self.jws.signature


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

    # --- sending ------------------------------------------------------------------------
    def seal(self, payload: BaseModel) -> bytes:
        """What goes on the wire: a JWS of the payload with a signing key, else the payload."""
        if self.signer is None:
            return encode(payload)
        return self.signer.seal(payload).to_bytes()

    # --- receiving ----------------------------------------------------------------------
    def unwrap(
        self, message: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> tuple[bytes, Jws | None, TrustedKey | None]:
        """Steps 1-3 of a receiver's check (docs/security.md): a signed message's envelope,
        and with a trust store its key and signature. Returns the payload bytes to parse
        (the message itself when it is not signed), the JWS and the key that verified it.
        PayloadError (``too_large``, ``bad_jws``, ``unknown_key``, ``bad_signature``) for a
        message refused here: nothing of it may be parsed or answered."""
        if len(message) > max_bytes:
            raise PayloadError(
                "too_large", f"{len(message)} bytes exceeds the {max_bytes}-byte limit"
            )
        jws = signed_envelope(message)
        if jws is None:
            return message, None, None
        key = None
        if self.trust is not None:
            verified = self.trust.verify(jws)
            if isinstance(verified, Rejection):
                raise PayloadError(verified.code, verified.reason)
            key = verified
        try:
            return jws.payload_bytes, jws, key
        except ValueError:
            raise PayloadError("bad_jws", "payload is not base64url") from None

    def open(
        self, model: type[M], message: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> Received[M]:
        """``unwrap``, then the payload parsed (step 4): PayloadError for whatever is wrong.
        Who signed it and when is ``check_*``'s business."""
        payload, jws, key = self.unwrap(message, max_bytes=max_bytes)
        return Received(decode(model, payload, max_bytes=max_bytes), jws, key)

    def _signer_problem(
        self,
        received: Received[Any],
        signers: list[tuple[KeyRole, str | None]],
        now_ns: int,
    ) -> Rejection | None:
        if self.trust is None:
            return None
        if received.key is None:
            if received.jws is None and not self.require_signed:
                return None
            payload_type = getattr(received.model, "type", "payload")
            return Rejection(Distrust.UNSIGNED, f"unsigned {payload_type}")
        return self.trust.signer_problem(received.key, received.model.type, signers, now_ns=now_ns)

    def check_command(
        self, received: Received[RecordStart] | Received[RecordCancel], now_ns: int
    ) -> Rejection | None:
        """At a camera, once ``open`` let it through: a record-start signed by a key of the
        issuing gateway (or of a dispatch console issuing under its own id), a
        record-cancel by a key of the issuing gateway only (dispatch cancels go through
        that gateway); the key valid now; issued no later than now (give or take the
        clock skew); a record-start valid no longer than the longest command life allowed."""
        if self.trust is None:
            return None
        command = received.model
        signers: list[tuple[KeyRole, str | None]] = [(KeyRole.GATEWAY, command.issuer)]
        if isinstance(command, RecordStart):
            signers.append((KeyRole.DISPATCH, command.issuer))
        problem = self._signer_problem(received, signers, now_ns)
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

    def check_ack(
        self,
        received: Received[CameraAck] | Received[CancelAck] | Received[RecordingMessage],
        now_ns: int,
    ) -> Rejection | None:
        """At a gateway: signed by the camera it speaks for (an ack, a cancel ack, or a
        `recording` message)."""
        return self._signer_problem(received, [(KeyRole.CAMERA, received.model.camera_id)], now_ns)

    def check_request(
        self,
        received: Received[TriggerEvent] | Received[CancelRequest],
        gateway_id: str,
        now_ns: int,
    ) -> Rejection | None:
        """At a gateway, a trigger or cancel that came over MQTT: signed by a dispatch
        console, or by this gateway's own key (its in-car terminal)."""
        signers: list[tuple[KeyRole, str | None]] = [
            (KeyRole.DISPATCH, None),
            (KeyRole.GATEWAY, gateway_id),
        ]
        return self._signer_problem(received, signers, now_ns)


def signed_envelope(message: bytes | bytearray) -> Jws | None:
    """The JWS a message is, or None for a plain payload. Only a message whose bytes name
    a ``signature`` member is parsed twice (once here, once for its payload)."""
    if not is_signed(message):
        return None
    try:
        # pydantic's parser, as decode uses: the same reading of duplicate keys, and a
        # nesting limit (json.loads raises RecursionError, which no caller expects).
        document = from_json(message)
    except ValueError:
        return None  # decoding it as a payload names the problem
    if not isinstance(document, dict) or "signature" not in document:
        return None
    return from_members(document)


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
