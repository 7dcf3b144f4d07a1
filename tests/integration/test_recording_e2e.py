"""Recordings end to end (issue 19, items 3 and 4), with a real mosquitto, the real gateway and
the camera agent: the `started` ack waits for the recorder; a recorder fault is a `rejected`
ack and presence says so; an officer's stop through the CLI and the local API reaches the
gateway's log with its reason and note; forged `recording` messages are refused; a recording
goes on through a broker outage and a gateway restart, and its stop is still logged.
"""

from __future__ import annotations

import asyncio
import json
import stat
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from bridge.mqtt.client import LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.camera.agent import CameraAgent, CameraIdentity
from mesh.camera.recording.base import (
    FaultCode,
    RecorderFault,
    RecordingStart,
    StopReason,
)
from mesh.camera.recording.simulated import SimulatedRecorder
from mesh.clock import NS
from mesh.decide.policy import Policy
from mesh.dispatch.watch import ActivationWatcher
from mesh.gateway.daemon import Gateway
from mesh.journal.records import RecordingEntry, RecordKind
from mesh.journal.store import read_records
from mesh.protocol.codec import encode
from mesh.protocol.models import (
    AckStatus,
    CameraRole,
    GeoPoint,
    OutcomeStatus,
    ReceiptOutcome,
    RecordingEvent,
    RecordingMessage,
    RecordingStopReason,
    TriggerKind,
)
from mesh.security.signing import PayloadSigner
from tests.chaos_tools import ChaosProxy
from tests.harness import CENTER, Mesh, event, make_gateway, running_mesh, wait_until
from tests.integration.test_security_e2e import ISSUER, signed_mesh

FAST = Policy.model_validate({"defaults": {"ack_deadline_ms": 150, "max_retries": 2}})


