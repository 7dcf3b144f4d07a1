"""Range resolution with reasons, the command it makes, and the camera's side of it. Pure."""

from __future__ import annotations

from bridge.topics import Topics
from mesh.clock import NS
from mesh.decide.camera import Action, CameraView, decide
from mesh.decide.fanout import MAX_CELLS, command_topics
from mesh.decide.geo import offset
from mesh.decide.planning import plan_activation
from mesh.decide.policy import Policy
from mesh.decide.presence import PresenceRegistry
from mesh.decide.proximity import MAX_ADDRESSES, Heard, RadioProximity
from mesh.decide.targeting import Scope, Settings, TargetDecision, resolve_targets
from mesh.protocol.models import (
    CameraPresence,
    CameraRole,
    EscalationReason,
    GeoPoint,
    Position,
    Targets,
    TriggerKind,
)
from tests.harness import event

T0 = 1_790_000_000 * NS
ORIGIN = GeoPoint(lat=39.95, lon=-75.16)


def at(north_m: float, east_m: float = 0.0) -> GeoPoint:
    lat, lon = offset(ORIGIN.lat, ORIGIN.lon, north_m, east_m)
    return GeoPoint(lat=lat, lon=lon)


def cam(
    cid: str,
    unit: str,
    north_m: float | None,
    *,
    fix_age_s: float = 5,
    role: CameraRole = CameraRole.BODY,
    groups: tuple[str, ...] = (),
    online: bool = True,
    offline_s: float = 0,
    asleep: bool = False,
    officer: str | None = None,
) -> CameraPresence:
    position = None
    if north_m is not None:
        p = at(north_m)
        position = Position(lat=p.lat, lon=p.lon, fix_at_ns=T0 - int(fix_age_s * NS))
    return CameraPresence(
        camera_id=cid,
        unit_id=unit,
        role=role,
        online=online,
        recording=False,
        position=position,
        last_seen_ns=T0 - int(offline_s * NS),
        groups=groups,
        asleep=asleep,
        officer=officer,
    )


def registry(*cams: CameraPresence) -> PresenceRegistry:
    reg = PresenceRegistry()
    for c in cams:
        reg.update(c)
    return reg


def resolve(
    reg: PresenceRegistry,
    radius: float = 100,
    units: tuple[str, ...] = (),
    *,
    heard: dict[str, Heard] | None = None,
    car: GeoPoint = ORIGIN,
    **scope: object,
) -> dict[str, TargetDecision]:
    decisions = resolve_targets(
        reg,
        Scope(origin=ORIGIN, radius_m=radius, targets=Targets(units=units), **scope),  # type: ignore[arg-type]
        Settings(
            now_ns=T0,
            offline_grace_s=120,
            max_fix_age_s=60,
            own_unit="car-12",
            own_position=car,
            heard=heard or {},
        ),
    )
    return {d.camera_id: d for d in decisions}


def test_one_metre_inside_and_outside_the_radius() -> None:
    got = resolve(registry(cam("in", "u1", 99), cam("edge", "u2", 100), cam("out", "u3", 101)))
    assert (got["in"].expected, got["edge"].expected, got["out"].expected) == (True, True, False)
    assert got["out"].reason == "out of range: 101 m > 100 m (fix 5 s old)"
    assert got["in"].reason == "in range: 99 m <= 100 m (fix 5 s old)"
    assert not got["in"].named


def test_a_stale_fix_is_placed_with_its_unit_and_named() -> None:
    reg = registry(
        cam("dash-7", "car-7", 40, role=CameraRole.DASH),  # fresh: the unit is here
        cam("bwc-7a", "car-7", 3000, fix_age_s=600),  # last fix far away, 10 min old
        cam("dash-9", "car-9", 3000, role=CameraRole.DASH),  # fresh, far
        cam("bwc-9a", "car-9", 50, fix_age_s=600),  # last fix here, but its unit is far
    )
    got = resolve(reg)
    assert got["bwc-7a"].expected
    assert got["bwc-7a"].named
    assert got["bwc-7a"].reason == (
        "fix 600 s old (stale); placed with unit car-7 (dash-7 fix 5 s old): 40 m <= 100 m"
    )
    assert not got["bwc-9a"].expected
    assert got["bwc-9a"].reason.endswith(
        "placed with unit car-9 (dash-9 fix 5 s old): 3000 m > 100 m"
    )
    assert "dash-9" not in got  # not near, not targeted: not read at all


def test_without_a_fresh_fix_in_the_unit() -> None:
    reg = registry(
        cam("old", "car-3", 50, fix_age_s=600),  # stale, alone: judged on its last fix
        cam("lost", "car-4", None),  # no fix, alone: nothing places it
    )
    got = resolve(reg)
    assert got["old"].expected
    assert not got["old"].named
    assert got["old"].reason == (
        "fix 600 s old (stale), none fresher in unit car-3; last known 50 m <= 100 m"
    )
    assert "lost" not in got


