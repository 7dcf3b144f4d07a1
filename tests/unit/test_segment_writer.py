"""A segment's size and SHA-256 are those of the bytes on disk, even when the disk fills
in the middle of a chunk (a short write, then a refusal)."""

from __future__ import annotations

import hashlib
import resource
import signal
from pathlib import Path

import pytest

from mesh.camera.recording.segments import SegmentWriter


def test_a_write_the_disk_cuts_short_leaves_the_file_as_hashed(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes the kernel write what fits, then refuse (EFBIG), as a full
    # disk does with ENOSPC; SIGXFSZ would otherwise end the process.
    limit = 1000
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    writer = SegmentWriter(tmp_path / "0000000000.ts")
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        writer.frame(1)
        writer.write(b"a" * 600)
        with pytest.raises(OSError, match="too large"):
            writer.write(b"b" * 600)  # 400 bytes fit, then the refusal
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old_handler)
    segment = writer.close()
    data = (tmp_path / "0000000000.ts").read_bytes()
    assert (segment.bytes, len(data)) == (600, 600)
    assert segment.sha256 == hashlib.sha256(data).hexdigest()
