"""Escalation, cancellation and moving cameras, end to end over a real mosquitto."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.camera.agent import CameraAgent, CameraIdentity
from mesh.camera.recorder import SimulatedRecorder
from mesh.decide.policy import Policy
from mesh.journal.records import CancelEntry, EscalatedEntry, RecordKind
from mesh.journal.store import read_records
from mesh.protocol.codec import decode, encode
from mesh.protocol.models import (
    ActivationState,
    CameraRole,
    CancelRequest,
    Escalation,
    EscalationReason,
    GeoPoint,
    OutcomeStatus,
    Position,
    ReceiptOutcome,
    TriggerKind,
)
from tests.harness import CENTER, UNIT, Mesh, event, ghost, listen, running_mesh, wait_until

FAST = Policy.model_validate(
    {
        "defaults": {
            "ack_deadline_ms": 150,
            "max_retries": 2,
            "escalate_to": ["dispatch", "own_unit"],
        },
        "kinds": {"weapon_draw": {"escalate_to": ["dispatch", "own_unit"]}},
    }
)


async def test_silent_cameras_are_retried_then_escalated(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db", policy=FAST) as mesh:
        dispatch = await listen(mesh, topics.escalation("dispatch"))
        unit = await listen(mesh, topics.escalation(f"unit-{UNIT}"))
        await ghost(mesh, "bwc-silent", 50, online=True, offline_s=0)
        await ghost(mesh, "bwc-gone", 60, online=False, offline_s=3600)
        record = await mesh.activate(event(TriggerKind.WEAPON_DRAW))
        assert record.state is ActivationState.PARTIAL
        silent = next(c for c in record.cameras if c.camera_id == "bwc-silent")
        assert (silent.status, silent.attempts) == (OutcomeStatus.MISSED, 3)  # 1 + 2 retries
        await wait_until(lambda: len(dispatch) == 2 and len(unit) == 2)
        escalations = {e.camera_id: e for e in (decode(Escalation, m.payload) for m in dispatch)}
        assert escalations["bwc-silent"].reason is EscalationReason.NO_ACK
        assert escalations["bwc-silent"].attempts == 3
        assert escalations["bwc-silent"].officer == "Ofc. Reyes"
        assert escalations["bwc-silent"].camera_unit_id == "car-7"
        assert escalations["bwc-gone"].reason is EscalationReason.OFFLINE
        assert "offline for 3600 s" in escalations["bwc-gone"].detail
        assert {decode(Escalation, m.payload).audience for m in unit} == {f"unit-{UNIT}"}
        # The offline camera was told at once, not after the retries.
        assert escalations["bwc-gone"].at_ns < escalations["bwc-silent"].at_ns
    logged = [
        EscalatedEntry.model_validate_json(r.body).escalation
        for r in read_records(tmp_path / "log.db", kinds=(RecordKind.ESCALATED.value,))
    ]
    assert sorted((e.camera_id, e.audience) for e in logged) == [
        ("bwc-gone", "dispatch"),
        ("bwc-gone", f"unit-{UNIT}"),
        ("bwc-silent", "dispatch"),
        ("bwc-silent", f"unit-{UNIT}"),
    ]


def cancel(activation_id: str, by: str = "officer:bwc-12a") -> CancelRequest:
    return CancelRequest(
        cancel_id=f"c-{uuid.uuid4().hex[:12]}",
        activation_id=activation_id,
        unit_id=UNIT,
        by=by,
        reason="holster bumped getting out of the car",
        at_ns=time.time_ns(),
    )


async def send_cancel(mesh: Mesh, request: CancelRequest) -> tuple[ReceiptOutcome, str]:
    await mesh.driver.publish(mesh.topics.cancel(UNIT), encode(request))
    receipt = await mesh.watcher.receipt(request.cancel_id, 10)
    assert receipt is not None
    return receipt.outcome, receipt.reason


async def test_a_false_trigger_cancelled_in_its_window(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    policy = Policy.model_validate({"kinds": {"weapon_draw": {"cancel_window_s": 1.5}}})
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db", policy=policy) as mesh:
        trigger = event(TriggerKind.WEAPON_DRAW, source_id="holster-1")
        record = await mesh.activate(trigger)
        assert record.state is ActivationState.CONFIRMED
        started = [c.camera_id for c in record.cameras if c.status is OutcomeStatus.STARTED]
        outcome, _ = await send_cancel(mesh, cancel(record.activation_id))
        assert outcome is ReceiptOutcome.ACCEPTED
        await wait_until(
            lambda: mesh.watcher.records[record.activation_id].state is ActivationState.CANCELLED
        )
        cancelled = mesh.watcher.records[record.activation_id]
        assert cancelled.cancelled_by == "officer:bwc-12a"
        # The outcome stands (nothing erased); the cameras it started stop and keep it.
        assert [c.status for c in cancelled.cameras] == [c.status for c in record.cameras]
        await wait_until(lambda: all(mesh.agents[c].simulated.stopped == 1 for c in started))
        assert not any(mesh.agents[c].recorder.is_recording(time.time_ns()) for c in started)
        # Twice: refused. And the cooldown is released: the same holster, now for real.
        outcome, reason = await send_cancel(mesh, cancel(record.activation_id))
        assert (outcome, reason) == (
            ReceiptOutcome.REJECTED,
            "already cancelled by officer:bwc-12a",
        )
        again = await mesh.activate(event(TriggerKind.WEAPON_DRAW, source_id="holster-1"))
        assert again.state is ActivationState.CONFIRMED
        # Too late for that one.
        await asyncio.sleep(1.7)
        outcome, reason = await send_cancel(mesh, cancel(again.activation_id))
        assert outcome is ReceiptOutcome.REJECTED
        assert reason.startswith("the 1.5 s cancel window closed")
        # A dispatcher's activation is not the officer's to cancel.
        ordered = await mesh.activate(event(TriggerKind.DISPATCH, source_id="desk"))
        outcome, reason = await send_cancel(mesh, cancel(ordered.activation_id))
        assert outcome is ReceiptOutcome.REJECTED
        assert reason == "the policy allows no cancelling of dispatch activations"
    entries = [
        CancelEntry.model_validate_json(r.body)
        for r in read_records(tmp_path / "log.db", kinds=(RecordKind.CANCEL.value,))
    ]
    assert [e.accepted for e in entries] == [True, False, False, False]


async def test_cancelling_while_cameras_are_still_silent(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db", policy=FAST) as mesh:
        dispatch = await listen(mesh, topics.escalation("dispatch"))
        await ghost(mesh, "bwc-silent", 50, online=True, offline_s=0)
        trigger = event(TriggerKind.WEAPON_DRAW)
        await mesh.send(trigger)
        receipt = await mesh.receipt(trigger)
        assert receipt.activation_id is not None
        outcome, _ = await send_cancel(mesh, cancel(receipt.activation_id))
        assert outcome is ReceiptOutcome.ACCEPTED
        record = await mesh.watcher.final_record(receipt.activation_id, 10)
        assert record is not None
        assert record.state is ActivationState.CANCELLED
        silent = next(c for c in record.cameras if c.camera_id == "bwc-silent")
        assert silent.status is OutcomeStatus.CANCELLED
        await asyncio.sleep(0.6)  # past the retries it would have made
        assert dispatch == []  # a cancelled activation escalates no one
        assert mesh.gateway.coordinator.counters["retries"] == 0


async def test_a_camera_that_moves_hears_commands_in_its_new_cell(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db") as mesh:
        from mesh.decide.geo import offset

        rover = CameraAgent(
            CameraIdentity("bwc-rover", "car-30", CameraRole.BODY),
            url=mesh.url,
            topics=topics,
            position=GeoPoint(lat=CENTER.lat, lon=CENTER.lon),
            recorder=SimulatedRecorder(powered_on_ns=time.time_ns() - 600 * 10**9),
            client_id=f"t-rover-{uuid.uuid4().hex[:6]}",
        )
        await mesh.start_camera(rover)
        first_cell = rover.cell
        # 3 km north: another cell. Its presence and its subscription follow it.
        lat, lon = offset(CENTER.lat, CENTER.lon, 3000, 0)
        rover.move_to(GeoPoint(lat=lat, lon=lon))
        await rover.settled()
        assert rover.cell != first_cell
        await wait_until(
            lambda: (
                (p := mesh.gateway.presence.get("bwc-rover")) is not None
                and p.position is not None
                and abs(p.position.lat - lat) < 1e-9
            )
        )
        there = Position(lat=lat, lon=lon, fix_at_ns=time.time_ns())
        record = await mesh.activate(event(TriggerKind.MANUAL, position=there, source_id="r"))
        rover_outcome = next(c for c in record.cameras if c.camera_id == "bwc-rover")
        assert rover_outcome.status is OutcomeStatus.STARTED
        assert rover_outcome.attempts == 1  # heard on its new cell's topic, not a retry
        # Back at the centre, a command there no longer reaches it at all.
        ignored = rover.counters["decision.ignore"]
        await mesh.activate(event(TriggerKind.WEAPON_DRAW, source_id="w"))
        assert rover.counters["decision.ignore"] == ignored


async def test_500_cameras_end_to_end(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """500 cameras of 167 units over a 2 km disc; a 600 m activation. Every camera in range
    starts, none outside does; the gateway publishes a handful of commands, and only the
    cameras in the circle's cells hear one."""
    from mesh.decide.geo import haversine_m
    from mesh.sim.camera_fleet import scatter

    specs = scatter(500, CENTER, radius_m=2000, unit_prefix="u", seed=5)
    policy = Policy.model_validate({"kinds": {"manual": {"radius_m": 600}}})
    async with running_mesh(
        mosquitto.url, topics, tmp_path / "log.db", specs, policy=policy
    ) as mesh:
        record = await mesh.activate(event(TriggerKind.MANUAL), timeout_s=30)
        in_range = {
            s.camera_id
            for s in specs
            if haversine_m(CENTER.lat, CENTER.lon, s.position.lat, s.position.lon) <= 600
        }
        started = {c.camera_id for c in record.cameras if c.status is OutcomeStatus.STARTED}
        assert record.state is ActivationState.CONFIRMED
        assert started == in_range
        assert len(in_range) > 30
        recording = {cid for cid, a in mesh.agents.items() if a.simulated.recordings}
        assert recording == in_range
        publishes = mesh.gateway.coordinator.counters["publish.commands"]
        assert publishes <= 10  # the circle's cells and the unit: not one per camera
        heard = sum(
            sum(v for k, v in a.counters.items() if k.startswith("decision."))
            for a in mesh.agents.values()
        )
        assert len(in_range) <= heard < 500 / 2
