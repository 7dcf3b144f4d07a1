"""Archive volume (docs/archive.md, "Volume, partitions and retention"), on the real
PostgreSQL, with real archivers behind a real mosquitto and the real `log sync`:
heartbeat repeats folded and read back exactly, monthly partitions (migrated from the 003
schema with its rows, and the live tables from the 005 schema with theirs), one record
per seq still, retention by dropping months of every partitioned table together, and
legal holds that retention respects."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from psycopg import sql

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.archive import partitions, store
from mesh.archive.db import connect
from mesh.archive.intake import Item, accept
from mesh.archive.migrate import available, migrate
from mesh.archive.partitions import PARTITIONED, Month
from mesh.journal.chain import GENESIS, record_hash, verify_chain
from mesh.journal.records import RecordKind
from mesh.journal.signer import CheckpointSigner
from mesh.journal.store import ActivationLog, log_id_of, read_records
from mesh.journal.sync import LogSync, batch_records
from mesh.protocol.codec import encode
from mesh.protocol.log_wire import LogBatch, LogBatchRecord
from mesh.protocol.models import (
    AckStatus,
    CameraAck,
    CameraPresence,
    CameraRole,
    Escalation,
    EscalationReason,
    Position,
    ReceiptOutcome,
    TriggerKind,
    TriggerReceipt,
)
from tests.harness import wait_until
from tests.integration.test_archive import publisher, rows, running_archivers
from tests.integration.test_log_sync import batch_item, central_copy, cli

NS = 1_000_000_000
CAMERAS = ("bwc-1", "bwc-2", "dash-1")


def presence(camera: str, t_ns: int, *, recording: bool = False) -> str:
    return CameraPresence(
        camera_id=camera,
        unit_id="car-1",
        role=CameraRole.DASH if camera.startswith("dash") else CameraRole.BODY,
        online=True,
        recording=recording,
        position=Position(lat=40.0, lon=-75.0, accuracy_m=5.0, fix_at_ns=t_ns),
        last_seen_ns=t_ns,
    ).model_dump_json()


async def heartbeat_log(path: Path, signer: CheckpointSigner, beats: int, t0: int) -> None:
    """A gateway's log where every camera's presence was logged at every heartbeat (30 s),
    one camera started recording half-way, with a checkpoint every 20 records."""
    log = ActivationLog(path, signer=signer, checkpoint_interval_s=3600)
    try:
        n = 0
        for beat in range(beats):
            t = t0 + beat * 30 * NS
            for camera in CAMERAS:
                recording = camera == "bwc-1" and beat >= beats // 2
                log.append_json(
                    RecordKind.PRESENCE, None, presence(camera, t, recording=recording), t
                )
                n += 1
                if n % 20 == 0:
                    await log.checkpoint()
        await log.flush()
    finally:
        log.close()


def count(dsn: str, table: str) -> int:
    return int(rows(dsn, f"SELECT count(*) FROM {table}")[0][0])


async def test_heartbeat_repeats_are_folded_and_read_back_exactly_and_verify(
    mosquitto: MosquittoProcess, topics: Topics, postgres: str, tmp_path: Path
) -> None:
    path = tmp_path / "gw.db"
    key = Ed25519PrivateKey.generate()
    beats = 20
    await heartbeat_log(path, CheckpointSigner(key), beats, time.time_ns() - 3600 * NS)
    log_id = log_id_of(path)
    edge = [(r.seq, r.hash, r.body) for r in list(read_records(path))]

    # One archiver: with two, a later batch may be stored before an earlier one, and its
    # repeats are then kept in full (they fold only against a base before them).
    async with running_archivers(mosquitto.url, topics, postgres, names=("arch-a",)) as archivers:
        sync = LogSync(
            path,
            url=mosquitto.url,
            topics=topics,
            unit_id="car-1",
            gateway_id="gw-1",
            batch_records=7,
        )
        result = await sync.sync(30)
        assert result.complete, result
        # Each camera's first presence and bwc-1's change to recording are full rows (and
        # the checkpoints); every other presence is a repeat of its camera's last one.
        full_presence = len(CAMERAS) + 1
        repeats = beats * len(CAMERAS) - full_presence
        assert count(postgres, "presence_repeats") == repeats
        assert count(postgres, "log_records") == len(edge) - repeats
        assert sum(a.counters["folded.log_record"] for a in archivers) == repeats

        # The same batch delivered twice more (a redelivery, another archiver): stored once.
        first = list(read_records(path))[:7]
        batch = LogBatch(
            log_id=log_id,
            unit_id="car-1",
            gateway_id="gw-1",
            head_seq=first[-1].seq,
            sent_at_ns=1,
            records=batch_records(first),
        )
        async with publisher(mosquitto.url) as pub:
            for _ in range(2):
                await pub.publish(topics.log_records(log_id, "gw-1"), encode(batch), qos=1)

        def duplicates() -> int:
            return sum(a.counters["duplicate.log_record"] for a in archivers)

        await wait_until(lambda: duplicates() >= 14, 15)
        assert count(postgres, "presence_repeats") + count(postgres, "log_records") == len(edge)

    # Read back, every record is the edge's, byte for byte, and the chain verifies
    # against the gateway's key, in code and from the command line.
    copy = await central_copy(postgres, log_id)
    assert [(r.seq, r.hash, r.body) for r in copy] == edge
    report = verify_chain(copy, log_id=log_id, public_key=key.public_key(), central_copy=True)
    assert report.ok, report.summary()
    pub_path = tmp_path / "gw.pub"
    pub_path.write_bytes(
        key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    verify = ("archiver", "verify", "--db", postgres, "--log-id", log_id)
    code, out = await cli(*verify, "--pubkey", str(pub_path))
    assert code == 0, out

    # A folded record altered in the archive: the chain check names it.
    seq = int(rows(postgres, "SELECT min(seq) FROM presence_repeats")[0][0])
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute("ALTER TABLE presence_repeats DISABLE TRIGGER presence_repeats_append_only")
        conn.execute("UPDATE presence_repeats SET middle = middle || '1' WHERE seq = %s", (seq,))
    code, out = await cli(*verify, "--pubkey", str(pub_path))
    assert code == 1, out
    assert f"record {seq}: modified" in out


def chain_at(at_ns: list[int], *, kind: str = "resumed") -> list[LogBatchRecord]:
    out: list[LogBatchRecord] = []
    prev = GENESIS
    for seq, at in enumerate(at_ns, start=1):
        body = f'{{"n":{seq}}}'
        h = record_hash(prev, seq, at, kind=kind, activation_id=None, body=body)
        out.append(
            LogBatchRecord(
                seq=seq, prev_seq=seq - 1, at_ns=at, kind=kind, body=body, prev_hash=prev, hash=h
            )
        )
        prev = h
    return out


async def test_a_seq_is_one_record_whatever_its_time_says(postgres: str) -> None:
    """The key of a partitioned table holds at_ns: a copy of record 2 with another time
    (and a hash that matches it) must still be a conflict, never a second record 2."""
    topics = Topics("mesh/v2")
    now = time.time_ns()
    records = chain_at([now, now + 1, now + 2])
    conn = await connect(postgres)
    try:
        await migrate(conn)
        await store.write(conn, [batch_item(topics, "edge-1", records)], "t")  # type: ignore[list-item]
        forged = chain_at([now, now - 40 * 86_400 * NS])[1]  # record 2, a month earlier
        result = await store.write(conn, [batch_item(topics, "edge-1", [forged])], "t")  # type: ignore[list-item]
        assert result.counts["conflict.log_record"] == 1
        assert rows(postgres, "SELECT count(*), min(hash) FROM log_records WHERE seq = 2") == [
            (1, records[1].hash)
        ]
    finally:
        await conn.close()


async def test_a_batch_with_seqs_far_apart_reads_only_its_own_seqs(postgres: str) -> None:
    """Any car may send a batch for any log: one with records at seq 2 and seq 2^52 (it
    links, a retention gap between them) must not make the writer read the whole log it
    names while holding that log's lock; nor a normal group of new records. Counted from
    PostgreSQL's own plan (EXPLAIN ANALYZE): the rows the look-up read from the log's
    tables. Looked up as one range or as ``seq = ANY``, it read all 2,000."""
    topics = Topics("mesh/v2")
    now = time.time_ns()
    held = chain_at([now + i for i in range(2000)])
    conn = await connect(postgres)
    try:
        await migrate(conn)
        await store.write(conn, [batch_item(topics, "edge-1", held)], "t")  # type: ignore[list-item]
    finally:
        await conn.close()
    far = 2**52
    for seqs in ([2, far], list(range(2001, 2101))):
        firsts, lasts = store.seq_runs(seqs)
        with psycopg.connect(postgres) as sync_conn:
            cur = sync_conn.execute(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + store._HELD,
                {"log": "edge-1", "first": firsts, "last": lasts},
            )
            found = cur.fetchone()
        assert found is not None
        assert _rows_read(found[0][0]["Plan"]) <= len(seqs), seqs[:3]


def _rows_read(node: dict[str, object]) -> int:
    """Rows a plan's scans of the log tables produced or filtered out, over all loops."""
    read = 0
    relation = str(node.get("Relation Name", ""))
    if relation.startswith(("log_records", "presence_repeats")):
        loops = int(str(node.get("Actual Loops", 1)))
        for key in ("Actual Rows", "Rows Removed by Filter", "Rows Removed by Index Recheck"):
            read += int(float(str(node.get(key, 0))) * loops)
    for child in node.get("Plans", []):  # type: ignore[attr-defined]
        read += _rows_read(child)
    return read


