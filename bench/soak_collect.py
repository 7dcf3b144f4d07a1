"""What the soak hears and measures: triggers sent, receipts, final records, gateway
status (`Collector`), and the RSS and CPU of each group of processes (`sample`)."""

from __future__ import annotations

import json
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass, field

import psutil

from bridge.mqtt.client import Inbound
from bridge.topics import TopicKind, Topics
from mesh.protocol.codec import PayloadError, decode
from mesh.protocol.models import (
    ActivationRecord,
    ActivationState,
    GatewayStatus,
    ReceiptOutcome,
    TriggerReceipt,
)

STARTED = ("started", "already_recording")
MAX_RECORD_BYTES = 16 * 1024 * 1024


@dataclass
class Sent:
    n: int
    gateway: int
    kind: str
    at: float  # monotonic s, when the publish was handed to the client


@dataclass
class Final:
    at: float  # monotonic s, when the final record arrived here
    activation_id: str
    state: ActivationState
    expected: int
    started: int
    all_acked_ms: float | None
    merged: int


@dataclass
class Collector:
    """Receipts, final records, acks and gateway status, as dispatch would hear them."""

    topics: Topics
    ack_check: bool  # subscribed to every ack: check each record against them
    sent: dict[str, Sent] = field(default_factory=dict)
    receipts: dict[str, TriggerReceipt] = field(default_factory=dict)
    finals: dict[str, Final] = field(default_factory=dict)  # by event id
    finals_by_activation: dict[str, Final] = field(default_factory=dict)
    # Acks of activations whose final record has not arrived yet (dropped once checked).
    acks: dict[str, set[str]] = field(default_factory=dict)
    acks_seen: int = 0
    ack_mismatches: list[str] = field(default_factory=list)
    checked: set[str] = field(default_factory=set)
    status: dict[str, GatewayStatus] = field(default_factory=dict)
    rejected_payloads: Counter[str] = field(default_factory=Counter)

    def on_message(self, message: Inbound) -> None:
        parsed = self.topics.parse(message.topic)
        if parsed is None:
            return
        try:
            if parsed.kind is TopicKind.ACK:
                self._on_ack(parsed.args[1], message.payload)
            elif parsed.kind is TopicKind.ACTIVATION:
                if b'"state":"pending"' not in message.payload:
                    self._on_record(
                        decode(ActivationRecord, message.payload, max_bytes=MAX_RECORD_BYTES)
                    )
            elif parsed.kind is TopicKind.RECEIPT:
                receipt = decode(TriggerReceipt, message.payload)
                self.receipts.setdefault(receipt.event_id, receipt)
            elif parsed.kind is TopicKind.GATEWAY:
                status = decode(GatewayStatus, message.payload)
                self.status[status.gateway_id] = status
        except PayloadError as exc:
            self.rejected_payloads[f"{parsed.kind.value}.{exc.code}"] += 1

    def _on_ack(self, camera_id: str, payload: bytes) -> None:
        self.acks_seen += 1
        body = json.loads(payload)
        if body.get("status") in STARTED and body["activation_id"] not in self.checked:
            self.acks.setdefault(body["activation_id"], set()).add(camera_id)

    def _on_record(self, record: ActivationRecord) -> None:
        event_id = record.trigger.event_id
        if event_id in self.finals or record.state is ActivationState.CANCELLED:
            return
        started = [c.camera_id for c in record.cameras if c.expected and c.status in STARTED]
        final = Final(
            at=time.monotonic(),
            activation_id=record.activation_id,
            state=record.state,
            expected=sum(1 for c in record.cameras if c.expected),
            started=len(started),
            all_acked_ms=record.all_acked_ms,
            merged=record.merged_triggers,
        )
        self.finals[event_id] = final
        self.finals_by_activation[record.activation_id] = final
        # Every camera the record says started has said so itself, on the broker.
        if not self.ack_check:
            return
        heard = self.acks.pop(record.activation_id, set())
        self.checked.add(record.activation_id)
        missing = [c for c in started if c not in heard]
        if missing:
            self.ack_mismatches.append(f"{record.activation_id}: no ack heard from {missing}")

    def outcome(self, event_id: str) -> str:
        """'ok', 'merged', 'pending' (nothing final yet) or why the trigger is lost."""
        final = self.finals.get(event_id)
        receipt = self.receipts.get(event_id)
        if final is None and receipt is not None and receipt.outcome is ReceiptOutcome.SUPPRESSED:
            final = self.finals_by_activation.get(receipt.activation_id or "")
            if final is None:
                return "pending"
            return "merged" if complete(final) else f"merged into {final.state.value}"
        if receipt is not None and receipt.outcome is ReceiptOutcome.REJECTED:
            return f"rejected: {receipt.reason}"
        if final is None:
            return "pending"
        return "ok" if complete(final) else f"{final.state.value} {final.started}/{final.expected}"


def complete(final: Final) -> bool:
    return (
        final.state is ActivationState.CONFIRMED
        and final.expected > 0
        and final.started == final.expected
    )


# --- memory and CPU -----------------------------------------------------------------------
@dataclass
class Sample:
    at: float  # monotonic s
    rss_mb: dict[str, float]  # group -> summed RSS
    cpu_s: dict[str, float]  # group -> summed user+system CPU seconds so far
    rss_each_mb: dict[str, float]  # process name -> RSS
    busy_s: float  # CPU seconds the whole machine has been busy (all cores, anyone's)
    user_sys_s: dict[str, tuple[float, float]]  # group -> (user, system) CPU seconds so far


def sample(groups: dict[str, list[tuple[str, int]]]) -> Sample:
    rss: dict[str, float] = {}
    cpu: dict[str, float] = {}
    each: dict[str, float] = {}
    split: dict[str, tuple[float, float]] = {}
    for group, members in groups.items():
        rss[group] = cpu[group] = 0.0
        split[group] = (0.0, 0.0)
        for name, pid in members:
            with suppress(psutil.NoSuchProcess):
                proc = psutil.Process(pid)
                with proc.oneshot():
                    mb = proc.memory_info().rss / 2**20
                    times = proc.cpu_times()
                rss[group] += mb
                cpu[group] += times.user + times.system
                split[group] = (split[group][0] + times.user, split[group][1] + times.system)
                each[name] = mb
    machine = psutil.cpu_times()
    busy = sum(machine) - machine.idle - getattr(machine, "iowait", 0.0)
    return Sample(time.monotonic(), rss, cpu, each, busy, split)
