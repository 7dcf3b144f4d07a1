"""Recordings a previous run left open (power lost, the process killed): closed at the
next start, as ``interrupted``, so that they still get a manifest and a `stop` message.

A recording is open on disk when its ``recording.json`` has no ``stop_reason``. Its closed
segments are in ``segments.jsonl`` (one fsynced line each); the segment being written
when the run ended is the next ``NNNNNNNNNN.ts`` file, whose tail may be a partial frame.
That file is read with the recorder's own MPEG-TS splitter, cut back to its last whole
frame (the bytes past it cannot be played and were never acknowledged as anything), and
hashed. Nothing else is changed or removed.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import structlog

from mesh.camera.recording.base import Recording, SegmentFile, StopReason
from mesh.camera.recording.mpegts import Data, FrameDone, TsSplitter, ticks_to_ns

INTERRUPTED_NOTE = (
    "the camera stopped without closing this recording (power lost or the agent killed); "
    "closed at its next start"
)
_log = structlog.get_logger("mesh.recorder")


@dataclass(frozen=True)
class WholeFrames:
    frames: list[int]  # media times (ns) of the whole frames
    length: int  # bytes up to the end of the last whole frame


def whole_frames(data: bytes, near_ns: int) -> WholeFrames:
    """The whole frames at the start of an MPEG-TS segment the recorder wrote (it begins
    with its PAT, PMT and a keyframe), and where the last of them ends."""
    splitter = TsSplitter(segment_s=10**6)  # one segment: never cut
    frames: list[int] = []
    placed = length = 0
    for piece in splitter.feed(data):
        if isinstance(piece, Data):
            placed += len(piece.data)
        elif isinstance(piece, FrameDone):
            frames.append(ticks_to_ns(piece.pts, near_ns))
            length = placed
    return WholeFrames(frames, length)


def open_recordings(recordings_dir: Path, camera_id: str, now_ns: int) -> list[Recording]:
    """Close every recording left open under ``recordings_dir`` (``interrupted``),
    rewriting its ``recording.json``; the recordings closed, oldest first. One that cannot
    be read is logged and left as it is."""
    closed = []
    for directory in sorted(p for p in recordings_dir.iterdir() if p.is_dir()):
        try:
            recording = _close(directory, camera_id, now_ns)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            _log.error("recording_not_recovered", directory=str(directory), error=str(exc))
            continue
        if recording is not None:
            closed.append(recording)
    return closed


def _close(directory: Path, camera_id: str, now_ns: int) -> Recording | None:
    from mesh.camera.recording.segments import segment_line, sync_dir, write_synced

    meta_path = directory / "recording.json"
    if not meta_path.exists():
        return None
    meta = json.loads(meta_path.read_text())
    if meta.get("stop_reason") is not None:
        return None
    # recording.json's own temporary copy, if the end came while it was rewritten: not
    # evidence, and `recording verify` would name it as an extra file.
    (directory / "recording.json.tmp").unlink(missing_ok=True)
    segments = [_segment(json.loads(line)) for line in _lines(directory / "segments.jsonl")]
    listed = {s.name for s in segments}
    # The segment being written, and (if the end came between the two) a next one.
    for path in sorted(directory.glob("[0-9]" * 10 + ".ts")):
        if path.name in listed or int(path.stem) < len(segments):
            continue
        segment = _cut_to_whole_frames(path, now_ns)
        segments.append(segment)
        from mesh.camera.recording.segments import append_synced

        append_synced(directory / "segments.jsonl", segment_line(segment))
    started = int(meta["started_at_ns"])
    last = max((s.last_frame_ns for s in segments if s.frames), default=started)
    recording = Recording(
        recording_id=str(meta["recording_id"]),
        camera_id=str(meta.get("camera_id", camera_id)),
        activations=[str(a) for a in meta["activations"]],
        command_at_ns=int(meta["command_at_ns"]),
        started_at_ns=started,
        first_frame_ns=int(meta["first_frame_ns"]),
        pre_event_kept_s=float(meta["pre_event_kept_s"]),
        directory=directory,
        segments=segments,
        stopped_at_ns=max(last, started),
        stop_reason=StopReason.INTERRUPTED,
        stop_note=INTERRUPTED_NOTE,
        issuers=[str(i) for i in meta.get("issuers", [])],
    )
    meta.update(
        segments=len(segments),
        stopped_at_ns=recording.stopped_at_ns,
        stop_reason=StopReason.INTERRUPTED.value,
        stop_note=INTERRUPTED_NOTE,
    )
    write_synced(meta_path, json.dumps(meta, indent=2).encode() + b"\n")
    sync_dir(directory)
    _log.warning(
        "recording_recovered",
        recording=recording.recording_id,
        segments=len(segments),
        reason=StopReason.INTERRUPTED.value,
    )
    return recording


def _lines(path: Path) -> list[str]:
    if not path.exists():
        return []
    # A line cut short by the end is not a segment the recorder finished writing down.
    return [line for line in path.read_text().splitlines() if line.endswith("}")]


def _segment(doc: dict[str, object]) -> SegmentFile:
    return SegmentFile(
        name=str(doc["name"]),
        first_frame_ns=int(str(doc["first_frame_ns"])),
        last_frame_ns=int(str(doc["last_frame_ns"])),
        frames=int(str(doc["frames"])),
        bytes=int(str(doc["bytes"])),
        sha256=str(doc["sha256"]),
    )


def _cut_to_whole_frames(path: Path, near_ns: int) -> SegmentFile:
    data = path.read_bytes()
    whole = whole_frames(data, near_ns)
    if whole.length < len(data):
        with open(path, "r+b") as handle:
            handle.truncate(whole.length)
            handle.flush()
            os.fsync(handle.fileno())
        data = data[: whole.length]
    frames = whole.frames
    return SegmentFile(
        name=path.name,
        first_frame_ns=frames[0] if frames else 0,
        last_frame_ns=frames[-1] if frames else 0,
        frames=len(frames),
        bytes=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
    )
