"""The central archive against a real mosquitto and the real PostgreSQL: two archivers on
one shared subscription, idempotent storage, bad input, the schema's migrations."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bridge.broker.config import BrokerBundle
from bridge.mqtt.client import LinkOptions, MqttLink
from bridge.mqtt.embedded import MosquittoProcess
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import TopicKind, Topics, shared
from mesh.archive.archiver import Archiver, ArchiverSettings
from mesh.archive.db import connect
from mesh.archive.intake import accept, activation_rank
from mesh.archive.migrate import available, migrate
from mesh.protocol.codec import PayloadError, encode
from mesh.protocol.jws import Jws, b64url
from mesh.protocol.log_wire import LogBatch, LogBatchRecord
from mesh.protocol.models import (
    AckStatus,
    ActivationRecord,
    ActivationState,
    CameraAck,
    CameraOutcome,
    Escalation,
    EscalationReason,
    OutcomeStatus,
    ReceiptOutcome,
    TriggerEvent,
    TriggerKind,
    TriggerReceipt,
    TriggerSummary,
)
from mesh.security.signing import PayloadSigner
from mesh.security.trust import KeyRole, TrustStore, trusted_key
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
    url: BrokerUrl,
    topics: Topics,
    dsn: str,
    names: Sequence[str] = ("arch-a", "arch-b"),
    trust: TrustStore | None = None,
    units: Mapping[str, str] | None = None,
) -> AsyncIterator[list[Archiver]]:
    tag = uuid.uuid4().hex[:8]
    # (trust passed only when given: the other tests run unchanged against older archivers)
    signed: dict[str, Any] = {} if trust is None else {"trust": trust}
    if units is not None:
        signed["units"] = units
    archivers = [
        Archiver(
            ArchiverSettings(dsn=dsn, archiver_id=name, topics=topics, retry_max_s=0.5, **signed),
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
    activation_id: str,
    state: ActivationState,
    answered: int,
    cameras: int = 3,
    *,
    issuer: str = ISSUER,
    unit: str = UNIT,
    trigger: TriggerEvent | None = None,
) -> ActivationRecord:
    trigger = trigger or event(TriggerKind.WEAPON_DRAW)
    return ActivationRecord(
        activation_id=activation_id,
        issuer=issuer,
        unit_id=unit,
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


def ack(
    activation_id: str, camera_id: str, attempt: int = 0, status: AckStatus = AckStatus.STARTED
) -> CameraAck:
    return CameraAck(
        activation_id=activation_id,
        camera_id=camera_id,
        unit_id=UNIT,
        status=status,
        attempt=attempt,
        received_at_ns=1_800_000_000_000_000_000 + attempt,
    )


# --- pure parts -----------------------------------------------------------------------------
def test_log_topics_and_shared_subscriptions() -> None:
    t = Topics("mesh/v2")
    assert t.log_records("abc", "gw-1") == "mesh/v2/log/abc/records/gw-1"
    assert t.log_records("abc", None) == "mesh/v2/log/abc/records/_unnamed"
    assert t.records_from("gw-1") == "mesh/v2/log/+/records/gw-1"
    assert t.log_synced("abc", "gw-1") == "mesh/v2/log/abc/synced/gw-1"
    assert t.log_synced("abc", None) == "mesh/v2/log/abc/synced/_unnamed"
    assert t.synced_for("gw-1") == "mesh/v2/log/+/synced/gw-1"
    assert t.all_log_records() == "mesh/v2/log/+/records/+"
    parsed = t.parse(t.log_records("abc", "gw-1"))
    assert parsed is not None
    assert (parsed.kind, parsed.args) == (TopicKind.LOG_RECORDS, ("abc", "gw-1"))
    assert t.parse("mesh/v2/log/abc/records") is None
    assert t.parse(t.log_synced("abc", "gw-1")).args == ("abc", "gw-1")  # type: ignore[union-attr]
    assert t.parse("mesh/v2/log/abc/other") is None
    assert shared("archivers", "mesh/v2/ack/+/+") == "$share/archivers/mesh/v2/ack/+/+"
    with pytest.raises(ValueError, match="share group"):
        shared("a/b", "x")


def test_a_progress_update_ranks_below_the_final_state_and_a_cancel_above() -> None:
    pending = activation_rank(activation("a-1", ActivationState.PENDING, 2))
    more = activation_rank(activation("a-1", ActivationState.PENDING, 3))
    final = activation_rank(activation("a-1", ActivationState.PARTIAL, 2))
    cancelled = activation_rank(activation("a-1", ActivationState.CANCELLED, 1))
    assert pending < more < final < cancelled


def test_intake_names_what_is_wrong() -> None:
    t = Topics("mesh/v2")
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
    # (Versions of one activation name its one trigger: the archive binds the row to it.)
    decided = {f"a-{i}": event(TriggerKind.WEAPON_DRAW) for i in range(5)}
    finals = [activation(a, ActivationState.CONFIRMED, 3, trigger=t) for a, t in decided.items()]
    messages: list[tuple[str, bytes]] = []
    messages += [(topics.trigger(UNIT), encode(t)) for t in triggers]
    messages += [(topics.ack(ISSUER, a.camera_id), encode(a)) for a in acks]
    messages += [(topics.receipt(UNIT), encode(r)) for r in receipts]
    messages += [(topics.escalation("dispatch"), encode(e)) for e in escalations]
    for record in finals:
        topic = topics.activation(UNIT, record.activation_id)
        trigger = decided[record.activation_id]
        early = activation(record.activation_id, ActivationState.PENDING, 1, trigger=trigger)
        late = activation(record.activation_id, ActivationState.PENDING, 2, trigger=trigger)
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
        await pub.publish(topics.trigger(UNIT), b'{"type": "ack", "v": 2}')
        await pub.publish(topics.trigger("car-99"), encode(good))  # another unit's topic
        await pub.publish(topics.ack(ISSUER, "bwc-2"), encode(ack("a-1", "bwc-1")))
        await pub.publish(topics.log_records("abc", None), b'{"type": "log_batch", "v": 1}')
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


# --- conflicting copies: another gateway's version, unsigned acks (issue 15, item 9) -----------
@pytest.fixture
def fleet_broker(tmp_path: Path) -> Iterator[BrokerBundle]:
    """The locked-down broker of `broker-config` (TLS, a certificate each, the fleet's
    ACL) for car-12, car-7 and an archiver, on a free loopback port."""
    from bridge.broker.config import FleetSpec, Principal, write_broker_config
    from bridge.mqtt.embedded import free_port
    from tests.conftest import require_mosquitto

    fleet = FleetSpec(
        prefix="mesh/v2",
        gateways=(Principal(ISSUER, UNIT), Principal("gw-car-7", "car-7")),
        archivers=("archiver-1",),
    )
    port = free_port()
    bundle = write_broker_config(tmp_path, fleet, port=port, bind="127.0.0.1", run_as="root")
    broker = MosquittoProcess(require_mosquitto(), port, tmp_path, config=bundle.conf)
    broker.start()
    try:
        yield bundle
    finally:
        broker.stop()


async def test_another_gateways_version_never_overwrites_an_archived_activation(
    fleet_broker: BrokerBundle, postgres: str
) -> None:
    """gw-car-7's own certificate may publish activation records only under its unit's
    topic (the ACL); it publishes there a `cancelled` version of car-12's activation (the
    highest rank): once as itself, once claiming to be gw-car-12. The archive keeps
    car-12's row as it was and reports both, each copy once however often it comes."""
    topics = Topics("mesh/v2")
    url = fleet_broker.url_for
    trigger = event(TriggerKind.WEAPON_DRAW, unit=UNIT)
    genuine = activation("a-car12", ActivationState.CONFIRMED, 3, trigger=trigger)
    as_itself = activation(
        "a-car12", ActivationState.CANCELLED, 0, issuer="gw-car-7", unit="car-7", trigger=trigger
    )
    as_car12 = activation("a-car12", ActivationState.CANCELLED, 0, unit="car-7", trigger=trigger)
    car7 = topics.activation("car-7", "a-car12")
    async with (
        running_archivers(url("archiver-1"), topics, postgres, names=("arch-solo",)) as (archiver,),
        publisher(url(ISSUER)) as gw12,
        publisher(url("gw-car-7")) as gw7,
    ):
        await gw12.publish(topics.activation(UNIT, "a-car12"), encode(genuine), qos=1)
        await wait_until(lambda: archiver.counters["stored.activation"] == 1)
        for attack in (as_itself, as_car12, as_itself):
            await gw7.publish(car7, encode(attack), qos=1)
        await wait_until(lambda: archiver.counters["conflict.activation"] == 3)
        held = rows(postgres, "SELECT issuer, unit_id, state, payload FROM activations")
        assert [h[:3] for h in held] == [(ISSUER, UNIT, "confirmed")]
        assert ActivationRecord.model_validate_json(json.dumps(held[0][3])) == genuine
        # car-12's own later version still replaces its row: the binding stops only others.
        own_cancel = activation("a-car12", ActivationState.CANCELLED, 3, trigger=trigger)
        await gw12.publish(topics.activation(UNIT, "a-car12"), encode(own_cancel), qos=1)
        await wait_until(lambda: archiver.counters["replaced.activation"] == 1)

    held = rows(postgres, "SELECT issuer, unit_id, state, payload FROM activations")
    assert [h[:3] for h in held] == [(ISSUER, UNIT, "cancelled")]
    assert ActivationRecord.model_validate_json(json.dumps(held[0][3])) == own_cancel
    reported = rows(
        postgres,
        "SELECT kind, subject, code, unit_id, issuer, copies, payload FROM conflicts ORDER BY id",
    )
    assert [r[:6] for r in reported] == [
        ("activation", "a-car12", "other_issuer", UNIT, ISSUER, 2),
        ("activation", "a-car12", "other_unit", UNIT, ISSUER, 1),
    ]
    assert ActivationRecord.model_validate_json(reported[0][6]) == as_itself


