"""The archiver daemon: archived topics in over a shared subscription, PostgreSQL out.

Several archivers subscribe as one group (``$share/archivers/…``): the broker gives each
message to one of them, so they split the load, and a redelivered message that reaches
the other one is still stored once (every write is idempotent, see store.py).

Messages are decoded and checked as they arrive (a bad one is logged with its reason,
counted, and dropped), queued, and written by one task in groups. MQTT acknowledges a
QoS 1 message on receipt, before it is stored; so while PostgreSQL is unreachable the
queue holds what arrived and the write is retried with backoff, with an error logged at
every attempt. Only a full queue drops messages (counted, logged). Edge logs lose nothing
even then: their sync resends until the archive's watermark says the records are stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg
import structlog

from bridge.mqtt.client import Inbound, LinkOptions, MqttLink, ProtocolChoice
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics, shared
from mesh.archive import partitions, store
from mesh.archive.db import Conn, connect, describe
from mesh.archive.intake import Item, accept, archived_filters, check_ack
from mesh.archive.migrate import migrate
from mesh.protocol.codec import PayloadError, encode
from mesh.protocol.log_wire import LogSynced
from mesh.security.trust import TrustStore

T = TypeVar("T")
DbAction = Callable[[Conn], Awaitable[T]]

SHARE_GROUP = "archivers"
# How long a clean stop may spend storing what is still queued.
DRAIN_TIMEOUT_S = 5.0


def default_archiver_id() -> str:
    """The host name, made a valid identifier: stable across restarts, so that the broker
    keeps this archiver's session (and its queued messages) while it is away."""
    name = re.sub(r"[^A-Za-z0-9._:-]", "-", socket.gethostname())[:64]
    return name or "archiver"


@dataclass(frozen=True)
class ArchiverSettings:
    dsn: str
    archiver_id: str = field(default_factory=default_archiver_id)
    topics: Topics = field(default_factory=Topics)
    group: str = SHARE_GROUP
    queue_max: int = 100_000
    retry_initial_s: float = 0.1
    retry_max_s: float = 5.0
    # The fleet's trust store: acks are then checked as their gateway checks them, and
    # one that is unsigned or badly signed is kept among the conflicts, not as an ack.
    trust: TrustStore | None = None


