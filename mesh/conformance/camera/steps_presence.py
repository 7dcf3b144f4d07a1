"""Checks of the camera's presence, its moves and its last will."""

from __future__ import annotations

import asyncio
import time

from mesh.conformance.camera import judge, probes
from mesh.conformance.camera.context import CameraRun, NeedsError
from mesh.conformance.camera.process import run_once, with_position
from mesh.conformance.camera.scene import Scene
from mesh.conformance.mqtt import read_retained
from mesh.conformance.verdict import Finding, Outcome, failed, not_run, passed
from mesh.decide.cells import cell_of
from mesh.decide.geo import haversine_m
from mesh.protocol.codec import PayloadError, decode
from mesh.protocol.models import AckStatus, CameraPresence, CancelOutcome, GeoPoint

# A camera the kit starts has this long to announce itself (an interpreter, a JVM …).
START_WITHIN_S = 30.0
# Then this long for its other connections (own topic, cmd/all) to come up.
SETTLE_S = 1.5
# A presence "at" a point: within this of it.
NEAR_M = 100.0


async def presence_retained(run: CameraRun) -> Finding:
    topic = run.topics.presence(run.options.camera_id)
    inbox = run.session.inbox
    if run.process is not None:
        run.start_mark = inbox.mark()
        started_ns = time.time_ns()
        await run.process.start()
        seen = await inbox.wait(
            lambda s: s.topic == topic and _online(s.payload, since_ns=started_ns - 10**9),
            since=run.start_mark,
            timeout_s=START_WITHIN_S,
        )
        if seen is None:
            status = run.process.exit_status
            gone = "" if status is None else f" (it exited {status})"
            return failed(f"the camera started by --camera-cmd announced nothing{gone}")
        run.presence_payload = seen.payload
        kept = await read_retained(run.url, topic)
        await asyncio.sleep(SETTLE_S)
        if kept is None or not kept.retain:
            return failed("its presence came, but the broker keeps no retained copy")
        if not _online(kept.payload):
            return failed("the retained presence does not say online: true")
        took_s = (time.time_ns() - started_ns) / 1e9
        return passed(f"announced {took_s:.1f} s after start; retained, online")
    seen = await inbox.wait(lambda s: s.topic == topic, since=0, timeout_s=run.options.timeout_s)
    if seen is None:
        return failed(f"no retained presence on {topic} (is the camera running?)")
    if not seen.retain:
        # A camera that announced itself while the kit was subscribing reaches it live
        # (MQTT clears the flag for current subscribers): the broker's copy decides.
        kept = await read_retained(run.url, topic)
        if kept is None or not kept.retain:
            return failed("a presence came, but not as a retained message")
        seen = kept
    run.presence_payload = seen.payload
    if not _online(seen.payload):
        return failed("the retained presence does not say online: true (is the camera running?)")
    return passed("retained, online")


def _online(payload: bytes, since_ns: int = 0) -> bool:
    try:
        presence = decode(CameraPresence, payload)
    except PayloadError:
        return False
    return presence.online and presence.last_seen_ns >= since_ns


async def presence_payload(run: CameraRun) -> Finding:
    """Also decides the scene: the camera's unit and position, from the presence unless
    given (--unit, --position)."""
    options = run.options
    finding: Finding = not_run("no presence to look at")
    presence = None
    if run.presence_payload is not None:
        finding, presence = judge.presence_payload(
            run.presence_payload, options.camera_id, options.unit_id
        )
    run.presence = presence
    unit = options.unit_id or (presence.unit_id if presence is not None else None)
    position = options.position
    if position is None and presence is not None and presence.position is not None:
        position = GeoPoint(lat=presence.position.lat, lon=presence.position.lon)
    if unit is not None:
        run.scene_ = Scene(
            run.topics,
            options.camera_id,
            unit,
            position,
            options.issuer,
            options.other_issuer,
            run.tag,
        )
    run.recording_at_start = presence is not None and presence.recording
    fix = presence.position if presence is not None else None
    if finding.outcome is Outcome.PASS and options.position is not None and fix is not None:
        off = haversine_m(options.position.lat, options.position.lon, fix.lat, fix.lon)
        finding = passed(f"{finding.detail}; {off:.0f} m from --position")
    return finding


async def presence_on_move(run: CameraRun) -> Finding:
    options, scene = run.options, run.scene
    if options.move_cmd is None:
        return not_run("the kit cannot move the camera: give --move-cmd 'CMD … {lat} {lon}'")
    moved = scene.moved()
    if moved is None:
        raise NeedsError(not_run("the camera's position is not known"))
    mark = run.session.inbox.mark()
    problem = await run_once(with_position(options.move_cmd, moved.lat, moved.lon), 30.0)
    if problem is not None:
        return not_run(f"--move-cmd failed: {problem}")
    run.moved = True
    presence = await run.session.presence(
        lambda p: _at(p, moved), since=mark, timeout_s=options.timeout_s
    )
    if presence is None:
        return failed(
            f"no presence at {moved.lat:.6f},{moved.lon:.6f} within {options.timeout_s:g} s"
        )
    return passed(
        f"presence at {moved.lat:.6f},{moved.lon:.6f} (cell {cell_of(moved.lat, moved.lon)})"
    )