async def test_before_the_attack_the_genuine_record_is_what_the_archive_holds(
    mosquitto: MosquittoProcess, topics: Topics, postgres: str
) -> None:
    """The attack of the test above, stopped after its first copy: car-12's confirmed
    state, not gw-car-7's cancel, is what a reader of the archive finds."""
    trigger = event(TriggerKind.WEAPON_DRAW, unit=UNIT)
    genuine = activation("a-x", ActivationState.CONFIRMED, 3, trigger=trigger)
    forged = activation(
        "a-x", ActivationState.CANCELLED, 0, issuer="gw-car-7", unit="car-7", trigger=trigger
    )
    async with (
        running_archivers(mosquitto.url, topics, postgres, names=("arch-solo",)) as (archiver,),
        publisher(mosquitto.url) as pub,
    ):
        await pub.publish(topics.activation(UNIT, "a-x"), encode(genuine), qos=1)
        await pub.publish(topics.activation("car-7", "a-x"), encode(forged), qos=1)
        await wait_until(lambda: sum(archiver.counters.values()) >= 2)
    assert rows(postgres, "SELECT issuer, state FROM activations") == [(ISSUER, "confirmed")]


async def test_an_unsigned_ack_is_not_archived_as_genuine_in_a_signed_fleet(
    mosquitto: MosquittoProcess, topics: Topics, postgres: str
) -> None:
    """With the fleet's trust store the archiver checks acks as the gateway does: a
    `started` ack without a signature (which the gateway refused), and one signed by
    another camera's key, are kept among the conflicts, never in `acks`."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    own, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    trust = TrustStore(
        [
            trusted_key(own.public_key(), KeyRole.CAMERA, "bwc-1"),
            trusted_key(other.public_key(), KeyRole.CAMERA, "bwc-2"),
        ]
    )
    signed = PayloadSigner(own).seal(ack("a-1", "bwc-1", attempt=0))
    genuine = signed.to_bytes()
    unsigned = encode(ack("a-1", "bwc-1", attempt=1))
    wrong_key = PayloadSigner(other).seal(ack("a-1", "bwc-1", attempt=2)).to_bytes()
    # Another ack in place of the signed bytes: the signature no longer matches.
    changed = b64url(encode(ack("a-1", "bwc-1", attempt=3)))
    tampered = Jws(signed.protected, changed, signed.signature, signed.kid).to_bytes()
    async with (
        running_archivers(mosquitto.url, topics, postgres, names=("arch-solo",), trust=trust) as (
            archiver,
        ),
        publisher(mosquitto.url) as pub,
    ):
        for sent in (genuine, unsigned, wrong_key, tampered, unsigned):
            await pub.publish(topics.ack(ISSUER, "bwc-1"), sent, qos=1)
        await wait_until(
            lambda: archiver.counters["stored.ack"] + archiver.counters["refused.ack"] == 5
        )
    assert archiver.counters["refused.ack"] == 4
    assert rows(postgres, "SELECT attempt, status, verified, signer FROM acks") == [
        (0, "started", True, PayloadSigner(own).key_id)
    ]
    assert rows(
        postgres, "SELECT subject, code, issuer, copies FROM conflicts ORDER BY subject"
    ) == [
        ("a-1/bwc-1/1", "unsigned", ISSUER, 2),
        ("a-1/bwc-1/2", "wrong_signer", ISSUER, 1),
        ("a-1/bwc-1/3", "bad_signature", ISSUER, 1),
    ]


async def test_a_stolen_camera_key_floods_the_archive_with_acks_only_up_to_its_budget(
    mosquitto: MosquittoProcess, topics: Topics, postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thief holds bwc-1's key and credential and sends validly signed acks, each for
    another activation id (a new row each). The archive stores the camera's budget for the
    hour (ACKS_PER_CAMERA_HOUR, 20 here), counts the rest as dropped, and still stores
    another camera's ack; the camera's acks made from a gateway's log are not held to it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from mesh.archive import store
    from mesh.archive.intake import check_ack

    budget, extra = 20, 30
    monkeypatch.setattr(store, "ACKS_PER_CAMERA_HOUR", budget)
    stolen, other = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    trust = TrustStore(
        [
            trusted_key(stolen.public_key(), KeyRole.CAMERA, "bwc-1"),
            trusted_key(other.public_key(), KeyRole.CAMERA, "bwc-2"),
        ]
    )
    flood = [
        PayloadSigner(stolen).seal(ack(f"a-forged-{i}", "bwc-1")).to_bytes()
        for i in range(budget + extra)
    ]
    genuine = PayloadSigner(other).seal(ack("a-1", "bwc-2")).to_bytes()
    async with (
        running_archivers(mosquitto.url, topics, postgres, names=("arch-solo",), trust=trust) as (
            archiver,
        ),
        publisher(mosquitto.url) as pub,
    ):
        for sent in flood:
            await pub.publish(topics.ack(ISSUER, "bwc-1"), sent, qos=1)
        await pub.publish(topics.ack(ISSUER, "bwc-2"), genuine, qos=1)
        await wait_until(
            lambda: (
                archiver.counters["stored.ack"] + archiver.counters["dropped.ack_budget"]
                == len(flood) + 1
            )
        )
    assert archiver.counters["dropped.ack_budget"] == extra
    assert rows(postgres, "SELECT camera_id, count(*) FROM acks GROUP BY 1 ORDER BY 1") == [
        ("bwc-1", budget),
        ("bwc-2", 1),
    ]
    # An ack of bwc-1 made from its gateway's log (the fill's path) is still stored.
    from_log = accept(topics, topics.ack(ISSUER, "bwc-1"), flood[-1])
    assert from_log is not None
    conn = await connect(postgres)
    try:
        result = store.WriteResult()
        async with conn.transaction():
            item = check_ack(from_log, trust, 0)
            await store.write_small(conn, [item], "arch-solo/log", result, live=False)
    finally:
        await conn.close()
    assert result.counts["stored.ack"] == 1, result.counts
    assert count(postgres, "acks") == budget + 2


async def test_without_a_trust_store_acks_are_stored_as_unchecked(
    mosquitto: MosquittoProcess, topics: Topics, postgres: str
) -> None:
    async with (
        running_archivers(mosquitto.url, topics, postgres, names=("arch-solo",)) as (archiver,),
        publisher(mosquitto.url) as pub,
    ):
        await pub.publish(topics.ack(ISSUER, "bwc-1"), encode(ack("a-1", "bwc-1")), qos=1)
        await wait_until(lambda: archiver.counters["stored.ack"] == 1)
    assert rows(postgres, "SELECT verified, signer FROM acks") == [(None, None)]


def one_record_batch(log_id: str, unit: str, gateway: str) -> LogBatch:
    """A batch of one valid record, the first of log ``log_id``, from ``gateway``."""
    from mesh.journal.chain import GENESIS, record_hash

    body = '{"n":1}'
    digest = record_hash(GENESIS, 1, 10, kind="resumed", activation_id=None, body=body)
    record = LogBatchRecord(
        seq=1, prev_seq=0, at_ns=10, kind="resumed", body=body, prev_hash=GENESIS, hash=digest
    )
    return LogBatch(
        log_id=log_id, unit_id=unit, gateway_id=gateway, head_seq=1, sent_at_ns=1, records=(record,)
    )


async def test_a_car_s_log_cannot_claim_another_unit_with_the_fleet_file(
    mosquitto: MosquittoProcess, topics: Topics, postgres: str
) -> None:
    """The thief's own log (gw-car-7, whose credential it holds) names car-12's unit: the
    first batch binds the log's unit, which legal holds and `archiver verify` go by. With
    the fleet file's units the archiver refuses it (unit_mismatch); the same batch naming
    car-7 is stored, and the log is car-7's."""
    claim = one_record_batch("log-car7", UNIT, "gw-car-7")
    units = {ISSUER: UNIT, "gw-car-7": "car-7"}
    async with (
        running_archivers(mosquitto.url, topics, postgres, names=("arch-solo",), units=units) as (
            archiver,
        ),
        publisher(mosquitto.url) as pub,
    ):
        await pub.publish(topics.log_records("log-car7", "gw-car-7"), encode(claim), qos=1)
        await wait_until(lambda: archiver.counters["rejected.log_records.unit_mismatch"] == 1)
        own = claim.model_copy(update={"unit_id": "car-7"})
        await pub.publish(topics.log_records("log-car7", "gw-car-7"), encode(own), qos=1)
        await wait_until(lambda: archiver.counters["stored.log_batch"] == 1)
    assert rows(postgres, "SELECT log_id, unit_id, gateway_id FROM logs") == [
        ("log-car7", "car-7", "gw-car-7")
    ]


