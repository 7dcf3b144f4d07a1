"""The activation log: an append-only SQLite table, durable before anything is sent.

WAL mode with synchronous=FULL: a commit returns only after the WAL is fsync'd, so a
record we were told is durable survives a crash or power cut. One writer thread owns
the connection and commits whatever has queued up in one transaction (group commit):
the event loop never blocks on the disk, and a burst of acks costs one fsync, not one
each. Records are never updated or deleted; triggers in the schema refuse it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from mesh.log_records import RecordKind

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    seq           INTEGER PRIMARY KEY,
    at_ns         INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    activation_id TEXT,
    body          TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS records_by_activation ON records (activation_id, seq);
CREATE INDEX IF NOT EXISTS records_by_kind ON records (kind, at_ns);
CREATE TRIGGER IF NOT EXISTS records_append_only_update BEFORE UPDATE ON records
BEGIN SELECT RAISE(ABORT, 'the activation log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS records_append_only_delete BEFORE DELETE ON records
BEGIN SELECT RAISE(ABORT, 'the activation log is append-only'); END;
"""
_INSERT = "INSERT INTO records (at_ns, kind, activation_id, body) VALUES (?, ?, ?, ?)"
_BATCH_MAX = 2000
# Records nobody waits for (acks, publishes) are committed within this long; a durable
# append wakes the writer at once. During an ack flood this makes one commit (one fsync)
# per window instead of one per ack, and keeps the writer thread off the GIL.
LAZY_COMMIT_S = 0.005


class LogError(RuntimeError):
    pass


@dataclass(frozen=True)
class LogRecord:
    seq: int
    at_ns: int
    kind: str
    activation_id: str | None
    body: str


@dataclass
class _Item:
    kind: str | None  # None: a flush marker, nothing to insert
    activation_id: str | None
    body: str
    at_ns: int
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[int] | None = None


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
    conn.execute("CREATE TABLE wal_presize (b BLOB)")
    conn.execute("INSERT INTO wal_presize VALUES (zeroblob(?))", (WAL_PRESIZE_BYTES,))
    conn.execute("DROP TABLE wal_presize")
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(RESTART)")


def _settle(future: asyncio.Future[int], seq: int, error: BaseException | None) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(seq)


class ActivationLog:
    """Open with ``ActivationLog(path)``; ``close()`` when done (pending records are written)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = _connect(self.path)
        try:
            conn.executescript(_SCHEMA)
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?), ('format', ?)",
                (str(SCHEMA_VERSION), "trigger-mesh activation log"),
            )
            _presize_wal(conn, self.path)
        finally:
            conn.close()
        self._cond = threading.Condition()
        self._pending: list[_Item] = []
        self._durable_waiting = False
        self._closing = False
        self.write_error: BaseException | None = None
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
        """``append`` for a body already serialised (hot paths assemble it directly)."""
        self._check_open()
        self._put(_Item(kind.value, activation_id, body, at_ns))

    async def append_durable(
        self, kind: RecordKind, activation_id: str | None, body: BaseModel | str, at_ns: int
    ) -> int:
        """Append and return the record's sequence number once it is on disk (fsync'd).
        ``body`` is a model, or its JSON already serialised."""
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        text = body if isinstance(body, str) else body.model_dump_json()
        self._put(_Item(kind.value, activation_id, text, at_ns, loop, future))
        return await future

    async def flush(self) -> None:
        """Return when everything appended so far is durable."""
        self._check_open()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self._put(_Item(None, None, "", 0, loop, future))
        await future

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._cond:
            self._closing = True
            self._cond.notify()
        self._thread.join()

    def _check_open(self) -> None:
        if self._closed:
            raise LogError(f"activation log {self.path} is closed")
        if self.write_error is not None:
            raise LogError(f"activation log {self.path} failed: {self.write_error}")

    def _put(self, item: _Item) -> None:
        with self._cond:
            self._pending.append(item)
            if item.future is not None:
                self._durable_waiting = True
                self._cond.notify()
            elif len(self._pending) == 1 or len(self._pending) >= _BATCH_MAX:
                self._cond.notify()

    def _writer(self) -> None:
        conn = _connect(self.path)
        written = 0
        try:
            while True:
                with self._cond:
                    if written >= CHECKPOINT_AFTER_BYTES and not self._pending:
                        # Idle and the WAL is filling: copy it back now, while nobody waits.
                        self._cond.release()
                        try:
                            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                        finally:
                            self._cond.acquire()
                        written = 0
                    while not self._pending and not self._closing:
                        self._cond.wait()
                    if not self._durable_waiting and not self._closing:
                        self._cond.wait(LAZY_COMMIT_S)
                    batch, self._pending = self._pending, []
                    self._durable_waiting = False
                    closing = self._closing
                if batch:
                    self._commit(conn, batch)
                    written += sum(len(item.body) + 64 for item in batch)
                elif closing:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Item]) -> None:
        rows = [(i.at_ns, i.kind, i.activation_id, i.body) for i in batch if i.kind is not None]
        error: BaseException | None = None
        last = 0
        try:
            conn.execute("BEGIN IMMEDIATE")
            if rows:
                conn.executemany(_INSERT, rows)
                last = conn.execute("SELECT last_insert_rowid()").fetchone()[0]
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            error = LogError(f"could not write to activation log {self.path}: {exc}")
            self.write_error = error
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        # One writer, in one transaction: the batch's rows got consecutive sequence numbers.
        seq = last - len(rows)
        for item in batch:
            if item.kind is not None:
                seq += 1
            if item.future is not None and item.loop is not None:
                item.loop.call_soon_threadsafe(_settle, item.future, 0 if error else seq, error)


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
        sql = "SELECT seq, at_ns, kind, activation_id, body FROM records"
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
            "SELECT seq, at_ns, kind, activation_id, body FROM records "
            "WHERE kind = ? AND at_ns >= ? ORDER BY seq",
            (RecordKind.ACTIVATION.value, since_ns),
        ):
            yield LogRecord(*row)
    finally:
        conn.close()