def _at(presence: CameraPresence, point: GeoPoint) -> bool:
    pos = presence.position
    return pos is not None and haversine_m(pos.lat, pos.lon, point.lat, point.lon) <= NEAR_M


async def cell_follows_move(run: CameraRun) -> Finding:
    options, scene, session = run.options, run.scene, run.session
    if options.move_cmd is None:
        return not_run("the kit cannot move the camera: give --move-cmd 'CMD … {lat} {lon}'")
    if not run.moved:
        return not_run("the camera was not moved (presence_on_move)")
    moved = scene.moved()
    assert moved is not None
    cell = cell_of(moved.lat, moved.lon)
    await asyncio.sleep(0.5)
    command = probes.record_start(scene, "moved", run.now(), origin=moved, radius_m=probes.RADIUS_M)
    sent = await session.send("a command in its new cell", command, run.topics.command_cell(cell))
    answer = await session.answer(sent)
    status = None if answer is None or answer.ack is None else answer.ack.status
    if answer is not None and status in judge.STARTING:
        finding = passed(f"heard on cell {cell}: {answer.describe()}")
    else:
        told = "no answer" if answer is None else f"answered {answer.describe()}"
        finding = failed(f"a command on its new cell {cell}: {told}")
    notes = await _move_back(run, sent_started=status is AckStatus.STARTED)
    return finding if not notes else Finding(finding.outcome, f"{finding.detail}; {notes}")


async def _move_back(run: CameraRun, *, sent_started: bool) -> str:
    """Leave the camera as it was: the kit's recording cancelled, back where it was."""
    scene, session, options = run.scene, run.session, run.options
    notes = []
    if sent_started:
        cancel = probes.record_cancel(scene, "moved", run.now())
        answer = await session.answer(await session.send("cancel after the move", cancel, run.own))
        outcome = None if answer is None or answer.cancel_ack is None else answer.cancel_ack.outcome
        if outcome is not CancelOutcome.STOPPED:
            notes.append("its recording after the move was not stopped")
    assert scene.position is not None
    assert options.move_cmd is not None
    back = scene.position
    mark = session.inbox.mark()
    problem = await run_once(with_position(options.move_cmd, back.lat, back.lon), 30.0)
    if problem is not None:
        notes.append(f"moving it back failed: {problem}")
    elif (
        await session.presence(lambda p: _at(p, back), since=mark, timeout_s=options.timeout_s)
        is None
    ):
        notes.append("no presence back at its first position")
    return "; ".join(notes)


async def presence_tracks_recording(run: CameraRun) -> Finding:
    run.need_recording()
    assert run.started_by is not None
    started = run.started_by.activation_id
    first = next((s for s in run.session.sent if s.activation_id == started), None)
    stop = run.stop_sent
    if first is None:
        return not_run("no start to look at")
    seen = run.session.presences()
    went_on = any(p is not None and p.recording and s.mono_s >= first.mono_s for s, p in seen)
    if stop is None:
        return (
            failed("no presence with recording: true")
            if not went_on
            else not_run("the recording was not stopped (cancel_stopped)")
        )
    went_off = any(p is not None and not p.recording and s.mono_s >= stop.mono_s for s, p in seen)
    if went_on and went_off:
        return passed("recording: true after the start, recording: false after the stop")
    missing = [
        w
        for w, ok in (("true after the start", went_on), ("false after the stop", went_off))
        if not ok
    ]
    return failed("no presence with recording: " + " and none with recording: ".join(missing))


async def presence_rate(run: CameraRun) -> Finding:
    times = [s.mono_s for s, _ in run.session.presences(run.start_mark) if not s.retain]
    return judge.presence_rate(times)


async def last_will_offline(run: CameraRun) -> Finding:
    process, session = run.process, run.session
    if process is None:
        return not_run(
            "the kit did not start the camera, so it cannot end its connection: give "
            "--camera-cmd (or --skip last_will_offline)"
        )
    topic = run.topics.presence(run.options.camera_id)
    mark = session.inbox.mark()
    killed = time.monotonic()
    await process.kill()
    wait_s = max(2 * run.options.timeout_s, 10.0)
    will = await session.presence(lambda p: not p.online, since=mark, timeout_s=wait_s)
    if will is None:
        return failed(f"killed with SIGKILL: no presence with online: false within {wait_s:g} s")
    took_ms = (time.monotonic() - killed) * 1000
    kept = await read_retained(run.url, topic)
    if kept is None or not kept.retain:
        return failed("the last will came, but the broker keeps no retained copy")
    found, presence = judge.presence_payload(kept.payload, run.options.camera_id, None)
    if presence is None:
        return failed(f"the retained last will: {found.detail}")
    if presence.online:
        return failed("the retained presence after the will says online: true")
    return passed(f"killed with SIGKILL: online: false {took_ms:.0f} ms later, retained")
