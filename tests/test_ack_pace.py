"""Retry pacing (pure): no retry sooner than acks are coming back lately."""

from __future__ import annotations

from mesh.ack_pace import AckPace


def test_no_floor_until_enough_answers_are_known() -> None:
    pace = AckPace()
    for _ in range(19):
        pace.observe(5000.0)
    assert pace.retry_floor_ms() == 0.0
    pace.observe(5000.0)
    assert pace.retry_floor_ms() == 10_000.0


def test_the_floor_is_twice_the_recent_90th_percentile() -> None:
    pace = AckPace(window=100)
    for ms in range(1, 101):  # 1..100 ms
        pace.observe(float(ms))
    assert pace.retry_floor_ms() == 2 * 91.0


def test_a_healthy_mesh_stays_far_below_the_policy_deadline_and_slow_acks_age_out() -> None:
    pace = AckPace(window=50)
    for _ in range(50):
        pace.observe(3000.0)  # an overload: acks three seconds late
    assert pace.retry_floor_ms() == 6000.0
    for _ in range(50):
        pace.observe(12.0)  # recovered
    assert pace.retry_floor_ms() == 24.0  # far below a 1,000 ms ack deadline
