"""The bodies of activation-log records, typed so that the log can be read back and replayed."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from enum import StrEnum

from pydantic import Field

from mesh.decide.policy import Policy
from mesh.decide.proximity import Heard
from mesh.decide.targeting import TargetDecision
from mesh.protocol.jws import Jws
from mesh.protocol.models import (
    ActivationRecord,
    CameraAck,
    CancelAck,
    CancelRequest,
    Escalation,
    EscalationReason,
    Frozen,
    GeoPoint,
    RecordingMessage,
    RecordStart,
    TimeNs,
    TriggerEvent,
)


class RecordKind(StrEnum):
    ACTIVATION = "activation"  # accepted trigger + command + targeting: durable before publish
    SUPPRESSED = "suppressed"  # trigger merged into a recent activation (burst, duplicate)
    REFUSED = "refused"  # well-formed trigger refused by policy (stale, disabled, unauthenticated)
    PUBLISHED = "published"  # a command went to the broker (broadcast or direct retry)
    ACK = "ack"  # a camera answered
    FINISHED = "finished"  # final per-camera outcomes and state
    RESUMED = "resumed"  # a gateway restart picked the activation up again
    ESCALATED = "escalated"  # a camera that did not start, told to the policy's audiences
    CANCEL = "cancel"  # a cancel request, accepted or refused (nothing is erased)
    CANCEL_ACK = "cancel_ack"  # a camera's answer to a record-cancel: stopped, kept, refused
    CHECKPOINT = "checkpoint"  # the gateway's signature over the chain head
    RETENTION = "retention"  # expired records removed, and the runs the chain skips
    HOLD = "hold"  # a legal hold placed or released
    STARTED = "started"  # the gateway started: who it is and the policy it decides by
    PRESENCE = "presence"  # a camera's presence when it changed or a decision read it
    ACKS_DROPPED = "acks_dropped"  # one camera's acks over its rate, counted, not logged each
    RECORDING = "recording"  # a camera's recording started or stopped (why, which files)


class AcksDroppedEntry(Frozen):
    """Acks of one camera dropped unread over its rate limit, in one window: a flood is
    summarised here instead of filling the log one row per ack."""

    camera_id: str
    dropped: int
    first_at_ns: TimeNs
    last_at_ns: TimeNs
    reason: str


class TargetEntry(Frozen):
    camera_id: str
    unit_id: str | None
    expected: bool
    reason: str
    distance_m: float | None = None
    # Set for a camera in range or targeted but not waited for (offline too long): a
    # restarted gateway still names it in the record and escalates it. Written only if set.
    escalate: EscalationReason | None = Field(default=None, exclude_if=lambda v: v is None)

    @classmethod
    def of(cls, decision: TargetDecision) -> TargetEntry:
        # Built from our own decision, already typed: no need to validate it again.
        return cls.model_construct(
            camera_id=decision.camera_id,
            unit_id=decision.unit_id,
            expected=decision.expected,
            reason=decision.reason,
            distance_m=None if decision.distance_m is None else round(decision.distance_m, 1),
            escalate=decision.escalate,
        )

    def decision(self) -> TargetDecision:
        return TargetDecision(
            self.camera_id,
            self.unit_id,
            self.expected,
            self.reason,
            self.distance_m,
            escalate=self.escalate,
        )


class HeardEntry(Frozen):
    rssi_dbm: int
    age_s: float


class DecisionInputs(Frozen):
    """What range resolution took besides the trigger and the presence in the log before
    it: where the car was, and which cameras its radio heard (``audit replay`` needs both)."""

    gateway_position: GeoPoint | None = None
    heard: dict[str, HeardEntry] = Field(default_factory=dict)

    @staticmethod
    def json_of(position: GeoPoint | None, heard: Mapping[str, Heard] | None) -> str:
        place = "null" if position is None else position.model_dump_json()
        radio = json.dumps(
            {c: {"rssi_dbm": h.rssi_dbm, "age_s": h.age_s} for c, h in (heard or {}).items()},
            separators=(",", ":"),
        )
        return f'{{"gateway_position":{place},"heard":{radio}}}'

    def heard_map(self) -> dict[str, Heard]:
        return {c: Heard(h.rssi_dbm, h.age_s) for c, h in self.heard.items()}


class ActivationEntry(Frozen):
    trigger: TriggerEvent
    received_at_ns: TimeNs
    command: RecordStart
    targets: tuple[TargetEntry, ...]
    inputs: DecisionInputs | None = None

    @staticmethod
    def json_of(
        trigger: TriggerEvent,
        received_at_ns: int,
        command: RecordStart,
        decisions: list[TargetDecision],
        inputs: str = "null",
    ) -> str:
        """The same JSON as ``ActivationEntry(...).model_dump_json()``, without a model per
        camera: this is on the path of every activation, before the command is sent, and a
        thousand cameras would otherwise cost milliseconds."""
        targets = json.dumps(
            [
                {
                    "camera_id": d.camera_id,
                    "unit_id": d.unit_id,
                    "expected": d.expected,
                    "reason": d.reason,
                    "distance_m": None if d.distance_m is None else round(d.distance_m, 1),
                }
                | ({} if d.escalate is None else {"escalate": d.escalate.value})
                for d in decisions
            ],
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return (
            f'{{"trigger":{trigger.model_dump_json()},"received_at_ns":"{received_at_ns}",'
            f'"command":{command.model_dump_json()},"targets":{targets},"inputs":{inputs}}}'
        )


class TriggerEntry(Frozen):
    """A trigger that did not make a new activation."""

    trigger: TriggerEvent
    received_at_ns: TimeNs
    code: str
    reason: str
    activation_id: str | None = None
    # Suppressed: whether the activation it was merged into was still pending, as the
    # receipt said (the archive makes the receipt from this record). Absent before.
    activation_pending: bool | None = Field(default=None, exclude_if=lambda v: v is None)


class PublishedEntry(Frozen):
    attempt: int
    topic: str
    cameras: tuple[str, ...] | None = None  # None: broadcast to every camera


class SignedCopy(Frozen):
    """A signed message as it was received (its JWS members, docs/security.md): an auditor
    checks the signer's signature again from the log alone."""

    protected: str
    payload: str
    signature: str

    @classmethod
    def of(cls, jws: Jws | None) -> SignedCopy | None:
        if jws is None:
            return None
        return cls(protected=jws.protected, payload=jws.payload, signature=jws.signature)


