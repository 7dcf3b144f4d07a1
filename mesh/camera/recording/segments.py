"""Segment files as they are written: bytes, hash and frame times kept as they go."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

from mesh.camera.recording.base import SegmentFile


class SegmentWriter:
    """One segment file, written chunk by chunk as the stream arrives (never held whole in
    memory), hashed as written. It may be renamed while open (the descriptor follows)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        self._hash = hashlib.sha256()
        self.bytes = 0
        self.frames: list[int] = []  # media times (ns) of the whole frames written
        self.synced_frames = 0  # frames[:synced_frames] are known to be on disk

    @property
    def first_ns(self) -> int | None:
        return self.frames[0] if self.frames else None

    def write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError:
            # A full disk takes part of a chunk, then refuses: cut the file back to what
            # was hashed, so that the segment's size and SHA-256 are those of its bytes.
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.bytes)
            raise
        self._hash.update(data)
        self.bytes += len(data)

    def frame(self, ns: int) -> None:
        self.frames.append(ns)

    def sync(self) -> None:
        assert self._fd is not None
        os.fsync(self._fd)
        self.synced_frames = len(self.frames)

    def close(self) -> SegmentFile:
        """Flush it to disk and close it: what it holds."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        first = self.frames[0] if self.frames else 0
        last = self.frames[-1] if self.frames else 0
        return SegmentFile(
            self.path.name, first, last, len(self.frames), self.bytes, self._hash.hexdigest()
        )

    def discard(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.path.unlink(missing_ok=True)


def segment_line(segment: SegmentFile) -> bytes:
    """One line of a recording's ``segments.jsonl``."""
    return (
        json.dumps(
            {
                "name": segment.name,
                "first_frame_ns": segment.first_frame_ns,
                "last_frame_ns": segment.last_frame_ns,
                "frames": segment.frames,
                "bytes": segment.bytes,
                "sha256": segment.sha256,
            },
            separators=(",", ":"),
        ).encode()
        + b"\n"
    )


def append_synced(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_synced(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temporary file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