@dataclass(eq=False)
class GatedRecorder(SimulatedRecorder):
    """A recorder whose start returns only when the test opens the gate (the agent's
    ordering is under test, not a recorder): it then starts at that moment."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    asked: list[str] = field(default_factory=list)

    async def start(
        self, activation_id: str, pre_event_s: int, command_at_ns: int, *, issuer: str = ""
    ) -> RecordingStart:
        self.asked.append(activation_id)
        await self.gate.wait()
        return self.start_now(activation_id, pre_event_s, time.time_ns(), issuer=issuer)


def camera(
    mesh: Mesh,
    camera_id: str,
    recorder: SimulatedRecorder | None = None,
    *,
    unit: str = "car-30",
    control_socket: Path | None = None,
) -> CameraAgent:
    return CameraAgent(
        CameraIdentity(camera_id, unit, CameraRole.BODY),
        url=mesh.url,
        topics=mesh.topics,
        position=GeoPoint(lat=CENTER.lat, lon=CENTER.lon),
        recorder=recorder or SimulatedRecorder(powered_on_ns=time.time_ns() - 600 * NS),
        client_id=f"t-{camera_id}-{uuid.uuid4().hex[:6]}",
        control_socket=control_socket,
    )


def recordings_logged(log: Path, camera_id: str) -> list[RecordingEntry]:
    entries = [
        RecordingEntry.model_validate_json(r.body)
        for r in read_records(log, kinds=(RecordKind.RECORDING.value,))
    ]
    return [e for e in entries if e.recording.camera_id == camera_id]


async def started_activation(
    mesh: Mesh,
    trigger_kind: TriggerKind = TriggerKind.WEAPON_DRAW,
    signer: PayloadSigner | None = None,
) -> str:
    trigger = event(trigger_kind, source_id=uuid.uuid4().hex[:8])
    await mesh.send(trigger, signer=signer)
    receipt = await mesh.receipt(trigger)
    assert receipt.outcome is ReceiptOutcome.ACCEPTED, receipt
    assert receipt.activation_id is not None
    return receipt.activation_id


async def test_started_is_acked_only_once_the_recorder_has_started(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """The gateway's retry arrives while the recorder is still starting: nothing is acked
    until the start returns, the recorder is asked once, and the retry is then answered
    as the duplicate it is (already_recording), not started again."""
    log = tmp_path / "log.db"
    async with running_mesh(mosquitto.url, topics, log, specs=(), policy=FAST) as mesh:
        recorder = GatedRecorder(powered_on_ns=time.time_ns() - 600 * NS)
        cam = camera(mesh, "bwc-gated", recorder)
        await mesh.start_camera(cam)
        aid = await started_activation(mesh)
        await wait_until(lambda: recorder.asked == [aid])
        # The retry to the camera's own topic is read and waits: the start is under way.
        await wait_until(lambda: mesh.gateway.coordinator.counters["retries"] >= 1)
        await wait_until(lambda: cam.intake_depth >= 1)
        assert cam.acks_sent == []
        assert not recorder.is_recording(time.time_ns())
        released_ns = time.time_ns()
        recorder.gate.set()
        record = await mesh.watcher.final_record(aid, 15)
        assert record is not None
        outcome = next(c for c in record.cameras if c.camera_id == "bwc-gated")
        assert outcome.status is OutcomeStatus.STARTED
        await wait_until(lambda: cam.intake_depth == 0 and len(cam.acks_sent) >= 2)
        first, *rest = cam.acks_sent
        assert first.status is AckStatus.STARTED
        running = recorder.current
        assert running is not None
        # The ack carries what the recorder measured, after the gate opened.
        assert first.recording_started_at_ns == running.started_at_ns >= released_ns
        assert first.pre_event_kept_s == running.pre_event_kept_s
        assert {a.status for a in rest} == {AckStatus.ALREADY_RECORDING}
        assert recorder.asked == [aid]
        assert recorder.recordings == 1
        # And the gateway logged the recording's start, for this activation.
        await wait_until(lambda: len(recordings_logged(log, "bwc-gated")) == 1)
        (start,) = recordings_logged(log, "bwc-gated")
        assert start.recording.event is RecordingEvent.START
        assert start.recording.activation_ids == (aid,)
        assert start.effect == "accepted"


async def test_a_recorder_fault_is_a_rejected_ack_and_presence_says_so(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db", specs=()) as mesh:
        recorder = SimulatedRecorder(powered_on_ns=time.time_ns() - 600 * NS)
        cam = camera(mesh, "bwc-faulty", recorder)
        await mesh.start_camera(cam)
        recorder.set_fault(RecorderFault(FaultCode.NO_FRAMES, "no frame from /dev/video0 for 5 s"))

        def fault_seen() -> str | None:
            presence = mesh.gateway.presence.get("bwc-faulty")
            fault = None if presence is None else presence.recorder_fault
            return None if fault is None else f"{fault.code}: {fault.reason}"

        await wait_until(lambda: fault_seen() == "no_frames: no frame from /dev/video0 for 5 s")
        aid = await started_activation(mesh)
        record = await mesh.watcher.final_record(aid, 15)
        assert record is not None
        outcome = next(c for c in record.cameras if c.camera_id == "bwc-faulty")
        assert outcome.status is OutcomeStatus.REJECTED
        rejected = [a for a in cam.acks_sent if a.activation_id == aid]
        assert rejected
        assert {a.status for a in rejected} == {AckStatus.REJECTED}
        assert rejected[0].reason == "recorder_fault: no_frames: no frame from /dev/video0 for 5 s"
        assert recorder.recordings == 0
        # Recovered: presence says so again, and the next activation starts it.
        recorder.set_fault(None)
        await wait_until(lambda: fault_seen() is None)
        aid = await started_activation(mesh, TriggerKind.MANUAL)
        record = await mesh.watcher.final_record(aid, 15)
        assert record is not None
        outcome = next(c for c in record.cameras if c.camera_id == "bwc-faulty")
        assert outcome.status is OutcomeStatus.STARTED


async def cli(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mesh",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_an_officer_stop_through_the_cli_reaches_the_gateway_log(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    log = tmp_path / "log.db"
    sock = tmp_path / "cam.sock"
    async with running_mesh(mosquitto.url, topics, log, specs=()) as mesh:
        cam = camera(mesh, "bwc-officer", control_socket=sock)
        await mesh.start_camera(cam)
        assert stat.S_IMODE(sock.stat().st_mode) == 0o600  # the socket is the credential
        aid = await started_activation(mesh)
        record = await mesh.watcher.final_record(aid, 15)
        assert record is not None
        assert cam.recorder.is_recording(time.time_ns())
        # The CLI requires a reason.
        code, out = await cli("recording", "stop", "--socket", str(sock), "--reason", "  ")
        assert code == 2, out
        assert "--reason" in out
        assert cam.recorder.is_recording(time.time_ns())
        note = "scene secured, subject in custody"
        code, out = await cli("recording", "stop", "--socket", str(sock), "--reason", note)
        assert code == 0, out
        assert aid in out
        assert not cam.recorder.is_recording(time.time_ns())

        def stop_logged() -> list[RecordingEntry]:
            return [
                e
                for e in recordings_logged(log, "bwc-officer")
                if e.recording.event is RecordingEvent.STOP
            ]

        await wait_until(lambda: len(stop_logged()) == 1)
        (stop,) = stop_logged()
        assert stop.effect == "accepted"
        assert stop.recording.reason is RecordingStopReason.OFFICER
        assert stop.recording.note == note
        assert stop.recording.activation_ids == (aid,)
        assert stop.recording.stopped_at_ns is not None
        assert stop.recording.files == ()
        assert stop.recording.manifest_sha256 is None
        rows = [
            r
            for r in read_records(log, kinds=(RecordKind.RECORDING.value,))
            if '"event":"stop"' in r.body
        ]
        assert [r.activation_id for r in rows] == [aid]
        # Nothing left to stop: exit 3. The API answers status too.
        code, out = await cli("recording", "stop", "--socket", str(sock), "--reason", "again")
        assert code == 3, out
        from mesh.camera.control import request

        status = await request(sock, {"op": "status"})
        assert status["ok"] is True
        assert status["recording"] is False
        bad = await request(sock, {"op": "erase"})
        assert bad["ok"] is False
        assert "unknown op" in bad["error"]
    # The agent gone, its socket file is gone, and the CLI says no agent listens (75).
    assert not sock.exists()
    code, out = await cli("recording", "stop", "--socket", str(sock), "--reason", "x")
    assert code == 75, out


async def test_a_forged_recording_message_is_refused(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """A stop for bwc-12a signed by another camera's key, by the gateway's, by nobody's,
    unsigned, or bwc-7a's own message put on bwc-12a's topic: none is taken as bwc-12a's
    word. The genuine stop is."""
    log = tmp_path / "log.db"
    async with signed_mesh((mosquitto, topics), log) as (mesh, keys):
        aid = await started_activation(mesh, signer=keys.dispatch_signer)
        record = await mesh.watcher.final_record(aid, 15)
        assert record is not None
        victim = mesh.agents["bwc-12a"]
        assert victim.recorder.is_recording(time.time_ns())
        running = victim.recorder.current
        assert running is not None
        now = time.time_ns()
        forged = RecordingMessage(
            camera_id="bwc-12a",
            unit_id="car-12",
            recording_id=running.recording_id,
            activation_ids=(aid,),
            event=RecordingEvent.STOP,
            started_at_ns=running.started_at_ns,
            first_frame_ns=running.first_frame_ns,
            pre_event_kept_s=running.pre_event_kept_s,
            stopped_at_ns=now,
            reason=RecordingStopReason.OFFICER,
            note="forged: nothing to see",
        )
        topic = topics.recording(ISSUER, "bwc-12a")
        other = forged.model_copy(update={"camera_id": "bwc-7a"})
        for message in (
            encode(forged),  # unsigned
            PayloadSigner(keys.cameras["bwc-7a"]).seal(forged).to_bytes(),  # another camera
            PayloadSigner(keys.gateway).seal(forged).to_bytes(),  # the gateway's key
            PayloadSigner(keys.stranger).seal(forged).to_bytes(),  # nobody's: not parsed
            PayloadSigner(keys.cameras["bwc-7a"]).seal(other).to_bytes(),  # not its topic
        ):
            await mesh.driver.publish(topic, message)
        counters = mesh.gateway.counters
        await wait_until(
            lambda: (
                (
                    counters["rejected.recording.unsigned"],
                    counters["rejected.recording.wrong_signer"],
                    counters["rejected.recording.unknown_key"],
                    counters["rejected.recording.id_mismatch"],
                )
                == (1, 2, 1, 1)
            )
        )
        assert victim.recorder.is_recording(time.time_ns())
        # The camera's own stop is taken; the forgeries that could be read are evidence.
        await victim.stop_recording(StopReason.OFFICER, "genuine")
        await wait_until(
            lambda: any(e.effect == "accepted" for e in recordings_logged(log, "bwc-12a")[1:])
        )
        logged = recordings_logged(log, "bwc-12a")
        accepted = [e for e in logged if e.effect == "accepted"]
        assert [(e.recording.event, e.recording.note) for e in accepted] == [
            (RecordingEvent.START, ""),
            (RecordingEvent.STOP, "genuine"),
        ]
        assert accepted[1].jws is not None  # the signed bytes, for an auditor
        untrusted = sorted(e.effect for e in logged if e.effect != "accepted")
        assert untrusted == [
            "untrusted:unsigned",
            "untrusted:wrong_signer",
            "untrusted:wrong_signer",
        ]


async def test_a_recording_survives_a_broker_outage_and_a_gateway_restart(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """Everyone reaches the broker through a proxy, which is then cut (refusing new
    connections): the broker is gone for the camera and the gateway alike. Meanwhile the
    gateway is stopped and a new one started on the same log, and the officer stops the
    recording. The recording ran through all of it; its stop is queued and, once the
    broker is back, reaches the new gateway's log."""
    log = tmp_path / "log.db"
    proxy = ChaosProxy((mosquitto.url.host, mosquitto.url.port))
    await proxy.start()
    tag = uuid.uuid4().hex[:6]

    def gateway() -> asyncio.Task[None]:
        gw = make_gateway(proxy.url, topics, log, client_id=f"t{tag}-gw")
        gateways.append(gw)
        return asyncio.create_task(gw.run())

    gateways: list[Gateway] = []
    gw_task = gateway()
    watcher = ActivationWatcher(mosquitto.url, topics, client_id=f"t{tag}-watch")
    driver = MqttLink(mosquitto.url, LinkOptions(f"t{tag}-driver", persistent_session=False))
    recorder = SimulatedRecorder(powered_on_ns=time.time_ns() - 600 * NS, record_s=600)
    cam = CameraAgent(
        CameraIdentity("bwc-outage", "car-30", CameraRole.BODY),
        url=proxy.url,
        topics=topics,
        position=GeoPoint(lat=CENTER.lat, lon=CENTER.lon),
        recorder=recorder,
        client_id=f"t{tag}-cam",
    )
    tasks = [
        asyncio.create_task(watcher.run()),
        asyncio.create_task(driver.run(lambda _m: None)),
        asyncio.create_task(cam.run()),
    ]
    try:
        await asyncio.wait_for(gateways[0].ready.wait(), 15)
        await driver.wait_up(15)
        await watcher.link.wait_up(15)
        await wait_until(lambda: gateways[0].presence.get("bwc-outage") is not None)
        trigger = event(TriggerKind.WEAPON_DRAW, source_id=tag)
        await driver.publish(topics.trigger(trigger.unit_id), encode(trigger))
        receipt = await watcher.receipt(trigger.event_id, 10)
        assert receipt is not None
        assert receipt.activation_id is not None
        aid = receipt.activation_id
        record = await watcher.final_record(aid, 15)
        assert record is not None
        assert next(c for c in record.cameras if c.camera_id == "bwc-outage").status is (
            OutcomeStatus.STARTED
        )
        await wait_until(lambda: len(recordings_logged(log, "bwc-outage")) == 1)  # its start
        started = recorder.current
        assert started is not None

        proxy.cut("refuse")  # the broker is gone
        await wait_until(lambda: not cam.link.is_up and not gateways[0].link.is_up)
        gw_task.cancel()
        await asyncio.gather(gw_task, return_exceptions=True)
        gw_task = gateway()  # a new gateway, on the same log, while the broker is still away
        assert recorder.is_recording(time.time_ns())
        assert recorder.current is started
        stopped = await cam.stop_recording(StopReason.OFFICER, "suspect left, scene clear")
        assert stopped is started
        assert stopped.stopped_at_ns is not None
        assert cam.recordings_pending == 1  # kept until the broker has it

        await proxy.restore()
        await asyncio.wait_for(gateways[1].ready.wait(), 30)
        await wait_until(lambda: cam.recordings_pending == 0, timeout_s=30)
        await wait_until(lambda: len(recordings_logged(log, "bwc-outage")) == 2, timeout_s=30)
        stop = recordings_logged(log, "bwc-outage")[1]
        assert stop.effect == "accepted"
        assert stop.recording.event is RecordingEvent.STOP
        assert stop.recording.recording_id == started.recording_id
        assert stop.recording.reason is RecordingStopReason.OFFICER
        assert stop.recording.note == "suspect left, scene clear"
        # It recorded through the outage and the restart: from before the cut to the stop.
        assert stop.recording.started_at_ns == started.started_at_ns
        assert stop.recording.stopped_at_ns == stopped.stopped_at_ns
        assert json.loads(stop.model_dump_json())["recording"]["activation_ids"] == [aid]
    finally:
        for task in [*tasks, gw_task]:
            task.cancel()
        await asyncio.gather(*tasks, gw_task, return_exceptions=True)
        await proxy.close()


