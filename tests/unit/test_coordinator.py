"""The gateway's Coordinator without a broker: the real object, with a real activation log
and presence registry, publishing through a fake (tests/coordinator_helpers.py) whose
cameras answer the commands it is given; acks and cancels are injected as the daemon hands
them over. The same paths on a real broker: tests/integration/test_mesh_e2e.py,
test_escalation_cancel_e2e.py, test_retry_pacing_e2e.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from mesh.decide.fanout import command_topics
from mesh.decide.rejection import Rejection
from mesh.gateway.coordinator import (
    _RECORDINGS_PER_CAMERA,
    _UNTRUSTED_RECORDINGS_PER_ACTIVATION,
)
from mesh.journal.store import read_records
from mesh.protocol.models import (
    AckStatus,
    ActivationState,
    EscalationReason,
    OutcomeStatus,
    ReceiptOutcome,
    RecordingEvent,
    RecordingMessage,
    RecordingStopReason,
    TriggerKind,
)
from tests.coordinator_helpers import (
    TOPICS,
    FakePublisher,
    Rig,
    camera,
    inject_ack,
    inject_cancel,
    policy,
    running_coordinator,
)
from tests.harness import event, wait_until

# Short deadlines: a silent camera costs 30, 60 and 120 ms of waiting, not seconds.
QUICK = policy(ack_deadline_ms=30, max_retries=2, command_ttl_s=10)
PATIENT = policy(ack_deadline_ms=2000, max_retries=3, command_ttl_s=30)
CAMERAS = [camera("bwc-1"), camera("bwc-2", north_m=40)]


async def start(rig: Rig) -> str:
    """Submit a trigger; return the activation id once its broadcast went out."""
    receipt = await rig.coordinator.submit(event(TriggerKind.WEAPON_DRAW))
    assert receipt.outcome is ReceiptOutcome.ACCEPTED, receipt
    assert receipt.activation_id is not None
    await rig.publisher.wait_for(lambda: bool(rig.publisher.receipts()))
    return receipt.activation_id


async def finished(rig: Rig, activation_id: str) -> None:
    await rig.publisher.wait_for(lambda: activation_id in rig.publisher.finals)
    await rig.coordinator.tasks.wait(5)


def kinds_logged(log: Path, activation_id: str) -> list[str]:
    return [r.kind for r in read_records(log, activation_id=activation_id)]


async def test_every_camera_acking_the_broadcast_confirms_it_without_a_retry(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log.db"
    async with running_coordinator(log, CAMERAS, QUICK) as rig:
        rig.publisher.answer("bwc-1")
        rig.publisher.answer("bwc-2", AckStatus.ALREADY_RECORDING)
        aid = await start(rig)
        (_, command), *_ = rig.publisher.commands()
        # The broadcast: the circle's cells and the car's unit, once each, then the receipt.
        assert [t for t, _ in rig.publisher.commands()] == command_topics(TOPICS, command)
        assert command.activation_id == aid
        assert command.attempt == 0
        (receipt,) = rig.publisher.receipts()
        assert (receipt.activation_id, receipt.outcome) == (aid, ReceiptOutcome.ACCEPTED)
        await finished(rig, aid)

        record = rig.publisher.final_record(aid)
        assert record.state is ActivationState.CONFIRMED
        assert {c.camera_id: c.status for c in record.cameras} == {
            "bwc-1": OutcomeStatus.STARTED,
            "bwc-2": OutcomeStatus.ALREADY_RECORDING,
        }
        assert rig.coordinator.counters["retries"] == 0
        assert rig.coordinator.counters["activations.started"] == 1
        assert rig.publisher.escalations() == []
        # Logged, then the outbox's copy of the outcome let go.
        assert rig.publisher.settled == [aid]
    # The acks may come in before the command's PUBACKs, as a fast camera's do.
    first, *between, last = kinds_logged(log, aid)
    assert (first, sorted(between), last) == ("activation", ["ack", "ack", "published"], "finished")


async def test_a_silent_camera_is_sent_the_command_directly_then_escalated(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log.db"
    async with running_coordinator(log, CAMERAS, QUICK) as rig:
        rig.publisher.answer("bwc-1")
        aid = await start(rig)
        await finished(rig, aid)

        # Each retry goes to the silent camera's own topic only, numbered.
        direct = rig.publisher.commands(TOPICS.command_camera("bwc-2"))
        assert [c.attempt for _, c in direct] == [1, 2]
        assert rig.publisher.commands(TOPICS.command_camera("bwc-1")) == []
        assert rig.coordinator.counters["retries"] == 2

        record = rig.publisher.final_record(aid)
        assert record.state is ActivationState.PARTIAL
        outcome = {c.camera_id: c for c in record.cameras}
        assert outcome["bwc-1"].status is OutcomeStatus.STARTED
        assert outcome["bwc-2"].status is OutcomeStatus.MISSED
        # Dispatch is told, with the final record, in the same outbox transaction.
        (escalation,) = rig.publisher.escalations()
        assert (escalation.camera_id, escalation.reason) == ("bwc-2", EscalationReason.NO_ACK)
        assert escalation.audience == "dispatch"
        assert escalation.attempts == 3  # the broadcast and two retries
        _, messages = rig.publisher.finals[aid]
        assert [m.topic for m in messages] == [
            TOPICS.activation(rig.coordinator.unit_id, aid),
            TOPICS.escalation("dispatch"),
        ]
        assert rig.coordinator.counters["escalations.no_ack"] == 1
    assert kinds_logged(log, aid).count("published") == 3
    assert kinds_logged(log, aid)[-2:] == ["finished", "escalated"]


async def test_an_answer_to_a_retry_confirms_it_and_stops_the_retries(tmp_path: Path) -> None:
    async with running_coordinator(tmp_path / "log.db", CAMERAS, QUICK) as rig:
        rig.publisher.answer("bwc-1")
        rig.publisher.answer("bwc-2", from_attempt=1)  # missed the broadcast
        aid = await start(rig)
        await finished(rig, aid)
        own_topic = TOPICS.command_camera("bwc-2")

        assert rig.publisher.final_record(aid).state is ActivationState.CONFIRMED
        assert [c.attempt for _, c in rig.publisher.commands(own_topic)] == [1]
        assert rig.coordinator.counters["retries"] == 1
        assert rig.publisher.escalations() == []


async def test_a_command_the_link_refuses_is_sent_again_once_the_link_is_back(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log.db"
    publisher = FakePublisher(down=True)
    publisher.answer("bwc-1")
    publisher.answer("bwc-2")
    async with running_coordinator(log, CAMERAS, QUICK, publisher=publisher) as rig:
        receipt = await rig.coordinator.submit(event(TriggerKind.WEAPON_DRAW))
        aid = receipt.activation_id
        assert aid is not None
        counters = rig.coordinator.counters
        # Tried again every 50 ms while the link is down; the receipt waits for the command.
        await wait_until(lambda: counters["publish.link_down"] >= 3)
        assert publisher.commands() == []
        assert publisher.receipts() == []
        publisher.down = False
        await publisher.wait_for(lambda: bool(publisher.receipts()))

        (_, command), *_ = publisher.commands()
        assert [t for t, _ in publisher.commands()] == command_topics(TOPICS, command)
        await finished(rig, aid)
        assert publisher.final_record(aid).state is ActivationState.CONFIRMED
        assert rig.coordinator.counters["retries"] == 0
    assert kinds_logged(log, aid).count("published") == 1  # only what went out


async def test_a_link_down_until_the_command_expires_escalates_every_camera(
    tmp_path: Path,
) -> None:
    brief = policy(ack_deadline_ms=30, max_retries=2, command_ttl_s=0.3)
    publisher = FakePublisher(down=True)
    async with running_coordinator(tmp_path / "log.db", CAMERAS, brief, publisher=publisher) as rig:
        receipt = await rig.coordinator.submit(event(TriggerKind.WEAPON_DRAW))
        aid = receipt.activation_id
        assert aid is not None
        await finished(rig, aid)

        assert publisher.commands() == []
        record = publisher.final_record(aid)
        assert record.state is ActivationState.MISSED
        assert record.reason == "command could not be published before it expired"
        assert {c.status for c in record.cameras} == {OutcomeStatus.MISSED}
        assert sorted(e.camera_id for e in publisher.escalations()) == ["bwc-1", "bwc-2"]
        # The sender still hears that its trigger was accepted.
        assert [r.activation_id for r in publisher.receipts()] == [aid]


async def test_a_camera_offline_too_long_is_escalated_at_once_not_waited_for(
    tmp_path: Path,
) -> None:
    gone = camera("bwc-3", online=False, offline_s=600)  # past the 120 s offline grace
    async with running_coordinator(tmp_path / "log.db", [*CAMERAS, gone], QUICK) as rig:
        rig.publisher.answer("bwc-1")
        rig.publisher.answer("bwc-2")
        aid = await start(rig)
        await finished(rig, aid)

        # Told as soon as the command was out, not with the final record; never retried.
        (escalation,) = rig.publisher.escalations()
        assert (escalation.camera_id, escalation.reason) == ("bwc-3", EscalationReason.OFFLINE)
        assert rig.publisher.escalations_at_once() == [escalation]
        assert rig.publisher.commands(TOPICS.command_camera("bwc-3")) == []
        assert rig.coordinator.counters["retries"] == 0
        assert rig.coordinator.counters["escalations.offline"] == 1
        # Not waited for: the others' answers end it. The record still names it, missed
        # and not waited for, so the activation is partial (docs/protocol.md).
        record = rig.publisher.final_record(aid)
        assert record.state is ActivationState.PARTIAL
        assert sorted(c.camera_id for c in record.cameras) == ["bwc-1", "bwc-2", "bwc-3"]
        (gone_outcome,) = [c for c in record.cameras if c.camera_id == "bwc-3"]
        assert gone_outcome.expected
        assert (gone_outcome.status, gone_outcome.attempts) == (OutcomeStatus.MISSED, 0)
        assert "not waited for" in gone_outcome.detail


async def test_a_camera_that_refuses_is_escalated_as_rejected(tmp_path: Path) -> None:
    async with running_coordinator(tmp_path / "log.db", CAMERAS, QUICK) as rig:
        rig.publisher.answer("bwc-1")
        rig.publisher.answer("bwc-2", AckStatus.REJECTED, reason="storage full")
        aid = await start(rig)
        await finished(rig, aid)

        assert rig.coordinator.counters["retries"] == 0
        (escalation,) = rig.publisher.escalations()
        assert (escalation.camera_id, escalation.reason) == ("bwc-2", EscalationReason.REJECTED)
        assert "storage full" in escalation.detail


async def test_a_cancel_in_the_window_stops_the_retries_and_tells_the_cameras(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log.db"
    async with running_coordinator(log, CAMERAS, PATIENT) as rig:
        rig.publisher.answer("bwc-1")  # bwc-2 silent: the activation is still pending
        aid = await start(rig)
        (_, command), *_ = rig.publisher.commands()

        receipt = inject_cancel(rig.coordinator, aid, by="officer-7", reason="holster bumped")
        assert (receipt.outcome, receipt.activation_id) == (ReceiptOutcome.ACCEPTED, aid)
        await finished(rig, aid)

        # Sent where the command went, and no camera is escalated for a false trigger.
        cancels = rig.publisher.cancels()
        assert [t for t, _ in cancels] == command_topics(TOPICS, command)
        assert {c.activation_id for _, c in cancels} == {aid}
        assert rig.publisher.final_record(aid).state is ActivationState.CANCELLED
        assert rig.publisher.escalations() == []
        assert rig.coordinator.counters["retries"] == 0
        assert rig.coordinator.counters["cancels.accepted"] == 1
    cancel = next(r for r in read_records(log, activation_id=aid) if r.kind == "cancel")
    assert json.loads(cancel.body)["accepted"] is True


async def test_a_cancel_after_the_end_changes_the_state_and_sends_the_record_again(
    tmp_path: Path,
) -> None:
    async with running_coordinator(tmp_path / "log.db", CAMERAS, QUICK) as rig:
        rig.publisher.answer("bwc-1")
        rig.publisher.answer("bwc-2")
        aid = await start(rig)
        await finished(rig, aid)
        assert rig.publisher.final_record(aid).state is ActivationState.CONFIRMED

        assert inject_cancel(rig.coordinator, aid).outcome is ReceiptOutcome.ACCEPTED
        (again,) = rig.publisher.records_delivered()
        assert (again.activation_id, again.state) == (aid, ActivationState.CANCELLED)
        # The cameras' outcomes stand.
        assert {c.status for c in again.cameras} == {OutcomeStatus.STARTED}


async def test_a_cancel_is_refused_saying_why(tmp_path: Path) -> None:
    never = policy(ack_deadline_ms=2000, max_retries=3, command_ttl_s=30, cancel_window_s=0)
    async with running_coordinator(tmp_path / "a.db", CAMERAS, PATIENT) as rig:
        unknown = inject_cancel(rig.coordinator, "no-such-activation")
        assert unknown.outcome is ReceiptOutcome.REJECTED
        assert "not one of this gateway's recent ones" in unknown.reason

        aid = await start(rig)
        assert inject_cancel(rig.coordinator, aid, by="officer-7").outcome is (
            ReceiptOutcome.ACCEPTED
        )
        twice = inject_cancel(rig.coordinator, aid, by="officer-8")
        assert twice.outcome is ReceiptOutcome.REJECTED
        assert twice.reason == "already cancelled by officer-7"
        assert rig.coordinator.counters["cancels.refused"] == 2

    async with running_coordinator(tmp_path / "b.db", CAMERAS, never) as rig:
        rig.publisher.answer("bwc-1")
        rig.publisher.answer("bwc-2")
        aid = await start(rig)
        refused = inject_cancel(rig.coordinator, aid)
        assert refused.outcome is ReceiptOutcome.REJECTED
        assert "allows no cancelling" in refused.reason
        await finished(rig, aid)
        assert rig.publisher.final_record(aid).state is ActivationState.CONFIRMED


async def test_an_ack_after_the_end_is_logged_and_changes_nothing(tmp_path: Path) -> None:
    log = tmp_path / "log.db"
    async with running_coordinator(log, CAMERAS, QUICK) as rig:
        rig.publisher.answer("bwc-1")
        aid = await start(rig)
        await finished(rig, aid)
        before = rig.publisher.final_record(aid)

        inject_ack(rig.coordinator, aid, "bwc-2", attempt=2)
        inject_ack(rig.coordinator, "someone-elses", "bwc-2")
        await rig.log.flush()

        assert rig.coordinator.counters["acks.late"] == 1
        assert rig.coordinator.counters["acks.unknown_activation"] == 1
        assert rig.publisher.final_record(aid) == before
        assert rig.publisher.records_delivered() == []
    late = [r for r in read_records(log, activation_id=aid) if r.kind == "ack"][-1]
    assert json.loads(late.body)["effect"] == "late"


def recording_message(
    camera_id: str, recording_id: str, activation_id: str, event: str
) -> RecordingMessage:
    now = 1_796_299_200_000_000_000
    stop = event == "stop"
    return RecordingMessage(
        camera_id=camera_id,
        recording_id=recording_id,
        activation_ids=(activation_id,),
        event=RecordingEvent(event),
        started_at_ns=now,
        first_frame_ns=now,
        pre_event_kept_s=0.0,
        stopped_at_ns=now + 1 if stop else None,
        reason=RecordingStopReason.OFFICER if stop else None,
        note="x" if stop else "",
    )


async def test_recording_rows_are_capped_per_camera_and_per_activation_untrusted(
    tmp_path: Path,
) -> None:
    """Trusted: 16 rows per camera and activation, the stop of a logged start beyond it;
    another camera has its own 16. Untrusted (unsigned): 16 per activation, all cameras
    together. Past the caps, and for an activation not ours, counted only."""
    log = tmp_path / "log.db"
    async with running_coordinator(log, CAMERAS, QUICK) as rig:
        rig.publisher.answer("bwc-1")
        aid = await start(rig)
        await finished(rig, aid)
        coordinator = rig.coordinator

        def send(camera_id: str, rid: str, what: str, *, trusted: bool = True) -> bool:
            message = recording_message(camera_id, rid, aid, what)
            untrusted = None if trusted else Rejection("unsigned", "no signature")
            return coordinator.on_recording(message, untrusted=untrusted)

        assert [send("bwc-1", f"r-{i}", "start") for i in range(20)] == [True] * 16 + [False] * 4
        assert send("bwc-1", "r-0", "stop")  # closes a logged start: logged past the cap
        assert not send("bwc-1", "r-0", "stop")  # once
        assert not send("bwc-1", "r-19", "stop")  # its start was not logged
        assert send("bwc-2", "r-x", "start")  # another camera's own count
        untrusted = [send(f"bwc-{1 + i % 2}", f"u-{i}", "start", trusted=False) for i in range(20)]
        assert untrusted == [True] * 16 + [False] * 4
        other = recording_message("bwc-1", "r-other", "a-not-ours", "start")
        assert not coordinator.on_recording(other)
        counters = coordinator.counters
        assert counters["recordings.over_cap"] == 4 + 1 + 4
        assert counters["recordings.repeated"] == 1
        assert counters["recordings.unknown_activation"] == 1
        await rig.log.flush()
    rows = [r for r in read_records(log, kinds=("recording",))]
    assert {r.activation_id for r in rows} == {aid}
    assert len(rows) == _RECORDINGS_PER_CAMERA + 1 + 1 + _UNTRUSTED_RECORDINGS_PER_ACTIVATION
