"""What a camera agent needs from a recorder, whatever records the frames.

A recorder keeps a pre-event buffer while idle, starts a recording when an activation
asks for one (keeping what the buffer holds of the ``pre_event_s`` before the command),
and stops it for a stated reason. ``start`` returns only once the recording verifiably
runs: for the FFmpeg back end, once the first frame after the command is on disk. A
recorder that cannot start raises :class:`RecorderFault`, whose code the agent puts in
its `rejected` ack and in its presence.

Times are UTC wall-clock nanoseconds taken from the media (frame timestamps), except
``command_at_ns``, which is the agent's clock when the command arrived.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import structlog

from mesh.media import redact_credentials


class StopReason(StrEnum):
    """Why a recording ended (the `recording` message and the manifest carry it)."""

    OFFICER = "officer"  # stopped on the camera, by CLI or local API, with a note
    CANCEL = "cancel"  # every activation it was for was cancelled
    MAX_DURATION = "max_duration"  # the configured longest recording was reached
    LOW_DISK = "low_disk"  # free space fell under the configured minimum
    STORAGE_ERROR = "storage_error"  # a segment could not be written
    SOURCE_LOST = "source_lost"  # the device or stream stopped delivering frames
    SHUTDOWN = "shutdown"  # the agent was stopped
    INTERRUPTED = "interrupted"  # left open by a run that ended abruptly; closed at the next


class FaultCode(StrEnum):
    """Why a recorder cannot record now (presence ``recorder_fault``, `rejected` acks)."""

    NO_FRAMES = "no_frames"  # the source delivers nothing (device gone, stream down)
    LOW_DISK = "low_disk"
    STORAGE_ERROR = "storage_error"
    FFMPEG_EXITED = "ffmpeg_exited"
    RECORDER_ERROR = "recorder_error"  # the recorder itself failed (a bug): see its log


class RecorderFault(Exception):
    """The recorder cannot start (or keep) recording."""

    def __init__(self, code: FaultCode, reason: str) -> None:
        # The reason travels in acks, presence and the gateway's log: never a password.
        reason = redact_credentials(reason)
        super().__init__(f"{code.value}: {reason}")
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class RecordingStart:
    """What the `started` ack reports."""

    started_at_ns: int  # media time of the first frame after the command
    first_frame_ns: int  # media time of the first kept (pre-event) frame
    pre_event_kept_s: float  # measured from the frames kept: started_at - first_frame
    frames_kept: int  # pre-event frames kept


@dataclass(frozen=True)
class SegmentFile:
    """One closed segment of a recording."""

    name: str  # file name inside the recording's directory
    first_frame_ns: int
    last_frame_ns: int
    frames: int
    bytes: int
    sha256: str  # hex of the file's bytes


@dataclass
class Recording:
    """One recording: started for one or more activations, ended once with a reason."""

    recording_id: str
    camera_id: str
    activations: list[str]
    command_at_ns: int
    started_at_ns: int
    first_frame_ns: int
    pre_event_kept_s: float
    directory: Path | None = None  # None for the simulation (no files)
    segments: list[SegmentFile] = field(default_factory=list)
    stopped_at_ns: int | None = None
    stop_reason: StopReason | None = None
    stop_note: str = ""  # the officer's spoken or typed reason
    # The issuers of its claims: where its `stop` goes when the agent that started it is
    # gone (a recording recovered after a crash).
    issuers: list[str] = field(default_factory=list)
    # The SHA-256 (hex) of the recording's signed evidence manifest, once written (the
    # `recording` stop message carries it); None without one (the simulation).
    manifest_sha256: str | None = None


@dataclass(frozen=True)
class RecordingStarted:
    recording: Recording


@dataclass(frozen=True)
class SegmentClosed:
    recording: Recording
    segment: SegmentFile


@dataclass(frozen=True)
class RecordingStopped:
    recording: Recording


@dataclass(frozen=True)
class FaultChanged:
    fault: RecorderFault | None  # None: recovered


RecorderEvent = RecordingStarted | SegmentClosed | RecordingStopped | FaultChanged


class Listeners:
    """The callbacks registered by ``Recorder.listen``, called in order. One that raises
    is logged and the others still run: a listener's bug must not stop a recording."""

    def __init__(self) -> None:
        self._callbacks: list[Callable[[RecorderEvent], None]] = []

    def add(self, callback: Callable[[RecorderEvent], None]) -> None:
        self._callbacks.append(callback)

    def emit(self, event: RecorderEvent) -> None:
        for callback in self._callbacks:
            try:
                callback(event)
            except Exception:
                structlog.get_logger("mesh.recorder").exception(
                    "recorder event listener failed", kind=type(event).__name__
                )


class Recorder(ABC):
    """A camera's recorder. Claims are (activation id, issuer) pairs, as in the agent."""

    buffer_s: float
    record_s: float  # longest recording; it stops with MAX_DURATION after this
    # What records, for the evidence manifest: a device path, a stream URL (credentials
    # are taken out before it is written) or a test source; empty for the simulation.
    device_source: str = ""

    @abstractmethod
    async def run(self) -> None:
        """Keep the source and the pre-event buffer going until cancelled (the FFmpeg
        back end supervises its process here, restarting it with backoff)."""

    @abstractmethod
    async def start(
        self, activation_id: str, pre_event_s: int, command_at_ns: int, *, issuer: str = ""
    ) -> RecordingStart:
        """Start a recording for this claim; return once it verifiably runs. Raises
        RecorderFault if it cannot."""

    @abstractmethod
    def attach(self, activation_id: str, *, issuer: str = "") -> None:
        """Another claim joins the running recording."""

    @abstractmethod
    async def cancel(self, activation_id: str, now_ns: int, *, issuer: str = "") -> bool:
        """A claim was cancelled: stop (reason CANCEL) if the recording was its alone.
        True if stopped."""

    @abstractmethod
    async def stop(self, reason: StopReason, now_ns: int, *, note: str = "") -> Recording | None:
        """Stop the running recording, if any, and return it closed."""

    @abstractmethod
    def is_recording(self, now_ns: int) -> bool: ...

    @property
    @abstractmethod
    def fault(self) -> RecorderFault | None:
        """What keeps it from recording now, if anything."""

    @property
    @abstractmethod
    def current(self) -> Recording | None:
        """The recording in progress."""

    @abstractmethod
    def standby(self) -> None:
        """Asleep: no pre-event buffering."""

    @abstractmethod
    def wake(self, now_ns: int) -> None:
        """Out of standby: the buffer fills again from now."""

    @abstractmethod
    def listen(self, callback: Callable[[RecorderEvent], None]) -> None:
        """Call ``callback`` for every event, in order, from the event loop."""
