"""What the gateway's commands, receipts, records and escalations say about each check.
Pure: what was seen and the scene in, one finding per check out.

Trigger A is the one around the scene's cameras; B is cancelled; "unsigned" is sent
unsigned in a signed run. Every check names what it looked at in its detail.
"""

from __future__ import annotations

from collections.abc import Callable

from bridge.topics import TopicKind
from mesh.clock import NS
from mesh.conformance.gateway.observe import Observed, SeenCommand
from mesh.conformance.gateway.scene import SCENE_RADIUS_M, Behaviour, GatewayScene
from mesh.conformance.verdict import Finding, Outcome, all_of, failed, not_run, passed
from mesh.decide.cells import covering_cells, covering_count
from mesh.decide.fanout import MAX_CELLS
from mesh.protocol.models import (
    CONFIRMED_OUTCOMES,
    ActivationRecord,
    ActivationState,
    CameraOutcome,
    EscalationReason,
    OutcomeStatus,
    ReceiptOutcome,
    RecordCancel,
    RecordStart,
    TriggerEvent,
)

# The longest cancel window a policy may set (docs/policy.md).
MAX_CANCEL_WINDOW_S = 300
# A retry this soon after the camera's answer went out may have crossed it.
CROSSING_S = 0.25
# A command received this long after its expiry was sent after it.
LATE_SLACK_NS = NS

Judge = Callable[[Observed, GatewayScene], Finding]


class Missing(Exception):
    """What a check needs was not seen: ``finding`` says what."""

    def __init__(self, finding: Finding) -> None:
        super().__init__(finding.detail)
        self.finding = finding


def guarded(judge: Judge) -> Judge:
    def run(obs: Observed, scene: GatewayScene) -> Finding:
        try:
            return judge(obs, scene)
        except Missing as exc:
            return exc.finding

    run.__name__ = judge.__name__
    return run


# --- what the checks need ------------------------------------------------------------------
def _aid(obs: Observed, role: str = "a") -> str:
    aid = obs.activation(role)
    if aid is None:
        raise Missing(failed(f"trigger {role.upper()} started no activation the kit saw"))
    return aid


def _first(obs: Observed, role: str = "a") -> tuple[str, RecordStart, list[SeenCommand]]:
    aid = _aid(obs, role)
    first = obs.first_attempt(aid)
    if not first:
        raise Missing(failed(f"no record_start of activation {aid} was seen"))
    command = first[0].command
    assert isinstance(command, RecordStart)
    return aid, command, first


def _final(obs: Observed) -> tuple[str, ActivationRecord]:
    aid = _aid(obs)
    record = obs.final(aid)
    if record is None:
        raise Missing(failed(f"activation {aid} never published a final record"))
    return aid, record


def _in_scene(obs: Observed) -> None:
    """The scene's cameras are within SCENE_RADIUS_M: the kind's radius must reach them."""
    _, command, _ = _first(obs)
    if command.radius_m < SCENE_RADIUS_M:
        raise Missing(
            not_run(
                f"the kind's radius is {command.radius_m:g} m; the kit's cameras need "
                f"{SCENE_RADIUS_M:g} m (choose another --kind)"
            )
        )


def _outcome(record: ActivationRecord, camera_id: str) -> CameraOutcome | None:
    return next((c for c in record.cameras if c.camera_id == camera_id), None)


def _describe(outcome: CameraOutcome | None) -> str:
    if outcome is None:
        return "absent from the record"
    return f"`{outcome.status.value}` after {outcome.attempts} attempt(s) ({outcome.detail!r})"


def _escalation(obs: Observed, aid: str, camera_id: str, reason: EscalationReason) -> float | None:
    for at, _, escalation in obs.escalations_of(aid):
        if escalation.camera_id == camera_id and escalation.reason is reason:
            return at
    return None


# --- status, receipts ---------------------------------------------------------------------------
@guarded
def gateway_status_retained(obs: Observed, scene: GatewayScene) -> Finding:
    status = obs.status
    if status is None:
        return failed(f"no status on {scene.topics.gateway(scene.gateway_id)} (is it running?)")
    problems = []
    if not obs.status_retained:
        problems.append("not retained")
    if not status.online:
        problems.append("online: false")
    if status.unit_id != scene.unit_id:
        problems.append(f"unit {status.unit_id!r}, not {scene.unit_id!r}")
    if problems:
        return failed("its status: " + ", ".join(problems))
    return passed(f"retained, online, unit {status.unit_id}")


