"""A camera agent that really records, end to end: the real gateway on a real mosquitto, a
trigger, and a camera whose recorder is the FfmpegRecorder on FFmpeg's test source. The
`started` ack carries the media times of frames on disk, the gateway logs the recording,
and the agent's shutdown closes it with its files."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.camera.agent import CameraAgent, CameraIdentity
from mesh.camera.recording.ffmpeg import FfmpegRecorder, FfmpegSettings
from mesh.camera.recording.source import Capture
from mesh.media import parse_source
from mesh.protocol.models import (
    AckStatus,
    CameraRole,
    GeoPoint,
    OutcomeStatus,
    RecordingEvent,
    RecordingStopReason,
)
from tests.harness import CENTER, running_mesh, wait_until
from tests.integration.test_recording_e2e import recordings_logged, started_activation
from tests.recorder_tools import until


async def test_a_camera_with_ffmpeg_acks_started_from_frames_on_disk(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, ffmpeg: tuple[str, str]
) -> None:
    log = tmp_path / "log.db"
    recorder = FfmpegRecorder(
        "bwc-ffmpeg",
        FfmpegSettings(
            Capture(parse_source("lavfi:testsrc2"), encode=True, resolution="320x240", fps=25),
            tmp_path,
            buffer_s=5,
            min_free_bytes=0,
            ffmpeg=ffmpeg[0],
        ),
    )
    async with running_mesh(mosquitto.url, topics, log, specs=()) as mesh:
        cam = CameraAgent(
            CameraIdentity("bwc-ffmpeg", "car-30", CameraRole.BODY),
            url=mesh.url,
            topics=mesh.topics,
            position=GeoPoint(lat=CENTER.lat, lon=CENTER.lon),
            recorder=recorder,
            client_id=f"t-ffmpeg-{uuid.uuid4().hex[:6]}",
        )
        await mesh.start_camera(cam)
        serving = mesh.tasks[-1]
        ring = recorder._ring  # the agent runs the recorder: its buffer fills
        await until(lambda: len(ring) >= 3, 30, "3 s buffered")
        before = time.time_ns()
        aid = await started_activation(mesh)
        record = await mesh.watcher.final_record(aid, 15)
        assert record is not None
        outcome = next(c for c in record.cameras if c.camera_id == "bwc-ffmpeg")
        assert outcome.status is OutcomeStatus.STARTED
        ack = next(a for a in cam.acks_sent if a.status is AckStatus.STARTED)
        running = recorder.current
        assert running is not None
        assert running.directory is not None
        assert ack.recording_started_at_ns == running.started_at_ns > before
        assert ack.pre_event_kept_s == running.pre_event_kept_s >= 2.0
        assert running.activations == [aid]
        await wait_until(lambda: len(recordings_logged(log, "bwc-ffmpeg")) == 1)
        await until(lambda: len(running.segments) >= 5, 10, "recorded segments")
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        assert recorder.current is None
        assert running.stop_reason is not None
        await wait_until(lambda: len(recordings_logged(log, "bwc-ffmpeg")) == 2)
        stop = recordings_logged(log, "bwc-ffmpeg")[1].recording
        assert (stop.event, stop.reason) == (RecordingEvent.STOP, RecordingStopReason.SHUTDOWN)
        names = sorted(p.name for p in running.directory.glob("*.ts"))
        assert names == [s.name for s in running.segments]
        # The gateway's log holds each segment's hash, as computed while it was written.
        assert [(f.name, f.sha256) for f in stop.files] == [
            (s.name, s.sha256) for s in running.segments
        ]
