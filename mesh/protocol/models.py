"""Wire models: every payload that crosses MQTT or lands in the activation log.

All payloads are immutable and strictly typed, carry ``"type"`` and ``"v": 2``, and
ignore unknown fields so that v2 can grow optional fields without breaking old
readers (a breaking change bumps ``v``). Times are nanoseconds since the Unix epoch,
UTC, named ``*_ns`` so the unit is never guessed: Python ints here, decimal strings in
JSON (a JSON number above 2^53 is not exact in most parsers; docs/protocol.md).

Signatures are not part of a payload: a signed message wraps the payload's bytes in a
JWS (mesh/protocol/jws.py, docs/security.md).

Readers of the wire (``mesh.protocol.codec.decode``) take v2 only. Reading a log, the
same models also take a v1 body (``"v": 1``, integer times, a ``sig`` object, ignored),
so logs written before v2 still verify and replay.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    ValidationInfo,
    WithJsonSchema,
)

# Identifiers end up inside MQTT topic levels, so they may not contain '/', '+' or '#'.
Ident = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,64}$")]
BleAddress = Annotated[str, Field(pattern=r"^[0-9A-F]{2}(:[0-9A-F]{2}){5}$")]
EventId = Annotated[str, Field(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]
# The largest integer an IEEE double holds exactly: no JSON number of the protocol exceeds it.
MAX_SAFE_INT = 2**53 - 1
INT64_MAX = 2**63 - 1
_NS_TEXT = re.compile(r"0|[1-9][0-9]{0,18}")
# Validation context key set by the wire reader (codec.decode): v2 only, times as strings.
WIRE = "wire"


def reading_wire(info: ValidationInfo) -> bool:
    return isinstance(info.context, dict) and bool(info.context.get(WIRE))


def _time_ns(value: Any, info: ValidationInfo) -> int:
    if value.__class__ is str:
        if _NS_TEXT.fullmatch(value) is None or int(value) > INT64_MAX:
            raise ValueError(
                "not a time: nanoseconds since the Unix epoch as a string of decimal "
                'digits, e.g. "1796313266719396548" (at most 2^63 - 1)'
            )
        return int(value)
    if value.__class__ is int and not reading_wire(info):
        # A v1 log body, or a model built in Python.
        if not 0 <= value <= INT64_MAX:
            raise ValueError("not a time: out of range 0 .. 2^63 - 1")
        return int(value)
    raise ValueError(
        "a time must be a JSON string of decimal digits (ns since the Unix epoch) in "
        "protocol v2, not a number"
    )


# Stored as SQLite and PostgreSQL 64-bit signed integers; sent as decimal text.
TimeNs = Annotated[
    int,
    PlainValidator(_time_ns),
    PlainSerializer(str, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": "^(0|[1-9][0-9]{0,18})$",
            "description": "UTC wall clock, ns since the Unix epoch, as decimal digits "
            "(at most 9223372036854775807)",
        }
    ),
]
# Counts and small integers: within what a double holds exactly.
Count = Annotated[int, Field(ge=0, le=MAX_SAFE_INT)]
Latitude = Annotated[float, Field(ge=-90.0, le=90.0)]
Longitude = Annotated[float, Field(ge=-180.0, le=180.0)]
DetailValue = str | Annotated[int, Field(ge=-MAX_SAFE_INT, le=MAX_SAFE_INT)] | float | bool

PROTOCOL_VERSION = 2


def _version(value: Any, info: ValidationInfo) -> int:
    # The integer only: not true, not 2.0.
    if value.__class__ is int:
        if value == PROTOCOL_VERSION:
            return value
        if value == 1 and not reading_wire(info):
            return PROTOCOL_VERSION  # a v1 log body: read as what it is now
    shown = f"v{value}" if value.__class__ is int else repr(value)
    raise ValueError(f"{shown} payload; this peer speaks protocol v{PROTOCOL_VERSION} only")


ProtocolVersion = Annotated[
    int, PlainValidator(_version), WithJsonSchema({"const": PROTOCOL_VERSION})
]


class TriggerKind(StrEnum):
    WEAPON_DRAW = "weapon_draw"
    TASER_ARM = "taser_arm"
    EMERGENCY_LIGHTS = "emergency_lights"
    SIREN = "siren"
    SPEED = "speed"
    CRASH = "crash"
    DOOR = "door"
    GUN_RACK = "gun_rack"
    GEAR = "gear"  # a shift (into park: the officer is about to step out)
    MAN_DOWN = "man_down"
    MANUAL = "manual"
    DISPATCH = "dispatch"


class SourceType(StrEnum):
    BLE = "ble"
    CAN = "can"
    MANUAL = "manual"
    DISPATCH = "dispatch"


class AckStatus(StrEnum):
    STARTED = "started"
    ALREADY_RECORDING = "already_recording"
    OUT_OF_RANGE = "out_of_range"
    REJECTED = "rejected"


class OutcomeStatus(StrEnum):
    """A camera's outcome within one activation: an ack status, or pending/missed."""

    PENDING = "pending"
    STARTED = "started"
    ALREADY_RECORDING = "already_recording"
    OUT_OF_RANGE = "out_of_range"
    REJECTED = "rejected"
    MISSED = "missed"
    CANCELLED = "cancelled"  # still pending when the activation was cancelled


