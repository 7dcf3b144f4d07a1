"""Helpers of the FFmpeg recorder's tests: the loopback RTSP camera, ffprobe, waiting."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from mesh.camera.recording.mpegts import ticks_to_ns

REPO = Path(__file__).resolve().parents[1]
RTSP_SERVER = REPO / "tools" / "rtsp_server.py"


async def until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait for ``condition`` (checked every 20 ms) or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


class RtspCamera:
    """tools/rtsp_server.py on a loopback port: started, killed, started again."""

    def __init__(self, python: str, port: int, *extra: str) -> None:
        self.python, self.port, self.extra = python, port, extra
        self.url = f"rtsp://127.0.0.1:{port}/cam"
        self.proc: subprocess.Popen[str] | None = None

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            [self.python, str(RTSP_SERVER), "--port", str(self.port), *self.extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # "ready URL" once it listens
        assert line.startswith("ready "), (
            line,
            self.proc.stderr.read() if self.proc.stderr else "",
        )
        deadline = time.monotonic() + timeout
        while True:  # and a TCP connection is accepted
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


def probe(ffprobe: str, target: str, *entries: str) -> dict[str, object]:
    out = subprocess.run(
        [ffprobe, "-v", "error", "-of", "json", *entries, target],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    result: dict[str, object] = json.loads(out.stdout)
    return result


def packets(ffprobe: str, path: Path, near_ns: int) -> list[tuple[int, bool]]:
    """(UTC ns, keyframe) of every video packet of a file, from ffprobe's PTS."""
    found = probe(ffprobe, str(path), "-select_streams", "v:0", "-show_entries", "packet=pts,flags")
    rows = found["packets"]
    assert isinstance(rows, list)
    return [(ticks_to_ns(int(p["pts"]), near_ns), "K" in p["flags"]) for p in rows]


def video_stream(ffprobe: str, target: str) -> dict[str, object]:
    """codec, profile, level, size and pixel format of a file's or a URL's video."""
    network = ["-rtsp_transport", "tcp"] if target.startswith("rtsp") else []
    entries = "stream=codec_name,profile,level,width,height,pix_fmt"
    found = probe(ffprobe, target, *network, "-select_streams", "v:0", "-show_entries", entries)
    streams = found["streams"]
    assert isinstance(streams, list)
    stream: dict[str, object] = streams[0]
    return stream
