"""Live rows from a gateway's synced log (pure): which of its records become the rows an
activation, ack, escalation, trigger or receipt published live would have made, and
whether the keys that signed the log may vouch for them (docs/archive.md, "Live rows from
the logs").

A log batch names its gateway itself, and any car may publish log batches, so nothing in
a synced log is taken on its word: its records are used only once a checkpoint signed by a
key the trust store holds for that gateway vouches for them, and only the gateway's own
activations (its id as issuer, its unit from the fleet file) become rows. An ack becomes a
row only if its camera's signature holds, as a live ack's must.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydantic import ValidationError

from bridge.topics import TopicKind
from mesh.archive.intake import MAX_SMALL_PAYLOAD, Item, check_ack
from mesh.journal.chain import ChainedRecord, ChainReport
from mesh.journal.records import (
    AckEntry,
    ActivationEntry,
    CancelEntry,
    EscalatedEntry,
    FinishedEntry,
    RecordKind,
    TriggerEntry,
)
from mesh.protocol.codec import PayloadError, decode
from mesh.protocol.models import CameraAck, ReceiptOutcome, TriggerEvent, TriggerReceipt
from mesh.security.checks import signed_envelope
from mesh.security.keys import key_id_of_hex
from mesh.security.trust import KeyRole, TrustedKey, TrustStore

# The kinds of record that become live rows.
LIVE_KINDS = frozenset(
    {
        RecordKind.ACTIVATION,
        RecordKind.SUPPRESSED,
        RecordKind.REFUSED,
        RecordKind.CANCEL,
        RecordKind.FINISHED,
        RecordKind.ACK,
        RecordKind.ESCALATED,
    }
)


# A NUL character in the JSON of a row: ``\u0000`` not itself escaped (``\\u0000`` is
# a backslash and the text u0000).
NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


@dataclass(frozen=True)
class SeenCheckpoint:
    """A checkpoint of the stretch: the key it names, when it says it signed, and when the
    archive stored it (its own clock: a thief can backdate ``at_ns``, not this)."""

    seq: int
    public_key: str  # hex, as the body names it
    at_ns: int
    archived_ns: int

    @classmethod
    def of(cls, seq: int, at_ns: int, body: str, archived_ns: int) -> SeenCheckpoint:
        try:
            named = json.loads(body).get("public_key")
        except (ValueError, AttributeError):
            named = None
        return cls(seq, named if isinstance(named, str) else "", at_ns, archived_ns)


@dataclass(frozen=True)
class VouchProblem:
    kind: str  # "copy": the copy does not verify (for good); "key": a key not trusted
    reason: str


def vouch_problem(
    report: ChainReport,
    checkpoints: Iterable[SeenCheckpoint],
    trust: TrustStore,
    gateway_id: str,
) -> VouchProblem | None:
    """Why the checked stretch of a log cannot vouch for its records as ``gateway_id``'s:
    it does not verify, or one of its checkpoints names a key the trust store does not
    hold for that gateway, or one not valid when it signed. A revoked key is judged by
    when the archive stored the checkpoint, not by the time the checkpoint gives itself
    (whoever holds a stolen key can write any time). None: it can."""
    if report.tampered:
        return VouchProblem("copy", f"the copy does not verify: {report.tampering[0]}")
    held = trust.find(KeyRole.GATEWAY, gateway_id)
    for seen in checkpoints:
        keys = [k for k in held if k.public_key == seen.public_key]
        if not keys:
            named = key_id_of_hex(seen.public_key) if seen.public_key else "(none named)"
            return VouchProblem(
                "key",
                f"checkpoint {seen.seq} is signed by key {named}, which the trust store "
                f"does not hold for gateway {gateway_id}",
            )
        reasons = [_invalid(k, seen) for k in keys]
        if all(r is not None for r in reasons):
            return VouchProblem("key", f"checkpoint {seen.seq} of {gateway_id}: {reasons[0]}")
    return None


def _invalid(key: TrustedKey, seen: SeenCheckpoint) -> str | None:
    revoked = key.revoked_at
    if revoked is not None and seen.archived_ns >= int(revoked.timestamp() * 1e9):
        return f"key {key.key_id} revoked at {revoked.isoformat()}, before the archive got it"
    problem = key.problem_at(seen.at_ns)
    return None if problem is None else problem.reason


@dataclass
class LiveRows:
    items: list[Item] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # records not made rows, and why


def live_items(
    records: Iterable[ChainedRecord], gateway_id: str, unit_id: str, trust: TrustStore
) -> LiveRows:
    """The archive items of the ACTIVATION and SUPPRESSED (each its trigger and its
    receipt), REFUSED and CANCEL (their receipts), FINISHED, ACK and ESCALATED records among
    ``records`` (the vouched-for records of ``gateway_id``'s log), as their live messages
    would give them."""
    out = LiveRows()
    for record in records:
        if record.kind not in LIVE_KINDS:
            continue
        try:
            items = _items(record, gateway_id, unit_id, trust)
        except (ValidationError, ValueError, PayloadError) as exc:
            reason = exc.reason if isinstance(exc, PayloadError) else str(exc).splitlines()[0]
            out.refused.append(f"record {record.seq} ({record.kind}): unreadable: {reason}")
            continue
        if isinstance(items, str):
            out.refused.append(f"record {record.seq} ({record.kind}): {items}")
            continue
        for item in items:
            if NUL_ESCAPE.search(item.raw):
                # PostgreSQL's text and jsonb hold no NUL: refused here, one by one, not
                # by the database after the stretch's write failed as a whole.
                out.refused.append(
                    f"record {record.seq} ({record.kind}): its {item.kind.value} holds a NUL "
                    "character, which PostgreSQL cannot store"
                )
            else:
                out.items.append(item)
    return out


def _items(
    record: ChainedRecord, gateway_id: str, unit_id: str, trust: TrustStore
) -> list[Item] | str:
    match record.kind:
        case RecordKind.ACTIVATION:
            entry = ActivationEntry.model_validate_json(record.body)
            accepted = _receipt(
                entry.trigger, ReceiptOutcome.ACCEPTED, record.activation_id, "", entry
            )
            return _trigger_and_receipt(entry.trigger, accepted, gateway_id, unit_id)
        case RecordKind.REFUSED:
            # Only the receipt: the trigger was refused (stale, unsigned, forged), and
            # anyone who reaches the gateway can have one logged.
            refused = TriggerEntry.model_validate_json(record.body)
            if refused.trigger.unit_id != unit_id:
                return _other_unit(refused.trigger, gateway_id, unit_id)
            rejected = _receipt(
                refused.trigger, ReceiptOutcome.REJECTED, None, refused.reason, refused
            )
            return [_receipt_item(rejected)]
        case RecordKind.SUPPRESSED:
            merged = TriggerEntry.model_validate_json(record.body)
            # A log written before the record said whether the activation was pending
            # cannot give the receipt as it was sent: only the trigger.
            suppressed = (
                None
                if merged.activation_pending is None
                else _receipt(
                    merged.trigger,
                    ReceiptOutcome.SUPPRESSED,
                    merged.activation_id,
                    merged.reason,
                    merged,
                    pending=merged.activation_pending,
                )
            )
            return _trigger_and_receipt(merged.trigger, suppressed, gateway_id, unit_id)
        case RecordKind.CANCEL:
            cancel = CancelEntry.model_validate_json(record.body)
            if cancel.received_at_ns is None:
                return []  # logged before the time its receipt gave was
            answer = TriggerReceipt.answering_cancel(
                cancel.cancel,
                unit_id,
                accepted=cancel.accepted,
                reason=cancel.reason,
                at_ns=cancel.received_at_ns,
            )
            return [_receipt_item(answer)]
        case _:
            item = _item(record, gateway_id, unit_id, trust)
            return item if isinstance(item, str) else [item]


def _receipt(
    trigger: TriggerEvent,
    outcome: ReceiptOutcome,
    activation_id: str | None,
    reason: str,
    entry: ActivationEntry | TriggerEntry,
    *,
    pending: bool | None = None,
) -> TriggerReceipt:
    """The receipt the gateway sent for ``trigger``: it is timed when the trigger was
    received, as the record says (``received_at_ns``)."""
    return TriggerReceipt.answering(
        trigger, outcome, activation_id, reason, entry.received_at_ns, pending=pending
    )


def _trigger_and_receipt(
    trigger: TriggerEvent, receipt: TriggerReceipt | None, gateway_id: str, unit_id: str
) -> list[Item] | str:
    # The trigger as received (its signature, if it came signed, is not in the log: the
    # row's jws stays empty), and what the gateway answered, both on its unit's topics.
    if trigger.unit_id != unit_id:
        return _other_unit(trigger, gateway_id, unit_id)
    items = [Item(TopicKind.TRIGGER, trigger, (trigger.unit_id,), trigger.model_dump_json())]
    return items if receipt is None else [*items, _receipt_item(receipt)]


def _other_unit(trigger: TriggerEvent, gateway_id: str, unit_id: str) -> str:
    return f"trigger of unit {trigger.unit_id}; the fleet file gives {gateway_id} {unit_id}"


def _receipt_item(receipt: TriggerReceipt) -> Item:
    return Item(TopicKind.RECEIPT, receipt, (receipt.unit_id,), receipt.model_dump_json())


def _item(record: ChainedRecord, gateway_id: str, unit_id: str, trust: TrustStore) -> Item | str:
    if record.kind == RecordKind.FINISHED:
        activation = FinishedEntry.model_validate_json(record.body).record
        problem = _owned("activation", activation.issuer, activation.unit_id, gateway_id, unit_id)
        if problem is not None:
            return problem
        args = (activation.unit_id, activation.activation_id)
        return Item(TopicKind.ACTIVATION, activation, args, activation.model_dump_json())
    if record.kind == RecordKind.ESCALATED:
        escalation = EscalatedEntry.model_validate_json(record.body).escalation
        problem = _owned("escalation", escalation.issuer, escalation.unit_id, gateway_id, unit_id)
        if problem is not None:
            return problem
        return Item(
            TopicKind.ESCALATION, escalation, (escalation.audience,), escalation.model_dump_json()
        )
    entry = AckEntry.model_validate_json(record.body)
    if entry.jws is None:
        ack, raw, jws = entry.ack, entry.ack.model_dump_json(), None
    else:
        jws = signed_envelope(entry.jws.model_dump_json().encode())
        if jws is None:
            return "its signed copy is not a JWS"
        payload = jws.payload_bytes
        ack = decode(CameraAck, payload, max_bytes=MAX_SMALL_PAYLOAD)
        raw = payload.decode()
    # As a live ack on the gateway's topic: checked against the camera's key, at the time
    # the gateway received it.
    item = check_ack(
        Item(TopicKind.ACK, ack, (gateway_id, ack.camera_id), raw, jws), trust, record.at_ns
    )
    if item.refusal is not None:
        return f"ack of {ack.camera_id} not trusted: {item.refusal.reason}"
    return item


def _owned(what: str, issuer: str, unit: str, gateway_id: str, unit_id: str) -> str | None:
    if issuer != gateway_id:
        return f"{what} issued by {issuer}, in the log of gateway {gateway_id}"
    if unit != unit_id:
        return f"{what} of unit {unit}; the fleet file gives gateway {gateway_id} unit {unit_id}"
    return None
