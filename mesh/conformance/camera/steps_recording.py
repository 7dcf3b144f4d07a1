"""Checks of what a camera does with genuine commands: start, join, answer directly, stay
silent on shared topics. They build on each other: the first command starts a recording
(``started_in_range``), the next ones find the camera recording."""

from __future__ import annotations

from functools import partial

from mesh.conformance.camera import catalog, judge, probes
from mesh.conformance.camera.context import CameraRun, NeedsError
from mesh.conformance.camera.judge import Answer
from mesh.conformance.verdict import Finding, failed, not_run, passed
from mesh.protocol.models import AckStatus, RecordStart

# A unit no camera of the run belongs to.
NOBODY_UNIT = "conformance-elsewhere"


def _answered(answer: Answer | None, what: str, waited_s: float) -> Finding:
    if answer is None:
        return failed(f"{what}: no answer within {waited_s:g} s")
    return passed(f"{what}: answered {answer.describe()}")


async def cell_topic(run: CameraRun) -> Finding:
    cell = run.need_cell()
    session = run.session
    command = probes.near(run.scene, "start", run.now())
    payload = session.seal(command)
    sent = await session.send(
        f"a command in range on cell {cell}",
        command,
        run.topics.command_cell(cell),
        payload=payload,
    )
    answer = await session.answer(sent)
    _note_first(run, command, payload, answer)
    return _answered(answer, f"a command in range on {sent.topic}", session.timeout_s)


def _note_first(
    run: CameraRun, command: RecordStart, payload: bytes, answer: Answer | None
) -> None:
    run.first_answer = answer
    if answer is not None and answer.ack is not None and answer.ack.status in judge.STARTING:
        run.started_by, run.started_payload = command, payload
        run.claimed("start", command.issuer, answer)


async def started_in_range(run: CameraRun) -> Finding:
    session = run.session
    where = "on its cell's topic"
    if run.first_answer is None:
        # Not heard on its cell (or no cell known): the same command on its own topic.
        command = probes.near(run.scene, "start", run.now())
        if any(s.activation_id == command.activation_id for s in session.sent):
            command = probes.retry(command)
        payload = session.seal(command)
        sent = await session.send("a command in range", command, run.own, payload=payload)
        answer = await session.answer(sent)
        _note_first(run, command, payload, answer)
        where = "on its own topic"
    found = judge.started(run.first_answer, f"a command in range {where}", session.timeout_s)
    if run.recording_at_start and run.first_answer is not None:
        return failed(f"{found.detail} (the camera was recording when the kit started)")
    return found


async def refused_commands_start_nothing(run: CameraRun) -> Finding:
    if run.recording_at_start:
        return not_run("the camera was recording when the kit started (its presence said so)")
    answer = run.first_answer
    if answer is None or answer.ack is None:
        return not_run("the first genuine command got no answer to tell")
    names = ", ".join(run.before_start) or "none"
    if answer.ack.status is AckStatus.STARTED:
        return passed(
            f"after {len(run.before_start)} commands refused or dropped ({names}), the next "
            "genuine command found it idle and started it"
        )
    return failed(
        f"the first genuine command was answered {answer.describe()}: one of the commands "
        f"before it ({names}) was acted on"
    )


async def unit_topic(run: CameraRun) -> Finding:
    unit = run.need_unit()
    session = run.session
    command = probes.unit_targeted(run.scene, "unit", run.now())
    sent = await session.send(f"a command to unit {unit}", command, run.topics.command_unit(unit))
    answer = await session.answer(sent)
    run.answers_by_name["unit"] = answer
    run.claimed("unit", command.issuer, answer)
    return _answered(answer, f"a command targeting its unit on {sent.topic}", session.timeout_s)


async def already_recording(run: CameraRun) -> Finding:
    run.need_recording()
    if "unit" not in run.answers_by_name:
        raise NeedsError(not_run("no second activation was sent (unit_topic)"))
    return judge.status(
        run.answers_by_name["unit"],
        AckStatus.ALREADY_RECORDING,
        "a second activation while recording",
        run.session.timeout_s,
    )


async def all_topic(run: CameraRun) -> Finding:
    session = run.session
    command = probes.near(run.scene, "all", run.now())
    sent = await session.send("a command in range on cmd/all", command, run.topics.command_all())
    answer = await session.answer(sent)
    run.claimed("all", command.issuer, answer)
    return _answered(answer, f"a command about it on {sent.topic}", session.timeout_s)


