"""A receipt lost on its way to the archive is made again from the gateway's log, exactly
as the gateway sent it (mesh/archive/from_log.py): the real Coordinator answers triggers
and cancels, and what it published is compared with what the archive would make of its
log. The archive keys receipts by (event_id, at_ns): a copy made with another time would
be a second row, not a duplicate."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from bridge.topics import TopicKind
from mesh.archive.from_log import live_items
from mesh.decide.rejection import Rejection
from mesh.journal.records import RecordKind
from mesh.journal.store import read_records
from mesh.protocol.models import ReceiptOutcome, TriggerKind, TriggerReceipt
from mesh.security.trust import TrustStore
from tests.coordinator_helpers import (
    ISSUER,
    camera,
    inject_cancel,
    policy,
    running_coordinator,
    wire,
)
from tests.harness import UNIT, event

PATIENT = policy(ack_deadline_ms=2000, max_retries=3, command_ttl_s=30)


def _made_from(log: Path) -> list[tuple[TriggerReceipt, str]]:
    rows = live_items(read_records(log), ISSUER, UNIT, TrustStore())
    return [
        (item.model, item.raw)
        for item in rows.items
        if item.kind is TopicKind.RECEIPT and isinstance(item.model, TriggerReceipt)
    ]


async def test_every_receipt_the_gateway_sent_is_made_again_from_its_log(tmp_path: Path) -> None:
    log = tmp_path / "log.db"
    async with running_coordinator(log, [camera("bwc-1")], PATIENT) as rig:
        first = event(TriggerKind.WEAPON_DRAW, source_id="holster-1")
        accepted = await rig.coordinator.submit(first)
        assert accepted.outcome is ReceiptOutcome.ACCEPTED
        assert accepted.activation_id is not None
        merged = await rig.coordinator.submit(event(TriggerKind.WEAPON_DRAW, source_id="holster-1"))
        assert merged.outcome is ReceiptOutcome.SUPPRESSED
        assert merged.activation_pending is True
        refused = await rig.coordinator.submit(
            event(TriggerKind.TASER_ARM), untrusted=Rejection("bad_signature", "forged")
        )
        assert refused.outcome is ReceiptOutcome.REJECTED
        cancelled = inject_cancel(rig.coordinator, accepted.activation_id, by="officer-7")
        assert cancelled.outcome is ReceiptOutcome.ACCEPTED
        twice = inject_cancel(rig.coordinator, accepted.activation_id, by="officer-8")
        assert twice.outcome is ReceiptOutcome.REJECTED
        await rig.publisher.wait_for(lambda: len(rig.publisher.receipts()) == 5)
        sent = rig.publisher.receipts()
        sent_payloads = [
            s.payload.decode()
            for s in rig.publisher.delivered
            if isinstance(wire(s.payload), TriggerReceipt)
        ]
    # The accepted trigger's receipt goes out once its broadcast is under way, after the
    # merged one's: compared by key, not order.
    assert sorted(sent, key=_key) == sorted([accepted, merged, refused, cancelled, twice], key=_key)

    made = _made_from(log)
    # The same receipts, to the byte as they were sent.
    assert {_key(m): (m, raw) for m, raw in made} == {
        _key(r): (r, payload) for r, payload in zip(sent, sent_payloads, strict=True)
    }
    assert len(made) == len(sent)


def _key(receipt: TriggerReceipt) -> tuple[str, int]:
    return receipt.event_id, receipt.at_ns


async def test_a_log_written_before_receipts_were_made_from_it_makes_none_it_cannot_time(
    tmp_path: Path,
) -> None:
    """A cancel record without the time its receipt gave, and a suppressed one without
    whether its activation was pending, make no receipt (one with another time or without
    the flag would not be the one sent); the others are made."""
    log = tmp_path / "log.db"
    async with running_coordinator(log, [camera("bwc-1")], PATIENT) as rig:
        accepted = await rig.coordinator.submit(event(source_id="holster-1"))
        assert accepted.activation_id is not None
        await rig.coordinator.submit(event(source_id="holster-1"))
        inject_cancel(rig.coordinator, accepted.activation_id)
    records = []
    for record in read_records(log):
        body = record.body
        if record.kind == RecordKind.CANCEL:
            body = body.replace(f',"received_at_ns":"{_time_in(body)}"', "")
        if record.kind == RecordKind.SUPPRESSED:
            body = body.replace(',"activation_pending":true', "")
        records.append(replace(record, body=body))
    assert any('"received_at_ns"' not in r.body for r in records if r.kind == "cancel")
    assert any('"activation_pending"' not in r.body for r in records if r.kind == "suppressed")
    rows = live_items(records, ISSUER, UNIT, TrustStore())
    receipts = [i.model for i in rows.items if i.kind is TopicKind.RECEIPT]
    assert receipts == [accepted]


def _time_in(body: str) -> str:
    start = body.index('"received_at_ns":"') + len('"received_at_ns":"')
    return body[start : body.index('"', start)]


async def test_a_refused_trigger_gives_only_its_receipt_and_a_nul_is_refused_alone(
    tmp_path: Path,
) -> None:
    """Anyone who reaches a gateway can have a refused trigger logged: it gives its
    receipt, not a trigger row. A trigger holding a NUL character (which PostgreSQL's
    text cannot store) is refused here, alone, and its receipt still made; before, it
    failed the stretch's whole write, which was then done again row by row."""
    log = tmp_path / "log.db"
    nul = {"x": "a\x00b"}
    async with running_coordinator(log, [camera("bwc-1")], PATIENT) as rig:
        forged = event(TriggerKind.TASER_ARM).model_copy(update={"detail": nul})
        refused = await rig.coordinator.submit(forged, untrusted=Rejection("bad_signature", "x"))
        first = event(source_id="holster-1")
        accepted = await rig.coordinator.submit(first)
        repeat = event(source_id="holster-1").model_copy(update={"detail": nul})
        merged = await rig.coordinator.submit(repeat)
        assert merged.outcome is ReceiptOutcome.SUPPRESSED
    rows = live_items(read_records(log), ISSUER, UNIT, TrustStore())
    made = {(i.kind, getattr(i.model, "event_id", None)) for i in rows.items}
    assert (TopicKind.RECEIPT, forged.event_id) in made
    assert (TopicKind.TRIGGER, forged.event_id) not in made
    assert (TopicKind.TRIGGER, first.event_id) in made
    assert (TopicKind.RECEIPT, repeat.event_id) in made
    assert (TopicKind.TRIGGER, repeat.event_id) not in made
    assert [r for r in rows.refused if "NUL" in r] == [
        r for r in rows.refused if "(suppressed): its trigger holds a NUL character" in r
    ]
    assert len([r for r in rows.refused if "NUL" in r]) == 1
    assert refused.outcome is ReceiptOutcome.REJECTED
    assert accepted.outcome is ReceiptOutcome.ACCEPTED