async def test_the_migration_keeps_the_rows_of_the_003_schema(postgres: str) -> None:
    old = [m for m in available() if m.version <= 3]
    january, march = Month(2025, 1), Month(2025, 3)
    records = chain_at([january.from_ns + 5, january.to_ns - 1, march.from_ns, 42])
    with psycopg.connect(postgres, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for m in old:
            conn.execute(m.sql.encode())
            conn.execute("INSERT INTO schema_migrations VALUES (%s, %s)", (m.version, m.name))
        conn.execute("INSERT INTO logs (log_id, synced_seq, head_seq) VALUES ('edge-1', 4, 4)")
        for r in records:
            conn.execute(
                "INSERT INTO log_records (log_id, seq, prev_seq, at_ns, kind, body, prev_hash,"
                " hash, archived_by) VALUES ('edge-1', %s, %s, %s, %s, %s, %s, %s, 'old')",
                (r.seq, r.prev_seq, r.at_ns, r.kind, r.body, r.prev_hash, r.hash),
            )
    conn2 = await connect(postgres)
    try:
        assert [v for v in await migrate(conn2) if v >= 4][:1] == [4]
        copy = await store.read_log(conn2, "edge-1")
        assert [(r.seq, r.hash, r.body) for r in copy] == [(r.seq, r.hash, r.body) for r in records]
        months = await partitions.existing_months(conn2)
        assert months[0] == january
        assert march in months
        assert Month.of_ns(time.time_ns()) in months
    finally:
        await conn2.close()
    placed = rows(
        postgres,
        "SELECT tableoid::regclass::text, seq FROM log_records ORDER BY seq",
    )
    assert [p[0] for p in placed] == [
        "log_records_p202501",
        "log_records_p202501",
        "log_records_p202503",
        "log_records_default",
    ]
    assert rows(postgres, "SELECT relkind FROM pg_class WHERE oid = 'log_records'::regclass") == [
        ("p",)
    ]
    # The append-only guard came along.
    with (
        psycopg.connect(postgres, autocommit=True) as conn,
        pytest.raises(psycopg.errors.RaiseException, match="never deleted"),
    ):
        conn.execute("DELETE FROM log_records WHERE seq = 1")


def live_items(
    topics: Topics,
    activation_id: str,
    unit: str,
    at_ns: int,
    *,
    ack_unit: str | None = None,
    kinds: tuple[str, ...] = ("receipt", "ack", "escalation"),
) -> list[Item]:
    """A receipt, an ack and an escalation of ``activation_id`` (of ``unit``) at ``at_ns``
    (and 1 ns, 2 ns after), as the archiver takes them in; ``kinds``: only these."""
    made: list[tuple[str, bytes]] = []
    if "receipt" in kinds:
        receipt = TriggerReceipt(
            event_id=f"ev-{activation_id}",
            unit_id=unit,
            outcome=ReceiptOutcome.ACCEPTED,
            activation_id=activation_id,
            at_ns=at_ns,
        )
        made.append((topics.receipt(unit), encode(receipt)))
    if "ack" in kinds:
        ack = CameraAck(
            activation_id=activation_id,
            camera_id="bwc-1",
            unit_id=ack_unit,
            status=AckStatus.STARTED,
            received_at_ns=at_ns + 1,
        )
        made.append((topics.ack("gw-1", "bwc-1"), encode(ack)))
    if "escalation" in kinds:
        escalation = Escalation(
            activation_id=activation_id,
            issuer="gw-1",
            unit_id=unit,
            kind=TriggerKind.MANUAL,
            camera_id="bwc-2",
            camera_unit_id=None,
            reason=EscalationReason.NO_ACK,
            attempts=3,
            audience="dispatch",
            at_ns=at_ns + 2,
        )
        made.append((topics.escalation("dispatch"), encode(escalation)))
    items = [accept(topics, topic, payload) for topic, payload in made]
    assert all(i is not None for i in items)
    return [i for i in items if i is not None]


LIVE = ("receipts", "acks", "escalations")


def shape(dsn: str) -> dict[str, object]:
    """The live tables' columns, constraints and indexes, as the catalog describes them
    (a partitioned index is defined ON ONLY its table: the same index)."""
    return {
        "columns": rows(
            dsn,
            "SELECT table_name, ordinal_position, column_name, data_type, is_nullable,"
            " column_default FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ANY (%s)"
            " ORDER BY 1, 2",
            (list(LIVE),),
        ),
        "constraints": rows(
            dsn,
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)"
            " FROM pg_constraint WHERE conrelid = ANY (%s::regclass[]) ORDER BY 1, 2",
            (list(LIVE),),
        ),
        "indexes": [
            (t, i, d.replace(" ON ONLY ", " ON "))
            for t, i, d in rows(
                dsn,
                "SELECT tablename, indexname, indexdef FROM pg_indexes"
                " WHERE schemaname = current_schema() AND tablename = ANY (%s) ORDER BY 1, 2",
                (list(LIVE),),
            )
        ],
        "triggers": rows(
            dsn,
            "SELECT tgrelid::regclass::text, tgname FROM pg_trigger"
            " WHERE tgrelid = ANY (%s::regclass[]) AND NOT tgisinternal ORDER BY 1, 2",
            (list(LIVE),),
        ),
    }


