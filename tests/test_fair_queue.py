"""bridge.fair.FairQueue: bounded per claimed sender, served in turn."""

from __future__ import annotations

import pytest

from bridge.fair import FairQueue


def claim(item: tuple[str, int]) -> str:
    return item[0]


def test_a_flood_under_one_name_sheds_only_its_own_share() -> None:
    queue: FairQueue[tuple[str, int]] = FairQueue(64, 16, claim, salt=b"fixed")
    assert queue.share_of("gw-car-7") != queue.share_of("gw-car-12")  # under this salt
    dropped = [queue.put(("gw-car-7", n)) for n in range(100)]
    queue.put(("gw-car-12", 0))
    assert len(queue) == queue.share_capacity + 1 == 5
    assert [d for d in dropped if d is not None] == [("gw-car-7", n) for n in range(96)]
    # Served in turn: gw-car-12's one waits behind one of gw-car-7's, not four.
    assert [queue.popleft() for _ in range(3)] == [
        ("gw-car-7", 96),
        ("gw-car-12", 0),
        ("gw-car-7", 97),
    ]
    assert len(queue) == 2


def test_an_empty_queue_and_a_bad_shape() -> None:
    queue: FairQueue[tuple[str, int]] = FairQueue(16, 16, claim)
    with pytest.raises(IndexError):
        queue.popleft()
    with pytest.raises(ValueError, match="shares"):
        FairQueue(8, 16, claim)
