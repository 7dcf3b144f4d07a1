"""A task cancelled in the same turn as the read it waits for completes must end.

On Python 3.11 ``asyncio.wait_for`` returns the read's result instead of raising
CancelledError when both happen in one turn of the loop (CPython gh-86296, fixed in
3.12): a reading loop then never stops. It hung CI: the FFmpeg recorder's pump, which
reads ffmpeg's stdout every few milliseconds, kept running after its task was cancelled,
and the test awaiting that task waited forever. ``asyncio.timeout`` does not lose the
cancel; ruff bans ``asyncio.wait_for`` in the product (pyproject.toml, TID251).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import cast

import pytest

from mesh.camera.recording.ffmpeg import FfmpegRecorder, FfmpegSettings
from mesh.camera.recording.source import Capture
from mesh.media import parse_source


class _Process:
    """What the pump reads from a subprocess: its stdout."""

    def __init__(self, stdout: asyncio.StreamReader) -> None:
        self.stdout = stdout


async def test_the_recorder_pump_stops_when_cancelled_as_a_read_completes(
    tmp_path: Path,
) -> None:
    capture = Capture(parse_source("lavfi:testsrc2"), encode=True, resolution="320x240", fps=25)
    recorder = FfmpegRecorder(
        "cam-cancel", FfmpegSettings(capture, tmp_path, first_frame_timeout_s=2.0)
    )
    stdout = asyncio.StreamReader()
    pump = asyncio.create_task(recorder._pump(cast(asyncio.subprocess.Process, _Process(stdout))))
    await asyncio.sleep(0)  # the pump now waits for its read
    stdout.feed_data(b"\x47\x1f\xff\x10" + bytes(184))  # one MPEG-TS null packet
    # One turn: the read completes; the pump has not resumed yet. Cancel it now.
    await asyncio.sleep(0)
    pump.cancel()
    # With the bug the pump goes on reading and, after first_frame_timeout_s without a
    # frame, returns (NO_FRAMES, ...) instead of being cancelled.
    with pytest.raises(asyncio.CancelledError):
        await pump
