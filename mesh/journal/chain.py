"""The activation log's hash chain and signed checkpoints, and their verification (pure).

Every record carries the SHA-256 of the record before it, so changing, removing or
reordering one breaks every link after it. A hash chain alone proves nothing against
someone who rewrites the whole file, so the gateway periodically appends a *checkpoint*:
an Ed25519 signature over the chain's head (log id, sequence number, hash). Records after
the last checkpoint are the "unsigned tail": linked as far as the chain shows, but not
yet vouched for by the key.

Retention removes expired records. The removal is itself a record, naming each removed
run of records with the hash of its last record (the record after the gap links to it)
and of the record kept before it (which nothing links to any more). A signed pass seals
that record at once with a *retention checkpoint*: only such a record accounts for a gap.
A retention record anyone could append to the file, and a periodic checkpoint then sign,
accounts for nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from mesh.journal.retention import Hold, active_holds, is_held
from mesh.security.keys import key_id, public_key_hex

if TYPE_CHECKING:
    # Only verification needs it: the gateway's writer hashes, and loads cryptography
    # (several MB) only when it has a key to sign with.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = "0" * 64
CHECKPOINT_KIND = "checkpoint"
RETENTION_KIND = "retention"
HOLD_KIND = "hold"
_CHECKPOINT_DOMAIN = b"trigger-mesh checkpoint v1\n"
_RETENTION_DOMAIN = b"trigger-mesh retention checkpoint v1\n"
RETENTION_VOUCH = "retention"  # a checkpoint body's "vouches" for a retention checkpoint


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


def checkpoint_message(
    log_id: str, head_seq: int, head_hash: str, *, retention: bool = False
) -> bytes:
    """The bytes a checkpoint signs: bound to one log, one position, one hash. A
    *retention* checkpoint is written by the pass itself, right after its retention record,
    and signs under its own domain: it also vouches that the key's holder made that pass,
    which a periodic checkpoint over a record someone appended to the file does not."""
    domain = _RETENTION_DOMAIN if retention else _CHECKPOINT_DOMAIN
    return domain + f"{log_id}\n{head_seq}\n{head_hash}".encode()


# --- verification --------------------------------------------------------------------------
class Problem(StrEnum):
    MODIFIED = "modified"  # the record's content no longer matches its hash
    MISSING = "missing"  # records are gone that no signed retention record accounts for
    REORDERED = "reordered"  # the record links to a record that now comes after it
    BROKEN_LINK = "broken_link"  # the record does not link to the one before it
    BAD_SIGNATURE = "bad_signature"  # a checkpoint whose signature does not verify
    WRONG_KEY = "wrong_key"  # a checkpoint signed by a key other than the pinned one
    BAD_CHECKPOINT = "bad_checkpoint"  # a checkpoint that names the wrong head
    RETENTION_MISMATCH = "retention_mismatch"  # a kept record retention should have removed
    UNSEALED_RETENTION = "unsealed_retention"  # a signed retention record no pass sealed
    NO_CHECKPOINT = "no_checkpoint"  # a pinned key, and no checkpoint signed by it
    UNSIGNED_TAIL = "unsigned_tail"  # records after the last good checkpoint
    # A central copy: records the edge removed later, whose checkpoint the copy never got.
    UNVOUCHED = "unvouched"


# Neither is tampering: what an orderly shutdown (or an archive synced in time) prevents.
_NOT_TAMPERING = frozenset({Problem.UNSIGNED_TAIL, Problem.UNVOUCHED})


class Verdict(StrEnum):
    """What a check of the chain proves, in a word (docs/audit.md, "Verdicts").

    A hash chain anyone can rebuild after an edit, and a checkpoint anyone can sign with a
    key of their own: only a signature checked against a key the auditor trusts (pinned
    with ``--pubkey``) says who wrote the log. So a chain that links and whose checkpoints
    verify is ``intact`` only against a pinned key; without one it is ``consistent``."""

    INTACT = "intact"  # links, every record vouched for by checkpoints of the pinned key
    CONSISTENT = "consistent"  # the same by the keys the log names: no key was pinned
    UNSIGNED = "unsigned"  # links, but records no checkpoint vouches for (or none at all)
    EMPTY = "empty"  # no records (with a pinned key that is tampered: nothing it signed)
    TAMPERED = "tampered"  # any other problem: changed, missing, reordered, badly signed

    @property
    def warns(self) -> bool:
        """Not a break, but not proof either: a report shows it as a warning."""
        return self in (Verdict.CONSISTENT, Verdict.UNSIGNED, Verdict.EMPTY)


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
    signed_through: int | None = None  # every record up to this seq is vouched for by a key
    removed_runs: int = 0  # gaps accounted for by a retention record
    key_ids: set[str] = field(default_factory=set)
    pinned: bool = False
    last_checkpoint_seq: int | None = None  # the last checkpoint whose signature holds
    last_checkpoint_at_ns: int | None = None
    unsigned_tail: int = 0  # records after the last record a checkpoint vouches for
    problems: list[ChainProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def tampering(self) -> list[ChainProblem]:
        """The problems other than an unsigned tail (which an orderly shutdown prevents)
        or, in a central copy, records whose checkpoint the copy never got."""
        return [p for p in self.problems if p.problem not in _NOT_TAMPERING]

    @property
    def tampered(self) -> bool:
        return bool(self.tampering)

    @property
    def verdict(self) -> Verdict:
        if self.tampered:
            return Verdict.TAMPERED
        if self.records == 0:
            return Verdict.EMPTY
        if not self.ok:
            return Verdict.UNSIGNED
        return Verdict.INTACT if self.pinned else Verdict.CONSISTENT

    def headline(self) -> str:
        """The verdict in words: what the check proves, and what it does not."""
        verdict, first = self.verdict, self.problems[0] if self.problems else None
        keys = ", ".join(sorted(self.key_ids)) or "none"
        if verdict is Verdict.TAMPERED and first is not None:
            if first.problem is Problem.NO_CHECKPOINT:  # the pinned key signed nothing here
                return f"tampered: {first.problem.value}: {first.detail}"
            return f"tampered: broken at record {first.seq}: {first.problem.value}: {first.detail}"
        if verdict is Verdict.EMPTY:
            return "empty: the log holds no records, so there is nothing to verify"
        if verdict is Verdict.INTACT:
            return (
                f"intact: every record is linked, unchanged and signed by the pinned key ({keys})"
            )
        unpinned = (
            "signatures were not checked against a trusted key: they verify with the keys "
            f"the log itself names ({keys}), which whoever rewrites the log can replace with "
            "a key of their own (pin the gateway's key with --pubkey)"
        )
        if verdict is Verdict.CONSISTENT:
            return f"consistent: every record is linked, unchanged and signed, but {unpinned}"
        if self.last_checkpoint_seq is None:
            signed = "nothing in it is signed"
        elif self.pinned:
            signed = "the other records are signed by the pinned key"
        else:
            signed = f"the other records are signed, but {unpinned}"
        detail = first.detail if first is not None else "records are not signed"
        return f"unsigned: the chain links, but {detail}; {signed}"

    def summary(self) -> str:
        if self.records == 0:
            verdict = f": {self.problems[0]}" if self.problems else ": no records"
            return f"log {self.log_id}: empty{verdict}"
        keys = ", ".join(sorted(self.key_ids)) or "none"
        trust = "pinned key" if self.pinned else "keys named in the log, not pinned"
        head = (
            f"log {self.log_id}: {self.records} records (seq {self.first_seq}-{self.last_seq}), "
            f"{self.checkpoints} checkpoints by {keys} ({trust}), "
            f"{self.removed_runs} runs removed by retention"
        )
        verdict = self.verdict
        if verdict is Verdict.INTACT:
            return head + ": intact, every record signed by the pinned key"
        if verdict is Verdict.CONSISTENT:
            return (
                head + ": consistent, every record signed, but only by the keys the log names: "
                "not checked against a trusted key (--pubkey)"
            )
        return head + f": {verdict}, {len(self.problems)} problem(s); first: {self.problems[0]}"


@dataclass(frozen=True)
class _Removed:
    """One run a retention record names as removed."""

    first: int
    last: int
    last_hash: str  # the record after the run links to it
    before_hash: str  # the hash of the record kept before the run ("": not named)
    by_seq: int  # the retention record
    cutoff_ns: int | None  # its pass removed records older than this

    @property
    def possible(self) -> bool:
        """A pass removes records before its own, never the head (the one just before)."""
        return 0 < self.first <= self.last < self.by_seq - 1


def verify_chain(
    records: Iterable[ChainedRecord],
    *,
    log_id: str,
    public_key: Ed25519PublicKey | None = None,
    max_problems: int = 100,
    central_copy: bool = False,
    follows: tuple[int, str] | None = None,
) -> ChainReport:
    """Check every link, every record's hash and every checkpoint, and which records a
    valid checkpoint vouches for.

    A checkpoint vouches for the record it signs and, through the links, for every record
    before it. A gap in seq is crossed only by a run that a *vouched-for* retention record
    (necessarily one after the gap) names exactly: the record after the gap links to the
    run's last hash, the record kept before it has the run's before-hash, and both agree
    with the pass's cutoff. Any other gap is missing records, named. ``public_key`` pins
    the gateway's key, and a log with no checkpoint signed by it is then a problem of its
    own. Without it checkpoints are checked against the key each names, which proves the
    log is consistent, not who wrote it.

    ``central_copy``: the records are an archive's copy, which keeps what the edge removed
    after sending it. A gap there may be the end of a removed run (what expired before it
    was sent); the records kept before it are then not vouched for (``unvouched``) unless
    a checkpoint among them is.

    ``follows``: the records continue a log after a record (seq, hash) already vouched
    for, instead of from its start: the first must link to it. A gap right after it is
    not crossed (it is reported as a broken link): check the whole log then.
    """
    verifier = _Verifier(list(records), log_id, public_key, max_problems)
    verifier.central_copy = central_copy
    verifier.follows = follows
    return verifier.run()


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
        self.by_hash = {row.hash: i for i, row in enumerate(rows)}
        self.found: list[ChainProblem] = []
        # Every run any retention record names, vouched for or not: for the unsigned tail,
        # and to say why a gap was not accepted. The latest record naming a run wins.
        self.named: dict[tuple[int, int], _Removed] = {}
        for row in rows:
            for run in _runs_of(row):
                self.named[(run.first, run.last)] = run
        self.hold_rows = [(r.seq, r.body) for r in rows if r.kind == HOLD_KIND]
        self.holds_at: dict[int, dict[Hold, int]] = {}
        self.retention_signed: set[int] = set()  # seqs a valid retention checkpoint signs
        self.central_copy = False
        self.partly_removed: dict[int, _Removed] = {}  # index before such a gap -> its run
        self.follows: tuple[int, str] | None = None  # (seq, hash) the records continue

    def problem(self, seq: int, kind: Problem, detail: str) -> None:
        if len(self.found) < self.max_problems:
            self.found.append(ChainProblem(seq, kind, detail))

    def run(self) -> ChainReport:
        rows, report = self.rows, self.report
        if not rows:
            if self.pinned is not None:
                self.problem(0, Problem.NO_CHECKPOINT, "the log is empty: nothing is signed")
            report.problems = self.found
            return report
        report.first_seq, report.last_seq = rows[0].seq, rows[-1].seq
        intact = [True] * len(rows)
        valid = [False] * len(rows)  # a checkpoint whose signature holds
        gaps: dict[int, tuple[int, int]] = {}  # index of a record -> the seqs missing before it
        prev_seq, prev_hash = self.follows or (0, GENESIS)
        for i, row in enumerate(rows):
            gap = self.check_link(row, i, prev_seq, prev_hash)
            if gap is not None:
                gaps[i] = gap
            computed = record_hash(
                row.prev_hash,
                row.seq,
                row.at_ns,
                kind=row.kind,
                activation_id=row.activation_id,
                body=row.body,
            )
            if computed != row.hash:
                intact[i] = False
                self.problem(row.seq, Problem.MODIFIED, "its content does not match its hash")
            if row.kind == CHECKPOINT_KIND:
                report.checkpoints += 1
                valid[i] = self.check_checkpoint(row)
            prev_seq, prev_hash = row.seq, row.hash
        signed = self.vouch(intact, valid, gaps)
        if self.pinned is not None and not any(valid) and not self.found:
            self.problem(
                rows[0].seq,
                Problem.NO_CHECKPOINT,
                f"no checkpoint is signed by the pinned key {key_id(self.pinned)}: the log "
                "was written without it, or rewritten from its start",
            )
        prefix = next((i for i, ok in enumerate(signed) if not ok), len(rows))
        report.signed_through = rows[prefix - 1].seq if prefix else None
        tail_from = len(rows)
        while tail_from > 0 and not signed[tail_from - 1]:
            tail_from -= 1
        report.unsigned_tail = len(rows) - tail_from
        if not self.found:
            self.unvouched_stretches(signed, tail_from)
        if not self.found and tail_from < len(rows):
            tail = rows[tail_from:]
            self.problem(
                tail[0].seq,
                Problem.UNSIGNED_TAIL,
                f"records {tail[0].seq}-{tail[-1].seq} ({len(tail)}) are not covered by a "
                "checkpoint (the log was cut short, or the gateway has not signed them yet)",
            )
        report.problems = sorted(self.found, key=lambda p: p.seq)
        return report

    def unvouched_stretches(self, signed: list[bool], tail_from: int) -> None:
        """Records no checkpoint vouches for, before records one does. In a central copy,
        those kept before a gap that ends a removed run are not tampering; any other such
        stretch is (no tampering found so far explains it, and it must never pass as an
        honest unsigned tail)."""
        rows = self.rows
        i = 0
        while i < tail_from:
            if signed[i]:
                i += 1
                continue
            end = i
            while not signed[end + 1]:
                end += 1
            run = self.partly_removed.get(end)
            if run is None:
                self.problem(
                    rows[i].seq,
                    Problem.BROKEN_LINK,
                    "no checkpoint vouches for it, though one vouches for records after it",
                )
                return
            self.problem(
                rows[i].seq,
                Problem.UNVOUCHED,
                f"{_span((rows[i].seq, rows[end].seq))} are not vouched for: this copy "
                f"kept them, but retention record {run.by_seq} removed them at the edge, "
                "with the checkpoint after them, before the copy got it",
            )
            i = end + 1

    def check_link(
        self, row: ChainedRecord, index: int, prev_seq: int, prev_hash: str
    ) -> tuple[int, int] | None:
        """The record against the one before it. A gap is returned: ``vouch`` decides it."""
        if row.seq <= prev_seq:
            self.problem(row.seq, Problem.REORDERED, f"comes after record {prev_seq} in the log")
            return None
        if row.seq > prev_seq + 1:
            return prev_seq + 1, row.seq - 1
        if row.prev_hash == prev_hash:
            return None
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
        return None

    def vouch(
        self, intact: list[bool], valid: list[bool], gaps: dict[int, tuple[int, int]]
    ) -> list[bool]:
        """Which records a valid checkpoint vouches for. Walks from the end: a vouched-for
        record vouches for the hash it links to, and a gap is crossed only through a run
        that a retention record already vouched for (so one after the gap) names."""
        rows = self.rows
        signed = [False] * len(rows)
        trusted: dict[tuple[int, int], _Removed] = {}
        expect: str | None = None  # the hash the record before must have to be vouched for
        for i in range(len(rows) - 1, -1, -1):
            row = rows[i]
            ok = intact[i] and (valid[i] or (expect is not None and row.hash == expect))
            signed[i] = ok
            if ok and row.kind == RETENTION_KIND and row.seq not in self.retention_signed:
                self.problem(
                    row.seq,
                    Problem.UNSEALED_RETENTION,
                    "no retention checkpoint right after it seals it, though a checkpoint "
                    "signs it: it was appended to the file (a periodic checkpoint signs "
                    "whatever head the file has). It accounts for no gap, and the "
                    "gateway's retention passes refuse to run after it",
                )
            if ok and row.seq in self.retention_signed:
                # Walking back, the earliest record naming a run wins: the pass that
                # removed it (later ones carry it on), whose cutoff its neighbours met.
                for run in _runs_of(row):
                    if run.possible:
                        trusted[(run.first, run.last)] = run
            expect = row.prev_hash if ok else None
            if i in gaps:
                expect = self.cross_gap(i, gaps[i], trusted if ok else None)
        return signed

    def cross_gap(
        self, index: int, gap: tuple[int, int], trusted: dict[tuple[int, int], _Removed] | None
    ) -> str | None:
        """The seqs ``gap`` are missing before ``rows[index]``. ``trusted``: the runs that
        vouched-for retention records name, or None when ``rows[index]`` is not vouched for
        (the unsigned tail, where a run that any retention record after it names will do:
        nothing there is vouched for anyway). Returns the hash the record kept before the
        gap must have to be vouched for."""
        row = self.rows[index]
        if index == 0 and self.follows is not None:
            # The record kept before the gap is not among these rows: not judged here.
            self.problem(
                row.seq,
                Problem.BROKEN_LINK,
                f"{_span(gap)} between it and record {self.follows[0]} are not here",
            )
            return None
        before = self.rows[index - 1] if index > 0 else None
        run = (trusted if trusted is not None else self.named).get(gap)
        if run is None and trusted is not None and self.central_copy and index > 0:
            self.cross_partly_removed(index, gap, trusted)
            return None
        if run is None or not run.possible:
            if len(self.found) < self.max_problems:  # the detail scans every run named
                self.problem(row.seq, Problem.MISSING, self.missing_detail(gap, trusted))
            return None
        if row.prev_hash != run.last_hash:
            self.problem(
                row.seq,
                Problem.BROKEN_LINK,
                f"it does not link to record {gap[1]}, removed by retention (record {run.by_seq})",
            )
            return None
        self.report.removed_runs += 1
        if trusted is None:
            return None
        kept_hash = before.hash if before is not None else GENESIS
        if run.before_hash != kept_hash:
            self.problem(
                before.seq if before is not None else row.seq,
                Problem.BROKEN_LINK,
                f"retention record {run.by_seq} names another record before the "
                f"{_span(gap)} it removed: this one was changed or replaced after the pass",
            )
        for kept in (before, row):
            if kept is not None:
                self.check_cutoff(kept, run, gap)
        return run.before_hash

    def cross_partly_removed(
        self, index: int, gap: tuple[int, int], trusted: dict[tuple[int, int], _Removed]
    ) -> None:
        """A central copy's gap that ends a vouched-for removed run it holds the start of:
        the records before it are then not vouched for by the run (``unvouched_stretches``)."""
        row = self.rows[index]
        run = next((r for r in trusted.values() if r.first < gap[0] and r.last == gap[1]), None)
        if run is None:
            self.problem(row.seq, Problem.MISSING, self.missing_detail(gap, trusted))
        elif row.prev_hash != run.last_hash:
            self.problem(
                row.seq,
                Problem.BROKEN_LINK,
                f"it does not link to record {gap[1]}, removed by retention (record {run.by_seq})",
            )
        else:
            self.report.removed_runs += 1
            self.partly_removed[index - 1] = run

    def missing_detail(
        self, gap: tuple[int, int], trusted: dict[tuple[int, int], _Removed] | None
    ) -> str:
        what = f"{_span(gap)} before it are missing"
        named = self.named.get(gap)
        if named is not None and not named.possible:
            return (
                f"{what}: retention record {named.by_seq} names them, but a pass only "
                "removes records from before its own (and never the one just before it)"
            )
        if named is not None and trusted is not None:
            return (
                f"{what}: retention record {named.by_seq} names them, but no retention "
                "checkpoint right after it signs it (anyone can append such a record)"
            )
        overlapping = sorted(
            f"{first}-{last}"
            for first, last in self.named
            if first <= gap[1] and last >= gap[0] and (first, last) != gap
        )
        if overlapping:
            return f"{what}: retention removed {', '.join(overlapping)} there, not these"
        return f"{what} (no retention record names them)"

    def check_cutoff(self, kept: ChainedRecord, run: _Removed, gap: tuple[int, int]) -> None:
        """A record kept next to a removed run must agree with the pass that removed it.

        A pass stops at the first record not older than its cutoff (``plan_removal``), so
        every record it kept *before* a run was older than the cutoff, and kept by a hold.
        One newer than the cutoff says the records after it had not expired: they were
        taken out by someone else, and the run slipped into a signed pass. A record kept
        *after* a run was newer than the cutoff, or held, or the pass's head."""
        if run.cutoff_ns is None:
            # Every retention record a retention checkpoint seals names its cutoff.
            self.problem(
                kept.seq,
                Problem.RETENTION_MISMATCH,
                f"retention record {run.by_seq}, which says it removed the {_span(gap)} "
                "next to it, names no cutoff_ns",
            )
            return
        before = kept.seq < gap[0]
        if before and kept.at_ns >= run.cutoff_ns:
            self.problem(
                kept.seq,
                Problem.RETENTION_MISMATCH,
                f"it is newer than the cutoff of retention record {run.by_seq}, yet that "
                f"pass says it removed the {_span(gap)} after it: a pass stops at the first "
                "record newer than its cutoff, so they had not expired",
            )
            return
        if not before and (kept.seq >= run.by_seq - 1 or kept.at_ns >= run.cutoff_ns):
            return
        holds = self.holds_at.get(run.by_seq)
        if holds is None:
            holds = _holds(body for seq, body in self.hold_rows if seq < run.by_seq)
            self.holds_at[run.by_seq] = holds
        if not is_held(holds, kept.seq, kept.activation_id, kept.at_ns):
            self.problem(
                kept.seq,
                Problem.RETENTION_MISMATCH,
                f"it is older than the cutoff of retention record {run.by_seq} and no hold "
                f"kept it, yet that pass says it removed the {_span(gap)} next to it",
            )

    def check_checkpoint(self, row: ChainedRecord) -> bool:
        checked = check_checkpoint(row, log_id=self.log_id, pinned=self.pinned)
        if isinstance(checked, ChainProblem):
            self.problem(checked.seq, checked.problem, checked.detail)
            return False
        self.report.key_ids.add(key_id(checked.key))
        self.report.last_checkpoint_seq = row.seq
        self.report.last_checkpoint_at_ns = row.at_ns
        if checked.retention:
            self.retention_signed.add(row.seq - 1)
        return True