class AckEntry(Frozen):
    ack: CameraAck
    latency_ms: float | None
    effect: str
    # The ack as received, if it came signed (left out when it came unsigned).
    jws: SignedCopy | None = Field(default=None, exclude_if=lambda v: v is None)

    @staticmethod
    def json_of(
        ack: CameraAck, latency_ms: float | None, effect: str, jws: Jws | None = None
    ) -> str:
        """The same JSON as ``AckEntry(...).model_dump_json()``, without building the model:
        this runs once per camera per activation. (A non-finite latency is null there too;
        the effect is quoted as JSON, whatever it holds.)"""
        latency = (
            "null"
            if latency_ms is None or not math.isfinite(latency_ms)
            else repr(float(latency_ms))
        )
        signed = "" if jws is None else f',"jws":{jws.to_json()}'
        return (
            f'{{"ack":{ack.model_dump_json()},"latency_ms":{latency},'
            f'"effect":{json.dumps(effect, ensure_ascii=False)}{signed}}}'
        )


class FinishedEntry(Frozen):
    record: ActivationRecord


class ResumedEntry(Frozen):
    reason: str
    acks_recovered: int


class EscalatedEntry(Frozen):
    escalation: Escalation


class StartedEntry(Frozen):
    gateway_id: str
    unit_id: str
    topic_prefix: str
    policy: Policy


class CancelEntry(Frozen):
    cancel: CancelRequest
    accepted: bool
    reason: str
    # When the gateway decided: its receipt's ``at_ns`` (the archive makes the receipt from
    # this record). Absent in logs written before it was logged.
    received_at_ns: TimeNs | None = Field(default=None, exclude_if=lambda v: v is None)


class CancelAckEntry(Frozen):
    ack: CancelAck
    effect: str  # the ack's outcome, or ``untrusted:<code>`` if its signature was refused
    # The cancel ack as received, if it came signed (left out when it came unsigned).
    jws: SignedCopy | None = Field(default=None, exclude_if=lambda v: v is None)


class RecordingEntry(Frozen):
    """A camera's `recording` message (a recording started or stopped) as the gateway
    received it: ``effect`` is ``accepted``, or ``untrusted:<code>`` if its signature was
    refused (kept as evidence, never as the camera's word)."""

    recording: RecordingMessage
    effect: str
    # The message as received, if it came signed (left out when it came unsigned).
    jws: SignedCopy | None = Field(default=None, exclude_if=lambda v: v is None)
