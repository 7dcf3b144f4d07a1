"""What the camera's answers, or its silence, say about each check. Pure: answers and
what was sent in, findings out."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from mesh.conformance.camera.probes import PRE_EVENT_S, Sent
from mesh.conformance.verdict import Finding, Outcome, failed, passed
from mesh.protocol.codec import PayloadError, decode
from mesh.protocol.models import (
    AckStatus,
    CameraAck,
    CameraPresence,
    CancelAck,
    CancelOutcome,
)

MAX_PRESENCE_BYTES = 2048
MAX_ANSWER_BYTES = 65_536
PRESENCE_PER_S = 2.0
PRESENCE_BURST = 6
# A distance named in an out_of_range reason is the one meant when it is this close.
DISTANCE_TOLERANCE = 0.05
DISTANCE_TOLERANCE_M = 50.0
_DISTANCE = re.compile(r"(\d+(?:\.\d+)?)\s*(km|m)\b")
STARTING = frozenset({AckStatus.STARTED, AckStatus.ALREADY_RECORDING})


@dataclass(frozen=True)
class Answer:
    """A message the camera sent on one of its ack topics."""

    topic: str
    issuer: str | None  # the issuer level of the topic
    size: int
    mono_s: float
    ack: CameraAck | None = None
    cancel_ack: CancelAck | None = None
    error: str | None = None  # neither a valid ack nor a valid cancel_ack: the codec's reason
    untrusted: str | None = None  # signed runs: why its signature is not trusted

    @property
    def activation_id(self) -> str | None:
        model = self.ack or self.cancel_ack
        return None if model is None else model.activation_id

    def describe(self) -> str:
        if self.ack is not None:
            return f"`{self.ack.status.value}` ({self.ack.reason!r})"
        if self.cancel_ack is not None:
            return f"cancel_ack `{self.cancel_ack.outcome.value}` ({self.cancel_ack.reason!r})"
        return f"an invalid payload ({self.error})"


def code_of(reason: str) -> str:
    return reason.split(":", 1)[0].strip()


# --- one answer, or none --------------------------------------------------------------
def unanswered(answers: Sequence[Answer], what: str) -> Finding:
    if not answers:
        return passed(f"{what}: no answer")
    return failed(f"{what}: answered {answers[0].describe()}")


def status(answer: Answer | None, expected: AckStatus, what: str, waited_s: float) -> Finding:
    if answer is None:
        return failed(f"{what}: no answer within {waited_s:g} s")
    if answer.ack is None:
        return failed(f"{what}: answered {answer.describe()}, not an ack")
    if answer.ack.status is not expected:
        return failed(f"{what}: answered {answer.describe()}; expected `{expected.value}`")
    return passed(f"{what}: `{expected.value}` ({answer.ack.reason!r})")


def refusal(answer: Answer | None, code: str, what: str, waited_s: float) -> Finding:
    """Answered `rejected` with a reason whose code (before the first colon) is ``code``."""
    found = status(answer, AckStatus.REJECTED, what, waited_s)
    if found.outcome is not Outcome.PASS or answer is None or answer.ack is None:
        return found
    if code_of(answer.ack.reason) != code:
        return failed(
            f"{what}: `rejected`, but the reason {answer.ack.reason!r} does not start with "
            f"its code `{code}:`"
        )
    return found


def started(answer: Answer | None, what: str, waited_s: float) -> Finding:
    found = status(answer, AckStatus.STARTED, what, waited_s)
    if found.outcome is not Outcome.PASS or answer is None or answer.ack is None:
        return found
    ack = answer.ack
    if ack.recording_started_at_ns is None or ack.pre_event_kept_s is None:
        return failed(f"{what}: `started` without recording_started_at_ns and pre_event_kept_s")
    return passed(
        f"{what}: `started`, recording since {ack.recording_started_at_ns}, "
        f"{ack.pre_event_kept_s:g} s of pre-event video kept"
    )


def unverifiable(
    answers: Sequence[Answer], code: str, what: str, *, answer_allowed: bool
) -> Finding:
    """A command nobody verifiable sent: it must start nothing; it must not be answered
    either, unless ``answer_allowed`` (the wire's protocol version answers it with a
    refusal naming ``code``)."""
    for answer in answers:
        if answer.ack is not None and answer.ack.status in STARTING:
            return failed(f"{what}: answered {answer.describe()}: it was acted on")
    if not answers:
        return passed(f"{what}: dropped, not answered")
    first = answers[0]
    if answer_allowed and first.ack is not None and code_of(first.ack.reason) == code:
        return passed(
            f"{what}: refused {first.describe()} (answered, as this protocol version does; "
            "v2 drops it unanswered)"
        )
    return failed(f"{what}: answered {first.describe()}; it must be dropped unanswered")


def distance_named(answer: Answer | None, expected_m: float | None, what: str) -> Finding:
    """`out_of_range` naming the distance (within 5 % or 50 m of the kit's own figure)."""
    found = status(answer, AckStatus.OUT_OF_RANGE, what, 0.0)
    if found.outcome is not Outcome.PASS or answer is None or answer.ack is None:
        return found
    reason = answer.ack.reason
    named = [
        float(value) * (1000.0 if unit == "km" else 1.0)
        for value, unit in _DISTANCE.findall(reason)
    ]
    if expected_m is None:
        if named:
            return passed(f"{what}: `out_of_range` ({reason!r})")
        return failed(f"{what}: `out_of_range`, but the reason {reason!r} names no distance")
    tolerance = max(DISTANCE_TOLERANCE * expected_m, DISTANCE_TOLERANCE_M)
    if any(abs(d - expected_m) <= tolerance for d in named):
        return passed(f"{what}: `out_of_range` ({reason!r}; the kit makes it {expected_m:.0f} m)")
    return failed(
        f"{what}: `out_of_range`, but the reason {reason!r} names no distance near "
        f"{expected_m:.0f} m"
    )


def expired(answer: Answer | None, what: str, waited_s: float) -> Finding:
    found = status(answer, AckStatus.REJECTED, what, waited_s)
    if found.outcome is not Outcome.PASS or answer is None or answer.ack is None:
        return found
    if "expire" not in answer.ack.reason.lower():
        return failed(
            f"{what}: `rejected`, but the reason {answer.ack.reason!r} does not say expired"
        )
    return found


def cancel_outcome(
    answer: Answer | None, expected: CancelOutcome, what: str, waited_s: float
) -> Finding:
    if answer is None:
        return failed(f"{what}: no cancel_ack within {waited_s:g} s")
    if answer.cancel_ack is None:
        return failed(f"{what}: answered {answer.describe()}, not a cancel_ack")
    if answer.cancel_ack.outcome is not expected:
        return failed(f"{what}: {answer.describe()}; expected `{expected.value}`")
    return passed(f"{what}: {answer.describe()}")


# --- presence -----------------------------------------------------------------------------
def presence_payload(
    payload: bytes, camera_id: str, unit_id: str | None
) -> tuple[Finding, CameraPresence | None]:
    if len(payload) > MAX_PRESENCE_BYTES:
        return failed(f"{len(payload)} bytes: over the {MAX_PRESENCE_BYTES}-byte limit"), None
    try:
        presence = decode(CameraPresence, payload, max_bytes=MAX_PRESENCE_BYTES)
    except PayloadError as exc:
        return failed(f"not a valid presence: {exc}"), None
    if presence.camera_id != camera_id:
        return failed(f"camera_id {presence.camera_id!r} on the topic of {camera_id!r}"), None
    if unit_id is not None and presence.unit_id != unit_id:
        return failed(f"unit_id {presence.unit_id!r}, not {unit_id!r} (--unit)"), presence
    where = (
        "no position"
        if presence.position is None
        else f"at {presence.position.lat:.6f},{presence.position.lon:.6f}"
    )
    return (
        passed(
            f"{len(payload)} bytes: camera {presence.camera_id}, unit {presence.unit_id}, "
            f"role {presence.role.value}, {where}, recording {str(presence.recording).lower()}"
        ),
        presence,
    )


def presence_rate(
    times_s: Sequence[float], *, per_s: float = PRESENCE_PER_S, burst: int = PRESENCE_BURST
) -> Finding:
    """A token bucket of ``burst`` refilled at ``per_s``: every presence the camera sent
    (the times it arrived, in seconds) must find a token."""
    if not times_s:
        return passed("no presence published during the run")
    tokens, last = float(burst), times_s[0]
    for i, at in enumerate(times_s):
        tokens = min(float(burst), tokens + (at - last) * per_s)
        last = at
        # A little slack: the kit times arrivals, after the broker.
        if tokens < 0.75:
            return failed(
                f"presence number {i + 1} came {at - times_s[0]:.2f} s into the run, past "
                f"{per_s:g} a second with {burst} at once ({len(times_s)} in all)"
            )
        tokens -= 1.0
    span = times_s[-1] - times_s[0]
    plural = "" if len(times_s) == 1 else "s"
    return passed(f"{len(times_s)} presence message{plural} in {span:.1f} s")


# --- every answer --------------------------------------------------------------------------
def ack_format(
    pairs: Iterable[tuple[Sent, Answer]], camera_id: str, unit_id: str | None
) -> Finding:
    problems: list[str] = []
    count = 0
    for sent, answer in pairs:
        count += 1
        problem = _ack_problem(sent, answer, camera_id, unit_id)
        if problem is not None:
            problems.append(f"{sent.probe}: {problem}")
    if problems:
        return failed(f"{len(problems)} of {count} acks: " + "; ".join(problems[:4]))
    return passed(f"{count} acks, each well-formed, on the issuer's ack topic")


def _ack_problem(sent: Sent, answer: Answer, camera_id: str, unit_id: str | None) -> str | None:
    ack = answer.ack
    if ack is None:
        return answer.describe()
    if answer.size > MAX_ANSWER_BYTES:
        return f"{answer.size} bytes, over {MAX_ANSWER_BYTES}"
    if answer.issuer != sent.issuer:
        return f"sent to {answer.topic}, not to the issuer {sent.issuer}'s ack topic"
    if ack.camera_id != camera_id:
        return f"camera_id {ack.camera_id!r}"
    if unit_id is not None and ack.unit_id not in (None, unit_id):
        return f"unit_id {ack.unit_id!r}, not {unit_id!r}"
    if ack.attempt != sent.attempt:
        return f"attempt {ack.attempt}, the command's was {sent.attempt}"
    fields = (ack.recording_started_at_ns, ack.pre_event_kept_s)
    if ack.status is AckStatus.STARTED:
        if None in fields:
            return "`started` without recording_started_at_ns or pre_event_kept_s"
        if ack.pre_event_kept_s is not None and ack.pre_event_kept_s > PRE_EVENT_S + 0.001:
            return f"pre_event_kept_s {ack.pre_event_kept_s} > the {PRE_EVENT_S} s asked"
    elif fields != (None, None):
        return f"`{ack.status.value}` carries the fields of a start"
    if ack.status is AckStatus.REJECTED and not ack.reason:
        return "`rejected` without a reason"
    return None


def cancel_ack_format(pairs: Iterable[tuple[Sent, Answer]], camera_id: str) -> Finding:
    problems: list[str] = []
    count = 0
    for sent, answer in pairs:
        count += 1
        ack = answer.cancel_ack
        if ack is None:
            problems.append(f"{sent.probe}: {answer.describe()}")
        elif ack.camera_id != camera_id:
            problems.append(f"{sent.probe}: camera_id {ack.camera_id!r}")
        elif ack.cancel_issuer != sent.issuer:
            problems.append(f"{sent.probe}: cancel_issuer {ack.cancel_issuer!r}, not {sent.issuer}")
        elif ack.cancel_at_ns != sent.cancel_at_ns:
            problems.append(f"{sent.probe}: cancel_at_ns {ack.cancel_at_ns} is not the cancel's")
        elif ack.outcome is CancelOutcome.REFUSED and ":" not in ack.reason:
            problems.append(f"{sent.probe}: refused without `code: why` ({ack.reason!r})")
        elif answer.size > MAX_ANSWER_BYTES:
            problems.append(f"{sent.probe}: {answer.size} bytes")
    if count == 0:
        return failed("no cancel_ack to look at")
    if problems:
        return failed(f"{len(problems)} of {count} cancel_acks: " + "; ".join(problems[:4]))
    return passed(f"{count} cancel_acks, each well-formed")


def signed(answers: Sequence[Answer]) -> Finding:
    bad = [a for a in answers if a.untrusted is not None]
    if not answers:
        return failed("no answer to look at")
    if bad:
        first = bad[0]
        return failed(
            f"{len(bad)} of {len(answers)} answers not trusted; {first.describe()} on "
            f"{first.topic}: {first.untrusted}"
        )
    return passed(f"{len(answers)} answers, each signed by the camera's key")
