"""The FFmpeg recorder: how fast a start is on disk, and what buffering and recording cost.

The source is an IP camera on loopback: GStreamer's RTSP server (tools/rtsp_server.py,
under /usr/bin/python3) serving live H.264 (x264enc, 30 fps, a keyframe every 15 frames),
recorded in copy mode as a dash camera's stream would be. The server's encoding is its own
process and is not counted. For 720p (2 Mbit/s) and 1080p (4 Mbit/s):

1. **start**: ``FfmpegRecorder.start`` called with the command's time as the command
   arrives, until it returns (the first frame at or after the command written to its file
   and fsynced, the pre-event segments moved into the recording, recording.json fsynced):
   p50/p99 over ``--starts`` starts at random phases, each stopped again (officer) and the
   next begun once the buffer runs again. Against the floor, one frame period as measured
   from the frames' own timestamps in the same run (a start cannot be faster than waiting
   for the next frame). Also the part of it spent waiting for that frame (media time of the
   started frame − command time), and the rest: from that frame's media time to the return
   (FFmpeg handing the frame on, the read, the write, the fsyncs), of which the first part
   is the frame's age when the recorder had its last byte (``frame_age_at_read_ms``).
2. **cpu idle / recording**: CPU of the ffmpeg process (/proc/PID/stat) plus this process's
   own (the recorder's asyncio reading, splitting and writing; the benchmark only sleeps
   meanwhile) over ``--cpu-s`` seconds of buffering, then of recording, as % of one core.

Targets (issue 19): start ≤ one frame period + 50 ms at p99; idle buffering ≤ 5 % of one
core per camera in copy mode.

    python bench/recorder.py [--json] [--smoke] [--starts 100] [--cpu-s 20] [--dir DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog

from mesh.camera.recording.base import StopReason
from mesh.camera.recording.ffmpeg import FfmpegRecorder, FfmpegSettings
from mesh.camera.recording.source import Capture
from mesh.decide.stats import percentile
from mesh.media import parse_source

REPO = Path(__file__).resolve().parents[1]
SMOKE_HELP = "tiny sizes: proves the script runs (make bench-smoke), not its figures"
TICK = os.sysconf("SC_CLK_TCK")
FPS = 30
RESOLUTIONS = {"720p": ("1280x720", 2000), "1080p": ("1920x1080", 4000)}


def cpu_s(pid: int | str) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def rtsp_server(size: str, kbps: int) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            "/usr/bin/python3",
            str(REPO / "tools" / "rtsp_server.py"),
            *("--port", str(port), "--size", size),
            *("--fps", str(FPS), "--bitrate", str(kbps)),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("ready "):
        proc.kill()
        raise SystemExit(f"tools/rtsp_server.py did not start: {line!r}")
    return proc, line.split()[1]


async def until(condition: Any, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.01)


def ms(values: list[float]) -> dict[str, float]:
    return {q: round(percentile(values, p), 2) for q, p in (("p50", 50), ("p99", 99))}


async def cpu_share(recorder: FfmpegRecorder, seconds: float) -> dict[str, float]:
    proc = recorder._proc
    assert proc is not None
    me = os.getpid()
    wall0, ff0, own0 = time.monotonic(), cpu_s(proc.pid), cpu_s(me)
    await asyncio.sleep(seconds)
    wall = time.monotonic() - wall0
    ff, own = (cpu_s(proc.pid) - ff0) / wall * 100, (cpu_s(me) - own0) / wall * 100
    return {"ffmpeg_pct": round(ff, 2), "agent_pct": round(own, 2), "total_pct": round(ff + own, 2)}


async def one_resolution(
    label: str, storage: Path, starts: int, cpu_window: float
) -> dict[str, Any]:
    size, kbps = RESOLUTIONS[label]
    server, url = rtsp_server(size, kbps)
    recorder = FfmpegRecorder(
        f"bench-{label}",
        FfmpegSettings(
            Capture(parse_source(url), encode=False, fps=FPS),
            storage,
            buffer_s=10,
            min_free_bytes=0,
        ),
    )
    task = asyncio.create_task(recorder.run())
    try:
        await until(lambda: len(recorder._ring) >= 2, 30)
        idle = await cpu_share(recorder, cpu_window)
        latencies, waits, after, age = [], [], [], []
        for _ in range(starts):
            await until(lambda: recorder._splitter.in_segment, 10)
            await asyncio.sleep(random.uniform(0.05, 0.25))  # a random phase to the frames
            command = time.time_ns()
            t0 = time.perf_counter()
            start = await recorder.start("bench", 1, command)
            latencies.append((time.perf_counter() - t0) * 1000)
            after.append((time.time_ns() - start.started_at_ns) / 1e6)
            age.append(recorder.start_frame_age_ns / 1e6)
            waits.append((start.started_at_ns - command) / 1e6)
            rec = await recorder.stop(StopReason.OFFICER, time.time_ns())
            assert rec is not None
        # The frame period, from the media timestamps of a stretch of frames.
        await until(lambda: len(recorder._ring) >= 1, 10)
        rec_start = await recorder.start("bench-cpu", 0, time.time_ns())
        recording = await cpu_share(recorder, cpu_window)
        rec = await recorder.stop(StopReason.OFFICER, time.time_ns())
        assert rec is not None
        seg = max(rec.segments, key=lambda s: s.frames)
        period_ms = (seg.last_frame_ns - seg.first_frame_ns) / max(1, seg.frames - 1) / 1e6
        del rec_start
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        server.kill()
        server.wait()
    lat, wait = ms(latencies), ms(waits)
    return {
        "size": size,
        "source_kbps": kbps,
        "starts": starts,
        "frame_period_ms": round(period_ms, 2),
        "start_ms": lat,
        "start_mean_ms": round(statistics.fmean(latencies), 2),
        "waiting_for_frame_ms": wait,
        "frame_to_return_ms": ms(after),
        "frame_age_at_read_ms": ms(age),
        "start_p99_over_floor_ms": round(lat["p99"] - period_ms, 2),
        "start_target_met": lat["p99"] <= period_ms + 50,
        "cpu_idle": idle,
        "cpu_recording": recording,
        "idle_target_met": idle["total_pct"] <= 5.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    parser.add_argument("--starts", type=int, default=100)
    parser.add_argument("--cpu-s", type=float, default=20.0)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default /tmp)")
    args = parser.parse_args()
    # The recorder's info records (one per start and stop) would bury the report.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    labels = list(RESOLUTIONS)
    if args.smoke:
        args.starts, args.cpu_s, labels = 3, 1.5, ["720p"]
    report: dict[str, Any] = {"bench": "recorder", "fps": FPS, "mode": "copy"}
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="trigger-mesh-recbench-") as tmp:
        for label in labels:
            result = asyncio.run(one_resolution(label, Path(tmp), args.starts, args.cpu_s))
            report[label] = result
            print(
                f"{label}: start p50 {result['start_ms']['p50']} ms p99 "
                f"{result['start_ms']['p99']} ms (floor: one frame, "
                f"{result['frame_period_ms']} ms); CPU idle "
                f"{result['cpu_idle']['total_pct']} %, recording "
                f"{result['cpu_recording']['total_pct']} % of one core",
                file=sys.stderr,
            )
    if args.json:
        print(json.dumps(report, separators=(",", ":")))


if __name__ == "__main__":
    main()
