"""The per-activation bookkeeping: outcomes, states and latencies."""

from __future__ import annotations

from mesh.decide.activation import AckEffect, ActivationTracker
from mesh.decide.targeting import TargetDecision
from mesh.protocol.models import (
    AckStatus,
    ActivationState,
    CameraAck,
    OutcomeStatus,
    RecordStart,
    SourceRef,
    SourceType,
    Targets,
    TriggerKind,
    TriggerSummary,
)

MS = 1_000_000
T0 = 1_790_000_000 * 10**9


def tracker(expected: tuple[str, ...] = ("c1", "c2")) -> ActivationTracker:
    trigger = TriggerSummary(
        event_id="e",
        kind=TriggerKind.TASER_ARM,
        unit_id="car-12",
        observed_at_ns=T0,
        source=SourceRef(type=SourceType.MANUAL, id="x", authenticated=False),
    )
    cmd = RecordStart(
        activation_id="a-1",
        issuer="gw",
        trigger=trigger,
        issued_at_ns=T0,
        origin=None,
        radius_m=100,
        pre_event_s=30,
        targets=Targets(),
        expires_at_ns=T0 + 30 * 10**9,
    )
    decisions = [TargetDecision(c, "car-7", True, "in range") for c in expected]
    decisions.append(TargetDecision("far", "car-9", False, "out of range"))
    t = ActivationTracker(cmd, decisions, unit_id="car-12", accepted_mono_ns=0)
    t.sending(T0 + MS, 1 * MS)
    t.on_published(None)
    return t


def ack(cid: str, status: AckStatus = AckStatus.STARTED) -> CameraAck:
    return CameraAck(activation_id="a-1", camera_id=cid, status=status, received_at_ns=T0)


def test_all_expected_acks_confirm_and_measure_latency() -> None:
    t = tracker()
    assert t.on_ack(ack("c1"), T0, 3 * MS) is AckEffect.RECORDED
    assert not t.complete
    assert t.silent() == ["c2"]
    t.on_ack(ack("c2", AckStatus.ALREADY_RECORDING), T0, 5 * MS)
    assert t.complete
    t.finish(T0 + 10 * MS)
    record = t.record()
    assert record.state is ActivationState.CONFIRMED
    assert [c.latency_ms for c in record.cameras] == [2.0, 4.0]  # from the publish at 1 ms
    assert record.all_acked_ms == 5.0  # from the trigger at 0 ms
    assert (record.latency_ms.p50, record.latency_ms.max) == (2.0, 4.0)


def test_silent_cameras_are_missed_and_the_state_is_partial() -> None:
    t = tracker()
    t.on_ack(ack("c1"), T0, 2 * MS)
    t.finish(T0 + 10 * MS)
    record = t.record()
    assert record.state is ActivationState.PARTIAL
    missed = [c for c in record.cameras if c.status is OutcomeStatus.MISSED]
    assert [c.camera_id for c in missed] == ["c2"]
    assert missed[0].detail == "no ack after 1 attempt(s)"
    assert record.all_acked_ms is None


def test_nobody_answering_is_missed_and_nobody_in_range_is_missed_with_a_reason() -> None:
    t = tracker()
    t.finish(T0)
    assert t.record().state is ActivationState.MISSED
    empty = tracker(expected=())
    empty.finish(T0)
    assert empty.record().state is ActivationState.MISSED
    assert empty.record().reason == "no camera in range or targeted"


def test_rejected_is_a_failure_out_of_range_is_not() -> None:
    t = tracker()
    t.on_ack(ack("c1"), T0, 2 * MS)
    t.on_ack(ack("c2", AckStatus.OUT_OF_RANGE), T0, 2 * MS)
    t.finish(T0)
    assert t.record().state is ActivationState.CONFIRMED
    r = tracker()
    r.on_ack(ack("c1"), T0, 2 * MS)
    r.on_ack(ack("c2", AckStatus.REJECTED), T0, 2 * MS)
    r.finish(T0)
    assert r.record().state is ActivationState.PARTIAL


def test_duplicates_and_unexpected_acks() -> None:
    t = tracker()
    t.on_ack(ack("c1"), T0, 2 * MS)
    assert t.on_ack(ack("c1", AckStatus.ALREADY_RECORDING), T0, 9 * MS) is AckEffect.DUPLICATE
    assert t.on_ack(ack("newcomer"), T0, 3 * MS) is AckEffect.UNEXPECTED
    statuses = {c.camera_id: (c.expected, c.status) for c in t.record().cameras}
    assert statuses["c1"] == (True, OutcomeStatus.STARTED)
    assert statuses["newcomer"] == (False, OutcomeStatus.STARTED)
    assert not t.complete  # c2 is still awaited; the newcomer does not count for it


def test_direct_retries_count_attempts_per_camera() -> None:
    t = tracker()
    t.on_published(["c2"])
    t.finish(T0)
    attempts = {c.camera_id: c.attempts for c in t.record().cameras}
    assert attempts == {"c1": 1, "c2": 2}
