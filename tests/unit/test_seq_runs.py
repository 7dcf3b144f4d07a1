"""store.seq_runs: the seqs of a group as runs of consecutive seqs (the look-up's ranges)."""

from __future__ import annotations

from mesh.archive.store import seq_runs


def test_consecutive_seqs_are_one_run_and_a_gap_starts_another() -> None:
    assert seq_runs([5]) == ([5], [5])
    assert seq_runs(list(range(1, 2001))) == ([1], [2000])
    assert seq_runs([1, 2, 3, 7, 8, 2**52]) == ([1, 7, 2**52], [3, 8, 2**52])
    assert seq_runs([]) == ([], [])
