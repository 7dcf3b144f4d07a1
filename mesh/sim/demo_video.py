"""``trigger-mesh demo --real-video``: two of the demo's cameras really record.

Body cameras bwc-12a and bwc-12b of the triggering car get an FfmpegRecorder on FFmpeg's
test pattern (encoded to H.264, 640x360 at 15 fps: light on a 2-core machine) and a
signing key of their own, so each recording ends with a signed evidence manifest. The
other eighteen cameras stay simulated. At the end an officer's stop closes both
recordings, and each is checked as an auditor would (``recording verify --trust``).

Everything goes to one folder per run under the video directory: the cameras' files
(``<camera>/recordings/<UTC start>-<activation>/``), their keys and the trust store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mesh.camera.agent import CameraAgent
from mesh.camera.recording.base import Recorder, StopReason
from mesh.camera.recording.ffmpeg import FfmpegRecorder, FfmpegSettings
from mesh.camera.recording.source import Capture
from mesh.camera.recording.verify import (
    ManifestUnreadable,
    check_recording,
    read_manifest,
    scan_directory,
)
from mesh.media import parse_source
from mesh.security.checks import Security
from mesh.security.keys import load_public_key, new_gateway_key
from mesh.security.signing import PayloadSigner
from mesh.security.trust import KeyRole, TrustStore, trusted_key
from mesh.sim.camera_fleet import CameraSpec

REAL_VIDEO_CAMERAS = ("bwc-12a", "bwc-12b")
# Seconds of pre-event video the cameras hold before the scenario's first trigger: the
# buffer keeps up to 30 s; the demo waits for this much rather than the whole of it.
BUFFERED_BEFORE_START_S = 3.0
STOP_NOTE = "demo over: scene clear"


@dataclass
class RealVideo:
    directory: Path  # this run's folder
    trust: Path
    recorders: dict[str, FfmpegRecorder] = field(default_factory=dict)
    signers: dict[str, PayloadSigner] = field(default_factory=dict)

    def recorder_of(self, spec: CameraSpec) -> Recorder | None:
        return self.recorders.get(spec.camera_id)

    def security_of(self, spec: CameraSpec) -> Security | None:
        signer = self.signers.get(spec.camera_id)
        return None if signer is None else Security(signer=signer)


def prepare(video_dir: Path, run_id: str, ffmpeg: str = "ffmpeg") -> RealVideo:
    """This run's folder, a key per real camera (in the trust store beside it), and the
    recorders."""
    directory = video_dir / f"run-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{run_id}"
    directory.mkdir(parents=True)
    video = RealVideo(directory.absolute(), directory.absolute() / "trust.yaml")
    store = TrustStore()
    for camera_id in REAL_VIDEO_CAMERAS:
        keys = new_gateway_key(directory / "keys", camera_id)
        signer = PayloadSigner.from_file(keys.private)
        store.add(trusted_key(load_public_key(keys.public), KeyRole.CAMERA, camera_id, note="demo"))
        video.signers[camera_id] = signer
        capture = Capture(parse_source("lavfi:testsrc2"), encode=True, resolution="640x360", fps=15)
        video.recorders[camera_id] = FfmpegRecorder(
            camera_id,
            FfmpegSettings(
                capture, directory, buffer_s=30, min_free_bytes=64 * 2**20, ffmpeg=ffmpeg
            ),
        )
    store.save(video.trust)
    return video


async def buffered(video: RealVideo, timeout_s: float = 30.0) -> list[str]:
    """Wait until each real camera holds a few seconds of pre-event video; the problems
    of those that do not."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    waiting = dict(video.recorders)
    while waiting and loop.time() < deadline:
        for camera_id, recorder in list(waiting.items()):
            if recorder.buffered_s >= BUFFERED_BEFORE_START_S:
                del waiting[camera_id]
        await asyncio.sleep(0.1)
    return [
        f"{camera_id}: no pre-event video after {timeout_s:.0f} s"
        + ("" if recorder.fault is None else f" ({recorder.fault})")
        for camera_id, recorder in waiting.items()
    ]


async def stop_all(video: RealVideo, agents: Sequence[CameraAgent]) -> int:
    """The officer stops both recordings; how many were running."""
    stopped = 0
    for agent in agents:
        real = agent.identity.camera_id in video.recorders
        if real and await agent.stop_recording(StopReason.OFFICER, STOP_NOTE) is not None:
            stopped += 1
    return stopped


def verify_all(video: RealVideo) -> list[dict[str, Any]]:
    """Every recording of the run, checked against its signed manifest and the trust
    store as an auditor checks it."""
    trust = TrustStore.load(video.trust)
    found = []
    for camera_id in REAL_VIDEO_CAMERAS:
        for folder in sorted((video.directory / camera_id / "recordings").glob("*")):
            entry: dict[str, Any] = {"camera_id": camera_id, "directory": str(folder)}
            try:
                report = check_recording(
                    read_manifest(folder), scan_directory(folder), trust=trust, camera=camera_id
                )
            except ManifestUnreadable as exc:  # no manifest: the camera could not write one
                entry.update(verdict="no manifest", problem=str(exc))
                found.append(entry)
                continue
            manifest = report.manifest
            segments = [] if manifest is None else list(manifest.segments)
            entry.update(
                verdict=report.verdict.value,
                findings=[finding.message for finding in report.findings],
                segments=len(segments),
                seconds=round(
                    (int(segments[-1].last_frame_ns) - int(segments[0].first_frame_ns)) / 1e9, 1
                )
                if segments
                else 0.0,
                pre_event_kept_s=None if manifest is None else manifest.pre_event_kept_ms / 1000,
                stop_reason=None if manifest is None else manifest.stop_reason,
                manifest_sha256=report.manifest_sha256,
            )
            found.append(entry)
    return found


def problems_of(recordings: list[dict[str, Any]]) -> list[str]:
    problems = [
        f"{r['camera_id']} recording {r['directory']}: {r['verdict']}"
        + (f" ({'; '.join(r.get('findings') or [r.get('problem', '')])})")
        for r in recordings
        if r["verdict"] != "intact"
    ]
    for camera_id in REAL_VIDEO_CAMERAS:
        if not any(r["camera_id"] == camera_id for r in recordings):
            problems.append(f"{camera_id} made no recording")
    return problems
