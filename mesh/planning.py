"""From an accepted trigger to the command to broadcast and the cameras to wait for."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mesh.models import CameraPresence, GeoPoint, RecordStart, Targets, TriggerEvent, TriggerSummary
from mesh.policy import KindRules
from mesh.targeting import TargetDecision, resolve_targets


@dataclass(frozen=True)
class Plan:
    command: RecordStart
    decisions: list[TargetDecision]

    @property
    def expected(self) -> list[TargetDecision]:
        return [d for d in self.decisions if d.expected]


def plan_activation(
    event: TriggerEvent,
    *,
    activation_id: str,
    rules: KindRules,
    issuer: str,
    gateway_position: GeoPoint | None,
    cameras: Iterable[CameraPresence],
    now_ns: int,
    offline_grace_s: float,
) -> Plan:
    # The trigger's own fix (e.g. from a dispatch request) wins over where the car is.
    if event.position is not None:
        origin: GeoPoint | None = GeoPoint(lat=event.position.lat, lon=event.position.lon)
    else:
        origin = gateway_position
    targets = Targets(units=(event.unit_id,) if rules.include_own_unit else ())
    command = RecordStart(
        activation_id=activation_id,
        issuer=issuer,
        trigger=TriggerSummary.of(event),
        issued_at_ns=now_ns,
        origin=origin,
        radius_m=rules.radius_m,
        pre_event_s=rules.pre_event_s,
        targets=targets,
        expires_at_ns=now_ns + int(rules.command_ttl_s * 1e9),
    )
    decisions = resolve_targets(
        cameras,
        origin=origin,
        radius_m=rules.radius_m,
        targets=targets,
        now_ns=now_ns,
        offline_grace_s=offline_grace_s,
    )
    return Plan(command, decisions)