def test_the_gateway_places_its_own_unit() -> None:
    got = resolve(registry(cam("bwc-12a", "car-12", None)))
    assert got["bwc-12a"].expected
    assert got["bwc-12a"].named
    assert "placed with unit car-12 (the gateway of car-12): 0 m <= 100 m" in got["bwc-12a"].reason


def test_roles_and_groups() -> None:
    reg = registry(
        cam("dash-1", "u1", 10, role=CameraRole.DASH),
        cam("bwc-1", "u1", 10),
        cam("k9-1", "u2", 10, groups=("k9",)),
    )
    dash_only = resolve(reg, roles=(CameraRole.DASH,))
    assert [c for c, d in dash_only.items() if d.expected] == ["dash-1"]
    assert dash_only["bwc-1"].reason == "role body is not one this kind starts (dash)"
    k9 = resolve(reg, groups=("k9",))
    assert [c for c, d in k9.items() if d.expected] == ["k9-1"]


def test_asleep_offline_and_escalation() -> None:
    reg = registry(
        cam("sleepy", "u1", 10, asleep=True),
        cam("recent", "u2", 10, online=False, offline_s=30),
        cam("gone", "u3", 10, online=False, offline_s=3600, officer="Ofc. Reyes"),
    )
    woken = resolve(reg)
    assert woken["sleepy"].expected
    assert not resolve(reg, wake=False)["sleepy"].expected
    assert woken["recent"].expected
    assert woken["recent"].escalate is None
    assert "will retry" in woken["recent"].reason
    assert not woken["gone"].expected
    assert woken["gone"].escalate is EscalationReason.OFFLINE
    assert "offline for 3600 s, not waited for" in woken["gone"].reason


def test_a_targeted_unit_is_expected_wherever_it_is() -> None:
    got = resolve(
        registry(cam("far", "car-12", 5000), cam("nofix", "car-12", None)), units=("car-12",)
    )
    assert got["far"].expected
    assert got["nofix"].expected
    assert got["far"].reason == "unit car-12 targeted"
    assert not got["far"].named  # the unit's topic carries it


def test_the_plan_names_stale_cameras_and_goes_to_a_bounded_set_of_topics() -> None:
    reg = registry(
        cam("dash-7", "car-7", 40, role=CameraRole.DASH),
        cam("bwc-7a", "car-7", 3000, fix_age_s=600),
        *(cam(f"c{k}", f"u{k}", 20 + k) for k in range(50)),
    )
    plan = plan_activation(
        event(TriggerKind.WEAPON_DRAW),
        activation_id="a-1",
        rules=Policy().rules(TriggerKind.WEAPON_DRAW),
        issuer="gw-car-12",
        gateway_position=ORIGIN,
        cameras=reg,
        now_ns=T0,
        offline_grace_s=120,
        max_fix_age_s=60,
        own_unit="car-12",
    )
    command = plan.command
    assert command.targets.cameras == ("bwc-7a",)
    assert (command.priority, command.radius_m, command.pre_event_s) == (1, 150.0, 60)
    topics = command_topics(Topics(), command)
    cells = [t for t in topics if "/cmd/cell/" in t]
    assert 1 <= len(cells) <= 4
    assert topics[len(cells) :] == ["mesh/v2/cmd/unit/car-12", "mesh/v2/cmd/camera/bwc-7a"]
    assert len(plan.expected) == 52  # 50 in range, dash-7, and bwc-7a placed with it
    assert {d.camera_id for d in plan.expected} >= {"dash-7", "bwc-7a"}


def test_a_circle_too_big_for_cells_goes_to_everyone() -> None:
    plan = plan_activation(
        event(TriggerKind.CRASH),
        activation_id="a-2",
        rules=Policy.model_validate({"kinds": {"crash": {"radius_m": 5000}}}).rules(
            TriggerKind.CRASH
        ),
        issuer="gw-car-12",
        gateway_position=ORIGIN,
        cameras=registry(),
        now_ns=T0,
        offline_grace_s=120,
        max_fix_age_s=60,
    )
    topics = command_topics(Topics(), plan.command)
    assert topics[0] == "mesh/v2/cmd/all"
    assert MAX_CELLS < 100


def view(**kw: object) -> CameraView:
    base: dict[str, object] = {"camera_id": "bwc-1", "unit_id": "u1", "position": at(10)}
    base.update(kw)
    return CameraView(**base)  # type: ignore[arg-type]


