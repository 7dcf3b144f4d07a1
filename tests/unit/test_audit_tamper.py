"""Issue 15 item 1: an insider with the log file (and without the gateway's key) tries to
make `audit verify` (and `audit replay`) accept a log with records taken out or rewritten.

Every log here is written through the real code paths (ActivationLog with the gateway's
signing key, its checkpoints, a retention pass with a legal hold); every attack edits the
SQLite file as the insider would (triggers dropped, rows deleted and inserted, hashes
recomputed with the project's own ``record_hash``, which needs no key). The log's clock
follows the records' times, as the gateway's does, so times rise along the log.
The gateway's own retention loop meeting such a log runs in
tests/integration/test_audit_tamper_gateway.py.

The signed log (seq: what):
     1-3  expired, removed        4  held ("held")        5  checkpoint, removed
     6-7  expired, removed        8  held ("held")        9  expired, removed
    10    checkpoint, removed 11-12  expired, removed    13  the hold record
    14    retention record       15  retention checkpoint
    16    ack: c1 started        17  finished: c1 started, c2 missed (partial)
 18-19    escalations for c2     20  checkpoint          21-22  later records
    23    checkpoint (the gateway's shutdown)
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

from mesh.cli.app import app
from mesh.journal.chain import GENESIS, ChainReport, Problem, record_hash, verify_chain
from mesh.journal.records import AckEntry, EscalatedEntry, FinishedEntry, RecordKind, ResumedEntry
from mesh.journal.retention import NS_PER_DAY, Candidate, RetentionPass, hold_body, plan_removal
from mesh.journal.signer import CheckpointSigner
from mesh.journal.store import ActivationLog, LogRecord, RetentionRefused, log_id_of, read_records
from mesh.protocol.models import (
    AckStatus,
    ActivationRecord,
    ActivationState,
    CameraAck,
    CameraOutcome,
    Escalation,
    EscalationReason,
    OutcomeStatus,
    SourceRef,
    SourceType,
    TriggerKind,
    TriggerSummary,
)
from mesh.security.keys import load_public_key, new_gateway_key

runner = CliRunner()
S = 1_000_000_000
Keys = tuple[Path, Path]


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    files = new_gateway_key(tmp_path / "keys", "gw-car-12")
    return files.private, files.public


def finished_record(now: int, *, c2: OutcomeStatus, state: ActivationState) -> ActivationRecord:
    trigger = TriggerSummary(
        event_id="ev-1",
        kind=TriggerKind.WEAPON_DRAW,
        source=SourceRef(type=SourceType.BLE, id="holster-1", authenticated=True),
        unit_id="car-12",
        observed_at_ns=now,
    )
    cameras = tuple(
        CameraOutcome(
            camera_id=camera,
            unit_id="car-12",
            expected=True,
            targeting="in range",
            status=status,
            acked_at_ns=now + S if status is OutcomeStatus.STARTED else None,
        )
        for camera, status in (("c1", OutcomeStatus.STARTED), ("c2", c2))
    )
    return ActivationRecord(
        activation_id="a-7",
        issuer="gw-car-12",
        unit_id="car-12",
        trigger=trigger,
        state=state,
        decided_at_ns=now,
        finished_at_ns=now + 10 * S,
        expires_at_ns=now + 30 * S,
        origin=None,
        radius_m=150.0,
        pre_event_s=30,
        cameras=cameras,
    )


def escalation(now: int, audience: str) -> EscalatedEntry:
    return EscalatedEntry(
        escalation=Escalation(
            activation_id="a-7",
            issuer="gw-car-12",
            unit_id="car-12",
            kind=TriggerKind.WEAPON_DRAW,
            camera_id="c2",
            camera_unit_id="car-12",
            reason=EscalationReason.NO_ACK,
            audience=audience,
            at_ns=now + 10 * S,
        )
    )


def note(i: int) -> ResumedEntry:
    return ResumedEntry(reason=f"record {i}", acks_recovered=i)


class Clock:
    """The wall clock of a gateway whose records were written over weeks: set to each
    record's time as it is appended (checkpoints take their time from it)."""

    def __init__(self, at_ns: int) -> None:
        self.at_ns = at_ns

    def __call__(self) -> int:
        return self.at_ns


class GatewayLog:
    """The gateway's log, written at the times given (``ActivationLog`` with its key)."""

    def __init__(self, path: Path, key: Path, at_ns: int) -> None:
        self.clock = Clock(at_ns)
        self.log = ActivationLog(
            path,
            signer=CheckpointSigner.from_file(key),
            checkpoint_interval_s=3600,
            wall_ns=self.clock,
        )

    async def append(
        self, kind: RecordKind, activation_id: str | None, body: BaseModel | str, at_ns: int
    ) -> int:
        self.clock.at_ns = at_ns
        return await self.log.append_durable(kind, activation_id, body, at_ns)

    async def prune(self, retention: RetentionPass) -> dict[str, int]:
        """The pass the gateway's retention loop makes, at ``retention.now_ns``."""
        self.clock.at_ns = retention.now_ns
        return await self.log.prune(retention)


