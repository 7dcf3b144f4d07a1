"""The outbox: a durable queue of messages the gateway must deliver, whatever the link.

Escalations, receipts, final activation records and cancel notices are written here
before they are published and removed once the broker has acknowledged them. An
activation's final record and its escalations are queued together, with its outcome,
before the activation log says `finished` (``put_final``). While the
broker (or the car's uplink) is down they wait here, across restarts, and go out in the
order they were queued when it returns. An entry may carry an expiry: one that is past
it when its turn comes is dropped and counted, never sent late.

Record-start commands are not queued here: their durable queue is the activation log
itself (an activation logged and not finished is resumed after a restart, and its
command is only ever sent before it expires; see mesh/gateway/coordinator.py).

SQLite in WAL mode with ``synchronous=NORMAL``: a commit survives the process being
killed (the failure the gateway must ride out most often); a power cut can lose the last
few entries, whose content the fsync'd activation log still holds.

A file that cannot be opened (a full disk: no room for SQLite's shared-memory file; a
directory that cannot be created or written; an I/O error) does not stop the gateway:
recording matters more than the record. The outbox is then held in an in-memory SQLite
database with the same schema (``durable`` is False, ``fallback_error`` says why), so
messages still wait for the link and go out in order, but do not outlive the process. In
memory it holds at most ``MEMORY_MAX`` entries: at the limit ``put`` and ``put_final``
raise OutboxError, as for any write that fails, and the forwarder sends the message
without queuing it (mesh/gateway/forwarder.py). ``reopen`` tries the file again and, once
it opens, moves what memory holds into it (the entries after the file's own, in the order
queued, and the kept outcomes) in one transaction, then uses the file; the forwarder
calls it on a back-off while the outbox is in memory. Only opening falls back: a write
the open file refuses later (a disk that fills while the gateway runs) raises
OutboxError as before.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    topic         TEXT    NOT NULL,
    payload       BLOB    NOT NULL,
    qos           INTEGER NOT NULL,
    retain        INTEGER NOT NULL,
    queued_at_ns  INTEGER NOT NULL,
    expires_at_ns INTEGER
)
"""
# An activation's outcome queued here before the activation log says `finished`: kept
# until the log does, so that a restart in between logs the outcome dispatch was sent
# rather than deciding it a second time (docs/reliability.md).
_FINALS_SCHEMA = """
CREATE TABLE IF NOT EXISTS finals (
    activation_id TEXT    PRIMARY KEY,
    outcome       BLOB    NOT NULL,
    queued_at_ns  INTEGER NOT NULL
)
"""
# Outcomes waiting for the log at most: only a log that cannot be written for long keeps
# them (each is removed once logged); beyond this the oldest are forgotten, and a restart
# then decides those activations again (dispatch may hear of them twice).
FINALS_MAX = 4096
# Entries the outbox holds at most while it is in memory (its file cannot be opened):
# the receipts and final records of some 5,000 activations, fewer with escalations. A
# final record with three cameras is about 1.4 KB, an escalation about 0.4 KB (the
# integration tests' logs), so about 15 MB at most at the limit with three cameras an
# activation; records of activations with many cameras are larger. At the limit ``put``
# and ``put_final`` raise OutboxError and the forwarder sends without queuing.
MEMORY_MAX = 10_000


class OutboxError(RuntimeError):
    """The outbox file cannot be opened or written (named in the message)."""


@dataclass(frozen=True)
class Queued:
    id: int
    topic: str
    payload: bytes
    qos: int
    retain: bool
    queued_at_ns: int
    expires_at_ns: int | None

    def expired(self, now_ns: int) -> bool:
        return self.expires_at_ns is not None and now_ns >= self.expires_at_ns


