"""Edge log sync to the central archive, against a real mosquitto, real archivers and the
real PostgreSQL: the archive's copy equals the edge log, a second sync adds nothing,
retention gaps and out-of-order batches are handled, and the copy verifies centrally."""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.mqtt.embedded import MosquittoProcess, free_port
from bridge.topics import Topics
from mesh.archive import store
from mesh.archive.db import connect
from mesh.archive.intake import accept
from mesh.archive.migrate import migrate
from mesh.decide.policy import Policy
from mesh.gateway.build import build_gateway, config_in_code
from mesh.journal.chain import GENESIS, record_hash, verify_chain
from mesh.journal.records import RecordKind, ResumedEntry
from mesh.journal.retention import RetentionPass
from mesh.journal.signer import CheckpointSigner
from mesh.journal.store import ActivationLog, LogRecord, log_id_of, read_records
from mesh.journal.sync import LogSync
from mesh.protocol.codec import encode
from mesh.protocol.log_wire import LogBatch, LogBatchRecord
from mesh.protocol.models import TriggerKind
from tests.harness import CENTER, UNIT, event, running_mesh, wait_until
from tests.integration.test_archive import rows, running_archivers

DAY_NS = 86_400 * 10**9


async def cli(*args: str, timeout_s: float = 60) -> tuple[int, str]:
    """Run ``trigger-mesh ARGS`` in a child process; its exit status and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mesh",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout_s)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


def archived(dsn: str, log_id: str) -> list[tuple[int, str, str]]:
    return [
        (int(seq), h, body)
        for seq, h, body in rows(
            dsn, "SELECT seq, hash, body FROM log_records WHERE log_id = %s ORDER BY seq", (log_id,)
        )
    ]


def edge(log: Path) -> list[tuple[int, str, str]]:
    return [(r.seq, r.hash, r.body) for r in read_records(log)]


async def central_copy(dsn: str, log_id: str) -> list[LogRecord]:
    conn = await connect(dsn)
    try:
        status = await store.log_status(conn, log_id)
        assert status is not None
        return await store.read_log(conn, log_id, through_seq=status.synced_seq)
    finally:
        await conn.close()


async def fill(log: Path, signer: CheckpointSigner, count: int, *, at_ns: int) -> None:
    """Append ``count`` records (any kind will do) and close the log, which signs it."""
    handle = ActivationLog(log, signer=signer)
    try:
        for i in range(count):
            await handle.append_durable(
                RecordKind.RESUMED, f"a-{i}", ResumedEntry(reason="test", acks_recovered=i), at_ns
            )
    finally:
        handle.close()


# --- a real gateway's log, two archivers, the CLI ---------------------------------------------
async def test_a_gateway_log_syncs_once_to_two_archivers_and_verifies_centrally(
    mosquitto: MosquittoProcess, topics: Topics, postgres: str, tmp_path: Path
) -> None:
    log = tmp_path / "gw.db"
    key = Ed25519PrivateKey.generate()
    signer = CheckpointSigner(key)
    gateway = build_gateway(
        config_in_code(UNIT, log, topics=topics, position=CENTER),
        Policy(),
        signer=signer,
        url=mosquitto.url,
        client_id=f"t{uuid.uuid4().hex[:8]}-gw",
    )
    async with running_mesh(mosquitto.url, topics, log, gateway=gateway) as mesh:
        await mesh.activate(event(TriggerKind.WEAPON_DRAW))
        await mesh.activate(event(TriggerKind.TASER_ARM, source_id="other-sensor"))
    log_id = log_id_of(log)
    records = edge(log)
    assert len(records) > 10

    async with running_archivers(mosquitto.url, topics, postgres) as archivers:
        # Small batches, so that both archivers get some and may store them out of order.
        sync = LogSync(
            log, url=mosquitto.url, topics=topics, unit_id=UNIT, gateway_id="gw-x", batch_records=3
        )
        result = await sync.sync(30)
        assert result.complete, result
        assert result.sent == len(records)
        assert archived(postgres, log_id) == records
        for archiver in archivers:
            assert archiver.counters["stored.log_record"] > 0, archiver.counters
        status = rows(postgres, "SELECT unit_id, gateway_id, synced_seq FROM logs")
        assert status == [(UNIT, "gw-x", records[-1][0])]

        # Again, from the command line, as the same gateway (the log is gw-x's now: another
        # gateway's batches would be refused): the archive already has everything.
        args = ("log", "sync", str(log), "--broker", str(mosquitto.url), "--prefix", topics.prefix)
        args += ("--gateway", "gw-x")
        code, out = await cli(*args, "--timeout", "20")
        assert code == 0, out
        assert "0 records sent" in out
        assert archived(postgres, log_id) == records

        # The edge log grows (and retention removes everything older than a day), then
        # syncs again: only what is new is sent, and the archive keeps what the edge lost.
        await fill(log, signer, 3, at_ns=time.time_ns())
        handle = ActivationLog(log, signer=signer)
        try:
            outcome = await handle.prune(RetentionPass(1.0, time.time_ns() + 2 * DAY_NS))
        finally:
            handle.close()
        assert outcome["removed"] > 0
        # Its started record is gone with the rest: the log no longer names its gateway,
        # and a sync under no name would be refused at the archive.
        code, out = await cli(*args[:-2], "--timeout", "20")
        assert code == 2, out
        assert "the log names no gateway (it holds no started record): give --gateway" in out
        code, out = await cli(*args, "--timeout", "20")
        assert code == 0, out
        # The three new records expired before they were sent: the retention record that
        # names them is what the archive gets, after everything it had.
        grown = edge(log)
        assert grown[0][0] > records[-1][0] + 3
        assert archived(postgres, log_id) == records + grown
        assert sum(a.counters["conflict.log_record"] for a in archivers) == 0

    # The central copy verifies with the edge's own chain check, against the pinned key.
    copy = await central_copy(postgres, log_id)
    assert [(r.seq, r.hash, r.body) for r in copy] == archived(postgres, log_id)
    report = verify_chain(copy, log_id=log_id, public_key=key.public_key(), central_copy=True)
    assert report.ok, report.summary()
    pub = tmp_path / "gw.pub"
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    pub.write_bytes(key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    verify = ("archiver", "verify", "--db", postgres, "--log-id", log_id, "--pubkey", str(pub))
    code, out = await cli(*verify)
    assert code == 0, out
    assert "intact" in out

    # Someone with write access to the archive edits a record: the chain check names it.
    middle = records[len(records) // 2][0]
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute("ALTER TABLE log_records DISABLE TRIGGER log_records_append_only")
        conn.execute(
            "UPDATE log_records SET body = body || ' ' WHERE log_id = %s AND seq = %s",
            (log_id, middle),
        )
    code, out = await cli(*verify)
    assert code == 1, out
    assert f"record {middle}: modified" in out


async def test_archived_records_can_be_neither_changed_nor_deleted(
    mosquitto: MosquittoProcess, topics: Topics, postgres: str, tmp_path: Path
) -> None:
    log = tmp_path / "edge.db"
    await fill(log, CheckpointSigner(Ed25519PrivateKey.generate()), 2, at_ns=time.time_ns())
    async with running_archivers(mosquitto.url, topics, postgres, names=("arch-one",)):
        result = await LogSync(log, url=mosquitto.url, topics=topics).sync(20)
        assert result.complete
    with psycopg.connect(postgres, autocommit=True) as conn:
        for statement in (
            "UPDATE log_records SET body = 'x' WHERE seq = 1",
            "DELETE FROM log_records WHERE seq = 1",
        ):
            with pytest.raises(psycopg.errors.RaiseException, match="never"):
                conn.execute(statement)


# --- retention gaps and out-of-order batches, at the store -------------------------------------
def chain(count: int, *, start_seq: int = 1, removed_before: int = 0) -> list[LogBatchRecord]:
    """``count`` records of a valid chain starting at ``start_seq``; the first names
    ``removed_before`` as its predecessor in the edge table (a retention gap)."""
    out: list[LogBatchRecord] = []
    prev_hash, prev_seq = GENESIS, removed_before
    for seq in range(start_seq, start_seq + count):
        body = f'{{"n":{seq}}}'
        digest = record_hash(
            prev_hash, seq, seq * 10, kind="resumed", activation_id=None, body=body
        )
        out.append(
            LogBatchRecord(
                seq=seq,
                prev_seq=prev_seq,
                at_ns=seq * 10,
                kind="resumed",
                activation_id=None,
                body=body,
                prev_hash=prev_hash,
                hash=digest,
            )
        )
        prev_hash, prev_seq = digest, seq
    return out


def batch_item(topics: Topics, log_id: str, records: list[LogBatchRecord]) -> object:
    batch = LogBatch(log_id=log_id, head_seq=records[-1].seq, sent_at_ns=1, records=tuple(records))
    return accept(topics, topics.log_records(log_id, None), encode(batch))


async def test_the_watermark_waits_for_missing_batches_and_steps_over_retention_gaps(
    postgres: str,
) -> None:
    topics = Topics("mesh/v2")
    conn = await connect(postgres)
    try:
        await migrate(conn)
        records = chain(9)

        async def put(part: list[LogBatchRecord], log_id: str = "edge-1") -> store.WriteResult:
            item = batch_item(topics, log_id, part)
            return await store.write(conn, [item], "arch-test")  # type: ignore[list-item]

        # A later batch first: stored, but the watermark cannot pass the hole before it.
        assert (await put(records[3:6])).logs[0].synced_seq == 0
        assert (await put(records[6:9])).logs[0].synced_seq == 0
        done = await put(records[0:3])
        assert done.logs[0].synced_seq == 9  # the hole is filled: all the way up
        again = await put(records[0:3])
        assert again.counts["duplicate.log_record"] == 3
        assert again.logs[0].synced_seq == 9

        # The same seq with another content: refused, reported, the first copy kept.
        forged = chain(1, start_seq=5, removed_before=4)[0]
        conflict = await put([forged])
        assert conflict.counts["conflict.log_record"] == 1
        assert conflict.conflicts
        assert rows(postgres, "SELECT hash FROM log_records WHERE seq = 5") == [(records[4].hash,)]

        # An edge whose retention removed records 1-4 before they were ever sent: the
        # first record it has names no predecessor, and the watermark starts there.
        gap = chain(3, start_seq=5, removed_before=0)
        assert (await put(gap, "edge-2")).logs[0].synced_seq == 7
        # Resent after retention: record 3 arrived once (naming 2), 1-2 never did; now the
        # edge says nothing is before it and the watermark follows.
        late = chain(4)
        assert (await put([late[2]], "edge-3")).logs[0].synced_seq == 0
        relinked = await put([late[2].model_copy(update={"prev_seq": 0})], "edge-3")
        assert relinked.counts["relinked.log_record"] == 1
        assert relinked.logs[0].synced_seq == 3
    finally:
        await conn.close()


async def test_the_watermark_steps_over_more_records_than_one_read_holds(postgres: str) -> None:
    """The watermark reads the records after it store.WATERMARK_WINDOW at a time: filling
    a hole before more than that many stored records takes it all the way up."""
    topics = Topics("mesh/v2")
    records = chain(store.WATERMARK_WINDOW * 2 + 5)
    conn = await connect(postgres)
    try:
        await migrate(conn)

        async def put(part: list[LogBatchRecord]) -> store.WriteResult:
            return await store.write(conn, [batch_item(topics, "edge-1", part)], "t")  # type: ignore[list-item]

        assert (await put(records[1:])).logs[0].synced_seq == 0  # record 1 missing
        assert (await put(records[:1])).logs[0].synced_seq == len(records)
    finally:
        await conn.close()


# --- the broker away -----------------------------------------------------------------------------
async def test_sync_retries_until_the_broker_comes_back(
    own_mosquitto: MosquittoProcess, postgres: str, tmp_path: Path
) -> None:
    topics = Topics(f"test-{uuid.uuid4().hex[:10]}/mesh/v2")
    log = tmp_path / "edge.db"
    await fill(log, CheckpointSigner(Ed25519PrivateKey.generate()), 5, at_ns=time.time_ns())
    own_mosquitto.stop()
    sync = asyncio.create_task(LogSync(log, url=own_mosquitto.url, topics=topics).sync(30))
    await asyncio.sleep(1.0)
    assert not sync.done()
    own_mosquitto.start()
    async with running_archivers(own_mosquitto.url, topics, postgres, names=("arch-late",)):
        result = await sync
    assert result.complete
    assert result.sent == len(edge(log))
    assert archived(postgres, log_id_of(log)) == edge(log)


def tamper(log: Path, seq: int) -> None:
    """Edit record ``seq`` of the edge log in place, as someone with the car's disk could:
    its hash no longer matches."""
    import sqlite3

    with sqlite3.connect(log) as db:
        db.execute("DROP TRIGGER records_append_only_update")
        db.execute("UPDATE records SET body = replace(body, 'test', 'edit') WHERE seq = ?", (seq,))


async def test_a_tampered_record_holds_the_watermark_but_not_the_records_after_it(
    mosquitto: MosquittoProcess, topics: Topics, postgres: str, tmp_path: Path
) -> None:
    """Record 12 of the edge log was edited after it was written (its hash no longer
    matches): the archive refuses the batch holding it (bad_hash), unanswered, and stores
    the batches before and after it. The watermark stays before it, so the pass is not
    complete (the sender resends from there until its timeout) and nothing after it is
    ever taken for archived; the records after it are in the archive all the same."""
    log = tmp_path / "edge.db"
    await fill(log, CheckpointSigner(Ed25519PrivateKey.generate()), 30, at_ns=time.time_ns())
    tamper(log, 12)
    async with running_archivers(mosquitto.url, topics, postgres, names=("arch-1",)) as (arch,):
        sync = LogSync(log, url=mosquitto.url, topics=topics, gateway_id="gw-x", batch_records=5)
        result = await sync.sync(3)
        expected = [*range(1, 11), *range(16, len(edge(log)) + 1)]
        await wait_until(lambda: [r[0] for r in archived(postgres, log_id_of(log))] == expected)
    assert not result.complete
    assert result.refused is None
    assert sync.watermark == 10
    assert arch.counters["rejected.log_records.bad_hash"] >= 1


async def test_after_a_refusal_the_gateway_s_sync_waits_before_it_tries_again(
    mosquitto: MosquittoProcess,
    topics: Topics,
    postgres: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The log is gw-x's at the archive; a background sync of it as gw-y (run_forever, a
    pass every 50 ms here) hears a refusal: its next pass comes only REFUSED_RETRY_S later
    (1 s here; 10 minutes in production), not at its interval, so a refused log is not
    sent over and over."""
    from mesh.journal import sync as sync_module

    monkeypatch.setattr(sync_module, "REFUSED_RETRY_S", 1.0)
    log = tmp_path / "edge.db"
    await fill(log, CheckpointSigner(Ed25519PrivateKey.generate()), 10, at_ns=time.time_ns())
    loop = asyncio.get_running_loop()
    async with running_archivers(mosquitto.url, topics, postgres, names=("arch-1",)) as (arch,):
        owner = LogSync(log, url=mosquitto.url, topics=topics, gateway_id="gw-x")
        assert (await owner.sync(30)).complete
        await fill(log, CheckpointSigner(Ed25519PrivateKey.generate()), 10, at_ns=time.time_ns())
        other = LogSync(log, url=mosquitto.url, topics=topics, gateway_id="gw-y")
        task = asyncio.create_task(other.run_forever(interval_s=0.05, pass_timeout_s=30))
        try:
            await wait_until(lambda: other.counters["refused"] >= 1, 30)
            first = loop.time()
            await wait_until(lambda: other.counters["refused"] >= 2, 30)
            again = loop.time() - first
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert again >= 1.0, again
    assert arch.counters["conflict.log_batch"] >= 2


