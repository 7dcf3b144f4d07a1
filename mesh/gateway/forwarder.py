"""Store-and-forward publishing for the gateway (docs/reliability.md).

The coordinator publishes three kinds of message, each with the delivery it needs:
- record-start commands: ``publish`` straight to the link, waiting out an outage only
  until the command expires (the activation log is their durable queue);
- progress records: ``publish_soon``, fire-and-forget (the next one supersedes it);
- escalations, receipts, final records, cancel notices: ``deliver``, through the
  durable outbox, sent in order whenever the link is up, and again after a restart; an
  activation's final record and escalations together, with its outcome, by
  ``deliver_final`` (before the log says `finished`).

An outbox whose file could not be opened is held in memory (mesh/gateway/outbox.py):
the forwarder says so once, loudly, and tries the file again on a back-off (REOPEN_FIRST_S
doubling up to REOPEN_MAX_S) until it opens and takes what memory held.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Collection, Iterator, Sequence

import structlog

from bridge.mqtt.client import LinkDown, MqttLink
from mesh.clock import NS, Clock
from mesh.gateway.outbox import MEMORY_MAX, Outbox, OutboxError, Queued

# Entries sent at once when the link returns: enough to empty a long outage's backlog
# quickly, few enough to stay inside the broker's in-flight window for one client.
_BATCH = 16
# Failed sends of one message while the link stayed up before it is given up.
_MAX_TRIES = 5
# An outbox held in memory tries its file again this long after it could not open it,
# then twice as long after each failure, up to REOPEN_MAX_S between attempts (an attempt
# costs one open of a file; a disk stays full for minutes, not milliseconds).
REOPEN_FIRST_S = 1.0
REOPEN_MAX_S = 5.0


def reopen_pauses() -> Iterator[float]:
    """The waits before each attempt to open the outbox's file again: REOPEN_FIRST_S,
    doubling, never more than REOPEN_MAX_S; endless."""
    pause = REOPEN_FIRST_S
    while True:
        yield pause
        pause = min(REOPEN_MAX_S, pause * 2)


class Forwarder:
    def __init__(self, link: MqttLink, outbox: Outbox, clock: Clock) -> None:
        self.link = link
        self.outbox = outbox
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self._wake.set()  # whatever an earlier run left in the outbox goes first
        self._tries: dict[int, int] = {}
        # Held while a batch is out (its entries' ids must stay valid until removed) and
        # while the outbox moves from memory to its file (which gives them new ids).
        self._batch_lock = asyncio.Lock()
        self._log = structlog.get_logger("mesh.forwarder")
        if not outbox.durable:
            self.counters["outbox.memory_fallbacks"] += 1
            self._log.error(
                "outbox file cannot be opened; messages wait in memory until it can, and are "
                "lost if the gateway stops first",
                path=str(outbox.path),
                error=outbox.fallback_error,
                memory_max=MEMORY_MAX,
            )

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
        """Send what is queued whenever the link is up, and, while the outbox is held in
        memory, try its file again on a back-off; forever."""
        reopening = None
        if not self.outbox.durable:
            # A task of its own: whatever becomes of it, sending goes on.
            reopening = asyncio.create_task(self._reopen_loop(), name="outbox-reopen")
        try:
            await self._send_loop()
        finally:
            if reopening is not None:
                reopening.cancel()
                await asyncio.gather(reopening, return_exceptions=True)

    async def _send_loop(self) -> None:
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

    async def _reopen_loop(self) -> None:
        """Until the outbox is in its file: wait, try it, wait longer (bounded)."""
        for pause in reopen_pauses():
            await asyncio.sleep(pause)
            async with self._batch_lock:
                try:
                    if self.reopen():
                        return
                except Exception as exc:  # a bug here must not end the attempts
                    self.counters["outbox.reopen_failures"] += 1
                    self._log.error(
                        "outbox reopen attempt failed", path=str(self.outbox.path), error=repr(exc)
                    )

    def reopen(self) -> bool:
        """One attempt to move an outbox held in memory into its file (not while a batch
        is out: its ids change); True once it is in its file."""
        if self.outbox.durable:
            return True
        depth = self.outbox.depth()
        moved = self.outbox.reopen()
        if moved is None:
            self.counters["outbox.reopen_failures"] += 1
            return False
        self._tries = {moved[i]: n for i, n in self._tries.items() if i in moved}
        self.counters["outbox.reopened"] += 1
        self._log.info(
            "outbox file open again: messages queued in memory moved into it",
            path=str(self.outbox.path),
            moved=len(moved),
            depth=depth,
        )
        self._wake.set()
        return True

    async def drain(self, timeout_s: float) -> None:
        """Before a clean stop: send what can be sent within ``timeout_s``."""
        if self.link.is_up and self.outbox.depth():
            with contextlib.suppress(LinkDown, TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await self._flush()

    async def _flush(self) -> None:
        while True:
            async with self._batch_lock:
                if not await self._send_batch():
                    return

    async def _send_batch(self) -> bool:
        """Send the oldest batch; False if nothing was queued."""
        batch = self.outbox.head(_BATCH)
        if not batch:
            return False
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
        return True

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
