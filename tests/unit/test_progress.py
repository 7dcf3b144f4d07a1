"""Issue 18 item 8: when a long operation's progress record is due (mesh.ops.progress),
with the clock passed in. The output (a bar, log records) runs in real commands:
tests/integration/test_progress_cli.py."""

from __future__ import annotations

import pytest

from mesh.ops.progress import Progress


def test_a_record_is_due_every_interval_not_on_every_update() -> None:
    meter = Progress(started_s=100.0, every_s=5.0)
    due = [meter.update(done, 50, now) for done, now in ((1, 101), (2, 104.9), (3, 105.0))]
    assert due == [False, False, True]
    # The interval runs from the last record, not from the start.
    assert not meter.update(4, 50, 109.9)
    assert meter.update(5, 50, 110.0)
    assert not meter.update(6, 50, 110.1)


def test_every_update_is_due_at_zero_seconds() -> None:
    meter = Progress(started_s=0.0, every_s=0.0)
    assert all(meter.update(done, 3, 0.0) for done in (1, 2, 3))


def test_counts_never_go_back_nor_past_the_total() -> None:
    meter = Progress(started_s=0.0, every_s=1.0)
    meter.update(7, 10, 0.5)
    meter.update(3, 10, 0.6)  # a resend starts again from the watermark
    assert meter.done == 7
    meter.update(12, 10, 0.7)
    assert meter.done == 10
    # A total not known yet stays what it was.
    meter.update(10, None, 0.8)
    assert meter.total == 10


def test_the_snapshot_has_rate_and_time_left() -> None:
    meter = Progress(started_s=10.0, every_s=1.0)
    meter.update(20, 100, 14.0)
    snap = meter.snapshot(14.0)
    assert (snap.done, snap.total, snap.elapsed_s) == (20, 100, 4.0)
    assert snap.rate_per_s == 5.0
    assert snap.remaining_s == 16.0
    assert snap.fields() == {
        "done": 20,
        "total": 100,
        "elapsed_s": 4.0,
        "rate_per_s": 5.0,
        "remaining_s": 16.0,
    }


def test_unknown_total_or_no_time_yet_leaves_rate_and_time_left_out() -> None:
    meter = Progress(started_s=0.0)
    assert meter.snapshot(0.0).fields() == {"done": 0, "total": None, "elapsed_s": 0.0}
    meter.update(4, None, 2.0)
    assert meter.snapshot(2.0).fields() == {
        "done": 4,
        "total": None,
        "elapsed_s": 2.0,
        "rate_per_s": 2.0,
    }


def test_a_negative_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="0 s or more"):
        Progress(started_s=0.0, every_s=-1.0)