@dataclass(frozen=True)
class GoodCheckpoint:
    key: Ed25519PublicKey  # the key whose signature holds
    retention: bool  # a retention checkpoint: it seals the retention record before it


def check_checkpoint(
    row: ChainedRecord, *, log_id: str, pinned: Ed25519PublicKey | None
) -> GoodCheckpoint | ChainProblem:
    """A checkpoint record on its own: readable, signing the record before it (by its seq
    and the hash it links to), by ``pinned`` (or, unpinned, the key it names)."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        body = _json_object(row.body)
        head_seq, head_hash = _int(body, "head_seq"), _str(body, "head_hash")
        signature = bytes.fromhex(_str(body, "signature"))
        named = Ed25519PublicKey.from_public_bytes(bytes.fromhex(_str(body, "public_key")))
        vouches = body.get("vouches")
        if vouches is not None and vouches != RETENTION_VOUCH:
            raise ValueError(f"vouches {vouches!r:.40} is not {RETENTION_VOUCH!r}")
    except (ValueError, KeyError, TypeError) as exc:
        return ChainProblem(row.seq, Problem.BAD_CHECKPOINT, f"unreadable checkpoint ({exc})")
    # The record before it is checked by the link; a checkpoint signs exactly that one.
    if head_seq != row.seq - 1:
        return ChainProblem(
            row.seq,
            Problem.BAD_CHECKPOINT,
            f"it signs record {head_seq}, which is not the record before it",
        )
    if head_hash != row.prev_hash:
        return ChainProblem(
            row.seq,
            Problem.BAD_SIGNATURE,
            f"it signed a different record {head_seq} than the one in the log: "
            f"records up to {head_seq} were changed after they were signed",
        )
    if pinned is not None and public_key_hex(pinned) != public_key_hex(named):
        return ChainProblem(
            row.seq,
            Problem.WRONG_KEY,
            f"signed by key {key_id(named)}, not the pinned key {key_id(pinned)}",
        )
    key = pinned or named
    retention = vouches == RETENTION_VOUCH
    try:
        key.verify(signature, checkpoint_message(log_id, head_seq, head_hash, retention=retention))
    except InvalidSignature:
        return ChainProblem(
            row.seq,
            Problem.BAD_SIGNATURE,
            f"the signature over records up to {head_seq} does not verify with key {key_id(key)}",
        )
    return GoodCheckpoint(key, retention)


def retention_seal_problem(
    record: ChainedRecord,
    seal: ChainedRecord | None,
    *,
    log_id: str,
    public_key: Ed25519PublicKey,
) -> str | None:
    """Why ``seal`` (the record after ``record``, None if there is none) does not seal the
    retention record ``record`` as a pass made with ``public_key`` does; None when it
    does. The same checks as ``audit verify``: the retention pass uses it before it
    carries earlier runs forward from the record."""
    if (
        record_hash(
            record.prev_hash,
            record.seq,
            record.at_ns,
            kind=record.kind,
            activation_id=record.activation_id,
            body=record.body,
        )
        != record.hash
    ):
        return f"retention record {record.seq}: its content does not match its hash"
    if seal is None or seal.seq != record.seq + 1 or seal.kind != CHECKPOINT_KIND:
        return f"retention record {record.seq}: no checkpoint right after it"
    if seal.prev_hash != record.hash:
        return f"checkpoint {seal.seq} does not link to retention record {record.seq}"
    if (
        record_hash(
            seal.prev_hash, seal.seq, seal.at_ns, kind=seal.kind, activation_id=None, body=seal.body
        )
        != seal.hash
        or seal.activation_id is not None
    ):
        return f"checkpoint {seal.seq}: its content does not match its hash"
    checked = check_checkpoint(seal, log_id=log_id, pinned=public_key)
    if isinstance(checked, ChainProblem):
        return f"checkpoint {seal.seq}: {checked.problem.value}: {checked.detail}"
    if not checked.retention:
        return (
            f"retention record {record.seq}: checkpoint {seal.seq} after it is not a "
            "retention checkpoint (a periodic one signs whatever head the file has)"
        )
    return None


def _span(gap: tuple[int, int]) -> str:
    return f"record {gap[0]}" if gap[0] == gap[1] else f"records {gap[0]}-{gap[1]}"


def _runs_of(row: ChainedRecord) -> list[_Removed]:
    """The runs a retention record names; an unreadable one is skipped (the record's own
    hash check reports a damaged record)."""
    if row.kind != RETENTION_KIND:
        return []
    try:
        body = _json_object(row.body)
        removed = body["removed"]
        cutoff = body.get("cutoff_ns")
        cutoff_ns = _exact_int(cutoff) if cutoff is not None else None
    except (ValueError, KeyError, TypeError):
        return []
    if not isinstance(removed, list):
        return []
    runs: list[_Removed] = []
    for run in removed:
        try:
            first, last, last_hash, *rest = run
            before = _exact_str(rest[0]) if rest else ""
            runs.append(
                _Removed(
                    _exact_int(first),
                    _exact_int(last),
                    _exact_str(last_hash),
                    before,
                    row.seq,
                    cutoff_ns,
                )
            )
        except (ValueError, TypeError):
            continue
    return runs


def _holds(bodies: Iterable[str]) -> dict[Hold, int]:
    """The holds in force after these hold records, read as untrusted (the writer's
    ``active_holds`` reads them from its own log); an unreadable one is skipped."""
    readable: list[tuple[int, str]] = []
    for index, body in enumerate(bodies):
        try:
            data = _json_object(body)
            if not all(_optional_int(data.get(name)) for name in ("from_ns", "to_ns")):
                continue
            if not isinstance(data.get("activation_id"), str | None):
                continue
        except ValueError:
            continue
        readable.append((index, body))
    return active_holds(readable)


def _optional_int(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool))


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


def _exact_str(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r:.40} is not text")
    return value


def _str(body: dict[str, object], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str):
        raise ValueError(f"{name} is not text")
    return value