async def test_archiver_verify_lists_the_refused_copies_of_the_logs_gateway(
    mosquitto: MosquittoProcess, topics: Topics, postgres: str
) -> None:
    import os
    import sys

    batch = one_record_batch("log-car12", UNIT, ISSUER)
    trigger = event(TriggerKind.WEAPON_DRAW, unit=UNIT)
    genuine = activation("a-v", ActivationState.CONFIRMED, 3, trigger=trigger)
    forged = activation(
        "a-v", ActivationState.CANCELLED, 0, issuer="gw-car-7", unit="car-7", trigger=trigger
    )
    async with (
        running_archivers(mosquitto.url, topics, postgres, names=("arch-solo",)) as (archiver,),
        publisher(mosquitto.url) as pub,
    ):
        await pub.publish(topics.log_records("log-car12", ISSUER), encode(batch), qos=1)
        await pub.publish(topics.activation(UNIT, "a-v"), encode(genuine), qos=1)
        await wait_until(lambda: archiver.counters["stored.activation"] == 1)
        await pub.publish(topics.activation("car-7", "a-v"), encode(forged), qos=1)
        await wait_until(lambda: archiver.counters["conflict.activation"] == 1)
        await wait_until(lambda: archiver.counters["stored.log_batch"] == 1)
    proc = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "mesh", "archiver", "verify", "--db", postgres),
        *("--log-id", "log-car12"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "300"},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    text = out.decode()
    assert proc.returncode == 3, text  # intact, unsigned: the chain itself is untouched
    assert "1 conflicting copy refused" in text, text
    assert "activation a-v [other_issuer]" in text, text
    assert "gw-car-7" in text, text


