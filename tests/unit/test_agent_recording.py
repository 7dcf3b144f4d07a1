"""The camera agent and its recorder (issue 19), without a broker: the `started` ack waits for
the recorder, one command at a time; a recorder fault is a `rejected` ack and a presence
field; the `recording` messages, their bound on files, and the outbox's bound."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.camera.agent import RECORDING_OUTBOX_MAX, CameraAgent, CameraIdentity
from mesh.camera.recording.base import (
    FaultCode,
    RecorderFault,
    Recording,
    RecordingStart,
    RecordingStopped,
    SegmentFile,
    StopReason,
)
from mesh.camera.recording.simulated import SimulatedRecorder
from mesh.clock import NS
from mesh.protocol.models import (
    MAX_RECORDING_FILES,
    AckStatus,
    CameraRole,
    RecordingEvent,
    RecordingMessage,
    RecordingStopReason,
)
from mesh.security.checks import Security
from tests.unit.test_spec_camera_memory import ORIGIN, T0, Clock, FakeLink, unsigned_command

TOPICS = Topics("t/mesh/v2")


@dataclass(eq=False)
class GatedRecorder(SimulatedRecorder):
    """Starts only once the test opens the gate."""

    gate: asyncio.Event = field(default_factory=asyncio.Event)
    asked: list[str] = field(default_factory=list)

    async def start(
        self, activation_id: str, pre_event_s: int, command_at_ns: int, *, issuer: str = ""
    ) -> RecordingStart:
        self.asked.append(activation_id)
        await self.gate.wait()
        return self.start_now(activation_id, pre_event_s, command_at_ns, issuer=issuer)


def agent_with(recorder: SimulatedRecorder) -> CameraAgent:
    agent = CameraAgent(
        CameraIdentity("bwc-7a", "car-7", CameraRole.BODY),
        url=BrokerUrl.parse("mqtt://127.0.0.1:1"),
        topics=TOPICS,
        position=ORIGIN,
        clock=Clock(),
        recorder=recorder,
        security=Security(),
    )
    agent.link = FakeLink()  # type: ignore[assignment]
    return agent


@pytest.fixture
def gated() -> Iterator[tuple[CameraAgent, GatedRecorder]]:
    recorder = GatedRecorder(powered_on_ns=T0 - 600 * NS)
    agent = agent_with(recorder)
    yield agent, recorder
    if agent._presence_task is not None:
        agent._presence_task.cancel()


async def test_no_ack_before_the_start_returns_and_no_second_start(
    gated: tuple[CameraAgent, GatedRecorder],
) -> None:
    agent, recorder = gated
    first = asyncio.create_task(agent.handle(unsigned_command(), direct=False, received_ns=T0))
    await asyncio.wait_for(_until(lambda: recorder.asked == ["a-1"]), 5)
    # The same activation again, directly (the gateway's retry), while the start is pending.
    retry = asyncio.create_task(
        agent.handle(unsigned_command(attempt=1), direct=True, received_ns=T0 + NS)
    )
    await asyncio.sleep(0)  # let it run as far as it can: it waits for the first
    assert not retry.done()
    assert agent.acks_sent == []
    recorder.gate.set()
    started, repeat = await asyncio.wait_for(asyncio.gather(first, retry), 5)
    assert started is not None
    assert repeat is not None
    assert (started.status, repeat.status) == (AckStatus.STARTED, AckStatus.ALREADY_RECORDING)
    assert started.recording_started_at_ns == T0
    assert started.pre_event_kept_s == 30.0
    assert recorder.asked == ["a-1"]
    assert recorder.recordings == 1
    # The start was reported to the issuer once, after the ack.
    assert [(m.event, m.activation_ids) for m in agent.recordings_sent] == [
        (RecordingEvent.START, ("a-1",))
    ]


async def _until(check: object) -> None:
    assert callable(check)
    while not check():
        await asyncio.sleep(0)


async def test_a_recorder_fault_is_a_rejected_ack_every_time_and_in_presence() -> None:
    recorder = SimulatedRecorder(powered_on_ns=T0 - 600 * NS)
    agent = agent_with(recorder)
    recorder.set_fault(RecorderFault(FaultCode.STORAGE_ERROR, "/var/lib/cam: read-only"))
    presence = agent.presence(online=True)
    assert presence.recorder_fault is not None
    assert (presence.recorder_fault.code, presence.recorder_fault.reason) == (
        "storage_error",
        "/var/lib/cam: read-only",
    )
    # Each attempt of a trusted command is answered, past the refusals' 10-a-second budget.
    for attempt in range(15):
        ack = await agent.handle(unsigned_command(attempt), direct=True, received_ns=T0)
        assert ack is not None
        assert ack.status is AckStatus.REJECTED
        assert ack.reason == "recorder_fault: storage_error: /var/lib/cam: read-only"
        assert ack.recording_started_at_ns is None
    assert agent.counters["recorder.fault.storage_error"] == 15
    assert recorder.recordings == 0
    assert agent.recordings_sent == []
    recorder.set_fault(None)
    assert agent.presence(online=True).recorder_fault is None
    ack = await agent.handle(unsigned_command(20), direct=True, received_ns=T0)
    assert ack is not None
    assert ack.status is AckStatus.STARTED  # no claim was made by the rejections
    if agent._presence_task is not None:
        agent._presence_task.cancel()


async def test_a_stop_message_lists_at_most_its_bound_of_files() -> None:
    recorder = SimulatedRecorder(powered_on_ns=T0 - 600 * NS)
    agent = agent_with(recorder)
    await agent.handle(unsigned_command(), direct=False, received_ns=T0)
    running = recorder.current
    assert running is not None
    running.segments = [
        SegmentFile(
            name=f"seg-{n:06d}.mkv",
            first_frame_ns=T0 + n * NS,
            last_frame_ns=T0 + (n + 1) * NS - 1,
            frames=30,
            bytes=1000,
            sha256=f"{n:064x}",
        )
        for n in range(MAX_RECORDING_FILES + 10)
    ]
    running.manifest_sha256 = "ab" * 32
    await agent.stop_recording(StopReason.OFFICER, "  ")
    stop = agent.recordings_sent[-1]
    assert stop.event is RecordingEvent.STOP
    assert stop.reason is RecordingStopReason.OFFICER
    assert len(stop.files) == MAX_RECORDING_FILES
    assert stop.files[0].name == "seg-000000.mkv"
    assert stop.files_omitted == 10
    assert stop.manifest_sha256 == "ab" * 32
    # What went into the outbox is the message, to the issuer's recording topic.
    topic, payload = agent._recording_outbox[-1]
    assert topic == TOPICS.recording("gw-car-12", "bwc-7a")
    assert RecordingMessage.model_validate_json(payload) == stop
    assert len(payload) <= 65_536
    if agent._presence_task is not None:
        agent._presence_task.cancel()


async def test_the_outbox_keeps_the_newest_up_to_its_bound() -> None:
    """The link down for a long time: recordings go on, the outbox keeps the newest 256
    messages and counts what it dropped."""
    recorder = SimulatedRecorder(powered_on_ns=T0 - 600 * NS)
    agent = agent_with(recorder)
    clock = agent.clock
    assert isinstance(clock, Clock)
    count = RECORDING_OUTBOX_MAX // 2 + 20  # a start and a stop each
    for n in range(count):
        command = unsigned_command(ttl_s=600).model_copy(update={"activation_id": f"a-{n}"})
        await agent.handle(command, direct=False, received_ns=clock.now)
        await agent.stop_recording(StopReason.OFFICER, f"stop {n}")
        clock.now += NS
    assert agent.recordings_pending == RECORDING_OUTBOX_MAX
    assert agent.counters["recordings.dropped_outbox"] == 2 * count - RECORDING_OUTBOX_MAX
    newest = RecordingMessage.model_validate_json(agent._recording_outbox[-1][1])
    assert (newest.note, newest.activation_ids) == (f"stop {count - 1}", (f"a-{count - 1}",))
    if agent._presence_task is not None:
        agent._presence_task.cancel()


def test_the_wire_reasons_are_the_recorders() -> None:
    assert [r.value for r in StopReason] == [r.value for r in RecordingStopReason]
    assert time.time_ns() > T0  # the fixtures' times are in the past


@dataclass(eq=False)
class BrokenRecorder(SimulatedRecorder):
    """A recorder with a bug: its start raises something that is not a RecorderFault."""

    async def start(
        self, activation_id: str, pre_event_s: int, command_at_ns: int, *, issuer: str = ""
    ) -> RecordingStart:
        raise ValueError("segment index out of range")


async def test_a_recorder_bug_is_a_rejected_ack_not_a_dead_agent() -> None:
    agent = agent_with(BrokenRecorder(powered_on_ns=T0 - 600 * NS))
    for attempt in range(2):
        ack = await agent.handle(unsigned_command(attempt), direct=True, received_ns=T0)
        assert ack is not None
        assert ack.status is AckStatus.REJECTED
        assert ack.reason == (
            "recorder_fault: recorder_error: ValueError: segment index out of range"
        )
    assert agent.counters["recorder.fault.recorder_error"] == 2
    if agent._presence_task is not None:
        agent._presence_task.cancel()


async def test_an_event_listener_that_raises_does_not_stop_the_recorder() -> None:
    recorder = SimulatedRecorder(powered_on_ns=T0 - 600 * NS)
    heard: list[object] = []

    def broken(event: object) -> None:
        raise RuntimeError("listener bug")

    recorder.listen(broken)
    recorder.listen(heard.append)
    start = await recorder.start("a-1", 30, T0)
    assert start.started_at_ns == T0
    assert recorder.is_recording(T0)
    assert len(heard) == 1  # the next listener still heard the start


async def test_the_manifest_names_the_device_and_its_hash_goes_in_the_stop(
    tmp_path: Path,
) -> None:
    """A recording with files gets a manifest signed by the camera's key, naming the
    device as configured (make, model, serial; the source without its password), before
    its stop message, which carries the manifest's hash."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from mesh.protocol.jws import parse
    from mesh.security.signing import PayloadSigner

    recorder = SimulatedRecorder(powered_on_ns=T0 - 600 * NS)
    recorder.device_source = "rtsp://admin:s3cret@10.0.0.5/live"
    agent = CameraAgent(
        CameraIdentity("bwc-7a", "car-7", CameraRole.BODY, model="Axon Body 4", serial="X4-0042"),
        url=BrokerUrl.parse("mqtt://127.0.0.1:1"),
        topics=TOPICS,
        position=ORIGIN,
        clock=Clock(),
        recorder=recorder,
        security=Security(signer=PayloadSigner(Ed25519PrivateKey.generate())),
    )
    agent.link = FakeLink()  # type: ignore[assignment]
    (tmp_path / "0000000000.ts").write_bytes(b"\x47" * 188)
    digest = hashlib.sha256(b"\x47" * 188).hexdigest()
    recording = Recording(
        recording_id="20261204T000000.000Z-a-1", camera_id="bwc-7a", activations=["a-1"],
        command_at_ns=T0, started_at_ns=T0, first_frame_ns=T0 - NS, pre_event_kept_s=1.0,
        directory=tmp_path,
        segments=[SegmentFile("0000000000.ts", T0 - NS, T0, 25, 188, digest)],
        stopped_at_ns=T0 + NS, stop_reason=StopReason.OFFICER, stop_note="done",
    )  # fmt: skip
    agent._recording_claims[recording.recording_id] = [("a-1", "gw-car-7")]
    agent._on_recorder_event(RecordingStopped(recording))
    manifest = (tmp_path / "manifest.json").read_bytes()
    device = json.loads(parse(manifest).payload_bytes)["device"]
    assert device == {"model": "Axon Body 4", "serial": "X4-0042", "source": "rtsp://10.0.0.5/live"}
    (stop,) = agent.recordings_sent
    assert stop.manifest_sha256 == hashlib.sha256(manifest).hexdigest()
    if agent._presence_task is not None:
        agent._presence_task.cancel()
