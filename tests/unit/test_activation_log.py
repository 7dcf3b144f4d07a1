"""The activation log: durable appends, append-only, and what a restart needs to find."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest

from mesh.journal.export import export
from mesh.journal.records import RecordKind, ResumedEntry
from mesh.journal.store import (
    ActivationLog,
    LogError,
    open_readonly,
    read_records,
    unfinished_activation_ids,
)

BODY = ResumedEntry(reason="test", acks_recovered=0)


async def test_durable_append_is_on_disk_when_it_returns(tmp_path: Path) -> None:
    log = ActivationLog(tmp_path / "a.db")
    try:
        seq = await log.append_durable(RecordKind.ACTIVATION, "a-1", BODY, 123)
        # Another connection (another process, after a crash) sees it at once.
        rows = list(read_records(tmp_path / "a.db"))
        assert [(r.seq, r.kind, r.activation_id, r.at_ns) for r in rows] == [
            (seq, "activation", "a-1", 123)
        ]
        conn = sqlite3.connect(tmp_path / "a.db")
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        conn.close()
    finally:
        log.close()


async def test_queued_records_keep_their_order(tmp_path: Path) -> None:
    log = ActivationLog(tmp_path / "a.db")
    for i in range(500):
        log.append(RecordKind.ACK, f"a-{i % 3}", ResumedEntry(reason=str(i), acks_recovered=i), i)
    await log.flush()
    log.close()
    reasons = [json.loads(r.body)["reason"] for r in read_records(tmp_path / "a.db")]
    assert reasons == [str(i) for i in range(500)]


async def test_records_cannot_be_changed_or_removed(tmp_path: Path) -> None:
    log = ActivationLog(tmp_path / "a.db")
    await log.append_durable(RecordKind.ACTIVATION, "a-1", BODY, 1)
    log.close()
    conn = sqlite3.connect(tmp_path / "a.db")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("UPDATE records SET body = '{}'")
    with pytest.raises(sqlite3.IntegrityError, match="append-only"):
        conn.execute("DELETE FROM records")
    conn.close()


async def test_unfinished_activations_are_found(tmp_path: Path) -> None:
    log = ActivationLog(tmp_path / "a.db")
    for aid in ("a-1", "a-2", "a-3"):
        await log.append_durable(RecordKind.ACTIVATION, aid, BODY, 1)
    await log.append_durable(RecordKind.FINISHED, "a-2", BODY, 2)
    log.close()
    assert unfinished_activation_ids(tmp_path / "a.db") == ["a-1", "a-3"]


async def test_the_latest_activations_are_found_oldest_first(tmp_path: Path) -> None:
    """What a restarted gateway knows again (a camera's recording stop for an activation
    finished before the restart is still logged)."""
    log = ActivationLog(tmp_path / "a.db")
    for i in range(5):
        await log.append_durable(RecordKind.ACTIVATION, f"a-{i}", BODY, i)
        await log.append_durable(RecordKind.FINISHED, f"a-{i}", BODY, i)
    try:
        assert log.latest_activation_ids(3) == ["a-2", "a-3", "a-4"]
        assert log.latest_activation_ids(10) == [f"a-{i}" for i in range(5)]
    finally:
        log.close()


def test_reading_something_that_is_not_a_log_says_so(tmp_path: Path) -> None:
    with pytest.raises(LogError, match="no such activation log"):
        open_readonly(tmp_path / "missing.db")
    (tmp_path / "text.db").write_text("hello")
    with pytest.raises(LogError, match="not a trigger-mesh activation log"):
        open_readonly(tmp_path / "text.db")
    sqlite3.connect(tmp_path / "other.db").execute(
        "CREATE TABLE meta (key, value)"
    ).connection.close()
    with pytest.raises(LogError, match="not a trigger-mesh activation log"):
        open_readonly(tmp_path / "other.db")


async def test_a_closed_log_refuses_appends(tmp_path: Path) -> None:
    log = ActivationLog(tmp_path / "a.db")
    log.close()
    with pytest.raises(LogError, match="closed"):
        log.append(RecordKind.ACK, None, BODY, 1)


async def test_export_jsonl_and_csv(tmp_path: Path) -> None:
    log = ActivationLog(tmp_path / "a.db")
    await log.append_durable(RecordKind.RESUMED, "a-1", BODY, 1_790_000_000_123_456_789)
    log.close()
    out = io.StringIO()
    assert export(tmp_path / "a.db", "jsonl", out) == 1
    row = json.loads(out.getvalue())
    assert row["at"] == "2026-09-21T14:13:20.123456789Z"
    assert row["body"] == {"reason": "test", "acks_recovered": 0}
    out = io.StringIO()
    export(tmp_path / "a.db", "csv", out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert rows[0]["kind"] == "resumed"
    assert rows[0]["detail"] == "test"
    assert json.loads(rows[0]["body"])["acks_recovered"] == 0


def test_hand_assembled_ack_json_is_what_the_model_would_write() -> None:
    from mesh.journal.records import AckEntry
    from mesh.protocol.models import AckStatus, CameraAck

    ack = CameraAck(
        activation_id="a-1",
        camera_id="c-1",
        status=AckStatus.STARTED,
        received_at_ns=5,
        reason='quote " and \\ backslash',
    )
    for latency in (None, 1.5, 0.001, 12.0):
        fast = AckEntry.json_of(ack, latency, "recorded")
        assert json.loads(fast) == json.loads(
            AckEntry(ack=ack, latency_ms=latency, effect="recorded").model_dump_json()
        )
        assert AckEntry.model_validate_json(fast).ack == ack


async def test_the_wal_is_presized_while_the_log_is_open(tmp_path: Path) -> None:
    """Commits reuse a WAL already grown (docs/architecture.md): it must exist, at full
    size, while the log is open, not only during the constructor."""
    from mesh.journal.store import WAL_PRESIZE_BYTES

    path = tmp_path / "log.db"
    log = ActivationLog(path)
    try:
        await log.flush()
        wal = path.with_name(path.name + "-wal")
        assert wal.exists()
        assert wal.stat().st_size >= WAL_PRESIZE_BYTES
    finally:
        log.close()
