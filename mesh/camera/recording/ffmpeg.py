"""A recorder on FFmpeg: real frames, a pre-event buffer on disk, recordings in files.

One ``ffmpeg`` subprocess per camera reads the source (V4L2 device, RTSP/RTP URL or a
lavfi test source) and writes MPEG-TS on its stdout, which this process reads with asyncio
and cuts into ~``segment_s`` segments at keyframes (:mod:`.mpegts`, pure). A subprocess
rather than PyAV: it is Debian's ``ffmpeg`` (security updates from the distribution, every
codec and V4L2/RTSP input it was built with), there are no bundled-FFmpeg wheels to ship
and keep patched, and a crashing device driver, demuxer or decoder kills that process, not
the camera agent: the agent reports the fault and restarts it with backoff.

Media time is the wall clock (see :mod:`.source`): the PTS of each frame is when FFmpeg
read it, in UTC, unwrapped from 33 bits against this process's clock.

While idle, closed segments go to a ring in ``<dir>/<camera_id>/buffer/`` covering
``buffer_s``; the open segment is written to its file as the bytes arrive. ``start``
waits for the first whole frame at or after the command's time, fsyncs it, and moves the
ring segments that cover ``pre_event_s`` before the command, and the open segment, into
``<dir>/<camera_id>/recordings/<UTC start>-<activation>/NNNNNNNNNN.ts``; each closed
segment of the recording is appended (fsynced) to ``segments.jsonl`` there, and
``recording.json`` is written at start and at stop.

Bounds: the ring holds ``buffer_s`` (at most 120 s). With a storage cap (``max_bytes``),
the oldest buffer segments are dropped first; the recorder never deletes a recording; a
recording that cannot go on within the cap or above ``min_free_bytes`` stops LOW_DISK, and
an idle recorder that cannot keep a buffer reports LOW_DISK. The ring is always one
unbroken run of segments: after a start (what it held before the kept segments), a stop, a
failed write or an ffmpeg restart it begins again, empty, at the next keyframe. So the
segments of a recording follow on from each other with no gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import shutil
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from mesh.camera.recording import ring as ring_rules
from mesh.camera.recording.base import (
    FaultChanged,
    FaultCode,
    Listeners,
    Recorder,
    RecorderEvent,
    RecorderFault,
    Recording,
    RecordingStart,
    RecordingStarted,
    RecordingStopped,
    SegmentClosed,
    SegmentFile,
    StopReason,
)
from mesh.camera.recording.mpegts import Cut, Data, FrameDone, TsSplitter, ticks_to_ns
from mesh.camera.recording.recovery import open_recordings
from mesh.camera.recording.segments import (
    SegmentWriter,
    append_synced,
    segment_line,
    sync_dir,
    write_synced,
)
from mesh.camera.recording.source import Capture, ffmpeg_command
from mesh.media import redact_credentials

NS = 1_000_000_000
MAX_BUFFER_S = 120.0
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class FfmpegSettings:
    capture: Capture
    storage_dir: Path  # segments go to <storage_dir>/<camera_id>/
    buffer_s: float = 30.0
    segment_s: float = 1.0
    record_s: float = 300.0
    max_bytes: int | None = None  # the store's cap: buffer plus recordings
    min_free_bytes: int = 256 * 1024 * 1024  # free space the recorder leaves on the disk
    source_timeout_s: float = 3.0  # no frame for this long: the source is lost
    first_frame_timeout_s: float = 10.0  # after (re)starting ffmpeg
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    ffmpeg: str = "ffmpeg"
    # While idle, the recordings' size is taken from the disk again this often, so that
    # recordings moved off the camera stop counting against max_bytes.
    remeasure_s: float = 60.0


@dataclass
class _Buffered:
    path: Path
    file: SegmentFile

    @property
    def span(self) -> ring_rules.Span:
        return ring_rules.Span(self.file.first_frame_ns, self.file.last_frame_ns, self.file.bytes)


@dataclass
class _Waiter:
    activation_id: str
    issuer: str
    pre_event_s: int
    command_at_ns: int
    future: asyncio.Future[RecordingStart]


def free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _utc_name(ns: int) -> str:
    t = datetime.fromtimestamp(ns / NS, UTC)
    return t.strftime("%Y%m%dT%H%M%S.") + f"{ns // 1_000_000 % 1000:03d}Z"


class FfmpegRecorder(Recorder):
    def __init__(
        self,
        camera_id: str,
        settings: FfmpegSettings,
        *,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.camera_id = camera_id
        self.settings = settings
        self.buffer_s = min(settings.buffer_s, MAX_BUFFER_S)
        self.record_s = settings.record_s
        # For the evidence manifest (which takes any credentials out of a URL).
        self.device_source = settings.capture.source.text
        self._clock = clock
        self._log = structlog.get_logger("mesh.recorder").bind(camera_id=camera_id)
        self.root = settings.storage_dir / camera_id
        self.buffer_dir = self.root / "buffer"
        self.recordings_dir = self.root / "recordings"
        self._listeners = Listeners()
        self._fault: RecorderFault | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._splitter = TsSplitter(settings.segment_s)
        self._open: SegmentWriter | None = None
        self._ring: deque[_Buffered] = deque()
        self._current: Recording | None = None
        self._claims: list[tuple[str, str]] = []
        self._waiter: _Waiter | None = None
        self._standby = False
        self._awake = asyncio.Event()
        self._awake.set()
        self._seq = 0  # buffer file names
        self._rec_seq = 0  # the current recording's next segment number
        self._recorded_bytes = 0  # every recording under recordings_dir
        self._measured_at_mono = 0.0  # when _recorded_bytes was last taken from the disk
        self._stderr: deque[str] = deque(maxlen=20)
        self.frames_seen = 0
        self.restarts = 0
        self._frames_kept = 0
        self.start_frame_age_ns = 0  # at the last start: its frame's media time → read
        self._prepare_dirs()

    # --- storage ------------------------------------------------------------------------
    def _prepare_dirs(self) -> None:
        self.buffer_dir.mkdir(parents=True, exist_ok=True)
        self.recordings_dir.mkdir(parents=True, exist_ok=True)
        # What a previous run buffered is not evidence: nothing asked for it.
        for stale in self.buffer_dir.iterdir():
            if stale.is_file():
                stale.unlink()
        self._measure_recordings()

    def _measure_recordings(self) -> None:
        """What the recordings take on disk, counted afresh: recordings moved off the
        camera (uploaded, say) stop counting against the cap."""
        total = 0
        for dirpath, _dirs, files in os.walk(self.recordings_dir):
            for name in files:
                with contextlib.suppress(OSError):
                    total += os.path.getsize(os.path.join(dirpath, name))
        self._recorded_bytes = total
        self._measured_at_mono = time.monotonic()

    def _store_bytes(self) -> int:
        open_bytes = self._open.bytes if self._open is not None else 0
        return self._recorded_bytes + open_bytes + sum(b.file.bytes for b in self._ring)

    def _space_problem(self) -> str | None:
        """Why nothing more can be written now (free space, cap), or None."""
        s = self.settings
        free = free_bytes(self.root)
        if free < s.min_free_bytes:
            return f"{free} bytes free on {self.root}, under min_free_bytes {s.min_free_bytes}"
        if s.max_bytes is not None and self._store_bytes() > s.max_bytes:
            return f"the store holds {self._store_bytes()} bytes, over max_bytes {s.max_bytes}"
        return None

    def _drop_oldest(self, count: int) -> None:
        for _ in range(count):
            old = self._ring.popleft()
            old.path.unlink(missing_ok=True)

    def _make_room(self) -> None:
        """Drop buffer segments, oldest first, until the cap and free space are kept."""
        s = self.settings
        if self._current is None and time.monotonic() - self._measured_at_mono >= s.remeasure_s:
            self._measure_recordings()  # recordings moved off the camera free their room
        spans = [b.span for b in self._ring]
        open_bytes = self._open.bytes if self._open is not None else 0
        self._drop_oldest(
            ring_rules.drop_for_size(spans, self._recorded_bytes + open_bytes, s.max_bytes)
        )
        while self._ring and free_bytes(self.root) < s.min_free_bytes:
            self._drop_oldest(1)

    # --- the interface ------------------------------------------------------------------
    def listen(self, callback: Callable[[RecorderEvent], None]) -> None:
        self._listeners.add(callback)

    def _emit(self, event: RecorderEvent) -> None:
        self._listeners.emit(event)

    @property
    def fault(self) -> RecorderFault | None:
        return self._fault

    @property
    def current(self) -> Recording | None:
        return self._current

    @property
    def buffered_s(self) -> float:
        """Seconds of video the pre-event buffer holds now (closed segments)."""
        if not self._ring:
            return 0.0
        return (self._ring[-1].file.last_frame_ns - self._ring[0].file.first_frame_ns) / 1e9

    def _set_fault(self, fault: RecorderFault | None) -> None:
        old = self._fault
        if old is None and fault is None:
            return
        if old is not None and fault is not None and old.code is fault.code:
            self._fault = fault  # the same fault, its figures updated: no new event
            return
        self._fault = fault
        if fault is None:
            self._log.info("recorder_recovered")
        else:
            self._log.warning("recorder_fault", code=fault.code.value, reason=fault.reason)
        self._emit(FaultChanged(fault))

    def is_recording(self, now_ns: int) -> bool:
        return self._current is not None

    def standby(self) -> None:
        if self._current is not None:
            self._log.info("standby_ignored_while_recording")
            return
        self._standby = True
        self._awake.clear()
        self._kill()

    def wake(self, now_ns: int) -> None:
        if self._standby:
            self._standby = False
            self._awake.set()

    def attach(self, activation_id: str, *, issuer: str = "") -> None:
        rec = self._current
        if rec is None or (activation_id, issuer) in self._claims:
            return
        if len(self._claims) >= MAX_CLAIMS:
            # Past the bound a claim is not kept: the recording goes on for the others
            # (and its cancel is not obeyed); a recording lists at most this many.
            self._log.warning("claim_not_kept", activation_id=activation_id, bound=MAX_CLAIMS)
            return
        self._claims.append((activation_id, issuer))
        if activation_id not in rec.activations:
            rec.activations.append(activation_id)
        if issuer not in rec.issuers:
            rec.issuers.append(issuer)
        if rec.directory is not None:  # a recovery after a crash must know where to report
            try:
                write_synced(rec.directory / "recording.json", _recording_json(rec))
            except OSError as exc:
                self._log.error("recording_json_failed", error=str(exc))

    async def cancel(self, activation_id: str, now_ns: int, *, issuer: str = "") -> bool:
        claim = (activation_id, issuer)
        if self._current is None or claim not in self._claims:
            return False
        self._claims.remove(claim)
        if self._claims:
            return False
        await self.stop(StopReason.CANCEL, now_ns)
        return True

    async def start(
        self, activation_id: str, pre_event_s: int, command_at_ns: int, *, issuer: str = ""
    ) -> RecordingStart:
        if self._current is not None:
            self.attach(activation_id, issuer=issuer)
            return self._start_of(self._current)
        if self._waiter is not None:  # another claim's start waits for its frame: join it
            await asyncio.shield(self._waiter.future)  # its RecorderFault is this one's
            assert self._current is not None
            self.attach(activation_id, issuer=issuer)
            return self._start_of(self._current)
        self.wake(command_at_ns)
        problem = self._space_problem()
        if problem is not None:
            self._make_room()
            problem = self._space_problem()
        if problem is not None:
            fault = RecorderFault(FaultCode.LOW_DISK, problem)
            self._set_fault(fault)
            raise fault
        if self._fault is not None:  # ffmpeg down or no frames: refuse now, run() is on it
            raise RecorderFault(self._fault.code, self._fault.reason)
        future: asyncio.Future[RecordingStart] = asyncio.get_running_loop().create_future()
        self._waiter = _Waiter(activation_id, issuer, pre_event_s, command_at_ns, future)
        frame_s = 1 / max(1, self.settings.capture.fps)
        try:
            async with asyncio.timeout(2.0 + frame_s):
                return await asyncio.shield(future)
        except TimeoutError:
            if future.done() and not future.cancelled() and future.exception() is None:
                return future.result()  # it started as the deadline passed: it runs
            fault = RecorderFault(
                FaultCode.NO_FRAMES, f"no frame within {2.0 + frame_s:.3f} s of the command"
            )
            if not future.done():  # the starts that joined this one fail with it
                future.set_exception(fault)
                future.exception()  # retrieved: no "never retrieved" warning without them
            raise fault from None
        finally:
            if self._waiter is not None and self._waiter.future is future:
                self._waiter = None

    async def stop(self, reason: StopReason, now_ns: int, *, note: str = "") -> Recording | None:
        return self._stop(reason, now_ns, note)

    def _stop(self, reason: StopReason, now_ns: int, note: str = "") -> Recording | None:
        rec = self._current
        if rec is None:
            return None
        assert rec.directory is not None
        try:
            if self._open is not None:
                writer, self._open = self._open, None
                if writer.frames:
                    self._close_into_recording(writer)
                else:
                    writer.discard()
        except OSError as exc:
            self._log.error("segment_close_failed", error=str(exc))
        self._break()
        self._current, self._claims = None, []
        rec.stopped_at_ns = now_ns
        rec.stop_reason = reason
        rec.stop_note = note
        try:
            write_synced(rec.directory / "recording.json", _recording_json(rec, self._frames_kept))
            sync_dir(rec.directory)
        except OSError as exc:
            self._log.error("recording_json_failed", error=str(exc))
        self._log.info(
            "recording_stopped",
            recording=rec.recording_id,
            reason=reason.value,
            segments=len(rec.segments),
        )
        self._emit(RecordingStopped(rec))
        return rec

    # --- the process ----------------------------------------------------------------------
    async def run(self) -> None:
        # What a previous run left open is closed first (reported as `interrupted`).
        for recovered in open_recordings(self.recordings_dir, self.camera_id, self._clock()):
            self._emit(RecordingStopped(recovered))
        backoff = self.settings.backoff_min_s
        try:
            while True:
                if self._standby:
                    self._discard_buffer()
                    await self._awake.wait()
                    continue
                started = time.monotonic()
                frames_before = self.frames_seen
                await self._run_once()
                if self._standby:
                    continue
                ran_well = self.frames_seen > frames_before and (
                    time.monotonic() - started > 10 * backoff
                )
                if ran_well:
                    backoff = self.settings.backoff_min_s
                self.restarts += 1
                self._log.info("ffmpeg_restart_in", seconds=backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.settings.backoff_max_s)
        finally:
            self._kill()
            self._stop(StopReason.SHUTDOWN, self._clock())
            if self._open is not None:
                self._open.discard()
                self._open = None

    async def _run_once(self) -> None:
        argv = ffmpeg_command(self.settings.capture, self.settings.ffmpeg)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            self._set_fault(RecorderFault(FaultCode.FFMPEG_EXITED, f"cannot run ffmpeg: {exc}"))
            return
        self._proc = proc
        self._splitter = TsSplitter(self.settings.segment_s)
        self._drop_oldest(len(self._ring))  # what a new process sends does not follow on
        self._log.info("ffmpeg_started", pid=proc.pid)
        drain = asyncio.create_task(self._drain_stderr(proc))
        why = FaultCode.FFMPEG_EXITED, "ffmpeg exited"
        try:
            why = await self._pump(proc)
        finally:
            self._kill()
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
            await asyncio.gather(drain, return_exceptions=True)
            self._proc = None
        if self._standby:
            return
        code, reason = why
        if code is FaultCode.FFMPEG_EXITED:
            tail = " | ".join(self._stderr)
            reason = f"ffmpeg exited with status {proc.returncode}" + (f": {tail}" if tail else "")
        self._fail_waiter(RecorderFault(code, reason))
        self._set_fault(RecorderFault(code, reason))
        self._stop(StopReason.SOURCE_LOST, self._last_frame_ns() or self._clock())
        if self._open is not None:
            self._close_into_ring(self._open)
            self._open = None

    async def _drain_stderr(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            # ffmpeg names the source in its errors, password and all.
            text = redact_credentials(line.decode(errors="replace").strip())
            if text:
                self._stderr.append(text[:300])
                self._log.debug("ffmpeg_stderr", line=text[:300])

    def _kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()

    async def _pump(self, proc: asyncio.subprocess.Process) -> tuple[FaultCode, str]:
        assert proc.stdout is not None
        timeout = self.settings.first_frame_timeout_s
        frames = self.frames_seen
        while True:
            try:
                async with asyncio.timeout(timeout):
                    chunk = await proc.stdout.read(1 << 16)
            except TimeoutError:
                return FaultCode.NO_FRAMES, f"no frame for {timeout:g} s"
            if not chunk:
                return FaultCode.FFMPEG_EXITED, "ffmpeg exited"
            try:
                self._take(chunk)
            except OSError as exc:
                self._storage_failed(exc)
            if self.frames_seen > frames:
                timeout = self.settings.source_timeout_s
                frames = self.frames_seen

    # --- the stream -----------------------------------------------------------------------
    def _take(self, chunk: bytes) -> None:
        now = self._clock()
        for piece in self._splitter.feed(chunk):
            if isinstance(piece, Data):
                if self._open is not None:
                    self._open.write(piece.data)
            elif isinstance(piece, Cut):
                self._cut()
            else:
                self._frame(piece, now)

    def _frame(self, piece: FrameDone, now: int) -> None:
        if self._open is None:
            return
        ns = ticks_to_ns(piece.pts, now)
        self._open.frame(ns)
        self.frames_seen += 1
        if self._fault is not None and self._fault.code is not FaultCode.LOW_DISK:
            self._set_fault(None)
        waiter = self._waiter
        if waiter is not None and ns >= waiter.command_at_ns and not waiter.future.done():
            self._begin(waiter, ns)
            return
        rec = self._current
        if rec is not None:
            if ns - rec.started_at_ns >= int(self.record_s * NS):
                self._stop(StopReason.MAX_DURATION, ns)
            elif self.frames_seen % 8 == 0 and free_bytes(self.root) < self.settings.min_free_bytes:
                self._stop(StopReason.LOW_DISK, ns, "free space under min_free_bytes")

    def _cut(self) -> None:
        if self._open is not None:
            writer, self._open = self._open, None
            if self._current is not None:
                self._close_into_recording(writer)
            else:
                self._close_into_ring(writer)
        problem = self._space_problem()
        if problem is not None:
            self._make_room()
            problem = self._space_problem()
        if problem is not None:
            if self._current is not None:
                self._stop(StopReason.LOW_DISK, self._last_frame_ns() or self._clock(), problem)
            self._set_fault(RecorderFault(FaultCode.LOW_DISK, problem))
            self._break()  # nothing is written until there is room again
            return
        if self._fault is not None and self._fault.code is FaultCode.LOW_DISK:
            self._set_fault(None)
        if self._current is not None:
            assert self._current.directory is not None
            path = self._current.directory / f"{self._rec_seq:010d}.ts"
            self._rec_seq += 1
        else:
            path = self.buffer_dir / f"{self._seq:010d}.ts"
            self._seq += 1
        self._open = SegmentWriter(path)

    def _close_into_ring(self, writer: SegmentWriter) -> None:
        if not writer.frames:
            writer.discard()
            return
        closed = writer.close()
        self._ring.append(_Buffered(writer.path, closed))
        spans = [b.span for b in self._ring]
        self._drop_oldest(ring_rules.drop_for_age(spans, self.buffer_s, closed.last_frame_ns))

    def _close_into_recording(self, writer: SegmentWriter) -> None:
        rec = self._current
        assert rec is not None
        assert rec.directory is not None
        closed = writer.close()
        self._recorded_bytes += closed.bytes
        rec.segments.append(closed)
        append_synced(rec.directory / "segments.jsonl", segment_line(closed))
        self._emit(SegmentClosed(rec, closed))

    def _last_frame_ns(self) -> int | None:
        if self._open is not None and self._open.frames:
            return self._open.frames[-1]
        if self._current is not None and self._current.segments:
            return self._current.segments[-1].last_frame_ns
        return None

    def _storage_failed(self, exc: OSError) -> None:
        import errno

        low = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        code = FaultCode.LOW_DISK if low else FaultCode.STORAGE_ERROR
        reason = f"cannot write a segment: {exc.strerror or exc}"
        self._fail_waiter(RecorderFault(code, reason))
        if self._current is not None:
            self._stop(
                StopReason.LOW_DISK if low else StopReason.STORAGE_ERROR,
                self._last_frame_ns() or self._clock(),
                reason,
            )
        elif self._open is not None:
            self._open.discard()
            self._open = None
        self._open = None
        self._break()
        self._set_fault(RecorderFault(code, reason))

    def _fail_waiter(self, fault: RecorderFault) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.future.done():
            waiter.future.set_exception(fault)

    def _begin(self, waiter: _Waiter, frame_ns: int) -> None:
        """The first whole frame at or after the command is written: make it durable and
        turn the buffer and the open segment into a recording."""
        self._waiter = None
        writer = self._open
        assert writer is not None
        # How old the frame was when it reached us (FFmpeg's own delay; the benchmark).
        self.start_frame_age_ns = self._clock() - frame_ns
        try:
            writer.sync()
            rec = self._make_recording(waiter, frame_ns, writer)
        except OSError as exc:
            fault = RecorderFault(FaultCode.STORAGE_ERROR, f"cannot start the recording: {exc}")
            if self._current is not None:
                # Made but not durable: no claim may be left on a recording whose start
                # is refused. It stops at once (what it holds is kept, and reported).
                self._stop(StopReason.STORAGE_ERROR, frame_ns, fault.reason)
            waiter.future.set_exception(fault)
            return
        self._emit(RecordingStarted(rec))
        for segment in rec.segments:
            self._emit(SegmentClosed(rec, segment))
        waiter.future.set_result(self._start_of(rec))

    def _make_recording(self, waiter: _Waiter, frame_ns: int, writer: SegmentWriter) -> Recording:
        ring = list(self._ring)
        firsts = [b.file.first_frame_ns for b in ring] + [writer.frames[0]]
        keep = ring_rules.keep_from(firsts, waiter.command_at_ns, waiter.pre_event_s)
        kept = ring[keep:]
        name = f"{_utc_name(frame_ns)}-{_UNSAFE.sub('_', waiter.activation_id)[:64]}"
        directory = self.recordings_dir / name
        n = 1
        while directory.exists():
            n += 1
            directory = self.recordings_dir / f"{name}.{n}"
        directory.mkdir()
        sync_dir(self.recordings_dir)  # the new folder's entry, before `started` is acked
        segments: list[SegmentFile] = []
        for i, buffered in enumerate(kept):
            target = directory / f"{i:010d}.ts"
            os.rename(buffered.path, target)
            segments.append(dataclasses.replace(buffered.file, name=target.name))
            self._recorded_bytes += buffered.file.bytes
        # The ring is left empty: what it held before the kept segments no longer leads
        # on to what comes next (the recording has that).
        self._ring.clear()
        for older in ring[:keep]:
            older.path.unlink(missing_ok=True)
        open_target = directory / f"{len(kept):010d}.ts"
        os.rename(writer.path, open_target)
        writer.path = open_target
        self._rec_seq = len(kept) + 1
        first = segments[0].first_frame_ns if segments else writer.frames[0]
        frames_kept = sum(s.frames for s in segments) + sum(
            1 for t in writer.frames if t < waiter.command_at_ns
        )
        rec = Recording(
            recording_id=directory.name,
            camera_id=self.camera_id,
            activations=[waiter.activation_id],
            command_at_ns=waiter.command_at_ns,
            started_at_ns=frame_ns,
            first_frame_ns=first,
            pre_event_kept_s=round((frame_ns - first) / NS, 3),
            directory=directory,
            segments=segments,
            issuers=[waiter.issuer],
        )
        self._current = rec
        self._claims = [(waiter.activation_id, waiter.issuer)]
        self._frames_kept = frames_kept
        for segment in segments:
            append_synced(directory / "segments.jsonl", segment_line(segment))
        write_synced(directory / "recording.json", _recording_json(rec, frames_kept))
        sync_dir(directory)
        sync_dir(self.buffer_dir)
        self._log.info(
            "recording_started",
            recording=rec.recording_id,
            activation_id=waiter.activation_id,
            pre_event_kept_s=rec.pre_event_kept_s,
            start_after_command_ms=round((frame_ns - waiter.command_at_ns) / 1e6, 3),
        )
        return rec

    def _start_of(self, rec: Recording) -> RecordingStart:
        return RecordingStart(
            rec.started_at_ns, rec.first_frame_ns, rec.pre_event_kept_s, self._frames_kept
        )

    def _break(self) -> None:
        """The stream no longer follows on from what the ring holds (a stop, a write that
        failed, no room): the ring is emptied, so a recording's pre-event segments are
        always one unbroken run, and the next segment begins at the next keyframe."""
        self._drop_oldest(len(self._ring))
        self._splitter.resync()

    def _discard_buffer(self) -> None:
        if self._open is not None:
            self._open.discard()
            self._open = None
        self._break()


# Claims (activation, issuer) one recording keeps, at most: as many activation ids as a
# `recording` message carries.
MAX_CLAIMS = 64


def _recording_json(rec: Recording, frames_kept: int | None = None) -> bytes:
    doc: dict[str, object] = {
        "recording_id": rec.recording_id,
        "camera_id": rec.camera_id,
        "activations": rec.activations,
        "command_at_ns": rec.command_at_ns,
        "started_at_ns": rec.started_at_ns,
        "first_frame_ns": rec.first_frame_ns,
        "pre_event_kept_s": rec.pre_event_kept_s,
        "segments": len(rec.segments),
        "stopped_at_ns": rec.stopped_at_ns,
        "stop_reason": rec.stop_reason.value if rec.stop_reason else None,
        "stop_note": rec.stop_note,
        "issuers": rec.issuers,
    }
    if frames_kept is not None:
        doc["pre_event_frames"] = frames_kept
    return json.dumps(doc, indent=2).encode() + b"\n"


def find_ffmpeg(name: str = "ffmpeg") -> str | None:
    return shutil.which(name)