async def write_signed_log(path: Path, key: Path) -> tuple[int, int]:
    """The log described at the top, as the gateway writes it; returns its `now` and the
    seq of the ack (16: the records after it are numbered from it)."""
    now = time.time_ns()
    gateway = GatewayLog(path, key, now - 40 * NS_PER_DAY)
    log = gateway.log
    try:
        for i in range(10):  # 40 to 31 days old; "held"'s two are kept by the hold
            activation = "held" if i in (3, 6) else f"old-{i}"
            await gateway.append(
                RecordKind.RESUMED, activation, note(i), now - (40 - i) * NS_PER_DAY
            )
            if i in (3, 7):
                await log.checkpoint("periodic")
        hold = hold_body(
            activation_id="held", from_ns=None, to_ns=None, reason="case 7", by="t", release=False
        )
        await gateway.append(RecordKind.HOLD, "held", hold, now - NS_PER_DAY)
        outcome = await gateway.prune(RetentionPass(30, now - 2 * 3600 * S))
        assert outcome == {"removed": 10, "held": 2, "seq": 14}
        t = now - 3600 * S
        ack = CameraAck(
            activation_id="a-7", camera_id="c1", status=AckStatus.STARTED, received_at_ns=t + S
        )
        await gateway.append(
            RecordKind.ACK, "a-7", AckEntry(ack=ack, latency_ms=12.0, effect="recorded"), t + S
        )
        record = finished_record(t, c2=OutcomeStatus.MISSED, state=ActivationState.PARTIAL)
        await gateway.append(RecordKind.FINISHED, "a-7", FinishedEntry(record=record), t + 10 * S)
        for audience in ("dispatch", "supervisor"):
            await gateway.append(RecordKind.ESCALATED, "a-7", escalation(t, audience), t + 10 * S)
        await log.checkpoint("periodic")
        for i in (21, 22):
            await gateway.append(RecordKind.RESUMED, None, note(i), t + 20 * S)
    finally:
        log.close()  # the shutdown checkpoint
    kinds = [(r.seq, r.kind) for r in read_records(path)]
    ack = next(seq for seq, kind in kinds if kind == "ack")
    assert kinds[:5] == [
        (4, "resumed"), (8, "resumed"), (13, "hold"), (14, "retention"), (15, "checkpoint")
    ]  # fmt: skip
    assert kinds[-8:] == [
        (ack, "ack"), (ack + 1, "finished"), (ack + 2, "escalated"), (ack + 3, "escalated"),
        (ack + 4, "checkpoint"), (ack + 5, "resumed"), (ack + 6, "resumed"),
        (ack + 7, "checkpoint"),
    ]  # fmt: skip
    return now, ack


# --- the insider's tools: sqlite3 and the project's own hash function -----------------------
Row = tuple[int, int, str, str | None, str, str, str]


def rows_of(path: Path) -> dict[int, Row]:
    return {
        r.seq: (r.seq, r.at_ns, r.kind, r.activation_id, r.body, r.prev_hash, r.hash)
        for r in read_records(path)
    }


def forged(
    seq: int, prev_hash: str, kind: str, activation_id: str | None, body: str, at_ns: int
) -> Row:
    digest = record_hash(prev_hash, seq, at_ns, kind=kind, activation_id=activation_id, body=body)
    return seq, at_ns, kind, activation_id, body, prev_hash, digest


def rewrite(path: Path, *, delete: Iterable[int] = (), insert: Iterable[Row] = ()) -> None:
    conn = sqlite3.connect(path)
    conn.execute("DROP TRIGGER IF EXISTS records_append_only_update")
    conn.execute("DROP TRIGGER IF EXISTS records_append_only_delete")
    conn.executemany("DELETE FROM records WHERE seq = ?", [(seq,) for seq in delete])
    conn.executemany("INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?)", insert)
    conn.commit()
    conn.close()


def retention_body(runs: list[list[object]], genuine: str) -> str:
    """A retention record that looks like the genuine one, with extra runs (in the
    genuine record's format: the insider copies whatever the verifier reads)."""
    body = json.loads(genuine)
    fields = len(body["removed"][0])
    body["removed"] = body["removed"] + [run[:fields] for run in runs]
    return json.dumps(body, separators=(",", ":"))


def verify(path: Path, public: Path | None = None) -> ChainReport:
    key = load_public_key(public) if public else None
    return verify_chain(read_records(path), log_id=log_id_of(path), public_key=key)


