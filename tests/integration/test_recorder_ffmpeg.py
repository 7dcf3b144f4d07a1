"""The FFmpeg recorder against real FFmpeg: a wall-clock test source, an H.264 RTSP camera
on loopback (GStreamer's RTSP server), the source lost and back, the disk full.

Every wait is for an event or a condition, with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bridge.mqtt.embedded import free_port
from mesh.camera.recording.base import (
    FaultChanged,
    FaultCode,
    RecorderEvent,
    RecorderFault,
    Recording,
    RecordingStarted,
    RecordingStopped,
    SegmentClosed,
    StopReason,
)
from mesh.camera.recording.ffmpeg import FfmpegRecorder, FfmpegSettings, free_bytes
from mesh.camera.recording.source import Capture
from mesh.media import parse_source
from tests.recorder_tools import RtspCamera, packets, until, video_stream

S = 1_000_000_000


class Running:
    """A recorder whose run() is a task, with every event it emitted."""

    def __init__(self, recorder: FfmpegRecorder) -> None:
        self.recorder = recorder
        self.events: list[RecorderEvent] = []
        recorder.listen(self.events.append)
        self.task = asyncio.create_task(recorder.run())

    def stopped(self) -> list[Recording]:
        return [e.recording for e in self.events if isinstance(e, RecordingStopped)]

    def faults(self) -> list[RecorderFault | None]:
        return [e.fault for e in self.events if isinstance(e, FaultChanged)]

    def buffered_s(self) -> float:
        ring = self.recorder._ring
        return (ring[-1].file.last_frame_ns - ring[0].file.first_frame_ns) / S if ring else 0.0


@contextlib.asynccontextmanager
async def running(recorder: FfmpegRecorder) -> AsyncIterator[Running]:
    r = Running(recorder)
    try:
        yield r
    finally:
        r.task.cancel()
        await asyncio.gather(r.task, return_exceptions=True)


def settings(source: str, storage: Path, ffmpeg: str, **kw: object) -> FfmpegSettings:
    encode = bool(kw.pop("encode", not parse_source(source).encoded))
    capture = Capture(
        parse_source(source),
        encode=encode,
        resolution=str(kw.pop("resolution", "320x240")),
        fps=int(kw.pop("fps", 25)),  # type: ignore[call-overload]
        bitrate=kw.pop("bitrate", None),  # type: ignore[arg-type]
    )
    kw.setdefault("min_free_bytes", 0)
    return FfmpegSettings(capture, storage, ffmpeg=ffmpeg, **kw)  # type: ignore[arg-type]


def check_files(rec: Recording) -> None:
    """Every segment listed in segments.jsonl is there with the hash recorded as written."""
    assert rec.directory is not None
    lines = (rec.directory / "segments.jsonl").read_text().splitlines()
    listed = [json.loads(line) for line in lines]
    assert [d["name"] for d in listed] == [s.name for s in rec.segments]
    for seg in rec.segments:
        data = (rec.directory / seg.name).read_bytes()
        assert len(data) == seg.bytes
        assert hashlib.sha256(data).hexdigest() == seg.sha256
    doc = json.loads((rec.directory / "recording.json").read_text())
    assert doc["stop_reason"] == (rec.stop_reason.value if rec.stop_reason else None)


# --- the test source, wall clock in its timestamps --------------------------------------
async def test_a_recording_holds_the_pre_event_seconds_and_starts_once_a_frame_is_on_disk(
    tmp_path: Path, ffmpeg: tuple[str, str]
) -> None:
    ffmpeg_bin, ffprobe = ffmpeg
    recorder = FfmpegRecorder(
        "cam-1", settings("lavfi:testsrc2", tmp_path, ffmpeg_bin, buffer_s=10)
    )
    async with running(recorder) as r:
        await until(lambda: r.buffered_s() >= 6, 20, "6 s buffered")
        command = time.time_ns()
        start = await recorder.start("act-1", 4, command)
        returned = time.time_ns()
        # At return, the open segment's file already holds a frame at or after the command.
        rec = recorder.current
        assert rec is not None
        assert rec.directory is not None
        open_file = rec.directory / f"{len(rec.segments):010d}.ts"
        snapshot = tmp_path / "at-return.ts"
        snapshot.write_bytes(open_file.read_bytes())
        kept = len(rec.segments)
        await until(lambda: len(rec.segments) >= kept + 2, 10, "2 more segments")
        stopped = await recorder.stop(StopReason.OFFICER, time.time_ns(), note="scene clear")
    assert stopped is rec
    assert stopped.stop_reason is StopReason.OFFICER
    assert stopped.stop_note == "scene clear"
    check_files(stopped)

    assert command <= start.started_at_ns <= returned
    on_disk = packets(ffprobe, snapshot, command)
    assert any(t >= command for t, _ in on_disk), "start returned before its frame was written"
    assert start.started_at_ns in [t for t, _ in on_disk]

    folder = stopped.directory
    assert folder is not None
    frames = [p for seg in stopped.segments for p in packets(ffprobe, folder / seg.name, command)]
    times = [t for t, _ in frames]
    assert times == sorted(times)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert max(gaps) < S // 5  # continuous: no segment missing between the kept ones
    first = times[0]
    assert first == start.first_frame_ns
    # At least pre_event_s before the command, at most one segment more.
    assert command - 4 * S - 1.2 * S <= first <= command - 4 * S + S // 25
    assert start.pre_event_kept_s == pytest.approx((start.started_at_ns - first) / S, abs=0.002)
    assert start.frames_kept == sum(1 for t in times if t < command)
    for seg in stopped.segments:  # each segment begins with a keyframe and plays alone
        assert packets(ffprobe, folder / seg.name, command)[0][1]
    assert isinstance(r.events[0], RecordingStarted)
    assert isinstance(r.events[-1], RecordingStopped)
    closed = [e.segment for e in r.events if isinstance(e, SegmentClosed)]
    assert closed == stopped.segments  # one SegmentClosed per segment, pre-event ones too


async def test_claims_cancel_and_max_duration(tmp_path: Path, ffmpeg: tuple[str, str]) -> None:
    recorder = FfmpegRecorder(
        "cam-2", settings("lavfi:testsrc2", tmp_path, ffmpeg[0], buffer_s=3, record_s=1.5)
    )
    async with running(recorder) as r:
        await until(lambda: r.buffered_s() >= 1, 20, "a buffer")
        # Two commands at once (a weapon drawn as the lights go on): one recording, both.
        now = time.time_ns()
        one, two = await asyncio.gather(
            recorder.start("a", 1, now, issuer="gw-1"), recorder.start("b", 1, now, issuer="gw-2")
        )
        assert one == two
        assert not await recorder.cancel("a", time.time_ns(), issuer="gw-2")  # not a claim
        assert not await recorder.cancel("a", time.time_ns(), issuer="gw-1")  # b remains
        assert recorder.is_recording(time.time_ns())
        assert await recorder.cancel("b", time.time_ns(), issuer="gw-2")
        (first,) = r.stopped()
        assert first.stop_reason is StopReason.CANCEL
        assert first.activations == ["a", "b"]
        # A second recording runs into record_s and stops by itself.
        await until(lambda: r.recorder._splitter.in_segment, 5, "buffering again")
        second = await recorder.start("c", 0, time.time_ns())
        await until(lambda: len(r.stopped()) == 2, 10, "the max-duration stop")
    rec = r.stopped()[1]
    assert rec.stop_reason is StopReason.MAX_DURATION
    # The second one's pre-event is what came after the first, never a segment from before.
    assert rec.first_frame_ns > first.segments[-1].last_frame_ns
    for done in (first, rec):  # each an unbroken run of segments
        for a, b in itertools.pairwise(done.segments):
            assert 0 < b.first_frame_ns - a.last_frame_ns < S // 5
    assert rec.segments[-1].last_frame_ns - second.started_at_ns >= 1.5 * S
    check_files(first)
    check_files(rec)


async def test_standby_stops_buffering_and_wake_starts_again(
    tmp_path: Path, ffmpeg: tuple[str, str]
) -> None:
    recorder = FfmpegRecorder("cam-3", settings("lavfi:testsrc2", tmp_path, ffmpeg[0]))
    async with running(recorder) as r:
        await until(lambda: r.buffered_s() >= 1, 20, "a buffer")
        recorder.standby()
        await until(lambda: recorder._proc is None, 5, "ffmpeg stopped")
        await until(lambda: not any(recorder.buffer_dir.iterdir()), 5, "the buffer discarded")
        # A start wakes it: the pre-event is whatever the fresh buffer holds (little).
        start = await recorder.start("a", 10, time.time_ns())
        assert start.pre_event_kept_s < 1.5
        await recorder.stop(StopReason.OFFICER, time.time_ns())


# --- an IP camera: H.264 over RTSP, recorded without re-encoding ------------------------
@pytest.fixture
def rtsp_camera(gst_rtsp: str) -> Iterator[RtspCamera]:
    camera = RtspCamera(gst_rtsp, free_port(), "--size", "640x360", "--fps", "30")
    camera.start()
    try:
        yield camera
    finally:
        camera.kill()


async def test_an_h264_rtsp_stream_is_recorded_as_it_comes(
    tmp_path: Path, ffmpeg: tuple[str, str], rtsp_camera: RtspCamera
) -> None:
    ffmpeg_bin, ffprobe = ffmpeg
    source = video_stream(ffprobe, rtsp_camera.url)
    assert source["profile"] == "Main"  # x264enc's, not what ffmpeg's libx264 would make
    recorder = FfmpegRecorder(
        "dash-1", settings(rtsp_camera.url, tmp_path, ffmpeg_bin, buffer_s=5, fps=30)
    )
    async with running(recorder) as r:
        await until(lambda: r.buffered_s() >= 2, 20, "2 s buffered")
        command = time.time_ns()
        start = await recorder.start("act-rtsp", 2, command)
        assert start.started_at_ns >= command
        await until(lambda: len(recorder.current.segments) >= 5, 10, "more segments")  # type: ignore[union-attr]
        rec = await recorder.stop(StopReason.OFFICER, time.time_ns())
    assert rec is not None
    assert rec.directory is not None
    check_files(rec)
    for seg in rec.segments:
        recorded = video_stream(ffprobe, str(rec.directory / seg.name))
        for key in ("codec_name", "profile", "level", "width", "height", "pix_fmt"):
            assert recorded[key] == source[key], key
    # The source's keyframe every 15 frames (tools/rtsp_server.py --keyint), not the 30 a
    # re-encode with a 1 s GOP would make.
    frames = [
        p for seg in rec.segments for p in packets(ffprobe, rec.directory / seg.name, command)
    ]
    keys = [i for i, (_, key) in enumerate(frames) if key]
    assert {b - a for a, b in itertools.pairwise(keys)} == {15}
    assert frames[0][0] <= command - 2 * S + S // 30


async def test_a_lost_source_stops_the_recording_and_the_recorder_recovers(
    tmp_path: Path, ffmpeg: tuple[str, str], rtsp_camera: RtspCamera
) -> None:
    recorder = FfmpegRecorder(
        "dash-2",
        settings(
            rtsp_camera.url,
            tmp_path,
            ffmpeg[0],
            buffer_s=3,
            source_timeout_s=1.5,
            backoff_min_s=0.2,
            backoff_max_s=1.0,
        ),
    )
    async with running(recorder) as r:
        await until(lambda: r.buffered_s() >= 1, 20, "a buffer")
        await recorder.start("act-lost", 1, time.time_ns())
        await until(lambda: len(recorder.current.segments) >= 2, 10, "segments")  # type: ignore[union-attr]
        rtsp_camera.kill()
        await until(lambda: bool(r.stopped()), 15, "the recording stopped")
        (rec,) = r.stopped()
        assert rec.stop_reason is StopReason.SOURCE_LOST
        check_files(rec)  # what was recorded is kept, whole
        assert len(rec.segments) >= 2
        assert recorder.fault is not None
        assert recorder.fault.code in (FaultCode.NO_FRAMES, FaultCode.FFMPEG_EXITED)
        with pytest.raises(RecorderFault) as refused:  # refused at once, not after a timeout
            await asyncio.wait_for(recorder.start("act-2", 1, time.time_ns()), 0.5)
        assert refused.value.code is recorder.fault.code
        # The camera comes back: ffmpeg is restarted with backoff and the fault clears.
        rtsp_camera.start()
        await until(lambda: recorder.fault is None, 20, "recovered")
        assert r.faults()[-1] is None
        assert recorder.restarts >= 1
        again = await recorder.start("act-3", 0, time.time_ns())
        assert again.started_at_ns > rec.segments[-1].last_frame_ns


# --- the disk fills --------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 6 MiB file system (tmpfs, as root), else skipped (a container without
    CAP_SYS_ADMIN): free space as statvfs says it, ENOSPC as the kernel returns it. The
    test after it runs everywhere, on min_free_bytes against the real statvfs."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


async def test_a_full_disk_refuses_a_start_and_stops_a_recording(
    small_disk: Path, ffmpeg: tuple[str, str]
) -> None:
    recorder = FfmpegRecorder(
        "cam-disk",
        settings(
            "lavfi:testsrc2",
            small_disk,
            ffmpeg[0],
            buffer_s=1,
            min_free_bytes=1 << 20,
            bitrate="4M",  # 0.5 MB/s: the 6 MiB disk fills in seconds
        ),
    )
    async with running(recorder) as r:
        await until(lambda: r.buffered_s() >= 0.5, 20, "a buffer")
        filler = small_disk / "filler"
        st = os.statvfs(small_disk)
        filler.write_bytes(b"\0" * (st.f_bavail * st.f_frsize - (512 << 10)))
        with pytest.raises(RecorderFault) as refused:
            await recorder.start("act-full", 1, time.time_ns())
        assert refused.value.code is FaultCode.LOW_DISK
        filler.unlink()
        await until(lambda: recorder.fault is None, 10, "room again")
        await recorder.start("act-fills", 1, time.time_ns())
        await until(lambda: bool(r.stopped()), 30, "stopped by the full disk")
    (rec,) = r.stopped()
    assert rec.stop_reason is StopReason.LOW_DISK
    check_files(rec)
    assert rec.segments


# --- a bad config is refused at start ---------------------------------------------------
@pytest.mark.parametrize(
    ("recorder", "says"),
    [
        ("  source: /dev/video97\n", "key 'recorder.source': /dev/video97: no such device"),
        ("  source: lavfi:nosuch\n", "key 'recorder.source'"),
        ("  source: 'rtsp://'\n", "names no host"),
        ("  source: lavfi:testsrc2\n  storage: {dir: missing}\n", "key 'recorder.storage.dir'"),
    ],
)
def test_the_camera_command_exits_2_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorder: str, says: str
) -> None:
    from typer.testing import CliRunner

    from mesh.cli.app import app

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "camera.yaml"
    path.write_text(f"camera_id: c1\nunit: u1\nrecorder:\n  backend: ffmpeg\n{recorder}")
    result = CliRunner().invoke(app, ["camera", "--config", str(path), "--log-format", "console"])
    assert result.exit_code == 2, result.output
    assert says in result.output
    check = CliRunner().invoke(app, ["config", "check", str(path)])
    assert check.exit_code == 2
    assert says in check.output


async def test_the_storage_cap_drops_buffer_first_and_never_a_recording(
    tmp_path: Path, ffmpeg: tuple[str, str]
) -> None:
    cap = 3 << 20
    recorder = FfmpegRecorder(
        "cam-cap",
        settings(
            "lavfi:testsrc2", tmp_path, ffmpeg[0], buffer_s=120, max_bytes=cap, bitrate="4M",
            remeasure_s=0.5,
        ),
    )  # fmt: skip

    def stored() -> int:
        return sum(f.stat().st_size for f in (tmp_path / "cam-cap").rglob("*") if f.is_file())

    async with running(recorder) as r:
        # 0.5 MB/s into a 3 MiB cap with a 120 s buffer: the oldest buffer segments go.
        await until(
            lambda: r.buffered_s() < recorder.frames_seen / 25 - 3, 60, "buffer dropped for size"
        )
        assert stored() <= cap + (1 << 20)  # the cap, and at most the open segment over it
        await recorder.start("act-cap", 120, time.time_ns())
        await until(lambda: bool(r.stopped()), 30, "stopped by the cap")
        (rec,) = r.stopped()
        assert rec.stop_reason is StopReason.LOW_DISK
        assert recorder.fault is not None
        assert recorder.fault.code is FaultCode.LOW_DISK
        check_files(rec)  # the recording is whole: the recorder deleted none of it
        assert rec.directory is not None
        assert sum(s.bytes for s in rec.segments) > cap // 2
        # The recording is uploaded and moved off the camera: it no longer counts against
        # the cap, and the camera records again.
        shutil.move(rec.directory, tmp_path / "uploaded")
        await until(lambda: recorder.fault is None, 20, "room again once the recording left")
        await recorder.start("act-cap-2", 1, time.time_ns())
        assert recorder.is_recording(time.time_ns())


async def test_ffmpeg_killed_mid_recording_is_source_lost_and_restarted(
    tmp_path: Path, ffmpeg: tuple[str, str]
) -> None:
    recorder = FfmpegRecorder(
        "cam-kill",
        settings("lavfi:testsrc2", tmp_path, ffmpeg[0], buffer_s=3, backoff_min_s=0.2),
    )
    async with running(recorder) as r:
        await until(lambda: r.buffered_s() >= 1, 20, "a buffer")
        await recorder.start("act-kill", 1, time.time_ns())
        proc = recorder._proc  # the test kills the child, as a crash would
        assert proc is not None
        os.kill(proc.pid, 9)
        await until(lambda: bool(r.stopped()), 10, "the recording stopped")
        (rec,) = r.stopped()
        assert rec.stop_reason is StopReason.SOURCE_LOST
        check_files(rec)
        lost = r.faults()[0]
        assert lost is not None
        assert lost.code is FaultCode.FFMPEG_EXITED
        assert "status -9" in lost.reason
        await until(lambda: recorder.fault is None, 10, "restarted")
        assert recorder._proc is not None
        assert recorder._proc.pid != proc.pid


async def test_min_free_bytes_against_the_real_free_space(
    tmp_path: Path, ffmpeg: tuple[str, str]
) -> None:
    """Where no small file system can be mounted: the same two refusals, driven by
    min_free_bytes set around what statvfs says is free on the test's own disk."""
    free = free_bytes(tmp_path)
    above = FfmpegRecorder(
        "cam-above",
        settings("lavfi:testsrc2", tmp_path, ffmpeg[0], min_free_bytes=free + (1 << 30)),
    )
    async with running(above) as r:
        await until(lambda: bool(r.faults()), 20, "the low-disk fault")
        fault = above.fault
        assert fault is not None
        assert fault.code is FaultCode.LOW_DISK
        with pytest.raises(RecorderFault) as refused:
            await above.start("act-above", 1, time.time_ns())
        assert refused.value.code is FaultCode.LOW_DISK
    # Other processes write to this disk too: a margin of 256 MiB, then a filler file of
    # that size makes the drop the recorder must see.
    margin = 256 << 20
    near = FfmpegRecorder(
        "cam-near",
        settings(
            "lavfi:testsrc2",
            tmp_path,
            ffmpeg[0],
            min_free_bytes=free_bytes(tmp_path) - margin,
        ),
    )
    async with running(near) as r:
        await until(lambda: near._splitter.in_segment, 20, "buffering")
        await near.start("act-near", 1, time.time_ns())
        await until(lambda: bool(near.current and near.current.segments), 10, "a segment")
        filler = tmp_path / "filler"
        with filler.open("wb") as out:
            for _ in range(margin >> 20):
                out.write(b"\0" * (1 << 20))
            out.flush()
            os.fsync(out.fileno())
        try:
            await until(lambda: bool(r.stopped()), 20, "stopped under min_free_bytes")
        finally:
            filler.unlink()
    (rec,) = r.stopped()
    assert rec.stop_reason is StopReason.LOW_DISK
    check_files(rec)


