"""A camera agent that really records, end to end: the real gateway on a real mosquitto, a
trigger, and a camera whose recorder is the FfmpegRecorder on FFmpeg's test source. The
`started` ack carries the media times of frames on disk, the gateway logs the recording,
and the agent's shutdown closes it with its files."""

from __future__ import annotations

import asyncio
import hashlib
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
from mesh.security.checks import Security
from mesh.security.signing import PayloadSigner
from tests.harness import CENTER, running_mesh, wait_until
from tests.integration.test_recording_e2e import recordings_logged, started_activation
from tests.integration.test_recording_verify import cli
from tests.recorder_tools import until


async def test_a_camera_with_ffmpeg_acks_started_from_frames_on_disk(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, ffmpeg: tuple[str, str]
) -> None:
    log = tmp_path / "log.db"
    keys, trust = tmp_path / "keys", tmp_path / "trust.yaml"
    code, out = cli(
        "keys", "new", "--role", "camera", "--id", "bwc-ffmpeg", "--out", keys, "--trust", trust
    )
    assert code == 0, out
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
            security=Security(signer=PayloadSigner.from_file(keys / "bwc-ffmpeg.key")),
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
        # The camera signed a manifest of the footage, and the stop in the gateway's
        # hash-chained log carries its hash: verify checks the files against both.
        manifest = running.directory / "manifest.json"
        assert stop.manifest_sha256 == hashlib.sha256(manifest.read_bytes()).hexdigest()
        code, out = cli(
            "recording", "verify", running.directory, "--trust", trust,
            "--camera", "bwc-ffmpeg", "--manifest-sha256", stop.manifest_sha256,
        )  # fmt: skip
        assert code == 0, out
        # One segment of the footage edited afterwards: named, and the run fails.
        victim = running.directory / running.segments[1].name
        data = bytearray(victim.read_bytes())
        data[-100] ^= 0xFF
        victim.write_bytes(bytes(data))
        code, out = cli("recording", "verify", running.directory, "--trust", trust)
        assert code == 1, out
        assert running.segments[1].name in out, out
