"""From an accepted trigger to the command to broadcast and the cameras to wait for."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from mesh.decide.policy import KindRules
from mesh.decide.proximity import Heard
from mesh.decide.targeting import CameraIndex, Scope, Settings, TargetDecision, resolve_targets
from mesh.protocol.models import GeoPoint, RecordStart, Targets, TriggerEvent, TriggerSummary


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
    cameras: CameraIndex,
    now_ns: int,
    offline_grace_s: float,
    max_fix_age_s: float,
    own_unit: str | None = None,
    heard: Mapping[str, Heard] | None = None,
) -> Plan:
    # The trigger's own fix (e.g. from a dispatch request) wins over where the car is.
    if event.position is not None:
        origin: GeoPoint | None = GeoPoint(lat=event.position.lat, lon=event.position.lon)
    else:
        origin = gateway_position
    scope = Scope(
        origin=origin,
        radius_m=rules.radius_m,
        targets=Targets(units=(event.unit_id,) if rules.include_own_unit else ()),
        roles=rules.roles,
        groups=rules.groups,
        wake=rules.wake_sleeping,
    )
    decisions = resolve_targets(
        cameras,
        scope,
        Settings(
            now_ns=now_ns,
            offline_grace_s=offline_grace_s,
            max_fix_age_s=max_fix_age_s,
            own_unit=own_unit,
            own_position=gateway_position,
            heard=heard or {},
        ),
    )
    # Cameras placed with their unit start on the gateway's word: named in the command.
    named = tuple(sorted(d.camera_id for d in decisions if d.named and d.expected))
    command = RecordStart(
        activation_id=activation_id,
        issuer=issuer,
        trigger=TriggerSummary.of(event),
        issued_at_ns=now_ns,
        origin=origin,
        radius_m=rules.radius_m,
        pre_event_s=rules.pre_event_s,
        targets=Targets(units=scope.targets.units, cameras=named),
        expires_at_ns=now_ns + int(rules.command_ttl_s * 1e9),
        # Cameras obey a cancel only from this issuer and only until then (0 s: never).
        cancel_until_ns=(
            now_ns + int(rules.cancel_window_s * 1e9) if rules.cancel_window_s > 0 else None
        ),
        priority=rules.priority,
        roles=rules.roles,
        groups=rules.groups,
        wake=rules.wake_sleeping,
    )
    return Plan(command, decisions)