@guarded
def trigger_receipt_accepted(obs: Observed, scene: GatewayScene) -> Finding:
    receipt = obs.receipt("a")
    if receipt is None:
        return failed(f"no receipt for trigger A on {scene.topics.receipt(scene.unit_id)}")
    if receipt.outcome is not ReceiptOutcome.ACCEPTED:
        return failed(f"receipt `{receipt.outcome.value}`: {receipt.reason!r}")
    if receipt.activation_id is None or receipt.unit_id != scene.unit_id:
        return failed(f"receipt naming activation {receipt.activation_id}, unit {receipt.unit_id}")
    return passed(f"`accepted`, activation {receipt.activation_id}")


@guarded
def repeat_trigger_merged(obs: Observed, scene: GatewayScene) -> Finding:
    aid = _aid(obs)
    again = obs.sent.get("a-again")
    if again is None:
        return not_run("trigger A was not sent again (no receipt for it)")
    receipts = obs.receipts_for("a", after=again.mono_s)
    if not receipts:
        return failed("trigger A sent again: no receipt")
    receipt = receipts[0]
    if receipt.outcome is not ReceiptOutcome.SUPPRESSED or receipt.activation_id != aid:
        return failed(
            f"trigger A sent again: receipt `{receipt.outcome.value}` for activation "
            f"{receipt.activation_id} ({receipt.reason!r})"
        )
    finals = [at for at, r in obs.records_of(aid) if r.state is not ActivationState.PENDING]
    still_pending = not finals or finals[0] > again.mono_s
    if still_pending and receipt.activation_pending is not True:
        return failed("`suppressed` while A was pending, without activation_pending: true")
    others = {
        s.command.activation_id
        for s in obs.commands
        if isinstance(s.command, RecordStart) and s.command.trigger.event_id == obs.event_id("a")
    }
    if others != {aid}:
        return failed(f"trigger A started activations {sorted(others)}")
    return passed(f"`suppressed` into {aid} (activation_pending {receipt.activation_pending})")


# --- the command ----------------------------------------------------------------------------------
@guarded
def command_fields(obs: Observed, scene: GatewayScene) -> Finding:
    aid, command, first = _first(obs)
    sent = obs.sent["a"].model
    assert isinstance(sent, TriggerEvent)
    problems = []
    if command.issuer != scene.gateway_id:
        problems.append(f"issuer {command.issuer!r}, not {scene.gateway_id!r}")
    trig = command.trigger
    expected = (sent.event_id, sent.kind, sent.unit_id, sent.observed_at_ns, sent.source)
    if (trig.event_id, trig.kind, trig.unit_id, trig.observed_at_ns, trig.source) != expected:
        problems.append("its trigger is not the trigger sent")
    assert sent.position is not None
    origin = command.origin
    if origin is None or (origin.lat, origin.lon) != (sent.position.lat, sent.position.lon):
        problems.append(f"origin {origin}, not the trigger's position")
    if command.expires_at_ns <= command.issued_at_ns:
        problems.append("expires before it is issued")
    until = command.cancel_until_ns
    if until is not None and not (
        command.issued_at_ns < until <= command.issued_at_ns + MAX_CANCEL_WINDOW_S * NS
    ):
        problems.append(f"cancel_until_ns {until} not within {MAX_CANCEL_WINDOW_S} s of its issue")
    if any(s.command != command for s in first):
        problems.append("its copies on different topics differ")
    if problems:
        return failed(f"activation {aid}: " + "; ".join(problems))
    window = "none" if until is None else f"{(until - command.issued_at_ns) / NS:g} s"
    life = (command.expires_at_ns - command.issued_at_ns) / NS
    return passed(
        f"{aid} by {command.issuer}: radius {command.radius_m:g} m, life {life:g} s, cancel "
        f"window {window}, on {len(first)} topics"
    )


def _cells_wanted(command: RecordStart) -> list[str] | None:
    """The cells the circle meets; None when it is too big for cells (cmd/all)."""
    origin = command.origin
    if origin is None or command.radius_m <= 0:
        return []
    if covering_count(origin.lat, command.radius_m) > MAX_CELLS:
        return None
    return covering_cells(origin.lat, origin.lon, command.radius_m)


