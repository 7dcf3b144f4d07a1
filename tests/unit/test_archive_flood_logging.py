"""When the archiver logs a flood: at its first drop and at every 1,000th, however the
drops come (one at a time, or a group of many at once)."""

from __future__ import annotations

import pytest

from mesh.archive.source import at_first_or_a_thousandth


@pytest.mark.parametrize(
    ("before", "after", "logged"),
    [
        (0, 1, True),  # the first drop
        (0, 250, True),  # a first group
        (1, 2, False),
        (998, 999, False),
        (999, 1000, True),  # the 1,000th, one at a time
        (1000, 1001, False),
        (990, 1010, True),  # a group passing 1,000
        (1001, 1999, False),
        (1999, 4000, True),
        (5, 5, False),  # nothing dropped
    ],
)
def test_a_flood_is_logged_at_its_first_and_every_thousandth_drop(
    before: int, after: int, logged: bool
) -> None:
    assert at_first_or_a_thousandth(before, after) is logged


def test_one_at_a_time_a_flood_of_5000_is_logged_six_times() -> None:
    assert [n for n in range(1, 5001) if at_first_or_a_thousandth(n - 1, n)] == [
        1,
        1000,
        2000,
        3000,
        4000,
        5000,
    ]