def live_rows(dsn: str) -> dict[str, list[tuple[object, ...]]]:
    return {
        table: rows(dsn, f"SELECT * FROM {table} ORDER BY archived_by, payload::text")
        for table in LIVE
    }


async def test_the_migration_keeps_the_live_rows_of_the_005_schema(postgres: str) -> None:
    """receipts, acks and escalations written by the archive on the 005 schema are all
    there after 006, each in its month's partition (or the default), with the same
    columns, keys and indexes, and the archive's writes are as idempotent as before."""
    topics = Topics("mesh/v2")
    now = time.time_ns()
    this = Month.of_ns(now)
    old = Month.of_ns(this.from_ns - 100 * 86_400 * NS)  # about three months ago
    oldest = Month.of_ns(old.from_ns - 1)
    # Half a year ahead: a month no partition exists for yet (no archiver ran), and a
    # log record of it sits in log_records' default: the month cannot be created.
    ahead = Month.of_ns(this.from_ns + 190 * 86_400 * NS)
    conn = await connect(postgres)
    try:
        await conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for m in available():
            if m.version <= 5:
                await conn.execute(m.sql.encode())
                await conn.execute(
                    "INSERT INTO schema_migrations VALUES (%s, %s)", (m.version, m.name)
                )
        # The log tables' months of an archive that ran since ``oldest`` (004 made this
        # one; the archivers made the others as they came).
        month = oldest
        while month < this:
            for table in ("log_records", "presence_repeats"):
                await conn.execute(
                    sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
                        sql.Identifier(month.partition(table)),
                        sql.Identifier(table),
                        sql.Literal(month.from_ns),
                        sql.Literal(month.to_ns),
                    )
                )
            month = month.next()
        before_shape = shape(postgres)
        written = {
            "a-old": live_items(topics, "a-old", "car-1", old.from_ns + 5, ack_unit="car-1"),
            # The oldest row, in its month's last ns (a time a float rounds up into the next).
            "a-oldest": live_items(topics, "a-oldest", "car-1", oldest.to_ns - 3),
            "a-now": live_items(topics, "a-now", "car-2", now),
            "a-end": live_items(topics, "a-end", "car-2", old.to_ns - 3),  # its last 3 ns
            "a-42": live_items(topics, "a-42", "car-3", 42),  # a clock at 1970
            "a-ahead": live_items(topics, "a-ahead", "car-3", ahead.from_ns + 9),
        }
        result = await store.write(conn, [i for items in written.values() for i in items], "v5")
        assert result.counts == {f"stored.{k}": 6 for k in ("receipt", "ack", "escalation")}
        stray = batch_item(topics, "edge-1", chain_at([ahead.from_ns + 1]))
        assert isinstance(stray, Item)
        await store.write(conn, [stray], "v5")
        before = live_rows(postgres)
        assert [len(r) for r in before.values()] == [6, 6, 6]

        assert await migrate(conn) == [6, 7, 8]
        assert live_rows(postgres) == before
        after_shape = shape(postgres)
        assert isinstance(after_shape["indexes"], list)
        added = [i for i in after_shape["indexes"] if i[1] == "acks_live_by_camera"]  # 008's
        assert len(added) == 1, after_shape["indexes"]
        after_shape["indexes"].remove(added[0])
        assert after_shape == before_shape
        for table in LIVE:
            assert rows(
                postgres, f"SELECT relkind FROM pg_class WHERE oid = '{table}'::regclass"
            ) == [("p",)]
        # The live tables have the log tables' months (from the oldest row's to this one),
        # and no other: the rows dated in 1970 and half a year ahead cost no partitions,
        # and each row is in its month's partition or the default.
        have = await partitions.existing_partitions(conn)
        assert sorted(have) == [m for m in sorted(have) if oldest <= m <= this]
        month = oldest
        while month <= this:
            assert have.get(month) == frozenset(PARTITIONED), month
            month = month.next()
        expected = {
            "a-old": old.label,
            "a-oldest": oldest.label,
            "a-now": this.label,
            "a-end": old.label,
            "a-42": "default",
            "a-ahead": "default",
        }
        for table in LIVE:
            placed = dict(
                rows(
                    postgres,
                    f"SELECT activation_id, split_part(tableoid::regclass::text, '_', 2)"
                    f" FROM {table}",
                )
            )
            assert placed == {a: (p if p == "default" else f"p{p}") for a, p in expected.items()}, (
                table
            )

        # The same messages again (a redelivery): duplicates, nothing written; a new one in
        # a migrated month is stored, in its partition.
        again = await store.write(conn, [i for items in written.values() for i in items], "v6")
        assert again.counts == {f"duplicate.{k}": 6 for k in ("receipt", "ack", "escalation")}
        new = await store.write(conn, live_items(topics, "a-new", "car-1", old.from_ns + 7), "v6")
        assert new.counts == {f"stored.{k}": 1 for k in ("receipt", "ack", "escalation")}
        assert rows(
            postgres, "SELECT tableoid::regclass::text FROM acks WHERE activation_id = 'a-new'"
        ) == [(old.partition("acks"),)]
    finally:
        await conn.close()


