"""What the console knows, and the JSON views the page draws from. Pure.

Fed with decoded MQTT payloads; every ``apply_*`` returns the update to push to the
pages (or None if nothing they show changed). Bounded: the latest activations,
escalations and receipts are kept, not the whole history (that is the activation log's
job).

Cameras are bounded too (``CameraLimits``): a camera not heard from for ``expiry_s`` is
dropped (its last presence's ``last_seen``, or when it arrived if that is earlier: a clock
ahead does not keep it), and past ``max_cameras`` the camera whose presence came least
recently is evicted (a live one comes back with its next heartbeat, every 30 s by
default). The page gets cameras a page at a time (``camera_page``), never all of them.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from mesh.protocol.models import (
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
NS_PER_S = 1_000_000_000
# Cameras in one snapshot or /api/state answer, unless asked otherwise; and at most.
CAMERA_PAGE = 200
MAX_CAMERA_PAGE = 1000
# Units offered in the page's choosers: gateways' first, then activations', then cameras'.
MAX_UNITS_SHOWN = 1000
# Expired cameras are looked for at most this often (a full pass over the registry).
_SWEEP_EVERY_NS = 60 * NS_PER_S

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


@dataclass(frozen=True)
class CameraLimits:
    max_cameras: int = 10_000
    expiry_s: float = 24 * 3600.0


@dataclass
class ConsoleState:
    camera_limits: CameraLimits = field(default_factory=CameraLimits)
    activations: OrderedDict[str, ActivationRecord] = field(default_factory=OrderedDict)
    # In the order their presence came, least recent first (the one evicted at the cap).
    cameras: OrderedDict[str, CameraPresence] = field(default_factory=OrderedDict)
    # Cameras dropped: ``cameras.evicted`` at the cap, ``cameras.expired`` gone too long.
    dropped: Counter[str] = field(default_factory=Counter)
    _heard_ns: dict[str, int] = field(default_factory=dict)
    _swept_ns: int = 0
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

    def apply_presence(
        self, camera_id: str, presence: CameraPresence | None, now_ns: int | None = None
    ) -> Update:
        now_ns = time.time_ns() if now_ns is None else now_ns
        self.expire(now_ns)
        heard_ns = None if presence is None else min(presence.last_seen_ns, now_ns)
        if presence is None or self._gone(heard_ns, now_ns):
            # An empty retained message (the camera was removed), or one gone too long.
            if presence is not None:
                self.dropped["cameras.expired"] += 1
            self._forget(camera_id)
            return {"type": "camera_removed", "camera_id": camera_id}
        assert heard_ns is not None
        if camera_id not in self.cameras:
            while len(self.cameras) >= self.camera_limits.max_cameras:
                oldest, _ = self.cameras.popitem(last=False)
                self._heard_ns.pop(oldest, None)
                self.dropped["cameras.evicted"] += 1
        self.cameras[camera_id] = presence
        self.cameras.move_to_end(camera_id)
        self._heard_ns[camera_id] = heard_ns
        return {"type": "camera", "camera": camera_view(presence)}

    def _gone(self, heard_ns: int | None, now_ns: int) -> bool:
        return heard_ns is not None and now_ns - heard_ns > self.camera_limits.expiry_s * NS_PER_S

    def _forget(self, camera_id: str) -> None:
        self.cameras.pop(camera_id, None)
        self._heard_ns.pop(camera_id, None)

    def expire(self, now_ns: int) -> None:
        """Drop the cameras not heard from for ``expiry_s`` (a full pass, once a minute)."""
        if now_ns - self._swept_ns < _SWEEP_EVERY_NS:
            return
        self._swept_ns = now_ns
        gone = [c for c, heard in self._heard_ns.items() if self._gone(heard, now_ns)]
        for camera_id in gone:
            self._forget(camera_id)
        self.dropped["cameras.expired"] += len(gone)

    def camera_page(self, offset: int = 0, limit: int = CAMERA_PAGE, unit: str = "") -> Update:
        """One page of the cameras, ordered by unit then id; ``unit`` filters."""
        limit = max(0, min(limit, MAX_CAMERA_PAGE))
        chosen = [p for p in self.cameras.values() if not unit or p.unit_id == unit]
        chosen.sort(key=lambda p: (p.unit_id, p.camera_id))
        return {
            "cameras": [camera_view(p) for p in chosen[offset : offset + limit]],
            "cameras_total": len(chosen),
            "cameras_offset": offset,
            "cameras_limit": limit,
        }

    def units(self) -> list[str]:
        """The units the page offers to filter on and activate: bounded, gateways first."""
        shown: dict[str, None] = {}
        for source in (
            (g.unit_id for g in self.gateways.values()),
            (r.unit_id for r in reversed(self.activations.values())),
            (p.unit_id for p in reversed(self.cameras.values())),  # latest heard first
        ):
            for unit in source:
                if len(shown) >= MAX_UNITS_SHOWN:
                    return sorted(shown)
                shown.setdefault(unit, None)
        return sorted(shown)

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

    def snapshot(self, offset: int = 0, limit: int = CAMERA_PAGE, unit: str = "") -> Update:
        """Everything the page shows, with one page of the cameras."""
        self.expire(time.time_ns())
        return {
            "type": "snapshot",
            "activations": [activation_view(r) for r in self.activations.values()],
            **self.camera_page(offset, limit, unit),
            "units": self.units(),
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
