"""Checks of what a camera must refuse, sent while it is idle: each of these commands is
about the camera (in range, or its unit targeted) and sent to its own topic, so a camera
that took any of them for genuine would start; ``refused_commands_start_nothing`` then
looks at the first genuine command's answer."""

from __future__ import annotations

import json
from functools import partial

from mesh.conformance import wire
from mesh.conformance.camera import catalog, judge, probes
from mesh.conformance.camera.context import CameraRun
from mesh.conformance.verdict import Finding, Outcome, failed
from mesh.protocol.codec import encode
from mesh.protocol.jws import unb64url
from mesh.protocol.models import PROTOCOL_VERSION, AckStatus, RecordStart


async def wrong_version_refused(run: CameraRun) -> Finding:
    scene, session = run.scene, run.session
    command = probes.near(scene, "badv", run.now())
    other = PROTOCOL_VERSION - 1  # a v1 command: the migration's case
    payload = session.seal(command, fields={"v": other})
    sent = await session.send(f"a v{other} command", command, run.own, payload=payload)
    run.before_start.append(sent.probe)
    await session.quiet()
    return run.silence(
        catalog.WRONG_VERSION,
        [sent],
        partial(_nothing, what=f"a command in range with v: {other}"),
    )


def _nothing(answers: list[judge.Answer], *, what: str) -> Finding:
    return judge.unanswered(answers, what)


async def time_type_refused(run: CameraRun) -> Finding:
    scene, session = run.scene, run.session
    command = probes.near(scene, "badtime", run.now())
    flipped = probes.flipped_times(json.loads(encode(command)))
    fields = {k: v for k, v in flipped.items() if k.endswith("_ns") or k == "trigger"}
    sample = type(fields["issued_at_ns"]).__name__
    payload = session.seal(command, fields=fields)
    sent = await session.send("a command with its times retyped", command, run.own, payload=payload)
    run.before_start.append(sent.probe)
    await session.quiet()
    kind = "strings" if sample == "str" else "numbers"
    what = f"a command in range whose *_ns times are JSON {kind}"
    return run.silence(catalog.TIME_TYPE, [sent], partial(_nothing, what=what))


def _padded(run: CameraRun, command: RecordStart, n: int) -> bytes:
    return run.session.seal(command, fields={probes.PADDING_FIELD: "x" * n})


async def accepts_16k_unknown_fields(run: CameraRun) -> Finding:
    scene, session = run.scene, run.session
    command = probes.far(scene, "big", run.now())
    payload = probes.sized(partial(_padded, run, command), probes.MAX_COMMAND_BYTES)
    sent = await session.send("a 16 KiB command", command, run.own, payload=payload)
    run.before_start.append(sent.probe)
    answer = await session.answer(sent)
    return judge.status(
        answer,
        AckStatus.OUT_OF_RANGE,
        f"a {len(payload):,}-byte command out of range, with a member "
        f"{probes.PADDING_FIELD!r} of {len(payload) // 1024} KiB",
        session.timeout_s,
    )


async def too_large_dropped(run: CameraRun) -> Finding:
    scene, session = run.scene, run.session
    command = probes.far(scene, "huge", run.now())
    payload = probes.oversized(partial(_padded, run, command), probes.MAX_COMMAND_BYTES)
    sent = await session.send("a command over 16 KiB", command, run.own, payload=payload)
    run.before_start.append(sent.probe)
    await session.quiet()
    what = f"a {len(payload):,}-byte command out of range"
    return run.silence(catalog.TOO_LARGE, [sent], partial(_nothing, what=what))


# --- signed runs ------------------------------------------------------------------------
async def unsigned_refused(run: CameraRun) -> Finding:
    scene, session = run.scene, run.session
    command = probes.near(scene, "unsigned", run.now())
    sent = await session.send("an unsigned command", command, run.own, signer=None, refusal=True)
    run.before_start.append(sent.probe)
    return judge.refusal(
        await session.answer(sent), "unsigned", "an unsigned command in range", session.timeout_s
    )


async def bad_signature_dropped(run: CameraRun) -> Finding:
    scene, session = run.scene, run.session
    command = probes.near(scene, "forged", run.now())
    genuine = session.seal(command)
    payload = wire.forge(genuine, {"radius_m": command.radius_m + 1.0})
    sent = await session.send(
        "a command with a bad signature", command, run.own, payload=payload, refusal=True
    )
    run.before_start.append(sent.probe)
    await session.quiet()
    return run.silence(
        catalog.BAD_SIGNATURE,
        [sent],
        partial(
            judge.unverifiable,
            code="bad_signature",
            what="a signed command in range, its radius changed after signing",
            answer_allowed=wire.UNVERIFIABLE_ANSWERED,
        ),
    )


