"""One activation's bookkeeping: who is expected, who answered, how fast, what state.

Pure: the coordinator feeds it publishes and acks with their times and asks it what
is still silent and what the record says.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from mesh.clock import ms_between
from mesh.decide.stats import percentile
from mesh.decide.targeting import TargetDecision
from mesh.protocol.models import (
    CONFIRMED_OUTCOMES,
    AckStatus,
    ActivationRecord,
    ActivationState,
    CameraAck,
    CameraOutcome,
    LatencySummary,
    OutcomeStatus,
    RecordStart,
)

FAILED_OUTCOMES = frozenset({OutcomeStatus.MISSED, OutcomeStatus.REJECTED})


_CONFIRMING = frozenset({AckStatus.STARTED, AckStatus.ALREADY_RECORDING})


class AckEffect(Enum):
    RECORDED = "recorded"
    UNEXPECTED = "unexpected"  # a camera we did not wait for started anyway (fresher fix)
    DUPLICATE = "duplicate"
    UPGRADED = "upgraded"  # a rejection replaced by a later start


@dataclass
class _Progress:
    unit_id: str | None
    expected: bool
    targeting: str
    status: OutcomeStatus = OutcomeStatus.PENDING
    detail: str = ""
    attempts: int = 0
    latency_ms: float | None = None
    acked_at_ns: int | None = None
    # False for a camera wanted but offline too long to wait for: missed from the start,
    # neither waited for nor retried (escalated at once), unless it answers anyway.
    waited: bool = True

    def outcome(self, camera_id: str) -> CameraOutcome:
        # Our own typed bookkeeping: no validation needed (a record names every camera,
        # and is rebuilt for progress updates during the ack flood).
        return CameraOutcome.model_construct(
            camera_id=camera_id,
            unit_id=self.unit_id,
            expected=self.expected,
            targeting=self.targeting,
            status=self.status,
            detail=self.detail,
            attempts=self.attempts,
            latency_ms=self.latency_ms,
            acked_at_ns=self.acked_at_ns,
        )


class ActivationTracker:
    def __init__(
        self,
        command: RecordStart,
        decisions: list[TargetDecision],
        *,
        unit_id: str,
        accepted_mono_ns: int,
    ) -> None:
        self.command = command
        self.unit_id = unit_id
        self.accepted_mono_ns = accepted_mono_ns
        self.cameras: dict[str, _Progress] = {}
        for d in decisions:
            if d.expected:
                self.cameras[d.camera_id] = _Progress(d.unit_id, True, d.reason)
            elif d.escalate is not None:
                # In range or targeted but offline too long: the activation wanted it, so
                # the record names it (missed), though nobody waits for it.
                self.cameras[d.camera_id] = _Progress(
                    d.unit_id,
                    True,
                    d.reason,
                    status=OutcomeStatus.MISSED,
                    detail=f"not waited for (escalated: {d.escalate.value})",
                    waited=False,
                )
        # Not-expected cameras are kept only as reasons (for the log), not as progress.
        self.not_expected = [d for d in decisions if not d.expected]
        self.published_at_ns: int | None = None
        self._published_mono_ns: int | None = None
        self._publish_confirmed = False
        self._pending = sum(1 for p in self.cameras.values() if p.expected and p.waited)
        self._last_expected_ack_mono: int | None = None
        self.merged_triggers = 0
        # A restart loses the monotonic origin: latencies measured before it are kept,
        # trigger-to-all-acks is not reported for the activation.
        self.resumed = False
        self.finished_at_ns: int | None = None
        self.finish_reason = ""
        self.cancelled_by: str | None = None

    @property
    def activation_id(self) -> str:
        return self.command.activation_id

    @property
    def complete(self) -> bool:
        return self._pending == 0

    def silent(self) -> list[str]:
        return [cid for cid, p in self.cameras.items() if p.status is OutcomeStatus.PENDING]

    def sending(self, wall_ns: int, mono_ns: int) -> None:
        """A command is about to go out. The first send's time is the latency origin; it is
        noted before the broker confirms, because cameras may ack before the PUBACK."""
        if not self._publish_confirmed:
            self.published_at_ns = wall_ns
            self._published_mono_ns = mono_ns

    def on_published(self, camera_ids: list[str] | None) -> None:
        """The broker took the command: for everyone (None) or for the named cameras."""
        self._publish_confirmed = True
        targets = (
            self.cameras.values()
            if camera_ids is None
            else (self.cameras[c] for c in camera_ids if c in self.cameras)
        )
        for progress in targets:
            if progress.waited:
                progress.attempts += 1

    def restore_published(self, camera_ids: list[str] | None, wall_ns: int) -> None:
        """Replay a logged publish after a restart (no monotonic origin survives it)."""
        self.resumed = True
        if self.published_at_ns is None:
            self.published_at_ns = wall_ns
        self.on_published(camera_ids)

    def restore_ack(self, ack: CameraAck, wall_ns: int, latency_ms: float | None) -> None:
        """Replay a logged ack after a restart, keeping the latency measured at the time."""
        self.resumed = True
        if self.on_ack(ack, wall_ns, mono_ns=0) is not AckEffect.DUPLICATE:
            self.cameras[ack.camera_id].latency_ms = latency_ms

    def on_ack(self, ack: CameraAck, wall_ns: int, mono_ns: int) -> AckEffect:
        progress = self.cameras.get(ack.camera_id)
        effect = AckEffect.RECORDED
        if progress is None:
            progress = _Progress(ack.unit_id, False, "not expected; answered the broadcast")
            self.cameras[ack.camera_id] = progress
            effect = AckEffect.UNEXPECTED
        elif progress.status is OutcomeStatus.REJECTED and ack.status in _CONFIRMING:
            # A refusal is not final: the camera refused one command (expired, or one
            # forged with this activation's id) and then started for a genuine one.
            progress.status = OutcomeStatus(ack.status.value)
            progress.detail = ack.reason
            progress.acked_at_ns = wall_ns
            return AckEffect.UPGRADED
        elif progress.status is not OutcomeStatus.PENDING and (
            progress.waited or progress.acked_at_ns is not None
        ):
            return AckEffect.DUPLICATE
        progress.status = OutcomeStatus(ack.status.value)
        progress.detail = ack.reason
        progress.acked_at_ns = wall_ns
        if self._published_mono_ns is not None:
            progress.latency_ms = round(ms_between(self._published_mono_ns, mono_ns), 3)
        if progress.expected:
            self._last_expected_ack_mono = mono_ns
            if progress.waited:
                self._pending -= 1
        return effect

    def finish(self, wall_ns: int, reason: str = "") -> None:
        """Close the activation: every expected camera still silent is missed."""
        if self.cancelled_by is not None:
            return  # closed by the cancel already
        for progress in self.cameras.values():
            if progress.status is OutcomeStatus.PENDING:
                progress.status = OutcomeStatus.MISSED
                progress.detail = reason or f"no ack after {progress.attempts} attempt(s)"
        self._pending = 0
        self.finished_at_ns = wall_ns
        self.finish_reason = reason

    def cancel(self, wall_ns: int, by: str, reason: str) -> None:
        """A false trigger, cancelled in its window: nothing more is asked of the cameras;
        those still silent are marked cancelled, not missed. Already finished: the outcome
        stays as it was, the state becomes cancelled."""
        for progress in self.cameras.values():
            if progress.status is OutcomeStatus.PENDING:
                progress.status = OutcomeStatus.CANCELLED
                progress.detail = "not answered before the cancel"
        self._pending = 0
        if self.finished_at_ns is None:
            self.finished_at_ns = wall_ns
        self.cancelled_by = by
        self.finish_reason = f"cancelled by {by}" + (f": {reason}" if reason else "")

    def state(self) -> ActivationState:
        if self.cancelled_by is not None:
            return ActivationState.CANCELLED
        if self.finished_at_ns is None:
            return ActivationState.PENDING
        statuses = [p.status for p in self.cameras.values()]
        confirmed = any(s in CONFIRMED_OUTCOMES for s in statuses)
        failed = any(s in FAILED_OUTCOMES for s in statuses)
        if not confirmed:
            return ActivationState.MISSED
        return ActivationState.PARTIAL if failed else ActivationState.CONFIRMED

    def all_acked_ms(self) -> float | None:
        """Trigger accepted → last expected ack, if every expected camera answered."""
        if self.resumed:
            return None
        expected = [p for p in self.cameras.values() if p.expected]
        unanswered = (OutcomeStatus.PENDING, *FAILED_OUTCOMES)
        if not expected or any(p.status in unanswered for p in expected):
            return None
        if self._last_expected_ack_mono is None:
            return None
        return round(ms_between(self.accepted_mono_ns, self._last_expected_ack_mono), 3)

    def record(self) -> ActivationRecord:
        latencies = [
            p.latency_ms
            for p in self.cameras.values()
            if p.latency_ms is not None and p.status in CONFIRMED_OUTCOMES
        ]
        state = self.state()
        reason = self.finish_reason
        if state is ActivationState.MISSED and not reason:
            if not self.cameras:
                reason = "no camera in range or targeted"
            elif not any(p.waited for p in self.cameras.values()):
                reason = "every camera in range or targeted was offline too long to wait for"
        cmd = self.command
        return ActivationRecord(
            activation_id=cmd.activation_id,
            issuer=cmd.issuer,
            unit_id=self.unit_id,
            trigger=cmd.trigger,
            state=state,
            reason=reason,
            decided_at_ns=cmd.issued_at_ns,
            published_at_ns=self.published_at_ns,
            finished_at_ns=self.finished_at_ns,
            expires_at_ns=cmd.expires_at_ns,
            origin=cmd.origin,
            radius_m=cmd.radius_m,
            pre_event_s=cmd.pre_event_s,
            cameras=tuple(p.outcome(cid) for cid, p in sorted(self.cameras.items())),
            latency_ms=LatencySummary(
                p50=percentile(latencies, 50) if latencies else None,
                max=max(latencies) if latencies else None,
            ),
            all_acked_ms=self.all_acked_ms(),
            merged_triggers=self.merged_triggers,
            priority=cmd.priority,
            cancelled_by=self.cancelled_by,
        )
