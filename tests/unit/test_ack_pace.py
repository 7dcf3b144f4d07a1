"""Retry pacing (pure): no retry sooner than acks are coming back lately, within a cap, and
never so late that a camera which missed the broadcast is not asked again."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mesh.decide.ack_pace import AckPace, next_step, pace_cap_ms
from mesh.decide.policy import KindRules


def test_no_floor_until_enough_cameras_have_answered() -> None:
    pace = AckPace()
    for n in range(9):
        pace.observe(f"cam-{n}", 5000.0)
    assert pace.retry_floor_ms() == 0.0
    pace.observe("cam-9", 5000.0)
    assert pace.retry_floor_ms() == 10_000.0


def test_the_floor_is_twice_the_recent_90th_percentile_of_cameras() -> None:
    pace = AckPace(window=100)
    for ms in range(1, 101):  # 100 cameras, 1..100 ms
        pace.observe(f"cam-{ms}", float(ms))
    assert pace.retry_floor_ms() == 2 * 91.0


def test_a_healthy_mesh_stays_far_below_the_policy_deadline_and_slow_acks_age_out() -> None:
    pace = AckPace(window=50)
    for n in range(50):
        pace.observe(f"cam-{n}", 3000.0)  # an overload: acks three seconds late
    assert pace.retry_floor_ms() == 6000.0
    for n in range(50):
        pace.observe(f"cam-{n}", 12.0)  # recovered: each camera's next answer replaces its last
    assert pace.retry_floor_ms() == 24.0  # far below a 1,000 ms ack deadline


def test_one_slow_camera_answering_many_activations_counts_once() -> None:
    """The attack: one camera acks every activation late (13 s, then 25 s). Before, each
    of its answers was a sample, a quarter of them all in a four-camera car: the p90."""
    pace = AckPace()
    for _ in range(40):
        for camera in ("dash-12", "bwc-12a", "bwc-7a"):
            pace.observe(camera, 15.0)
        pace.observe("bwc-slow", 13_000.0)
    assert pace.retry_floor_ms() == 0.0  # four cameras say nothing about the mesh
    for n in range(10):
        pace.observe(f"cam-{n}", 15.0)
    for _ in range(40):
        pace.observe("bwc-slow", 25_000.0)
    assert pace.retry_floor_ms() == 30.0  # fourteen cameras: the slowest is not the p90


def test_the_slowest_camera_alone_never_sets_the_floor() -> None:
    pace = AckPace()
    for n in range(10):
        pace.observe(f"cam-{n}", 20.0)
    pace.observe("cam-0", 25_000.0)
    assert pace.retry_floor_ms() == 40.0
    pace.observe("cam-1", 25_000.0)  # two slow of ten: that is the mesh's tail now
    assert pace.retry_floor_ms() == 50_000.0


def test_the_window_forgets_the_camera_heard_from_longest_ago() -> None:
    pace = AckPace(window=10)
    pace.observe("old", 9000.0)
    pace.observe("old-2", 9000.0)
    for n in range(10):
        pace.observe(f"cam-{n}", 10.0)
    assert pace.retry_floor_ms() == 20.0


def _rules(deadline_ms: int = 1000, ttl_s: float = 30.0, retries: int = 3) -> KindRules:
    return KindRules(ack_deadline_ms=deadline_ms, command_ttl_s=ttl_s, max_retries=retries)


def test_the_cap_is_four_deadlines_or_a_third_of_the_ttl() -> None:
    assert pace_cap_ms(_rules(1000, 30.0)) == 4000.0
    assert pace_cap_ms(_rules(5000, 30.0)) == 10_000.0
    assert pace_cap_ms(_rules(100, 3.0)) == 400.0


def test_the_issue_figures_give_a_retry_within_the_cap_and_more_after() -> None:
    """Shipped rules (1 s deadline, 30 s TTL): a floor of 50 s (twice 25 s) used to mean a
    first wait of 30 s (the whole TTL) and no retry. Now: 4 s, then the retries go on."""
    rules = _rules()
    first = next_step(rules, 0, 50_000.0, 30_000.0)
    assert first == next_step(rules, 0, 50_000.0, 30_000.0)
    assert first.wait_ms == 4000.0
    assert first.retry
    second = next_step(rules, 1, 50_000.0, 26_000.0)
    assert second.wait_ms == 4000.0
    assert second.retry
    third = next_step(rules, 2, 50_000.0, 22_000.0)
    assert third.wait_ms == 4000.0
    assert third.retry
    last = next_step(rules, 3, 50_000.0, 18_000.0)
    assert last.wait_ms == 8000.0
    assert not last.retry


def test_a_healthy_mesh_keeps_the_policy_schedule() -> None:
    rules = _rules()
    waits = [next_step(rules, a, 30.0, 30_000.0).wait_ms for a in range(4)]
    assert waits == [1000.0, 2000.0, 4000.0, 8000.0]


def test_a_deadline_longer_than_the_ttl_still_retries_before_expiry() -> None:
    rules = _rules(deadline_ms=60_000, ttl_s=30.0)
    step = next_step(rules, 0, 0.0, 30_000.0)
    assert step.retry
    assert step.wait_ms == 15_000.0


def test_no_retry_when_the_policy_allows_none_or_the_command_expired() -> None:
    assert not next_step(_rules(retries=0), 0, 0.0, 30_000.0).retry
    expired = next_step(_rules(), 0, 0.0, -5.0)
    assert not expired.retry
    assert expired.wait_ms == 0.0


_deadlines = st.integers(min_value=10, max_value=60_000)
_ttls = st.floats(min_value=0.01, max_value=600.0, allow_nan=False)
_floors = st.floats(min_value=0.0, max_value=1e9, allow_nan=False)


@given(
    deadline=_deadlines,
    ttl=_ttls,
    retries=st.integers(min_value=1, max_value=10),
    floor=_floors,
    elapsed=st.floats(min_value=0.0, max_value=0.999),
)
def test_property_the_first_retry_always_goes_out_before_expiry(
    deadline: int, ttl: float, retries: int, floor: float, elapsed: float
) -> None:
    rules = _rules(deadline, ttl, retries)
    remaining_ms = ttl * 1000 * (1 - elapsed)  # a resumed activation has less left
    step = next_step(rules, 0, floor, remaining_ms)
    assert step.retry
    assert 0 < step.wait_ms < remaining_ms


@given(
    deadline=_deadlines,
    ttl=_ttls,
    retries=st.integers(min_value=0, max_value=10),
    attempt=st.integers(min_value=0, max_value=10),
    floor=_floors,
    remaining=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False),
)
def test_property_the_pace_never_stretches_a_wait_beyond_its_cap(
    deadline: int, ttl: float, retries: int, attempt: int, floor: float, remaining: float
) -> None:
    rules = _rules(deadline, ttl, retries)
    step = next_step(rules, attempt, floor, remaining)
    assert 0 <= step.wait_ms <= max(rules.retry_wait_ms(attempt), pace_cap_ms(rules))
    assert step.wait_ms <= max(0.0, remaining)
    if step.retry:  # a retry is only ever sent while the command is alive, within policy
        assert attempt < retries
        assert step.wait_ms < remaining
    # The pace only ever lengthens the policy's wait (short of the TTL's own limits).
    without_pace = next_step(rules, attempt, 0.0, remaining)
    assert step.wait_ms >= without_pace.wait_ms


@given(
    latencies=st.lists(
        st.tuples(st.sampled_from([f"cam-{n}" for n in range(30)]), st.floats(0, 60_000)),
        max_size=300,
    ),
    slow=st.floats(min_value=0, max_value=1e7, allow_nan=False),
    repeats=st.integers(min_value=1, max_value=200),
)
def test_property_one_camera_cannot_raise_the_floor_by_itself(
    latencies: list[tuple[str, float]], slow: float, repeats: int
) -> None:
    """Whatever the others said, one camera's answers, however many and however late,
    never put the floor above twice the slowest of the other cameras' latest answers."""
    pace = AckPace()
    for camera, ms in latencies:
        pace.observe(camera, ms)
    for _ in range(repeats):
        pace.observe("bwc-slow", slow)
    others = dict(latencies).values()  # each camera's latest answer
    assert pace.retry_floor_ms() <= 2 * max(others, default=0.0)
