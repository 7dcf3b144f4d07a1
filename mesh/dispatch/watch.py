"""Watching activations the way dispatch does: over MQTT, from the published records."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import structlog

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink, ProtocolChoice
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import TopicKind, Topics
from mesh.protocol.codec import PayloadError, decode
from mesh.protocol.models import (
    ActivationRecord,
    ActivationState,
    ReceiptOutcome,
    TriggerReceipt,
)

_PENDING_MARK = b'"state":"pending"'
# A record names every camera involved (~270 bytes each): 1,000 cameras make ~270 KB.
MAX_RECORD_BYTES = 16 * 1024 * 1024


class ActivationWatcher:
    """Keeps the latest record of every activation and every trigger receipt it hears."""

    def __init__(
        self,
        url: BrokerUrl,
        topics: Topics,
        *,
        client_id: str,
        unit_id: str | None = None,
        protocol: ProtocolChoice = "auto",
        on_record: Callable[[ActivationRecord], None] | None = None,
        final_only: bool = False,
    ) -> None:
        self.topics = topics
        self.records: dict[str, ActivationRecord] = {}
        self.receipts: dict[str, TriggerReceipt] = {}
        self.counters: Counter[str] = Counter()
        self.on_record = on_record
        # Skip decoding progress updates (only the outcome is wanted): they name every
        # camera, so for a large fleet they are the bulk of the traffic.
        self.final_only = final_only
        # Set and replaced on every change: waiters re-check their condition.
        self._changed = asyncio.Event()
        activations = (
            topics.all_activations() if unit_id is None else topics.activation(unit_id, "+")
        )
        receipts = topics.all_receipts() if unit_id is None else topics.receipt(unit_id)
        self.link = MqttLink(
            url,
            LinkOptions(
                client_id=client_id,
                subscriptions=((activations, 1), (receipts, 1)),
                persistent_session=False,
                protocol=protocol,
            ),
            logger=structlog.get_logger("mesh.watch"),
        )
        self._log = structlog.get_logger("mesh.watch")

    async def run(self) -> None:
        await self.link.run(self._on_message)

    def _on_message(self, message: Inbound) -> None:
        parsed = self.topics.parse(message.topic)
        try:
            if parsed is not None and parsed.kind is TopicKind.ACTIVATION:
                if self.final_only and _PENDING_MARK in message.payload:
                    return
                record = decode(ActivationRecord, message.payload, max_bytes=MAX_RECORD_BYTES)
                current = self.records.get(record.activation_id)
                # A final record is never replaced by a progress update that arrives late;
                # a cancel, which can come after the outcome, replaces it.
                if (
                    current is None
                    or current.state is ActivationState.PENDING
                    or record.state is ActivationState.CANCELLED
                ):
                    self.records[record.activation_id] = record
                    if self.on_record is not None:
                        self.on_record(record)
            elif parsed is not None and parsed.kind is TopicKind.RECEIPT:
                receipt = decode(TriggerReceipt, message.payload)
                # The same trigger delivered again (a resend, QoS 1, or the car's trigger
                # echoed by a NATS central: docs/broker.md) is answered `suppressed`, and
                # that answer may come first (the original's waits for the log): an
                # accepted or rejected receipt is the decision and is kept over it.
                held = self.receipts.get(receipt.event_id)
                if held is None or held.outcome is ReceiptOutcome.SUPPRESSED:
                    self.receipts[receipt.event_id] = receipt
            else:
                return
        except PayloadError as exc:
            self.counters[f"rejected.{exc.code}"] += 1
            self._log.warning("payload rejected", topic=message.topic, reason=exc.reason)
            return
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_for(self, ready: Callable[[], bool], timeout_s: float) -> bool:
        """Wait until ``ready()`` holds, re-checking after every message; False on timeout."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not ready():
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            try:
                async with asyncio.timeout(remaining):
                    await self._changed.wait()
            except TimeoutError:
                return ready()
        return True

    async def final_record(self, activation_id: str, timeout_s: float) -> ActivationRecord | None:
        def done() -> bool:
            record = self.records.get(activation_id)
            return record is not None and record.state is not ActivationState.PENDING

        if await self.wait_for(done, timeout_s):
            return self.records[activation_id]
        return None

    async def receipt(self, event_id: str, timeout_s: float) -> TriggerReceipt | None:
        if await self.wait_for(lambda: event_id in self.receipts, timeout_s):
            return self.receipts[event_id]
        return None
