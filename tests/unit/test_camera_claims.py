"""A camera's claims, pure: what it does with the same activation id from several issuers
(issue 15 item 2, review finding F2), and which cancels it obeys (F6)."""

from __future__ import annotations

from mesh.camera.recorder import SimulatedRecorder
from mesh.clock import NS
from mesh.decide.camera import Action, Binding, CameraView, CancelProblem, cancel_refusal, decide
from mesh.protocol.models import (
    AckStatus,
    CameraRole,
    RecordCancel,
    RecordStart,
    SourceRef,
    SourceType,
    Targets,
    TriggerKind,
    TriggerSummary,
)

T0 = 1_790_000_000 * NS
ME = CameraView("bwc-12a", "car-12", None, CameraRole.BODY)


def command(issuer: str = "gw-car-12") -> RecordStart:
    return RecordStart(
        activation_id="a-1",
        issuer=issuer,
        trigger=TriggerSummary(
            event_id="ble-holster-1-42",
            kind=TriggerKind.WEAPON_DRAW,
            unit_id="car-12",
            observed_at_ns=T0,
            source=SourceRef(type=SourceType.BLE, id="ble:holster-1", authenticated=True),
        ),
        issued_at_ns=T0,
        origin=None,
        radius_m=0,
        pre_event_s=30,
        targets=Targets(units=("car-12",)),
        expires_at_ns=T0 + 10 * NS,
        cancel_until_ns=T0 + 60 * NS,
    )


def test_a_handled_command_is_never_acked_recording_when_the_camera_is_not() -> None:
    """The issuer's own retry after its recording ended (or was stopped): started again,
    not ``already_recording``."""
    retry = decide(command(), ME, direct=True, already_handled=True, recording=False, now_ns=T0)
    assert (retry.action, retry.status) == (Action.START, AckStatus.STARTED)
    running = decide(command(), ME, direct=True, already_handled=True, recording=True, now_ns=T0)
    assert (running.action, running.status) == (Action.ACK, AckStatus.ALREADY_RECORDING)


def test_a_retry_after_its_own_issuers_cancel_does_not_restart() -> None:
    decision = decide(
        command(),
        ME,
        direct=True,
        already_handled=True,
        claim_cancelled=True,
        recording=False,
        now_ns=T0,
    )
    assert (decision.action, decision.status) == (Action.ACK, AckStatus.REJECTED)
    assert "cancelled by its issuer" in decision.reason


def test_a_cancel_signed_before_its_command_is_refused() -> None:
    binding = Binding("gw-car-12", T0 + 60 * NS, issued_at_ns=T0)
    early = RecordCancel(activation_id="a-1", issuer="gw-car-12", at_ns=T0 - 1)
    problem = cancel_refusal(early, binding, now_ns=T0 + NS)
    assert problem is not None
    assert problem.code == CancelProblem.BEFORE_COMMAND
    at_issue = RecordCancel(activation_id="a-1", issuer="gw-car-12", at_ns=T0)
    assert cancel_refusal(at_issue, binding, now_ns=T0 + NS) is None


def test_a_cancel_from_an_issuer_without_a_claim_is_refused() -> None:
    binding = Binding("gw-car-12", T0 + 60 * NS, issued_at_ns=T0)
    other = RecordCancel(activation_id="a-1", issuer="gw-car-7", at_ns=T0 + NS)
    problem = cancel_refusal(other, binding, now_ns=T0 + NS)
    assert problem is not None
    assert problem.code == CancelProblem.NOT_ISSUER


def test_the_recording_stops_only_when_no_claim_is_left() -> None:
    """The same activation id from two issuers is two claims: one issuer's cancel
    removes its own alone."""
    recorder = SimulatedRecorder(powered_on_ns=T0 - 60 * NS)
    recorder.start_now("a-1", 30, T0, issuer="gw-car-7")
    recorder.attach("a-1", issuer="gw-car-12")
    recorder.attach("a-1", issuer="gw-car-12")  # a retry: the same claim, once
    assert not recorder.cancel_now("a-1", T0 + NS, issuer="gw-car-7")
    assert recorder.is_recording(T0 + NS)
    assert not recorder.cancel_now("a-1", T0 + NS, issuer="gw-car-7")  # already removed
    assert recorder.cancel_now("a-1", T0 + NS, issuer="gw-car-12")
    assert not recorder.is_recording(T0 + NS)