async def test_the_archiver_creates_months_ahead_and_a_far_future_record_is_kept(
    mosquitto: MosquittoProcess, topics: Topics, postgres: str
) -> None:
    async with running_archivers(mosquitto.url, topics, postgres, names=("arch-a",)):
        conn = await connect(postgres)
        try:
            months = await partitions.existing_months(conn)
            expected = partitions.months_ahead(time.time_ns())
            assert set(expected) <= set(months)
            # Each month ahead is a partition of every partitioned table, the live ones too.
            have = await partitions.existing_partitions(conn)
            assert all(have[m] == frozenset(PARTITIONED) for m in expected), have
            far = time.time_ns() + 400 * 86_400 * NS  # an edge clock a year ahead
            records = chain_at([far])
            await store.write(conn, [batch_item(topics, "edge-9", records)], "t")  # type: ignore[list-item]
            assert [r.hash for r in await store.read_log(conn, "edge-9")] == [records[0].hash]
            # A year later the archiver would create that month: the default partition holds
            # a log record of it, so the log tables' partitions of it are not created
            # (logged), the live tables' are, the next months are whole, and the row stays.
            created = await partitions.ensure_ahead(conn, far)
            month = Month.of_ns(far)
            assert created == [month.label, month.next().label, month.next().next().label]
            have = await partitions.existing_partitions(conn)
            assert have[month] == frozenset({"receipts", "acks", "escalations"}), have
            assert have[month.next()] == have[month.next().next()] == frozenset(PARTITIONED)
            assert [r.hash for r in await store.read_log(conn, "edge-9")] == [records[0].hash]
            # An ack two years ahead (a camera's clock, or a stolen camera credential) in
            # acks' default keeps that month from being created in acks only: the other
            # tables get theirs, and retention can drop them as any other month.
            later = time.time_ns() + 800 * 86_400 * NS
            result = await store.write(
                conn, live_items(Topics("mesh/v2"), "a-9", "car-9", later, kinds=("ack",)), "t"
            )
            assert result.counts["stored.ack"] == 1, result.counts
            assert Month.of_ns(later).label in await partitions.ensure_ahead(conn, later)
            have = await partitions.existing_partitions(conn)
            assert have[Month.of_ns(later)] == frozenset(PARTITIONED) - {"acks"}, have
            assert rows(postgres, "SELECT tableoid::regclass::text FROM acks") == [
                ("acks_default",)
            ]
        finally:
            await conn.close()


