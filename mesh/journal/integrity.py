"""One log's integrity, as ``audit verify`` and ``audit report`` both state it: the chain
check of mesh.journal.chain run over the log file, and its facts in words and as data."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mesh.journal.chain import ChainReport, Verdict, verify_chain
from mesh.journal.store import log_id_of, read_records
from mesh.timefmt import iso_ns

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


def verify_log(path: Path | str, public_key: Ed25519PublicKey | None = None) -> ChainReport:
    """Check the log at ``path`` (raises LogError if it is not one)."""
    return verify_chain(read_records(path), log_id=log_id_of(path), public_key=public_key)


@dataclass(frozen=True)
class Integrity:
    """What an auditor reads about the chain; ``as_dict`` is the machine-readable form."""

    report: ChainReport

    @property
    def verdict(self) -> Verdict:
        """intact (against the pinned key), consistent (no key pinned), unsigned, empty,
        or tampered (mesh.journal.chain.Verdict, docs/audit.md)."""
        return self.report.verdict

    def headline(self) -> str:
        """The verdict in words (``ChainReport.headline``)."""
        return self.report.headline()

    def lines(self) -> list[tuple[str, str]]:
        """(label, text) pairs, in the order a page shows them."""
        r = self.report
        last = (
            "none"
            if r.last_checkpoint_seq is None
            else f"record {r.last_checkpoint_seq}"
            + (
                f" at {iso_ns(r.last_checkpoint_at_ns)}"
                if r.last_checkpoint_at_ns is not None
                else ""
            )
        )
        span = f"{r.records} (seq {r.first_seq}-{r.last_seq})" if r.records else "0"
        keys = ", ".join(sorted(r.key_ids)) or "none"
        trust = "pinned key" if r.pinned else "keys named in the log, not pinned"
        return [
            ("chain", self.headline()),
            ("records", span),
            ("checkpoints", f"{r.checkpoints}, the last valid one {last}"),
            ("signer key ids", f"{keys} ({trust})"),
            ("unsigned tail", f"{r.unsigned_tail} record(s) after the last checkpoint"),
            ("retention", f"{r.removed_runs} run(s) removed by retention"),
            ("problems", str(len(r.problems))),
        ]

    def as_dict(self) -> dict[str, object]:
        r = self.report
        return {
            "log_id": r.log_id,
            "verdict": self.verdict.value,
            "headline": self.headline(),
            "records": r.records,
            "first_seq": r.first_seq,
            "last_seq": r.last_seq,
            "checkpoints": r.checkpoints,
            "last_checkpoint_seq": r.last_checkpoint_seq,
            "last_checkpoint_at": (
                None if r.last_checkpoint_at_ns is None else iso_ns(r.last_checkpoint_at_ns)
            ),
            "signed_through_seq": r.signed_through,
            "unsigned_tail": r.unsigned_tail,
            "key_ids": sorted(r.key_ids),
            "pinned": r.pinned,
            "removed_runs": r.removed_runs,
            "problems": [
                {"seq": p.seq, "problem": p.problem.value, "detail": p.detail} for p in r.problems
            ],
            "summary": r.summary(),
        }
