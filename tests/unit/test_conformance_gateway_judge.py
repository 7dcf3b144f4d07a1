"""The pure parts of `conformance gateway`: its simulated cameras' answers (fleet.py) and
its verdicts on what a gateway published (judge.py), on observations made up here."""

from __future__ import annotations

from bridge.topics import TopicKind, Topics
from mesh.clock import NS
from mesh.conformance.gateway import judge
from mesh.conformance.gateway.fleet import MISMATCHED_ID, Fleet
from mesh.conformance.gateway.observe import Observed, SeenCommand, Sent
from mesh.conformance.gateway.scene import Behaviour, GatewayScene
from mesh.conformance.verdict import Outcome
from mesh.decide.cells import covering_cells
from mesh.protocol.models import (
    AckStatus,
    ActivationRecord,
    ActivationState,
    CameraAck,
    CameraOutcome,
    CancelAck,
    Escalation,
    EscalationReason,
    GatewayStatus,
    GeoPoint,
    OutcomeStatus,
    ReceiptOutcome,
    RecordCancel,
    RecordStart,
    Targets,
    TriggerEvent,
    TriggerKind,
    TriggerReceipt,
    TriggerSummary,
)

TOPICS = Topics("t/mesh/v2")
SCENE = GatewayScene(
    TOPICS,
    "gw-1",
    "car-1",
    GeoPoint(lat=39.952583, lon=-75.165222),
    TriggerKind.WEAPON_DRAW,
    "tag1",
)
NOW = 1_796_000_000_000_000_000
AID = "a-0123456789abcdef"


def trigger(name: str = "a") -> TriggerEvent:
    return SCENE.trigger(name, NOW, SCENE.origin)


def command(event: TriggerEvent | None = None, **changes: object) -> RecordStart:
    event = event or trigger()
    assert event.position is not None
    base = RecordStart(
        activation_id=AID,
        issuer="gw-1",
        trigger=TriggerSummary.of(event),
        issued_at_ns=NOW,
        origin=GeoPoint(lat=event.position.lat, lon=event.position.lon),
        radius_m=150.0,
        pre_event_s=60,
        targets=Targets(units=("car-1",), cameras=("conf-stale",)),
        expires_at_ns=NOW + 30 * NS,
        cancel_until_ns=NOW + 10 * NS,
    )
    return base.model_copy(update=changes)


def seen(kind: TopicKind, target: str | None, model: RecordStart, at: float = 1.0) -> SeenCommand:
    return SeenCommand(kind, target, model, NOW + int(at * NS), at)


def broadcast(model: RecordStart) -> list[SeenCommand]:
    assert model.origin is not None
    cells = covering_cells(model.origin.lat, model.origin.lon, model.radius_m)
    return [
        *(seen(TopicKind.COMMAND_CELL, c, model) for c in cells),
        seen(TopicKind.COMMAND_UNIT, "car-1", model),
        seen(TopicKind.COMMAND_CAMERA, "conf-stale", model),
    ]


def observed(commands: list[SeenCommand] | None = None) -> Observed:
    obs = Observed()
    obs.sent["a"] = Sent(trigger(), 0.5)
    receipt = TriggerReceipt(
        event_id=trigger().event_id,
        unit_id="car-1",
        outcome=ReceiptOutcome.ACCEPTED,
        activation_id=AID,
        at_ns=NOW,
    )
    obs.receipts.append((0.9, receipt))
    obs.commands = commands if commands is not None else broadcast(command())
    return obs


def outcome(
    camera_id: str, status: OutcomeStatus, attempts: int = 1, expected: bool = True
) -> CameraOutcome:
    return CameraOutcome(
        camera_id=camera_id,
        unit_id="u",
        expected=expected,
        targeting="t",
        status=status,
        attempts=attempts,
    )


def record(state: ActivationState, *cameras: CameraOutcome) -> ActivationRecord:
    model = command()
    return ActivationRecord(
        activation_id=AID,
        issuer="gw-1",
        unit_id="car-1",
        trigger=model.trigger,
        state=state,
        decided_at_ns=NOW,
        finished_at_ns=None if state is ActivationState.PENDING else NOW + NS,
        expires_at_ns=model.expires_at_ns,
        origin=model.origin,
        radius_m=150.0,
        pre_event_s=60,
        cameras=cameras,
    )