async def distinct_issuers(run: CameraRun) -> Finding:
    session, scene = run.session, run.scene
    unit = run.need_unit()
    if run.signed and session.keys.other is None:
        return not_run(
            "needs a second gateway key the camera trusts (--other-gateway-key) to issue the "
            "same activation id as another gateway"
        )
    command = probes.unit_targeted(scene, "unit", run.now(), issuer=scene.other_issuer)
    sent = await session.send(
        f"the same activation id from {scene.other_issuer}",
        command,
        run.topics.command_unit(unit),
        signer="other",
    )
    answer = await session.answer(sent)
    run.claimed("unit", scene.other_issuer, answer)
    what = f"activation {command.activation_id} again, from {scene.other_issuer}, on its unit topic"
    if answer is None:
        return failed(f"{what}: ignored (taken for a duplicate of {scene.issuer}'s)")
    if answer.ack is None or answer.ack.status not in judge.STARTING:
        return failed(f"{what}: answered {answer.describe()}")
    if answer.issuer != scene.other_issuer:
        return failed(f"{what}: answered on {answer.topic}, not to {scene.other_issuer}")
    return passed(f"{what}: decided afresh, {answer.describe()}")


async def duplicate_shared_ignored(run: CameraRun) -> Finding:
    run.need_recording()
    unit = run.need_unit()
    command, payload = run.started_by, run.started_payload
    assert command is not None
    assert payload is not None
    session = run.session
    topic = run.topics.command_unit(unit)
    sent = await session.send("the starting command again", command, topic, payload=payload)
    await session.quiet()
    what = f"the command that started it, the same bytes again on {topic}"
    return run.silence(catalog.DUPLICATE_SHARED, [sent], partial(_nothing, what=what))


def _nothing(answers: list[Answer], *, what: str) -> Finding:
    return judge.unanswered(answers, what)


async def silent_when_not_concerned(run: CameraRun) -> Finding:
    scene, session, topics = run.scene, run.session, run.topics
    now = run.now()
    sent = []
    if scene.cell is not None:
        command = probes.far(scene, "far-cell", now)
        sent.append(
            await session.send("far, on its cell", command, topics.command_cell(scene.cell))
        )
    if scene.unit_id is not None:
        command = probes.far(scene, "far-unit", now, units=(NOBODY_UNIT,))
        sent.append(
            await session.send(
                "another unit's, on its unit", command, topics.command_unit(scene.unit_id)
            )
        )
    command = probes.far(scene, "far-all", now)
    sent.append(await session.send("far, on cmd/all", command, topics.command_all()))
    await session.quiet()
    what = f"{len(sent)} commands not about it ({', '.join(s.probe for s in sent)})"
    return run.silence(catalog.NOT_CONCERNED, sent, partial(_nothing, what=what))


async def duplicate_own_answered(run: CameraRun) -> Finding:
    run.need_recording()
    assert run.started_by is not None
    session = run.session
    command = probes.retry(run.started_by)
    sent = await session.send("a retry of the starting command", command, run.own)
    return judge.status(
        await session.answer(sent),
        AckStatus.ALREADY_RECORDING,
        f"attempt {command.attempt} of the command it is recording for, on its own topic",
        session.timeout_s,
    )


async def out_of_range_direct(run: CameraRun) -> Finding:
    scene, session = run.scene, run.session
    command = probes.far(scene, "outside", run.now())
    sent = await session.send("a command out of range", command, run.own)
    answer = await session.answer(sent)
    if (
        answer is not None
        and answer.ack is not None
        and answer.ack.status is AckStatus.OUT_OF_RANGE
    ):
        run.out_of_range_name = "outside"
    assert command.origin is not None
    expected = scene.distance_m(command.origin)
    found = judge.distance_named(answer, expected, "a command 5 km away, on its own topic")
    if answer is None:
        return failed(
            f"a command 5 km away, on its own topic: no answer within {session.timeout_s:g} s"
        )
    return found


async def expired_rejected(run: CameraRun) -> Finding:
    scene, session = run.scene, run.session
    command = probes.expired(scene, "expired", run.now())
    sent = await session.send("an expired command", command, run.own, refusal=True)
    answer = await session.answer(sent)
    run.claimed("expired", command.issuer, answer)
    ago_s = probes.EXPIRED_ISSUED_S - probes.EXPIRED_LIFE_S
    return judge.expired(
        answer, f"a command in range that expired {ago_s:g} s ago", session.timeout_s
    )