async def test_an_agent_stopped_mid_recording_reports_a_shutdown_stop(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """The agent's service is stopped while it records: the recording is closed with reason
    `shutdown`, and the stop reaches the gateway before the agent says goodbye."""
    log = tmp_path / "log.db"
    async with running_mesh(mosquitto.url, topics, log, specs=()) as mesh:
        recorder = SimulatedRecorder(powered_on_ns=time.time_ns() - 600 * NS)
        cam = camera(mesh, "bwc-shutdown", recorder)
        await mesh.start_camera(cam)
        serving = mesh.tasks[-1]
        aid = await started_activation(mesh)
        await wait_until(lambda: len(recordings_logged(log, "bwc-shutdown")) == 1)
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        assert not recorder.is_recording(time.time_ns())
        await wait_until(lambda: len(recordings_logged(log, "bwc-shutdown")) == 2)
        stop = recordings_logged(log, "bwc-shutdown")[1].recording
        assert (stop.event, stop.reason, stop.activation_ids) == (
            RecordingEvent.STOP,
            RecordingStopReason.SHUTDOWN,
            (aid,),
        )
        # And its goodbye came after: the gateway sees it offline.
        await wait_until(
            lambda: (p := mesh.gateway.presence.get("bwc-shutdown")) is not None and not p.online
        )


async def test_the_camera_daemon_serves_its_control_socket_from_its_config(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """`trigger-mesh camera --config` with `control_socket` (relative to the file), and
    `recording stop --camera-config` finding it there: the daemon's recording stops and
    the gateway logs the officer's reason. A socket in a folder that does not exist
    stops the daemon at once, exit 2, naming it."""
    log = tmp_path / "log.db"
    config = tmp_path / "cam" / "camera.yaml"
    config.parent.mkdir()
    settings = {
        "camera_id": "bwc-daemon",
        "unit": "car-30",
        "broker": f"mqtt://127.0.0.1:{mosquitto.port}",
        "topic_prefix": topics.prefix,
        "position": {"lat": CENTER.lat, "lon": CENTER.lon},
        "control_socket": "agent.sock",
    }
    config.write_text(json.dumps(settings))  # YAML is a superset of JSON
    broken = tmp_path / "broken.yaml"
    broken.write_text(json.dumps({**settings, "control_socket": "no/such/dir/agent.sock"}))
    code, out = await cli("camera", "--config", str(broken))
    assert code == 2, out
    assert "no/such/dir/agent.sock" in out
    async with running_mesh(mosquitto.url, topics, log, specs=()) as mesh:
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mesh", "camera", "--config", str(config), "--log-format", "json"
        )
        try:
            await wait_until(lambda: mesh.gateway.presence.get("bwc-daemon") is not None, 20)
            assert (config.parent / "agent.sock").exists()
            aid = await started_activation(mesh)
            record = await mesh.watcher.final_record(aid, 15)
            assert record is not None
            note = "traffic stop over, driver released"
            code, out = await cli(
                "recording", "stop", "--camera-config", str(config), "--reason", note
            )
            assert code == 0, out

            def stops() -> list[RecordingEntry]:
                logged = recordings_logged(log, "bwc-daemon")
                return [e for e in logged if e.recording.event is RecordingEvent.STOP]

            await wait_until(lambda: len(stops()) == 1)
            (stop,) = stops()
            assert (stop.recording.reason, stop.recording.note) == (
                RecordingStopReason.OFFICER,
                note,
            )
            assert stop.recording.activation_ids == (aid,)
        finally:
            daemon.terminate()
            await asyncio.wait_for(daemon.wait(), 20)
    assert not (config.parent / "agent.sock").exists()


async def test_a_stolen_camera_key_cannot_flood_the_log_with_recording_messages(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    """A thief with bwc-12a's own signing key publishes 100 signed `recording` starts with
    fresh recording ids for a real activation, then 100 for an activation id no gateway
    issued. The log keeps at most the per-camera cap for the real one (the genuine start
    among them) and none for the made-up one; the rest is counted. The camera's genuine
    stop is still logged after the flood."""
    from mesh.gateway.coordinator import _RECORDINGS_PER_CAMERA

    log = tmp_path / "log.db"
    async with signed_mesh((mosquitto, topics), log) as (mesh, keys):
        aid = await started_activation(mesh, signer=keys.dispatch_signer)
        record = await mesh.watcher.final_record(aid, 15)
        assert record is not None
        victim = mesh.agents["bwc-12a"]
        running = victim.recorder.current
        assert running is not None
        await wait_until(lambda: len(recordings_logged(log, "bwc-12a")) == 1)  # its start
        thief = PayloadSigner(keys.cameras["bwc-12a"])
        topic = topics.recording(ISSUER, "bwc-12a")
        made_up = "a-" + uuid.uuid4().hex[:16]
        counters = mesh.gateway.coordinator.counters
        gateway_counters = mesh.gateway.counters

        def flood(activation_id: str) -> list[bytes]:
            now = time.time_ns()
            return [
                thief.seal(
                    RecordingMessage(
                        camera_id="bwc-12a",
                        unit_id="car-12",
                        recording_id=f"r-thief-{activation_id}-{i}",
                        activation_ids=(activation_id,),
                        event=RecordingEvent.START,
                        started_at_ns=now,
                        first_frame_ns=now,
                        pre_event_kept_s=0.0,
                    )
                ).to_bytes()
                for i in range(100)
            ]

        def handled() -> int:
            """The thief's messages logged, counted over the cap or unknown, or shed unread."""
            return len(recordings_logged(log, "bwc-12a")) + sum(
                counters[k]
                for k in (
                    "recordings.over_cap",
                    "recordings.unknown_activation",
                    "acks.dropped_rate",
                )
            )

        for activation_id in (aid, made_up):
            before = handled()
            for payload in flood(activation_id):
                await mesh.driver.publish(topic, payload)
            await wait_until(lambda b=before: handled() == b + 100)  # type: ignore[misc]
        dropped = gateway_counters["acks.dropped_rate"]
        assert dropped < 50, dropped  # the camera's ack rate let most of the flood through
        rows = [
            r
            for r in read_records(log, kinds=(RecordKind.RECORDING.value,))
            if '"camera_id":"bwc-12a"' in r.body
        ]
        assert len(rows) == _RECORDINGS_PER_CAMERA
        assert {r.activation_id for r in rows} == {aid}
        assert not [r for r in rows if made_up in r.body]
        assert counters["recordings.over_cap"] >= 100 - _RECORDINGS_PER_CAMERA - dropped
        assert counters["recordings.unknown_activation"] >= 1
        assert counters["recordings.over_cap"] + counters[
            "recordings.unknown_activation"
        ] + dropped == 200 - (_RECORDINGS_PER_CAMERA - 1)
        # The genuine start was logged before the flood; the genuine stop is logged after it.
        await victim.stop_recording(StopReason.OFFICER, "genuine")
        await wait_until(lambda: counters["recordings.stop"] == 1)
        logged = recordings_logged(log, "bwc-12a")
        genuine = [e for e in logged if e.recording.recording_id == running.recording_id]
        assert [(e.recording.event, e.effect) for e in genuine] == [
            (RecordingEvent.START, "accepted"),
            (RecordingEvent.STOP, "accepted"),
        ]
        assert genuine[1].recording.note == "genuine"
        assert len(logged) == _RECORDINGS_PER_CAMERA + 1
