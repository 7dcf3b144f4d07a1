"""What the console knows, and the JSON views the page draws from. Pure.

Fed with decoded MQTT payloads; every ``apply_*`` returns the update to push to the
pages (or None if nothing they show changed). Bounded: the latest activations,
escalations and receipts are kept, not the whole history (that is the activation log's
job).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from mesh.models import (
    CONFIRMED_OUTCOMES,
    ActivationRecord,
    ActivationState,
    CameraPresence,
    Escalation,
    GatewayStatus,
    OutcomeStatus,
    TriggerReceipt,
)

MAX_ACTIVATIONS = 500
MAX_ESCALATIONS = 500
NS_PER_MS = 1_000_000

Update = dict[str, Any]


def _ms(ns: int | None) -> int | None:
    return None if ns is None else ns // NS_PER_MS


def activation_view(record: ActivationRecord) -> Update:
    """One activation as the feed shows it: counts, who missed, how fast."""
    missed = [c.camera_id for c in record.cameras if c.status is OutcomeStatus.MISSED]
    rejected = [c.camera_id for c in record.cameras if c.status is OutcomeStatus.REJECTED]
    latency = record.all_acked_ms if record.all_acked_ms is not None else record.latency_ms.p50
    return {
        "activation_id": record.activation_id,
        "unit_id": record.unit_id,
        "kind": record.trigger.kind.value,
        "source": f"{record.trigger.source.type.value}:{record.trigger.source.id}",
        "priority": record.priority,
        "state": record.state.value,
        "reason": record.reason,
        "decided_at_ms": _ms(record.decided_at_ns),
        "finished_at_ms": _ms(record.finished_at_ns),
        "origin": None if record.origin is None else record.origin.model_dump(),
        "radius_m": record.radius_m,
        "expected": sum(1 for c in record.cameras if c.expected),
        "started": sum(1 for c in record.cameras if c.status is OutcomeStatus.STARTED),
        "recording": sum(1 for c in record.cameras if c.status in CONFIRMED_OUTCOMES),
        "missed": missed,
        "rejected": rejected,
        "latency_ms": latency,
        "cancelled_by": record.cancelled_by,
    }


def camera_view(presence: CameraPresence) -> Update:
    pos = presence.position
    return {
        "camera_id": presence.camera_id,
        "unit_id": presence.unit_id,
        "role": presence.role.value,
        "officer": presence.officer,
        "online": presence.online,
        "recording": presence.recording,
        "asleep": presence.asleep,
        "last_seen_ms": _ms(presence.last_seen_ns),
        "position": None
        if pos is None
        else {"lat": pos.lat, "lon": pos.lon, "fix_at_ms": _ms(pos.fix_at_ns)},
    }


def escalation_view(escalation: Escalation) -> Update:
    return {
        "activation_id": escalation.activation_id,
        "unit_id": escalation.unit_id,
        "kind": escalation.kind.value,
        "priority": escalation.priority,
        "camera_id": escalation.camera_id,
        "camera_unit_id": escalation.camera_unit_id,
        "officer": escalation.officer,
        "reason": escalation.reason.value,
        "detail": escalation.detail,
        "attempts": escalation.attempts,
        "audience": escalation.audience,
        "at_ms": _ms(escalation.at_ns),
    }


@dataclass
class ConsoleState:
    activations: OrderedDict[str, ActivationRecord] = field(default_factory=OrderedDict)
    cameras: dict[str, CameraPresence] = field(default_factory=dict)
    escalations: deque[Escalation] = field(default_factory=lambda: deque(maxlen=MAX_ESCALATIONS))
    gateways: dict[str, GatewayStatus] = field(default_factory=dict)

    def apply_activation(self, record: ActivationRecord) -> Update | None:
        current = self.activations.get(record.activation_id)
        # A final record is never replaced by a late progress update; a cancel replaces it.
        if (
            current is not None
            and current.state is not ActivationState.PENDING
            and record.state is not ActivationState.CANCELLED
        ):
            return None
        self.activations[record.activation_id] = record
        self.activations.move_to_end(record.activation_id)
        while len(self.activations) > MAX_ACTIVATIONS:
            self.activations.popitem(last=False)
        return {"type": "activation", "activation": activation_view(record)}

    def apply_presence(self, camera_id: str, presence: CameraPresence | None) -> Update:
        if presence is None:  # an empty retained message: the camera was removed
            self.cameras.pop(camera_id, None)
            return {"type": "camera_removed", "camera_id": camera_id}
        self.cameras[camera_id] = presence
        return {"type": "camera", "camera": camera_view(presence)}

    def apply_escalation(self, escalation: Escalation) -> Update | None:
        # One escalation goes to several audiences; the console shows it once.
        for seen in self.escalations:
            if (seen.activation_id, seen.camera_id) == (
                escalation.activation_id,
                escalation.camera_id,
            ):
                return None
        self.escalations.append(escalation)
        return {"type": "escalation", "escalation": escalation_view(escalation)}

    def apply_gateway(self, status: GatewayStatus) -> Update:
        self.gateways[status.gateway_id] = status
        return {"type": "gateway", "gateway": self.gateway_view(status)}

    @staticmethod
    def gateway_view(status: GatewayStatus) -> Update:
        return {
            "gateway_id": status.gateway_id,
            "unit_id": status.unit_id,
            "online": status.online,
            "last_seen_ms": _ms(status.last_seen_ns),
        }

    def snapshot(self) -> Update:
        return {
            "type": "snapshot",
            "activations": [activation_view(r) for r in self.activations.values()],
            "cameras": [camera_view(p) for p in self.cameras.values()],
            "escalations": [escalation_view(e) for e in self.escalations],
            "gateways": [self.gateway_view(g) for g in self.gateways.values()],
        }


def receipt_view(receipt: TriggerReceipt) -> Update:
    return {
        "event_id": receipt.event_id,
        "unit_id": receipt.unit_id,
        "outcome": receipt.outcome.value,
        "activation_id": receipt.activation_id,
        "reason": receipt.reason,
    }
