"""A simulated camera recorder with a pre-event buffer, on the :class:`Recorder` interface.

A body camera records continuously into a ring buffer while idle; when told to start, the
recording begins ``pre_event_s`` in the past, limited by what the buffer holds: at most
``buffer_s``, and nothing from before power-on or from standby (a camera asleep does not
buffer; woken, it buffers again from then). Frames are at fixed times (power-on + k/fps),
so the buffer is computed, not filled frame by frame: a fleet of a thousand simulated
cameras costs nothing while idle. A recording costs one timer on the event loop (its end
after ``record_s``, MAX_DURATION), not a task. It writes no files: a recording's
``directory`` is None and its ``segments`` empty.

The ``*_now`` methods are the synchronous core (the async interface wraps them), for
tests and simulations that drive a recorder without an event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

from mesh.camera.recording.base import (
    FaultChanged,
    Listeners,
    Recorder,
    RecorderEvent,
    RecorderFault,
    Recording,
    RecordingStart,
    RecordingStarted,
    RecordingStopped,
    StopReason,
)
from mesh.clock import NS


def recording_id_of(camera_id: str, started_at_ns: int) -> str:
    """A recording's id: short, topic-safe, the same for the same camera and start."""
    digest = hashlib.sha256(f"{camera_id}\0{started_at_ns}".encode()).hexdigest()
    return f"r-{digest[:20]}"


