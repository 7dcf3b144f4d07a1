"""The gateway's camera registry: bounded (cap, expiry, eviction rule) and logged on change
or when a decision reads it (pure: no broker, no log file)."""

from __future__ import annotations

import json

from mesh.clock import NS
from mesh.decide.geo import offset
from mesh.decide.presence import PresenceRegistry, changed
from mesh.protocol.models import CameraPresence, CameraRole, Position
from tests.harness import CENTER


class Journal:
    def __init__(self) -> None:
        self.records: list[str] = []

    def presence(self, presence: CameraPresence) -> None:
        self.records.append(presence.model_dump_json())

    def removed(self, camera_id: str, reason: str) -> None:
        self.records.append(json.dumps({"camera_id": camera_id, "removed": True, "reason": reason}))


def cam(
    camera_id: str, *, north_m: float = 0, at_s: float = 1000, recording: bool = False
) -> CameraPresence:
    lat, lon = offset(CENTER.lat, CENTER.lon, north_m, 0)
    return CameraPresence(
        camera_id=camera_id,
        unit_id="car-1",
        role=CameraRole.BODY,
        online=True,
        recording=recording,
        position=Position(lat=lat, lon=lon, fix_at_ns=int(at_s * NS), accuracy_m=5),
        last_seen_ns=int(at_s * NS),
    )


def test_the_hundred_thousand_fake_ids_attack_keeps_the_cap() -> None:
    """100,000 fake camera ids: the registry holds its cap, the least recently heard go."""
    registry = PresenceRegistry(max_cameras=1000)
    for i in range(100_000):
        registry.update(cam(f"fake-{i}"), heard_mono_ns=i)
    assert len(registry) == 1000
    assert registry.counters["evicted"] == 99_000
    assert set(registry.ids()) == {f"fake-{i}" for i in range(99_000, 100_000)}


def test_at_the_cap_a_camera_a_live_activation_waits_for_is_never_evicted() -> None:
    awaited = {"bwc-old"}
    registry = PresenceRegistry(max_cameras=3, protected=lambda c: c in awaited)
    registry.update(cam("bwc-old"), heard_mono_ns=1)  # the least recently heard
    registry.update(cam("bwc-b"), heard_mono_ns=2)
    registry.update(cam("bwc-c"), heard_mono_ns=3)
    assert registry.update(cam("newcomer"), heard_mono_ns=4)
    assert set(registry.ids()) == {"bwc-old", "bwc-c", "newcomer"}  # bwc-b went instead


def test_a_registry_full_of_awaited_cameras_refuses_the_newcomer() -> None:
    registry = PresenceRegistry(max_cameras=2, protected=lambda _c: True)
    registry.update(cam("a"), heard_mono_ns=1)
    registry.update(cam("b"), heard_mono_ns=2)
    assert not registry.update(cam("c"), heard_mono_ns=3)
    assert set(registry.ids()) == {"a", "b"}
    assert registry.counters["refused_full"] == 1


def test_cameras_not_heard_for_long_expire() -> None:
    registry = PresenceRegistry(expire_after_s=60)
    registry.update(cam("gone"), heard_mono_ns=0)
    registry.update(cam("here"), heard_mono_ns=30 * NS)
    registry.update(cam("new"), heard_mono_ns=61 * NS)  # a newcomer sweeps the old out
    assert set(registry.ids()) == {"here", "new"}
    assert registry.counters["expired"] == 1


def test_a_heartbeat_is_not_logged_a_change_is_and_a_read_logs_the_latest() -> None:
    journal = Journal()
    registry = PresenceRegistry(journal=journal)
    registry.update(cam("bwc-1", at_s=1000))  # new in this run: not logged yet
    registry.update(cam("bwc-1", at_s=1030))  # a heartbeat: times only
    assert journal.records == []
    assert not changed(cam("bwc-1", at_s=1000), cam("bwc-1", at_s=1030))
    registry.update(cam("bwc-1", at_s=1060, recording=True))  # a change: logged at once
    assert len(journal.records) == 1
    registry.update(cam("bwc-1", at_s=1090, recording=True))  # a heartbeat again
    assert len(journal.records) == 1
    # A decision reads it (near the place, or by its unit): logged as it is now, once.
    assert [c.camera_id for c in registry.near(CENTER.lat, CENTER.lon, 100)] == ["bwc-1"]
    registry.of_unit("car-1")
    assert len(journal.records) == 2
    assert CameraPresence.model_validate_json(journal.records[-1]).last_seen_ns == 1090 * NS
    # Leaving is logged for a camera the log knows of, not for one it never saw.
    registry.update(cam("never-read"))
    registry.remove("never-read")
    registry.remove("bwc-1")
    assert json.loads(journal.records[-1]) == {
        "camera_id": "bwc-1",
        "removed": True,
        "reason": "removed",
    }
    assert len(journal.records) == 3


def test_a_move_to_another_place_is_a_change() -> None:
    assert changed(cam("bwc-1", north_m=0), cam("bwc-1", north_m=30))
