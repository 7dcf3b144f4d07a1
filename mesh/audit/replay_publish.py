"""``audit replay --publish``: history re-published for training and dispatch review.

Only what dispatch watches is sent (presence, receipts, activation records, escalations),
under a prefix of its own, never retained. Commands, triggers, cancels and acks are never
sent: nothing a gateway or a camera acts on, so a replay cannot start or stop a recording.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from bridge.topics import DEFAULT_PREFIX, Topics
from mesh.clock import NS
from mesh.decide.activation import ActivationTracker
from mesh.journal.records import (
    ActivationEntry,
    EscalatedEntry,
    FinishedEntry,
    RecordKind,
    StartedEntry,
    TriggerEntry,
)
from mesh.journal.store import LogError, LogRecord, reading
from mesh.protocol.codec import encode
from mesh.protocol.models import ReceiptOutcome, TriggerReceipt


def replay_topics(replay_prefix: str, live_prefix: str) -> Topics:
    """``replay/`` + ``mesh/v2`` → ``replay/mesh/v2``. Refuses to land on a live prefix."""
    head = replay_prefix.strip("/")
    if not head:
        raise ValueError("the replay prefix must not be empty: history is never re-sent live")
    return Topics(f"{head}/{live_prefix}")


@dataclass(frozen=True)
class Outbound:
    at_ns: int
    topic: str
    payload: bytes


def messages(records: Iterable[LogRecord], replay_prefix: str) -> Iterable[Outbound]:
    """The messages to re-publish, in log order, each with its original time."""
    topics = replay_topics(replay_prefix, DEFAULT_PREFIX)
    unit = ""
    for record in records:
        with reading(record):
            match record.kind:
                case RecordKind.STARTED:
                    started = StartedEntry.model_validate_json(record.body)
                    topics = replay_topics(replay_prefix, started.topic_prefix)
                    unit = started.unit_id
                case RecordKind.PRESENCE:
                    data = json.loads(record.body)
                    camera = data.get("camera_id") if isinstance(data, dict) else None
                    if not isinstance(camera, str):
                        raise LogError(f"record {record.seq} (presence) names no camera_id")
                    if not data.get("removed"):
                        yield Outbound(record.at_ns, topics.presence(camera), record.body.encode())
                case RecordKind.ACTIVATION:
                    entry = ActivationEntry.model_validate_json(record.body)
                    trigger_unit = unit or entry.trigger.unit_id
                    receipt = _receipt(entry.trigger.event_id, trigger_unit, record.at_ns)
                    receipt = receipt.model_copy(
                        update={
                            "outcome": ReceiptOutcome.ACCEPTED,
                            "activation_id": entry.command.activation_id,
                        }
                    )
                    yield Outbound(record.at_ns, topics.receipt(trigger_unit), encode(receipt))
                    pending = ActivationTracker(
                        entry.command,
                        [t.decision() for t in entry.targets],
                        unit_id=trigger_unit,
                        accepted_mono_ns=0,
                    ).record()
                    yield Outbound(
                        record.at_ns,
                        topics.activation(trigger_unit, entry.command.activation_id),
                        encode(pending),
                    )
                case RecordKind.SUPPRESSED | RecordKind.REFUSED:
                    logged = TriggerEntry.model_validate_json(record.body)
                    outcome = (
                        ReceiptOutcome.SUPPRESSED
                        if record.kind == RecordKind.SUPPRESSED
                        else ReceiptOutcome.REJECTED
                    )
                    receipt = _receipt(
                        logged.trigger.event_id, logged.trigger.unit_id, record.at_ns
                    )
                    receipt = receipt.model_copy(
                        update={
                            "outcome": outcome,
                            "activation_id": logged.activation_id,
                            "reason": logged.reason,
                        }
                    )
                    yield Outbound(
                        record.at_ns, topics.receipt(logged.trigger.unit_id), encode(receipt)
                    )
                case RecordKind.ESCALATED:
                    escalation = EscalatedEntry.model_validate_json(record.body).escalation
                    yield Outbound(
                        record.at_ns, topics.escalation(escalation.audience), encode(escalation)
                    )
                case RecordKind.FINISHED:
                    final = FinishedEntry.model_validate_json(record.body).record
                    yield Outbound(
                        record.at_ns,
                        topics.activation(final.unit_id, final.activation_id),
                        encode(final),
                    )


def _receipt(event_id: str, unit_id: str, at_ns: int) -> TriggerReceipt:
    return TriggerReceipt(
        event_id=event_id, unit_id=unit_id, outcome=ReceiptOutcome.ACCEPTED, at_ns=at_ns
    )


class Sender(Protocol):
    """Anything with MqttLink's ``publish``."""

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None: ...


async def publish_history(
    outbound: Iterable[Outbound],
    link: Sender,
    *,
    speed: float,
    max_gap_s: float = 5.0,
) -> int:
    """Send at ``speed`` times the original pace; a quiet stretch waits at most
    ``max_gap_s`` (a log spans days). Returns how many messages were sent."""
    sent = 0
    previous: int | None = None
    for message in outbound:
        if previous is not None and message.at_ns > previous:
            await asyncio.sleep(min((message.at_ns - previous) / NS / speed, max_gap_s))
        previous = message.at_ns
        await link.publish(message.topic, message.payload, qos=1, retain=False)
        sent += 1
    return sent
