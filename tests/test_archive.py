"""The central archive against a real mosquitto and the real PostgreSQL: two archivers on
one shared subscription, idempotent storage, bad input, the schema's migrations."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest

from bridge.client import LinkOptions, MqttLink
from bridge.codec import PayloadError, encode
from bridge.embedded import MosquittoProcess
from bridge.topics import TopicKind, Topics, shared
from bridge.urls import BrokerUrl
from mesh.archive.archiver import Archiver, ArchiverSettings
from mesh.archive.db import connect
from mesh.archive.intake import accept, activation_rank
from mesh.archive.migrate import available, migrate
from mesh.models import (
    AckStatus,
    ActivationRecord,
    ActivationState,
    CameraAck,
    CameraOutcome,
    Escalation,
    EscalationReason,
    OutcomeStatus,
    ReceiptOutcome,
    TriggerKind,
    TriggerReceipt,
    TriggerSummary,
)
from tests.harness import event, wait_until

UNIT = "car-12"
ISSUER = "gw-car-12"


# --- helpers ------------------------------------------------------------------------------
def rows(dsn: str, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def count(dsn: str, table: str) -> int:
    return int(rows(dsn, f"SELECT count(*) FROM {table}")[0][0])


@asynccontextmanager
async def running_archivers(
    url: BrokerUrl, topics: Topics, dsn: str, names: Sequence[str] = ("arch-a", "arch-b")
) -> AsyncIterator[list[Archiver]]:
    tag = uuid.uuid4().hex[:8]
    archivers = [
        Archiver(
            ArchiverSettings(dsn=dsn, archiver_id=name, topics=topics, retry_max_s=0.5),
            url=url,
            client_id=f"t{tag}-{name}",
        )
        for name in names
    ]
    tasks = [asyncio.create_task(a.run()) for a in archivers]
    try:
        for archiver in archivers:
            await asyncio.wait_for(archiver.ready.wait(), 15)
        yield archivers
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@asynccontextmanager
async def publisher(url: BrokerUrl) -> AsyncIterator[MqttLink]:
    link = MqttLink(url, LinkOptions(f"t-pub-{uuid.uuid4().hex[:8]}", persistent_session=False))
    task = asyncio.create_task(link.run(lambda _m: None))
    try:
        await link.wait_up(10)
        yield link
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def activation(
    activation_id: str, state: ActivationState, answered: int, cameras: int = 3
) -> ActivationRecord:
    trigger = event(TriggerKind.WEAPON_DRAW)
    return ActivationRecord(
        activation_id=activation_id,
        issuer=ISSUER,
        unit_id=UNIT,
        trigger=TriggerSummary.of(trigger),
        state=state,
        decided_at_ns=trigger.observed_at_ns,
        expires_at_ns=trigger.observed_at_ns + 30 * 10**9,
        finished_at_ns=None if state is ActivationState.PENDING else trigger.observed_at_ns + 1,
        origin=None,
        radius_m=150.0,
        pre_event_s=60,
        cameras=tuple(
            CameraOutcome(
                camera_id=f"bwc-{i}",
                unit_id=UNIT,
                expected=True,
                targeting="unit car-12 targeted",
                status=OutcomeStatus.STARTED if i < answered else OutcomeStatus.PENDING,
            )
            for i in range(cameras)
        ),
    )


def ack(activation_id: str, camera_id: str, attempt: int = 0) -> CameraAck:
    return CameraAck(
        activation_id=activation_id,
        camera_id=camera_id,
        unit_id=UNIT,
        status=AckStatus.STARTED,
        attempt=attempt,
        received_at_ns=1_800_000_000_000_000_000 + attempt,
    )


# --- pure parts -----------------------------------------------------------------------------
def test_log_topics_and_shared_subscriptions() -> None:
    t = Topics("mesh/v1")
    assert t.log_records("abc") == "mesh/v1/log/abc/records"
    assert t.log_synced("abc", "gw-1") == "mesh/v1/log/abc/synced/gw-1"
    assert t.log_synced("abc", None) == "mesh/v1/log/abc/synced/_unnamed"
    assert t.synced_for("gw-1") == "mesh/v1/log/+/synced/gw-1"
    assert t.all_log_records() == "mesh/v1/log/+/records"
    assert t.parse(t.log_records("abc")).kind is TopicKind.LOG_RECORDS  # type: ignore[union-attr]
    assert t.parse(t.log_synced("abc", "gw-1")).args == ("abc", "gw-1")  # type: ignore[union-attr]
    assert t.parse("mesh/v1/log/abc/other") is None
    assert shared("archivers", "mesh/v1/ack/+/+") == "$share/archivers/mesh/v1/ack/+/+"
    with pytest.raises(ValueError, match="share group"):
        shared("a/b", "x")


def test_a_progress_update_ranks_below_the_final_state_and_a_cancel_above() -> None:
    pending = activation_rank(activation("a-1", ActivationState.PENDING, 2))
    more = activation_rank(activation("a-1", ActivationState.PENDING, 3))
    final = activation_rank(activation("a-1", ActivationState.PARTIAL, 2))
    cancelled = activation_rank(activation("a-1", ActivationState.CANCELLED, 1))
    assert pending < more < final < cancelled


def test_intake_names_what_is_wrong() -> None:
    t = Topics("mesh/v1")
    with pytest.raises(PayloadError) as caught:
        accept(t, t.trigger("car-1"), b"{not json")
    assert caught.value.code == "not_json"
    with pytest.raises(PayloadError) as caught:
        accept(t, t.ack(ISSUER, "bwc-2"), encode(ack("a-1", "bwc-1")))
    assert caught.value.code == "id_mismatch"
    assert accept(t, t.presence("bwc-1"), b"{}") is None  # not archived: ignored
    item = accept(t, t.ack(ISSUER, "bwc-1"), encode(ack("a-1", "bwc-1")))
    assert item is not None
    assert item.kind is TopicKind.ACK
    assert item.args == (ISSUER, "bwc-1")


# --- migrations ------------------------------------------------------------------------------
async def test_migrations_apply_once_even_when_two_archivers_start_together(
    postgres: str,
) -> None:
    versions = [m.version for m in available()]
    assert versions
    assert versions[0] == 1
    first, second = await connect(postgres), await connect(postgres)
    try:
        applied = await asyncio.gather(migrate(first), migrate(second))
        assert sorted(applied) == [[], versions]  # the advisory lock let one do it all
        assert await migrate(first) == []  # and running it again is a no-op
    finally:
        await first.close()
        await second.close()
    assert [r[0] for r in rows(postgres, "SELECT version FROM schema_migrations")] == versions
    for table in ("triggers", "receipts", "activations", "acks", "escalations", "log_records"):
        assert count(postgres, table) == 0


# --- two archivers, one shared subscription ---------------------------------------------------
async def test_two_archivers_split_the_load_and_store_each_message_once(
    mosquitto: MosquittoProcess, topics: Topics, postgres: str
) -> None:
    n = 20
    triggers = [event(TriggerKind.MANUAL, unit=UNIT) for _ in range(n)]
    acks = [ack(f"a-{i}", f"bwc-{i % 3}", attempt=i % 2) for i in range(n)]
    receipts = [
        TriggerReceipt(
            event_id=t.event_id,
            unit_id=UNIT,
            outcome=ReceiptOutcome.ACCEPTED,
            activation_id=f"a-{i}",
            at_ns=t.observed_at_ns + 1,
        )
        for i, t in enumerate(triggers)
    ]
    escalations = [
        Escalation(
            activation_id=f"a-{i}",
            issuer=ISSUER,
            unit_id=UNIT,
            kind=TriggerKind.MANUAL,
            camera_id="bwc-silent",
            camera_unit_id="car-7",
            reason=EscalationReason.NO_ACK,
            attempts=3,
            audience="dispatch",
            at_ns=1_800_000_000_000_000_000 + i,
        )
        for i in range(5)
    ]
    # Each activation: a progress update, then its final state, then a progress update
    # that arrives late (as QoS 1 redelivery and shared subscriptions can make it).
    finals = [activation(f"a-{i}", ActivationState.CONFIRMED, 3) for i in range(5)]
    messages: list[tuple[str, bytes]] = []
    messages += [(topics.trigger(UNIT), encode(t)) for t in triggers]
    messages += [(topics.ack(ISSUER, a.camera_id), encode(a)) for a in acks]
    messages += [(topics.receipt(UNIT), encode(r)) for r in receipts]
    messages += [(topics.escalation("dispatch"), encode(e)) for e in escalations]
    for record in finals:
        topic = topics.activation(UNIT, record.activation_id)
        early = activation(record.activation_id, ActivationState.PENDING, 1)
        late = activation(record.activation_id, ActivationState.PENDING, 2)
        messages += [(topic, encode(early)), (topic, encode(record)), (topic, encode(late))]

    async with (
        running_archivers(mosquitto.url, topics, postgres) as archivers,
        publisher(mosquitto.url) as pub,
    ):
        # Every message twice: the second round is what a redelivery looks like.
        for _ in range(2):
            for topic, payload in messages:
                await pub.publish(topic, payload, qos=1)

        def received() -> int:
            return sum(
                sum(v for k, v in a.counters.items() if k.split(".")[0] in _OUTCOMES)
                for a in archivers
            )

        await wait_until(lambda: received() == 2 * len(messages), 20)

    assert count(postgres, "triggers") == n
    assert count(postgres, "acks") == n
    assert count(postgres, "receipts") == n
    assert count(postgres, "escalations") == len(escalations)
    assert count(postgres, "activations") == len(finals)
    assert {r[0] for r in rows(postgres, "SELECT event_id FROM triggers")} == {
        t.event_id for t in triggers
    }
    # The final state stands: no progress update, early or late, replaced it.
    states = rows(postgres, "SELECT activation_id, state, rank_answered FROM activations")
    assert sorted(states) == [(f.activation_id, "confirmed", 3) for f in finals]
    # Both archivers stored some (the broker split the load) and every second copy of a
    # trigger was recognised as one, by whichever archiver it reached.
    for archiver in archivers:
        assert archiver.counters["stored.trigger"] > 0, archiver.counters
    assert sum(a.counters["stored.trigger"] for a in archivers) == n
    assert sum(a.counters["duplicate.trigger"] for a in archivers) == n
    by = dict(rows(postgres, "SELECT archived_by, count(*) FROM triggers GROUP BY 1"))
    assert set(by) == {"arch-a", "arch-b"}
    assert all(not k.startswith("rejected") for a in archivers for k in a.counters)


_OUTCOMES = {"stored", "duplicate", "replaced", "superseded"}


# --- bad input and a database outage ------------------------------------------------------------
async def test_malformed_payloads_are_rejected_counted_and_the_archiver_keeps_going(
    mosquitto: MosquittoProcess, topics: Topics, postgres: str
) -> None:
    good = event(TriggerKind.MANUAL, unit=UNIT)
    async with (
        running_archivers(mosquitto.url, topics, postgres, names=("arch-solo",)) as (archiver,),
        publisher(mosquitto.url) as pub,
    ):
        await pub.publish(topics.trigger(UNIT), b"\xff not json at all")
        await pub.publish(topics.trigger(UNIT), b'{"type": "ack", "v": 1}')
        await pub.publish(topics.trigger("car-99"), encode(good))  # another unit's topic
        await pub.publish(topics.ack(ISSUER, "bwc-2"), encode(ack("a-1", "bwc-1")))
        await pub.publish(topics.log_records("abc"), b'{"type": "log_batch", "v": 2}')
        await pub.publish(topics.trigger(UNIT), encode(good))
        await wait_until(lambda: archiver.counters["stored.trigger"] == 1)
    rejected = {k: v for k, v in archiver.counters.items() if k.startswith("rejected.")}
    assert rejected == {
        "rejected.trigger.not_json": 1,
        "rejected.trigger.wrong_type": 1,
        "rejected.trigger.unit_mismatch": 1,
        "rejected.ack.id_mismatch": 1,
        "rejected.log_records.wrong_version": 1,
    }
    assert count(postgres, "triggers") == 1


async def test_a_lost_database_connection_is_retried_and_nothing_is_lost(
    mosquitto: MosquittoProcess, topics: Topics, postgres: str
) -> None:
    name = f"arch-{uuid.uuid4().hex[:8]}"
    async with (
        running_archivers(mosquitto.url, topics, postgres, names=(name,)) as (archiver,),
        publisher(mosquitto.url) as pub,
    ):
        first = event(TriggerKind.MANUAL, unit=UNIT)
        await pub.publish(topics.trigger(UNIT), encode(first))
        await wait_until(lambda: archiver.counters["stored.trigger"] == 1)
        # The database drops the archiver's connection (a restart, a failover).
        terminated = rows(
            postgres,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"trigger-mesh archiver {name}",),
        )
        assert terminated, "the archiver's connection was not found"
        later = [event(TriggerKind.MANUAL, unit=UNIT) for _ in range(5)]
        for trigger in later:
            await pub.publish(topics.trigger(UNIT), encode(trigger))
        await wait_until(lambda: archiver.counters["stored.trigger"] == 6, 15)
    assert archiver.counters["db.retries"] >= 1
    assert count(postgres, "triggers") == 6


# --- the command line ---------------------------------------------------------------------------
async def test_the_archiver_command_runs_the_daemon_and_migrate_is_idempotent(
    mosquitto: MosquittoProcess, topics: Topics, postgres: str
) -> None:
    import os
    import signal
    import sys

    name = f"arch-cli-{uuid.uuid4().hex[:6]}"
    daemon = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "mesh", "archiver", "--broker", str(mosquitto.url)),
        *("--db", postgres, "--prefix", topics.prefix, "--id", name, "--log-format", "json"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TRIGGER_MESH_DB": ""},
    )
    try:
        # It migrates the schema first, then subscribes.
        await wait_until(
            lambda: rows(postgres, "SELECT to_regclass('triggers') IS NOT NULL")[0][0], 15
        )
        trigger = event(TriggerKind.MANUAL, unit=UNIT)
        async with publisher(mosquitto.url) as pub:

            def stored() -> bool:
                return bool(
                    rows(
                        postgres, "SELECT 1 FROM triggers WHERE event_id = %s", (trigger.event_id,)
                    )
                )

            # The daemon may still be subscribing: publish until it has stored it.
            for _ in range(100):
                await pub.publish(topics.trigger(UNIT), encode(trigger))
                if stored():
                    break
                await asyncio.sleep(0.1)
        assert stored()
        assert rows(postgres, "SELECT archived_by FROM triggers") == [(name,)]
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(daemon.communicate(), 15)
    assert daemon.returncode == 0, err.decode()
    migrate_cmd = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "mesh", "archiver", "migrate", "--db", postgres),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(migrate_cmd.communicate(), 30)
    assert migrate_cmd.returncode == 0
    assert "up to date" in out.decode()
