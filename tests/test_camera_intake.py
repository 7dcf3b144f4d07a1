"""The camera's command intake: lanes, their order, their limits, and the rate budgets."""

from __future__ import annotations

from bridge.topics import TopicKind
from mesh.camera_intake import (
    NS,
    CommandIntake,
    IssuerBudget,
    Lane,
    LaneLimit,
    Queued,
    TokenBucket,
)

T0 = 1_000 * NS


def item(lane: Lane, n: int) -> Queued:
    kind = {
        Lane.DIRECT: TopicKind.COMMAND_UNIT,
        Lane.CELL: TopicKind.COMMAND_CELL,
        Lane.ALL: TopicKind.COMMAND_ALL,
    }[lane]
    return Queued(lane, kind, f"t/{lane.name}", str(n).encode(), T0)


def test_the_most_urgent_lane_is_served_first_oldest_first() -> None:
    intake = CommandIntake(T0)
    for n in range(3):
        intake.put(item(Lane.ALL, n))
        intake.put(item(Lane.CELL, n))
    intake.put(item(Lane.DIRECT, 0))
    served = [intake.pop(T0) for _ in range(7)]
    assert [(q.lane, q.payload) for q in served if q is not None] == [
        (Lane.DIRECT, b"0"),
        (Lane.CELL, b"0"),
        (Lane.CELL, b"1"),
        (Lane.CELL, b"2"),
        (Lane.ALL, b"0"),
        (Lane.ALL, b"1"),
        (Lane.ALL, b"2"),
    ]
    assert intake.pop(T0) is None
    assert intake.wait_s(T0) is None


def test_a_full_lane_sheds_its_oldest_and_no_other_lanes() -> None:
    limits = {
        Lane.DIRECT: LaneLimit(2, None),
        Lane.CELL: LaneLimit(2, None),
        Lane.ALL: LaneLimit(2, None),
    }
    intake = CommandIntake(T0, limits)
    intake.put(item(Lane.DIRECT, 0))
    dropped = [intake.put(item(Lane.ALL, n)) for n in range(5)]
    assert [d.payload for d in dropped if d is not None] == [b"0", b"1", b"2"]
    assert intake.dropped == {Lane.DIRECT: 0, Lane.CELL: 0, Lane.ALL: 3}
    assert len(intake) == intake.deepest == 3
    assert [intake.pop(T0).payload for _ in range(3)] == [b"0", b"3", b"4"]  # type: ignore[union-attr]


def test_a_paced_lane_waits_and_the_urgent_lane_does_not() -> None:
    limits = {
        Lane.DIRECT: LaneLimit(10, None),
        Lane.CELL: LaneLimit(10, None),
        Lane.ALL: LaneLimit(10, per_s=10.0, burst=1),
    }
    intake = CommandIntake(T0, limits)
    for n in range(3):
        intake.put(item(Lane.ALL, n))
    assert intake.pop(T0) is not None
    assert intake.pop(T0) is None  # the lane's token is spent
    assert intake.wait_s(T0) == 0.1
    intake.put(item(Lane.DIRECT, 9))
    assert intake.wait_s(T0) == 0.0
    urgent = intake.pop(T0)
    assert urgent is not None
    assert urgent.lane is Lane.DIRECT
    assert intake.pop(T0 + NS // 10) is not None  # a tenth of a second later


def test_token_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now_ns=T0)
    assert [bucket.take(T0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(T0 + NS // 2)
    assert not bucket.take(T0 + NS // 2)
    assert [bucket.take(T0 + 100 * NS) for _ in range(4)] == [True, True, True, False]


def test_issuer_budget_is_per_issuer_and_bounded() -> None:
    budget = IssuerBudget(rate=1.0, burst=2, tracked=2)
    assert [budget.allow("gw-car-7", T0) for _ in range(3)] == [True, True, False]
    assert budget.allow("gw-car-12", T0)  # another issuer's budget is its own
    budget.allow("gw-car-4", T0)  # a third: the least recently seen is forgotten
    assert len(budget._buckets) == 2