@guarded
def command_to_covering_cells(obs: Observed, scene: GatewayScene) -> Finding:
    _, command, first = _first(obs)
    wanted = _cells_wanted(command)
    cells = {s.target for s in first if s.kind is TopicKind.COMMAND_CELL}
    to_all = any(s.kind is TopicKind.COMMAND_ALL for s in first)
    if wanted is None:
        if to_all:
            return passed(f"a {command.radius_m:g} m circle: on cmd/all")
        return failed(f"a {command.radius_m:g} m circle needs cmd/all; not sent there")
    missing = sorted(set(wanted) - cells)
    if missing and not to_all:
        return failed(
            f"not sent to {len(missing)} of the {len(wanted)} cells that meet the circle: "
            + ", ".join(missing)
        )
    how = "cmd/all" if missing else f"cells {', '.join(wanted)}"
    return passed(f"a {command.radius_m:g} m circle: {len(wanted)} cells meet it; on {how}")


@guarded
def command_to_unit_topics(obs: Observed, scene: GatewayScene) -> Finding:
    _, command, first = _first(obs)
    units = {s.target for s in first if s.kind is TopicKind.COMMAND_UNIT}
    missing = [u for u in command.targets.units if u not in units]
    if missing:
        return failed(f"targets units {', '.join(missing)} but not sent to their topics")
    if not command.targets.units:
        return passed("targets no unit (include_own_unit off)")
    return passed(f"on the topics of {', '.join(command.targets.units)}")


@guarded
def command_cells_few(obs: Observed, scene: GatewayScene) -> Finding:
    _, command, first = _first(obs)
    wanted = _cells_wanted(command)
    cells = {s.target for s in first if s.kind is TopicKind.COMMAND_CELL}
    to_all = any(s.kind is TopicKind.COMMAND_ALL for s in first)
    if wanted is None:
        return passed("a big circle: cmd/all") if not cells else failed("cells and cmd/all both")
    extra = sorted(c for c in cells if c is not None and c not in wanted)
    if extra or to_all:
        return failed(
            f"also sent to {', '.join(extra) or 'cmd/all'}, which the circle does not meet"
        )
    return passed(f"{len(cells)} cells, each meeting the circle")


@guarded
def stale_fix_named(obs: Observed, scene: GatewayScene) -> Finding:
    _in_scene(obs)
    _, command, first = _first(obs)
    stale = scene.camera(Behaviour.STALE).camera_id
    if stale not in command.targets.cameras:
        return failed(
            f"{stale} (fix 2 days old, its unit's cameras in range) is not named in the command"
        )
    if not any(s.kind is TopicKind.COMMAND_CAMERA and s.target == stale for s in first):
        return failed(f"{stale} is named, but the command did not go to its own topic")
    return passed(f"{stale} named and sent the command on its own topic")


# --- retries --------------------------------------------------------------------------------------
@guarded
def silent_cameras_retried(obs: Observed, scene: GatewayScene) -> Finding:
    _in_scene(obs)
    aid, command, _ = _first(obs)
    findings = []
    for behaviour in (Behaviour.RETRY_ONLY, Behaviour.SILENT, Behaviour.MOVED, Behaviour.FORGED):
        camera_id = scene.camera(behaviour).camera_id
        retries = obs.retries_to(aid, camera_id)
        if not retries:
            findings.append(failed(f"{camera_id}: no retry on its own topic"))
            continue
        attempts = [s.command.attempt for s in retries if isinstance(s.command, RecordStart)]
        issued = {s.command.issued_at_ns for s in retries if isinstance(s.command, RecordStart)}
        if attempts != sorted(set(attempts)) or attempts[0] < 1:
            findings.append(failed(f"{camera_id}: retried with attempts {attempts}"))
        elif issued != {command.issued_at_ns}:
            findings.append(failed(f"{camera_id}: a retry's issued_at_ns is not the first's"))
        else:
            findings.append(passed(f"{camera_id}: attempts {attempts}"))
    return all_of(findings, "; ".join(f.detail for f in findings))


@guarded
def retries_only_to_silent(obs: Observed, scene: GatewayScene) -> Finding:
    aid = _aid(obs)
    wrong = []
    never = (Behaviour.FAR, Behaviour.EAGER, Behaviour.OFFLINE)
    for camera in scene.cameras:
        retries = obs.retries_to(aid, camera.camera_id)
        if not retries:
            continue
        if camera.behaviour in never:
            wrong.append(f"{camera.camera_id} ({camera.behaviour.value})")
            continue
        answered = [
            at
            for at, reply in obs.replies
            if reply.topic_camera == camera.camera_id
            and reply.answer.activation_id == aid
            and reply.seal != "none"
            and reply.answer.camera_id == camera.camera_id
            and camera.behaviour is not Behaviour.FORGED
        ]
        if answered and any(s.mono_s > answered[0] + CROSSING_S for s in retries):
            wrong.append(f"{camera.camera_id} (after it answered)")
    if wrong:
        return failed("retried " + ", ".join(wrong))
    return passed("retries went to silent expected cameras only")


