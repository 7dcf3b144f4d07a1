"""The archivers as a JetStream consumer group (docs/archive.md § On a NATS cluster), on a
real 3-node NATS cluster from the generated configs (TLS, the archiver's least-privilege
user), the real PostgreSQL and, where the path matters, the car's real mosquitto bridged to
the cluster's MQTT listeners.

Two archivers share one durable pull consumer and every record lands once; an archiver
SIGKILLed after its fetch and before its ack: the other gets the redelivery; a backlog
published while no archiver runs is archived when they start; a poison message is
terminated and counted; a message id makes a resend a duplicate in the stream; the stream's
byte limit drops the oldest; a failing write is delivered at most max_deliver times; a
stopped archiver hands back what it holds; a log batch's watermark comes back to the car;
a stolen archiver credential cannot publish into the stream, manage it, make a consumer of
its own or read MQTT clients' deliveries. Nothing waits a fixed time, except where the
claim is about time (no redelivery within two ack waits while a message is held).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest

from bridge.broker.nats import ADMIN_USER, ARCHIVE_CONSUMER, ARCHIVE_STREAM, mqtt_subjects
from bridge.mqtt.client import LinkOptions, MqttLink
from bridge.topics import Topics
from mesh.archive.archiver import Archiver, ArchiverSettings
from mesh.archive.db import connect as pg_connect
from mesh.archive.jetstream import (
    JetStreamSource,
    NatsLogin,
    StreamSettings,
    archive_subjects,
    cluster_login,
    connect,
    ensure_archive,
)
from mesh.archive.migrate import migrate
from mesh.journal.chain import GENESIS, record_hash
from mesh.protocol.codec import encode
from mesh.protocol.log_wire import LogBatch, LogBatchRecord
from mesh.protocol.models import TriggerEvent
from tests.harness import event, wait_until
from tests.integration.test_nats_cluster import _bridge_on, car_broker, publisher, spy
from tests.integration.test_nats_cluster import _until as until
from tests.nats_tools import (
    ARCHIVER,
    DISPATCH,
    GW,
    UNIT,
    RunningCluster,
    archiver_process,
    others_heard,
)

nats = pytest.importorskip("nats")


# --- helpers ------------------------------------------------------------------------------
def count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[arg-type]
        assert row is not None
        return int(row[0])


def login(cluster: RunningCluster, user: str, first: int = 0) -> NatsLogin:
    return cluster_login(cluster.layout.central, user, first)


def topics_of(cluster: RunningCluster) -> Topics:
    return Topics(cluster.layout.car.spec.prefix)


@asynccontextmanager
async def admin(cluster: RunningCluster) -> AsyncIterator[Any]:
    nc = await connect(login(cluster, ADMIN_USER))
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def make_archive(cluster: RunningCluster, settings: StreamSettings) -> None:
    async with admin(cluster) as js:
        await until(lambda: ensure_archive(js, topics_of(cluster), settings), 30, "the stream")

        async def led() -> None:
            info = await js.consumer_info(settings.stream, settings.consumer)
            assert info.cluster is not None
            assert info.cluster.leader

        await until(led, 30, "the consumer's leader")

        # The stream's leader tells the other nodes of its subjects after it is made; a
        # publish at a node that has not heard yet finds no responder (CI: NoRespondersError).
        subjects = set(archive_subjects(topics_of(cluster)))
        nodes = cluster.layout.central.nodes

        async def heard() -> None:
            info = await js.stream_info(settings.stream)
            assert info.cluster is not None
            leader = {i for i, node in enumerate(nodes) if node.name == info.cluster.leader}
            assert others_heard(cluster, subjects, but=leader)

        await until(heard, 30, "every node knowing the stream's subjects")


async def consumer_state(cluster: RunningCluster) -> Any:
    async with admin(cluster) as js:
        return await js.consumer_info(ARCHIVE_STREAM, ARCHIVE_CONSUMER)


async def stream_messages(cluster: RunningCluster) -> int:
    async with admin(cluster) as js:
        info = await js.stream_info(ARCHIVE_STREAM)
        return int(info.state.messages)


def jetstream_archiver(
    cluster: RunningCluster, dsn: str, name: str, node: int, **options: Any
) -> Archiver:
    central = cluster.layout.central
    watermarks = MqttLink(
        central.mqtt_url(ARCHIVER, node=node),
        LinkOptions(f"t-{name}-{uuid.uuid4().hex[:6]}", persistent_session=False, protocol="3.1.1"),
    )
    source = JetStreamSource(
        login(cluster, ARCHIVER, first=node), StreamSettings(), watermarks, **options
    )
    settings = ArchiverSettings(
        dsn=dsn, archiver_id=name, topics=topics_of(cluster), retry_max_s=0.5
    )
    return Archiver(settings, source=source)


@asynccontextmanager
async def running(archivers: Sequence[Archiver]) -> AsyncIterator[None]:
    tasks = [asyncio.create_task(a.run()) for a in archivers]
    try:
        for archiver in archivers:
            await asyncio.wait_for(archiver.ready.wait(), 30)
        yield
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def bridge_up(cluster: RunningCluster) -> None:
    """The car's bridge connected and subscribed at some node (its MQTT session's streams
    are made on 3 replicas first: seconds, more on a loaded machine)."""
    await wait_until(lambda: any(_bridge_on(cluster, i) for i in range(3)), 90)


def triggers(n: int) -> list[TriggerEvent]:
    return [event(source_id=f"src-{i}") for i in range(n)]


async def publish_natively(
    cluster: RunningCluster, payloads: Sequence[bytes], topic: str | None = None
) -> None:
    """Publish on ``topic`` (the unit's trigger topic if None) with the operator's NATS
    credential, each acknowledged by the stream. As a JetStream publisher must: with a
    message id, sent again until acknowledged (right after the stream is made, a node may
    not yet know of its subjects: no responders), a repeat being a duplicate, not a second
    message."""
    subject = mqtt_subjects(topic or topics_of(cluster).trigger(UNIT))[0]
    async with admin(cluster) as js:
        for payload in payloads:
            headers = {"Nats-Msg-Id": hashlib.sha256(payload).hexdigest()}
            await until(
                lambda p=payload, h=headers: js.publish(subject, p, timeout=5, headers=h),
                30,
                "a publish acknowledged by the stream",
            )


# --- the consumer group -------------------------------------------------------------------
async def test_two_archivers_share_the_consumer_and_every_record_lands_once(
    nats_cluster: RunningCluster, postgres: str
) -> None:
    """Triggers published in the car go through its mosquitto bridge into the cluster's
    MQTT listener, into the stream (its subjects are the MQTT topics'), and out through the
    one consumer to two archivers on different nodes: both store some, each trigger is
    stored once, and the stream is empty after (a work queue: acknowledged is removed)."""
    n = 400
    await make_archive(nats_cluster, StreamSettings())
    sent = triggers(n)
    a = jetstream_archiver(nats_cluster, postgres, "arch-a", 0, fetch_max=20)
    b = jetstream_archiver(nats_cluster, postgres, "arch-b", 1, fetch_max=20)
    car = nats_cluster.layout.car
    async with (
        running([a, b]),
        car_broker(nats_cluster),
        publisher(car.url_for(GW)) as gateway,
    ):
        await bridge_up(nats_cluster)
        for trigger in sent:
            await gateway.publish(topics_of(nats_cluster).trigger(UNIT), encode(trigger))
        await wait_until(lambda: count(postgres, "triggers") >= n, 60)
        state = await consumer_state(nats_cluster)
    assert count(postgres, "triggers") == n
    assert a.counters["stored.trigger"] > 0, a.counters
    assert b.counters["stored.trigger"] > 0, b.counters
    assert a.counters["stored.trigger"] + b.counters["stored.trigger"] == n
    assert not any(k.startswith(("rejected", "dropped")) for x in (a, b) for k in x.counters)
    assert state.num_ack_pending == 0
    assert state.num_pending == 0
    assert await stream_messages(nats_cluster) == 0


async def test_a_backlog_waits_in_the_stream_while_no_archiver_runs(
    nats_cluster: RunningCluster, postgres: str
) -> None:
    """All archivers down: what the car sends is kept by the stream (3 replicas); two
    archivers started later store all of it, once."""
    n = 200
    await make_archive(nats_cluster, StreamSettings())
    car = nats_cluster.layout.car
    async with car_broker(nats_cluster), publisher(car.url_for(GW)) as gateway:
        await bridge_up(nats_cluster)
        for trigger in triggers(n):
            await gateway.publish(topics_of(nats_cluster).trigger(UNIT), encode(trigger))

        async def held() -> None:
            assert await stream_messages(nats_cluster) == n

        await until(held, 60, "the backlog in the stream")
    a = jetstream_archiver(nats_cluster, postgres, "arch-a", 2)
    b = jetstream_archiver(nats_cluster, postgres, "arch-b", 0)
    async with running([a, b]):
        await wait_until(lambda: count(postgres, "triggers") >= n, 60)
        await wait_until(lambda: a.counters["stored.trigger"] + b.counters["stored.trigger"] == n)
    assert count(postgres, "triggers") == n
    assert await stream_messages(nats_cluster) == 0


def _stream_command(cluster: RunningCluster, *extra: str) -> subprocess.CompletedProcess[str]:
    central = cluster.layout.central
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mesh",
            "archiver",
            "stream",
            "--nats",
            ",".join(central.nats_url(i) for i in range(3)),
            "--nats-password-file",
            str(central.credentials[ADMIN_USER]),
            "--nats-ca",
            str(central.ca_cert),
            "--prefix",
            cluster.layout.car.spec.prefix,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _waiting_on_lock(dsn: str, name: str) -> bool:
    """Whether archiver ``name``'s session waits for a lock (its insert is blocked)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            " AND wait_event_type = 'Lock'",
            (f"trigger-mesh archiver {name}",),
        ).fetchone()
        return row is not None and int(row[0]) > 0


async def test_an_archiver_killed_after_fetch_before_ack_loses_nothing(
    nats_cluster: RunningCluster, postgres: str
) -> None:
    """Archiver A (the real CLI, a process) fetches every message and blocks in its
    PostgreSQL insert (the test holds a lock on the table). While it holds them, they are
    not redelivered (it says every ack_wait/3 that it works on them). Then SIGKILL: no ack
    was sent, its transaction dies with its connection. Archiver B gets every message
    again after ack_wait and stores each once."""
    ack_wait = 2.0
    made = _stream_command(nats_cluster, "--ack-wait", str(ack_wait))
    assert made.returncode == 0, made.stderr
    assert "stream MESH_ARCHIVE created, consumer archivers created" in made.stdout
    again = _stream_command(nats_cluster, "--ack-wait", str(ack_wait))
    assert again.returncode == 0, again.stderr
    assert "stream MESH_ARCHIVE updated, consumer archivers updated" in again.stdout
    n = 50
    async with await pg_connect(postgres) as conn:
        await migrate(conn)
    blocker = psycopg.connect(postgres)
    proc = None
    try:
        blocker.execute("LOCK TABLE triggers IN ACCESS EXCLUSIVE MODE")
        proc = archiver_process(nats_cluster, postgres, "arch-a", stderr=subprocess.PIPE)
        await publish_natively(nats_cluster, [encode(t) for t in triggers(n)])

        async def all_fetched() -> None:
            state = await consumer_state(nats_cluster)
            assert state.num_ack_pending == n, state
            assert _waiting_on_lock(postgres, "arch-a")

        await until(all_fetched, 60, "archiver A holding every message")
        loop = asyncio.get_running_loop()
        held_since = loop.time()
        await wait_until(lambda: loop.time() - held_since > 2 * ack_wait, 3 * ack_wait)
        state = await consumer_state(nats_cluster)
        assert state.num_redelivered == 0, state  # held, not handed to anyone else
        assert state.num_ack_pending == n

        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        blocker.rollback()
        b = jetstream_archiver(nats_cluster, postgres, "arch-b", 1)
        async with running([b]):
            await wait_until(lambda: count(postgres, "triggers") >= n, 30)
            await wait_until(lambda: b.counters["stored.trigger"] == n, 10)
        assert count(postgres, "triggers") == n
        assert b.source.counters["redelivered"] == n  # type: ignore[attr-defined]
        with psycopg.connect(postgres) as check:
            by = check.execute("SELECT DISTINCT archived_by FROM triggers").fetchall()
        assert by == [("arch-b",)]
        state = await consumer_state(nats_cluster)
        assert state.num_ack_pending == 0
        assert await stream_messages(nats_cluster) == 0
    finally:
        blocker.close()
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc is not None and proc.stderr is not None:
            proc.stderr.close()


async def test_a_poison_message_is_terminated_and_counted(
    nats_cluster: RunningCluster, postgres: str
) -> None:
    """A payload that is not a trigger is refused at once: counted, terminated (never
    delivered again), and it does not hold up the good one behind it."""
    await make_archive(nats_cluster, StreamSettings(ack_wait_s=1.0))
    good = triggers(1)[0]
    archiver = jetstream_archiver(nats_cluster, postgres, "arch-a", 0)
    async with running([archiver]):
        await publish_natively(nats_cluster, [b"{not json", encode(good)])
        await wait_until(lambda: archiver.counters["stored.trigger"] == 1, 30)

        async def settled() -> None:
            state = await consumer_state(nats_cluster)
            assert state.ack_floor.stream_seq == 2, state
            assert state.num_ack_pending == 0
            assert state.num_redelivered == 0

        await until(settled, 10, "both messages settled")
        loop = asyncio.get_running_loop()
        since = loop.time()
        # Past two ack waits: a message only nak'ed or left would have come again.
        await wait_until(lambda: loop.time() - since > 2.5, 5)
    assert archiver.counters["rejected.trigger.not_json"] == 1, archiver.counters
    assert archiver.source.counters["redelivered"] == 0  # type: ignore[attr-defined]
    assert count(postgres, "triggers") == 1
    assert await stream_messages(nats_cluster) == 0


async def test_a_message_id_makes_a_resend_a_duplicate_and_rows_stay_once(
    nats_cluster: RunningCluster, postgres: str
) -> None:
    """A NATS publisher that sends again with the same Nats-Msg-Id within the duplicate
    window is stored once by the stream. Without one (MQTT has no headers: a bridge's
    resend), the stream holds both copies and the archive stores one row."""
    await make_archive(nats_cluster, StreamSettings())
    subject = mqtt_subjects(topics_of(nats_cluster).trigger(UNIT))[0]
    first, second = triggers(2)
    async with admin(nats_cluster) as js:
        one = await js.publish(subject, encode(first), headers={"Nats-Msg-Id": first.event_id})
        two = await js.publish(subject, encode(first), headers={"Nats-Msg-Id": first.event_id})
        assert not one.duplicate
        assert two.duplicate
        assert two.seq == one.seq
        await js.publish(subject, encode(second))
        await js.publish(subject, encode(second))
    assert await stream_messages(nats_cluster) == 3
    archiver = jetstream_archiver(nats_cluster, postgres, "arch-a", 2)
    async with running([archiver]):
        await wait_until(
            lambda: (
                archiver.counters["stored.trigger"] + archiver.counters["duplicate.trigger"] == 3
            ),
            30,
        )
    assert archiver.counters["stored.trigger"] == 2
    assert archiver.counters["duplicate.trigger"] == 1
    assert count(postgres, "triggers") == 2


async def test_the_byte_limit_drops_the_oldest_of_a_backlog(
    nats_cluster: RunningCluster, postgres: str
) -> None:
    """The documented limit: a backlog past max_bytes loses its oldest messages (discard
    old), the newest are archived."""
    sent = triggers(40)
    size = len(encode(sent[0]))
    await make_archive(nats_cluster, StreamSettings(max_bytes=10 * (size + 200)))
    await publish_natively(nats_cluster, [encode(t) for t in sent])
    async with admin(nats_cluster) as js:
        info = await js.stream_info(ARCHIVE_STREAM)
    kept = int(info.state.messages)
    assert 0 < kept < len(sent)
    assert info.state.first_seq == len(sent) - kept + 1
    archiver = jetstream_archiver(nats_cluster, postgres, "arch-a", 0)
    async with running([archiver]):
        await wait_until(lambda: archiver.counters["stored.trigger"] == kept, 30)
    with psycopg.connect(postgres) as conn:
        ids = {r[0] for r in conn.execute("SELECT event_id FROM triggers").fetchall()}
    assert ids == {t.event_id for t in sent[-kept:]}


# --- a stolen archiver credential -------------------------------------------------------------
async def test_a_stolen_archiver_credential_cannot_feed_or_manage_the_stream(
    nats_cluster: RunningCluster,
) -> None:
    """With the archiver's user and password, over NATS and over MQTT: a publish into the
    stream's subjects is refused, as is every JetStream API call but its consumer's (purge,
    delete, a consumer of its own, another stream); the stream stays empty."""
    await make_archive(nats_cluster, StreamSettings())
    topics = topics_of(nats_cluster)
    subject = mqtt_subjects(topics.trigger(UNIT))[0]
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc = await connect(login(nats_cluster, ARCHIVER), error_cb=on_error)
    try:
        await nc.publish(subject, encode(triggers(1)[0]))
        await nc.flush()
        await wait_until(lambda: any(subject in e for e in errors), 10)
        js = nc.jetstream(timeout=2)
        s, c = ARCHIVE_STREAM, ARCHIVE_CONSUMER
        refused = [
            (subject, lambda: js.publish(subject, b"x")),
            (f"$JS.API.STREAM.PURGE.{s}", lambda: js.purge_stream(s)),
            (f"$JS.API.STREAM.DELETE.{s}", lambda: js.delete_stream(s)),
            (f"$JS.API.CONSUMER.DELETE.{s}.{c}", lambda: js.delete_consumer(s, c)),
            (
                f"$JS.API.CONSUMER.DURABLE.CREATE.{s}.mine",
                lambda: js.add_consumer(s, durable_name="mine"),
            ),
            ("$JS.API.STREAM.CREATE.MINE", lambda: js.add_stream(name="MINE", subjects=["m.>"])),
        ]
        for api, call in refused:
            errors.clear()
            # The server drops the request (no reply: the call times out) and says why.
            with pytest.raises(nats.errors.TimeoutError):
                await call()
            assert any(
                f'permissions violation for publish to "{api.lower()}"' in e.lower() for e in errors
            ), (
                api,
                errors,
            )
        # Nor may it read MQTT clients' QoS 1 deliveries (it never subscribes over MQTT).
        errors.clear()
        await nc.subscribe("$MQTT.sub.>")
        await nc.flush()
        await wait_until(
            lambda: any('subscription to "$mqtt.sub.>"' in e.lower() for e in errors), 10
        )
        # Allowed: its own consumer's info.
        info = await js.consumer_info(ARCHIVE_STREAM, ARCHIVE_CONSUMER)
        assert info.name == ARCHIVE_CONSUMER
    finally:
        await nc.close()
    # Over MQTT, then a topic it may publish as a marker: seen by an operator's subscriber,
    # with nothing on the trigger subject before it (one connection, in order).
    seen: list[str] = []
    async with admin(nats_cluster) as js:
        sub_nc = js._nc

        async def on_msg(msg: Any) -> None:
            seen.append(msg.subject)

        await sub_nc.subscribe(f"{mqtt_subjects(topics.prefix)[0]}.>", cb=on_msg)
        await sub_nc.flush()
        central = nats_cluster.layout.central
        async with publisher(central.mqtt_url(ARCHIVER, node=1)) as stolen:
            # nats-server acknowledges it (PUBACK) and drops it: MQTT 3.1.1 has no refusal.
            await stolen.publish(topics.trigger(UNIT), encode(triggers(1)[0]))
            marker = topics.log_synced("log-x", GW)
            await stolen.publish(marker, b"{}")
            await wait_until(lambda: mqtt_subjects(marker)[0] in seen, 10)
    assert subject not in seen
    assert await stream_messages(nats_cluster) == 0


async def test_a_message_whose_write_fails_is_delivered_max_deliver_times_then_left(
    nats_cluster: RunningCluster, postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write that fails with a bug (injected here: not the database, which is retried
    while the message is held) is tried again message by message, and the one that fails
    is handed back (nak): delivered again at once, at most max_deliver times. At the limit
    the archiver logs and counts it, the server announces it (advisory MAX_DELIVERIES) and
    delivers it no more; it stays in the stream. The messages around it are stored."""
    from mesh.archive import store

    write = store.write
    attempts: list[int] = []

    async def buggy(conn: Any, items: Any, archived_by: str) -> Any:
        if any(getattr(i.model, "source", None) and i.model.source.id == "bug" for i in items):
            attempts.append(len(items))
            raise RuntimeError("injected bug")
        if not attempts and len(items) == 1:
            # The writer took the first message alone (the source yields between
            # messages): the next group is the other two, once both are queued.
            queue_max = archiver.settings.queue_max
            await wait_until(lambda: queue_max - archiver.room() >= 2, 10)
        return await write(conn, items, archived_by)

    monkeypatch.setattr(store, "write", buggy)
    await make_archive(nats_cluster, StreamSettings(max_deliver=3))
    advisories: list[bytes] = []
    async with admin(nats_cluster) as js:
        nc = js._nc

        async def on_advisory(msg: Any) -> None:
            advisories.append(msg.data)

        await nc.subscribe(
            f"$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{ARCHIVE_STREAM}.{ARCHIVE_CONSUMER}",
            cb=on_advisory,
        )
        await nc.flush()
        archiver = jetstream_archiver(nats_cluster, postgres, "arch-a", 0)
        before, after = triggers(2)
        # Published before the archiver starts: fetched together.
        await publish_natively(
            nats_cluster, [encode(before), encode(event(source_id="bug")), encode(after)]
        )
        async with running([archiver]):
            await wait_until(lambda: archiver.counters["dead.max_deliver"] == 1, 30)
            await wait_until(lambda: len(advisories) == 1, 30)
            await wait_until(lambda: archiver.counters["stored.trigger"] == 2, 30)
    # Only the faulty message came back (a group it was in is written again one by one):
    # max_deliver times, each delivery tried alone at least once.
    assert archiver.counters["returned.write_failed"] == 3, archiver.counters
    assert attempts.count(1) == 3, attempts
    assert attempts[0] >= 2, attempts  # the first try was in a group with another
    assert count(postgres, "triggers") == 2
    assert await stream_messages(nats_cluster) == 1  # left in the stream, until max_age
    state = await consumer_state(nats_cluster)
    assert state.num_ack_pending == 0


async def test_an_archiver_holds_no_more_of_a_backlog_than_its_byte_limit(
    nats_cluster: RunningCluster, postgres: str
) -> None:
    """A backlog of large log batches (about 100 KiB each) while PostgreSQL takes none:
    the archiver fetches until it holds its byte limit (here 1 MiB), then waits; the rest
    wait in the stream, not in its memory (its count limit alone, 4,000 messages, would
    have let it take all of them). Once the database is back, every record lands."""
    n, per_batch, pad = 40, 10, 10_000
    limit = 1024 * 1024
    await make_archive(nats_cluster, StreamSettings())
    async with await pg_connect(postgres) as conn:
        await migrate(conn)
    batches, prev_hash = [], GENESIS
    for i in range(n):
        batch = _log_batch(
            "log-big", range(i * per_batch + 1, (i + 1) * per_batch + 1), prev_hash, pad
        )
        batches.append(encode(batch))
        prev_hash = batch.records[-1].hash
    size = max(len(b) for b in batches)
    assert n * size > 2 * limit
    fetch_bytes = limit // 4
    blocker = psycopg.connect(postgres)
    try:
        a = jetstream_archiver(
            nats_cluster, postgres, "arch-a", 0, inflight_bytes=limit, fetch_bytes=fetch_bytes
        )
        async with running([a]):
            # Taken in a thread: the archiver shares this event loop and must be able to
            # finish whatever it holds meanwhile.
            blocker.execute("SET lock_timeout = '20s'")
            await asyncio.to_thread(blocker.execute, "LOCK TABLE logs IN ACCESS EXCLUSIVE MODE")
            try:
                topic = topics_of(nats_cluster).log_records("log-big", GW)
                await publish_natively(nats_cluster, batches, topic)
                await wait_until(lambda: a.source.counters["waited.bytes"] >= 1, 30)
                held = a.source.outstanding_bytes
                # At the limit, past it by at most a fetch (docs/archive.md: messages of a
                # fetch that stopped waiting come with the next one) and a message.
                assert limit <= held < limit + fetch_bytes + size, held
                state = await consumer_state(nats_cluster)
                assert state.num_ack_pending < n // 2, state
                assert await stream_messages(nats_cluster) == n
            finally:
                # Released before the archiver stops, whatever failed: its stop waits on
                # its write, which waits on this lock.
                blocker.rollback()
            await wait_until(lambda: a.counters["stored.log_record"] == n * per_batch, 30)
        assert count(postgres, "log_records") == n * per_batch
    finally:
        blocker.close()


async def test_a_stopped_archiver_hands_back_what_it_holds(
    nats_cluster: RunningCluster, postgres: str
) -> None:
    """An archiver stopped (SIGTERM's path: its task cancelled) while its writes wait on
    PostgreSQL spends up to 5 s on them, then hands the rest back (nak) before it closes
    its connection: another archiver stores them at once, long before ack_wait (30 s)."""
    n = 30
    await make_archive(nats_cluster, StreamSettings())
    async with await pg_connect(postgres) as conn:
        await migrate(conn)
    blocker = psycopg.connect(postgres)
    try:
        blocker.execute("LOCK TABLE triggers IN ACCESS EXCLUSIVE MODE")
        a = jetstream_archiver(nats_cluster, postgres, "arch-a", 0)
        task = asyncio.create_task(a.run())
        await asyncio.wait_for(a.ready.wait(), 30)
        await publish_natively(nats_cluster, [encode(t) for t in triggers(n)])

        async def all_held() -> None:
            state = await consumer_state(nats_cluster)
            assert state.num_ack_pending == n, state
            assert _waiting_on_lock(postgres, "arch-a")

        await until(all_held, 30, "archiver A holding every message")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # Queued or being written (the archiver's count), or delivered to its client but
        # not yet handed over (a fetch the stop cut short: the source's count).
        returned = a.counters["returned.at_stop"] + a.source.counters["returned.at_stop"]
        assert returned == n, (a.counters, a.source.counters)
        assert "dropped.at_stop" not in a.counters
        blocker.rollback()
        loop = asyncio.get_running_loop()
        stopped = loop.time()
        b = jetstream_archiver(nats_cluster, postgres, "arch-b", 1)
        async with running([b]):
            await wait_until(lambda: b.counters["stored.trigger"] == n, 20)
        assert loop.time() - stopped < StreamSettings().ack_wait_s
        assert count(postgres, "triggers") == n
    finally:
        blocker.close()


def _log_batch(log_id: str, seqs: range, prev_hash: str = GENESIS, pad: int = 0) -> LogBatch:
    records = []
    for seq in seqs:
        body = json.dumps({"seq": seq, "pad": "x" * pad} if pad else {"seq": seq})
        digest = record_hash(prev_hash, seq, seq, kind="resumed", activation_id=None, body=body)
        records.append(
            LogBatchRecord(
                seq=seq,
                prev_seq=seq - 1,
                at_ns=seq,
                kind="resumed",
                body=body,
                prev_hash=prev_hash,
                hash=digest,
            )
        )
        prev_hash = digest
    return LogBatch(
        log_id=log_id,
        unit_id=UNIT,
        gateway_id=GW,
        head_seq=seqs[-1],
        sent_at_ns=1,
        records=tuple(records),
    )


async def test_an_edge_log_synced_through_the_car_gets_its_watermark_back(
    nats_cluster: RunningCluster, postgres: str
) -> None:
    """The log-sync loop on the cluster: a batch sent from the car goes through the bridge
    into the stream, an archiver stores it, and its watermark, published retained over the
    archiver's MQTT connection to a node, comes back into the car (the bridge imports the
    gateway's watermarks) and is kept at central for a reader that comes later."""
    from mesh.protocol.codec import decode
    from mesh.protocol.log_wire import LogSynced

    await make_archive(nats_cluster, StreamSettings())
    car = nats_cluster.layout.car
    topics = topics_of(nats_cluster)
    archiver = jetstream_archiver(nats_cluster, postgres, "arch-a", 1)
    async with (
        running([archiver]),
        car_broker(nats_cluster),
        spy(car.url_for(DISPATCH), topics.synced_for(GW)) as in_car,
        publisher(car.url_for(GW)) as gateway,
    ):
        await bridge_up(nats_cluster)
        await gateway.publish(
            topics.log_records("log-car12", GW), encode(_log_batch("log-car12", range(1, 6)))
        )

        def synced() -> int:
            marks = [decode(LogSynced, m.payload) for m in in_car]
            return max((m.synced_seq for m in marks), default=-1)

        await wait_until(lambda: synced() == 5, 60)
        # Retained at central, for a reader that comes later (a live message reaches the
        # car with its retain flag cleared: see docs/archive.md).
        central = nats_cluster.layout.central
        async with spy(central.mqtt_url(DISPATCH, node=2), topics.synced_for(GW)) as later:
            await wait_until(lambda: any(m.retain for m in later), 30)
    assert count(postgres, "log_records") == 5
