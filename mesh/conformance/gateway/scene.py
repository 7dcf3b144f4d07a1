"""The scene the kit plays around a gateway under test. Pure.

Eleven simulated cameras, each with one behaviour, placed around the origin of trigger A:
seven within 45 m (so in range of any kind whose radius is 50 m or more), one of the
gateway's own unit 50 km away, and three 50 km away in other units. Trigger B is 20 km
north, where only the gateway's unit is concerned: it is cancelled. Camera ids are fixed
(a signed run needs a key for each: ``conformance gateway --camera-keys DIR``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bridge.topics import Topics
from mesh.clock import NS
from mesh.decide.cells import cell_of
from mesh.decide.geo import offset
from mesh.protocol.models import (
    CameraPresence,
    CameraRole,
    CancelRequest,
    GeoPoint,
    Position,
    SourceRef,
    SourceType,
    TriggerEvent,
    TriggerKind,
)

NEIGHBOURS = "conf-neighbours"  # the unit of the cameras near the origin
FARAWAY = "conf-faraway"
STALE_S = 2 * 86_400  # older than any max_fix_age_s (at most a day) and offline_grace_s
B_NORTH_M = 20_000.0
UNSIGNED_EAST_M = 30_000.0
# The scene's cameras are at most this far from the origin: a kind's radius must reach them.
SCENE_RADIUS_M = 45.0


class Behaviour(StrEnum):
    PROMPT = "prompt"  # answers `started` to the first command about it, twice (a duplicate)
    RETRY_ONLY = "retry_only"  # hears only its own topic: answers the retry (late)
    SILENT = "silent"  # online, in range, never answers
    OFFLINE = "offline"  # its last will, two days old
    REJECTS = "rejects"  # answers `rejected`
    MOVED = "moved"  # its presence says in range; answers `out_of_range`, own topic only
    STALE = "stale"  # its fix is two days old, 50 km away; answers on its own topic
    UNIT = "unit"  # of the gateway's unit, 50 km away; answers on its unit's topic
    FAR = "far"  # 50 km away, another unit: never concerned
    EAGER = "eager"  # 50 km away, not expected; answers `started` all the same
    FORGED = "forged"  # in range; every ack sent for it is one the gateway must refuse


@dataclass(frozen=True)
class SimCamera:
    camera_id: str
    unit_id: str
    behaviour: Behaviour
    north_m: float
    east_m: float

    @property
    def answers(self) -> bool:
        """Whether it signs acks of its own (a signed run needs its key)."""
        return self.behaviour not in (
            Behaviour.SILENT,
            Behaviour.OFFLINE,
            Behaviour.FAR,
            Behaviour.FORGED,
        )


def cameras(unit: str) -> tuple[SimCamera, ...]:
    b = Behaviour
    return (
        SimCamera("conf-ok", NEIGHBOURS, b.PROMPT, 20, 0),
        SimCamera("conf-late", NEIGHBOURS, b.RETRY_ONLY, 0, 40),
        SimCamera("conf-silent", NEIGHBOURS, b.SILENT, -30, 0),
        SimCamera("conf-offline", NEIGHBOURS, b.OFFLINE, 0, -25),
        SimCamera("conf-reject", NEIGHBOURS, b.REJECTS, 25, 25),
        SimCamera("conf-moved", NEIGHBOURS, b.MOVED, 10, 0),
        SimCamera("conf-forged", NEIGHBOURS, b.FORGED, -15, 10),
        SimCamera("conf-stale", NEIGHBOURS, b.STALE, -50_000, 0),
        SimCamera("conf-unit", unit, b.UNIT, -50_000, 1_000),
        SimCamera("conf-far", FARAWAY, b.FAR, -50_000, 2_000),
        SimCamera("conf-eager", FARAWAY, b.EAGER, -50_000, 3_000),
    )


@dataclass(frozen=True)
class GatewayScene:
    topics: Topics
    gateway_id: str
    unit_id: str
    origin: GeoPoint
    kind: TriggerKind
    tag: str  # unique to the run: in every event id and source id

    @property
    def cameras(self) -> tuple[SimCamera, ...]:
        return cameras(self.unit_id)

    def camera(self, behaviour: Behaviour) -> SimCamera:
        return next(c for c in self.cameras if c.behaviour is behaviour)

    def by_id(self, camera_id: str) -> SimCamera | None:
        return next((c for c in self.cameras if c.camera_id == camera_id), None)

    def position(self, camera: SimCamera) -> GeoPoint:
        lat, lon = offset(self.origin.lat, self.origin.lon, camera.north_m, camera.east_m)
        return GeoPoint(lat=lat, lon=lon)

    def fix(self, camera: SimCamera) -> GeoPoint | None:
        """Where the camera itself believes it is now (a stale camera has no fix)."""
        return None if camera.behaviour is Behaviour.STALE else self.position(camera)

    def cell(self, camera: SimCamera) -> str | None:
        fix = self.fix(camera)
        return None if fix is None else cell_of(fix.lat, fix.lon)

    def presence(self, camera: SimCamera, now_ns: int) -> CameraPresence:
        old = now_ns - STALE_S * NS
        gone = camera.behaviour is Behaviour.OFFLINE
        fix_at = old if camera.behaviour in (Behaviour.OFFLINE, Behaviour.STALE) else now_ns
        where = self.position(camera)
        return CameraPresence(
            camera_id=camera.camera_id,
            unit_id=camera.unit_id,
            role=CameraRole.BODY,
            online=not gone,
            recording=False,
            position=Position(lat=where.lat, lon=where.lon, accuracy_m=5.0, fix_at_ns=fix_at),
            last_seen_ns=old if gone else now_ns,
        )

    def place(self, north_m: float, east_m: float) -> GeoPoint:
        lat, lon = offset(self.origin.lat, self.origin.lon, north_m, east_m)
        return GeoPoint(lat=lat, lon=lon)

    def trigger(self, name: str, now_ns: int, where: GeoPoint) -> TriggerEvent:
        return TriggerEvent(
            event_id=f"conf-{self.tag}-{name}",
            kind=self.kind,
            source=SourceRef(
                type=SourceType.MANUAL, id=f"conformance-{self.tag}-{name}", authenticated=False
            ),
            unit_id=self.unit_id,
            observed_at_ns=now_ns,
            position=Position(lat=where.lat, lon=where.lon, accuracy_m=5.0, fix_at_ns=now_ns),
        )

    def cancel(self, name: str, activation_id: str, now_ns: int) -> CancelRequest:
        return CancelRequest(
            cancel_id=f"conf-{self.tag}-{name}",
            activation_id=activation_id,
            unit_id=self.unit_id,
            by="conformance-kit",
            reason="conformance kit: a false trigger",
            at_ns=now_ns,
        )
