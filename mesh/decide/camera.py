"""What a camera does with a record-start command. Pure: inputs in, decision out.

A camera starts when it is named in the command, or when it passes the command's role and
group filters and is either in a targeted unit or within the command's radius of the
origin by its own fix. A camera asleep starts only if the command wakes cameras. A
command it is not concerned by, on a topic many cameras share, gets no answer, so a
broadcast costs only the acks of cameras that start; and so does the same command
arriving a second time on another shared topic (its cell and its unit, say). A command
sent to this camera directly (a retry: the gateway is waiting for it) always gets an
answer, out_of_range included.

A camera keeps what it acted on per (activation id, issuer), a *claim*: the same id from
another issuer is not a duplicate but a command decided afresh (one gateway must not be
able to use up another's activation id). A record-cancel is obeyed only from the issuer
of a claim, only before the cancel deadline that issuer's command carried, and never if
it was issued before that command (``cancel_refusal``); it removes that claim alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from mesh.decide.geo import haversine_m
from mesh.decide.rejection import Rejection
from mesh.protocol.models import AckStatus, CameraRole, GeoPoint, RecordCancel, RecordStart


class Action(Enum):
    START = "start"  # start recording, then ack
    ACK = "ack"  # ack without starting anything
    IGNORE = "ignore"  # not concerned, say nothing


@dataclass(frozen=True)
class CameraView:
    camera_id: str
    unit_id: str
    position: GeoPoint | None
    role: CameraRole = CameraRole.BODY
    groups: tuple[str, ...] = ()
    asleep: bool = False


@dataclass(frozen=True)
class Decision:
    action: Action
    status: AckStatus | None
    reason: str


def scope(command: RecordStart, me: CameraView) -> tuple[bool, str]:
    """Is this camera concerned by the command, and why (or why not)."""
    if me.camera_id in command.targets.cameras:
        return True, "named in the command"
    if command.roles and me.role not in command.roles:
        return False, f"role {me.role.value} is not one the command starts"
    if command.groups and not set(me.groups) & set(command.groups):
        return False, "in none of the groups the command starts"
    if me.unit_id in command.targets.units:
        return True, f"unit {me.unit_id} targeted"
    if command.origin is None or command.radius_m <= 0:
        return False, "command targets units only, not this camera's"
    if me.position is None:
        return False, "no position fix"
    distance = haversine_m(command.origin.lat, command.origin.lon, me.position.lat, me.position.lon)
    if distance <= command.radius_m:
        return True, f"in range: {distance:.0f} m <= {command.radius_m:g} m"
    return False, f"out of range: {distance:.0f} m > {command.radius_m:g} m"


def decide(
    command: RecordStart,
    me: CameraView,
    *,
    direct: bool,
    already_handled: bool,
    recording: bool,
    now_ns: int,
    claim_cancelled: bool = False,
) -> Decision:
    """``already_handled``: this camera holds a claim for the command's activation id
    *from the command's issuer* (another issuer's claim on the same id does not count);
    ``claim_cancelled``: that claim was since cancelled by its issuer; ``recording``: the
    recorder is recording at this moment."""
    concerned, why = scope(command, me)
    if concerned and me.asleep and not command.wake:
        concerned, why = False, f"asleep, and the command does not wake cameras; {why}"
    if not concerned and not direct:
        return Decision(Action.IGNORE, None, why)
    if already_handled and not direct:
        # The same issuer's command again on a shared topic (its cell and its unit both
        # carry it, or a QoS 1 redelivery): answered the first time.
        return Decision(Action.IGNORE, None, "duplicate command for this activation")
    if already_handled and claim_cancelled:
        # A retry racing its own issuer's cancel must not restart what was cancelled.
        return Decision(
            Action.ACK, AckStatus.REJECTED, "this activation was cancelled by its issuer"
        )
    if already_handled and recording:
        return Decision(
            Action.ACK, AckStatus.ALREADY_RECORDING, "duplicate command for this activation"
        )
    # Handled before but no longer recording (the recording ended): decided afresh, so
    # that no ack ever says recording while the camera is not.
    if now_ns > command.expires_at_ns:
        late_ms = (now_ns - command.expires_at_ns) / 1e6
        return Decision(Action.ACK, AckStatus.REJECTED, f"command expired {late_ms:.0f} ms ago")
    if not concerned:
        return Decision(Action.ACK, AckStatus.OUT_OF_RANGE, why)
    if recording:
        return Decision(Action.ACK, AckStatus.ALREADY_RECORDING, f"already recording; {why}")
    return Decision(Action.START, AckStatus.STARTED, why)


@dataclass(frozen=True)
class Binding:
    """What a camera keeps of a command it acted on (started, or joined a recording for):
    who issued it, and until when that issuer may cancel it."""

    issuer: str
    cancel_until_ns: int | None
    # When that command was issued: a cancel issued before it cannot be meant for it.
    issued_at_ns: int = 0


class CancelProblem:
    """Codes of cancels refused by a camera (beside mesh.security.trust.Distrust)."""

    NOT_ISSUER = "not_issuer"
    NOT_CANCELLABLE = "not_cancellable"
    DEADLINE_PASSED = "deadline_passed"
    BEFORE_COMMAND = "before_command"


def cancel_refusal(cancel: RecordCancel, binding: Binding, *, now_ns: int) -> Rejection | None:
    """Why a camera recording for ``binding`` must not obey ``cancel`` (None: it may).

    ``binding`` is the claim of the cancel's issuer when it holds one (any other claim on
    the activation otherwise). Only the gateway whose command made the claim may remove
    it, and only until the deadline that command carried: a cancel from any other issuer,
    after the deadline (by the camera's clock, or by the cancel's own time), or issued
    before the command itself, is refused. A command without a deadline cannot be
    cancelled at all."""
    if cancel.issuer != binding.issuer:
        return Rejection(
            CancelProblem.NOT_ISSUER,
            f"cancel issued by {cancel.issuer}; only {binding.issuer}, whose command "
            "started this recording, may cancel it",
        )
    deadline = binding.cancel_until_ns
    if deadline is None:
        return Rejection(
            CancelProblem.NOT_CANCELLABLE,
            "the command that started this recording carried no cancel deadline",
        )
    if now_ns > deadline:
        late_ms = (now_ns - deadline) / 1e6
        return Rejection(
            CancelProblem.DEADLINE_PASSED, f"the cancel deadline passed {late_ms:.0f} ms ago"
        )
    if cancel.at_ns > deadline:
        late_ms = (cancel.at_ns - deadline) / 1e6
        return Rejection(
            CancelProblem.DEADLINE_PASSED, f"cancel issued {late_ms:.0f} ms after the deadline"
        )
    if cancel.at_ns < binding.issued_at_ns:
        early_ms = (binding.issued_at_ns - cancel.at_ns) / 1e6
        return Rejection(
            CancelProblem.BEFORE_COMMAND,
            f"cancel issued {early_ms:.0f} ms before the command it would cancel",
        )
    return None