async def test_retention_drops_old_months_but_never_a_held_row(postgres: str) -> None:
    """Four old months of two units' logs; holds on an activation, a unit and a time range.
    Retention (--keep-days 30) drops only the month no hold covers, and a dry run nothing;
    after a release the next run drops that month too. Every step is in retention_runs."""
    topics = Topics("mesh/v2")
    m1, m2, m3, m4 = Month(2025, 1), Month(2025, 2), Month(2025, 3), Month(2025, 4)
    conn = await connect(postgres)
    try:
        await migrate(conn)
        with psycopg.connect(postgres, autocommit=True) as sync_conn:
            for m in (m1, m2, m3, m4):
                for table in partitions.PARTITIONED:
                    sync_conn.execute(
                        f"CREATE TABLE {m.partition(table)} PARTITION OF {table}"
                        f" FOR VALUES FROM ({m.from_ns}) TO ({m.to_ns})"
                    )
        # edge-a (unit car-a): months 1, 2, 3; its record in month 2 is activation a-77's.
        a = chain_at([m1.from_ns + 1, m2.from_ns + 1, m3.from_ns + 1])
        a[1] = a[1]  # (kind resumed; the activation id is set below with a fresh hash)
        held = LogBatchRecord(
            seq=2,
            prev_seq=1,
            at_ns=m2.from_ns + 1,
            kind="activation",
            activation_id="a-77",
            body="{}",
            prev_hash=a[0].hash,
            hash=record_hash(
                a[0].hash, 2, m2.from_ns + 1, kind="activation", activation_id="a-77", body="{}"
            ),
        )
        third = LogBatchRecord(
            seq=3,
            prev_seq=2,
            at_ns=m3.from_ns + 1,
            kind="resumed",
            body="{}",
            prev_hash=held.hash,
            hash=record_hash(
                held.hash, 3, m3.from_ns + 1, kind="resumed", activation_id=None, body="{}"
            ),
        )
        batch_a = LogBatch(
            log_id="edge-a", unit_id="car-a", head_seq=3, sent_at_ns=1, records=(a[0], held, third)
        )
        # edge-b (unit car-b): month 4 only.
        batch_b = LogBatch(
            log_id="edge-b",
            unit_id="car-b",
            head_seq=1,
            sent_at_ns=1,
            records=tuple(chain_at([m4.from_ns + 1])),
        )
        from mesh.archive.intake import accept

        for b in (batch_a, batch_b):
            item = accept(topics, topics.log_records(b.log_id, b.gateway_id), encode(b))
            assert item is not None
            await store.write(conn, [item], "t")
    finally:
        await conn.close()

    db = ("--db", postgres)
    code, out = await cli(
        "archiver",
        "hold",
        "place",
        *db,
        "--activation",
        "a-77",
        "--reason",
        "case 17",
        "--by",
        "clerk",
    )
    assert code == 0, out
    assert "hold 1 placed" in out, out
    code, out = await cli(
        "archiver", "hold", "place", *db, "--unit", "car-b", "--reason", "case 18", "--by", "clerk"
    )
    assert code == 0, out
    code, out = await cli(
        "archiver",
        "hold",
        "place",
        *db,
        "--from",
        "2025-03-10T00:00:00Z",
        "--to",
        "2025-03-11T00:00:00Z",
        "--reason",
        "case 19",
        "--by",
        "clerk",
    )
    assert code == 0, out
    code, out = await cli(
        "archiver", "hold", "place", *db, "--unit", "car-b", "--activation", "a-1", "--reason", "x"
    )
    assert code == 2, out
    assert "exactly one" in out, out

    def months_held() -> list[str]:
        return sorted(
            str(r[0])
            for r in rows(
                postgres,
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = 'log_records'::regclass AND c.relname LIKE '%%2025%%'",
            )
        )

    code, out = await cli("archiver", "retention", *db, "--keep-days", "30", "--dry-run")
    assert code == 0, out
    assert "2025-01: would drop, 1 rows" in out
    assert "2025-02: would keep for hold, 1 rows (holds 1)" in out
    assert months_held() == [f"log_records_p2025{m:02d}" for m in (1, 2, 3, 4)]

    code, out = await cli("archiver", "retention", *db, "--keep-days", "30", "--by", "ops")
    assert code == 0, out
    assert "2025-01: dropped, 1 rows" in out
    assert "2025-03: kept for hold, 1 rows (holds 3)" in out
    assert "2025-04: kept for hold, 1 rows (holds 2)" in out
    assert months_held() == ["log_records_p202502", "log_records_p202503", "log_records_p202504"]
    assert rows(postgres, "SELECT seq FROM log_records WHERE activation_id = 'a-77'") == [(2,)]
    assert rows(postgres, "SELECT month, action, run_by FROM retention_runs ORDER BY id") == [
        ("202501", "dropped", "ops"),
        ("202502", "kept_for_hold", "ops"),
        ("202503", "kept_for_hold", "ops"),
        ("202504", "kept_for_hold", "ops"),
    ]

    # Releasing the activation's hold frees its month (and only it).
    code, out = await cli("archiver", "hold", "release", "1", *db, "--by", "judge")
    assert code == 0, out
    code, out = await cli("archiver", "hold", "release", "1", *db)
    assert code == 1, out
    assert "no active hold 1" in out, out
    code, out = await cli("archiver", "hold", "list", *db, "--all")
    assert "hold 1 (activation a-77: case 17)" in out, out
    assert "by judge" in out, out
    code, out = await cli("archiver", "retention", *db, "--keep-days", "30")
    assert code == 0, out
    assert months_held() == ["log_records_p202503", "log_records_p202504"]
    # The archive's copy of edge-a now starts at its record 3: verify says why.
    code, out = await cli("archiver", "verify", *db, "--log-id", "edge-a")
    assert code == 1, out
    assert "the archive's retention dropped the months 2025-01, 2025-02" in out, out
    assert rows(postgres, "SELECT count(*) FROM log_records WHERE log_id = 'edge-b'") == [(1,)]