async def test_a_source_password_never_reaches_a_fault_reason(
    tmp_path: Path, ffmpeg: tuple[str, str]
) -> None:
    """ffmpeg names its source, password and all, in its errors; the fault's reason goes
    into `rejected` acks, presence and the gateway's log, so it must come out clean."""
    url = f"rtsp://admin:s3cret@127.0.0.1:{free_port()}/cam?token=t0ken"
    recorder = FfmpegRecorder("cam-pw", settings(url, tmp_path, ffmpeg[0], backoff_min_s=0.2))
    async with running(recorder):
        await until(lambda: recorder.fault is not None, 20, "the camera cannot be reached")
        with pytest.raises(RecorderFault) as raised:
            await recorder.start("act-pw", 1, time.time_ns())
        fault = recorder.fault
        assert fault is not None
    # The reason does name the source, so the check below would see a password in it.
    assert "127.0.0.1" in fault.reason, fault.reason
    for text in (fault.reason, str(raised.value), raised.value.reason, str(fault)):
        assert [secret for secret in ("s3cret", "t0ken", "admin") if secret in text] == [], text


async def test_a_recording_left_open_by_a_crash_is_closed_at_the_next_start(
    tmp_path: Path, ffmpeg: tuple[str, str]
) -> None:
    """Power cut mid-recording: what is on disk at that instant (copied while ffmpeg writes,
    the open segment ending in a partial frame) is what the next run finds. It closes the
    recording as `interrupted`, its last segment cut back to whole frames, every segment
    listed with the hash of its bytes, and reports it to the issuers it wrote down."""
    live, after = tmp_path / "live", tmp_path / "after"
    live.mkdir()
    recorder = FfmpegRecorder("cam-cut", settings("lavfi:testsrc2", live, ffmpeg[0], buffer_s=3))
    async with running(recorder) as r:
        await until(lambda: r.buffered_s() >= 1, 20, "a buffer")
        await recorder.start("act-cut", 2, time.time_ns(), issuer="gw-car-12")
        recorder.attach("act-cut-2", issuer="gw-car-7")
        rec = recorder.current
        assert rec is not None
        assert rec.directory is not None
        await until(lambda: len(rec.segments) >= 3, 10, "3 segments")
        writer = recorder._open
        assert writer is not None
        await until(lambda: writer.bytes > 2000, 5, "an open segment under way")
        shutil.copytree(live, after)  # the disk as the power cut leaves it
        # ... in the middle of rewriting recording.json, say.
        stray = after / "cam-cut" / "recordings" / rec.directory.name / "recording.json.tmp"
        stray.write_bytes(b'{"recording_id": ')
        # The copy is a crash: the copied recording.json says nothing about a stop.
    crashed = after / "cam-cut" / "recordings" / rec.directory.name
    assert json.loads((crashed / "recording.json").read_text())["stop_reason"] is None
    listed = (crashed / "segments.jsonl").read_text().splitlines()
    open_name = f"{len(listed):010d}.ts"  # the segment being written at the cut
    size_before = (crashed / open_name).stat().st_size

    again = FfmpegRecorder("cam-cut", settings("lavfi:testsrc2", after, ffmpeg[0], buffer_s=3))
    async with running(again) as r2:
        await until(lambda: bool(r2.stopped()), 10, "the interrupted recording reported")
    (closed,) = r2.stopped()
    assert closed.recording_id == rec.recording_id
    assert closed.stop_reason is StopReason.INTERRUPTED
    assert closed.activations == ["act-cut", "act-cut-2"]
    assert closed.issuers == ["gw-car-12", "gw-car-7"]
    # The open one is listed, cut to whole frames (a segment may have closed while the
    # folder was copied: then the next one was open too, and is listed after it).
    names = [s.name for s in closed.segments]
    assert names[: len(listed) + 1][-1] == open_name
    cut = closed.segments[len(listed)]
    assert cut.frames >= 1
    assert cut.bytes <= size_before
    assert closed.stopped_at_ns == closed.segments[-1].last_frame_ns
    check_files(closed)  # segments.jsonl lists them all, each with its bytes' hash
    assert not stray.exists()
    assert json.loads((crashed / "recording.json").read_text())["stop_reason"] == "interrupted"
    # Closed once: a third run finds nothing left open.
    third = FfmpegRecorder("cam-cut", settings("lavfi:testsrc2", after, ffmpeg[0], buffer_s=3))
    async with running(third) as r3:
        await until(lambda: third.buffered_s >= 1, 20, "buffering again")
    assert r3.stopped() == []
