"""The outbox: a durable queue of messages the gateway must deliver, whatever the link.

Escalations, receipts, final activation records and cancel notices are written here
before they are published and removed once the broker has acknowledged them. While the
broker (or the car's uplink) is down they wait here, across restarts, and go out in the
order they were queued when it returns. An entry may carry an expiry: one that is past
it when its turn comes is dropped and counted, never sent late.

Record-start commands are not queued here: their durable queue is the activation log
itself (an activation logged and not finished is resumed after a restart, and its
command is only ever sent before it expires; see mesh/coordinator.py).

SQLite in WAL mode with ``synchronous=NORMAL``: a commit survives the process being
killed (the failure the gateway must ride out most often); a power cut can lose the last
few entries, whose content the fsync'd activation log still holds.
"""

from __future__ import annotations

import sqlite3
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
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {path}: {exc}") from exc
        self._depth = self._count()

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
        """Queue a message; returns its id. Raises OutboxError if it could not be stored."""
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
        self._db.close()

    def _count(self) -> int:
        row = self._db.execute("SELECT count(*) FROM outbox").fetchone()
        return int(row[0])
