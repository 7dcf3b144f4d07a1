"""The simulated recorder on the Recorder interface (issue 19): its events, its stops and
their reasons, its faults, no files, and what a fleet of them costs the event loop."""

from __future__ import annotations

import asyncio

import pytest

from mesh.camera.recording.base import (
    FaultChanged,
    FaultCode,
    Recorder,
    RecorderEvent,
    RecorderFault,
    RecordingStarted,
    RecordingStopped,
    StopReason,
)
from mesh.camera.recording.simulated import SimulatedRecorder
from mesh.clock import NS

T0 = 1_790_000_000 * NS


def recorder(**kw: float) -> tuple[SimulatedRecorder, list[RecorderEvent]]:
    rec = SimulatedRecorder(powered_on_ns=T0 - 600 * NS, camera_id="bwc-1", **kw)  # type: ignore[arg-type]
    events: list[RecorderEvent] = []
    rec.listen(events.append)
    return rec, events


def test_it_is_a_recorder_with_no_files() -> None:
    rec, events = recorder()
    assert isinstance(rec, Recorder)
    start = rec.start_now("a-1", 30, T0, issuer="gw-1")
    assert (start.started_at_ns, start.pre_event_kept_s, start.frames_kept) == (T0, 30.0, 900)
    (started,) = events
    assert isinstance(started, RecordingStarted)
    recording = started.recording
    assert recording is rec.current
    assert (recording.camera_id, recording.activations) == ("bwc-1", ["a-1"])
    assert (recording.directory, recording.segments) == (None, [])
    assert recording.first_frame_ns == start.first_frame_ns
    assert recording.recording_id.startswith("r-")
    stopped = rec.stop_now(StopReason.OFFICER, T0 + 5 * NS, note="done")
    assert stopped is recording
    assert isinstance(events[-1], RecordingStopped)
    assert (recording.stop_reason, recording.stop_note, recording.stopped_at_ns) == (
        StopReason.OFFICER,
        "done",
        T0 + 5 * NS,
    )
    assert rec.current is None
    assert rec.stop_now(StopReason.OFFICER, T0 + 6 * NS) is None  # nothing running
    assert len(events) == 2


def test_a_cancel_stops_it_only_when_no_claim_is_left() -> None:
    rec, events = recorder()
    rec.start_now("a-1", 30, T0, issuer="gw-1")
    rec.attach("a-2", issuer="gw-2")
    assert rec.current is not None
    assert rec.current.activations == ["a-1", "a-2"]
    assert not rec.cancel_now("a-1", T0 + NS, issuer="gw-1")
    assert rec.cancel_now("a-2", T0 + NS, issuer="gw-2")
    stopped = events[-1]
    assert isinstance(stopped, RecordingStopped)
    assert stopped.recording.stop_reason is StopReason.CANCEL


def test_past_record_s_it_has_stopped_for_max_duration_even_unobserved() -> None:
    """Without an event loop (no timer), the next look at it closes it, at the time it
    should have ended."""
    rec, events = recorder(record_s=10.0)
    rec.start_now("a-1", 30, T0)
    assert rec.is_recording(T0 + 9 * NS)
    assert not rec.is_recording(T0 + 11 * NS)
    stopped = events[-1]
    assert isinstance(stopped, RecordingStopped)
    assert stopped.recording.stop_reason is StopReason.MAX_DURATION
    assert stopped.recording.stopped_at_ns == T0 + 10 * NS


async def test_the_max_duration_stop_comes_from_a_loop_timer() -> None:
    """Nobody polls it: the event comes all the same (and the agent announces it)."""
    rec, events = recorder(record_s=0.05)
    stopped = asyncio.Event()
    rec.listen(lambda e: stopped.set() if isinstance(e, RecordingStopped) else None)
    await rec.start("a-1", 30, T0)
    await asyncio.wait_for(stopped.wait(), 5)
    last = events[-1]
    assert isinstance(last, RecordingStopped)
    assert last.recording.stop_reason is StopReason.MAX_DURATION
    assert last.recording.stopped_at_ns == T0 + int(0.05 * NS)
    assert rec.current is None


async def test_a_fleet_of_recorders_costs_the_loop_no_task() -> None:
    """A thousand recording cameras: one timer each on the loop, no task per camera."""
    before = len(asyncio.all_tasks())
    fleet = [SimulatedRecorder(powered_on_ns=T0 - 600 * NS) for _ in range(1000)]
    for n, rec in enumerate(fleet):
        await rec.start(f"a-{n}", 30, T0)
    assert len(asyncio.all_tasks()) == before
    for rec in fleet:
        await rec.stop(StopReason.SHUTDOWN, T0 + NS)
    assert all(rec._timer is None for rec in fleet)


async def test_a_fault_refuses_starts_and_is_announced() -> None:
    rec, events = recorder()
    fault = RecorderFault(FaultCode.LOW_DISK, "1.2 GB free, 2 GB required")
    rec.set_fault(fault)
    assert rec.fault is fault
    with pytest.raises(RecorderFault) as refused:
        await rec.start("a-1", 30, T0)
    assert refused.value.code is FaultCode.LOW_DISK
    assert not rec.is_recording(T0)
    rec.set_fault(None)
    await rec.start("a-1", 30, T0)
    assert [type(e) for e in events] == [FaultChanged, FaultChanged, RecordingStarted]
    first, second = events[0], events[1]
    assert isinstance(first, FaultChanged)
    assert isinstance(second, FaultChanged)
    assert (first.fault, second.fault) == (fault, None)
