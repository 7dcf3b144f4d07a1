"""The gateway's outbox (mesh/gateway/outbox.py) by itself: what store-and-forward keeps
while the broker is gone (docs/reliability.md); the outage itself is
tests/integration/test_store_and_forward.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from mesh.gateway import outbox as outbox_module
from mesh.gateway.outbox import Outbox, OutboxError

# --- the outbox itself ---------------------------------------------------------------


def test_outbox_keeps_its_entries_in_order_across_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "gw.outbox"
    box = Outbox(path)
    ids = [box.put(f"t/{n}", f"m{n}".encode(), now_ns=n, expires_at_ns=None) for n in range(3)]
    box.put("t/late", b"x", now_ns=3, expires_at_ns=10)
    box.close()

    box = Outbox(path)
    assert box.depth() == 4
    head = box.head(10)
    assert [q.topic for q in head] == ["t/0", "t/1", "t/2", "t/late"]
    assert [q.payload for q in head[:3]] == [b"m0", b"m1", b"m2"]
    assert not head[3].expired(9)
    assert head[3].expired(10)
    box.remove(ids[:2])
    assert box.depth() == 2
    assert [q.topic for q in box.head(10)] == ["t/2", "t/late"]
    box.close()
    assert Outbox(path).depth() == 2


def test_an_outcome_is_queued_with_its_messages_and_kept_until_settled(tmp_path: Path) -> None:
    """Issue 15, item 8: an activation's final record and escalations go into the outbox
    in one transaction with its outcome, which stays (across a reopen) until the log has it."""
    path = tmp_path / "gw.outbox"
    box = Outbox(path)
    box.put("t/receipt", b"r", now_ns=1)
    box.put_final("a-1", b"outcome-1", [("t/record", b"rec"), ("t/esc", b"esc")], now_ns=2)
    box.put_final("a-2", b"outcome-2", [("t/record2", b"rec2")], now_ns=3)
    box.close()

    box = Outbox(path)
    assert [q.topic for q in box.head(10)] == ["t/receipt", "t/record", "t/esc", "t/record2"]
    assert box.depth() == 4
    assert (box.queued_final("a-1"), box.queued_final("a-2")) == (b"outcome-1", b"outcome-2")
    assert box.finals() == 2
    box.remove([q.id for q in box.head(10)])  # sent: the outcomes stay until logged
    assert box.queued_final("a-1") == b"outcome-1"
    box.settle_final("a-1")
    assert box.queued_final("a-1") is None
    box.keep_finals([])  # at start: nothing is left unlogged
    assert box.finals() == 0
    assert box.queued_final("a-2") is None
    box.close()


def test_an_outcome_that_cannot_be_queued_leaves_nothing_half_written(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "gw.outbox")
    box.put_final("a-1", b"first", [("t/a", b"1")], now_ns=1)
    # A payload SQLite refuses (not bytes-like): the whole transaction is rolled back.
    with pytest.raises(OutboxError, match="a-2"):
        box.put_final("a-2", b"second", [("t/b", b"2"), ("t/c", object())], now_ns=2)  # type: ignore[list-item]
    assert [q.topic for q in box.head(10)] == ["t/a"]
    assert box.queued_final("a-2") is None
    assert box.finals() == 1


def test_outcomes_waiting_for_the_log_are_bounded(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "gw.outbox")
    total = outbox_module.FINALS_MAX + 3
    for n in range(total):
        box.put_final(f"a-{n}", b"o", [], now_ns=n)
    assert box.finals() == outbox_module.FINALS_MAX
    assert box.queued_final("a-0") is None  # the oldest forgotten
    assert box.queued_final("a-3") == b"o"
    assert box.queued_final(f"a-{total - 1}") == b"o"
