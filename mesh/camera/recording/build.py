"""A camera's recorder from its config, and what at start keeps the config from working.

The checks are the start's: ``trigger-mesh camera`` exits 2 on them, and ``trigger-mesh
config check`` reports them, each naming its key.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from mesh.camera.recording.ffmpeg import FfmpegRecorder, FfmpegSettings
from mesh.camera.recording.source import Capture
from mesh.config import CameraConfig, RecorderConfig
from mesh.media import SourceKind, parse_source


def recorder_problems(cfg: RecorderConfig) -> list[tuple[str, str]]:
    """(key, problem) for each thing on this machine that keeps the recorder from
    starting: a device that is not there, ffmpeg missing, a storage folder that is missing
    or cannot be written. None for the simulation."""
    if cfg.backend != "ffmpeg" or cfg.source is None:
        return []
    problems: list[tuple[str, str]] = []
    source = parse_source(cfg.source)
    if source.kind is SourceKind.DEVICE:
        why = _device_problem(source.text)
        if why is not None:
            problems.append(("recorder.source", why))
    if shutil.which(cfg.ffmpeg) is None:
        problems.append(("recorder.ffmpeg", f"{cfg.ffmpeg}: not found (apt-get install -y ffmpeg)"))
    why = _storage_problem(Path(cfg.storage.dir))
    if why is not None:
        problems.append(("recorder.storage.dir", why))
    return problems


def _device_problem(device: str) -> str | None:
    try:
        mode = os.stat(device).st_mode
    except FileNotFoundError:
        return f"{device}: no such device (is the camera plugged in?)"
    except OSError as exc:
        return f"{device}: {exc.strerror or exc}"
    if not stat.S_ISCHR(mode):
        return f"{device}: not a character device"
    if not os.access(device, os.R_OK | os.W_OK):
        return f"{device}: no permission to open it (add the user to group video)"
    return None


def _storage_problem(folder: Path) -> str | None:
    if not folder.is_dir():
        return f"directory {folder.absolute()} does not exist (create it first)"
    try:  # as root, access() says yes to a read-only folder; a real file says the truth
        fd, name = tempfile.mkstemp(dir=folder, prefix=".write-test-")
    except OSError as exc:
        return f"directory {folder.absolute()} is not writable ({exc.strerror or exc})"
    os.close(fd)
    os.unlink(name)
    return None


def ffmpeg_settings(camera: CameraConfig) -> FfmpegSettings:
    cfg = camera.recorder
    assert cfg.source is not None
    capture = Capture(
        parse_source(cfg.source),
        encode=cfg.encode,
        resolution=cfg.resolution,
        fps=cfg.fps,
        segment_s=cfg.segment_s,
        preset=cfg.preset,
        bitrate=cfg.bitrate,
    )
    return FfmpegSettings(
        capture,
        Path(cfg.storage.dir),
        buffer_s=cfg.buffer_s,
        segment_s=cfg.segment_s,
        record_s=camera.record_s,
        max_bytes=cfg.storage.max_bytes,
        min_free_bytes=cfg.storage.min_free_bytes,
        source_timeout_s=cfg.source_timeout_s,
        ffmpeg=cfg.ffmpeg,
    )


def build_ffmpeg_recorder(camera: CameraConfig) -> FfmpegRecorder:
    return FfmpegRecorder(camera.camera_id, ffmpeg_settings(camera))
