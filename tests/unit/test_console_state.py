"""The console's pure parts: what it keeps and shows, and who may use it."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from mesh.dispatch.console.auth import Role, Users, add_user, check_password, hash_password
from mesh.dispatch.console.state import (
    CAMERA_PAGE,
    MAX_CAMERA_PAGE,
    MAX_UNITS_SHOWN,
    CameraLimits,
    ConsoleState,
    activation_view,
)
from mesh.dispatch.console.throttle import FailureBackoff, LoginLimits
from mesh.documents import ConfigError
from mesh.protocol.models import (
    ActivationRecord,
    ActivationState,
    CameraOutcome,
    CameraPresence,
    CameraRole,
    Escalation,
    EscalationReason,
    LatencySummary,
    OutcomeStatus,
    TriggerKind,
    TriggerSummary,
)
from triggers.manual import manual_trigger

DECIDED_NS = 1_790_000_000_123_456_789


def record(
    state: ActivationState, *, missed: bool = False, cancelled_by: str = ""
) -> ActivationRecord:
    cameras = (
        CameraOutcome(
            camera_id="dash-1",
            unit_id="car-1",
            expected=True,
            targeting="own unit",
            status=OutcomeStatus.STARTED,
        ),
        CameraOutcome(
            camera_id="bwc-2",
            unit_id="car-2",
            expected=True,
            targeting="in range: 40 m",
            status=OutcomeStatus.MISSED if missed else OutcomeStatus.PENDING,
        ),
    )
    return ActivationRecord(
        activation_id="act-1",
        issuer="gw-1",
        unit_id="car-1",
        trigger=TriggerSummary.of(manual_trigger(TriggerKind.WEAPON_DRAW, "car-1", source_id="t")),
        state=state,
        reason="test",
        decided_at_ns=DECIDED_NS,
        finished_at_ns=None if state is ActivationState.PENDING else DECIDED_NS + 5_000_000,
        expires_at_ns=DECIDED_NS + 30_000_000_000,
        origin=None,
        radius_m=150,
        pre_event_s=60,
        cameras=cameras,
        latency_ms=LatencySummary(p50=4.5, max=9.0),
        all_acked_ms=None if missed else 9.0,
        cancelled_by=cancelled_by or None,
    )


def test_a_late_progress_update_never_replaces_the_final_record() -> None:
    state = ConsoleState()
    assert state.apply_activation(record(ActivationState.PENDING)) is not None
    final = state.apply_activation(record(ActivationState.PARTIAL, missed=True))
    assert final is not None
    assert final["activation"]["missed"] == ["bwc-2"]
    assert final["activation"]["recording"] == 1
    assert final["activation"]["expected"] == 2
    assert state.apply_activation(record(ActivationState.PENDING)) is None
    assert state.activations["act-1"].state is ActivationState.PARTIAL
    # A cancel replaces it, and says who cancelled.
    update = state.apply_activation(
        record(ActivationState.CANCELLED, missed=True, cancelled_by="officer:bwc-1")
    )
    assert update is not None
    assert update["activation"]["state"] == "cancelled"
    assert update["activation"]["cancelled_by"] == "officer:bwc-1"


def test_views_give_times_in_ms_and_counts() -> None:
    view = activation_view(record(ActivationState.PARTIAL, missed=True))
    assert view["decided_at_ms"] == 1_790_000_000_123
    assert view["finished_at_ms"] == 1_790_000_000_128
    assert view["kind"] == "weapon_draw"
    assert view["source"] == "manual:t"
    # Not everyone acked: the latency shown is the median ack.
    assert view["latency_ms"] == 4.5
    assert activation_view(record(ActivationState.CONFIRMED))["latency_ms"] == 9.0


def test_escalations_are_shown_once_whatever_the_audiences() -> None:
    state = ConsoleState()

    def esc(audience: str, camera: str = "bwc-2") -> Escalation:
        return Escalation(
            activation_id="act-1",
            unit_id="car-1",
            kind=TriggerKind.WEAPON_DRAW,
            priority=1,
            issuer="gw-1",
            camera_id=camera,
            camera_unit_id="car-2",
            officer="Ofc. Lee",
            reason=EscalationReason.NO_ACK,
            detail="no ack after 3 attempts",
            attempts=3,
            audience=audience,
            at_ns=time.time_ns(),
        )

    first = state.apply_escalation(esc("dispatch"))
    assert first is not None
    assert first["escalation"]["officer"] == "Ofc. Lee"
    assert state.apply_escalation(esc("unit-car-1")) is None
    assert state.apply_escalation(esc("dispatch", camera="bwc-3")) is not None
    assert [e["camera_id"] for e in state.snapshot()["escalations"]] == ["bwc-2", "bwc-3"]


def test_presence_comes_and_goes() -> None:
    state = ConsoleState()
    presence = CameraPresence(
        camera_id="bwc-2",
        unit_id="car-2",
        role=CameraRole.BODY,
        online=True,
        recording=False,
        position=None,
        last_seen_ns=time.time_ns(),
    )
    assert state.apply_presence("bwc-2", presence)["camera"]["online"] is True
    assert [c["camera_id"] for c in state.snapshot()["cameras"]] == ["bwc-2"]
    assert state.apply_presence("bwc-2", None) == {"type": "camera_removed", "camera_id": "bwc-2"}
    assert state.snapshot()["cameras"] == []


def basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def test_passwords_are_salted_scrypt_hashes() -> None:
    one, two = hash_password("correct horse"), hash_password("correct horse")
    assert one != two  # salted
    assert one.startswith("scrypt$16384$8$1$")
    assert check_password("correct horse", one)
    assert not check_password("correct horsf", one)


async def test_users_file_roles_and_logins(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    add_user(path, "alice", Role.DISPATCHER, "alice-pass")
    add_user(path, "bob", Role.VIEWER, "bob-pass")
    assert path.stat().st_mode & 0o777 == 0o600
    assert "alice-pass" not in path.read_text()
    users = Users.load(path)
    alice = await users.authenticate(basic("alice", "alice-pass"))
    assert alice is not None
    assert alice.may_dispatch
    bob = await users.authenticate(basic("bob", "bob-pass"))
    assert bob is not None
    assert not bob.may_dispatch
    assert await users.authenticate(basic("alice", "bob-pass")) is None
    assert await users.authenticate(basic("mallory", "x")) is None
    assert await users.authenticate("Basic not-base64!") is None
    assert await users.authenticate("Bearer abc") is None
    assert await users.authenticate(None) is None
    # Replacing a user changes the password.
    add_user(path, "alice", Role.VIEWER, "new-pass")
    again = Users.load(path)
    assert await again.authenticate(basic("alice", "alice-pass")) is None
    changed = await again.authenticate(basic("alice", "new-pass"))
    assert changed is not None
    assert changed.role is Role.VIEWER


def test_a_bad_users_file_names_the_key(tmp_path: Path) -> None:
    path = tmp_path / "users.yaml"
    path.write_text("users:\n  alice: {role: admin, password: x}\n")
    with pytest.raises(ConfigError) as caught:
        Users.load(path)
    assert "users.alice.role" in str(caught.value)
    assert str(path) in str(caught.value)
    path.write_text("users:\n  alice: {role: viewer, password: plain-text}\n")
    with pytest.raises(ConfigError, match=r"users\.alice\.password"):
        Users.load(path)


def _presence(camera_id: str, unit_id: str, last_seen_ns: int) -> CameraPresence:
    return CameraPresence(
        camera_id=camera_id,
        unit_id=unit_id,
        role=CameraRole.BODY,
        online=True,
        recording=False,
        last_seen_ns=last_seen_ns,
    )


def test_cameras_are_capped_least_recently_heard_first() -> None:
    state = ConsoleState(camera_limits=CameraLimits(max_cameras=3, expiry_s=3600))
    now = time.time_ns()
    for i in range(3):
        state.apply_presence(f"bwc-{i}", _presence(f"bwc-{i}", "car-1", now), now)
    state.apply_presence("bwc-0", _presence("bwc-0", "car-1", now), now)  # heard again
    state.apply_presence("bwc-9", _presence("bwc-9", "car-2", now), now)
    assert list(state.cameras) == ["bwc-2", "bwc-0", "bwc-9"]  # bwc-1 went: heard least lately
    assert state.dropped["cameras.evicted"] == 1


def test_cameras_gone_long_expire_and_a_clock_ahead_does_not_keep_them() -> None:
    state = ConsoleState(camera_limits=CameraLimits(max_cameras=10, expiry_s=60))
    now = time.time_ns()
    # A retained presence last seen two minutes ago is not shown at all.
    gone = state.apply_presence("old", _presence("old", "car-1", now - 120 * 10**9), now)
    assert gone == {"type": "camera_removed", "camera_id": "old"}
    # One with its clock a day ahead counts as heard now, and expires like the others.
    state.apply_presence("ahead", _presence("ahead", "car-1", now + 86_400 * 10**9), now)
    state.apply_presence("fresh", _presence("fresh", "car-1", now), now)
    later = now + 61 * 10**9
    state.apply_presence("new", _presence("new", "car-1", later), later)
    assert list(state.cameras) == ["new"]
    assert state.dropped["cameras.expired"] == 3


def test_cameras_come_a_page_at_a_time_and_units_are_bounded() -> None:
    state = ConsoleState()
    now = time.time_ns()
    for i in range(2500):
        unit = f"car-{i % 1200:04d}"
        state.apply_presence(f"cam-{i:04d}", _presence(f"cam-{i:04d}", unit, now), now)
    page = state.camera_page(offset=200, limit=100)
    assert (page["cameras_total"], page["cameras_offset"], len(page["cameras"])) == (2500, 200, 100)
    ordered = [(c["unit_id"], c["camera_id"]) for c in state.camera_page(0, 5000)["cameras"]]
    assert len(ordered) == MAX_CAMERA_PAGE
    assert ordered == sorted(ordered)
    only = state.camera_page(unit="car-0007")
    assert [c["camera_id"] for c in only["cameras"]] == ["cam-0007", "cam-1207", "cam-2407"]
    snapshot = state.snapshot()
    assert len(snapshot["cameras"]) == CAMERA_PAGE
    assert len(snapshot["units"]) == MAX_UNITS_SHOWN


def test_login_backoff_doubles_forgets_and_is_bounded() -> None:
    limits = LoginLimits(free_failures=2, first_delay_s=1, max_delay_s=4, forget_after_s=100)
    backoff = FailureBackoff(limits)
    backoff.failed("a", 0)
    assert backoff.wait_s("a", 0) == 0  # one free failure left
    backoff.failed("a", 0)
    assert backoff.wait_s("a", 0) == 1
    assert [_fail_then_wait(backoff, "a", t) for t in (1, 3, 7, 11)] == [2, 4, 4, 4]
    assert backoff.wait_s("a", 200) == 0  # forgotten after 100 s without a failure
    assert len(backoff) == 0
    backoff.failed("b", 0)
    backoff.succeeded("b")
    assert len(backoff) == 0
    small = FailureBackoff(LoginLimits(max_tracked=3))
    for key in "wxyz":
        small.failed(key, 0)
    assert len(small) == 3  # the key failed longest ago (w) is forgotten


def _fail_then_wait(backoff: FailureBackoff, key: str, now: float) -> float:
    backoff.failed(key, now)
    return backoff.wait_s(key, now)