def escalation(camera_id: str, reason: EscalationReason, audience: str = "dispatch") -> Escalation:
    return Escalation(
        activation_id=AID,
        issuer="gw-1",
        unit_id="car-1",
        kind=TriggerKind.WEAPON_DRAW,
        camera_id=camera_id,
        camera_unit_id="conf-neighbours",
        reason=reason,
        audience=audience,
        at_ns=NOW,
    )


# --- the fleet ----------------------------------------------------------------------------
def parse(topic: str):  # type: ignore[no-untyped-def]
    parsed = TOPICS.parse(topic)
    assert parsed is not None
    return parsed


def test_the_prompt_camera_answers_its_cell_twice_and_its_own_topic_as_a_duplicate() -> None:
    fleet = Fleet(SCENE, signed=False, eager_event="other")
    ok = SCENE.camera(Behaviour.PROMPT)
    cell = SCENE.cell(ok)
    assert cell is not None
    replies = fleet.on_command(parse(TOPICS.command_cell(cell)), command(), NOW)
    mine = [r for r in replies if r.topic_camera == ok.camera_id]
    assert len(mine) == 2
    assert all(
        isinstance(r.answer, CameraAck) and r.answer.status is AckStatus.STARTED for r in mine
    )
    again = fleet.on_command(parse(TOPICS.command_camera(ok.camera_id)), command(attempt=1), NOW)
    assert [r.answer.status for r in again] == [AckStatus.ALREADY_RECORDING]  # type: ignore[union-attr]
    assert fleet.on_command(parse(TOPICS.command_cell(cell)), command(), NOW) == []


def test_the_late_and_moved_cameras_hear_only_their_own_topic() -> None:
    fleet = Fleet(SCENE, signed=False, eager_event="other")
    late = SCENE.camera(Behaviour.RETRY_ONLY)
    moved = SCENE.camera(Behaviour.MOVED)
    for camera in (late, moved):
        cell = SCENE.cell(camera)
        assert cell is not None
        shared = fleet.on_command(parse(TOPICS.command_cell(cell)), command(), NOW)
        assert all(r.topic_camera != camera.camera_id for r in shared)
    late_reply = fleet.on_command(
        parse(TOPICS.command_camera(late.camera_id)), command(attempt=1), NOW
    )
    moved_reply = fleet.on_command(
        parse(TOPICS.command_camera(moved.camera_id)), command(attempt=1), NOW
    )
    assert late_reply[0].answer.status is AckStatus.STARTED  # type: ignore[union-attr]
    assert moved_reply[0].answer.status is AckStatus.OUT_OF_RANGE  # type: ignore[union-attr]


def test_forged_acks_name_another_camera_or_are_sealed_wrongly() -> None:
    forged = SCENE.camera(Behaviour.FORGED)
    cell = SCENE.cell(forged)
    assert cell is not None
    plain = Fleet(SCENE, signed=False, eager_event="other")
    replies = [
        r
        for r in plain.on_command(parse(TOPICS.command_cell(cell)), command(), NOW)
        if r.topic_camera == forged.camera_id
    ]
    assert [r.answer.camera_id for r in replies] == [MISMATCHED_ID]
    signed = Fleet(SCENE, signed=True, eager_event="other")
    replies = [
        r
        for r in signed.on_command(parse(TOPICS.command_cell(cell)), command(), NOW)
        if r.topic_camera == forged.camera_id
    ]
    assert [r.seal for r in replies] == ["none", "attacker", "conf-ok"]
    assert all(r.seal != "own" for r in replies)


def test_the_eager_camera_answers_trigger_a_only_and_cancels_reach_claims() -> None:
    fleet = Fleet(SCENE, signed=False, eager_event=trigger().event_id)
    unit = parse(TOPICS.command_unit("car-1"))
    replies = fleet.on_command(unit, command(), NOW)
    ids = {r.topic_camera for r in replies}
    assert ids == {"conf-eager", "conf-unit"}
    other = command(trigger("b"), activation_id="a-ffffffffffffffff")
    assert {r.topic_camera for r in fleet.on_command(unit, other, NOW)} == {"conf-unit"}
    cancel = RecordCancel(activation_id="a-ffffffffffffffff", issuer="gw-1", at_ns=NOW)
    answers = fleet.on_command(unit, cancel, NOW)
    assert len(answers) == 1
    assert isinstance(answers[0].answer, CancelAck)
    assert fleet.on_command(unit, cancel, NOW) == []  # answered once