class Outbox:
    """Open with ``Outbox(path)``: the file, or memory if the file cannot be opened."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # Why the outbox is in memory rather than in its file (None: in its file).
        self.fallback_error: str | None = None
        try:
            self._db = _open_file(path)
        except OutboxError as exc:
            self._db = _open_memory()
            self.fallback_error = str(exc)
        self._depth = self._count()
        self._finals = self._count_finals()

    @property
    def durable(self) -> bool:
        """True while the outbox is in its file (entries survive a restart)."""
        return self.fallback_error is None

    def reopen(self) -> dict[int, int] | None:
        """In memory: try the file again. Once it opens, what memory holds is moved into
        it in one transaction (the entries after the file's own, in the order queued; the
        kept outcomes, one per activation, at most FINALS_MAX) and the file is used from
        then on. Returns each moved entry's id in memory -> its id in the file (empty if
        the outbox was in its file already), or None if the file still cannot be opened or
        written (``fallback_error`` says why; memory keeps everything)."""
        if self.durable:
            return {}
        try:
            db = _open_file(self.path)
        except OutboxError as exc:
            self.fallback_error = str(exc)
            return None
        try:
            moved = self._move_into(db)
        except sqlite3.Error as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            db.close()
            self.fallback_error = f"outbox {self.path}: opened, but cannot be written: {exc}"
            return None
        self._db.close()
        self._db = db
        self.fallback_error = None
        self._depth = self._count()
        self._finals = self._count_finals()
        return moved

    def _move_into(self, db: sqlite3.Connection) -> dict[int, int]:
        """Copy memory's entries and kept outcomes into ``db`` in one transaction."""
        rows = self._db.execute(
            "SELECT id, topic, payload, qos, retain, queued_at_ns, expires_at_ns"
            " FROM outbox ORDER BY id"
        ).fetchall()
        finals = self._db.execute(
            "SELECT activation_id, outcome, queued_at_ns FROM finals ORDER BY queued_at_ns, rowid"
        ).fetchall()
        moved: dict[int, int] = {}
        db.execute("BEGIN IMMEDIATE")
        for row in rows:
            cursor = db.execute(
                "INSERT INTO outbox (topic, payload, qos, retain, queued_at_ns, expires_at_ns)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                row[1:],
            )
            assert cursor.lastrowid is not None
            moved[row[0]] = cursor.lastrowid
        db.executemany(
            "INSERT OR REPLACE INTO finals (activation_id, outcome, queued_at_ns) VALUES (?, ?, ?)",
            finals,
        )
        over = int(db.execute("SELECT count(*) FROM finals").fetchone()[0]) - FINALS_MAX
        if over > 0:
            db.execute(
                "DELETE FROM finals WHERE rowid IN"
                " (SELECT rowid FROM finals ORDER BY queued_at_ns, rowid LIMIT ?)",
                (over,),
            )
        # A write even when memory holds nothing: a file that opens but cannot take one
        # (its disk still full) is not switched to.
        db.execute("INSERT INTO finals (activation_id, outcome, queued_at_ns) VALUES ('', x'', 0)")
        db.execute("DELETE FROM finals WHERE activation_id = ''")
        db.execute("COMMIT")
        return moved

    def put(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        now_ns: int,
        expires_at_ns: int | None = None,
    ) -> int:
        """Queue a message; returns its id. Raises OutboxError if it could not be stored
        (in memory: also once it holds MEMORY_MAX entries)."""
        self._check_room(1, f"cannot queue for {topic}")
        try:
            cursor = self._db.execute(
                "INSERT INTO outbox (topic, payload, qos, retain, queued_at_ns, expires_at_ns)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (topic, payload, qos, int(retain), now_ns, expires_at_ns),
            )
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path}: cannot queue for {topic}: {exc}") from exc
        self._depth += 1
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def put_final(
        self,
        activation_id: str,
        outcome: bytes,
        messages: Sequence[tuple[str, bytes]],
        *,
        now_ns: int,
    ) -> None:
        """Queue an activation's final messages (its record, its escalations) and keep its
        ``outcome`` until ``settle_final``: all in one transaction, so a crash leaves all
        of them or none. Raises OutboxError if they could not be stored (in memory: also
        if they would take it past MEMORY_MAX entries)."""
        self._check_room(len(messages), f"cannot queue the outcome of {activation_id}")
        try:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT INTO outbox (topic, payload, qos, retain, queued_at_ns, expires_at_ns)"
                " VALUES (?, ?, 1, 0, ?, NULL)",
                [(topic, payload, now_ns) for topic, payload in messages],
            )
            replaced = self._db.execute(
                "DELETE FROM finals WHERE activation_id = ?", (activation_id,)
            ).rowcount
            self._db.execute(
                "INSERT INTO finals (activation_id, outcome, queued_at_ns) VALUES (?, ?, ?)",
                (activation_id, outcome, now_ns),
            )
            over = self._finals - replaced + 1 - FINALS_MAX
            if over > 0:
                self._db.execute(
                    "DELETE FROM finals WHERE rowid IN"
                    " (SELECT rowid FROM finals ORDER BY queued_at_ns, rowid LIMIT ?)",
                    (over,),
                )
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise OutboxError(
                f"outbox {self.path}: cannot queue the outcome of {activation_id}: {exc}"
            ) from exc
        self._depth += len(messages)
        self._finals = min(FINALS_MAX, self._finals - replaced + 1)

    def queued_final(self, activation_id: str) -> bytes | None:
        """The outcome queued for this activation and not yet settled, if any."""
        row = self._db.execute(
            "SELECT outcome FROM finals WHERE activation_id = ?", (activation_id,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def settle_final(self, activation_id: str) -> None:
        """The activation log holds the outcome now: forget it here. A failure only means
        it is kept until the next start, which drops it (``keep_finals``)."""
        try:
            removed = self._db.execute(
                "DELETE FROM finals WHERE activation_id = ?", (activation_id,)
            ).rowcount
        except sqlite3.Error:
            return
        self._finals = max(0, self._finals - removed)

    def keep_finals(self, activation_ids: Collection[str]) -> None:
        """Forget every queued outcome but these (at start: the others are logged already,
        or belong to activations the log never held)."""
        keep = set(activation_ids)
        rows = self._db.execute("SELECT activation_id FROM finals").fetchall()
        gone = [(row[0],) for row in rows if row[0] not in keep]
        with contextlib.suppress(sqlite3.Error):
            self._db.executemany("DELETE FROM finals WHERE activation_id = ?", gone)
        self._finals = self._count_finals()

    def finals(self) -> int:
        """Outcomes queued and not yet in the log."""
        return self._finals

    def head(self, limit: int) -> list[Queued]:
        """The oldest ``limit`` entries, oldest first."""
        rows = self._db.execute(
            "SELECT id, topic, payload, qos, retain, queued_at_ns, expires_at_ns"
            " FROM outbox ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            Queued(row[0], row[1], bytes(row[2]), row[3], bool(row[4]), row[5], row[6])
            for row in rows
        ]

    def remove(self, ids: list[int]) -> None:
        """Forget delivered (or expired) entries. A failure here only means they may be
        sent twice, which every receiver tolerates (QoS 1 semantics)."""
        if not ids:
            return
        try:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
            self._db.execute("COMMIT")
        except sqlite3.Error:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            self._depth = self._count()
            return
        self._depth = max(0, self._depth - len(ids))

    def depth(self) -> int:
        return self._depth

    def oldest_queued_at_ns(self) -> int | None:
        row = self._db.execute("SELECT min(queued_at_ns) FROM outbox").fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        """Close it (in memory: what it holds is gone)."""
        self._db.close()

    def _check_room(self, entries: int, what: str) -> None:
        if not self.durable and self._depth + entries > MEMORY_MAX:
            raise OutboxError(
                f"outbox {self.path}: {what}: held in memory ({self.fallback_error}) and full"
                f" ({self._depth} of {MEMORY_MAX} entries)"
            )

    def _count(self) -> int:
        row = self._db.execute("SELECT count(*) FROM outbox").fetchone()
        return int(row[0])

    def _count_finals(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM finals").fetchone()[0])


def _open_file(path: Path) -> sqlite3.Connection:
    """The outbox file, created if need be; OutboxError naming it if it cannot be opened."""
    db: sqlite3.Connection | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(_SCHEMA)
        db.execute(_FINALS_SCHEMA)
    except (sqlite3.Error, OSError) as exc:
        if db is not None:
            db.close()
        raise OutboxError(f"outbox {path}: {exc}") from exc
    return db


def _open_memory() -> sqlite3.Connection:
    """An in-memory database with the file's schema."""
    db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
    db.execute(_SCHEMA)
    db.execute(_FINALS_SCHEMA)
    return db
