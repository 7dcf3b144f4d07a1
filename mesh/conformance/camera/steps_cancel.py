"""Checks of record_cancel: ignored when the camera did not act, refused from an issuer
without a claim, obeyed claim by claim (kept recording while another claim remains,
stopped with the last), answered once. Every cancel goes to the camera's own topic."""

from __future__ import annotations

from functools import partial

from mesh.conformance.camera import catalog, judge, probes
from mesh.conformance.camera.context import CameraRun, NeedsError
from mesh.conformance.camera.judge import Answer
from mesh.conformance.verdict import Finding, Outcome, all_of, failed, not_run
from mesh.protocol.models import CancelOutcome, RecordCancel

REFUSAL_CODES = ("not_issuer", "wrong_signer")


def _nothing(answers: list[Answer], *, what: str) -> Finding:
    return judge.unanswered(answers, what)


async def cancel_not_acted_ignored(run: CameraRun) -> Finding:
    scene, session = run.scene, run.session
    # One it answered out_of_range (no claim), or one it never heard of.
    name = run.out_of_range_name or "never"
    cancel = probes.record_cancel(scene, name, run.now())
    sent = await session.send("a cancel of an activation it did not act on", cancel, run.own)
    await session.quiet()
    what = (
        "a record_cancel of the command it answered out_of_range"
        if run.out_of_range_name
        else "a record_cancel of an activation it never heard of"
    )
    return run.silence(catalog.CANCEL_NOT_ACTED, [sent], partial(_nothing, what=what))


async def cancel_other_issuer_refused(run: CameraRun) -> Finding:
    run.need_recording()
    scene, session = run.scene, run.session
    cancel = probes.record_cancel(scene, "start", run.now(), issuer=scene.other_issuer)
    signer = "other" if session.keys.other is not None else "gateway"
    what = f"{scene.other_issuer}'s cancel of {scene.issuer}'s activation"
    sent = await session.send(what, cancel, run.own, signer=signer, refusal=True)
    answer = await session.answer(sent)
    found = judge.cancel_outcome(answer, CancelOutcome.REFUSED, what, session.timeout_s)
    if found.outcome is not Outcome.PASS or answer is None or answer.cancel_ack is None:
        return found
    if answer.issuer != scene.issuer:
        return failed(
            f"{what}: refused, but told {answer.topic}, not the claim's issuer {scene.issuer}"
        )
    if judge.code_of(answer.cancel_ack.reason) not in REFUSAL_CODES:
        return failed(
            f"{what}: refused, but the reason {answer.cancel_ack.reason!r} does not start with "
            f"{' or '.join(REFUSAL_CODES)}"
        )
    return found


async def cancel_kept_recording(run: CameraRun) -> Finding:
    run.need_recording()
    if len(run.claims) < 2:
        raise NeedsError(not_run("the camera acknowledged one claim only: nothing to keep"))
    findings = []
    for name, issuer in run.claims[:-1]:
        findings.append(await _cancel(run, name, issuer, CancelOutcome.KEPT_RECORDING))
    return all_of(
        findings,
        f"{len(findings)} cancels obeyed while another claim remained: each `kept_recording`",
    )


async def cancel_stopped(run: CameraRun) -> Finding:
    run.need_recording()
    if not run.claims:
        raise NeedsError(not_run("no claim to cancel"))
    name, issuer = run.claims[-1]
    return await _cancel(run, name, issuer, CancelOutcome.STOPPED, last=True)


async def _cancel(
    run: CameraRun, name: str, issuer: str, expected: CancelOutcome, *, last: bool = False
) -> Finding:
    scene, session = run.scene, run.session
    cancel = probes.record_cancel(scene, name, run.now(), issuer=issuer)
    signer = "other" if issuer == scene.other_issuer else "gateway"
    what = f"{issuer}'s cancel of {cancel.activation_id}"
    sent = await session.send(what, cancel, run.own, signer=signer)
    if last:
        run.stop_sent = sent
    answer = await session.answer(sent)
    found = judge.cancel_outcome(answer, expected, what, session.timeout_s)
    if found.outcome is Outcome.PASS and answer is not None and answer.issuer != issuer:
        return failed(f"{what}: answered on {answer.topic}, not to {issuer}")
    return found


async def cancel_repeat_silent(run: CameraRun) -> Finding:
    stop = run.stop_sent
    if stop is None:
        raise NeedsError(not_run("no cancel was obeyed (cancel_stopped)"))
    session = run.session
    assert stop.cancel_at_ns is not None
    again = RecordCancel(
        activation_id=stop.activation_id,
        issuer=stop.issuer,
        reason="conformance kit",
        at_ns=stop.cancel_at_ns,
    )
    sent = await session.send("the obeyed cancel again", again, run.own, payload=stop.payload)
    await session.quiet()
    return run.silence(
        catalog.CANCEL_REPEAT,
        [sent],
        partial(_nothing, what="the cancel it obeyed, the same bytes again"),
    )
