"""The live rows a lost message left out, made from the gateway's synced log (real
PostgreSQL, real signed logs written by the gateway's ActivationLog): only records a
checkpoint signed by the gateway's trusted key vouches for, only the gateway's own
activations, only acks whose camera's signature holds. The attacks are played with a
real car's stolen credential and key (another gateway of the fleet)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bridge.topics import UNNAMED_SENDER, Topics
from mesh.archive import fill, store
from mesh.archive.db import Conn, connect
from mesh.archive.intake import Item, accept
from mesh.archive.migrate import migrate
from mesh.journal.chain import GENESIS, record_hash
from mesh.journal.records import (
    AckEntry,
    ActivationEntry,
    EscalatedEntry,
    FinishedEntry,
    RecordKind,
    ResumedEntry,
)
from mesh.journal.retention import NS_PER_DAY as DAY
from mesh.journal.retention import RetentionPass
from mesh.journal.signer import CheckpointSigner
from mesh.journal.store import ActivationLog, log_id_of, read_records
from mesh.journal.sync import batch_records
from mesh.protocol.codec import PayloadError, encode
from mesh.protocol.log_wire import LogBatch, LogBatchRecord
from mesh.protocol.models import (
    ActivationRecord,
    ActivationState,
    Escalation,
    EscalationReason,
    RecordStart,
    Targets,
    TriggerEvent,
    TriggerKind,
)
from mesh.security.signing import PayloadSigner
from mesh.security.trust import KeyRole, TrustStore, trusted_key
from tests.harness import event
from tests.integration.test_archive import ack, activation, rows
from tests.integration.test_log_sync import cli

TOPICS = Topics("mesh/v2")
GW, CAR = "gw-car-12", "car-12"
THIEF, THIEF_CAR = "gw-car-7", "car-7"  # a real car of the fleet whose credential was stolen
CAMERAS = ("bwc-0", "bwc-1", "bwc-2")
UNITS = {GW: CAR, THIEF: THIEF_CAR}


class Fleet:
    def __init__(self) -> None:
        self.keys = {n: Ed25519PrivateKey.generate() for n in (GW, THIEF, *CAMERAS)}
        self.trust = TrustStore(
            [
                trusted_key(self.keys[GW].public_key(), KeyRole.GATEWAY, GW),
                trusted_key(self.keys[THIEF].public_key(), KeyRole.GATEWAY, THIEF),
                *(trusted_key(self.keys[c].public_key(), KeyRole.CAMERA, c) for c in CAMERAS),
            ]
        )

    def signer(self, name: str) -> CheckpointSigner:
        return CheckpointSigner(self.keys[name])


_TRIGGERS: dict[str, TriggerEvent] = {}


@asynccontextmanager
async def archive(dsn: str) -> AsyncIterator[Conn]:
    """A connection to the test's archive, migrated; closed after."""
    conn = await connect(dsn)
    try:
        await migrate(conn)
        yield conn
    finally:
        await conn.close()


@asynccontextmanager
async def gateway_log(
    path: Path, signer: CheckpointSigner, **options: Any
) -> AsyncIterator[ActivationLog]:
    """A gateway's log signed by ``signer`` (checkpoints when the test asks); closed after."""
    log = ActivationLog(path, signer=signer, checkpoint_interval_s=3600, **options)
    try:
        yield log
    finally:
        log.close()


def finished(activation_id: str, *, issuer: str = GW, unit: str = CAR) -> ActivationRecord:
    """The final record of ``activation_id`` (the same trigger every time it is asked for)."""
    trigger = _TRIGGERS.setdefault(activation_id, event(TriggerKind.WEAPON_DRAW, unit=unit))
    return activation(
        activation_id, ActivationState.CONFIRMED, 3, issuer=issuer, unit=unit, trigger=trigger
    )