async def test_retention_drops_a_month_of_every_table_together_and_holds_cover_live_rows(
    postgres: str,
) -> None:
    """Five old months. The first holds a log record and an activation's receipt, ack and
    escalation, which no hold covers: retention drops all five tables' partitions of it
    together. Each other month holds one live row only, covered by one hold: on its
    activation (a receipt, an ack), on its unit (an escalation), on the unit of its
    activation (an ack that names no unit): each is kept, until its hold is released."""
    topics = Topics("mesh/v2")
    m1, m2, m3, m4, m5 = (Month(2025, m) for m in range(1, 6))
    conn = await connect(postgres)
    try:
        await migrate(conn)
        for m in (m1, m2, m3, m4, m5):
            for table in PARTITIONED:
                await conn.execute(
                    f"CREATE TABLE {m.partition(table)} PARTITION OF {table}"
                    f" FOR VALUES FROM ({m.from_ns}) TO ({m.to_ns})".encode()
                )
        await conn.execute(
            "INSERT INTO activations (activation_id, issuer, unit_id, kind, trigger_event_id,"
            " state, decided_at_ns, rank_stage, rank_answered, payload, archived_by)"
            " VALUES ('a-3', 'gw-1', 'car-c', 'manual', 'ev-3', 'confirmed', 1, 0, 0, '{}', 't')"
        )
        log = batch_item(topics, "edge-a", chain_at([m1.from_ns + 1]))
        assert isinstance(log, Item)
        items = [
            log,
            *live_items(topics, "a-1", "car-a", m1.from_ns + 5, ack_unit="car-a"),
            *live_items(topics, "a-2", "car-b", m2.from_ns + 5, kinds=("receipt",)),
            *live_items(topics, "a-3", "car-x", m3.from_ns + 5, kinds=("ack",)),
            *live_items(topics, "a-4", "car-d", m4.from_ns + 5, kinds=("escalation",)),
            *live_items(topics, "a-5", "car-x", m5.from_ns + 5, ack_unit="car-x", kinds=("ack",)),
        ]
        result = await store.write(conn, items, "t")
        stored = {k: v for k, v in result.counts.items() if k.startswith("stored.")}
        assert stored == {
            "stored.log_batch": 1,
            "stored.log_record": 1,
            "stored.receipt": 2,
            "stored.ack": 3,
            "stored.escalation": 2,
        }, result.counts
        holds = {
            m2: await partitions.place_hold(conn, reason="r2", by="clerk", activation_id="a-2"),
            m3: await partitions.place_hold(conn, reason="r3", by="clerk", unit_id="car-c"),
            m4: await partitions.place_hold(conn, reason="r4", by="clerk", unit_id="car-d"),
            m5: await partitions.place_hold(conn, reason="r5", by="clerk", activation_id="a-5"),
        }

        async def run() -> list[tuple[Month, str, int, tuple[int, ...]]]:
            done = await partitions.retention(
                conn, now_ns=time.time_ns(), keep_days=30, run_by="ops"
            )
            return [(o.month, o.action, o.rows, o.held_by) for o in done if o.month.year == 2025]

        assert await run() == [
            (m1, "dropped", 4, ()),
            *((m, "kept_for_hold", 1, (holds[m],)) for m in (m2, m3, m4, m5)),
        ]
        have = await partitions.existing_partitions(conn)
        assert m1 not in have
        assert all(have[m] == frozenset(PARTITIONED) for m in (m2, m3, m4, m5))
        assert rows(postgres, "SELECT count(*) FROM receipts WHERE activation_id = 'a-1'") == [(0,)]
        assert rows(postgres, "SELECT count(*) FROM acks WHERE activation_id = 'a-1'") == [(0,)]
        assert rows(postgres, "SELECT count(*) FROM escalations WHERE activation_id = 'a-1'") == [
            (0,)
        ]
        assert count(postgres, "log_records") == 0
        assert rows(postgres, "SELECT detail FROM retention_runs WHERE month = '202501'") == [
            (
                "older than 30 days; rows: log_records 1, presence_repeats 0, receipts 1,"
                " acks 1, escalations 1",
            )
        ]

        # Released, the receipt's hold no longer keeps its month: all five partitions go.
        assert await partitions.release_hold(conn, holds[m2], by="judge")
        assert await run() == [
            (m2, "dropped", 1, ()),
            *((m, "kept_for_hold", 1, (holds[m],)) for m in (m3, m4, m5)),
        ]
        have = await partitions.existing_partitions(conn)
        assert m2 not in have
        assert all(have[m] == frozenset(PARTITIONED) for m in (m3, m4, m5))
        assert count(postgres, "receipts") == 0
        assert count(postgres, "acks") == 2
        assert count(postgres, "escalations") == 1
    finally:
        await conn.close()


async def test_retention_deletes_a_dropped_month_s_activations_and_triggers_but_held_ones(
    postgres: str,
) -> None:
    """activations and triggers are not partitioned: once retention has dropped a month,
    their rows dated before its end go by DELETE, in batches, without locking the tables.
    Going: a-1 and its trigger, a suppressed trigger, and a-0 of a month that never had
    partitions (before them, or dropped before this). Staying: a-2 (held by id) and its
    trigger, and ev-6, merged into a-2 (its receipt names a-2); a-3 (its unit held; no
    partitioned row of the month names it, so the hold does not keep the month) and its
    trigger; ev-4, while its activation (decided the next month, which a time hold keeps)
    stays, but not ev-1 for a-9 of another unit naming it; ev-7, archived only now (a
    sensor's clock set back). A dry run counts the same and deletes nothing."""
    m1, m2 = Month(2025, 1), Month(2025, 2)
    before = Month(2024, 6)
    conn = await connect(postgres)
    try:
        await migrate(conn)
        for m in (m1, m2):
            for table in PARTITIONED:
                await conn.execute(
                    f"CREATE TABLE {m.partition(table)} PARTITION OF {table}"
                    f" FOR VALUES FROM ({m.from_ns}) TO ({m.to_ns})".encode()
                )
        old = "now() - interval '60 days'"
        activations = [
            ("a-0", "car-a", "ev-0", before.from_ns + 5),
            ("a-1", "car-a", "ev-1", m1.from_ns + 5),
            ("a-2", "car-b", "ev-2", m1.from_ns + 5),
            ("a-3", "car-c", "ev-3", m1.from_ns + 5),
            ("a-4", "car-a", "ev-4", m2.from_ns + 5),
            ("a-9", "car-z", "ev-1", m2.from_ns + 5),
        ]
        for aid, unit, ev, at in activations:
            await conn.execute(
                "INSERT INTO activations (activation_id, issuer, unit_id, kind,"
                " trigger_event_id, state, decided_at_ns, rank_stage, rank_answered, payload,"
                f" archived_by, archived_at) VALUES (%s, 'gw', %s, 'manual', %s, 'confirmed',"
                f" %s, 1, 0, '{{}}', 't', {old})".encode(),
                (aid, unit, ev, at),
            )
        triggers = [
            (ev, unit, old)
            for ev, unit in [
                ("ev-1", "car-a"),
                ("ev-2", "car-b"),
                ("ev-3", "car-c"),
                ("ev-4", "car-a"),
                ("ev-5", "car-a"),
                ("ev-6", "car-a"),
            ]
        ] + [("ev-7", "car-a", "now()")]
        for ev, unit, archived_at in triggers:
            await conn.execute(
                "INSERT INTO triggers (event_id, unit_id, kind, source_type, source_id,"
                " observed_at_ns, payload, archived_by, archived_at) VALUES (%s, %s, 'manual',"
                f" 'ble', 's', %s, '{{}}', 't', {archived_at})".encode(),
                (ev, unit, m1.from_ns + 1),
            )
        await conn.execute(
            "INSERT INTO receipts (event_id, at_ns, unit_id, outcome, activation_id, reason,"
            " payload, archived_by) VALUES ('ev-6', %s, 'car-a', 'suppressed', 'a-2', '',"
            " '{}', 't')",
            (m2.from_ns + 7,),
        )
        await partitions.place_hold(conn, reason="r", by="clerk", activation_id="a-2")
        await partitions.place_hold(conn, reason="r", by="clerk", unit_id="car-c")
        await partitions.place_hold(
            conn, reason="r", by="clerk", from_ns=m2.from_ns + 1, to_ns=m2.from_ns + 2
        )

        async def run(dry_run: bool) -> list[tuple[Month, str, dict[str, int]]]:
            done = await partitions.retention(
                conn, now_ns=time.time_ns(), keep_days=30, run_by="ops", dry_run=dry_run
            )
            return [(o.month, o.action, dict(o.deleted)) for o in done if o.month.year == 2025]

        going = {"activations": 2, "triggers": 2}
        assert await run(dry_run=True) == [
            (m1, "would_drop", going),
            (m2, "would_keep_for_hold", {}),
        ]
        assert count(postgres, "activations") == 6
        assert count(postgres, "triggers") == 7
        assert await run(dry_run=False) == [(m1, "dropped", going), (m2, "kept_for_hold", {})]
        assert rows(postgres, "SELECT activation_id FROM activations ORDER BY 1") == [
            ("a-2",),
            ("a-3",),
            ("a-4",),
            ("a-9",),
        ]
        assert rows(postgres, "SELECT event_id FROM triggers ORDER BY 1") == [
            ("ev-2",),
            ("ev-3",),
            ("ev-4",),
            ("ev-6",),
            ("ev-7",),
        ]
        assert rows(
            postgres, "SELECT action, rows, detail FROM retention_runs WHERE month = '202501'"
        ) == [
            (
                "dropped",
                0,
                "older than 30 days; rows: log_records 0, presence_repeats 0, receipts 0,"
                " acks 0, escalations 0",
            ),
            (
                "deleted",
                4,
                "not partitioned, dated before the month's end, no hold: activations 2, triggers 2",
            ),
        ]
    finally:
        await conn.close()