async def test_conflicts_kept_per_source_are_bounded(postgres: str) -> None:
    """Past CONFLICTS_PER_SOURCE_HOUR distinct copies of one activation within an hour,
    refused copies are counted (conflict_not_kept) and not stored: a flood grows the table
    at most that fast."""
    from mesh.archive import store

    topics = Topics("mesh/v2")
    trigger = event(TriggerKind.WEAPON_DRAW, unit=UNIT)
    genuine = activation("a-cap", ActivationState.CONFIRMED, 3, trigger=trigger)
    extra = 5
    forged = [
        activation(
            "a-cap", ActivationState.CANCELLED, 0, issuer="gw-car-7", unit="car-7", trigger=trigger
        ).model_copy(update={"reason": f"copy {i}"})
        for i in range(store.CONFLICTS_PER_SOURCE_HOUR + extra)
    ]
    conn = await connect(postgres)
    try:
        await migrate(conn)

        def item(record: ActivationRecord) -> Any:
            return accept(topics, topics.activation(record.unit_id, "a-cap"), encode(record))

        await store.write(conn, [item(genuine)], "arch-test")
        result = await store.write(conn, [item(r) for r in forged], "arch-test")
    finally:
        await conn.close()
    assert result.counts["conflict.activation"] == len(forged)
    assert result.counts["conflict_not_kept.activation"] == extra
    assert len(result.conflicts) == store.CONFLICTS_PER_SOURCE_HOUR  # each new one described once
    assert count(postgres, "conflicts") == store.CONFLICTS_PER_SOURCE_HOUR
    assert rows(postgres, "SELECT state FROM activations") == [("confirmed",)]


