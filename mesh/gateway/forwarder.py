"""Store-and-forward publishing for the gateway (docs/reliability.md).

The coordinator publishes three kinds of message, each with the delivery it needs:
- record-start commands: ``publish`` straight to the link, waiting out an outage only
  until the command expires (the activation log is their durable queue);
- progress records: ``publish_soon``, fire-and-forget (the next one supersedes it);
- escalations, receipts, final records, cancel notices: ``deliver``, through the
  durable outbox, sent in order whenever the link is up, and again after a restart; an
  activation's final record and escalations together, with its outcome, by
  ``deliver_final`` (before the log says `finished`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Collection, Sequence

import structlog

from bridge.mqtt.client import LinkDown, MqttLink
from mesh.clock import NS, Clock
from mesh.gateway.outbox import Outbox, OutboxError, Queued

# Entries sent at once when the link returns: enough to empty a long outage's backlog
# quickly, few enough to stay inside the broker's in-flight window for one client.
_BATCH = 16
# Failed sends of one message while the link stayed up before it is given up.
_MAX_TRIES = 5


class Forwarder:
    def __init__(self, link: MqttLink, outbox: Outbox, clock: Clock) -> None:
        self.link = link
        self.outbox = outbox
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self._wake.set()  # whatever an earlier run left in the outbox goes first
        self._tries: dict[int, int] = {}
        self._log = structlog.get_logger("mesh.forwarder")

    # --- the coordinator's Publisher -------------------------------------------------
    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        wait_s: float | None = 10.0,
    ) -> None:
        await self.link.publish(topic, payload, qos=qos, retain=retain, wait_s=wait_s)

    def publish_soon(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        self.link.publish_soon(topic, payload, qos=qos, retain=retain)

    def deliver(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        expires_at_ns: int | None = None,
    ) -> None:
        """Queue durably, then send as soon as the link allows."""
        try:
            self.outbox.put(
                topic,
                payload,
                qos=qos,
                retain=retain,
                now_ns=self.clock.wall_ns(),
                expires_at_ns=expires_at_ns,
            )
        except OutboxError as exc:
            # Not durable, but not dropped: it still goes out if the link is up.
            self.counters["outbox.write_failures"] += 1
            self._log.error("message not queued durably, sending anyway", error=str(exc))
            self.link.publish_soon(topic, payload, qos=qos, retain=retain)
            return
        self.counters["outbox.queued"] += 1
        self._wake.set()

    def deliver_final(
        self, activation_id: str, outcome: bytes, messages: Sequence[tuple[str, bytes]]
    ) -> None:
        """An activation's final messages, queued durably at once with its outcome
        (``Outbox.put_final``), then sent as soon as the link allows."""
        try:
            self.outbox.put_final(activation_id, outcome, messages, now_ns=self.clock.wall_ns())
        except OutboxError as exc:
            self.counters["outbox.write_failures"] += 1
            self._log.error("outcome not queued durably, sending anyway", error=str(exc))
            for topic, payload in messages:
                self.link.publish_soon(topic, payload, qos=1)
            return
        self.counters["outbox.queued"] += len(messages)
        self._wake.set()

    def queued_final(self, activation_id: str) -> bytes | None:
        return self.outbox.queued_final(activation_id)

    def settle_final(self, activation_id: str) -> None:
        self.outbox.settle_final(activation_id)

    def keep_finals(self, activation_ids: Collection[str]) -> None:
        self.outbox.keep_finals(activation_ids)

    def depth(self) -> int:
        return self.outbox.depth()

    # --- sending ---------------------------------------------------------------------
    async def run(self) -> None:
        """Send what is queued whenever the link is up; forever."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.link.wait_up(None)
            try:
                await self._flush()
            except LinkDown:
                # Still queued: go again once the link is back.
                self._wake.set()
                await asyncio.sleep(0.05)

    async def drain(self, timeout_s: float) -> None:
        """Before a clean stop: send what can be sent within ``timeout_s``."""
        if self.link.is_up and self.outbox.depth():
            with contextlib.suppress(LinkDown, TimeoutError):
                await asyncio.wait_for(self._flush(), timeout_s)

    async def _flush(self) -> None:
        while batch := self.outbox.head(_BATCH):
            now = self.clock.wall_ns()
            expired = [q for q in batch if q.expired(now)]
            for queued in expired:
                self._expired(queued, now)
            fresh = [q for q in batch if not q.expired(now)]
            results = await asyncio.gather(
                *(
                    self.link.publish(q.topic, q.payload, qos=q.qos, retain=q.retain, wait_s=None)
                    for q in fresh
                ),
                return_exceptions=True,
            )
            sent = [q.id for q, result in zip(fresh, results, strict=True) if result is None]
            failed = [
                (q, r) for q, r in zip(fresh, results, strict=True) if isinstance(r, BaseException)
            ]
            refused = self._refused(failed) if self.link.is_up else []
            self.outbox.remove([q.id for q in expired] + sent + refused)
            self.counters["outbox.sent"] += len(sent)
            if failed:
                raise LinkDown(f"{len(failed)} queued message(s) not sent: {failed[0][1]!r}")

    def _refused(self, failed: list[tuple[Queued, BaseException]]) -> list[int]:
        """Messages that failed with the link up: the broker will not take them. After a
        few tries they are given up (loudly), so that one cannot hold back the rest."""
        given_up = []
        for queued, error in failed:
            tries = self._tries[queued.id] = self._tries.get(queued.id, 0) + 1
            if tries >= _MAX_TRIES:
                given_up.append(queued.id)
                del self._tries[queued.id]
                self.counters["outbox.undeliverable"] += 1
                self._log.error(
                    "queued message refused repeatedly; given up",
                    topic=queued.topic,
                    size=len(queued.payload),
                    error=repr(error),
                )
        return given_up

    def _expired(self, queued: Queued, now_ns: int) -> None:
        self.counters["outbox.expired"] += 1
        self._log.warning(
            "queued message expired before the link returned; not sent",
            topic=queued.topic,
            queued_for_s=round((now_ns - queued.queued_at_ns) / NS, 3),
        )