@guarded
def no_command_after_expiry(obs: Observed, scene: GatewayScene) -> Finding:
    aid, command, _ = _first(obs)
    late = [s for s in obs.starts(aid) if s.at_ns > command.expires_at_ns + LATE_SLACK_NS]
    if late:
        return failed(f"{len(late)} commands after it expired (the first on {late[0].kind.value})")
    return passed(f"{len(obs.starts(aid))} commands, all before it expired")


# --- the record -----------------------------------------------------------------------------------
@guarded
def record_pending_then_final(obs: Observed, scene: GatewayScene) -> Finding:
    aid = _aid(obs)
    records = [r for _, r in obs.records_of(aid)]
    if not records:
        return failed(f"no record of {aid} on {scene.topics.activation(scene.unit_id, aid)}")
    states = [r.state for r in records]
    pending = ActivationState.PENDING
    if pending not in states:
        return failed(f"no `pending` record while it ran (states: {[s.value for s in states]})")
    first_final = next((i for i, s in enumerate(states) if s is not pending), None)
    if first_final is None:
        return failed("never final")
    if pending in states[first_final:]:
        return failed("a `pending` record after the final one")
    final = records[first_final]
    if final.finished_at_ns is None:
        return failed("the final record has no finished_at_ns")
    return passed(f"{states.count(pending)} pending, then `{final.state.value}`")


def _outcomes(
    obs: Observed,
    scene: GatewayScene,
    wanted: dict[Behaviour, set[OutcomeStatus]],
    *,
    expected: bool = True,
) -> Finding:
    _in_scene(obs)
    _, record = _final(obs)
    findings = []
    for behaviour, statuses in wanted.items():
        camera_id = scene.camera(behaviour).camera_id
        outcome = _outcome(record, camera_id)
        ok = outcome is not None and outcome.status in statuses and outcome.expected == expected
        text = f"{camera_id}: {_describe(outcome)}"
        findings.append(passed(text) if ok else failed(text))
    return all_of(findings, "; ".join(f.detail for f in findings))


@guarded
def answers_recorded(obs: Observed, scene: GatewayScene) -> Finding:
    confirmed = set(CONFIRMED_OUTCOMES)
    return _outcomes(
        obs,
        scene,
        {Behaviour.PROMPT: confirmed, Behaviour.UNIT: confirmed, Behaviour.STALE: confirmed},
    )


@guarded
def late_answer_recorded(obs: Observed, scene: GatewayScene) -> Finding:
    found = _outcomes(obs, scene, {Behaviour.RETRY_ONLY: set(CONFIRMED_OUTCOMES)})
    _, record = _final(obs)
    outcome = _outcome(record, scene.camera(Behaviour.RETRY_ONLY).camera_id)
    if found.outcome is Outcome.PASS and outcome is not None and outcome.attempts < 2:
        return failed(
            f"{outcome.camera_id}: answered the retry, recorded after {outcome.attempts} attempt(s)"
        )
    return found


def _escalated(
    obs: Observed,
    scene: GatewayScene,
    behaviour: Behaviour,
    status: OutcomeStatus,
    reason: EscalationReason,
) -> Finding:
    found = _outcomes(obs, scene, {behaviour: {status}})
    if found.outcome is not Outcome.PASS:
        return found
    aid, _ = _final(obs)
    camera_id = scene.camera(behaviour).camera_id
    if _escalation(obs, aid, camera_id, reason) is None:
        return failed(f"{found.detail}; no escalation `{reason.value}`")
    return passed(f"{found.detail}; escalated `{reason.value}`")


@guarded
def silent_camera_escalated(obs: Observed, scene: GatewayScene) -> Finding:
    return _escalated(obs, scene, Behaviour.SILENT, OutcomeStatus.MISSED, EscalationReason.NO_ACK)