async def test_a_log_another_gateway_bound_is_refused_at_once_not_resent(
    mosquitto: MosquittoProcess, topics: Topics, postgres: str, tmp_path: Path
) -> None:
    """The log is gw-x's at the archive. A sync of it as gw-y (a renamed gateway, a copied
    file) is refused: the archive answers its first batch with a refusal, and the pass
    ends there, saying why, instead of resending the log until its timeout; nothing of
    gw-y's is stored. From the command line: exit 1, with the reason."""
    log = tmp_path / "edge.db"
    await fill(log, CheckpointSigner(Ed25519PrivateKey.generate()), 30, at_ns=time.time_ns())
    async with running_archivers(mosquitto.url, topics, postgres, names=("arch-1",)) as (arch,):
        owner = LogSync(log, url=mosquitto.url, topics=topics, gateway_id="gw-x")
        assert (await owner.sync(30)).complete
        await fill(log, CheckpointSigner(Ed25519PrivateKey.generate()), 30, at_ns=time.time_ns())
        other = LogSync(log, url=mosquitto.url, topics=topics, gateway_id="gw-y", batch_records=10)
        started = time.monotonic()
        result = await other.sync(60)
        took = time.monotonic() - started
        assert not result.complete
        assert result.refused == (
            f"log {log_id_of(log)} is another gateway's: the archive stores none of its "
            "batches from gw-y"
        )
        assert other.counters["resends"] == 0
        assert took < 30, took  # answered, not timed out
        assert arch.counters["conflict.log_batch"] >= 1
        synced = rows(postgres, "SELECT gateway_id, synced_seq FROM logs")
        assert synced == [("gw-x", owner.watermark)]

        args = ("log", "sync", str(log), "--broker", str(mosquitto.url), "--prefix", topics.prefix)
        code, out = await cli(*args, "--gateway", "gw-y", "--timeout", "60")
    assert code == 1, out
    assert "not synced: refused by the archive: log " in out, out


