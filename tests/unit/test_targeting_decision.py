"""Range decisions on both sides: the gateway's expectations and the camera's own choice."""

from __future__ import annotations

import pytest

from mesh.clock import NS
from mesh.decide.camera import Action, CameraView, decide, scope
from mesh.decide.geo import offset
from mesh.decide.presence import PresenceRegistry
from mesh.decide.targeting import Scope, Settings, resolve_targets
from mesh.protocol.models import (
    AckStatus,
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
ORIGIN = GeoPoint(lat=39.95, lon=-75.16)


def at(north_m: float) -> GeoPoint:
    lat, lon = offset(ORIGIN.lat, ORIGIN.lon, north_m, 0)
    return GeoPoint(lat=lat, lon=lon)


def presence(
    cid: str,
    north_m: float | None,
    *,
    unit: str = "car-7",
    online: bool = True,
    last_seen_s: float = 0,
) -> CameraPresence:
    pos = None
    if north_m is not None:
        p = at(north_m)
        pos = Position(lat=p.lat, lon=p.lon, fix_at_ns=T0 - 5 * NS)
    return CameraPresence(
        camera_id=cid,
        unit_id=unit,
        role=CameraRole.BODY,
        online=online,
        recording=False,
        position=pos,
        last_seen_ns=T0 - int(last_seen_s * NS),
    )


def command(
    radius: float = 100,
    units: tuple[str, ...] = ("car-12",),
    cameras: tuple[str, ...] = (),
    expires_in_s: float = 30,
) -> RecordStart:
    trigger = TriggerSummary(
        event_id="e",
        kind=TriggerKind.WEAPON_DRAW,
        unit_id="car-12",
        observed_at_ns=T0,
        source=SourceRef(type=SourceType.MANUAL, id="x", authenticated=False),
    )
    return RecordStart(
        activation_id="a-1",
        issuer="gw-car-12",
        trigger=trigger,
        issued_at_ns=T0,
        origin=ORIGIN,
        radius_m=radius,
        pre_event_s=30,
        targets=Targets(units=units, cameras=cameras),
        expires_at_ns=T0 + int(expires_in_s * NS),
    )


def resolve(
    cams: list[CameraPresence], origin: GeoPoint | None = ORIGIN
) -> dict[str, tuple[bool, str]]:
    registry = PresenceRegistry()
    for cam in cams:
        registry.update(cam)
    decisions = resolve_targets(
        registry,
        Scope(origin=origin, radius_m=100, targets=Targets(units=("car-12",))),
        Settings(now_ns=T0, offline_grace_s=120, max_fix_age_s=120),
    )
    return {d.camera_id: (d.expected, d.reason) for d in decisions}


def test_radius_boundary_one_metre_either_side() -> None:
    result = resolve([presence("in", 99), presence("edge", 100), presence("out", 101)])
    assert result["in"][0]
    assert result["edge"][0]
    assert not result["out"][0]
    assert "out of range: 101 m > 100 m" in result["out"][1]
    assert "in range: 99 m <= 100 m" in result["in"][1]


def test_targeted_unit_is_expected_regardless_of_distance_or_fix() -> None:
    result = resolve(
        [presence("far-own", 5000, unit="car-12"), presence("nofix", None, unit="car-12")]
    )
    assert result["far-own"] == (True, "unit car-12 targeted")
    assert result["nofix"][0]


def test_no_fix_and_no_origin_are_explained() -> None:
    # A camera without a fix is found through its unit: here car-7 has one in range.
    result = resolve([presence("nofix", None), presence("dash-7", 10)])
    assert result["nofix"][0]
    assert (
        "no position fix; placed with unit car-7 (dash-7 fix 5 s old): 10 m" in result["nofix"][1]
    )
    assert resolve([presence("c", 10, unit="car-12")], origin=None)["c"][0]  # unit targeted
    assert resolve([presence("c", 10)], origin=None) == {}  # neither targeted nor placed


def test_offline_cameras_are_waited_for_only_within_the_grace_period() -> None:
    result = resolve(
        [
            presence("recent", 10, online=False, last_seen_s=30),
            presence("gone", 10, online=False, last_seen_s=3600),
        ]
    )
    assert result["recent"][0]
    assert "will retry" in result["recent"][1]
    assert not result["gone"][0]
    assert "not waited for" in result["gone"][1]


def me(north_m: float | None = 10, unit: str = "car-7", cid: str = "bwc-1") -> CameraView:
    return CameraView(cid, unit, None if north_m is None else at(north_m))


@pytest.mark.parametrize(
    ("view", "cmd", "direct", "action", "status"),
    [
        (me(50), command(), False, Action.START, AckStatus.STARTED),
        (me(150), command(), False, Action.IGNORE, None),
        (me(150), command(), True, Action.ACK, AckStatus.OUT_OF_RANGE),
        (me(5000, unit="car-12"), command(), False, Action.START, AckStatus.STARTED),
        (
            me(5000, cid="bwc-9"),
            command(cameras=("bwc-9",)),
            False,
            Action.START,
            AckStatus.STARTED,
        ),
        (me(None), command(), False, Action.IGNORE, None),
        (me(50), command(expires_in_s=-1), False, Action.ACK, AckStatus.REJECTED),
    ],
)
def test_camera_decisions(
    view: CameraView, cmd: RecordStart, direct: bool, action: Action, status: AckStatus | None
) -> None:
    decision = decide(cmd, view, direct=direct, already_handled=False, recording=False, now_ns=T0)
    assert (decision.action, decision.status) == (action, status)


def test_a_duplicate_command_starts_nothing() -> None:
    """Again on a shared topic (its cell and its unit, a redelivery): answered already,
    silent. Again on its own topic (a retry): answered already_recording."""
    shared = decide(
        command(), me(50), direct=False, already_handled=True, recording=True, now_ns=T0
    )
    assert (shared.action, shared.status) == (Action.IGNORE, None)
    assert "duplicate" in shared.reason
    direct = decide(command(), me(50), direct=True, already_handled=True, recording=True, now_ns=T0)
    assert (direct.action, direct.status) == (Action.ACK, AckStatus.ALREADY_RECORDING)
    assert "duplicate" in direct.reason


def test_camera_busy_with_another_activation_joins_it() -> None:
    decision = decide(
        command(), me(50), direct=False, already_handled=False, recording=True, now_ns=T0
    )
    assert (decision.action, decision.status) == (Action.ACK, AckStatus.ALREADY_RECORDING)


def test_expired_command_is_rejected_with_how_late_it_was() -> None:
    decision = decide(
        command(expires_in_s=-2.5),
        me(50),
        direct=False,
        already_handled=False,
        recording=False,
        now_ns=T0,
    )
    assert decision.reason == "command expired 2500 ms ago"


def test_scope_explains_itself() -> None:
    assert scope(command(), me(150)) == (False, "out of range: 150 m > 100 m")