@dataclass(eq=False)
class SimulatedRecorder(Recorder):
    powered_on_ns: int
    fps: int = 30
    buffer_s: float = 120.0
    # A recording stops by itself after this long (an officer would stop it; the simulation
    # must not record forever).
    record_s: float = 300.0
    camera_id: str = ""  # named in its recordings (the agent sets it if empty)
    started_at_ns: int | None = None
    activations: list[str] = field(default_factory=list)
    recordings: int = 0
    stopped: int = 0  # recordings stopped early because their activation was cancelled
    # The claims the current recording is for, each (activation id, issuer): the one that
    # started it, and any that found it already recording. The same activation id from two
    # issuers is two claims: one issuer's cancel must not remove the other's.
    _current: list[tuple[str, str]] = field(default_factory=list)
    # Buffering since then (power-on, or waking from standby); None in standby.
    buffering_since_ns: int | None = None
    _recording: Recording | None = None
    _fault: RecorderFault | None = None
    _listeners: Listeners = field(default_factory=Listeners)
    _timer: asyncio.TimerHandle | None = None

    def __post_init__(self) -> None:
        if self.buffering_since_ns is None:
            self.buffering_since_ns = self.powered_on_ns

    # --- the interface ----------------------------------------------------------------
    async def run(self) -> None:
        """Nothing to supervise (no process, no buffer to fill): returns at once, so a
        simulated fleet has no task per camera."""

    async def start(
        self, activation_id: str, pre_event_s: int, command_at_ns: int, *, issuer: str = ""
    ) -> RecordingStart:
        return self.start_now(activation_id, pre_event_s, command_at_ns, issuer=issuer)

    async def cancel(self, activation_id: str, now_ns: int, *, issuer: str = "") -> bool:
        return self.cancel_now(activation_id, now_ns, issuer=issuer)

    async def stop(self, reason: StopReason, now_ns: int, *, note: str = "") -> Recording | None:
        return self.stop_now(reason, now_ns, note=note)

    @property
    def fault(self) -> RecorderFault | None:
        return self._fault

    @property
    def current(self) -> Recording | None:
        return self._recording if self.started_at_ns is not None else None

    def listen(self, callback: Callable[[RecorderEvent], None]) -> None:
        self._listeners.add(callback)

    def set_fault(self, fault: RecorderFault | None) -> None:
        """Simulate a fault (or its end): starts raise it until cleared; announced."""
        if fault is self._fault:
            return
        self._fault = fault
        self._emit(FaultChanged(fault))

    def standby(self) -> None:
        """Asleep: the buffer is not filled (what it held is gone)."""
        self.buffering_since_ns = None

    def wake(self, now_ns: int) -> None:
        """Out of standby: the buffer fills again from now."""
        if self.buffering_since_ns is None:
            self.buffering_since_ns = now_ns

    def is_recording(self, now_ns: int) -> bool:
        if self.started_at_ns is None:
            return False
        end_ns = self.started_at_ns + int(self.record_s * NS)
        if now_ns >= end_ns:
            self._close(StopReason.MAX_DURATION, end_ns, "")
            return False
        return True

    # --- the synchronous core -----------------------------------------------------------
    def start_now(
        self, activation_id: str, pre_event_s: int, now_ns: int, *, issuer: str = ""
    ) -> RecordingStart:
        """Start recording now, keeping up to ``pre_event_s`` of buffered frames (none if in
        standby until now: the start wakes it). Raises the fault set, if any."""
        if self._fault is not None:
            raise self._fault
        if self.started_at_ns is not None:
            # Never two recordings at once: whatever ran is closed first (the agent
            # attaches instead; a caller that starts again means a new recording).
            self._close(StopReason.MAX_DURATION, now_ns, "")
        since = self.buffering_since_ns
        buffered_ns = 0 if since is None else min(int(self.buffer_s * NS), max(0, now_ns - since))
        self.wake(now_ns)
        keep_ns = min(pre_event_s * NS, buffered_ns)
        # Frame k is at powered_on + k/fps exactly; integer maths avoids a drifting period.
        # Kept: the frames in [now - keep, now), i.e. indices ceil(start) .. ceil(now) - 1.
        since_on = now_ns - self.powered_on_ns
        end = -(-since_on * self.fps // NS)  # ceiling division
        oldest = -(-(since_on - keep_ns) * self.fps // NS)
        frames = max(0, end - oldest)
        first_frame = self.powered_on_ns + -(-oldest * NS // self.fps)
        kept_s = round(frames / self.fps, 3)
        self.started_at_ns = now_ns
        self.activations.append(activation_id)
        self._current = [(activation_id, issuer)]
        self.recordings += 1
        self._recording = Recording(
            recording_id=recording_id_of(self.camera_id, now_ns),
            camera_id=self.camera_id,
            activations=[activation_id],
            command_at_ns=now_ns,
            started_at_ns=now_ns,
            first_frame_ns=first_frame if frames else now_ns,
            pre_event_kept_s=kept_s,
        )
        self._arm_timer(now_ns)
        self._emit(RecordingStarted(self._recording))
        return RecordingStart(now_ns, first_frame, kept_s, frames)

    def attach(self, activation_id: str, *, issuer: str = "") -> None:
        """An activation that found the camera already recording joins that recording
        (once per claim)."""
        if (activation_id, issuer) in self._current:
            return
        self.activations.append(activation_id)
        self._current.append((activation_id, issuer))
        if self._recording is not None and activation_id not in self._recording.activations:
            self._recording.activations.append(activation_id)

    def cancel_now(self, activation_id: str, now_ns: int, *, issuer: str = "") -> bool:
        """A claim was cancelled: stop if the current recording is its alone (one that
        another claim joined goes on). The recording is kept. True if stopped."""
        claim = (activation_id, issuer)
        if claim not in self._current or not self.is_recording(now_ns):
            return False
        self._current.remove(claim)
        if self._current:
            return False
        self._close(StopReason.CANCEL, now_ns, "")
        self.stopped += 1
        return True

    def stop_now(self, reason: StopReason, now_ns: int, *, note: str = "") -> Recording | None:
        """Stop the running recording, if any, and return it closed."""
        if not self.is_recording(now_ns):
            return None
        return self._close(reason, now_ns, note)

    # --- internals ----------------------------------------------------------------------
    def _close(self, reason: StopReason, at_ns: int, note: str) -> Recording | None:
        recording = self._recording
        self.started_at_ns = None
        self._current = []
        self._recording = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if recording is None:
            return None
        recording.stopped_at_ns = at_ns
        recording.stop_reason = reason
        recording.stop_note = note
        self._emit(RecordingStopped(recording))
        return recording

    def _arm_timer(self, now_ns: int) -> None:
        """One loop timer per recording for its end (none without a running loop: the next
        ``is_recording`` call then notices it)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        started = now_ns
        self._timer = loop.call_later(self.record_s, self._timer_fired, started)

    def _timer_fired(self, started_at_ns: int) -> None:
        self._timer = None
        if self.started_at_ns == started_at_ns:
            self._close(StopReason.MAX_DURATION, started_at_ns + int(self.record_s * NS), "")

    def _emit(self, event: RecorderEvent) -> None:
        self._listeners.emit(event)
