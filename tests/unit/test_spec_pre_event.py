"""``pre_event_kept_s`` as docs/protocol.md defines it: the video kept from before the
start, frames / fps, from what the camera had buffered (nothing in standby)."""

from __future__ import annotations

import pytest

from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.camera.agent import CameraAgent, CameraIdentity
from mesh.camera.recorder import SimulatedRecorder
from mesh.clock import NS
from mesh.protocol.models import (
    AckStatus,
    CameraRole,
    RecordStart,
    SourceRef,
    SourceType,
    Targets,
    TriggerKind,
    TriggerSummary,
)

T0 = 1_790_000_000 * NS


def test_kept_is_frames_over_fps_rounded_to_the_millisecond() -> None:
    rec = SimulatedRecorder(powered_on_ns=0, fps=30, buffer_s=120)
    # Up 10.01 s: frames at 0, 1/30, … 10.0 s are in the buffer: 301 of them.
    start = rec.start_now("a", pre_event_s=60, now_ns=10_010_000_000)
    assert start.frames_kept == 301
    assert start.pre_event_kept_s == 10.033


def test_a_camera_in_standby_has_no_pre_event_video() -> None:
    """Before: a camera woken by a command reported the buffer it would have had awake."""
    rec = SimulatedRecorder(powered_on_ns=0, fps=30, buffer_s=120)
    rec.standby()
    assert rec.start_now("a", pre_event_s=30, now_ns=600 * NS).pre_event_kept_s == 0.0
    rec = SimulatedRecorder(powered_on_ns=0, fps=30, buffer_s=120)
    rec.standby()
    rec.wake(600 * NS)
    rec.wake(601 * NS)  # already awake: buffering since 600 s
    assert rec.start_now("a", pre_event_s=30, now_ns=605 * NS).pre_event_kept_s == 5.0


async def test_a_camera_woken_by_a_command_acks_no_pre_event_video() -> None:
    agent = CameraAgent(
        CameraIdentity("bwc-7a", "car-7", CameraRole.BODY),
        url=BrokerUrl.parse("mqtt://127.0.0.1:1"),
        topics=Topics("t/mesh/v2"),
        position=None,
        recorder=SimulatedRecorder(powered_on_ns=T0 - 600 * NS),
        asleep=True,
    )
    sent: list[tuple[str, bytes]] = []
    agent.link.publish_soon = lambda topic, payload, **_: sent.append((topic, payload))  # type: ignore[method-assign]
    command = RecordStart(
        activation_id="a-1",
        issuer="gw-car-7",
        trigger=TriggerSummary(
            event_id="e-1",
            kind=TriggerKind.WEAPON_DRAW,
            unit_id="car-7",
            observed_at_ns=T0,
            source=SourceRef(type=SourceType.MANUAL, id="t", authenticated=False),
        ),
        issued_at_ns=T0,
        origin=None,
        radius_m=0.0,
        pre_event_s=30,
        targets=Targets(units=("car-7",)),
        expires_at_ns=2 * T0,
        wake=True,
    )
    try:
        ack = await agent.handle(command, direct=False, received_ns=T0)
        assert ack is not None
        assert ack.status is AckStatus.STARTED
        assert ack.pre_event_kept_s == pytest.approx(0.0)
        assert not agent.asleep
    finally:
        if agent._presence_task is not None:
            agent._presence_task.cancel()