async def bad_jws_dropped(run: CameraRun) -> Finding:
    scene, session = run.scene, run.session
    command = probes.near(scene, "algnone", run.now())
    kid = json.loads(unb64url(json.loads(session.seal(command))["protected"]))["kid"]
    payload = wire.with_header(
        session.seal(command), {"alg": "none", "kid": kid, "typ": "trigger-mesh+json"}
    )
    sent = await session.send(
        "a command under alg none", command, run.own, payload=payload, refusal=True
    )
    run.before_start.append(sent.probe)
    await session.quiet()
    return run.silence(
        catalog.BAD_JWS,
        [sent],
        partial(
            judge.unverifiable,
            code="bad_jws",
            what="a genuine signed command in range, its protected header changed to alg none",
            answer_allowed=wire.UNVERIFIABLE_ANSWERED,
        ),
    )


async def unknown_key_dropped(run: CameraRun) -> Finding:
    scene, session = run.scene, run.session
    command = probes.near(scene, "stranger", run.now())
    sent = await session.send(
        "a command signed by an unknown key",
        command,
        run.own,
        signer=session.keys.attacker,
        refusal=True,
    )
    run.before_start.append(sent.probe)
    await session.quiet()
    return run.silence(
        catalog.UNKNOWN_KEY,
        [sent],
        partial(
            judge.unverifiable,
            code="unknown_key",
            what="a command in range signed by a key the camera does not know",
            answer_allowed=wire.UNVERIFIABLE_ANSWERED,
        ),
    )


async def wrong_signer_refused(run: CameraRun) -> Finding:
    scene, session = run.scene, run.session
    if session.keys.other is not None:
        # Another trusted gateway's key, naming the kit's issuer.
        command = probes.near(scene, "wrongsigner", run.now())
        what = f"a command of {scene.issuer} signed by {scene.other_issuer}'s key"
        signer = "other"
    else:
        # The kit issuer's key, naming another issuer: the same check from the other side.
        command = probes.near(scene, "wrongsigner", run.now(), issuer=scene.other_issuer)
        what = f"a command of {scene.other_issuer} signed by {scene.issuer}'s key"
        signer = "gateway"
    sent = await session.send(what, command, run.own, signer=signer, refusal=True)
    run.before_start.append(sent.probe)
    return judge.refusal(await session.answer(sent), "wrong_signer", what, session.timeout_s)


async def issued_in_future_refused(run: CameraRun) -> Finding:
    scene, session = run.scene, run.session
    now = run.now()
    command = probes.near(scene, "future", now, issued_at_ns=now + int(probes.FUTURE_S * 1e9))
    what = f"a command issued {probes.FUTURE_S:g} s ahead"
    sent = await session.send(what, command, run.own, refusal=True)
    run.before_start.append(sent.probe)
    return judge.refusal(await session.answer(sent), "issued_in_future", what, session.timeout_s)


async def validity_too_long_refused(run: CameraRun) -> Finding:
    scene, session = run.scene, run.session
    command = probes.near(scene, "toolong", run.now(), life_s=probes.TOO_LONG_S)
    what = f"a command valid for {probes.TOO_LONG_S:g} s"
    sent = await session.send(what, command, run.own, refusal=True)
    run.before_start.append(sent.probe)
    return judge.refusal(await session.answer(sent), "validity_too_long", what, session.timeout_s)


async def replayed_refused(run: CameraRun) -> Finding:
    scene, session = run.scene, run.session
    command = probes.far(scene, "replay", run.now())
    payload = session.seal(command)
    first = await session.send("a command out of range", command, run.own, payload=payload)
    answer = await session.answer(first)
    found = judge.status(answer, AckStatus.OUT_OF_RANGE, "its first copy", session.timeout_s)
    if found.outcome is not Outcome.PASS:
        return failed(f"{found.detail} (so the replay was not sent)")
    again = await session.send(
        "the same signed bytes again", command, run.own, payload=payload, refusal=True
    )
    return judge.refusal(
        await session.answer(again),
        "replayed",
        "the same signed command again on its own topic",
        session.timeout_s,
    )