def cli(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def first(report: ChainReport) -> tuple[int, Problem] | None:
    return (report.problems[0].seq, report.problems[0].problem) if report.problems else None


# --- the honest log --------------------------------------------------------------------------
async def test_the_signed_log_with_retention_and_a_hold_verifies(
    tmp_path: Path, keys: Keys
) -> None:
    log = tmp_path / "a.db"
    _, a = await write_signed_log(log, keys[0])
    report = verify(log, keys[1])
    assert report.ok, report.summary()
    assert report.removed_runs == 3
    assert report.signed_through == a + 7
    code, out = cli("audit", "verify", log, "--pubkey", keys[1])
    assert code == 0, out
    assert "intact, every record signed" in out
    runs = json.loads(rows_of(log)[14][4])["removed"]
    # Each run names the hash of the record kept before it: the held record 8 is bound by
    # the run 9-12 after it, though nothing links to it any more.
    assert [run[:2] for run in runs] == [[1, 3], [5, 7], [9, 12]]
    assert runs[2][3] == rows_of(log)[8][6]
    assert runs[0][3] == GENESIS


# --- the attacks -----------------------------------------------------------------------------
async def test_an_unsigned_retention_record_inside_the_gap_is_missing(
    tmp_path: Path, keys: Keys
) -> None:
    """The issue's attack: signed records 17-20 deleted, a retention record put at 17
    naming 18-20; only record 17 is hashed anew, every later link still holds."""
    log = tmp_path / "a.db"
    _, a = await write_signed_log(log, keys[0])
    chain = rows_of(log)
    body = retention_body([[a + 2, a + 4, chain[a + 4][6], ""]], chain[14][4])
    fake = forged(a + 1, chain[a][6], "retention", None, body, chain[a + 1][1])
    rewrite(log, delete=range(a + 1, a + 5), insert=[fake])
    code, out = cli("audit", "verify", log, "--pubkey", keys[1])
    assert code == 1, out
    report = verify(log, keys[1])
    assert first(report) == (a + 5, Problem.MISSING), report.summary()
    assert f"records {a + 2}-{a + 4} before it are missing" in report.problems[0].detail
    assert f"retention record {a + 1} names them" in report.problems[0].detail
    assert f"record {a + 5}: missing: records {a + 2}-{a + 4}" in out


async def test_a_rewritten_activation_fails_verify_and_replay(tmp_path: Path, keys: Keys) -> None:
    """The same trick rewrites a finished activation: c2 `missed` turned `started`, state
    `confirmed`, its escalations and the checkpoint after them dropped."""
    log = tmp_path / "a.db"
    now, a = await write_signed_log(log, keys[0])
    chain = rows_of(log)
    t = now - 3600 * S
    record = finished_record(t, c2=OutcomeStatus.STARTED, state=ActivationState.CONFIRMED)
    lie = FinishedEntry(record=record).model_dump_json()
    fake_finished = forged(a + 1, chain[a][6], "finished", "a-7", lie, chain[a + 1][1])
    body = retention_body([[a + 3, a + 4, chain[a + 4][6], ""]], chain[14][4])
    fake_retention = forged(a + 2, fake_finished[6], "retention", None, body, chain[a + 2][1])
    rewrite(log, delete=range(a + 1, a + 5), insert=[fake_finished, fake_retention])
    assert '"state":"confirmed"' in rows_of(log)[a + 1][4]

    code, out = cli("audit", "verify", log, "--pubkey", keys[1])
    assert code == 1, out
    report = verify(log, keys[1])
    assert first(report) == (a + 5, Problem.MISSING), report.summary()
    assert f"records {a + 3}-{a + 4} before it are missing" in report.problems[0].detail
    # The replay re-decides nothing here (no trigger in the log), but it no longer passes
    # a log whose chain does not verify.
    code, out = cli("audit", "replay", log, "--pubkey", keys[1])
    assert code == 4, out
    assert "chain: does not verify" in out
    assert "record 21: missing" in out


async def test_a_retention_record_appended_after_the_last_checkpoint_is_not_enough(
    tmp_path: Path, keys: Keys
) -> None:
    """Records 17-19 deleted, and a retention record (perfect: the right hashes either
    side) appended after the shutdown checkpoint. Then the gateway starts again and its
    periodic checkpoint signs the head, the forged record with it."""
    log = tmp_path / "a.db"
    now, a = await write_signed_log(log, keys[0])
    chain = rows_of(log)
    body = retention_body([[a + 1, a + 3, chain[a + 3][6], chain[a][6]]], chain[14][4])
    fake = forged(a + 8, chain[a + 7][6], "retention", None, body, now)
    rewrite(log, delete=range(a + 1, a + 4), insert=[fake])
    assert cli("audit", "verify", log, "--pubkey", keys[1])[0] == 1
    report = verify(log, keys[1])
    assert first(report) == (a + 4, Problem.MISSING), report.summary()

    gateway = ActivationLog(log, signer=CheckpointSigner.from_file(keys[0]))
    assert await gateway.checkpoint("periodic") == a + 9
    gateway.close()
    code, out = cli("audit", "verify", log, "--pubkey", keys[1])
    assert code == 1, out
    report = verify(log, keys[1])
    assert first(report) == (a + 4, Problem.MISSING), report.summary()
    assert "no retention checkpoint right after it signs it" in report.problems[0].detail
    # Nor can the gateway's periodic checkpoint be passed off as a retention checkpoint.
    seq, at_ns, kind, _, body, prev, _ = rows_of(log)[a + 9]
    relabelled = json.loads(body) | {"vouches": "retention"}
    rewrite(
        log, delete=[seq], insert=[forged(seq, prev, kind, None, json.dumps(relabelled), at_ns)]
    )
    report = verify(log, keys[1])
    assert [(p.seq, p.problem) for p in report.problems] == [
        (a + 4, Problem.MISSING),
        (a + 9, Problem.BAD_SIGNATURE),
    ]


async def test_a_retention_checkpoint_by_another_key_is_refused(tmp_path: Path, keys: Keys) -> None:
    """As above, with the forged retention record signed by a retention checkpoint made
    with the insider's own key."""
    log = tmp_path / "a.db"
    now, a = await write_signed_log(log, keys[0])
    chain = rows_of(log)
    body = retention_body([[a + 1, a + 3, chain[a + 3][6], chain[a][6]]], chain[14][4])
    fake = forged(a + 8, chain[a + 7][6], "retention", None, body, now)
    mallory = CheckpointSigner.from_file(new_gateway_key(tmp_path / "m", "mallory").private)
    signed = mallory.body(log_id_of(log), a + 8, fake[6], "retention", retention=True)
    seal = forged(a + 9, fake[6], "checkpoint", None, json.dumps(signed), now)
    rewrite(log, delete=range(a + 1, a + 4), insert=[fake, seal])
    report = verify(log, keys[1])
    assert [(p.seq, p.problem) for p in report.problems] == [
        (a + 4, Problem.MISSING),
        (a + 9, Problem.WRONG_KEY),
    ]
    assert cli("audit", "verify", log, "--pubkey", keys[1])[0] == 1
    # Unpinned, the insider's key counts like the gateway's (only --pubkey says whose):
    # what gives the forged pass away is its own cutoff. Record a, kept just before the
    # run, is newer than it, so the records after it cannot have expired.
    unpinned = verify(log)
    assert [(p.seq, p.problem) for p in unpinned.problems] == [(a, Problem.RETENTION_MISMATCH)]
    assert len(unpinned.key_ids) == 2


async def test_a_record_forged_into_a_retention_gap_is_found(tmp_path: Path, keys: Keys) -> None:
    """The signed run 9-12 is narrowed to 10-12: a record forged at 9, linked to 8."""
    log = tmp_path / "a.db"
    await write_signed_log(log, keys[0])
    chain = rows_of(log)
    body = note(99).model_dump_json()
    fake = forged(9, chain[8][6], "resumed", "old-8", body, chain[8][1])
    rewrite(log, insert=[fake])
    report = verify(log, keys[1])
    assert first(report) == (13, Problem.MISSING), report.summary()
    assert "retention removed 9-12 there, not these" in report.problems[0].detail
    assert cli("audit", "verify", log, "--pubkey", keys[1])[0] == 1
    # A central copy may hold the start of a removed run (sent before retention removed
    # it): there the record is only not vouched for, which is no clean bill either.
    copy = verify_chain(
        read_records(log),
        log_id=log_id_of(log),
        public_key=load_public_key(keys[1]),
        central_copy=True,
    )
    assert [(p.seq, p.problem) for p in copy.problems] == [(4, Problem.UNVOUCHED)]
    assert not copy.tampered


async def test_a_held_record_cannot_be_changed_or_removed(tmp_path: Path, keys: Keys) -> None:
    """Record 8 is held; retention removed 5-7 and 9-12 on either side of it, so no record
    links to it any more. Changing it (hash recomputed) or deleting it is still found."""
    log = tmp_path / "a.db"
    await write_signed_log(log, keys[0])
    chain = rows_of(log)
    seq, at_ns, kind, activation, body, prev, _ = chain[8]
    changed = body.replace("record 6", "record 9")
    assert changed != body
    rewrite(log, delete=[8], insert=[forged(seq, prev, kind, activation, changed, at_ns)])
    report = verify(log, keys[1])
    assert first(report) == (8, Problem.BROKEN_LINK), report.summary()
    assert "retention record 14 names another record before the records 9-12" in str(
        report.problems[0]
    )
    assert cli("audit", "verify", log, "--pubkey", keys[1])[0] == 1

    deleted = tmp_path / "b.db"
    await write_signed_log(deleted, keys[0])
    rewrite(deleted, delete=[8])
    report = verify(deleted, keys[1])
    assert first(report) == (13, Problem.MISSING), report.summary()
    assert "records 5-12 before it are missing" in report.problems[0].detail
    # The hold record itself, too.
    rewrite(deleted, delete=[13])
    assert (14, Problem.MISSING) in [(p.seq, p.problem) for p in verify(deleted, keys[1]).problems]


async def test_a_log_rewritten_from_genesis_without_checkpoints_is_tampered(
    tmp_path: Path, keys: Keys
) -> None:
    """Every checkpoint dropped, the rest renumbered and rehashed from genesis: pinned, that
    is tampering (exit 1), not an honest unsigned tail (exit 3)."""
    log = tmp_path / "a.db"
    await write_signed_log(log, keys[0])
    kept = [r for r in rows_of(log).values() if r[2] not in ("checkpoint", "retention")]
    prev, rebuilt = GENESIS, []
    for seq, (_, at_ns, kind, activation, body, _, _) in enumerate(kept, 1):
        rebuilt.append(forged(seq, prev, kind, activation, body, at_ns))
        prev = rebuilt[-1][6]
    rewrite(log, delete=range(1, 100), insert=rebuilt)
    report = verify(log, keys[1])
    assert [(p.seq, p.problem) for p in report.problems] == [(1, Problem.NO_CHECKPOINT)]
    code, out = cli("audit", "verify", log, "--pubkey", keys[1])
    assert code == 1, out
    assert "no checkpoint is signed by the pinned key" in out
    # Unpinned, nothing says a key was ever meant to sign it: all unsigned.
    assert cli("audit", "verify", log)[0] == 3
    # Emptied altogether.
    rewrite(log, delete=range(1, len(rebuilt) + 1))
    code, out = cli("audit", "verify", log, "--pubkey", keys[1])
    assert code == 1, out
    assert "empty" in out


async def test_an_honest_unsigned_tail_is_still_exit_3(tmp_path: Path, keys: Keys) -> None:
    """The gateway SIGKILLed before its next checkpoint: the records after the last one are
    unsigned, the rest verifies."""
    log = tmp_path / "a.db"
    _, a = await write_signed_log(log, keys[0])
    rewrite(log, delete=[a + 7])
    report = verify(log, keys[1])
    assert [(p.seq, p.problem) for p in report.problems] == [(a + 5, Problem.UNSIGNED_TAIL)]
    assert report.signed_through == a + 4
    assert cli("audit", "verify", log, "--pubkey", keys[1])[0] == 3


def test_a_keyless_log_with_retention_is_an_unsigned_tail(tmp_path: Path) -> None:
    """Without a key nothing is signed, gaps retention made included: exit 3 (a gap no
    retention record names is still missing)."""
    path = tmp_path / "a.db"
    now = time.time_ns()

    async def write() -> None:
        log = ActivationLog(path)
        for i in range(6):
            await log.append_durable(
                RecordKind.RESUMED, None, note(i), now - (40 - 10 * i) * NS_PER_DAY
            )
        log.close()

    asyncio.run(write())
    code, out = cli("audit", "prune", path, "--days", "30")
    assert code == 0, out
    assert [r.seq for r in read_records(path)] == [3, 4, 5, 6, 7]
    report = verify(path)
    assert [(p.seq, p.problem) for p in report.problems] == [(3, Problem.UNSIGNED_TAIL)]
    assert report.removed_runs == 1
    # A second keyless pass carries the first's run on (there is no key to check it with,
    # and nothing here is vouched for): still exit 3.
    code, out = cli("audit", "prune", path, "--days", "15")
    assert code == 0, out
    assert [r.seq for r in read_records(path)] == [4, 5, 6, 7, 8]
    assert [run[:2] for run in json.loads(rows_of(path)[8][4])["removed"]] == [[1, 3]]
    code, out = cli("audit", "verify", path)
    assert code == 3, out
    rewrite(path, delete=[5])
    assert first(verify(path)) == (6, Problem.MISSING)


async def test_a_pass_with_a_new_key_signs_for_none_of_the_keyless_runs(
    tmp_path: Path, keys: Keys
) -> None:
    """A log pruned before it had a key: its retention record is sealed by nothing. The
    first pass with the key carries none of its runs on (it cannot tell them from forged
    ones) and is not refused either (no checkpoint came before that record)."""
    path = tmp_path / "a.db"
    now = time.time_ns()
    keyless = ActivationLog(path)
    try:
        for day in (50, 45, 40, 20):
            await keyless.append_durable(
                RecordKind.RESUMED, None, note(day), now - day * NS_PER_DAY
            )
        assert (await keyless.prune(RetentionPass(48, now)))["removed"] == 1
    finally:
        keyless.close()
    gateway = GatewayLog(path, keys[0], now)
    try:
        assert await gateway.prune(RetentionPass(30, now)) == {"removed": 2, "held": 0, "seq": 6}
    finally:
        gateway.log.close()
    assert [run[:2] for run in json.loads(rows_of(path)[6][4])["removed"]] == [[2, 3]]
    report = verify(path, keys[1])
    assert first(report) == (4, Problem.MISSING), report.summary()
    assert "records 1-3 before it are missing: retention removed 1-1, 2-3 there" in str(
        report.problems[0]
    )
    assert (5, Problem.UNSEALED_RETENTION) in [(p.seq, p.problem) for p in report.problems]


def test_prune_of_a_signed_log_needs_the_key(tmp_path: Path, keys: Keys) -> None:
    """Without the key a pass could not be told from a forged one: the CLI refuses it."""
    log = tmp_path / "a.db"
    asyncio.run(write_signed_log(log, keys[0]))
    code, out = cli("audit", "prune", log, "--days", "0.01")
    assert code == 2
    assert "give the gateway's --key" in out
    code, out = cli("audit", "prune", log, "--days", "0.01", "--key", keys[0])
    assert code == 0, out
    code, out = cli("audit", "verify", log, "--pubkey", keys[1])
    assert code == 0, out


def test_a_signed_pass_whose_cutoff_disagrees_with_what_it_kept_is_found(tmp_path: Path) -> None:
    """Only a holder of the key (or a faulty writer) can sign such a pass: record 2, older
    than the cutoff and held by nothing, was kept next to a run the pass says it removed."""
    signer = CheckpointSigner.from_file(new_gateway_key(tmp_path, "gw").private)
    rows: list[Row] = []

    def add(kind: str, body: str, at_ns: int) -> Row:
        prev = rows[-1][6] if rows else GENESIS
        rows.append(forged(len(rows) + 1, prev, kind, None, body, at_ns))
        return rows[-1]

    for at_ns in (100, 100, 100, 900):
        add("resumed", "{}", at_ns)
    removed = [[3, 3, rows[2][6], rows[1][6]]]
    add("retention", json.dumps({"cutoff_ns": 500, "removed": removed}), 1000)
    add(
        "checkpoint",
        json.dumps(signer.body("log-1", 5, rows[4][6], "retention", retention=True)),
        1000,
    )
    kept = [LogRecord(*r) for r in rows if r[0] != 3]
    report = verify_chain(kept, log_id="log-1")
    assert [(p.seq, p.problem) for p in report.problems] == [(2, Problem.RETENTION_MISMATCH)]


def test_a_later_pass_does_not_launder_a_deleted_held_record(tmp_path: Path, keys: Keys) -> None:
    """A held record among expired ones is deleted by hand before the gateway's next pass:
    the pass must not name a run across the hole (its signature would vouch for it)."""
    path = tmp_path / "a.db"
    now = time.time_ns()

    async def write() -> None:
        log = ActivationLog(path, signer=CheckpointSigner.from_file(keys[0]))
        try:
            for i in range(5):  # 2-6: 40 days old; 4 is "held"'s
                activation = "held" if i == 2 else None
                await log.append_durable(
                    RecordKind.RESUMED, activation, note(i), now - 40 * NS_PER_DAY
                )
            await log.checkpoint()
        finally:
            log.close()

    async def prune() -> None:
        log = ActivationLog(path, signer=CheckpointSigner.from_file(keys[0]))
        try:
            assert (await log.prune(RetentionPass(30, now)))["removed"] == 4
        finally:
            log.close()

    asyncio.run(write())
    hold = hold_body(
        activation_id="held", from_ns=None, to_ns=None, reason="case 9", by="t", release=False
    )
    asyncio.run(_append_hold(path, keys[0], hold))
    assert verify(path, keys[1]).ok
    held = next(r.seq for r in read_records(path) if r.activation_id == "held" and r.kind != "hold")
    rewrite(path, delete=[held])
    asyncio.run(prune())
    report = verify(path, keys[1])
    assert first(report) == (held + 3, Problem.MISSING), report.summary()
    assert f"retention removed 1-{held - 1}, {held + 1}-{held + 2} there" in str(report.problems[0])
    assert cli("audit", "verify", path, "--pubkey", keys[1])[0] == 1


async def _append_hold(path: Path, key: Path, body: str) -> None:
    log = ActivationLog(path, signer=CheckpointSigner.from_file(key))
    try:
        await log.append_durable(RecordKind.HOLD, "held", body, time.time_ns())
        await log.checkpoint("hold")
    finally:
        log.close()


# --- the gateway's own retention pass, fed a forged retention record -------------------------
async def write_recent_evidence_log(path: Path, key: Path) -> int:
    """Records 1-5 are 40 to 36 days old (the next 30-day pass removes them), 6 is a
    checkpoint; 7-9 an hour old, 10 a `finished` (c2 missed), 11-12 its escalations,
    13-16 later records, 17 the shutdown checkpoint. Returns `now`."""
    now = time.time_ns()
    gateway = GatewayLog(path, key, now - 40 * NS_PER_DAY)
    try:
        for i in range(5):
            await gateway.append(
                RecordKind.RESUMED, f"old-{i}", note(i), now - (40 - i) * NS_PER_DAY
            )
        await gateway.log.checkpoint("periodic")
        t = now - 3600 * S
        for i in range(3):
            await gateway.append(RecordKind.RESUMED, None, note(10 + i), t + i)
        record = finished_record(t, c2=OutcomeStatus.MISSED, state=ActivationState.PARTIAL)
        await gateway.append(RecordKind.FINISHED, "a-7", FinishedEntry(record=record), t + 10 * S)
        for audience in ("dispatch", "supervisor"):
            await gateway.append(RecordKind.ESCALATED, "a-7", escalation(t, audience), t + 10 * S)
        for i in range(4):
            await gateway.append(RecordKind.RESUMED, None, note(20 + i), t + 20 * S + i)
    finally:
        gateway.log.close()
    kinds = [(r.seq, r.kind) for r in read_records(path)]
    assert kinds[5:] == [
        (6, "checkpoint"), (7, "resumed"), (8, "resumed"), (9, "resumed"), (10, "finished"),
        (11, "escalated"), (12, "escalated"), (13, "resumed"), (14, "resumed"), (15, "resumed"),
        (16, "resumed"), (17, "checkpoint"),
    ]  # fmt: skip
    return now


async def test_the_retention_pass_does_not_sign_for_an_insiders_retention_record(
    tmp_path: Path, keys: Keys
) -> None:
    """The review's attack (F1). The insider (no key) deletes the `finished` record 10 and
    its escalations 11-12, an hour old, and appends an unsigned retention record naming
    10-12 with the right hashes either side. Then the gateway's own retention pass runs
    (records 1-5 have expired): it must not copy that run into the retention record it
    seals with its key. Before the fix it did, and `audit verify --pubkey` said intact."""
    log = tmp_path / "a.db"
    now = await write_recent_evidence_log(log, keys[0])
    assert cli("audit", "verify", log, "--pubkey", keys[1])[0] == 0
    chain = rows_of(log)
    body = json.dumps(
        {
            "retention_days": 30,
            "cutoff_ns": now - 30 * NS_PER_DAY,
            "removed_now": 3,
            "held": 0,
            "removed": [[10, 12, chain[12][6], chain[9][6]]],
        },
        separators=(",", ":"),
    )
    rewrite(
        log, delete=range(10, 13), insert=[forged(18, chain[17][6], "retention", None, body, now)]
    )
    code, out = cli("audit", "verify", log, "--pubkey", keys[1])
    assert code == 1, out
    assert "record 13: missing: records 10-12" in out
    tampered = rows_of(log)

    gateway = GatewayLog(log, keys[0], now)
    try:
        with pytest.raises(RetentionRefused, match="not sealed by this log's key"):
            await gateway.prune(RetentionPass(30, now))
        assert gateway.log.retention_refusals == 1
    finally:
        gateway.log.close()
    # Nothing removed, nothing signed for: the log is as the insider left it, plus the
    # gateway's shutdown checkpoint (which vouches for no gap).
    after = rows_of(log)
    assert [seq for seq in after if seq not in tampered] == [19]
    assert after[19][2] == "checkpoint"
    assert not any(r.kind == "retention" and r.seq != 18 for r in read_records(log))
    code, out = cli("audit", "verify", log, "--pubkey", keys[1])
    assert code == 1, out
    report = verify(log, keys[1])
    assert first(report) == (13, Problem.MISSING), report.summary()
    assert "retention record 18 names them, but no retention checkpoint" in str(report.problems[0])


def test_a_signed_run_after_a_record_newer_than_its_cutoff_is_a_mismatch(tmp_path: Path) -> None:
    """What the laundering left behind, had a key's holder (or a faulty pass) signed it:
    record 4, newer than the pass's cutoff, kept just before a run the pass says it
    removed. Times rise along a log and a pass stops at its first record newer than the
    cutoff, so the records after 4 had not expired."""
    signer = CheckpointSigner.from_file(new_gateway_key(tmp_path, "gw").private)
    rows: list[Row] = []

    def add(kind: str, body: str, at_ns: int) -> None:
        prev = rows[-1][6] if rows else GENESIS
        rows.append(forged(len(rows) + 1, prev, kind, None, body, at_ns))

    for at_ns in (100, 200, 300, 900, 910, 920):
        add("resumed", "{}", at_ns)
    removed = [[1, 3, rows[2][6], GENESIS], [5, 5, rows[4][6], rows[3][6]]]
    add("retention", json.dumps({"cutoff_ns": 500, "removed": removed}), 1000)
    add("checkpoint", json.dumps(signer.body("log-1", 7, rows[6][6], "x", retention=True)), 1000)
    kept = [LogRecord(*r) for r in rows if r[0] not in (1, 2, 3, 5)]
    report = verify_chain(kept, log_id="log-1")
    assert [(p.seq, p.problem) for p in report.problems] == [(4, Problem.RETENTION_MISMATCH)]
    assert "newer than the cutoff of retention record 7" in report.problems[0].detail
    # The same pass without the forged run verifies: 1-3 start the log.
    honest = [[1, 3, rows[2][6], GENESIS]]
    rows[6:] = []
    add("retention", json.dumps({"cutoff_ns": 500, "removed": honest}), 1000)
    add("checkpoint", json.dumps(signer.body("log-1", 7, rows[6][6], "x", retention=True)), 1000)
    report = verify_chain([LogRecord(*r) for r in rows if r[0] > 3], log_id="log-1")
    assert report.ok, report.summary()


async def test_an_honest_pass_after_an_honest_pass_verifies(tmp_path: Path, keys: Keys) -> None:
    """Two passes of the gateway, a week apart, a hold between them: the second carries
    the first's runs on (its record is sealed) and the log verifies, exit 0."""
    log = tmp_path / "a.db"
    now = time.time_ns()
    gateway = GatewayLog(log, keys[0], now - 50 * NS_PER_DAY)
    try:
        for day in range(50, 20, -2):  # 50 to 22 days old; "held"'s every 6 days
            held = "held" if day % 6 == 0 else None
            await gateway.append(RecordKind.RESUMED, held, note(day), now - day * NS_PER_DAY)
            await gateway.log.checkpoint("periodic")
        first_pass = await gateway.prune(RetentionPass(30, now - 7 * NS_PER_DAY))
        hold = hold_body(
            activation_id="held", from_ns=None, to_ns=None, reason="case 3", by="t", release=False
        )
        await gateway.append(RecordKind.HOLD, "held", hold, now - 6 * NS_PER_DAY)
        second_pass = await gateway.prune(RetentionPass(30, now))
        await gateway.append(RecordKind.RESUMED, None, note(1), now)
    finally:
        gateway.log.close()
    # The first: 50 to 38 days old (7 records, each with its checkpoint), seq 1-14. The
    # second: the checkpoint after the held record 15 (36 days), and 17-20 (34, 32 days).
    assert first_pass == {"removed": 14, "held": 0, "seq": 31}
    assert second_pass == {"removed": 5, "held": 1, "seq": 34}
    code, out = cli("audit", "verify", log, "--pubkey", keys[1])
    assert code == 0, out
    retention = [r for r in read_records(log) if r.kind == "retention"]
    assert len(retention) == 2
    runs = [json.loads(r.body)["removed"] for r in retention]
    assert [run[:2] for run in runs[0]] == [[1, 14]]
    assert [run[:2] for run in runs[1]] == [[1, 14], [16, 20]]
    assert runs[1][1][3] == rows_of(log)[15][6]  # the held record kept before 16-20
    assert verify(log, keys[1]).removed_runs == 2


async def test_an_appended_retention_record_naming_no_gap_is_named(
    tmp_path: Path, keys: Keys
) -> None:
    """A copy of the genuine retention record appended by the insider, deleting nothing:
    the gateway's periodic checkpoint then signs it. It accounts for nothing, but it
    stops the gateway's retention passes (they refuse to carry it on), so verify must
    name it rather than say intact."""
    log = tmp_path / "a.db"
    now, a = await write_signed_log(log, keys[0])
    chain = rows_of(log)
    rewrite(log, insert=[forged(a + 8, chain[a + 7][6], "retention", None, chain[14][4], now)])
    gateway = GatewayLog(log, keys[0], now)
    try:
        assert await gateway.log.checkpoint("periodic") == a + 9
        with pytest.raises(RetentionRefused, match=f"{a + 9} after it is not a retention"):
            await gateway.prune(RetentionPass(1, now + 60 * NS_PER_DAY))
    finally:
        gateway.log.close()
    report = verify(log, keys[1])
    assert [(p.seq, p.problem) for p in report.problems] == [(a + 8, Problem.UNSEALED_RETENTION)]
    code, out = cli("audit", "verify", log, "--pubkey", keys[1])
    assert code == 1, out
    assert f"record {a + 8}: unsealed_retention" in out
    # `audit prune` with the key refuses the same way: exit 1, the log left as it is.
    before = rows_of(log)
    # (in a thread: the command runs an event loop of its own)
    code, out = await asyncio.to_thread(cli, "audit", "prune", log, "--days", "1", "--key", keys[0])
    assert code == 1, out
    assert "retention pass refused, nothing removed" in out
    assert rows_of(log) == before


def test_a_pass_stops_at_its_first_record_not_older_than_the_cutoff() -> None:
    """A clock set back: record 3 looks older than record 2. The pass stops at 2, so every
    record it keeps before a run is older than its cutoff (what verify holds it to)."""
    rows = [
        Candidate(seq, at_ns, None, f"p{seq}", f"h{seq}")
        for seq, at_ns in ((1, 100), (2, 900), (3, 100), (4, 100))
    ]
    removal = plan_removal(rows, cutoff_ns=500, holds={}, earlier_runs=[])
    assert removal.seqs == [1]
    assert removal.runs == [(1, 1, "h1", "p1")]


async def test_a_pass_with_another_key_is_refused(tmp_path: Path, keys: Keys) -> None:
    """The log's newest seal is by the gateway's key; a pass with another key (a changed
    audit.signing_key, or an insider's own) cannot vouch for it, so it signs nothing."""
    log = tmp_path / "a.db"
    now, _ = await write_signed_log(log, keys[0])
    before = rows_of(log)
    other = new_gateway_key(tmp_path / "other", "gw-car-12").private
    gateway = GatewayLog(log, other, now)
    try:
        with pytest.raises(RetentionRefused, match="wrong_key"):
            await gateway.prune(RetentionPass(1, now + 60 * NS_PER_DAY))
    finally:
        gateway.log.close()
    assert rows_of(log) == before