async def log_activations(
    log: ActivationLog, fleet: Fleet, ids: list[str], *, issuer: str = GW, unit: str = CAR
) -> None:
    """What a gateway logs of each activation: its acks (signed by each camera), then its
    final record; and one escalation."""
    now = time.time_ns()
    for activation_id in ids:
        record = finished(activation_id, issuer=issuer, unit=unit)
        trigger = _TRIGGERS[activation_id]
        command = RecordStart(
            activation_id=activation_id,
            issuer=issuer,
            trigger=record.trigger,
            issued_at_ns=now,
            origin=None,
            radius_m=150.0,
            pre_event_s=60,
            targets=Targets(units=(unit,)),
            expires_at_ns=now + 30 * 10**9,
        )
        body = ActivationEntry.json_of(trigger, now, command, [])
        log.append_json(RecordKind.ACTIVATION, activation_id, body, now)
        for camera in CAMERAS:
            answer = ack(activation_id, camera)
            jws = PayloadSigner(fleet.keys[camera]).seal(answer)
            body = AckEntry.json_of(answer, 12.5, "accepted", jws)
            log.append_json(RecordKind.ACK, activation_id, body, now)
        log.append(RecordKind.FINISHED, activation_id, FinishedEntry(record=record), now)
    escalation = Escalation(
        activation_id=ids[0],
        issuer=issuer,
        unit_id=unit,
        kind=TriggerKind.WEAPON_DRAW,
        camera_id="bwc-9",
        camera_unit_id=unit,
        reason=EscalationReason.NO_ACK,
        audience="dispatch",
        at_ns=now,
    )
    log.append(RecordKind.ESCALATED, ids[0], EscalatedEntry(escalation=escalation), now)
    await log.flush()


def batch_of(
    path: Path,
    gateway_id: str | None,
    after: int = 0,
    *,
    log_id: str | None = None,
    unit_id: str | None = None,
) -> Item:
    """The log's records after ``after``, as the gateway's sync sends them (claiming
    ``gateway_id`` and ``unit_id``)."""
    records = batch_records(r for r in read_records(path) if r.seq > after)
    log_id = log_id or log_id_of(path)
    batch = LogBatch(
        log_id=log_id,
        unit_id=unit_id,
        gateway_id=gateway_id,
        head_seq=records[-1].seq,
        sent_at_ns=time.time_ns(),
        records=records,
    )
    item = accept(TOPICS, TOPICS.log_records(log_id, gateway_id), encode(batch))
    assert item is not None
    return item


async def synced(conn: Conn, item: Item) -> None:
    await store.write(conn, [item], "arch-1")


async def filled(conn: Conn, log_id: str, fleet: Fleet) -> fill.FillOutcome:
    return await fill.fill_log(conn, log_id, trust=fleet.trust, units=UNITS, archived_by="arch-1")


async def test_the_live_rows_a_lost_message_left_out_are_made_from_the_vouched_log(
    tmp_path: Path, postgres: str
) -> None:
    fleet, path = Fleet(), tmp_path / "gw.db"
    async with archive(postgres) as conn, gateway_log(path, fleet.signer(GW)) as log:
        await log_activations(log, fleet, ["a-1", "a-2"])
        await log.checkpoint()
        await log_activations(log, fleet, ["a-3"])  # after the checkpoint: not vouched yet
        await log.flush()
        # a-1's final record came live; everything else was lost on the way.
        live = accept(TOPICS, TOPICS.activation(CAR, "a-1"), encode(finished("a-1")))
        assert live is not None
        await store.write(conn, [live], "arch-1")
        await synced(conn, batch_of(path, GW))
        log_id = log_id_of(path)

        outcome = await filled(conn, log_id, fleet)
        assert outcome.status == "filled", outcome
        assert outcome.refused == []
        held = rows(postgres, "SELECT activation_id, state, archived_by FROM activations")
        assert sorted(held) == [("a-1", "confirmed", "arch-1"), ("a-2", "confirmed", "arch-1/log")]
        acks = rows(postgres, "SELECT activation_id, camera_id, verified, signer FROM acks")
        assert sorted(a[:3] for a in acks) == [
            (a, c, True) for a in ("a-1", "a-2") for c in CAMERAS
        ]
        assert {a[3] for a in acks} == {PayloadSigner(fleet.keys[c]).key_id for c in CAMERAS}
        assert rows(postgres, "SELECT activation_id, audience FROM escalations") == [
            ("a-1", "dispatch")
        ]
        assert outcome.counts["superseded.activation"] == 1  # the live copy, kept
        # The trigger of each activation, as received (unsigned here: no jws), and the
        # receipt the gateway answered it with.
        assert sorted(rows(postgres, "SELECT event_id, unit_id, jws FROM triggers")) == sorted(
            (_TRIGGERS[a].event_id, CAR, None) for a in ("a-1", "a-2")
        )
        receipts = "SELECT event_id, outcome, activation_id, archived_by FROM receipts"
        assert sorted(rows(postgres, receipts)) == sorted(
            (_TRIGGERS[a].event_id, "accepted", a, "arch-1/log") for a in ("a-1", "a-2")
        )

        # Nothing new vouched for: nothing done. The next checkpoint vouches for a-3.
        assert (await filled(conn, log_id, fleet)).status in ("nothing_new", "not_vouched")
        before = int(rows(postgres, "SELECT vouched_seq FROM logs")[0][0])
        await log.checkpoint()
        await synced(conn, batch_of(path, GW, after=before))
        again = await filled(conn, log_id, fleet)
        assert again.status == "filled", again
        assert sorted(r[0] for r in rows(postgres, "SELECT activation_id FROM activations")) == [
            "a-1",
            "a-2",
            "a-3",
        ]
        assert int(rows(postgres, "SELECT count(*) FROM acks")[0][0]) == 9
        # Made once: a second pass over the same records (another archiver's) adds nothing.
        await conn.execute("UPDATE logs SET vouched_seq = 0, vouched_hash = NULL")
        await conn.commit()
        third = await filled(conn, log_id, fleet)
        assert third.status == "filled"
        assert not any(v for k, v in third.counts.items() if k.startswith("stored.")), third.counts
        assert int(rows(postgres, "SELECT count(*) FROM acks")[0][0]) == 9
        code, out = await cli("archiver", "verify", "--db", postgres, "--log-id", log_id)
        assert code == 0, out
        assert f"live rows made from its records through seq {third.vouched_seq}" in out