def test_the_camera_applies_roles_groups_and_sleep_itself() -> None:
    plan = plan_activation(
        event(TriggerKind.WEAPON_DRAW),
        activation_id="a-3",
        rules=Policy.model_validate(
            {
                "kinds": {
                    "weapon_draw": {"roles": ["body"], "groups": ["patrol"], "wake_sleeping": False}
                }
            }
        ).rules(TriggerKind.WEAPON_DRAW),
        issuer="gw-car-12",
        gateway_position=ORIGIN,
        cameras=registry(),
        now_ns=T0,
        offline_grace_s=120,
        max_fix_age_s=60,
    )
    cmd = plan.command

    def action(v: CameraView) -> Action:
        return decide(
            cmd, v, direct=False, already_handled=False, recording=False, now_ns=T0
        ).action

    assert action(view(groups=("patrol",))) is Action.START
    assert action(view(groups=("patrol",), role=CameraRole.DASH)) is Action.IGNORE
    assert action(view(groups=("traffic",))) is Action.IGNORE
    assert action(view(groups=("patrol",), asleep=True)) is Action.IGNORE
    named = cmd.model_copy(
        update={"targets": cmd.targets.model_copy(update={"cameras": ("bwc-1",)})}
    )
    assert (
        decide(
            named,
            view(role=CameraRole.DASH),
            direct=False,
            already_handled=False,
            recording=False,
            now_ns=T0,
        ).action
        is Action.START
    )


def test_a_camera_the_cars_radio_hears_is_at_the_car() -> None:
    reg = registry(
        cam("indoors", "car-7", None),  # no fix at all, and alone in its unit
        cam("wrong-fix", "car-8", 2500),  # a fresh fix that says 2.5 km away
        cam("near", "car-9", 30),  # in range by its own fix too
        cam("deaf", "car-10", None),  # not heard: nothing places it
    )
    heard = {
        "indoors": Heard(-61, 1.2),
        "wrong-fix": Heard(-70, 3.0),
        "near": Heard(-55, 0.4),
    }
    got = resolve(reg, heard=heard)
    assert got["indoors"].expected
    assert got["indoors"].named  # its own fix cannot put it in range: the gateway names it
    assert got["indoors"].reason == (
        "heard by the car's radio at -61 dBm 1 s ago; placed with the car (the gateway of "
        "car-12): 0 m <= 100 m (no position fix)"
    )
    assert got["wrong-fix"].expected
    assert got["wrong-fix"].named
    assert got["wrong-fix"].reason.endswith("0 m <= 100 m (own fix 5 s old)")
    assert got["near"].expected
    assert not got["near"].named  # it starts on its own fix
    assert got["near"].reason == (
        "in range: 30 m <= 100 m (fix 5 s old); heard by the car's radio at -55 dBm 0 s ago"
    )
    assert "deaf" not in got


def test_the_radio_does_not_stretch_the_radius() -> None:
    reg = registry(cam("indoors", "car-7", None), cam("dash-12", "car-12", 400))
    heard = {"indoors": Heard(-61, 1.0)}
    # The car itself is 400 m from the origin: hearing a camera does not bring it within 100 m.
    got = resolve(reg, heard=heard, car=at(400))
    assert not got.get("indoors", TargetDecision("indoors", "car-7", False, "")).expected
    # A kind with radius 0 starts the unit's own cameras only, heard or not.
    got = resolve(reg, radius=0, units=("car-12",), heard=heard)
    assert "indoors" not in got


def test_radio_proximity_keeps_recent_strong_readings() -> None:
    radio = RadioProximity(min_rssi_dbm=-80, max_age_s=10)
    radio.heard("aa:bb:cc:dd:ee:01", -60, 0)
    radio.heard("AA:BB:CC:DD:EE:02", -85, 0)  # too weak
    radio.heard("AA:BB:CC:DD:EE:03", -70, 0)
    radio.heard("AA:BB:CC:DD:EE:03", -90, 5 * NS)  # moved away: the latest reading counts
    assert radio.near(4 * NS) == {"AA:BB:CC:DD:EE:01": Heard(-60, 4.0)}
    assert radio.near(11 * NS) == {}  # too old
    # Bounded: a street full of phones cannot grow it without end; stale ones go first.
    for i in range(MAX_ADDRESSES):
        radio.heard(f"02:00:00:00:{i >> 8:02X}:{i & 0xFF:02X}", -60, 20 * NS)
    assert len(radio) == MAX_ADDRESSES
    radio.heard("AA:BB:CC:DD:EE:04", -50, 21 * NS)
    assert radio.dropped == 1
    assert "AA:BB:CC:DD:EE:04" not in radio.near(21 * NS)
    radio.heard("AA:BB:CC:DD:EE:04", -50, 40 * NS)  # the old ones have aged out
    assert set(radio.near(40 * NS)) == {"AA:BB:CC:DD:EE:04"}