class Archiver:
    def __init__(
        self,
        settings: ArchiverSettings,
        *,
        url: BrokerUrl,
        protocol: ProtocolChoice = "auto",
        client_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.counters: Counter[str] = Counter()
        self.ready = asyncio.Event()
        self._log = structlog.get_logger("mesh.archive").bind(archiver=settings.archiver_id)
        self._queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=settings.queue_max)
        self._conn: Conn | None = None
        self._writing = 0  # taken from the queue, not yet stored
        self._partitions_at = time.monotonic()
        self._where = describe(settings.dsn)
        self.link = MqttLink(
            url,
            LinkOptions(
                client_id=client_id or f"tm-archiver-{settings.archiver_id}",
                subscriptions=tuple(
                    (shared(settings.group, f), 1) for f in archived_filters(self.topics)
                ),
                protocol=protocol,
            ),
            logger=self._log,
        )

    # --- lifecycle ------------------------------------------------------------------------
    async def run(self) -> None:
        """Migrate the schema (waiting for the database), then archive until cancelled."""
        await self._retrying("migrate", migrate)
        await self._ensure_partitions()
        writer = asyncio.ensure_future(self._write_loop())
        try:
            await self.link.serve_until_cancelled(self._on_message, on_connect=self._on_connect)
        finally:
            await self._stop(writer)

    async def _on_connect(self) -> None:
        self.ready.set()
        self._log.info(
            "archiver up", broker=str(self.link.url), db=self._where, group=self.settings.group
        )

    async def _stop(self, writer: asyncio.Future[None]) -> None:
        # Store what was received before stopping; say so loudly if that cannot be done.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await self._queue.join()
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        left = self._queue.qsize() + self._writing
        if left:
            self.counters["dropped.at_stop"] += left
            self._log.error("archiver stopped with messages not stored", count=left)
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    # --- intake ---------------------------------------------------------------------------
    def _on_message(self, message: Inbound) -> None:
        try:
            item = accept(self.topics, message.topic, message.payload)
        except PayloadError as exc:
            kind = self.topics.parse(message.topic)
            self.counters[f"rejected.{kind.kind.value if kind else 'topic'}.{exc.code}"] += 1
            self._log.warning(
                "payload rejected",
                topic=message.topic,
                code=exc.code,
                reason=exc.reason,
                size=len(message.payload),
            )
            return
        if item is None:
            self.counters["ignored.topic"] += 1
            return
        item = check_ack(item, self.settings.trust, time.time_ns())
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self.counters["dropped.queue_full"] += 1
            dropped = self.counters["dropped.queue_full"]
            if dropped == 1 or dropped % 1000 == 0:
                self._log.error(
                    "archive queue full: messages dropped (is the database down?)",
                    dropped=dropped,
                    queued=self._queue.qsize(),
                )

    # --- writing --------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        while True:
            items = [await self._queue.get()]
            while len(items) < store.GROUP_MAX and not self._queue.empty():
                items.append(self._queue.get_nowait())
            self._writing = len(items)
            try:
                await self._write(items)
                self._writing = 0
            except Exception:
                # A bug, not the database: lose this group loudly, keep archiving the rest.
                self._writing = 0
                self.counters["dropped.write_failed"] += len(items)
                self._log.exception("archive write failed; messages dropped", count=len(items))
            finally:
                for _ in items:
                    self._queue.task_done()

    async def _ensure_partitions(self) -> None:
        """The months ahead exist (mesh/archive/partitions.py), checked at most hourly."""
        self._partitions_at = time.monotonic()
        try:
            await self._retrying("partitions", lambda c: partitions.ensure_ahead(c, time.time_ns()))
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            # Records of a month with no partition go to the default one: nothing is lost.
            self._log.error("archive partitions not created", error=str(exc).strip())

    async def _write(self, items: Sequence[Item]) -> None:
        if time.monotonic() - self._partitions_at > partitions.ENSURE_EVERY_S:
            await self._ensure_partitions()
        try:
            result = await self._retrying(
                "write", lambda conn: store.write(conn, items, self.settings.archiver_id)
            )
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            # PostgreSQL refuses something in the group (e.g. a NUL in a JSON string):
            # write them one by one, so that only that one is lost, with its reason.
            if len(items) > 1:
                for item in items:
                    await self._write([item])
                return
            self.counters[f"rejected.{items[0].kind.value}.db_refused"] += 1
            self._log.warning(
                "payload rejected", kind=items[0].kind.value, code="db_refused", reason=str(exc)
            )
            return
        self._account(result)

    def _account(self, result: store.WriteResult) -> None:
        self.counters.update(result.counts)
        for conflict in result.conflicts:
            self._log.error("conflicting copy refused; the archived one is kept", detail=conflict)
        not_kept = sum(v for k, v in result.counts.items() if k.startswith("conflict_not_kept."))
        if not_kept:
            before = (
                sum(v for k, v in self.counters.items() if k.startswith("conflict_not_kept."))
                - not_kept
            )
            # Past the cap per source and hour: counted, and logged at the first and every 1000th.
            if before == 0 or before // 1000 != (before + not_kept) // 1000:
                self._log.error(
                    "conflicting copies refused and not kept (cap per source and hour reached)",
                    total=before + not_kept,
                )
        for progress in result.logs:
            # Published after every batch, advanced or not: a sender whose previous
            # announcement was lost is waiting for it.
            synced = LogSynced(
                log_id=progress.log_id,
                synced_seq=progress.synced_seq,
                archiver=self.settings.archiver_id,
                at_ns=time.time_ns(),
            )
            self.link.publish_soon(
                self.topics.log_synced(progress.log_id, progress.gateway_id),
                encode(synced),
                qos=1,
                retain=True,
            )

    async def _retrying(self, what: str, action: DbAction[T]) -> T:
        """Run ``action`` on the connection until it succeeds, reconnecting with backoff.
        Refusals of the data itself (DataError, IntegrityError) are raised, not retried."""
        delay = self.settings.retry_initial_s
        failures = 0
        while True:
            try:
                conn = self._conn
                if conn is None or conn.closed:
                    conn = self._conn = await connect(
                        self.settings.dsn, name=f"trigger-mesh archiver {self.settings.archiver_id}"
                    )
                value = await action(conn)
            except (psycopg.DataError, psycopg.IntegrityError):
                raise
            except psycopg.Error as exc:
                failures += 1
                self.counters["db.retries"] += 1
                await self._drop_connection()
                self._log.error(
                    "archive database unavailable; retrying",
                    action=what,
                    db=self._where,
                    error=str(exc).strip(),
                    held=self._queue.qsize(),
                    retry_in_s=round(delay, 2),
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.retry_max_s)
                continue
            if failures:
                self._log.info("archive database reachable again", action=what, failures=failures)
            return value

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()