# --- judges -------------------------------------------------------------------------------
def test_every_covering_cell_is_a_must_and_no_other_a_should() -> None:
    good = observed()
    assert judge.command_to_covering_cells(good, SCENE).outcome is Outcome.PASS
    assert judge.command_cells_few(good, SCENE).outcome is Outcome.PASS
    one_short = observed(broadcast(command())[1:])
    assert judge.command_to_covering_cells(one_short, SCENE).outcome is Outcome.FAIL
    everyone = observed([*broadcast(command())[-2:], seen(TopicKind.COMMAND_ALL, None, command())])
    assert judge.command_to_covering_cells(everyone, SCENE).outcome is Outcome.PASS
    assert judge.command_cells_few(everyone, SCENE).outcome is Outcome.FAIL


def test_command_fields_compare_the_command_with_the_trigger() -> None:
    assert judge.command_fields(observed(), SCENE).outcome is Outcome.PASS
    moved = command(origin=GeoPoint(lat=40.0, lon=-75.0))
    assert judge.command_fields(observed(broadcast(moved)), SCENE).outcome is Outcome.FAIL
    wrong = command(issuer="gw-2")
    assert judge.command_fields(observed(broadcast(wrong)), SCENE).outcome is Outcome.FAIL
    long_window = command(cancel_until_ns=NOW + 400 * NS)
    assert judge.command_fields(observed(broadcast(long_window)), SCENE).outcome is Outcome.FAIL


def test_without_a_command_the_checks_fail_saying_so() -> None:
    found = judge.command_fields(observed([]), SCENE)
    assert found.outcome is Outcome.FAIL
    assert "no record_start" in found.detail


def test_a_small_radius_leaves_the_scene_checks_not_run() -> None:
    small = observed(broadcast(command(radius_m=20.0)))
    assert judge.stale_fix_named(small, SCENE).outcome is Outcome.NOT_RUN


def test_retries_keep_the_issue_time_and_count_up() -> None:
    base = broadcast(command())
    retries = [
        seen(TopicKind.COMMAND_CAMERA, camera, command(attempt=n), at=1.0 + n)
        for camera in ("conf-late", "conf-silent", "conf-moved", "conf-forged")
        for n in (1, 2)
    ]
    assert judge.silent_cameras_retried(observed(base + retries), SCENE).outcome is Outcome.PASS
    reissued = [
        *retries[:-1],
        seen(
            TopicKind.COMMAND_CAMERA, "conf-forged", command(attempt=2, issued_at_ns=NOW + 1), 3.0
        ),
    ]
    assert judge.silent_cameras_retried(observed(base + reissued), SCENE).outcome is Outcome.FAIL
    assert judge.silent_cameras_retried(observed(base), SCENE).outcome is Outcome.FAIL
    to_far = [seen(TopicKind.COMMAND_CAMERA, "conf-far", command(attempt=1), 2.0)]
    assert judge.retries_only_to_silent(observed(base + to_far), SCENE).outcome is Outcome.FAIL


def test_the_final_state_follows_the_outcomes() -> None:
    obs = observed()
    obs.records = [
        (
            2.0,
            record(
                ActivationState.PARTIAL,
                outcome("x", OutcomeStatus.STARTED),
                outcome("y", OutcomeStatus.MISSED),
            ),
        )
    ]
    assert judge.final_state(obs, SCENE).outcome is Outcome.PASS
    obs.records = [
        (
            2.0,
            record(
                ActivationState.CONFIRMED,
                outcome("x", OutcomeStatus.STARTED),
                outcome("y", OutcomeStatus.MISSED),
            ),
        )
    ]
    assert judge.final_state(obs, SCENE).outcome is Outcome.FAIL
    obs.records = [(2.0, record(ActivationState.MISSED, outcome("y", OutcomeStatus.REJECTED)))]
    assert judge.final_state(obs, SCENE).outcome is Outcome.PASS