async def test_made_up_names_do_not_lift_the_conflicts_cap_of_one_stolen_credential(
    postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thief holds gw-car-7's credential. It invents names the cap used to count
    against: activation ids it binds with a first copy of its own and then contradicts,
    and log ids it binds with a first batch and then sends another record 1 for. Each flood
    is kept only up to the cap (lowered to 5) of what the broker checked: its unit, its
    gateway. Car-12's own conflicts are still kept: one on its own row, and its genuine
    version of an activation the thief bound first (a squat), which counts against a cap
    of its own. Before, each made-up name had a cap of its own: all 3 x 12 were kept.
    Acks: the broker binds their camera level to the car's own cameras
    (test_a_stolen_bridge_credential_speaks_only_for_its_own_car_s_cameras); should a
    central ACL still grant ack/+/+, unsigned acks under 12 made-up camera ids share one
    cap (the trust store knows none of them), and a known camera's refused ack has its own."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from mesh.archive import store
    from mesh.archive.intake import Item, check_ack
    from mesh.journal.chain import GENESIS, record_hash

    cap, names = 5, 12
    monkeypatch.setattr(store, "CONFLICTS_PER_SOURCE_HOUR", cap)
    topics = Topics("mesh/v2")
    thief_unit, thief_gw = "car-7", "gw-car-7"

    def accepted(topic: str, payload: bytes) -> Item:
        item = accept(topics, topic, payload)
        assert item is not None
        return item

    def of_unit(record: ActivationRecord) -> Item:
        return accepted(topics.activation(record.unit_id, record.activation_id), encode(record))

    def log_batch(log_id: str, body: str) -> Item:
        at_ns = time.time_ns()
        digest = record_hash(GENESIS, 1, at_ns, kind="note", activation_id=None, body=body)
        record = LogBatchRecord(
            seq=1, prev_seq=0, at_ns=at_ns, kind="note", body=body, prev_hash=GENESIS, hash=digest
        )
        batch = LogBatch(
            log_id=log_id,
            unit_id=thief_unit,
            gateway_id=thief_gw,
            head_seq=1,
            sent_at_ns=at_ns,
            records=(record,),
        )
        return accepted(topics.log_records(log_id, thief_gw), encode(batch))

    camera_key = Ed25519PrivateKey.generate().public_key()
    trust = TrustStore([trusted_key(camera_key, KeyRole.CAMERA, "bwc-1")])

    def unsigned_ack(camera: str) -> Item:
        item = accepted(topics.ack(ISSUER, camera), encode(ack("a-1", camera)))
        return check_ack(item, trust, time.time_ns())

    trigger = event(TriggerKind.WEAPON_DRAW, unit=thief_unit)
    own = [
        activation(
            f"a-{i}",
            ActivationState.CONFIRMED,
            3,
            issuer=thief_gw,
            unit=thief_unit,
            trigger=trigger,
        )
        for i in range(names)
    ]
    # The same ids, now claiming car-12's gateway as issuer: each contradicts its first copy.
    claimed = [r.model_copy(update={"issuer": ISSUER}) for r in own]
    genuine = activation("a-genuine", ActivationState.CONFIRMED, 3)
    other_trigger = genuine.model_copy(
        update={"trigger": TriggerSummary.of(event(TriggerKind.TASER_ARM, unit=UNIT))}
    )
    # The thief bound a-squat first under its own unit; car-12's genuine version comes after.
    squatted = activation(
        "a-squat", ActivationState.PENDING, 0, issuer=thief_gw, unit=thief_unit, trigger=trigger
    )
    victims = activation("a-squat", ActivationState.CONFIRMED, 3)
    conn = await connect(postgres)
    try:
        await migrate(conn)
        await store.write(conn, [of_unit(r) for r in [*own, genuine, squatted]], "arch-test")
        await store.write(conn, [log_batch(f"log-{i}", "first") for i in range(names)], "arch-test")
        flood = [
            *(of_unit(r) for r in claimed),
            *(log_batch(f"log-{i}", "second") for i in range(names)),
            *(unsigned_ack(f"cam-{i}") for i in range(names)),
        ]
        result = await store.write(conn, flood, "arch-test")
        others = await store.write(
            conn, [of_unit(other_trigger), of_unit(victims), unsigned_ack("bwc-1")], "arch-test"
        )
    finally:
        await conn.close()
    for kind in ("activation", "log_record", "ack"):
        assert result.counts[f"conflict_not_kept.{kind}"] == names - cap, (kind, result.counts)
    assert rows(
        postgres, "SELECT kind, source, count(*) FROM conflicts GROUP BY 1, 2 ORDER BY 1, 2"
    ) == [
        ("ack", "camera:bwc-1", 1),
        ("ack", store.UNKNOWN_CAMERA_SOURCE, cap),
        ("activation", f"unit:{UNIT}", 1),  # car-12 sorts before car-7
        ("activation", f"unit:{UNIT} on unit:{thief_unit}", 1),
        ("activation", f"unit:{thief_unit}", cap),
        ("log_record", f"from:{thief_gw}", cap),
    ]
    assert not any(k.startswith("conflict_not_kept.") for k in others.counts), others.counts


def test_archiver_trust_option_names_a_bad_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mesh.cli.app import app
    from mesh.ops import logs

    db = "postgresql://nobody@127.0.0.1:1/none"
    base = ["archiver", "--log-format", "console", "--db", db, "--trust"]
    try:
        missing = CliRunner().invoke(app, [*base, str(tmp_path / "x")])
        assert missing.exit_code == 2
        assert "--trust" in missing.output
        bad = tmp_path / "trust.yaml"
        bad.write_text("version: 1\nkeys: [{key_id: nothex}]\n")
        result = CliRunner().invoke(app, [*base, str(bad)])
        assert result.exit_code == 2
        assert str(bad) in result.output
        assert "keys.0" in result.output
    finally:
        # The archiver set up its logs first, on the runner's stderr: back to the tests'.
        logs.configure("console", "warning")