async def test_sync_without_a_broker_says_so_at_once(tmp_path: Path) -> None:
    log = tmp_path / "edge.db"
    await fill(log, CheckpointSigner(Ed25519PrivateKey.generate()), 2, at_ns=time.time_ns())
    started = time.monotonic()
    broker = f"mqtt://127.0.0.1:{free_port()}"
    code, out = await cli(
        "log", "sync", str(log), "--broker", broker, "--gateway", "gw-1", "--timeout", "1.5"
    )
    # One line and exit 75 (docs/cli.md), where it used to retry until --timeout.
    assert code == 75, out
    assert out.startswith("error: cannot reach the MQTT broker at 127.0.0.1:")
    assert time.monotonic() - started < 15
    code, out = await cli("log", "sync", str(tmp_path / "nothing.db"), "--timeout", "1")
    assert code == 2
    assert "no such activation log" in out


# --- the gateway's own background sync -----------------------------------------------------------
async def test_a_gateway_with_sync_log_keeps_the_archive_current(
    mosquitto: MosquittoProcess, topics: Topics, postgres: str, tmp_path: Path
) -> None:
    log = tmp_path / "gw.db"
    gateway = build_gateway(
        config_in_code(
            UNIT, log, topics=topics, position=CENTER, sync_log=True, sync_interval_s=0.2
        ),
        Policy(),
        url=mosquitto.url,
        client_id=f"t{uuid.uuid4().hex[:8]}-gw",
    )
    async with (
        running_archivers(mosquitto.url, topics, postgres, names=("arch-gw",)),
        running_mesh(mosquitto.url, topics, log, gateway=gateway) as mesh,
    ):
        record = await mesh.activate(event(TriggerKind.WEAPON_DRAW))
        log_id = log_id_of(log)

        def caught_up() -> bool:
            held = {seq for seq, _, _ in archived(postgres, log_id)}
            return any(
                r.kind == "finished" and r.activation_id == record.activation_id
                for r in read_records(log)
                if r.seq in held
            )

        await wait_until(caught_up, 15)
    status = rows(postgres, "SELECT unit_id, gateway_id FROM logs WHERE log_id = %s", (log_id,))
    assert status == [(UNIT, f"gw-{UNIT}")]


def test_the_gateway_config_turns_sync_on(tmp_path: Path) -> None:
    from mesh.config import load_gateway_config

    path = tmp_path / "gw.yaml"
    path.write_text("unit: car-12\nsync_log: true\nsync_interval_s: 2\n")
    config, _ = load_gateway_config(path)
    assert config.sync_log is True
    assert config.sync_interval_s == 2.0
    path.write_text("unit: car-12\n")
    assert load_gateway_config(path)[0].sync_log is False
