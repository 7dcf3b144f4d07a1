"""The activation record accounts for every camera the activation wanted, end to end over
a real mosquitto (issue 17 item 2).

docs/protocol.md: `cameras` lists every expected camera; `confirmed` means every expected
camera started. docs/policy.md calls a camera in range but offline longer than
`offline_grace_s` "an expected camera ... escalated at once": it is in the record,
`missed`, with no attempt, and escalated once (`offline`), not again at the finish.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.decide.activation import AckEffect, ActivationTracker
from mesh.decide.policy import Policy
from mesh.decide.targeting import TargetDecision
from mesh.journal.records import (
    ActivationEntry,
    EscalatedEntry,
    FinishedEntry,
    RecordKind,
    TargetEntry,
)
from mesh.journal.store import read_records
from mesh.protocol.codec import decode
from mesh.protocol.models import (
    AckStatus,
    ActivationRecord,
    ActivationState,
    CameraAck,
    CameraOutcome,
    Escalation,
    EscalationReason,
    OutcomeStatus,
    RecordStart,
    Targets,
    TriggerKind,
    TriggerSummary,
)
from tests.harness import (
    CENTER,
    event,
    ghost,
    listen,
    make_gateway,
    running_mesh,
    wait_until,
)


def finished_records(log: Path) -> list[ActivationRecord]:
    return [
        FinishedEntry.model_validate_json(r.body).record
        for r in read_records(log, kinds=(RecordKind.FINISHED.value,))
    ]


def camera(record: ActivationRecord, camera_id: str) -> CameraOutcome:
    cameras = {c.camera_id: c for c in record.cameras}
    assert camera_id in cameras, f"{camera_id} is not in the record's cameras: {sorted(cameras)}"
    return cameras[camera_id]


def escalated(log: Path) -> list[tuple[str, EscalationReason]]:
    """(camera, reason) of every escalation logged, one per camera (not per audience)."""
    seen: list[tuple[str, EscalationReason]] = []
    for r in read_records(log, kinds=(RecordKind.ESCALATED.value,)):
        e = EscalatedEntry.model_validate_json(r.body).escalation
        if (e.camera_id, e.reason) not in seen:
            seen.append((e.camera_id, e.reason))
    return seen


async def test_a_camera_escalated_at_once_as_offline_is_in_the_final_record(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db") as mesh:
        dispatch = await listen(mesh, topics.escalation("dispatch"))
        await ghost(mesh, "bwc-gone", 60, online=False, offline_s=3600)
        record = await mesh.activate(event(TriggerKind.WEAPON_DRAW))
        cameras = {c.camera_id: c for c in record.cameras}
        assert set(cameras) == {"dash-12", "bwc-12a", "bwc-7a", "bwc-gone"}
        gone = cameras["bwc-gone"]
        assert gone.expected
        assert (gone.status, gone.attempts) == (OutcomeStatus.MISSED, 0)
        assert "offline for 3600 s" in gone.targeting
        assert "not waited for" in gone.detail
        # Three of the four cameras it wanted started: partial, not confirmed.
        assert record.state is ActivationState.PARTIAL
        assert record.all_acked_ms is None  # an expected camera did not confirm
        await wait_until(lambda: len(dispatch) >= 1)
        await asyncio.sleep(0.3)  # an escalation at the finish would be here by now
        escalations = [decode(Escalation, m.payload) for m in dispatch]
        assert [(e.camera_id, e.reason) for e in escalations] == [
            ("bwc-gone", EscalationReason.OFFLINE)
        ]
    # The log's final word is the same record.
    [logged] = finished_records(tmp_path / "log.db")
    assert logged.cameras == record.cameras


async def test_an_activation_whose_only_camera_is_offline_is_missed_and_says_why(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db", specs=()) as mesh:
        await ghost(mesh, "bwc-gone", 60, online=False, offline_s=3600)
        record = await mesh.activate(event(TriggerKind.WEAPON_DRAW))
        assert [(c.camera_id, c.status) for c in record.cameras] == [
            ("bwc-gone", OutcomeStatus.MISSED)
        ]
        assert record.state is ActivationState.MISSED
        assert record.reason != "no camera in range or targeted"
        assert "offline" in record.reason


async def test_an_offline_camera_is_escalated_and_recorded_when_the_command_never_goes_out(
    own_mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """The broker is down until the command expires: the activation is missed, and the
    camera nobody waited for is escalated at the finish (with every expected camera),
    not forgotten because the command it waited on never went out."""
    log = tmp_path / "log.db"
    brief = Policy.model_validate({"defaults": {"command_ttl_s": 1.0}})
    async with running_mesh(own_mosquitto.url, topics, log, policy=brief) as mesh:
        await ghost(mesh, "bwc-gone", 60, online=False, offline_s=3600)
        own_mosquitto.stop()
        await wait_until(lambda: not mesh.gateway.link.is_up)
        receipt = await mesh.gateway.submit(event(TriggerKind.WEAPON_DRAW))
        assert receipt.activation_id is not None
        await wait_until(lambda: finished_records(log) != [], 10)
    [record] = finished_records(log)
    assert record.state is ActivationState.MISSED
    gone = camera(record, "bwc-gone")
    assert (gone.expected, gone.status) == (True, OutcomeStatus.MISSED)
    assert sorted(escalated(log)) == [
        ("bwc-12a", EscalationReason.NO_ACK),
        ("bwc-7a", EscalationReason.NO_ACK),
        ("bwc-gone", EscalationReason.OFFLINE),
        ("dash-12", EscalationReason.NO_ACK),
    ]


async def test_a_restarted_gateway_still_records_and_escalates_the_offline_camera(
    own_mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """Logged, then the gateway stops before the command went out; the next run sends it,
    escalates the offline camera then (from the log: presence is not what it was) and
    names it in the record."""
    log = tmp_path / "log.db"
    async with running_mesh(own_mosquitto.url, topics, log) as mesh:
        await ghost(mesh, "bwc-gone", 60, online=False, offline_s=3600)
        client_id = mesh.gateway.link.options.client_id
        own_mosquitto.stop()
        await wait_until(lambda: not mesh.gateway.link.is_up)
        receipt = await mesh.gateway.submit(event(TriggerKind.WEAPON_DRAW))
        aid = receipt.activation_id
        assert aid is not None
        first = mesh.tasks[len(mesh.agents)]  # the gateway's task (tests/harness.py)
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        assert finished_records(log) == []

        own_mosquitto.start()
        second = make_gateway(own_mosquitto.url, topics, log, client_id=client_id)
        mesh.tasks.append(asyncio.create_task(second.run()))
        await wait_until(lambda: finished_records(log) != [], 20)
    [record] = finished_records(log)
    assert record.activation_id == aid
    gone = camera(record, "bwc-gone")
    assert (gone.expected, gone.status, gone.attempts) == (True, OutcomeStatus.MISSED, 0)
    assert ("bwc-gone", EscalationReason.OFFLINE) in escalated(log)


OFFLINE = EscalationReason.OFFLINE


def a_command() -> RecordStart:
    now = time.time_ns()
    return RecordStart(
        activation_id="a-1",
        issuer="gw",
        trigger=TriggerSummary.of(event(TriggerKind.WEAPON_DRAW)),
        issued_at_ns=now,
        origin=CENTER,
        radius_m=150,
        pre_event_s=60,
        targets=Targets(),
        expires_at_ns=now + 30 * 10**9,
    )


def test_an_offline_camera_that_comes_back_in_time_is_recorded_as_it_answered() -> None:
    """Not waited for, but not ignored: it heard the broadcast in its cell and started."""
    command = a_command()
    gone = TargetDecision("bwc-gone", "car-7", False, "offline", 60.0, False, OFFLINE)
    tracker = ActivationTracker(command, [gone], unit_id="car-12", accepted_mono_ns=0)
    assert tracker.complete  # nothing to wait for
    tracker.sending(command.issued_at_ns, 0)
    tracker.on_published(None)
    ack = CameraAck(
        activation_id="a-1",
        camera_id="bwc-gone",
        status=AckStatus.STARTED,
        received_at_ns=command.issued_at_ns,
    )
    assert tracker.on_ack(ack, command.issued_at_ns, 5_000_000) is AckEffect.RECORDED
    assert tracker.on_ack(ack, command.issued_at_ns, 6_000_000) is AckEffect.DUPLICATE
    tracker.finish(command.issued_at_ns)
    record = tracker.record()
    assert record.state is ActivationState.CONFIRMED
    [outcome] = record.cameras
    assert (outcome.expected, outcome.status, outcome.latency_ms) == (
        True,
        OutcomeStatus.STARTED,
        5.0,
    )


def test_the_log_keeps_which_cameras_were_not_waited_for() -> None:
    """What a restarted gateway rebuilds the activation from says it, as decided."""
    command = a_command()
    decisions = [
        TargetDecision("bwc-gone", "car-7", False, "offline", 60.0, False, OFFLINE),
        TargetDecision("bwc-1", "car-7", True, "in range", 10.0),
    ]
    trigger = event(TriggerKind.WEAPON_DRAW)
    body = ActivationEntry.json_of(trigger, 1, command, decisions)
    entry = ActivationEntry.model_validate_json(body)
    assert [t.decision().escalate for t in entry.targets] == [OFFLINE, None]
    model = ActivationEntry(
        trigger=trigger,
        received_at_ns=1,
        command=command,
        targets=tuple(TargetEntry.of(d) for d in decisions),
    )
    assert json.loads(body) == json.loads(model.model_dump_json())
    assert '"escalate"' not in model.targets[1].model_dump_json()  # written only if set
