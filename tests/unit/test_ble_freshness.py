"""Bursts and replays: the counter gate, the quiet gate, and counters across a restart."""

from __future__ import annotations

from pathlib import Path

from triggers.ble.freshness import CounterGate, CounterStore, QuietGate, Verdict

S = 1_000_000_000


def test_a_burst_is_one_event_and_an_old_counter_is_a_replay() -> None:
    gate = CounterGate(burst_window_s=10)
    assert gate.check("1001", 5, 0) is Verdict.FRESH
    assert all(gate.check("1001", 5, t * S // 50) is Verdict.REPEAT for t in range(1, 500))
    assert gate.check("1001", 5, 10 * S + 1) is Verdict.REPLAY  # same counter, too late
    assert gate.check("1001", 4, 11 * S) is Verdict.REPLAY  # lower counter
    assert gate.check("1001", 6, 11 * S) is Verdict.FRESH  # the next real event
    assert gate.check("2002", 1, 11 * S) is Verdict.FRESH  # another sensor


def test_quiet_gate_groups_counterless_adverts_by_silence() -> None:
    gate = QuietGate(burst_window_s=2)
    assert gate.check("axon:X", 0) is Verdict.FRESH
    assert gate.check("axon:X", S) is Verdict.REPEAT
    assert gate.check("axon:X", 2 * S) is Verdict.REPEAT  # sliding: still the same event
    assert gate.check("axon:X", 5 * S) is Verdict.FRESH


def test_accepted_counters_survive_a_restart(tmp_path: Path) -> None:
    store = CounterStore(tmp_path / "counters.db")
    store.save("1001", 9, 123)
    store.save("1001", 7, 456)  # never goes backwards
    store.close()
    reopened = CounterStore(tmp_path / "counters.db")
    gate = CounterGate(10, reopened.load())
    assert gate.states["1001"].counter == 9
    assert gate.check("1001", 9, 10**18) is Verdict.REPLAY
    reopened.close()