async def test_acks_made_from_the_log_are_not_held_to_the_live_ack_budget(
    tmp_path: Path, postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The live ack budget (store.ACKS_PER_CAMERA_HOUR, none left here) drops live acks
    only: the acks a gateway took and logged are all filled in from its log."""
    monkeypatch.setattr(store, "ACKS_PER_CAMERA_HOUR", 0)
    fleet, path = Fleet(), tmp_path / "gw.db"
    async with archive(postgres) as conn, gateway_log(path, fleet.signer(GW)) as log:
        await log_activations(log, fleet, ["a-1"])
        await log.checkpoint()
        await synced(conn, batch_of(path, GW))
        outcome = await filled(conn, log_id_of(path), fleet)
        assert outcome.status == "filled", outcome
        assert "dropped.ack_budget" not in outcome.counts, outcome.counts
        acks = rows(postgres, "SELECT activation_id, camera_id FROM acks")
        assert sorted(acks) == [("a-1", c) for c in CAMERAS]


async def test_a_log_forged_with_a_stolen_car_credential_makes_no_live_rows(
    tmp_path: Path, postgres: str
) -> None:
    """The thief holds car-7's broker credential and its gateway key. A log batch names
    its gateway itself, and any car may publish one: it forges gw-car-12's log (signed
    with car-7's key, or a key of its own), and logs of its own claiming car-12's unit
    or issuer, and an ack no camera signed. None of it becomes a live row."""
    fleet = Fleet()
    async with archive(postgres) as conn:

        async def forged(name: str, signer: CheckpointSigner, claims: str, **as_: str) -> str:
            path = tmp_path / f"{name}.db"
            async with gateway_log(path, signer) as log:
                await log_activations(log, fleet, [f"{name}-1"], **as_)
                await log.checkpoint()
            await synced(conn, batch_of(path, claims))
            return log_id_of(path)

        # gw-car-12's log, signed with the thief's own gateway key.
        with_thief_key = await forged("thief-key", fleet.signer(THIEF), GW)
        # ... and with a key the trust store never heard of.
        unknown = CheckpointSigner(Ed25519PrivateKey.generate())
        with_new_key = await forged("new-key", unknown, GW)
        # The thief's own log, genuinely signed, naming car-12's gateway or unit.
        as_issuer = await forged("as-issuer", fleet.signer(THIEF), THIEF, issuer=GW, unit=CAR)
        as_unit = await forged("as-unit", fleet.signer(THIEF), THIEF, issuer=THIEF, unit=CAR)

        for log_id in (with_thief_key, with_new_key):
            outcome = await filled(conn, log_id, fleet)
            assert outcome.status == "problem", outcome
            assert outcome.problem is not None
            assert f"does not hold for gateway {GW}" in outcome.problem
        for log_id in (as_issuer, as_unit):
            outcome = await filled(conn, log_id, fleet)
            assert outcome.status == "filled"
            assert any(f"unit {CAR}" in r or f"issued by {GW}" in r for r in outcome.refused)
        assert rows(postgres, "SELECT count(*) FROM activations") == [(0,)]
        assert rows(postgres, "SELECT count(*) FROM escalations") == [(0,)]
        held = rows(postgres, "SELECT unit_id FROM triggers")
        assert (CAR,) not in held  # the as-unit log's triggers named car-12
        # The problem is kept for an auditor, and the log is not looked at again.
        kept = rows(postgres, "SELECT log_id FROM logs WHERE vouch_problem IS NOT NULL")
        assert sorted(r[0] for r in kept) == sorted([with_thief_key, with_new_key])
        assert with_thief_key not in await fill.due_logs(conn)
        assert (await filled(conn, with_thief_key, fleet)).status == "known_problem"
        # Its chain is consistent (signed throughout, by the key it names): the key is what
        # is refused, and verify says so.
        code, out = await cli("archiver", "verify", "--db", postgres, "--log-id", with_thief_key)
        assert code == 0, out
        assert "not used for live rows" in out, out
        assert f"does not hold for gateway {GW}" in " ".join(out.split())

        # An ack no camera signed, in the thief's genuine log: not made a row.
        path = tmp_path / "unsigned-ack.db"
        async with gateway_log(path, fleet.signer(THIEF)) as log:
            answer = ack("t-9", "bwc-0")
            log.append_json(
                RecordKind.ACK, "t-9", AckEntry.json_of(answer, 1.0, "accepted"), time.time_ns()
            )
            await log.checkpoint()
        await synced(conn, batch_of(path, THIEF))
        outcome = await filled(conn, log_id_of(path), fleet)
        assert outcome.status == "filled"
        assert any("not trusted" in r for r in outcome.refused), outcome.refused
        # The acks the thief's genuine logs carried are real cameras' signed acks of its
        # own activations (issuer THIEF): those are rows; none for the unsigned one.
        assert rows(postgres, "SELECT count(*) FROM acks WHERE activation_id = 't-9'") == [(0,)]


async def test_a_gateway_outside_the_fleet_file_gets_no_rows(tmp_path: Path, postgres: str) -> None:
    fleet, path = Fleet(), tmp_path / "gw.db"
    async with archive(postgres) as conn, gateway_log(path, fleet.signer(GW)) as log:
        await log_activations(log, fleet, ["a-1"])
        await log.checkpoint()
        await synced(conn, batch_of(path, GW))
        outcome = await fill.fill_log(
            conn, log_id_of(path), trust=fleet.trust, units={}, archived_by="arch-1"
        )
        assert outcome.status == "unknown_gateway"
        assert rows(postgres, "SELECT count(*) FROM activations") == [(0,)]


def test_archiver_fleet_option_needs_the_trust_store_and_names_a_bad_file(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mesh.cli.app import app
    from mesh.ops import logs

    db = "postgresql://nobody@127.0.0.1:1/none"
    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text(f"gateways: [{{id: {GW}, unit: {CAR}}}]\n")
    trust_file = tmp_path / "trust.yaml"
    Fleet().trust.save(trust_file)
    base = ["archiver", "--log-format", "console", "--db", db]
    try:
        alone = CliRunner().invoke(app, [*base, "--fleet", str(fleet_file)])
        assert alone.exit_code == 2
        assert "--fleet needs --trust" in alone.output
        bad = tmp_path / "bad.yaml"
        bad.write_text("gateways: [{id: gw-1}]\n")  # no unit
        result = CliRunner().invoke(app, [*base, "--trust", str(trust_file), "--fleet", str(bad)])
        assert result.exit_code == 2
        assert str(bad) in result.output
        assert "gateways.0" in result.output
    finally:
        # The archiver set up its logs first, on the runner's stderr: back to the tests'.
        logs.configure("console", "warning")


# --- review findings, played -----------------------------------------------------------------
def junk_batch(log_id: str, claims: str, seq: int = 10**9) -> Item:
    """One record no one signed, consistent with its own hash, on ``log_id``, claiming
    gateway ``claims``: what any car's credential can send."""
    now = time.time_ns()
    digest = record_hash(GENESIS, seq, now, kind="note", activation_id=None, body="{}")
    record = LogBatchRecord(
        seq=seq, prev_seq=seq - 1, at_ns=now, kind="note", body="{}", prev_hash=GENESIS, hash=digest
    )
    batch = LogBatch(
        log_id=log_id, gateway_id=claims, head_seq=seq, sent_at_ns=now, records=(record,)
    )
    item = accept(TOPICS, TOPICS.log_records(log_id, claims), encode(batch))
    assert item is not None
    return item


def as_thief(junk: LogBatch, victim: str, **update: object) -> Item:
    """``junk`` on ``victim``'s log, sent with the thief's credential, naming its unit."""
    claim = encode(junk.model_copy(update={"unit_id": THIEF_CAR, **update}))
    item = accept(TOPICS, TOPICS.log_records(victim, THIEF), claim)
    assert item is not None
    return item


def thief_refused(victim: str, whose: str) -> list[tuple[str | None, int, str | None]]:
    """The progress a refused batch of the thief's reports: no watermark, and why."""
    return [
        (
            THIEF,
            0,
            f"log {victim} is another {whose}'s: the archive stores none of its "
            f"batches from {THIEF}",
        )
    ]


async def test_a_revoked_key_vouches_for_nothing_whatever_time_its_checkpoints_give(
    tmp_path: Path, postgres: str
) -> None:
    """car-7's key is revoked an hour ago; the thief writes a log whose checkpoints say
    they were signed two hours ago. The archive judges the revocation by when it got
    them: nothing is made."""
    fleet, path = Fleet(), tmp_path / "thief.db"
    fleet.trust.revoke(
        PayloadSigner(fleet.keys[THIEF]).key_id, datetime.now(UTC) - timedelta(hours=1)
    )
    backdated = time.time_ns() - 2 * 3600 * 10**9
    async with (
        archive(postgres) as conn,
        gateway_log(path, fleet.signer(THIEF), wall_ns=lambda: backdated) as log,
    ):
        await log_activations(log, fleet, ["fake-1"], issuer=THIEF, unit=THIEF_CAR)
        await log.checkpoint()
        await synced(conn, batch_of(path, THIEF))
        outcome = await filled(conn, log_id_of(path), fleet)
        assert outcome.status == "problem", outcome
        assert "revoked" in (outcome.problem or "")
        assert rows(postgres, "SELECT count(*) FROM activations") == [(0,)]


async def test_a_row_postgresql_refuses_is_refused_alone(tmp_path: Path, postgres: str) -> None:
    """A camera signs an ack whose reason holds a NUL (PostgreSQL's text refuses it): that
    ack is refused before the write (from_log), every other row of the stretch is made in
    the one write, and the mark moves on."""
    fleet, path = Fleet(), tmp_path / "gw.db"
    async with archive(postgres) as conn, gateway_log(path, fleet.signer(GW)) as log:
        await log_activations(log, fleet, ["a-1"])
        evil = ack("a-1", "bwc-0", attempt=7).model_copy(update={"reason": "x\x00y"})
        body = AckEntry.json_of(
            evil, 1.0, "accepted", PayloadSigner(fleet.keys["bwc-0"]).seal(evil)
        )
        log.append_json(RecordKind.ACK, "a-1", body, time.time_ns())
        await log.checkpoint()
        await synced(conn, batch_of(path, GW))
        outcome = await filled(conn, log_id_of(path), fleet)
        assert outcome.status == "filled", outcome
        assert outcome.refused == [
            "record 7 (ack): its ack holds a NUL character, which PostgreSQL cannot store"
        ]
        assert rows(postgres, "SELECT count(*) FROM acks") == [(3,)]
        assert rows(postgres, "SELECT count(*) FROM activations") == [(1,)]
        assert (await filled(conn, log_id_of(path), fleet)).status == "nothing_new"


async def test_another_car_cannot_write_into_a_log_bound_to_its_gateway(
    tmp_path: Path, postgres: str
) -> None:
    """The thief (gw-car-7's credential: the broker lets it send batches only under its
    own name) sends a record on gw-car-12's log id at the seq the log's next record will
    take. Before, it was stored: the genuine record was then refused as a conflict, the
    watermark told gw-car-12 its record was archived, and the log was never filled past
    it. Now the whole batch is refused, and the log goes on as if it had never come."""
    fleet, path = Fleet(), tmp_path / "victim.db"
    async with archive(postgres) as conn, gateway_log(path, fleet.signer(GW)) as log:
        await log_activations(log, fleet, ["v-1"])
        await log.checkpoint()
        await synced(conn, batch_of(path, GW))
        victim, head = log_id_of(path), max(r.seq for r in read_records(path))
        junk = junk_batch(victim, THIEF, seq=head + 1).model
        assert isinstance(junk, LogBatch)
        planted = await store.write(conn, [as_thief(junk, victim)], "arch-1")
        # Sent again (as a sync resends): the same records are one kept copy.
        await store.write(conn, [as_thief(junk, victim, sent_at_ns=1)], "arch-1")
        assert planted.counts["conflict.log_batch"] == 1
        # No watermark for the thief: a refusal (not retained), saying why.
        progress = [(p.gateway_id, p.synced_seq, p.refused) for p in planted.logs]
        assert progress == thief_refused(victim, "gateway")
        assert rows(postgres, "SELECT gateway_id, unit_id, head_seq FROM logs") == [
            (GW, None, head)
        ]
        assert rows(postgres, "SELECT count(*) FROM log_records WHERE seq > %s", (head,)) == [(0,)]
        assert rows(postgres, "SELECT kind, code, issuer, copies, detail FROM conflicts") == [
            (
                "log_batch",
                "other_gateway",
                GW,
                2,
                f"log {victim} is gateway {GW}'s: a batch from {THIEF} naming unit "
                f"{THIEF_CAR} (records {head + 1}-{head + 1}) was not stored",
            )
        ]

        await log_activations(log, fleet, ["v-2"])
        await log.checkpoint()
        genuine = await store.write(conn, [batch_of(path, GW, after=head)], "arch-1")
        assert genuine.counts["conflict.log_record"] == 0, genuine.conflicts
        last = max(r.seq for r in read_records(path))
        assert [(p.gateway_id, p.synced_seq) for p in genuine.logs] == [(GW, last)]
        outcome = await filled(conn, victim, fleet)
        assert outcome.status == "filled", outcome
        assert rows(postgres, "SELECT activation_id FROM activations ORDER BY 1") == [
            ("v-1",),
            ("v-2",),
        ]


async def test_a_log_bound_to_no_gateway_yet_is_bound_only_by_its_own_unit(
    tmp_path: Path, postgres: str
) -> None:
    """gw-car-12's log was synced before batches named their gateway: the archive holds it
    as car-12's, bound to no gateway. The thief (gw-car-7, whose unit the fleet file says
    is car-7; the archiver refuses a batch of it naming car-12, test_archive's
    unit_mismatch test) sends a batch on that log id naming its own unit: before, that
    bound the log to the thief, and gw-car-12's own batches were refused from then on.
    Now it is refused (other_unit) and changes nothing; gw-car-12's next batch binds it."""
    fleet, path = Fleet(), tmp_path / "legacy.db"
    async with archive(postgres) as conn, gateway_log(path, fleet.signer(GW)) as log:
        await log_activations(log, fleet, ["l-1"])
        await log.checkpoint()
        await synced(conn, batch_of(path, None, unit_id=CAR))  # an older gateway's sync
        victim, head = log_id_of(path), max(r.seq for r in read_records(path))
        assert rows(postgres, "SELECT gateway_id, unit_id FROM logs") == [(None, CAR)]
        junk = junk_batch(victim, THIEF, seq=head + 1).model
        assert isinstance(junk, LogBatch)
        planted = await store.write(conn, [as_thief(junk, victim)], "arch-1")
        assert planted.counts["conflict.log_batch"] == 1
        progress = [(p.gateway_id, p.synced_seq, p.refused) for p in planted.logs]
        assert progress == thief_refused(victim, "unit")
        assert rows(postgres, "SELECT gateway_id, unit_id, head_seq FROM logs") == [
            (None, CAR, head)
        ]
        assert rows(postgres, "SELECT count(*) FROM log_records WHERE seq > %s", (head,)) == [(0,)]
        assert rows(postgres, "SELECT code, unit_id, issuer FROM conflicts") == [
            ("other_unit", CAR, None)
        ]

        await log_activations(log, fleet, ["l-2"])
        await log.checkpoint()
        genuine = await store.write(conn, [batch_of(path, GW, after=head, unit_id=CAR)], "arch-1")
        last = max(r.seq for r in read_records(path))
        assert [(p.gateway_id, p.synced_seq, p.refused) for p in genuine.logs] == [(GW, last, None)]
        assert rows(postgres, "SELECT gateway_id, unit_id FROM logs") == [(GW, CAR)]


def test_a_batch_naming_another_gateway_than_its_topic_is_refused() -> None:
    """The name on the topic is the one the broker checked (docs/broker.md): a batch that
    claims another gateway is refused at intake."""
    batch = junk_batch("log-1", GW).model
    with pytest.raises(PayloadError) as refused:
        accept(TOPICS, TOPICS.log_records("log-1", THIEF), encode(batch))
    assert refused.value.code == "gateway_mismatch"
    assert "batch from gateway 'gw-car-12' on the topic of gateway 'gw-car-7'" in str(refused.value)
    with pytest.raises(PayloadError):
        accept(TOPICS, TOPICS.log_records("log-1", None), encode(batch))
    # The name of logs sent without a gateway is no gateway's.
    unnamed = batch.model_copy(update={"gateway_id": UNNAMED_SENDER})
    with pytest.raises(PayloadError) as reserved:
        accept(TOPICS, TOPICS.log_records("log-1", None), encode(unnamed))
    assert reserved.value.code == "reserved_id"
    # Log batches are never signed (their checkpoints are, inside the log): one wrapped in
    # a JWS is not unwrapped, it is refused as the payload it is not.
    sealed = PayloadSigner(Ed25519PrivateKey.generate()).seal(batch).to_bytes()
    with pytest.raises(PayloadError):
        accept(TOPICS, TOPICS.log_records("log-1", GW), sealed)


async def test_logs_that_cannot_be_filled_yet_leave_the_sweep_until_they_grow(
    tmp_path: Path, postgres: str
) -> None:
    fleet, path = Fleet(), tmp_path / "gw.db"
    async with archive(postgres) as conn, gateway_log(path, fleet.signer(GW)) as log:
        junk = [f"junk{i:04d}" for i in range(3)]
        for log_id in junk:
            await synced(conn, junk_batch(log_id, "gw-nobody", seq=1))
        await log_activations(log, fleet, ["v-1"])
        await synced(conn, batch_of(path, GW))  # no checkpoint yet
        for log_id in await fill.due_logs(conn, limit=3):  # the junk, oldest first
            assert (await filled(conn, log_id, fleet)).status == "unknown_gateway"
        assert await fill.due_logs(conn, limit=3) == [log_id_of(path)]
        assert (await filled(conn, log_id_of(path), fleet)).status == "not_vouched"
        assert await fill.due_logs(conn) == []
        before = int(
            rows(postgres, "SELECT synced_seq FROM logs WHERE gateway_id = %s", (GW,))[0][0]
        )
        await log.checkpoint()  # it grows: due again, and filled
        await synced(conn, batch_of(path, GW, after=before))
        assert await fill.due_logs(conn) == [log_id_of(path)]
        assert (await filled(conn, log_id_of(path), fleet)).status == "filled"


async def test_a_log_refused_for_its_key_is_checked_again_after_a_restart(
    tmp_path: Path, postgres: str
) -> None:
    """The gateway signed with a key the archivers' trust store did not hold yet (a
    rotation): refused; once the store holds it, an archiver that starts checks again."""
    fleet, path = Fleet(), tmp_path / "gw.db"
    new_key = Ed25519PrivateKey.generate()
    async with archive(postgres) as conn, gateway_log(path, CheckpointSigner(new_key)) as log:
        await log_activations(log, fleet, ["a-1"])
        await log.checkpoint()
        await synced(conn, batch_of(path, GW))
        assert (await filled(conn, log_id_of(path), fleet)).status == "problem"
        fleet.trust.add(trusted_key(new_key.public_key(), KeyRole.GATEWAY, GW))
        assert await fill.forget_key_problems(conn) == 1
        assert await fill.due_logs(conn) == [log_id_of(path)]
        assert (await filled(conn, log_id_of(path), fleet)).status == "filled"
        assert rows(postgres, "SELECT activation_id FROM activations") == [("a-1",)]


async def test_a_trigger_made_from_the_log_gets_its_signature_from_the_live_copy(
    tmp_path: Path, postgres: str
) -> None:
    fleet, path = Fleet(), tmp_path / "gw.db"
    async with archive(postgres) as conn, gateway_log(path, fleet.signer(GW)) as log:
        await log_activations(log, fleet, ["a-1"])
        await log.checkpoint()
        await synced(conn, batch_of(path, GW))
        await filled(conn, log_id_of(path), fleet)
        trigger = _TRIGGERS["a-1"]
        assert rows(postgres, "SELECT jws, archived_by FROM triggers") == [(None, "arch-1/log")]
        # Another trigger signed under the same event_id (another source) replaces nothing.
        other = trigger.model_copy(update={"observed_at_ns": trigger.observed_at_ns + 1})
        forged = accept(
            TOPICS, TOPICS.trigger(CAR), PayloadSigner(fleet.keys[GW]).seal(other).to_bytes()
        )
        assert forged is not None
        assert (await store.write(conn, [forged], "arch-2")).counts["duplicate.trigger"] == 1
        assert rows(postgres, "SELECT jws, archived_by FROM triggers") == [(None, "arch-1/log")]
        signed = PayloadSigner(fleet.keys[GW]).seal(trigger).to_bytes()
        late = accept(TOPICS, TOPICS.trigger(CAR), signed)
        assert late is not None
        twice = await store.write(conn, [late, late], "arch-2")  # a redelivery, twice
        assert twice.counts["stored.trigger"] == 1
        held = rows(postgres, "SELECT jws IS NOT NULL, archived_by FROM triggers")
        assert held == [(True, "arch-2")]
        again = await store.write(conn, [late], "arch-1")
        assert again.counts["duplicate.trigger"] == 1


async def test_a_log_whose_start_the_gateway_s_retention_removed_is_filled(
    tmp_path: Path, postgres: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A log first synced after the gateway's retention removed its oldest records (a log
    synced by hand, long after): it starts with a gap that only the retention record
    further on accounts for, beyond the first stretch (made short here, as a long log's
    would be). The window starts at its first record, the stretch that cannot be judged
    alone is judged with the whole log, and the log is filled, not marked as a copy that
    does not verify."""
    monkeypatch.setattr(fill, "FILL_RECORDS_MAX", 4)
    fleet, path = Fleet(), tmp_path / "gw.db"
    now = time.time_ns()
    async with archive(postgres) as conn, gateway_log(path, fleet.signer(GW)) as log:
        for i in range(10):  # 40 to 31 days old
            entry = ResumedEntry(reason="old", acks_recovered=i)
            await log.append_durable(RecordKind.RESUMED, f"old-{i}", entry, now - (40 - i) * DAY)
        await log.checkpoint()
        await log_activations(log, fleet, ["a-1"])
        await log.checkpoint()
        assert (await log.prune(RetentionPass(30, now)))["removed"] == 10
        await log_activations(log, fleet, ["a-2"])
        await log.checkpoint()
        left = list(read_records(path))
        assert left[0].seq > 1
        records, prev = [], 0  # as the gateway's sync sends them: each names its predecessor
        for r in left:
            records.append(
                LogBatchRecord(
                    seq=r.seq,
                    prev_seq=prev,
                    at_ns=r.at_ns,
                    kind=r.kind,
                    activation_id=r.activation_id,
                    body=r.body,
                    prev_hash=r.prev_hash,
                    hash=r.hash,
                )
            )
            prev = r.seq
        batch = LogBatch(
            log_id=log_id_of(path),
            gateway_id=GW,
            head_seq=prev,
            sent_at_ns=now,
            records=tuple(records),
        )
        item = accept(TOPICS, TOPICS.log_records(batch.log_id, GW), encode(batch))
        assert item is not None
        await synced(conn, item)
        assert rows(postgres, "SELECT synced_seq FROM logs") == [(prev,)]
        outcome = await filled(conn, log_id_of(path), fleet)
        while outcome.status == "filled":
            outcome = await filled(conn, log_id_of(path), fleet)
        assert rows(postgres, "SELECT vouched_seq, vouch_problem FROM logs") == [(prev, None)]
        assert sorted(r[0] for r in rows(postgres, "SELECT activation_id FROM activations")) == [
            "a-1",
            "a-2",
        ]
