"""Distances and the simulated recorder's pre-event buffer."""

from __future__ import annotations

import pytest

from mesh.camera.recorder import SimulatedRecorder
from mesh.clock import NS
from mesh.decide.geo import haversine_m, offset


def test_one_degree_of_latitude_is_about_111_km() -> None:
    assert haversine_m(0, 0, 1, 0) == pytest.approx(111_195, rel=1e-3)


def test_paris_to_london() -> None:
    # 343.5 km great-circle on a spherical Earth (published figures: 343-344 km).
    assert haversine_m(48.8566, 2.3522, 51.5074, -0.1278) / 1000 == pytest.approx(343.5, abs=1)


@pytest.mark.parametrize(("north", "east"), [(100, 0), (0, 100), (-70, 70), (1500, -800)])
def test_offset_is_the_inverse_of_distance(north: float, east: float) -> None:
    lat, lon = offset(39.95, -75.16, north, east)
    assert haversine_m(39.95, -75.16, lat, lon) == pytest.approx(
        (north**2 + east**2) ** 0.5, rel=1e-4
    )


def test_recording_keeps_the_requested_pre_event_span() -> None:
    rec = SimulatedRecorder(powered_on_ns=0, fps=30, buffer_s=120)
    start = rec.start_now("a-1", pre_event_s=30, now_ns=600 * NS)
    assert start.pre_event_kept_s == pytest.approx(30.0)
    assert start.frames_kept == 900
    assert start.first_frame_ns == 570 * NS
    assert rec.is_recording(601 * NS)


def test_pre_event_is_limited_by_uptime_and_buffer() -> None:
    young = SimulatedRecorder(powered_on_ns=0, fps=30, buffer_s=120)
    assert young.start_now("a", pre_event_s=60, now_ns=10 * NS).pre_event_kept_s == pytest.approx(
        10
    )
    small = SimulatedRecorder(powered_on_ns=0, fps=30, buffer_s=15)
    assert small.start_now("a", pre_event_s=60, now_ns=600 * NS).pre_event_kept_s == pytest.approx(
        15
    )
    none = SimulatedRecorder(powered_on_ns=0, fps=30, buffer_s=120)
    assert none.start_now("a", pre_event_s=0, now_ns=600 * NS).frames_kept == 0


def test_recording_stops_by_itself() -> None:
    rec = SimulatedRecorder(powered_on_ns=0, record_s=60)
    rec.start_now("a", pre_event_s=0, now_ns=100 * NS)
    assert rec.is_recording(159 * NS)
    assert not rec.is_recording(160 * NS)


@pytest.mark.parametrize("offset_ns", [0, 1, 10_000_000, 33_333_332, 33_333_334])
def test_kept_span_does_not_depend_on_where_now_falls_between_frames(offset_ns: int) -> None:
    rec = SimulatedRecorder(powered_on_ns=0, fps=30, buffer_s=120)
    start = rec.start_now("a", pre_event_s=60, now_ns=600 * NS + offset_ns)
    assert start.frames_kept == 1800
    assert 600 * NS + offset_ns - start.first_frame_ns <= 60 * NS