def test_retention_goes_by_the_database_s_clock_not_the_machine_s(
    postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The operator's machine runs `archiver retention --keep-days 30` with its clock five
    years ahead (a dead clock battery, a wrong time server): this month, which holds a
    record, is kept, because the cutoff comes from PostgreSQL's clock."""
    from typer.testing import CliRunner

    from mesh.cli.app import app

    now = time.time_ns()
    this_month = Month.of_ns(now)

    async def set_up() -> None:
        conn = await connect(postgres)
        try:
            await migrate(conn)
            await partitions.ensure_ahead(conn, now)
            await store.write(conn, [batch_item(Topics("mesh/v2"), "edge-a", chain_at([now]))], "x")
        finally:
            await conn.close()

    asyncio.run(set_up())
    real_time_ns = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real_time_ns() + 5 * 365 * 86_400 * 10**9)
    result = CliRunner().invoke(
        app, ["archiver", "retention", "--db", postgres, "--keep-days", "30", "--by", "ops"]
    )
    monkeypatch.undo()
    assert result.exit_code == 0, result.output
    assert "nothing older than 30 days" in result.output, result.output
    assert rows(postgres, "SELECT count(*) FROM log_records") == [(1,)]
    assert this_month.partition("log_records") in {
        str(r[0])
        for r in rows(
            postgres,
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'log_records'::regclass",
        )
    }


async def test_a_held_row_written_while_retention_runs_keeps_its_month(postgres: str) -> None:
    """The race of a hold check: a row of an expired month that a hold covers, written by
    an archiver while retention is deciding that month (a car back after months away,
    its unit on hold). Retention locks the partitioned tables before it looks for holds,
    so it waits for the write, sees the row, and keeps the month; checking first and
    dropping after, it dropped the row."""
    topics = Topics("mesh/v2")
    month = Month(2025, 3)
    conn = await connect(postgres)
    writer = await connect(postgres)
    try:
        await migrate(conn)
        for table in PARTITIONED:
            await conn.execute(
                f"CREATE TABLE {month.partition(table)} PARTITION OF {table}"
                f" FOR VALUES FROM ({month.from_ns}) TO ({month.to_ns})".encode()
            )
        hold = await partitions.place_hold(conn, reason="case 9", by="clerk", unit_id="car-7")
        # The archiver's write of the held unit's receipt, not yet committed.
        await writer.set_autocommit(False)
        await writer.execute("SELECT 1")  # an open transaction: the write is a savepoint in it
        written = await store.write(
            writer, live_items(topics, "a-7", "car-7", month.from_ns + 5, kinds=("receipt",)), "t"
        )
        assert written.counts["stored.receipt"] == 1, written.counts
        runner = await connect(postgres)
        try:
            retention = asyncio.ensure_future(
                partitions.retention(runner, now_ns=time.time_ns(), keep_days=30, run_by="ops")
            )
            pid = runner.info.backend_pid

            def waiting() -> bool:
                return bool(
                    rows(postgres, "SELECT 1 FROM pg_locks WHERE pid = %s AND NOT granted", (pid,))
                )

            # Retention is blocked by the write (taking its lock, or dropping the month).
            await wait_until(lambda: waiting() or retention.done(), 30)
            assert not retention.done()
            await writer.commit()
            done = await retention
        finally:
            await runner.close()
        assert [(o.month, o.action, o.held_by) for o in done if o.month == month] == [
            (month, "kept_for_hold", (hold,))
        ]
        assert rows(postgres, "SELECT count(*) FROM receipts WHERE activation_id = 'a-7'") == [(1,)]
    finally:
        await writer.close()
        await conn.close()


