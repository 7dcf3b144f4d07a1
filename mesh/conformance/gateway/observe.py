"""What the kit saw of a gateway during one run, and what it sent it. Pure data, filled
by the runner, read by the judges."""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.topics import TopicKind
from mesh.conformance.gateway.fleet import Reply
from mesh.protocol.models import (
    ActivationRecord,
    ActivationState,
    CancelRequest,
    Escalation,
    GatewayStatus,
    RecordCancel,
    RecordStart,
    TriggerEvent,
    TriggerReceipt,
)


@dataclass(frozen=True)
class SeenCommand:
    """A command the gateway published (``command`` None: it could not be read)."""

    kind: TopicKind
    target: str | None  # the cell, unit or camera of the topic
    command: RecordStart | RecordCancel | None
    at_ns: int
    mono_s: float
    error: str | None = None
    untrusted: str | None = None  # signed runs: why its signature is not trusted


@dataclass(frozen=True)
class Sent:
    """A trigger or cancel the kit sent, and when."""

    model: TriggerEvent | CancelRequest
    mono_s: float


@dataclass
class Observed:
    commands: list[SeenCommand] = field(default_factory=list)
    receipts: list[tuple[float, TriggerReceipt]] = field(default_factory=list)
    records: list[tuple[float, ActivationRecord]] = field(default_factory=list)
    escalations: list[tuple[float, str, Escalation]] = field(default_factory=list)
    status: GatewayStatus | None = None
    status_retained: bool = False
    replies: list[tuple[float, Reply]] = field(default_factory=list)
    # What the kit sent, by role: "a", "a-again", "b", "unsigned", "cancel-b", "cancel-none".
    sent: dict[str, Sent] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # payloads the kit could not read

    # --- looking things up ----------------------------------------------------------------
    def event_id(self, role: str) -> str | None:
        sent = self.sent.get(role)
        if sent is None:
            return None
        model = sent.model
        return model.event_id if isinstance(model, TriggerEvent) else model.cancel_id

    def receipts_for(self, role: str, *, after: float = 0.0) -> list[TriggerReceipt]:
        event_id = self.event_id(role)
        return [r for at, r in self.receipts if r.event_id == event_id and at >= after]

    def receipt(self, role: str) -> TriggerReceipt | None:
        found = self.receipts_for(role)
        return found[0] if found else None

    def activation(self, role: str) -> str | None:
        receipt = self.receipt(role)
        if receipt is not None and receipt.activation_id is not None:
            return receipt.activation_id
        # No receipt: the command says which, by the trigger it carries.
        event_id = self.event_id(role)
        for seen in self.commands:
            if isinstance(seen.command, RecordStart) and seen.command.trigger.event_id == event_id:
                return seen.command.activation_id
        return None

    def starts(self, activation_id: str | None) -> list[SeenCommand]:
        return [
            s
            for s in self.commands
            if isinstance(s.command, RecordStart) and s.command.activation_id == activation_id
        ]

    def first_attempt(self, activation_id: str | None) -> list[SeenCommand]:
        return [s for s in self.starts(activation_id) if _attempt(s) == 0]

    def retries_to(self, activation_id: str | None, camera_id: str) -> list[SeenCommand]:
        return [
            s
            for s in self.starts(activation_id)
            if s.kind is TopicKind.COMMAND_CAMERA and s.target == camera_id and _attempt(s) > 0
        ]

    def cancels(self, activation_id: str | None) -> list[SeenCommand]:
        return [
            s
            for s in self.commands
            if isinstance(s.command, RecordCancel) and s.command.activation_id == activation_id
        ]

    def records_of(self, activation_id: str | None) -> list[tuple[float, ActivationRecord]]:
        return [(at, r) for at, r in self.records if r.activation_id == activation_id]

    def final(self, activation_id: str | None) -> ActivationRecord | None:
        finals = [
            r for _, r in self.records_of(activation_id) if r.state is not ActivationState.PENDING
        ]
        return finals[0] if finals else None

    def escalations_of(self, activation_id: str | None) -> list[tuple[float, str, Escalation]]:
        return [e for e in self.escalations if e[2].activation_id == activation_id]


def _attempt(seen: SeenCommand) -> int:
    assert isinstance(seen.command, RecordStart)
    return seen.command.attempt
