"""Range resolution: which cameras the gateway expects to answer, each with its reason.

The camera decides for itself whether to start (see camera_decision); this is the
gateway's side, which decides whom to wait for, retry, name in the command and report as
missed. Pure: the presence index, the scope and the time in; decisions out.

Only the cameras near the origin (the geo cells that meet the circle), the targeted units
and the named cameras are read, so the cost does not grow with the fleet. A camera whose
fix is stale (older than ``max_fix_age_s``) or missing is placed with its unit: the
freshest fix among the unit's other cameras (a dash camera, the car's gateway), and named
in the command so that it starts on the gateway's word rather than its own stale fix. A
camera the car's radio hears (BLE, see mesh.decide.proximity) is placed with the car, whatever its
own fix says, and named likewise.
Every decision carries a reason an auditor can read: distance, fix age, RSSI, unit, online
state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from mesh.clock import NS
from mesh.decide.geo import haversine_m
from mesh.decide.proximity import Heard
from mesh.protocol.models import (
    CameraPresence,
    CameraRole,
    EscalationReason,
    GeoPoint,
    Position,
    Targets,
)


class CameraIndex(Protocol):
    def get(self, camera_id: str) -> CameraPresence | None: ...

    def near(self, lat: float, lon: float, radius_m: float) -> Iterable[CameraPresence]: ...

    def of_unit(self, unit_id: str) -> list[CameraPresence]: ...


@dataclass(frozen=True)
class Scope:
    """What the command asks for."""

    origin: GeoPoint | None
    radius_m: float
    targets: Targets
    roles: tuple[CameraRole, ...] = ()
    groups: tuple[str, ...] = ()
    wake: bool = True


@dataclass(frozen=True)
class Anchor:
    """Where a unit is, from the freshest fix among its cameras (or its gateway)."""

    position: GeoPoint
    source: str  # "dash-7 fix 3 s old", "the gateway of car-12"


@dataclass(frozen=True)
class TargetDecision:
    camera_id: str
    unit_id: str | None
    expected: bool
    reason: str
    distance_m: float | None = None
    # Named in the command: it starts on the gateway's word (placed with its unit).
    named: bool = False
    # Dispatch must hear of it at once (in range or targeted, but offline too long).
    escalate: EscalationReason | None = None


@dataclass(frozen=True)
class Settings:
    now_ns: int
    offline_grace_s: float
    max_fix_age_s: float
    # The gateway's own unit and position: an anchor for its unit's cameras.
    own_unit: str | None = None
    own_position: GeoPoint | None = None
    # Cameras the car's radio hears now (camera id -> reading): they are at the car.
    heard: Mapping[str, Heard] = field(default_factory=dict)


def resolve_targets(index: CameraIndex, scope: Scope, settings: Settings) -> list[TargetDecision]:
    resolver = _Resolver(index, scope, settings)
    return resolver.run()


class _Resolver:
    def __init__(self, index: CameraIndex, scope: Scope, settings: Settings) -> None:
        self.index, self.scope, self.s = index, scope, settings
        self._anchors: dict[str, Anchor | None] = {}

    def run(self) -> list[TargetDecision]:
        scope = self.scope
        candidates: dict[str, CameraPresence] = {}
        for camera_id in scope.targets.cameras:
            cam = self.index.get(camera_id)
            if cam is not None:
                candidates[camera_id] = cam
        for unit in scope.targets.units:
            candidates.update((c.camera_id, c) for c in self.index.of_unit(unit))
        if scope.origin is not None and scope.radius_m > 0:
            near = self.index.near(scope.origin.lat, scope.origin.lon, scope.radius_m)
            candidates.update((c.camera_id, c) for c in near)
            # The radio's reach is a few tens of metres: a handful of cameras at most.
            for camera_id in self.s.heard:
                cam = self.index.get(camera_id)
                if cam is not None:
                    candidates[camera_id] = cam
            # Cameras without a usable fix are found through their unit: any unit with a
            # camera in range, or anchored in range by its gateway, brings its others.
            for unit in self._units_in_range(candidates.values()):
                candidates.update((c.camera_id, c) for c in self.index.of_unit(unit))
        return [self._decide(cam) for cam in candidates.values()]

    # --- where cameras are ----------------------------------------------------------------
    def _fresh(self, cam: CameraPresence) -> bool:
        pos = cam.position
        return pos is not None and (self.s.now_ns - pos.fix_at_ns) <= self.s.max_fix_age_s * NS

    def _anchor(self, unit: str) -> Anchor | None:
        if unit in self._anchors:
            return self._anchors[unit]
        anchor = None
        fresh = [c for c in self.index.of_unit(unit) if self._fresh(c)]
        if fresh:
            best = max(fresh, key=lambda c: c.position.fix_at_ns if c.position else 0)
            assert best.position is not None
            age = (self.s.now_ns - best.position.fix_at_ns) / NS
            anchor = Anchor(
                GeoPoint(lat=best.position.lat, lon=best.position.lon),
                f"{best.camera_id} fix {age:.0f} s old",
            )
        elif unit == self.s.own_unit and self.s.own_position is not None:
            anchor = Anchor(self.s.own_position, f"the gateway of {unit}")
        self._anchors[unit] = anchor
        return anchor

    def _distance(self, point: GeoPoint | Position) -> float:
        origin = self.scope.origin
        assert origin is not None
        return haversine_m(origin.lat, origin.lon, point.lat, point.lon)

    def _units_in_range(self, cameras: Iterable[CameraPresence]) -> set[str]:
        # Only a unit with a camera lacking a fresh fix can bring in a camera the cells
        # did not: the others' cameras are placed by their own fixes.
        units = {c.unit_id for c in cameras}
        if self.s.own_unit is not None:
            units.add(self.s.own_unit)
        inside = set()
        for unit in units:
            if unit != self.s.own_unit and all(self._fresh(c) for c in self.index.of_unit(unit)):
                continue
            anchor = self._anchor(unit)
            if anchor is not None and self._distance(anchor.position) <= self.scope.radius_m:
                inside.add(unit)
        return inside

    # --- one camera -------------------------------------------------------------------------
    def _decide(self, cam: CameraPresence) -> TargetDecision:
        scope = self.scope
        if cam.camera_id in scope.targets.cameras:
            return self._reachable(cam, True, "named in the command", None)
        refused = self._filtered_out(cam)
        if refused:
            return TargetDecision(cam.camera_id, cam.unit_id, False, refused)
        if cam.unit_id in scope.targets.units:
            return self._reachable(cam, False, f"unit {cam.unit_id} targeted", None)
        if scope.origin is None:
            return TargetDecision(
                cam.camera_id, cam.unit_id, False, "trigger has no position; only targeted units"
            )
        return self._by_position(cam)

    def _filtered_out(self, cam: CameraPresence) -> str:
        scope = self.scope
        if scope.roles and cam.role not in scope.roles:
            wanted = ", ".join(r.value for r in scope.roles)
            return f"role {cam.role.value} is not one this kind starts ({wanted})"
        if scope.groups and not set(cam.groups) & set(scope.groups):
            return f"in none of the groups this kind starts ({', '.join(scope.groups)})"
        return ""

    def _by_position(self, cam: CameraPresence) -> TargetDecision:
        radius = self.scope.radius_m
        pos = cam.position
        heard = self.s.heard.get(cam.camera_id)
        if pos is not None and self._fresh(cam):
            distance = self._distance(pos)
            age = (self.s.now_ns - pos.fix_at_ns) / NS
            if distance <= radius:
                reason = f"in range: {distance:.0f} m <= {radius:g} m (fix {age:.0f} s old)"
                if heard is not None:
                    reason += f"; {heard.describe()}"
                return self._reachable(cam, False, reason, distance)
            if heard is not None and (by_radio := self._by_radio(cam, heard)) is not None:
                return by_radio
            reason = f"out of range: {distance:.0f} m > {radius:g} m (fix {age:.0f} s old)"
            return TargetDecision(cam.camera_id, cam.unit_id, False, reason, distance)
        if heard is not None and (by_radio := self._by_radio(cam, heard)) is not None:
            return by_radio
        own = (
            "no position fix"
            if pos is None
            else f"fix {(self.s.now_ns - pos.fix_at_ns) / NS:.0f} s old (stale)"
        )
        anchor = self._anchor(cam.unit_id)
        if anchor is not None:
            distance = self._distance(anchor.position)
            where = f"{own}; placed with unit {cam.unit_id} ({anchor.source})"
            if distance <= radius:
                reason = f"{where}: {distance:.0f} m <= {radius:g} m"
                return self._reachable(cam, True, reason, distance)
            reason = f"{where}: {distance:.0f} m > {radius:g} m"
            return TargetDecision(cam.camera_id, cam.unit_id, False, reason, distance)
        if pos is None:
            reason = f"no position fix, and none in unit {cam.unit_id}"
            return TargetDecision(cam.camera_id, cam.unit_id, False, reason)
        # Stale, and nothing fresher in its unit: its last fix is the best there is.
        distance = self._distance(pos)
        where = f"{own}, none fresher in unit {cam.unit_id}; last known"
        if distance <= radius:
            return self._reachable(
                cam, False, f"{where} {distance:.0f} m <= {radius:g} m", distance
            )
        return TargetDecision(
            cam.camera_id, cam.unit_id, False, f"{where} {distance:.0f} m > {radius:g} m", distance
        )

    def _by_radio(self, cam: CameraPresence, heard: Heard) -> TargetDecision | None:
        """Heard by the car's radio: the camera is where the car is. Named in the command,
        since its own fix (stale, missing or wrong) would keep it out."""
        car = self._anchor(self.s.own_unit) if self.s.own_unit is not None else None
        if car is None or self.scope.radius_m <= 0:
            return None
        distance = self._distance(car.position)
        if distance > self.scope.radius_m:
            return None  # the car is out of range; the camera's own fix may still say in
        pos = cam.position
        own = (
            "no position fix"
            if pos is None
            else f"own fix {(self.s.now_ns - pos.fix_at_ns) / NS:.0f} s old"
        )
        reason = (
            f"{heard.describe()}; placed with the car ({car.source}): "
            f"{distance:.0f} m <= {self.scope.radius_m:g} m ({own})"
        )
        return self._reachable(cam, True, reason, distance)

    def _reachable(
        self, cam: CameraPresence, named: bool, reason: str, distance: float | None
    ) -> TargetDecision:
        """In scope: expected, unless asleep and not to be woken, or offline too long."""
        if cam.asleep and not self.scope.wake:
            reason += "; asleep, and this kind does not wake cameras"
            return TargetDecision(cam.camera_id, cam.unit_id, False, reason, distance)
        if not cam.online:
            offline_s = (self.s.now_ns - cam.last_seen_ns) / NS
            if offline_s > self.s.offline_grace_s:
                reason += f"; offline for {offline_s:.0f} s, not waited for"
                return TargetDecision(
                    cam.camera_id,
                    cam.unit_id,
                    False,
                    reason,
                    distance,
                    named,
                    EscalationReason.OFFLINE,
                )
            reason += f"; offline for {offline_s:.0f} s, will retry"
        return TargetDecision(cam.camera_id, cam.unit_id, True, reason, distance, named)