async def test_two_archivers_storing_batches_out_of_order_lose_nothing(
    mosquitto: MosquittoProcess, topics: Topics, postgres: str, tmp_path: Path
) -> None:
    """Small batches split between two archivers arrive in any order: what is folded may
    differ, but the copy is the edge log, record for record."""
    path = tmp_path / "gw.db"
    key = Ed25519PrivateKey.generate()
    await heartbeat_log(path, CheckpointSigner(key), 30, time.time_ns() - 3600 * NS)
    log_id = log_id_of(path)
    edge = [(r.seq, r.hash, r.body) for r in list(read_records(path))]
    async with running_archivers(mosquitto.url, topics, postgres) as archivers:
        sync = LogSync(
            path,
            url=mosquitto.url,
            topics=topics,
            unit_id="car-1",
            gateway_id="gw-1",
            batch_records=2,
        )
        result = await sync.sync(30)
        assert result.complete, result
        for archiver in archivers:
            assert archiver.counters["stored.log_record"] > 0, archiver.counters
    assert count(postgres, "presence_repeats") > 0
    assert count(postgres, "presence_repeats") + count(postgres, "log_records") == len(edge)
    copy = await central_copy(postgres, log_id)
    assert [(r.seq, r.hash, r.body) for r in copy] == edge
    report = verify_chain(copy, log_id=log_id, public_key=key.public_key(), central_copy=True)
    assert report.ok, report.summary()


def presence_chain(beats: int, t0: int) -> list[LogBatchRecord]:
    """Presence records of CAMERAS at every heartbeat (bwc-1 recording from the second
    half on), a valid chain: most fold against their camera's previous record."""
    out: list[LogBatchRecord] = []
    prev, seq = GENESIS, 0
    for beat in range(beats):
        t = t0 + beat * 30 * NS
        for camera in CAMERAS:
            seq += 1
            body = presence(camera, t, recording=camera == "bwc-1" and beat >= beats // 2)
            h = record_hash(prev, seq, t, kind="presence", activation_id=None, body=body)
            out.append(
                LogBatchRecord(
                    seq=seq,
                    prev_seq=seq - 1,
                    at_ns=t,
                    kind="presence",
                    body=body,
                    prev_hash=prev,
                    hash=h,
                )
            )
            prev = h
    return out


async def test_a_group_of_one_logs_batches_stores_what_they_store_one_at_a_time(
    postgres: str,
) -> None:
    """store.write takes a log's batches of a group together (one lookup, one COPY, one
    watermark): what it leaves must be what writing them one by one, in the same order,
    leaves: folding across batches, records repeated between batches of the group and
    from before it, a conflict with a batch of the group, relinks of both kinds."""
    topics = Topics("mesh/v2")
    records = presence_chain(8, time.time_ns() - 3600 * NS)  # 24 records
    twelve = records[11]
    body = presence("dash-1", twelve.at_ns, recording=True)  # another content, its own hash
    digest = record_hash(
        twelve.prev_hash, 12, twelve.at_ns, kind="presence", activation_id=None, body=body
    )
    forged = twelve.model_copy(update={"body": body, "hash": digest})
    first = [records[0:3]]  # stored before the group
    group = [
        records[0:6],  # 1-3 already stored
        records[4:12],  # 5-6 in the batch before
        records[12:18],
        [forged],  # 12 differs from the batch before's
        [records[4].model_copy(update={"prev_seq": 3})],  # relinks a record of the group
        [records[14].model_copy(update={"prev_seq": 12})],  # and one of a later batch
        [records[1].model_copy(update={"prev_seq": 0})],  # relinks one stored before
        records[20:24],  # after a hole (19-20 missing): the watermark stops at 18
    ]
    conn = await connect(postgres)
    try:
        await migrate(conn)
        counts: dict[str, Counter[str]] = {"one": Counter(), "all": Counter()}
        for log_id in ("one", "all"):
            for part in first:
                await store.write(conn, [batch_item(topics, log_id, part)], "t")  # type: ignore[list-item]
        ordered = sorted(group, key=lambda part: part[0].seq)  # as store.write orders them
        for part in ordered:
            result = await store.write(conn, [batch_item(topics, "one", part)], "t")  # type: ignore[list-item]
            counts["one"].update(result.counts)
        result = await store.write(conn, [batch_item(topics, "all", p) for p in group], "t")  # type: ignore[misc]
        counts["all"].update(result.counts)
        assert [p.synced_seq for p in result.logs] == [18]
    finally:
        await conn.close()

    assert counts["one"] == counts["all"]
    assert counts["all"]["folded.log_record"] > 0
    assert counts["all"]["conflict.log_record"] == 1
    assert counts["all"]["relinked.log_record"] == 3
    assert counts["all"]["duplicate.log_record"] == 5  # 1-3 and 5-6

    def stored(log_id: str) -> dict[str, list[tuple[object, ...]]]:
        no = "(SELECT log_no FROM logs WHERE log_id = %s)"
        return {
            "logs": rows(
                postgres, "SELECT synced_seq, head_seq FROM logs WHERE log_id = %s", (log_id,)
            ),
            "full": rows(
                postgres,
                "SELECT seq, prev_seq, at_ns, kind, body, prev_hash, hash FROM log_records"
                " WHERE log_id = %s ORDER BY seq",
                (log_id,),
            ),
            "folded": rows(
                postgres,
                "SELECT seq, prev_seq, at_ns, base_seq, head, tail, middle, prev_hash, hash"
                f" FROM presence_repeats WHERE log_no = {no} ORDER BY seq",
                (log_id,),
            ),
            "bases": rows(
                postgres,
                "SELECT camera_id, seq, at_ns, body FROM presence_bases WHERE log_id = %s"
                " ORDER BY camera_id",
                (log_id,),
            ),
            "conflicts": rows(
                postgres,
                "SELECT split_part(subject, ':', 2), code, copies FROM conflicts"
                " WHERE kind = 'log_record' AND split_part(subject, ':', 1) = %s"
                " ORDER BY subject",
                (log_id,),
            ),
        }

    one, together = stored("one"), stored("all")
    assert one == together
    assert len(together["full"]) + len(together["folded"]) == 22
    assert together["conflicts"] == [("12", "differs", 1)]
