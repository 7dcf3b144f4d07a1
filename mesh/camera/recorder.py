"""A simulated camera recorder with a pre-event buffer.

A body camera records continuously into a ring buffer while idle; when told to start, the
recording begins ``pre_event_s`` in the past, limited by what the buffer holds: at most
``buffer_s``, and nothing from before power-on or from standby (a camera asleep does not
buffer; woken, it buffers again from then). Frames are at fixed times (power-on + k/fps),
so the buffer is computed, not filled frame by frame: a fleet of a thousand simulated
cameras costs nothing while idle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mesh.clock import NS


@dataclass(frozen=True)
class RecordingStart:
    started_at_ns: int
    first_frame_ns: int
    pre_event_kept_s: float
    frames_kept: int


@dataclass
class SimulatedRecorder:
    powered_on_ns: int
    fps: int = 30
    buffer_s: float = 120.0
    # A recording stops by itself after this long (an officer would stop it; the simulation
    # must not record forever).
    record_s: float = 300.0
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

    def __post_init__(self) -> None:
        if self.buffering_since_ns is None:
            self.buffering_since_ns = self.powered_on_ns

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
        if now_ns - self.started_at_ns >= self.record_s * NS:
            self.started_at_ns = None
            return False
        return True

    def start(
        self, activation_id: str, pre_event_s: int, now_ns: int, *, issuer: str = ""
    ) -> RecordingStart:
        """Start recording now, keeping up to ``pre_event_s`` of buffered frames (none if in
        standby until now: the start wakes it)."""
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
        self.started_at_ns = now_ns
        self.activations.append(activation_id)
        self._current = [(activation_id, issuer)]
        self.recordings += 1
        return RecordingStart(now_ns, first_frame, round(frames / self.fps, 3), frames)

    def attach(self, activation_id: str, *, issuer: str = "") -> None:
        """An activation that found the camera already recording joins that recording
        (once per claim)."""
        if (activation_id, issuer) in self._current:
            return
        self.activations.append(activation_id)
        self._current.append((activation_id, issuer))

    def cancel(self, activation_id: str, now_ns: int, *, issuer: str = "") -> bool:
        """A claim was cancelled: stop if the current recording is its alone (one that
        another claim joined goes on). The recording is kept. True if stopped."""
        claim = (activation_id, issuer)
        if claim not in self._current or not self.is_recording(now_ns):
            return False
        self._current.remove(claim)
        if self._current:
            return False
        self.started_at_ns = None
        self.stopped += 1
        return True