CONFIRMED_OUTCOMES = frozenset({OutcomeStatus.STARTED, OutcomeStatus.ALREADY_RECORDING})


class ActivationState(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    PARTIAL = "partial"
    MISSED = "missed"
    CANCELLED = "cancelled"


class CameraRole(StrEnum):
    BODY = "body"
    DASH = "dash"


class EscalationReason(StrEnum):
    # In range or targeted, but offline longer than offline_grace_s: escalated at once.
    OFFLINE = "offline"
    # Expected, commanded, retried, never answered (offline within the grace included).
    NO_ACK = "no_ack"
    REJECTED = "rejected"  # answered, and refused (e.g. the command arrived expired)


Priority = Annotated[int, Field(ge=1, le=5, description="1 most urgent … 5 least")]


class ReceiptOutcome(StrEnum):
    ACCEPTED = "accepted"
    SUPPRESSED = "suppressed"
    REJECTED = "rejected"


class Frozen(BaseModel):
    """Base for every model: immutable, no type coercion, unknown fields ignored."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore")


class GeoPoint(Frozen):
    lat: Latitude
    lon: Longitude


class Position(Frozen):
    lat: Latitude
    lon: Longitude
    accuracy_m: Annotated[float, Field(ge=0.0)] | None = None
    fix_at_ns: TimeNs


class SourceRef(Frozen):
    type: SourceType
    id: Annotated[str, Field(min_length=1, max_length=128)]
    authenticated: bool


class TriggerEvent(Frozen):
    """A normalised signal from any trigger source (BLE, CAN, manual, dispatch)."""

    type: Literal["trigger"] = "trigger"
    v: ProtocolVersion = PROTOCOL_VERSION
    event_id: EventId
    kind: TriggerKind
    source: SourceRef
    unit_id: Ident
    observed_at_ns: TimeNs
    position: Position | None = None
    detail: dict[str, DetailValue] = Field(default_factory=dict)


class TriggerSummary(Frozen):
    """The part of a trigger that travels inside commands and activation records."""

    event_id: EventId
    kind: TriggerKind
    source: SourceRef
    unit_id: Ident
    observed_at_ns: TimeNs

    @classmethod
    def of(cls, event: TriggerEvent) -> TriggerSummary:
        return cls(
            event_id=event.event_id,
            kind=event.kind,
            source=event.source,
            unit_id=event.unit_id,
            observed_at_ns=event.observed_at_ns,
        )


class Targets(Frozen):
    """Cameras that must start regardless of distance: whole units and named cameras."""

    units: tuple[Ident, ...] = ()
    cameras: tuple[Ident, ...] = ()


class RecordStart(Frozen):
    """The command a gateway broadcasts: cameras in range (or targeted) start recording."""

    type: Literal["record_start"] = "record_start"
    v: ProtocolVersion = PROTOCOL_VERSION
    activation_id: Ident
    issuer: Ident
    trigger: TriggerSummary
    issued_at_ns: TimeNs
    origin: GeoPoint | None
    radius_m: Annotated[float, Field(ge=0.0)]
    pre_event_s: Annotated[int, Field(ge=0, le=120)]
    targets: Targets
    expires_at_ns: TimeNs
    attempt: Count = 0
    priority: Priority = 3
    # Filters on who starts (empty: anyone); a camera named in targets.cameras always does.
    roles: tuple[CameraRole, ...] = ()
    groups: tuple[Ident, ...] = ()
    wake: bool = True  # whether a camera asleep (standby) starts for it
    # Until when the issuer may cancel this activation (from the policy's cancel window);
    # absent: it may not be cancelled. A camera binds the issuer and this deadline when it
    # acts on the command and refuses any other cancel (docs/protocol.md).
    cancel_until_ns: TimeNs | None = None


class RecordCancel(Frozen):
    """A cancelled activation: cameras stop a recording it alone started (and keep it)."""

    type: Literal["record_cancel"] = "record_cancel"
    v: ProtocolVersion = PROTOCOL_VERSION
    activation_id: Ident
    issuer: Ident
    reason: Annotated[str, Field(max_length=512)] = ""
    at_ns: TimeNs


class CameraAck(Frozen):
    """A camera's answer to a command: started, already recording, out of range or rejected."""

    type: Literal["ack"] = "ack"
    v: ProtocolVersion = PROTOCOL_VERSION
    activation_id: Ident
    camera_id: Ident
    unit_id: Ident | None = None
    status: AckStatus
    reason: Annotated[str, Field(max_length=512)] = ""
    attempt: Count = 0
    received_at_ns: TimeNs
    recording_started_at_ns: TimeNs | None = None
    pre_event_kept_s: Annotated[float, Field(ge=0.0)] | None = None


class CancelOutcome(StrEnum):
    STOPPED = "stopped"  # the recording this activation alone started stopped (and is kept)
    KEPT_RECORDING = "kept_recording"  # accepted; another activation still wants the recording
    REFUSED = "refused"  # not from the command's issuer, past its deadline, or not trusted


class CancelAck(Frozen):
    """A camera's answer to a ``record_cancel`` for an activation it acted on, sent to the
    issuer of the command it recorded for (whoever the cancel claimed to come from)."""

    type: Literal["cancel_ack"] = "cancel_ack"
    v: ProtocolVersion = PROTOCOL_VERSION
    activation_id: Ident
    camera_id: Ident
    unit_id: Ident | None = None
    outcome: CancelOutcome
    reason: Annotated[str, Field(max_length=512)] = ""
    cancel_issuer: Ident  # the issuer the cancel named
    cancel_at_ns: TimeNs  # the cancel's at_ns: which cancel this answers
    received_at_ns: TimeNs


class CameraOutcome(Frozen):
    camera_id: Ident
    unit_id: Ident | None
    expected: bool
    targeting: str
    status: OutcomeStatus
    detail: str = ""
    attempts: Count = 0
    latency_ms: float | None = None
    acked_at_ns: TimeNs | None = None


class LatencySummary(Frozen):
    p50: float | None = None
    max: float | None = None


class ActivationRecord(Frozen):
    """The state of one activation, as published to dispatch and written to the log."""

    type: Literal["activation"] = "activation"
    v: ProtocolVersion = PROTOCOL_VERSION
    activation_id: Ident
    issuer: Ident
    unit_id: Ident
    trigger: TriggerSummary
    state: ActivationState
    reason: str = ""
    decided_at_ns: TimeNs
    published_at_ns: TimeNs | None = None
    finished_at_ns: TimeNs | None = None
    expires_at_ns: TimeNs
    origin: GeoPoint | None
    radius_m: float
    pre_event_s: int
    cameras: tuple[CameraOutcome, ...] = ()
    latency_ms: LatencySummary = LatencySummary()
    all_acked_ms: float | None = Field(
        default=None,
        description="Trigger accepted → last expected ack recorded, monotonic ms",
    )
    merged_triggers: Count = 0
    priority: Priority = 3
    cancelled_by: Annotated[str, Field(max_length=128)] | None = None


class RecorderFaultInfo(Frozen):
    """A camera's recorder fault, as presence reports it."""

    code: Annotated[str, Field(pattern=r"^[a-z0-9_]{1,32}$")]
    reason: Annotated[str, Field(max_length=256)] = ""


class CameraPresence(Frozen):
    """Retained per camera; the broker publishes the last-will copy with online=false."""

    type: Literal["presence"] = "presence"
    v: ProtocolVersion = PROTOCOL_VERSION
    camera_id: Ident
    unit_id: Ident
    role: CameraRole
    online: bool
    recording: bool
    position: Position | None = None
    last_seen_ns: TimeNs
    officer: Annotated[str, Field(max_length=64)] | None = None
    groups: tuple[Ident, ...] = ()
    asleep: bool = False  # standby: not recording into its pre-event buffer either
    # The address the camera advertises on BLE, so that a gateway that hears it knows it
    # is near the car (``AA:BB:CC:DD:EE:FF``, as scanners report it).
    ble_address: BleAddress | None = None
    # What keeps its recorder from recording now (device gone, disk full, ...), or null.
    recorder_fault: RecorderFaultInfo | None = None


class RecordingEvent(StrEnum):
    START = "start"
    STOP = "stop"


class RecordingStopReason(StrEnum):
    """Why a recording ended (the values of mesh.camera.recording.base.StopReason)."""

    OFFICER = "officer"
    CANCEL = "cancel"
    MAX_DURATION = "max_duration"
    LOW_DISK = "low_disk"
    STORAGE_ERROR = "storage_error"
    SOURCE_LOST = "source_lost"
    SHUTDOWN = "shutdown"
    INTERRUPTED = "interrupted"


# A `recording` message lists at most this many files; the rest are counted in
# ``files_omitted`` (the manifest, whose hash it carries, lists them all).
MAX_RECORDING_FILES = 128
# Activation ids one `recording` message names, at most (the claims on one recording).
MAX_RECORDING_ACTIVATIONS = 64
# An officer's stop note, at most (characters).
MAX_STOP_NOTE = 1024
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class RecordingFile(Frozen):
    """One file (segment) of a recording."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9._-]{1,128}$")]
    sha256: Sha256Hex
    first_frame_ns: TimeNs
    last_frame_ns: TimeNs


class RecordingMessage(Frozen):
    """A camera's report that a recording started or stopped, to each gateway whose
    activation it records for (docs/protocol.md, the `recording` message)."""

    type: Literal["recording"] = "recording"
    v: ProtocolVersion = PROTOCOL_VERSION
    camera_id: Ident
    unit_id: Ident | None = None
    recording_id: Ident
    activation_ids: Annotated[tuple[Ident, ...], Field(max_length=MAX_RECORDING_ACTIVATIONS)]
    event: RecordingEvent
    started_at_ns: TimeNs
    first_frame_ns: TimeNs
    pre_event_kept_s: Annotated[float, Field(ge=0.0)]
    stopped_at_ns: TimeNs | None = None  # stop only
    reason: RecordingStopReason | None = None  # stop only
    note: Annotated[str, Field(max_length=MAX_STOP_NOTE)] = ""  # the officer's, stop only
    files: Annotated[tuple[RecordingFile, ...], Field(max_length=MAX_RECORDING_FILES)] = ()
    files_omitted: Count = 0
    manifest_sha256: Sha256Hex | None = None  # stop only; null until manifests exist


class CancelRequest(Frozen):
    """Into a gateway: cancel an activation that was a false trigger, within the policy's
    cancellation window. Nothing is erased: the cancel is logged beside the activation."""

    type: Literal["cancel"] = "cancel"
    v: ProtocolVersion = PROTOCOL_VERSION
    cancel_id: EventId
    activation_id: Ident
    unit_id: Ident
    by: Annotated[str, Field(min_length=1, max_length=128)]
    reason: Annotated[str, Field(max_length=512)] = ""
    at_ns: TimeNs


class Escalation(Frozen):
    """A camera that did not start, told to whoever the policy names (dispatch first)."""

    type: Literal["escalation"] = "escalation"
    v: ProtocolVersion = PROTOCOL_VERSION
    activation_id: Ident
    issuer: Ident
    unit_id: Ident  # the activation's unit
    kind: TriggerKind
    priority: Priority = 3
    camera_id: Ident
    camera_unit_id: Ident | None
    officer: Annotated[str, Field(max_length=64)] | None = None
    reason: EscalationReason
    detail: Annotated[str, Field(max_length=512)] = ""
    attempts: Count = 0
    audience: Ident
    at_ns: TimeNs


class TriggerReceipt(Frozen):
    """The gateway's answer to a trigger: accepted into an activation, merged, or refused."""

    type: Literal["receipt"] = "receipt"
    v: ProtocolVersion = PROTOCOL_VERSION
    event_id: EventId
    unit_id: Ident
    outcome: ReceiptOutcome
    activation_id: Ident | None = None
    reason: str = ""
    at_ns: TimeNs
    activation_pending: bool | None = Field(
        default=None,
        description="Suppressed receipts: true if the activation the trigger was merged into "
        "is still pending (its final record is still to come), false if it had finished",
        exclude_if=lambda v: v is None,  # only suppressed receipts carry it
    )

    @classmethod
    def answering(
        cls,
        trigger: TriggerEvent,
        outcome: ReceiptOutcome,
        activation_id: str | None,
        reason: str,
        at_ns: int,
        *,
        pending: bool | None = None,
    ) -> TriggerReceipt:
        """The gateway's answer to ``trigger``, taken at ``at_ns`` (the archive makes the
        same from the gateway's log: one construction, so the two are the same bytes)."""
        return cls(
            event_id=trigger.event_id,
            unit_id=trigger.unit_id,
            outcome=outcome,
            activation_id=activation_id,
            reason=reason,
            at_ns=at_ns,
            activation_pending=pending,
        )

    @classmethod
    def answering_cancel(
        cls, request: CancelRequest, unit_id: str, *, accepted: bool, reason: str, at_ns: int
    ) -> TriggerReceipt:
        """The gateway of ``unit_id``'s answer to a cancel request, taken at ``at_ns`` (made
        again from its log by the archive, as ``answering``)."""
        return cls(
            event_id=request.cancel_id,
            unit_id=unit_id,
            outcome=ReceiptOutcome.ACCEPTED if accepted else ReceiptOutcome.REJECTED,
            activation_id=request.activation_id,
            reason=reason,
            at_ns=at_ns,
        )


class GatewayStatus(Frozen):
    """Retained per gateway; the last-will copy has online=false."""

    type: Literal["gateway"] = "gateway"
    v: ProtocolVersion = PROTOCOL_VERSION
    gateway_id: Ident
    unit_id: Ident
    online: bool
    started_at_ns: TimeNs
    last_seen_ns: TimeNs
    counters: dict[str, Count] = Field(default_factory=dict)


# The payloads that may travel signed, as a JWS of their bytes (docs/security.md): those
# that start or stop a recording, or say a camera started.
SIGNABLE = frozenset(
    {"trigger", "record_start", "record_cancel", "ack", "cancel_ack", "cancel", "recording"}
)

WIRE_MODELS: dict[str, type[Frozen]] = {
    "trigger": TriggerEvent,
    "record_start": RecordStart,
    "ack": CameraAck,
    "activation": ActivationRecord,
    "presence": CameraPresence,
    "receipt": TriggerReceipt,
    "gateway": GatewayStatus,
    "record_cancel": RecordCancel,
    "cancel_ack": CancelAck,
    "cancel": CancelRequest,
    "escalation": Escalation,
    "recording": RecordingMessage,
}
