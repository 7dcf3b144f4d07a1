"""Retention of the activation log (pure): which expired records go, which legal holds keep.

A record expires when it is older than the retention period. A pass removes expired
records up to the first one that has not expired, so every record it keeps before a
removed run is older than its cutoff, and held. Legal holds exempt records:
a hold names an activation (all its records) or a span of time (every record in it), and
stays until a later hold record releases it. Hold records are themselves records of the
chain, so who held what, when and why is part of the evidence.

What a pass removes is written down as runs
``[first_seq, last_seq, hash of last_seq, hash of the record kept before first_seq]``.
The record after a run links to the third; the fourth binds the record kept before the
run, which no remaining record links to any more (a held record between two runs would
otherwise be unprotected). So the chain still verifies end to end, through the signed
retention record. Each retention record carries every run so far, so removing an older
retention record loses nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

NS_PER_DAY = 86_400 * 1_000_000_000


@dataclass(frozen=True)
class RetentionPass:
    retention_days: float
    now_ns: int

    @property
    def cutoff_ns(self) -> int:
        return self.now_ns - int(self.retention_days * NS_PER_DAY)


@dataclass(frozen=True)
class Hold:
    """Keeps the records of ``activation_id``, or every record from ``from_ns`` to ``to_ns``."""

    activation_id: str | None
    from_ns: int | None
    to_ns: int | None

    def keeps(self, activation_id: str | None, at_ns: int) -> bool:
        if self.activation_id is not None:
            return activation_id == self.activation_id
        return (self.from_ns or 0) <= at_ns <= (self.to_ns or at_ns)


def hold_body(
    *,
    activation_id: str | None,
    from_ns: int | None,
    to_ns: int | None,
    reason: str,
    by: str,
    release: bool,
) -> str:
    if (activation_id is None) == (from_ns is None and to_ns is None):
        raise ValueError("a hold names either an activation or a time span, not both")
    return json.dumps(
        {
            "activation_id": activation_id,
            "from_ns": from_ns,
            "to_ns": to_ns,
            "reason": reason,
            "by": by,
            "release": release,
        },
        separators=(",", ":"),
    )


def active_holds(hold_records: Iterable[tuple[int, str]]) -> dict[Hold, int]:
    """From (seq, body) of every hold record in log order: the holds in force, each with
    the seq of the record that placed it (kept while the hold stands)."""
    holds: dict[Hold, int] = {}
    for seq, body in hold_records:
        data = json.loads(body)
        hold = Hold(data.get("activation_id"), data.get("from_ns"), data.get("to_ns"))
        if data.get("release"):
            holds.pop(hold, None)
        else:
            holds.setdefault(hold, seq)
    return holds


@dataclass(frozen=True)
class Candidate:
    seq: int
    at_ns: int
    activation_id: str | None
    prev_hash: str
    hash: str


# A removed run: first seq, last seq, hash of the last, hash of the record before the first.
Run = tuple[int, int, str, str]


@dataclass(frozen=True)
class Removal:
    seqs: list[int]  # the records to delete
    held: int  # expired records kept by a hold
    runs: list[Run]  # every run removed so far, this pass included


def is_held(holds: dict[Hold, int], seq: int, activation_id: str | None, at_ns: int) -> bool:
    """Does a hold in force keep this record (the hold's own record included)?"""
    return seq in holds.values() or any(h.keeps(activation_id, at_ns) for h in holds)


def plan_removal(
    rows: Sequence[Candidate],
    *,
    cutoff_ns: int,
    holds: dict[Hold, int],
    earlier_runs: Sequence[Sequence[int | str]],
) -> Removal:
    """``rows``: the log's records in seq order, up to (not including) its head. Records
    older than ``cutoff_ns`` that no hold keeps are removed, up to the first record that
    is not older. ``earlier_runs``: the runs of the last retention record, which the
    caller has checked is sealed (a run written before runs named the record kept before
    them has three fields; its fourth is then unknown, "")."""
    remove: list[int] = []
    held = 0
    runs: list[Run] = [_run(run) for run in earlier_runs]
    current: list[int | str] | None = None  # [first, last, last_hash, before_hash], open run
    for row in rows:
        if current is not None and row.seq != int(current[1]) + 1:
            # A hole in seq: records deleted behind the log's back (a held one, say). A
            # run never spans one, so the hole stays missing rather than signed for.
            runs.append(_run(current))
            current = None
        if row.at_ns >= cutoff_ns:
            # The first record not yet expired ends the pass, even if later ones look
            # older (a clock set back): every record kept before a removed run is then
            # older than the cutoff, which is what ``audit verify`` holds the pass to.
            break
        kept = is_held(holds, row.seq, row.activation_id, row.at_ns)
        held += kept
        if not kept:
            remove.append(row.seq)
            if current is None:
                current = [row.seq, row.seq, row.hash, row.prev_hash]
            else:
                current[1:3] = [row.seq, row.hash]
        elif current is not None:
            runs.append(_run(current))
            current = None
    if current is not None:
        runs.append(_run(current))
    return Removal(remove, held, _merge(runs))


def _run(run: Sequence[int | str]) -> Run:
    before = str(run[3]) if len(run) > 3 else ""
    return int(run[0]), int(run[1]), str(run[2]), before


def _merge(runs: Iterable[Run]) -> list[Run]:
    """Join runs that overlap or touch: the later end's hash is the one the record after
    the run links to, the earlier start's the one the record before it has."""
    merged: list[Run] = []
    for first, last, last_hash, before in sorted(runs):
        if merged and first <= merged[-1][1] + 1:
            prev = merged[-1]
            merged[-1] = (prev[0], last, last_hash, prev[3]) if last >= prev[1] else prev
        else:
            merged.append((first, last, last_hash, before))
    return merged