@guarded
def offline_camera_escalated(obs: Observed, scene: GatewayScene) -> Finding:
    found = _escalated(
        obs, scene, Behaviour.OFFLINE, OutcomeStatus.MISSED, EscalationReason.OFFLINE
    )
    if found.outcome is not Outcome.PASS:
        return found
    aid, record = _final(obs)
    camera_id = scene.camera(Behaviour.OFFLINE).camera_id
    outcome = _outcome(record, camera_id)
    if outcome is not None and outcome.attempts != 0:
        return failed(f"{camera_id}: waited for ({outcome.attempts} attempts)")
    at = _escalation(obs, aid, camera_id, EscalationReason.OFFLINE)
    retries = [
        s.mono_s
        for s in obs.starts(aid)
        if isinstance(s.command, RecordStart) and s.command.attempt > 0
    ]
    finals = [t for t, r in obs.records_of(aid) if r.state is not ActivationState.PENDING]
    before = min(retries) if retries else (finals[0] if finals else None)
    if at is not None and before is not None and at > before:
        return failed(f"{camera_id}: escalated `offline` only after the first retry, not at once")
    return passed(f"{found.detail}, at once, not waited for")


@guarded
def rejected_camera_escalated(obs: Observed, scene: GatewayScene) -> Finding:
    return _escalated(
        obs, scene, Behaviour.REJECTS, OutcomeStatus.REJECTED, EscalationReason.REJECTED
    )


@guarded
def out_of_range_recorded(obs: Observed, scene: GatewayScene) -> Finding:
    found = _outcomes(obs, scene, {Behaviour.MOVED: {OutcomeStatus.OUT_OF_RANGE}})
    aid, _ = _final(obs)
    camera_id = scene.camera(Behaviour.MOVED).camera_id
    escalated = [e for _, _, e in obs.escalations_of(aid) if e.camera_id == camera_id]
    if escalated:
        return failed(f"{camera_id} escalated `{escalated[0].reason.value}`")
    return found


@guarded
def bad_acks_ignored(obs: Observed, scene: GatewayScene) -> Finding:
    from mesh.conformance.gateway.fleet import MISMATCHED_ID

    found = _outcomes(obs, scene, {Behaviour.FORGED: {OutcomeStatus.MISSED}})
    _, record = _final(obs)
    if _outcome(record, MISMATCHED_ID) is not None:
        return failed(f"the record lists {MISMATCHED_ID}, named only by an ack on another's topic")
    forged = scene.camera(Behaviour.FORGED).camera_id
    forgeries = [r.forgery for _, r in obs.replies if r.topic_camera == forged and r.forgery]
    if found.outcome is not Outcome.PASS:
        return found
    if not forgeries:
        return not_run(f"{forged} never heard a command, so it sent no forged ack")
    return passed(f"{found.detail}; its forged acks: {', '.join(forgeries)}")


@guarded
def unexpected_start_recorded(obs: Observed, scene: GatewayScene) -> Finding:
    return _outcomes(obs, scene, {Behaviour.EAGER: set(CONFIRMED_OUTCOMES)}, expected=False)


@guarded
def far_camera_left_out(obs: Observed, scene: GatewayScene) -> Finding:
    aid, record = _final(obs)
    camera_id = scene.camera(Behaviour.FAR).camera_id
    if _outcome(record, camera_id) is not None:
        return failed(f"{camera_id}, 50 km away and not targeted, is in the record")
    direct = [
        s for s in obs.starts(aid) if s.kind is TopicKind.COMMAND_CAMERA and s.target == camera_id
    ]
    if direct:
        return failed(f"{camera_id} was sent the command on its own topic")
    return passed(f"{camera_id} not in the record, never commanded")


@guarded
def final_state(obs: Observed, scene: GatewayScene) -> Finding:
    _, record = _final(obs)
    statuses = [c.status for c in record.cameras]
    confirmed = any(s in CONFIRMED_OUTCOMES for s in statuses)
    failed_ = any(s in (OutcomeStatus.MISSED, OutcomeStatus.REJECTED) for s in statuses)
    if not confirmed:
        wanted = ActivationState.MISSED
    else:
        wanted = ActivationState.PARTIAL if failed_ else ActivationState.CONFIRMED
    if record.state is not wanted:
        return failed(f"`{record.state.value}` with these outcomes; expected `{wanted.value}`")
    return passed(f"`{record.state.value}`, {len(record.cameras)} cameras in the record")


