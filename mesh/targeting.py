"""Range resolution: which cameras the gateway expects to answer, each with its reason.

The camera decides for itself whether to start (see camera_decision); this is the
gateway's side, which decides whom to wait for, retry and report as missed. Every
decision carries a reason an auditor can read: distance, fix age, unit, online state.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mesh.geo import haversine_m
from mesh.models import CameraPresence, GeoPoint, Targets

NS = 1_000_000_000


@dataclass(frozen=True)
class TargetDecision:
    camera_id: str
    unit_id: str | None
    expected: bool
    reason: str
    distance_m: float | None = None


def resolve_targets(
    cameras: Iterable[CameraPresence],
    *,
    origin: GeoPoint | None,
    radius_m: float,
    targets: Targets,
    now_ns: int,
    offline_grace_s: float,
) -> list[TargetDecision]:
    decisions = []
    for cam in cameras:
        distance = None
        if origin is not None and cam.position is not None:
            distance = haversine_m(origin.lat, origin.lon, cam.position.lat, cam.position.lon)
        if cam.camera_id in targets.cameras:
            expected, reason = True, "named in the command"
        elif cam.unit_id in targets.units:
            expected, reason = True, f"unit {cam.unit_id} targeted"
        elif origin is None:
            expected, reason = False, "trigger has no position; only targeted units start"
        elif distance is None:
            expected, reason = False, "camera has no position fix"
        elif distance <= radius_m:
            fix_age_s = (now_ns - cam.position.fix_at_ns) / NS if cam.position else 0.0
            expected = True
            reason = f"in range: {distance:.0f} m <= {radius_m:g} m (fix {fix_age_s:.0f} s old)"
        else:
            expected, reason = False, f"out of range: {distance:.0f} m > {radius_m:g} m"
        if expected and not cam.online:
            offline_s = (now_ns - cam.last_seen_ns) / NS
            if offline_s > offline_grace_s:
                expected = False
                reason += f"; offline for {offline_s:.0f} s, not waited for"
            else:
                reason += f"; offline for {offline_s:.0f} s, will retry"
        decisions.append(TargetDecision(cam.camera_id, cam.unit_id, expected, reason, distance))
    return decisions
