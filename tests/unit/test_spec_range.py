"""The range rule and the filters as docs/protocol.md states them ("The range rule",
"A camera then decides"), on the camera's side and the gateway's: the same formula and
constant, the boundary inside, accuracy unused, roles and groups both required."""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest

from mesh.clock import NS
from mesh.decide.camera import CameraView, scope
from mesh.decide.geo import EARTH_RADIUS_M, haversine_m
from mesh.decide.presence import PresenceRegistry
from mesh.decide.targeting import Scope, Settings, resolve_targets
from mesh.protocol.models import (
    CameraPresence,
    CameraRole,
    GeoPoint,
    Position,
    RecordStart,
    SourceRef,
    SourceType,
    Targets,
    TriggerKind,
    TriggerSummary,
)

T0 = 1_790_000_000 * NS
ORIGIN = GeoPoint(lat=39.952583, lon=-75.165222)
EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "paho_camera.py"


def documented(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The formula exactly as protocol.md writes it."""
    r = 6_371_008.8
    rad = math.pi / 180  # multiplied by, as one constant
    phi1, phi2 = lat1 * rad, lat2 * rad
    dphi = phi2 - phi1
    dlmb = (lon2 - lon1) * rad
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * r * math.asin(min(1.0, math.sqrt(a)))


def _points(n: int) -> list[tuple[float, float, float, float]]:
    rng = random.Random(7)
    out = []
    for _ in range(n):
        lat, lon = rng.uniform(-85, 85), rng.uniform(-180, 180)
        out.append((lat, lon, lat + rng.uniform(-0.02, 0.02), lon + rng.uniform(-0.02, 0.02)))
    return out


def test_the_constant_and_formula_are_the_documented_ones() -> None:
    assert EARTH_RADIUS_M == 6_371_008.8
    for lat1, lon1, lat2, lon2 in _points(20_000):
        # To the bit: math.radians(x) is x * (pi / 180) in CPython.
        assert haversine_m(lat1, lon1, lat2, lon2) == documented(lat1, lon1, lat2, lon2)


def test_the_example_camera_computes_the_same_bits() -> None:
    source = EXAMPLE.read_text()
    body = source[source.index("def distance_m") : source.index("def geohash")]
    namespace: dict[str, object] = {"math": math}
    exec(body, namespace)  # our own example file
    distance_m = namespace["distance_m"]
    for lat1, lon1, lat2, lon2 in _points(20_000):
        assert distance_m(lat1, lon1, lat2, lon2) == haversine_m(lat1, lon1, lat2, lon2)  # type: ignore[operator]


def _command(radius: float, **filters: object) -> RecordStart:
    return RecordStart(
        activation_id="a-1",
        issuer="gw-car-12",
        trigger=TriggerSummary(
            event_id="e",
            kind=TriggerKind.WEAPON_DRAW,
            unit_id="car-12",
            observed_at_ns=T0,
            source=SourceRef(type=SourceType.MANUAL, id="x", authenticated=False),
        ),
        issued_at_ns=T0,
        origin=ORIGIN,
        radius_m=radius,
        pre_event_s=30,
        targets=Targets(units=("car-12",)),
        expires_at_ns=T0 + 30 * NS,
        **filters,  # type: ignore[arg-type]
    )


def _presence(
    cid: str,
    where: GeoPoint,
    *,
    accuracy_m: float | None = None,
    role: CameraRole = CameraRole.BODY,
    groups: tuple[str, ...] = (),
    unit: str = "car-7",
) -> CameraPresence:
    return CameraPresence(
        camera_id=cid,
        unit_id=unit,
        role=role,
        online=True,
        recording=False,
        position=Position(lat=where.lat, lon=where.lon, accuracy_m=accuracy_m, fix_at_ns=T0),
        last_seen_ns=T0,
        groups=groups,
    )


def _gateway(command: RecordStart, cams: list[CameraPresence]) -> dict[str, bool]:
    registry = PresenceRegistry()
    for cam in cams:
        registry.update(cam)
    decisions = resolve_targets(
        registry,
        Scope(
            origin=command.origin,
            radius_m=command.radius_m,
            targets=command.targets,
            roles=command.roles,
            groups=command.groups,
        ),
        Settings(now_ns=T0, offline_grace_s=120, max_fix_age_s=120),
    )
    return {d.camera_id: d.expected for d in decisions}


def _camera(command: RecordStart, cam: CameraPresence) -> bool:
    assert cam.position is not None
    where = GeoPoint(lat=cam.position.lat, lon=cam.position.lon)
    view = CameraView(cam.camera_id, cam.unit_id, where, cam.role, cam.groups)
    return scope(command, view)[0]


def test_the_boundary_is_inside_on_both_sides() -> None:
    edge = GeoPoint(lat=39.954, lon=-75.1641)
    d = haversine_m(ORIGIN.lat, ORIGIN.lon, edge.lat, edge.lon)
    cam = _presence("edge", edge)
    at_edge = _command(d)
    assert _camera(at_edge, cam)
    assert _gateway(at_edge, [cam]) == {"edge": True}
    just_short = _command(math.nextafter(d, 0))
    assert not _camera(just_short, cam)
    assert _gateway(just_short, [cam]) == {"edge": False}


def test_accuracy_neither_widens_nor_narrows_the_circle() -> None:
    near = _presence("near", GeoPoint(lat=39.9530, lon=-75.1652), accuracy_m=500.0)
    far = _presence("far", GeoPoint(lat=39.9560, lon=-75.1652), accuracy_m=500.0)  # ~380 m
    command = _command(150.0)
    assert (_camera(command, near), _camera(command, far)) == (True, False)
    expected = _gateway(command, [near, far])
    assert expected["near"]
    assert not expected.get("far", False)  # not even a candidate: its cells are not read


@pytest.mark.parametrize(
    ("role", "groups", "concerned"),
    [
        (CameraRole.BODY, ("swat",), True),  # both match
        (CameraRole.DASH, ("swat",), False),  # group matches, role does not
        (CameraRole.BODY, ("patrol",), False),  # role matches, group does not
        (CameraRole.BODY, ("patrol", "swat"), True),  # any one group is enough
    ],
)
def test_roles_and_groups_must_both_match_when_both_are_set(
    role: CameraRole, groups: tuple[str, ...], concerned: bool
) -> None:
    command = _command(150.0, roles=(CameraRole.BODY,), groups=("swat", "k9"))
    cam = _presence(
        "c", GeoPoint(lat=39.9526, lon=-75.1652), role=role, groups=groups, unit="car-12"
    )
    assert _camera(command, cam) is concerned  # its unit is targeted and it is in range
    assert _gateway(command, [cam]) == {"c": concerned}
    named = command.model_copy(update={"targets": Targets(cameras=("c",))})
    assert _camera(named, cam)  # a named camera passes no filter
