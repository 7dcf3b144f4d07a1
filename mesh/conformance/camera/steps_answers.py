"""Checks over every answer of the run, made once the camera has said all it will."""

from __future__ import annotations

from mesh.conformance.camera import judge
from mesh.conformance.camera.context import CameraRun
from mesh.conformance.verdict import Finding, not_run


async def ack_format(run: CameraRun) -> Finding:
    unit = run.scene_.unit_id if run.scene_ is not None else run.options.unit_id
    pairs = run.session.pairs(cancels=False)
    if not pairs:
        return not_run("the camera sent no ack to look at")
    return judge.ack_format(pairs, run.options.camera_id, unit)


async def cancel_ack_format(run: CameraRun) -> Finding:
    pairs = run.session.pairs(cancels=True)
    if not pairs:
        return not_run("the camera sent no cancel_ack to look at")
    return judge.cancel_ack_format(pairs, run.options.camera_id)


async def acks_signed(run: CameraRun) -> Finding:
    answers = run.session.run_answers()
    if not answers:
        return not_run("the camera sent no answer to look at")
    return judge.signed(answers)