@guarded
def escalation_fields(obs: Observed, scene: GatewayScene) -> Finding:
    aid, command, _ = _first(obs)
    escalations = obs.escalations_of(aid)
    if not escalations:
        return failed(f"no escalation of {aid} was seen")
    problems = []
    for _, audience, e in escalations:
        camera = scene.by_id(e.camera_id)
        if e.issuer != scene.gateway_id or e.unit_id != scene.unit_id:
            problems.append(f"{e.camera_id}: issuer {e.issuer}, unit {e.unit_id}")
        elif e.kind is not command.trigger.kind:
            problems.append(f"{e.camera_id}: kind {e.kind.value}")
        elif e.audience != audience:
            problems.append(f"{e.camera_id}: audience {e.audience} on topic {audience}")
        elif camera is not None and e.camera_unit_id != camera.unit_id:
            problems.append(f"{e.camera_id}: camera_unit_id {e.camera_unit_id}")
    if problems:
        return failed("; ".join(problems))
    audiences = sorted({a for _, a, _ in escalations})
    return passed(f"{len(escalations)} escalations to {', '.join(audiences)}")


# --- cancel ---------------------------------------------------------------------------------------
@guarded
def cancel_honoured(obs: Observed, scene: GatewayScene) -> Finding:
    aid = _aid(obs, "b")
    if "cancel-b" not in obs.sent:
        return not_run(f"the kit saw no command of activation B ({aid}) to cancel")
    receipt = obs.receipt("cancel-b")
    if receipt is None:
        return failed("the cancel got no receipt")
    if receipt.outcome is not ReceiptOutcome.ACCEPTED or receipt.activation_id != aid:
        return failed(f"the cancel: receipt `{receipt.outcome.value}` ({receipt.reason!r})")
    cancelled = [r for _, r in obs.records_of(aid) if r.state is ActivationState.CANCELLED]
    if not cancelled:
        return failed(f"no record of {aid} with state `cancelled`")
    if not cancelled[0].cancelled_by:
        return failed("the `cancelled` record does not say by whom")
    return passed(f"`accepted`; {aid} `cancelled` by {cancelled[0].cancelled_by}")


@guarded
def record_cancel_sent(obs: Observed, scene: GatewayScene) -> Finding:
    aid, _, first = _first(obs, "b")
    if "cancel-b" not in obs.sent:
        return not_run("activation B was not cancelled")
    cancels = obs.cancels(aid)
    if not cancels:
        return failed(f"no record_cancel of {aid}")
    wrong = [
        s
        for s in cancels
        if isinstance(s.command, RecordCancel) and s.command.issuer != scene.gateway_id
    ]
    if wrong:
        return failed(f"a record_cancel names issuer {wrong[0].command.issuer}")  # type: ignore[union-attr]
    wanted = {(s.kind, s.target) for s in first}
    got = {(s.kind, s.target) for s in cancels}
    missing = wanted - got
    if missing:
        return failed(f"not sent to {len(missing)} of the command's {len(wanted)} topics")
    return passed(f"to the command's {len(wanted)} topics, from {scene.gateway_id}")


@guarded
def cancel_unknown_refused(obs: Observed, scene: GatewayScene) -> Finding:
    receipt = obs.receipt("cancel-none")
    if receipt is None:
        return failed("a cancel of an activation it never had: no receipt")
    if receipt.outcome is not ReceiptOutcome.REJECTED:
        return failed(f"a cancel of an activation it never had: `{receipt.outcome.value}`")
    return passed(f"`rejected` ({receipt.reason!r})")


# --- signed runs ----------------------------------------------------------------------------------
@guarded
def commands_signed(obs: Observed, scene: GatewayScene) -> Finding:
    commands = [
        s for s in obs.commands if s.command is not None and s.command.issuer == scene.gateway_id
    ]
    if not commands:
        return failed("no command of this gateway was seen")
    bad = [s for s in commands if s.untrusted is not None]
    if bad:
        return failed(f"{len(bad)} of {len(commands)} commands not trusted: {bad[0].untrusted}")
    return passed(f"{len(commands)} commands, each signed by {scene.gateway_id}'s key")


@guarded
def unsigned_trigger_refused(obs: Observed, scene: GatewayScene) -> Finding:
    receipt = obs.receipt("unsigned")
    event_id = obs.event_id("unsigned")
    started = [
        s
        for s in obs.commands
        if isinstance(s.command, RecordStart) and s.command.trigger.event_id == event_id
    ]
    if started:
        return failed("an unsigned trigger was acted on: a record_start went out")
    if receipt is None:
        return failed("an unsigned trigger: no receipt")
    if receipt.outcome is not ReceiptOutcome.REJECTED or not receipt.reason.startswith("unsigned"):
        return failed(f"an unsigned trigger: `{receipt.outcome.value}` ({receipt.reason!r})")
    return passed(f"`rejected` ({receipt.reason!r}), no command")
