"""The activation log: an append-only SQLite table, durable before anything is sent.

WAL mode with synchronous=FULL: a commit returns only after the WAL is fsync'd, so a
record we were told is durable survives a crash or power cut. One writer thread owns
the connection and commits whatever has queued up in one transaction (group commit):
the event loop never blocks on the disk, and a burst of acks costs one fsync, not one
each. Records are never updated; triggers in the schema refuse it, and refuse deletes
outside a retention pass.

The writer also keeps the hash chain (``mesh.journal.chain``): it reads the head inside each
write transaction, so another process appending (``trigger-mesh audit hold``) cannot fork
it, and with a signing key it appends a signed checkpoint every ``checkpoint_interval_s``
while there are unsigned records, and one when the log is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ValidationError

from mesh.journal.chain import GENESIS, RETENTION_VOUCH, record_hash, retention_seal_problem
from mesh.journal.records import RecordKind
from mesh.journal.retention import Candidate, RetentionPass, active_holds, plan_removal

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from mesh.journal.signer import CheckpointSigner

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq           INTEGER PRIMARY KEY,
    at_ns         INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    activation_id TEXT,
    body          TEXT    NOT NULL,
    prev_hash     TEXT    NOT NULL,
    hash          TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS retention_pass (token INTEGER);
CREATE INDEX IF NOT EXISTS records_by_activation ON records (activation_id, seq);
CREATE INDEX IF NOT EXISTS records_by_kind ON records (kind, at_ns);
CREATE TRIGGER IF NOT EXISTS records_append_only_update BEFORE UPDATE ON records
BEGIN SELECT RAISE(ABORT, 'the activation log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_append_only_delete BEFORE DELETE ON records
WHEN NOT EXISTS (SELECT 1 FROM retention_pass)
BEGIN SELECT RAISE(ABORT, 'the activation log is append-only'); END;
"""
_INSERT = (
    "INSERT INTO records (seq, at_ns, kind, activation_id, body, prev_hash, hash) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_BATCH_MAX = 2000
# Records nobody waits for (acks, publishes) are committed within this long; a durable
# append wakes the writer at once. During an ack flood this makes one commit (one fsync)
# per window instead of one per ack, and keeps the writer thread off the GIL.
LAZY_COMMIT_S = 0.005
# A commit the disk refused (full, I/O error, locked by another process) is tried again
# after this long, or at once for a durable append; the records wait in memory meanwhile,
# at most _RETAINED_MAX of them (beyond that the oldest are dropped and counted).
RETRY_S = 0.2
_RETAINED_MAX = 20_000
# SQLite primary result codes that a later attempt can get past: BUSY, LOCKED, IOERR, FULL.
_TRANSIENT = frozenset({5, 6, 10, 13})


class LogError(RuntimeError):
    pass


class RetentionRefused(LogError):
    """A retention pass refused to run: the log's newest retention record is not one
    this log's key sealed, so carrying its runs forward would sign for them."""


@contextlib.contextmanager
def reading(record: LogRecord) -> Iterator[None]:
    """Parse a record's body inside this: a body its entry model refuses (a damaged or
    edited log) becomes a LogError naming the record, not a traceback."""
    try:
        yield
    except json.JSONDecodeError as exc:
        raise LogError(f"record {record.seq} ({record.kind}) is not JSON: {exc}") from None
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "body"
        raise LogError(
            f"record {record.seq} ({record.kind}) cannot be read: {where}: {first['msg']}"
        ) from None


@dataclass(frozen=True)
class LogRecord:
    seq: int
    at_ns: int
    kind: str
    activation_id: str | None
    body: str
    prev_hash: str
    hash: str


class _Op(Enum):
    RECORD = "record"
    FLUSH = "flush"  # nothing to insert: settles once everything before it is durable
    CHECKPOINT = "checkpoint"  # body is the reason; the writer signs the head
    PRUNE = "prune"  # remove expired records, then append what was removed


@dataclass
class _Item:
    kind: str | None
    activation_id: str | None
    body: str
    at_ns: int
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[int] | None = None
    op: _Op = _Op.RECORD
    retention: RetentionPass | None = None
    outcome: dict[str, int] = field(default_factory=dict)
    refusal: str | None = None  # why a retention pass refused to run


# Fsync cost depends on whether a commit grows the WAL file (the file system must also
# journal the new size) or overwrites blocks it already has: bench/log_append.py measures
# both (docs/benchmarks.md has the figures; pre-sized is the cheaper, in the tail most).
# So the WAL is sized once when the log is created, kept at that size (journal_size_limit),
# and checkpointed by the writer when idle rather than inside a durable commit.
WAL_PRESIZE_BYTES = 8 * 1024 * 1024
CHECKPOINT_AFTER_BYTES = 4 * 1024 * 1024


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(f"PRAGMA journal_size_limit={2 * WAL_PRESIZE_BYTES}")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    # Appends touch the last pages of the table and its indexes only: a small cache will do.
    conn.execute("PRAGMA cache_size=-512")
    return conn


def _presize_wal(conn: sqlite3.Connection, path: Path) -> None:
    """Grow the WAL to WAL_PRESIZE_BYTES with one scratch transaction, then rewind it."""
    wal = path.with_name(path.name + "-wal")
    if wal.exists() and wal.stat().st_size >= WAL_PRESIZE_BYTES:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute("CREATE TABLE wal_presize (b BLOB)")
        conn.execute("INSERT INTO wal_presize VALUES (zeroblob(?))", (WAL_PRESIZE_BYTES,))
        conn.execute("DROP TABLE wal_presize")
        conn.execute("COMMIT")
    except sqlite3.Error:
        # No room for it (a disk nearly full): the WAL grows as records come instead.
        conn.execute("ROLLBACK")
        raise
    conn.execute("PRAGMA wal_checkpoint(RESTART)")


def _settle(future: asyncio.Future[int], seq: int, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(seq)


class ActivationLog:
    """Open with ``ActivationLog(path)``; ``close()`` when done (pending records are written).

    With ``signer``, a checkpoint is appended ``checkpoint_interval_s`` after the first
    unsigned record (and at close), so at most that much of the log is ever unsigned.
    ``wall_ns`` stamps checkpoints: the clock the records' own times come from, so that
    times rise along the log (a retention pass relies on it).
    """

    def __init__(
        self,
        path: Path | str,
        *,
        signer: CheckpointSigner | None = None,
        checkpoint_interval_s: float = 60.0,
        wall_ns: Callable[[], int] = time.time_ns,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path)
        try:
            self.log_id = _initialise(conn, self.path)
        finally:
            conn.close()
        self.signer = signer
        self._wall_ns = wall_ns
        self.retention_refusals = 0  # passes refused (RetentionRefused)
        self.checkpoint_interval_ns = int(checkpoint_interval_s * 1e9)
        self._cond = threading.Condition()
        self._pending: list[_Item] = []
        self._durable_waiting = False
        self._closing = False
        # Monotonic time when the oldest unsigned record was written (None: all signed).
        self._unsigned_since: int | None = None
        # The last commit's failure (None once a commit succeeds again), and counts.
        self.write_error: BaseException | None = None
        self.write_failures = 0
        self.dropped_records = 0
        self._retry_at = 0.0  # monotonic seconds: no lazy commit attempt before this
        self._thread = threading.Thread(target=self._writer, name="activation-log", daemon=True)
        self._thread.start()
        self._closed = False

    # --- writing ------------------------------------------------------------------------
    def append(
        self, kind: RecordKind, activation_id: str | None, body: BaseModel, at_ns: int
    ) -> None:
        """Queue a record; it is committed within LAZY_COMMIT_S (or with the next durable one)."""
        self.append_json(kind, activation_id, body.model_dump_json(), at_ns)

    def append_json(
        self, kind: RecordKind, activation_id: str | None, body: str, at_ns: int
    ) -> None:
        """``append`` for a body already serialised (hot paths assemble it directly).

        Raises LogError while the log cannot be written (disk full): the record is kept
        and written once the disk allows, but the caller must know it is not yet there."""
        self._check_open()
        self._put(_Item(kind.value, activation_id, body, at_ns))
        failing = self.write_error
        if failing is not None:
            raise LogError(f"{failing} (record kept in memory, written when the disk allows)")

    async def append_durable(
        self, kind: RecordKind, activation_id: str | None, body: BaseModel | str, at_ns: int
    ) -> int:
        """Append and return the record's sequence number once it is on disk (fsync'd).
        ``body`` is a model, or its JSON already serialised."""
        text = body if isinstance(body, str) else body.model_dump_json()
        return await self._submit(_Item(kind.value, activation_id, text, at_ns))

    def records_of(self, activation_id: str) -> list[LogRecord]:
        """Every record of one activation, in order, as written to the file so far (what a
        restarted gateway rebuilds an unfinished activation from)."""
        return list(read_records(self.path, activation_id=activation_id))

    def unfinished_activation_ids(self) -> list[str]:
        """Activations started and not finished, in the file (for a restart)."""
        return unfinished_activation_ids(self.path)

    def activations_since(self, since_ns: int) -> list[LogRecord]:
        """The activation records logged at or after ``since_ns`` (for a restart)."""
        return list(activations_since(self.path, since_ns))

    def latest_activation_ids(self, limit: int) -> list[str]:
        """The ids of the last ``limit`` activations in the file, oldest first (a restart)."""
        return latest_activation_ids(self.path, limit)

    async def flush(self) -> None:
        """Return when everything appended so far is durable."""
        await self._submit(_Item(None, None, "", 0, op=_Op.FLUSH))

    async def checkpoint(self, reason: str = "requested") -> int:
        """Sign the chain head now; returns the checkpoint's seq (or the head's, if the head
        is already a checkpoint). Without a signer this is a flush."""
        return await self._submit(_Item(None, None, reason, 0, op=_Op.CHECKPOINT))

    async def prune(self, retention: RetentionPass) -> dict[str, int]:
        """Remove records older than the retention period that no legal hold keeps, and
        append a retention record naming what went (with a signer, and a retention
        checkpoint signing it, in the same transaction). Returns removed / held / seq (the
        retention record's).

        With a signer, the runs earlier passes removed are carried on only from a retention
        record that a retention checkpoint by the same key seals. If the newest one is not
        sealed (appended or changed by someone without the key), nothing is removed and
        RetentionRefused is raised: the log stays as it is, for `audit verify` to name."""
        item = _Item(None, None, "", retention.now_ns, op=_Op.PRUNE, retention=retention)
        await self._submit(item)
        if item.refusal is not None:
            self.retention_refusals += 1
            raise RetentionRefused(item.refusal)
        return item.outcome

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    async def _submit(self, item: _Item) -> int:
        self._check_open()
        loop = asyncio.get_running_loop()
        item.loop, item.future = loop, loop.create_future()
        self._put(item)
        return await item.future

    def _check_open(self) -> None:
        # A failed write does not close the log: the next commit tries the disk again.
        if self._closed:
            raise LogError(f"activation log {self.path} is closed")

    def _put(self, item: _Item) -> None:
        with self._cond:
            self._pending.append(item)
            if item.future is not None:
                self._durable_waiting = True
                self._cond.notify()
            elif len(self._pending) == 1 or len(self._pending) >= _BATCH_MAX:
                self._cond.notify()

    def _checkpoint_due_in_s(self) -> float | None:
        if self.signer is None or self._unsigned_since is None:
            return None
        due = self._unsigned_since + self.checkpoint_interval_ns - time.monotonic_ns()
        return max(due, 0) / 1e9

    def _writer_connection(self) -> sqlite3.Connection | None:
        """The writer's own connection. A disk that refuses even that (full: no room for
        the shared-memory file) is tried again every RETRY_S; meanwhile appends are kept
        and durable ones answered with the error. None if the log is closed first."""
        while True:
            try:
                return _connect(self.path)
            except sqlite3.Error as exc:
                error = LogError(f"could not open activation log {self.path}: {exc}")
                self.write_error = error
                self.write_failures += 1
                with self._cond:
                    for item in self._pending:
                        if item.future is not None and item.loop is not None:
                            item.loop.call_soon_threadsafe(_settle, item.future, 0, error)
                            item.future = item.loop = None
                    if self._closing:
                        return None
                    self._cond.wait(RETRY_S)

    def _writer(self) -> None:
        conn = self._writer_connection()
        if conn is None:
            return
        try:
            # On the connection that stays open: the last one to close a WAL database
            # removes the WAL, so pre-sizing it on a short-lived one was undone at once.
            with contextlib.suppress(sqlite3.Error):
                _presize_wal(conn, self.path)
            self._write_until_closed(conn)
        finally:
            conn.close()

    def _write_until_closed(self, conn: sqlite3.Connection) -> None:
        written = 0
        while True:
            with self._cond:
                if written >= CHECKPOINT_AFTER_BYTES and not self._pending:
                    # Idle and the WAL is filling: copy it back now, while nobody waits.
                    # One the disk refuses is tried again later; it must not end the
                    # writer (every durable append would then wait forever).
                    self._cond.release()
                    try:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    finally:
                        self._cond.acquire()
                    written = 0
                while not self._pending and not self._closing:
                    due = self._checkpoint_due_in_s()
                    if due == 0:
                        break
                    self._cond.wait(due)
                if self._pending and not self._durable_waiting and not self._closing:
                    self._cond.wait(LAZY_COMMIT_S)
                # After a refused commit, wait before trying the disk again, unless a
                # durable append (whose caller waits for the answer) or close comes.
                while (
                    self._pending
                    and not self._durable_waiting
                    and not self._closing
                    and (pause := self._retry_at - time.monotonic()) > 0
                ):
                    self._cond.wait(pause)
                batch, self._pending = self._pending, []
                self._durable_waiting = False
                closing = self._closing
            due = self._checkpoint_due_in_s()
            if due == 0 or (closing and not batch and due is not None):
                batch.append(_Item(None, None, "shutdown" if closing else "periodic", 0))
                batch[-1].op = _Op.CHECKPOINT
            if batch:
                # Closing: one last attempt; what the disk still refuses is lost.
                if self._commit(conn, batch, retain=not closing):
                    written += sum(len(item.body) + 64 for item in batch)
            elif closing:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                return

    def _commit(self, conn: sqlite3.Connection, batch: list[_Item], *, retain: bool) -> bool:
        """Write ``batch`` in one transaction and settle its futures; True if written.
        A failure the disk may get past (``_TRANSIENT``) keeps the batch, in order, at the
        head of the queue when ``retain``: its records are written on a later attempt."""
        error: BaseException | None = None
        retry = False
        seqs: list[int] = []
        last_kind = ""
        try:
            conn.execute("BEGIN IMMEDIATE")
            # Read inside the write lock: another process may have appended since.
            head = conn.execute(
                "SELECT seq, hash, kind FROM records ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            head_seq, head_hash, last_kind = head if head is not None else (0, GENESIS, "")
            rows: list[tuple[int, int, str, str | None, str, str, str]] = []
            for item in batch:
                record = self._record_of(conn, item, rows, (head_seq, head_hash, last_kind))
                if record is not None:
                    added = self._chained(item, record, head_seq, head_hash)
                    rows.extend(added)
                    item.outcome["seq"] = added[0][0]
                    head_seq, head_hash, last_kind = added[-1][0], added[-1][6], added[-1][2]
                seqs.append(head_seq)
            if rows:
                conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            error = LogError(f"could not write to activation log {self.path}: {exc}")
            self.write_error = error
            self.write_failures += 1
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
            retry = retain and code in _TRANSIENT
        if error is None:
            self.write_error = None
            signed = last_kind in ("", RecordKind.CHECKPOINT.value)
            if signed:
                self._unsigned_since = None
            elif self._unsigned_since is None:
                self._unsigned_since = time.monotonic_ns()
        for item, seq in zip(batch, seqs or [0] * len(batch), strict=True):
            if item.future is not None and item.loop is not None:
                item.loop.call_soon_threadsafe(_settle, item.future, 0 if error else seq, error)
                if retry:  # answered now (not durable); the retry only writes it
                    item.future = item.loop = None
        if retry:
            self._retain(batch)
        return error is None

    def _chained(
        self, item: _Item, record: tuple[str, str | None, str, int], head_seq: int, head_hash: str
    ) -> list[tuple[int, int, str, str | None, str, str, str]]:
        """The rows ``item`` appends after the head: its record, and after a retention
        record (with a signer) the retention checkpoint that signs it, in the same
        transaction: only a pass made with the key can account for what it removed
        (`audit verify` refuses a retention record that anyone could append)."""
        kind, activation_id, body, at_ns = record
        seq = head_seq + 1
        digest = record_hash(
            head_hash, seq, at_ns, kind=kind, activation_id=activation_id, body=body
        )
        rows = [(seq, at_ns, kind, activation_id, body, head_hash, digest)]
        if item.op is _Op.PRUNE and self.signer is not None:
            signed = _json(self.signer.body(self.log_id, seq, digest, "retention", retention=True))
            # The record's own time: a hold over a span of time keeps both or neither.
            checkpoint = RecordKind.CHECKPOINT.value
            sealed = record_hash(
                digest, seq + 1, at_ns, kind=checkpoint, activation_id=None, body=signed
            )
            rows.append((seq + 1, at_ns, checkpoint, None, signed, digest, sealed))
        return rows

    def _retain(self, batch: list[_Item]) -> None:
        with self._cond:
            self._pending[:0] = batch
            excess = len(self._pending) - _RETAINED_MAX
            if excess > 0:
                del self._pending[:excess]
                self.dropped_records += excess
            self._retry_at = time.monotonic() + RETRY_S

    def _record_of(
        self,
        conn: sqlite3.Connection,
        item: _Item,
        rows: list[tuple[int, int, str, str | None, str, str, str]],
        head: tuple[int, str, str],
    ) -> tuple[str, str | None, str, int] | None:
        """What ``item`` appends: (kind, activation id, body, at_ns), or None.
        ``head`` is the chain's head so far: seq, hash, kind."""
        head_seq, head_hash, head_kind = head
        match item.op:
            case _Op.RECORD:
                assert item.kind is not None
                return item.kind, item.activation_id, item.body, item.at_ns
            case _Op.CHECKPOINT:
                if self.signer is None or head_seq == 0 or head_kind == RecordKind.CHECKPOINT:
                    return None
                signed = self.signer.body(self.log_id, head_seq, head_hash, item.body)
                return RecordKind.CHECKPOINT.value, None, _json(signed), self._wall_ns()
            case _Op.PRUNE:
                assert item.retention is not None
                if rows:  # the pass reads the table: what this batch added must be in it
                    conn.executemany(_INSERT, rows)
                    rows.clear()
                seal_key = self.signer.public_key if self.signer is not None else None
                try:
                    removed = _prune(
                        conn,
                        item.retention,
                        head_seq,
                        item.outcome,
                        log_id=self.log_id,
                        seal_key=seal_key,
                    )
                except RetentionRefused as refused:
                    item.refusal = str(refused)
                    return None
                if removed is None:
                    return None
                return RecordKind.RETENTION.value, None, removed, item.retention.now_ns
        return None


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _initialise(conn: sqlite3.Connection, path: Path) -> str:
    """Create the schema (or check an existing one) and return the log's id."""
    has_records = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'records'"
    ).fetchone()
    if has_records:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        if row is not None and row[0] != str(SCHEMA_VERSION):
            raise LogError(
                f"{path}: activation log schema {row[0]} has no hash chain "
                f"(this version writes schema {SCHEMA_VERSION}); start a new log"
            )
    conn.executescript(_SCHEMA)
    conn.execute(
        "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?), ('format', ?), "
        "('log_id', ?)",
        (str(SCHEMA_VERSION), "trigger-mesh activation log", uuid.uuid4().hex),
    )
    return str(conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()[0])


def _prune(
    conn: sqlite3.Connection,
    retention: RetentionPass,
    head_seq: int,
    outcome: dict[str, int],
    *,
    log_id: str,
    seal_key: Ed25519PublicKey | None,
) -> str | None:
    """Delete expired, unheld records (inside the writer's transaction); the retention
    record's body, or None when nothing expired. ``seal_key``: the key this log is signed
    with (None: an unsigned pass)."""
    cutoff = retention.cutoff_ns
    holds = active_holds(
        conn.execute(
            "SELECT seq, body FROM records WHERE kind = ? ORDER BY seq", (RecordKind.HOLD.value,)
        )
    )
    last_expired = conn.execute(
        "SELECT max(seq) FROM records WHERE at_ns < ? AND seq < ?", (cutoff, head_seq)
    ).fetchone()[0]
    if last_expired is None:
        outcome.update(removed=0, held=0)
        return None
    rows = [
        Candidate(*row)
        for row in conn.execute(
            "SELECT seq, at_ns, activation_id, prev_hash, hash FROM records WHERE seq <= ? "
            "ORDER BY seq",
            (last_expired,),
        )
    ]
    earlier = _earlier_runs(conn, log_id, seal_key)
    removal = plan_removal(rows, cutoff_ns=cutoff, holds=holds, earlier_runs=earlier)
    outcome.update(removed=len(removal.seqs), held=removal.held)
    if not removal.seqs:
        return None
    conn.execute("INSERT INTO retention_pass VALUES (1)")
    conn.executemany("DELETE FROM records WHERE seq = ?", [(seq,) for seq in removal.seqs])
    conn.execute("DELETE FROM retention_pass")
    return _json(
        {
            "retention_days": retention.retention_days,
            "cutoff_ns": cutoff,
            "removed_now": len(removal.seqs),
            "held": removal.held,
            "removed": removal.runs,
        }
    )


def _earlier_runs(
    conn: sqlite3.Connection, log_id: str, seal_key: Ed25519PublicKey | None
) -> list[list[int | str]]:
    """The runs earlier passes removed, from the newest retention record. A signed pass
    takes them only from a record that a retention checkpoint by its own key seals (what
    `audit verify` accepts): it signs whatever it carries on, so a record someone appended
    would have its runs laundered. Raises RetentionRefused otherwise."""
    latest = conn.execute(
        "SELECT seq, at_ns, kind, activation_id, body, prev_hash, hash FROM records "
        "WHERE kind = ? ORDER BY seq DESC LIMIT 1",
        (RecordKind.RETENTION.value,),
    ).fetchone()
    if latest is None:
        return []
    record = LogRecord(*latest)
    if seal_key is not None:
        seal = conn.execute(
            "SELECT seq, at_ns, kind, activation_id, body, prev_hash, hash FROM records "
            "WHERE seq = ?",
            (record.seq + 1,),
        ).fetchone()
        problem = retention_seal_problem(
            record,
            LogRecord(*seal) if seal is not None else None,
            log_id=log_id,
            public_key=seal_key,
        )
        if problem is not None:
            signed_before = conn.execute(
                "SELECT 1 FROM records WHERE kind = ? AND seq < ? LIMIT 1",
                (RecordKind.CHECKPOINT.value, record.seq),
            ).fetchone()
            if signed_before is None and not _claims_retention_seal(seal):
                # Written before the log had a key: its runs stay unaccounted for (audit
                # verify reports them missing) rather than signed for now.
                return []
            raise RetentionRefused(
                f"retention pass refused, nothing removed: the newest retention record is "
                f"not sealed by this log's key ({problem}); it was appended or changed "
                "without the key, and this pass would sign for the runs it names. "
                "`trigger-mesh audit verify` names what is wrong"
            )
    runs: list[list[int | str]] = json.loads(record.body)["removed"]
    return runs


def _claims_retention_seal(row: tuple[object, ...] | None) -> bool:
    """Is this row a checkpoint that says it is a retention checkpoint (whoever signed it)?"""
    if row is None or row[2] != RecordKind.CHECKPOINT.value:
        return False
    try:
        body = json.loads(str(row[4]))
    except (ValueError, RecursionError):
        return False
    return isinstance(body, dict) and body.get("vouches") == RETENTION_VOUCH


# --- reading (any thread, any process: WAL readers never block the writer) ---------------
def open_readonly(path: Path | str) -> sqlite3.Connection:
    path = Path(path)
    if not path.is_file():
        raise LogError(f"{path}: no such activation log")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        fmt = conn.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise LogError(f"{path}: not a trigger-mesh activation log ({exc})") from None
    if fmt is None:
        conn.close()
        raise LogError(f"{path}: not a trigger-mesh activation log (no format marker)")
    return conn


def read_records(
    path: Path | str, *, activation_id: str | None = None, kinds: tuple[str, ...] = ()
) -> Iterator[LogRecord]:
    conn = open_readonly(path)
    try:
        sql = "SELECT seq, at_ns, kind, activation_id, body, prev_hash, hash FROM records"
        clauses, params = [], []
        if activation_id is not None:
            clauses.append("activation_id = ?")
            params.append(activation_id)
        if kinds:
            clauses.append(f"kind IN ({','.join('?' * len(kinds))})")
            params.extend(kinds)
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        for row in conn.execute(sql + " ORDER BY seq", params):
            yield LogRecord(*row)
    finally:
        conn.close()


def unfinished_activation_ids(path: Path | str) -> list[str]:
    conn = open_readonly(path)
    try:
        rows = conn.execute(
            "SELECT activation_id FROM records WHERE kind = ? AND activation_id NOT IN "
            "(SELECT activation_id FROM records WHERE kind = ?) ORDER BY seq",
            (RecordKind.ACTIVATION.value, RecordKind.FINISHED.value),
        ).fetchall()
    finally:
        conn.close()
    return [row[0] for row in rows]


def activations_since(path: Path | str, since_ns: int) -> Iterator[LogRecord]:
    """Activation records written at or after ``since_ns`` (to rebuild cooldown windows)."""
    conn = open_readonly(path)
    try:
        for row in conn.execute(
            "SELECT seq, at_ns, kind, activation_id, body, prev_hash, hash FROM records "
            "WHERE kind = ? AND at_ns >= ? ORDER BY seq",
            (RecordKind.ACTIVATION.value, since_ns),
        ):
            yield LogRecord(*row)
    finally:
        conn.close()


def latest_activation_ids(path: Path | str, limit: int) -> list[str]:
    """The ids of the last ``limit`` activation records, oldest first."""
    conn = open_readonly(path)
    try:
        rows = conn.execute(
            "SELECT activation_id FROM records WHERE kind = ? ORDER BY seq DESC LIMIT ?",
            (RecordKind.ACTIVATION.value, limit),
        ).fetchall()
    finally:
        conn.close()
    return [row[0] for row in reversed(rows)]


def log_id_of(path: Path | str) -> str:
    """The log's id (made when it was created; checkpoints sign it)."""
    conn = open_readonly(path)
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
    finally:
        conn.close()
    if row is None:
        raise LogError(f"{path}: activation log has no id (schema before {SCHEMA_VERSION})")
    return str(row[0])