def test_pending_must_come_before_the_final_record() -> None:
    obs = observed()
    obs.records = [(1.5, record(ActivationState.PENDING)), (2.0, record(ActivationState.PARTIAL))]
    assert judge.record_pending_then_final(obs, SCENE).outcome is Outcome.PASS
    obs.records = [(2.0, record(ActivationState.PARTIAL))]
    assert judge.record_pending_then_final(obs, SCENE).outcome is Outcome.FAIL
    obs.records = [(1.5, record(ActivationState.PARTIAL)), (2.0, record(ActivationState.PENDING))]
    assert judge.record_pending_then_final(obs, SCENE).outcome is Outcome.FAIL


def test_an_offline_camera_is_escalated_at_once_not_after_the_retries() -> None:
    retry = seen(TopicKind.COMMAND_CAMERA, "conf-silent", command(attempt=1), at=2.0)
    obs = observed([*broadcast(command()), retry])
    obs.records = [
        (
            5.0,
            record(
                ActivationState.PARTIAL, outcome("conf-offline", OutcomeStatus.MISSED, attempts=0)
            ),
        )
    ]
    obs.escalations = [(1.1, "dispatch", escalation("conf-offline", EscalationReason.OFFLINE))]
    assert judge.offline_camera_escalated(obs, SCENE).outcome is Outcome.PASS
    obs.escalations = [(4.0, "dispatch", escalation("conf-offline", EscalationReason.OFFLINE))]
    assert judge.offline_camera_escalated(obs, SCENE).outcome is Outcome.FAIL
    obs.escalations = []
    assert judge.offline_camera_escalated(obs, SCENE).outcome is Outcome.FAIL


def test_an_escalation_on_the_wrong_audience_topic_fails() -> None:
    obs = observed()
    obs.escalations = [(1.1, "dispatch", escalation("conf-silent", EscalationReason.NO_ACK))]
    assert judge.escalation_fields(obs, SCENE).outcome is Outcome.PASS
    obs.escalations = [(1.1, "unit-car-1", escalation("conf-silent", EscalationReason.NO_ACK))]
    assert judge.escalation_fields(obs, SCENE).outcome is Outcome.FAIL


def test_a_repeated_trigger_must_be_merged_into_the_same_activation() -> None:
    obs = observed()
    obs.sent["a-again"] = Sent(trigger(), 1.0)
    merged = TriggerReceipt(
        event_id=trigger().event_id,
        unit_id="car-1",
        outcome=ReceiptOutcome.SUPPRESSED,
        activation_id=AID,
        at_ns=NOW,
        activation_pending=True,
    )
    obs.receipts.append((1.2, merged))
    assert judge.repeat_trigger_merged(obs, SCENE).outcome is Outcome.PASS
    obs.receipts[-1] = (1.2, merged.model_copy(update={"activation_id": "a-ffffffffffffffff"}))
    assert judge.repeat_trigger_merged(obs, SCENE).outcome is Outcome.FAIL


def test_status_must_be_retained_and_an_unsigned_trigger_refused() -> None:
    obs = observed()
    obs.status = GatewayStatus(
        gateway_id="gw-1", unit_id="car-1", online=True, started_at_ns=NOW, last_seen_ns=NOW
    )
    obs.status_retained = True
    assert judge.gateway_status_retained(obs, SCENE).outcome is Outcome.PASS
    obs.status_retained = False
    assert judge.gateway_status_retained(obs, SCENE).outcome is Outcome.FAIL
    unsigned = SCENE.trigger("unsigned", NOW, SCENE.origin)
    obs.sent["unsigned"] = Sent(unsigned, 0.6)
    receipt = TriggerReceipt(
        event_id=unsigned.event_id,
        unit_id="car-1",
        outcome=ReceiptOutcome.REJECTED,
        reason="unsigned: unsigned trigger",
        at_ns=NOW,
    )
    obs.receipts.append((0.7, receipt))
    assert judge.unsigned_trigger_refused(obs, SCENE).outcome is Outcome.PASS
    obs.receipts[-1] = (0.7, receipt.model_copy(update={"outcome": ReceiptOutcome.ACCEPTED}))
    assert judge.unsigned_trigger_refused(obs, SCENE).outcome is Outcome.FAIL
