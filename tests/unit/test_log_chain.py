"""Tamper evidence: the hash chain, signed checkpoints, retention and legal holds.

Each tamper case edits a real log file the way someone with the file would (SQLite,
the append-only triggers dropped first) and checks that `audit verify` names the first
bad record and what is wrong with it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mesh.cli.app import app
from mesh.journal.chain import GENESIS, Problem, record_hash, verify_chain
from mesh.journal.records import RecordKind, ResumedEntry
from mesh.journal.retention import NS_PER_DAY, RetentionPass, hold_body
from mesh.journal.signer import CheckpointSigner
from mesh.journal.store import ActivationLog, log_id_of, read_records
from mesh.security.keys import KeyFileError, load_public_key, new_gateway_key

runner = CliRunner()


def body(i: int) -> ResumedEntry:
    return ResumedEntry(reason=f"record {i}", acks_recovered=i)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Path, Path]:
    files = new_gateway_key(tmp_path / "keys", "gw-test")
    return files.private, files.public


async def write_log(path: Path, key: Path, count: int = 12, *, every: int = 4) -> None:
    """``count`` records, with a checkpoint after every ``every`` and one at close."""
    log = ActivationLog(path, signer=CheckpointSigner.from_file(key), checkpoint_interval_s=3600)
    try:
        for i in range(1, count + 1):
            await log.append_durable(RecordKind.ACK, f"a-{i % 3}", body(i), 1_000 + i)
            if i % every == 0:
                await log.checkpoint("test")
    finally:
        log.close()


def verify(path: Path, public: Path | None = None):  # type: ignore[no-untyped-def]
    key = load_public_key(public) if public else None
    return verify_chain(read_records(path), log_id=log_id_of(path), public_key=key)


def tamper(path: Path, *statements: tuple[str, tuple[object, ...]]) -> None:
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER records_append_only_update")
    conn.execute("DROP TRIGGER records_append_only_delete")
    for sql, params in statements:
        conn.execute(sql, params)
    conn.commit()
    conn.close()


def rows(path: Path) -> dict[int, tuple[object, ...]]:
    conn = sqlite3.connect(path)
    found = {
        r[0]: r[1:]
        for r in conn.execute(
            "SELECT seq, at_ns, kind, activation_id, body, prev_hash, hash FROM records"
        )
    }
    conn.close()
    return found


def cli_verify(path: Path, public: Path | None = None) -> tuple[int, str]:
    args = ["audit", "verify", str(path), "--all"]
    if public is not None:
        args += ["--pubkey", str(public)]
    result = runner.invoke(app, args)
    return result.exit_code, result.output


async def test_an_untouched_log_verifies_with_its_key(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
    private, public = keys
    log = tmp_path / "a.db"
    await write_log(log, private)
    report = verify(log, public)
    assert report.ok, report.summary()
    assert report.records == 15  # 12 records + 3 checkpoints (none at close: all signed)
    assert report.checkpoints == 3
    assert report.signed_through == 15
    # Every record carries the hash of the one before it.
    chain = rows(log)
    assert chain[1][4] == GENESIS
    assert all(chain[s][4] == chain[s - 1][5] for s in range(2, 16))
    code, out = cli_verify(log, public)
    assert code == 0, out
    assert "intact, every record signed" in out


async def test_a_flipped_byte_is_found_and_named(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "a.db"
    await write_log(log, keys[0])
    original = str(rows(log)[6][3])
    flipped = original.replace("record 5", "record 7")
    assert flipped != original
    tamper(log, ("UPDATE records SET body = ? WHERE seq = 6", (flipped,)))
    report = verify(log, keys[1])
    assert not report.ok
    first = report.problems[0]
    assert (first.seq, first.problem) == (6, Problem.MODIFIED)
    code, out = cli_verify(log, keys[1])
    assert code == 1
    assert "record 6: modified" in out


async def test_a_deleted_record_is_found(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "a.db"
    await write_log(log, keys[0])
    tamper(log, ("DELETE FROM records WHERE seq = 7", ()))
    report = verify(log, keys[1])
    first = report.problems[0]
    assert (first.seq, first.problem) == (8, Problem.MISSING)
    assert "record 7 before it" in first.detail
    # Renumbering the rest to hide the gap breaks the link instead.
    log2 = tmp_path / "b.db"
    await write_log(log2, keys[0])
    tamper(
        log2,
        ("DELETE FROM records WHERE seq = 7", ()),
        ("UPDATE records SET seq = seq - 1 WHERE seq > 7", ()),
    )
    first = verify(log2, keys[1]).problems[0]
    assert (first.seq, first.problem) in {(7, Problem.BROKEN_LINK), (7, Problem.MODIFIED)}


async def test_swapped_records_are_found(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "a.db"
    await write_log(log, keys[0])
    tamper(
        log,
        ("UPDATE records SET seq = -1 WHERE seq = 2", ()),
        ("UPDATE records SET seq = 2 WHERE seq = 3", ()),
        ("UPDATE records SET seq = 3 WHERE seq = -1", ()),
    )
    report = verify(log, keys[1])
    first = report.problems[0]
    assert (first.seq, first.problem) == (2, Problem.REORDERED)
    code, out = cli_verify(log, keys[1])
    assert code == 1
    assert "record 2: reordered" in out


async def test_a_truncated_tail_is_unsigned(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
    log = tmp_path / "a.db"
    await write_log(log, keys[0])
    # Cut the last records, the closing checkpoint among them.
    tamper(log, ("DELETE FROM records WHERE seq >= 14", ()))
    report = verify(log, keys[1])
    assert not report.tampered
    first = report.problems[0]
    assert (first.seq, first.problem) == (11, Problem.UNSIGNED_TAIL)
    assert "records 11-13" in first.detail
    code, out = cli_verify(log, keys[1])
    assert code == 3
    assert "unsigned_tail" in out


async def test_a_rewritten_log_fails_on_its_signatures(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
    """Whoever rewrites a record and recomputes every hash after it still cannot sign."""
    log = tmp_path / "a.db"
    await write_log(log, keys[0])
    chain = rows(log)
    forged_body = str(chain[3][3]).replace("record 3", "record 9")
    updates: list[tuple[str, tuple[object, ...]]] = []
    prev = str(chain[2][5])
    for seq in range(3, 16):
        at_ns, kind, aid, text, _, _ = chain[seq]
        text = forged_body if seq == 3 else str(text)
        if kind == "checkpoint":  # a thorough forger also re-points the checkpoints
            text = text.replace(str(chain[seq - 1][5]), prev)
        digest = record_hash(
            prev, seq, int(str(at_ns)), kind=str(kind), activation_id=aid, body=text
        )  # type: ignore[arg-type]
        updates.append(
            (
                "UPDATE records SET body = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                (text, prev, digest, seq),
            )
        )
        prev = digest
    tamper(log, *updates)
    report = verify(log, keys[1])
    first = report.problems[0]
    assert (first.seq, first.problem) == (5, Problem.BAD_SIGNATURE)
    assert "records up to 4" in first.detail

    # Signing the forgery with another key is caught when the auditor pins the real one.
    other = new_gateway_key(tmp_path / "other", "mallory")
    forged = tmp_path / "forged.db"
    await write_log(forged, other.private)
    report = verify(forged, keys[1])
    assert report.problems[0].problem is Problem.WRONG_KEY
    code, out = cli_verify(forged, keys[1])
    assert code == 1
    assert "not the pinned key" in out


async def test_a_log_without_a_key_is_all_unsigned(tmp_path: Path) -> None:
    log = ActivationLog(tmp_path / "a.db")
    await log.append_durable(RecordKind.ACK, "a-1", body(1), 1)
    await log.checkpoint()  # no signer: nothing to sign with
    log.close()
    report = verify(tmp_path / "a.db")
    assert [(p.seq, p.problem) for p in report.problems] == [(1, Problem.UNSIGNED_TAIL)]


async def test_checkpoints_are_written_periodically_and_at_close(tmp_path: Path, keys) -> None:  # type: ignore[no-untyped-def]
    log = ActivationLog(
        tmp_path / "a.db", signer=CheckpointSigner.from_file(keys[0]), checkpoint_interval_s=0.1
    )
    log.append(RecordKind.ACK, "a-1", body(1), 1)
    await log.flush()
    for _ in range(100):
        if any(r.kind == "checkpoint" for r in read_records(tmp_path / "a.db")):
            break
        await asyncio.sleep(0.02)
    kinds = [r.kind for r in read_records(tmp_path / "a.db")]
    assert kinds == ["ack", "checkpoint"]  # periodic, with nothing else written
    await asyncio.sleep(0.3)
    assert len(list(read_records(tmp_path / "a.db"))) == 2  # nothing new: nothing to sign
    log.append(RecordKind.ACK, "a-1", body(2), 2)
    log.close()
    kinds = [r.kind for r in read_records(tmp_path / "a.db")]
    assert kinds == ["ack", "checkpoint", "ack", "checkpoint"]
    assert verify(tmp_path / "a.db", keys[1]).ok


async def test_retention_removes_expired_records_keeps_held_ones_and_still_verifies(
    tmp_path: Path, keys
) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "a.db"
    now = time.time_ns()
    log = ActivationLog(
        path, signer=CheckpointSigner.from_file(keys[0]), checkpoint_interval_s=3600
    )
    # 20 records, one a day, 40 to 21 days old; then a hold on activation a-1.
    for i in range(20):
        await log.append_durable(RecordKind.ACK, f"a-{i % 4}", body(i), now - (40 - i) * NS_PER_DAY)
    await log.checkpoint()
    held = hold_body(
        activation_id="a-1", from_ns=None, to_ns=None, reason="case 7", by="t", release=False
    )
    await log.append_durable(RecordKind.HOLD, "a-1", held, now)
    first = await log.prune(RetentionPass(30, now))
    # 10 records are over 30 days old; the 3 of a-1 among them stay.
    assert first == {"removed": 7, "held": 3, "seq": 23}
    second = await log.prune(RetentionPass(25, now))
    assert second["removed"] == 4
    await log.checkpoint()
    log.close()
    left = list(read_records(path))
    assert {r.activation_id for r in left if r.at_ns < now - 30 * NS_PER_DAY} == {"a-1"}
    report = verify(path, keys[1])
    assert report.ok, [str(p) for p in report.problems]
    assert report.removed_runs >= 2
    # Removing one more record by hand is still caught, retention or not.
    survivor = next(r.seq for r in left if r.kind == "ack" and r.at_ns > now - 25 * NS_PER_DAY)
    tamper(path, ("DELETE FROM records WHERE seq = ?", (survivor,)))
    assert verify(path, keys[1]).problems[0].problem is Problem.MISSING


def test_holds_from_the_cli_keep_until_released(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    now = time.time_ns()

    async def write() -> None:
        log = ActivationLog(path)
        await log.append_durable(RecordKind.ACK, "a-1", body(1), now - 50 * NS_PER_DAY)
        await log.append_durable(RecordKind.ACK, "a-2", body(2), now - 50 * NS_PER_DAY)
        log.close()

    asyncio.run(write())
    span = ["audit", "hold", str(path), "--from", "2000-01-01", "--to", "2100-01-01"]
    result = runner.invoke(app, [*span, "--reason", "litigation"])
    assert result.exit_code == 0, result.output
    pruned = runner.invoke(app, ["audit", "prune", str(path), "--days", "30"])
    assert pruned.exit_code == 0, pruned.output
    assert "0 expired records removed, 2 kept by legal holds" in pruned.output
    result = runner.invoke(app, [*span, "--reason", "litigation", "--release"])
    assert result.exit_code == 0, result.output
    pruned = runner.invoke(app, ["audit", "prune", str(path), "--days", "30"])
    assert "2 expired records removed, 0 kept" in pruned.output


def test_bad_cli_input_is_named(tmp_path: Path) -> None:
    result = runner.invoke(app, ["audit", "verify", str(tmp_path / "missing.db")])
    assert result.exit_code == 2
    assert "no such activation log" in result.output
    (tmp_path / "k.pub").write_text("not a key")
    ActivationLog(tmp_path / "a.db").close()
    result = runner.invoke(
        app, ["audit", "verify", str(tmp_path / "a.db"), "--pubkey", str(tmp_path / "k.pub")]
    )
    assert result.exit_code == 2
    assert "not a PEM or hex Ed25519 public key" in result.output
    result = runner.invoke(app, ["audit", "hold", str(tmp_path / "a.db"), "--reason", "x"])
    assert result.exit_code == 2
    assert "--activation or --from/--to" in result.output


def test_keys_are_never_overwritten_and_private_keys_are_private(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "new-gateway", "--out", str(tmp_path), "--name", "g"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "g.key").stat().st_mode & 0o777 == 0o600
    again = runner.invoke(app, ["keys", "new-gateway", "--out", str(tmp_path), "--name", "g"])
    assert again.exit_code == 2
    assert "refusing to overwrite" in again.output
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        CheckpointSigner.from_file(tmp_path / "g.pub")


async def test_a_stretch_is_verified_from_a_record_already_vouched_for(
    tmp_path: Path, keys
) -> None:  # type: ignore[no-untyped-def]
    """The archive checks a log stretch by stretch (``follows``): the stretch after a
    vouched record verifies on its own; one that does not link to it, or starts after a
    gap, is a broken link."""
    log, (private, _) = tmp_path / "gw.db", keys
    await write_log(log, private, 12, every=4)
    records = list(read_records(log))
    first_checkpoint = next(r for r in records if r.kind == "checkpoint")
    after = [r for r in records if r.seq > first_checkpoint.seq]
    report = verify_chain(
        after, log_id=log_id_of(log), follows=(first_checkpoint.seq, first_checkpoint.hash)
    )
    assert report.ok, report.problems
    assert report.signed_through == records[-1].seq
    wrong = verify_chain(after, log_id=log_id_of(log), follows=(first_checkpoint.seq, GENESIS))
    assert [p.problem for p in wrong.tampering][:1] == [Problem.BROKEN_LINK]
    gap = verify_chain(
        after[1:], log_id=log_id_of(log), follows=(first_checkpoint.seq, first_checkpoint.hash)
    )
    assert gap.tampered
    assert gap.tampering[0].seq == after[1].seq
