"""The activation log's hash chain and signed checkpoints, and their verification (pure).

Every record carries the SHA-256 of the record before it, so changing, removing or
reordering one breaks every link after it. A hash chain alone proves nothing against
someone who rewrites the whole file, so the gateway periodically appends a *checkpoint*:
an Ed25519 signature over the chain's head (log id, sequence number, hash). Records after
the last checkpoint are the "unsigned tail": intact as far as the chain shows, but not
yet vouched for by the key.

Retention removes expired records. The removal is itself a record, naming each removed
run of records and the hash of the last one, so the record after a gap still links.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    # Only verification needs it: the gateway's writer hashes, and loads cryptography
    # (several MB) only when it has a key to sign with.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = "0" * 64
CHECKPOINT_KIND = "checkpoint"
RETENTION_KIND = "retention"
_CHECKPOINT_DOMAIN = b"trigger-mesh checkpoint v1\n"


class ChainedRecord(Protocol):
    """What verification needs of a record: the log's row (``LogRecord`` has it)."""

    @property
    def seq(self) -> int: ...
    @property
    def at_ns(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def activation_id(self) -> str | None: ...
    @property
    def body(self) -> str: ...
    @property
    def prev_hash(self) -> str: ...
    @property
    def hash(self) -> str: ...


def record_hash(
    prev_hash: str, seq: int, at_ns: int, *, kind: str, activation_id: str | None, body: str
) -> str:
    """SHA-256 (hex) over the previous hash and every column of the record, one per line.
    The body is last, so whatever it contains cannot be mistaken for another column."""
    text = f"{prev_hash}\n{seq}\n{at_ns}\n{kind}\n{activation_id or ''}\n{body}"
    return hashlib.sha256(text.encode()).hexdigest()


def checkpoint_message(log_id: str, head_seq: int, head_hash: str) -> bytes:
    """The bytes a checkpoint signs: bound to one log, one position, one hash."""
    return _CHECKPOINT_DOMAIN + f"{log_id}\n{head_seq}\n{head_hash}".encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    """A short name for a public key: the first 16 hex digits of SHA-256 over its raw bytes."""
    return hashlib.sha256(public_key_hex(public_key).encode()).hexdigest()[:16]


def public_key_hex(public_key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return public_key.public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


# --- verification --------------------------------------------------------------------------
class Problem(StrEnum):
    MODIFIED = "modified"  # the record's content no longer matches its hash
    MISSING = "missing"  # records are gone that no retention record accounts for
    REORDERED = "reordered"  # the record links to a record that now comes after it
    BROKEN_LINK = "broken_link"  # the record does not link to the one before it
    BAD_SIGNATURE = "bad_signature"  # a checkpoint whose signature does not verify
    WRONG_KEY = "wrong_key"  # a checkpoint signed by a key other than the pinned one
    BAD_CHECKPOINT = "bad_checkpoint"  # a checkpoint that names the wrong head
    UNSIGNED_TAIL = "unsigned_tail"  # records after the last good checkpoint


@dataclass(frozen=True)
class ChainProblem:
    seq: int
    problem: Problem
    detail: str

    def __str__(self) -> str:
        return f"record {self.seq}: {self.problem.value}: {self.detail}"


@dataclass
class ChainReport:
    log_id: str
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    checkpoints: int = 0
    signed_through: int | None = None  # the last seq covered by a good checkpoint
    removed_runs: int = 0
    key_ids: set[str] = field(default_factory=set)
    pinned: bool = False
    problems: list[ChainProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def tampered(self) -> bool:
        """A problem other than an unsigned tail (which an orderly shutdown prevents)."""
        return any(p.problem is not Problem.UNSIGNED_TAIL for p in self.problems)

    def summary(self) -> str:
        if self.records == 0:
            return f"log {self.log_id}: empty"
        keys = ", ".join(sorted(self.key_ids)) or "none"
        trust = "pinned key" if self.pinned else "keys named in the log, not pinned"
        head = (
            f"log {self.log_id}: {self.records} records (seq {self.first_seq}-{self.last_seq}), "
            f"{self.checkpoints} checkpoints by {keys} ({trust}), "
            f"{self.removed_runs} runs removed by retention"
        )
        if self.ok:
            return head + ": intact, every record signed"
        return head + f": {len(self.problems)} problem(s); first: {self.problems[0]}"


@dataclass(frozen=True)
class _Removed:
    first: int
    last: int
    last_hash: str


def verify_chain(
    records: Iterable[ChainedRecord],
    *,
    log_id: str,
    public_key: Ed25519PublicKey | None = None,
    max_problems: int = 100,
) -> ChainReport:
    """Check every link, every record's hash and every checkpoint, in seq order.

    ``public_key`` pins the gateway's key; without it checkpoints are checked against the
    key each one names, which proves the log is consistent, not who wrote it.
    """
    return _Verifier(list(records), log_id, public_key, max_problems).run()


class _Verifier:
    def __init__(
        self,
        rows: list[ChainedRecord],
        log_id: str,
        pinned: Ed25519PublicKey | None,
        max_problems: int,
    ) -> None:
        self.rows = rows
        self.log_id = log_id
        self.pinned = pinned
        self.max_problems = max_problems
        self.report = ChainReport(log_id=log_id, pinned=pinned is not None, records=len(rows))
        self.removed = _removed_runs(rows)
        self.by_hash = {row.hash: i for i, row in enumerate(rows)}

    def problem(self, seq: int, kind: Problem, detail: str) -> None:
        if len(self.report.problems) < self.max_problems:
            self.report.problems.append(ChainProblem(seq, kind, detail))

    def run(self) -> ChainReport:
        rows, report = self.rows, self.report
        if not rows:
            return report
        report.first_seq, report.last_seq = rows[0].seq, rows[-1].seq
        report.removed_runs = len(self.removed)
        prev_seq, prev_hash = 0, GENESIS
        for i, row in enumerate(rows):
            self.check_link(row, i, prev_seq, prev_hash)
            computed = record_hash(
                row.prev_hash,
                row.seq,
                row.at_ns,
                kind=row.kind,
                activation_id=row.activation_id,
                body=row.body,
            )
            if computed != row.hash:
                self.problem(row.seq, Problem.MODIFIED, "its content does not match its hash")
            if row.kind == CHECKPOINT_KIND:
                report.checkpoints += 1
                signed = self.check_checkpoint(row)
                # A checkpoint vouches only for a prefix with nothing wrong in it.
                if signed and not report.problems:
                    report.signed_through = row.seq
            prev_seq, prev_hash = row.seq, row.hash
        if not report.problems and report.signed_through != rows[-1].seq:
            tail = [r.seq for r in rows if r.seq > (report.signed_through or 0)]
            self.problem(
                tail[0],
                Problem.UNSIGNED_TAIL,
                f"records {tail[0]}-{tail[-1]} ({len(tail)}) are not covered by a checkpoint "
                "(the log was cut short, or the gateway has not signed them yet)",
            )
        return report

    def check_link(self, row: ChainedRecord, index: int, prev_seq: int, prev_hash: str) -> None:
        if row.seq <= prev_seq:
            self.problem(row.seq, Problem.REORDERED, f"comes after record {prev_seq} in the log")
            return
        if row.seq == prev_seq + 1:
            if row.prev_hash == prev_hash:
                return
            target = self.by_hash.get(row.prev_hash)
            if target is not None and target > index:
                self.problem(
                    row.seq,
                    Problem.REORDERED,
                    "it links to a record that now comes after it (records swapped)",
                )
            else:
                self.problem(
                    row.seq,
                    Problem.BROKEN_LINK,
                    f"it does not link to record {prev_seq} (that record was changed or replaced)",
                )
            return
        # A gap: only a retention record can account for it, and the link must still hold.
        gap = (prev_seq + 1, row.seq - 1)
        anchor = next((r for r in self.removed if r.last == gap[1]), None)
        if anchor is None or not _covered(gap, self.removed):
            what = f"record {gap[0]}" if gap[0] == gap[1] else f"records {gap[0]}-{gap[1]}"
            self.problem(row.seq, Problem.MISSING, f"{what} before it are missing")
        elif row.prev_hash != anchor.last_hash:
            self.problem(
                row.seq,
                Problem.BROKEN_LINK,
                f"it does not link to record {gap[1]}, removed by retention",
            )

    def check_checkpoint(self, row: ChainedRecord) -> bool:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        try:
            body = _json_object(row.body)
            head_seq, head_hash = _int(body, "head_seq"), _str(body, "head_hash")
            signature = bytes.fromhex(_str(body, "signature"))
            named = Ed25519PublicKey.from_public_bytes(bytes.fromhex(_str(body, "public_key")))
        except (ValueError, KeyError, TypeError) as exc:
            self.problem(row.seq, Problem.BAD_CHECKPOINT, f"unreadable checkpoint ({exc})")
            return False
        # The record before it is checked by the link; a checkpoint signs exactly that one.
        if head_seq != row.seq - 1:
            self.problem(
                row.seq,
                Problem.BAD_CHECKPOINT,
                f"it signs record {head_seq}, which is not the record before it",
            )
            return False
        if head_hash != row.prev_hash:
            self.problem(
                row.seq,
                Problem.BAD_SIGNATURE,
                f"it signed a different record {head_seq} than the one in the log: "
                f"records up to {head_seq} were changed after they were signed",
            )
            return False
        pinned = self.pinned
        if pinned is not None and public_key_hex(pinned) != public_key_hex(named):
            self.problem(
                row.seq,
                Problem.WRONG_KEY,
                f"signed by key {key_id(named)}, not the pinned key {key_id(pinned)}",
            )
            return False
        key = pinned or named
        try:
            key.verify(signature, checkpoint_message(self.log_id, head_seq, head_hash))
        except InvalidSignature:
            self.problem(
                row.seq,
                Problem.BAD_SIGNATURE,
                f"the signature over records up to {head_seq} does not verify "
                f"with key {key_id(key)}",
            )
            return False
        self.report.key_ids.add(key_id(key))
        return True


def _removed_runs(rows: Sequence[ChainedRecord]) -> list[_Removed]:
    runs: list[_Removed] = []
    for row in rows:
        if row.kind != RETENTION_KIND:
            continue
        try:
            removed = _json_object(row.body)["removed"]
            if not isinstance(removed, list):
                continue
            for first, last, last_hash in removed:
                runs.append(_Removed(_exact_int(first), _exact_int(last), str(last_hash)))
        except (ValueError, KeyError, TypeError):
            continue  # its own hash check reports a damaged record
    return runs


# --- reading the bodies verification relies on ------------------------------------------------
# A log is evidence that may have been tampered with: a body is read as untrusted JSON, and
# anything unexpected in it is a ValueError (reported as a problem), never a crash.
def _json_object(body: str) -> dict[str, object]:
    try:
        data = json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a JSON number")


def _int(body: dict[str, object], name: str) -> int:
    if name not in body:
        raise ValueError(f"no {name}")
    try:
        return _exact_int(body[name])
    except ValueError:
        raise ValueError(f"{name} is not an integer") from None


def _exact_int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{value!r:.40} is not an integer")
    return value


def _str(body: dict[str, object], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise ValueError(f"{name} is not text")
    return value


def _covered(gap: tuple[int, int], removed: Sequence[_Removed]) -> bool:
    """Is every seq of ``gap`` inside some removed run?"""
    need = gap[0]
    for run in sorted(removed, key=lambda r: r.first):
        if run.first <= need <= run.last:
            need = run.last + 1
        if need > gap[1]:
            return True
    return need > gap[1]
