"""The archiver daemon: archived messages in from a source, PostgreSQL out.

The source (mesh/archive/source.py) is an MQTT shared subscription (``$share/archivers/…``,
mosquitto: the broker gives each message to one archiver of the group) or the one durable
pull consumer of the archive's JetStream stream (mesh/archive/jetstream.py, a NATS
cluster); either way several archivers split the load, and a message that reaches two of
them is still stored once (every write is idempotent, see store.py).

Messages are decoded and checked as they arrive (a bad one is logged with its reason,
counted, and refused: JetStream terminates it), queued, and written by one task in groups;
each message's receipt is settled after the PostgreSQL commit (JetStream: acknowledged
then, and delivered again if the archiver dies first). MQTT acknowledges a QoS 1 message on
receipt, before it is stored; so while PostgreSQL is unreachable the queue holds what
arrived and the write is retried with backoff, with an error logged at every attempt. Only
a full queue drops messages (counted, logged; a JetStream source never overfills it). Edge
logs lose nothing even then: their sync resends until the archive's watermark says the
records are stored.

With the fleet's trust store and fleet file, the writer also fills in the live rows a lost
message left out, from the synced logs (mesh/archive/fill.py): when the queue is empty, and
at least every ``FILL_EVERY_GROUPS`` groups under load, so that it never starves.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import psycopg
import structlog

from bridge.mqtt.client import ProtocolChoice
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.archive import fill, partitions, store
from mesh.archive.db import Conn, connect, describe
from mesh.archive.intake import Item, accept, archived_filters, check_ack, check_log_unit
from mesh.archive.migrate import migrate
from mesh.archive.source import MqttSource, Receipt, Source, Taken, at_first_or_a_thousandth
from mesh.protocol.codec import PayloadError, encode
from mesh.protocol.log_wire import LogSynced
from mesh.security.trust import TrustStore

T = TypeVar("T")
DbAction = Callable[[Conn], Awaitable[T]]

SHARE_GROUP = "archivers"
# Logs waiting for their live rows to be filled in, at most (past it a log is left for the
# sweep, which looks for every log behind its mark every FILL_SWEEP_S).
FILL_DUE_MAX = 10_000
FILL_SWEEP_S = 60.0
# Under load, one log is filled in after this many groups written.
FILL_EVERY_GROUPS = 20
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
    # Each gateway's unit (the fleet file's): a log batch naming another unit for its
    # gateway is refused; with ``trust``, the live rows a lost message left out are made
    # from the gateway's synced log (mesh/archive/fill.py).
    units: Mapping[str, str] | None = None


@dataclass(frozen=True)
class Pending:
    """A queued message: what to store, and how to settle it with its source."""

    item: Item
    receipt: Receipt


class Archiver:
    def __init__(
        self,
        settings: ArchiverSettings,
        *,
        url: BrokerUrl | None = None,
        protocol: ProtocolChoice = "auto",
        client_id: str | None = None,
        source: Source | None = None,
    ) -> None:
        """Read from ``source``, or (without one) from the MQTT broker at ``url`` over the
        shared subscription of ``settings.group``."""
        self.settings = settings
        self.topics = settings.topics
        self.counters: Counter[str] = Counter()
        self.ready = asyncio.Event()
        self._log = structlog.get_logger("mesh.archive").bind(archiver=settings.archiver_id)
        self._queue: asyncio.Queue[Pending] = asyncio.Queue(maxsize=settings.queue_max)
        self._conn: Conn | None = None
        self._writing: list[Pending] = []  # taken from the queue, not yet stored
        self._partitions_at = time.monotonic()
        self._fill_due: dict[str, None] = {}  # log ids, oldest first
        self._fill_swept = -FILL_SWEEP_S  # monotonic: never yet
        self._where = describe(settings.dsn)
        if source is None:
            if url is None:
                raise ValueError("an archiver needs a source or a broker URL")
            source = MqttSource(
                url,
                client_id=client_id or f"tm-archiver-{settings.archiver_id}",
                group=settings.group,
                filters=archived_filters(self.topics),
                protocol=protocol,
                logger=self._log,
            )
        self.source = source

    # --- lifecycle ------------------------------------------------------------------------
    async def run(self) -> None:
        """Migrate the schema (waiting for the database), then archive until cancelled."""
        await self._retrying("migrate", migrate)
        await self._ensure_partitions()
        if self.fills:
            # The trust store may have changed since: logs refused for a key, again.
            again = await self._retrying("fill", fill.forget_key_problems)
            if again:
                self._log.info("logs refused for a key are checked again", logs=again)
        writer = asyncio.ensure_future(self._write_loop())
        try:
            await self.source.serve(self)
        finally:
            try:
                await self._stop(writer)
            finally:
                await self.source.close()

    async def up(self, where: str) -> None:
        self.ready.set()
        self._log.info("archiver up", source=where, db=self._where)

    async def _stop(self, writer: asyncio.Future[None]) -> None:
        # Store what was received before stopping; say so loudly if that cannot be done.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                await self._queue.join()
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        left = list(self._writing)
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
        if left and self.source.redelivers:
            # Handed back now: the other archivers get them at once, not after ack_wait.
            for pending in left:
                with contextlib.suppress(Exception):
                    await pending.receipt.again()
            self.counters["returned.at_stop"] += len(left)
            self._log.warning("archiver stopped; messages not stored handed back", count=len(left))
        elif left:
            self.counters["dropped.at_stop"] += len(left)
            self._log.error("archiver stopped with messages not stored", count=len(left))
        if self._conn is not None:
            await self._conn.close()
            self._conn = None

    # --- intake ---------------------------------------------------------------------------
    def room(self) -> int:
        """How many more messages the queue takes now."""
        return self._queue.maxsize - self._queue.qsize()

    def take(self, topic: str, payload: bytes, receipt: Receipt) -> Taken:
        """Decode, check and queue one message (the source settles a refused or ignored
        one at once; a queued one is settled by the writer)."""
        try:
            item = accept(self.topics, topic, payload)
            if item is not None:
                check_log_unit(item, self.settings.units)
        except PayloadError as exc:
            kind = self.topics.parse(topic)
            self.counters[f"rejected.{kind.kind.value if kind else 'topic'}.{exc.code}"] += 1
            self._log.warning(
                "payload rejected",
                topic=topic,
                code=exc.code,
                reason=exc.reason,
                size=len(payload),
            )
            return Taken.REJECTED
        if item is None:
            self.counters["ignored.topic"] += 1
            return Taken.IGNORED
        item = check_ack(item, self.settings.trust, time.time_ns())
        try:
            self._queue.put_nowait(Pending(item, receipt))
        except asyncio.QueueFull:
            self.counters["dropped.queue_full"] += 1
            dropped = self.counters["dropped.queue_full"]
            if at_first_or_a_thousandth(dropped - 1, dropped):
                self._log.error(
                    "archive queue full: messages dropped (is the database down?)",
                    dropped=dropped,
                    queued=self._queue.qsize(),
                )
            return Taken.FULL
        return Taken.QUEUED

    # --- writing --------------------------------------------------------------------------
    async def _write_loop(self) -> None:
        groups = 0
        while True:
            if self._queue.empty() or groups % FILL_EVERY_GROUPS == FILL_EVERY_GROUPS - 1:
                await self._fill_one()
            if self._queue.empty() and self._fill_due:
                groups = 0
                continue
            groups += 1
            try:
                # Idle, the sweep still comes round.
                async with asyncio.timeout(FILL_SWEEP_S if self.fills else None):
                    first = await self._queue.get()
            except TimeoutError:
                continue
            group = [first]
            while len(group) < store.GROUP_MAX and not self._queue.empty():
                group.append(self._queue.get_nowait())
            self._writing = group  # kept if cancelled mid-write: the stop settles it
            try:
                await self._write_isolating(group)
            finally:
                for _ in group:
                    self._queue.task_done()
            self._writing = []

    @property
    def fills(self) -> bool:
        return self.settings.trust is not None and self.settings.units is not None

    async def _fill_one(self) -> None:
        """Fill in the live rows of one log due for it (after a sweep, if one is due)."""
        trust, units = self.settings.trust, self.settings.units
        if trust is None or units is None:
            return
        if time.monotonic() - self._fill_swept >= FILL_SWEEP_S:
            self._fill_swept = time.monotonic()
            for log_id in await self._retrying("fill", fill.due_logs):
                self._due(log_id)
        if not self._fill_due:
            return
        log_id = next(iter(self._fill_due))
        del self._fill_due[log_id]
        try:
            outcome = await self._retrying(
                "fill",
                lambda c: fill.fill_log(
                    c, log_id, trust=trust, units=units, archived_by=self.settings.archiver_id
                ),
            )
        except Exception:  # a bug must not stop the archiving; the sweep tries again
            self.counters["fill.failed"] += 1
            self._log.exception("filling in live rows from a log failed", log_id=log_id)
            return
        self.counters[f"fill.{outcome.status}"] += 1
        self.counters.update({f"fill.{k}": v for k, v in outcome.counts.items()})
        self.counters["fill.refused"] += len(outcome.refused)
        for reason in outcome.refused[:10]:
            self._log.warning("log record not made a live row", log_id=log_id, reason=reason)
        if outcome.status == "problem":
            self._log.error(
                "log not used for live rows: an auditor should look at it",
                log_id=log_id,
                problem=outcome.problem,
            )
        elif outcome.status == "unknown_gateway":
            self._log.warning(
                "log of a gateway not in the fleet file: no live rows made from it",
                log_id=log_id,
                gateway=outcome.problem,
            )
        elif stored := {k: v for k, v in outcome.counts.items() if k.startswith("stored.") and v}:
            self._log.info("live rows filled in from a log", log_id=log_id, **stored)

    def _due(self, log_id: str) -> None:
        if log_id in self._fill_due or len(self._fill_due) < FILL_DUE_MAX:
            self._fill_due[log_id] = None
        else:
            self.counters["fill.due_full"] += 1

    async def _write_isolating(self, group: Sequence[Pending]) -> None:
        """Write the group; if that fails with a bug (not the database, which is retried),
        write its messages one by one, so that only the one that fails is not stored. A
        source that redelivers gets that one back (bounded by its delivery limit); with
        MQTT it is lost, loudly."""
        try:
            await self._write(group)
            return
        except Exception:
            if len(group) == 1:
                await self._write_failed(group)
                return
        for pending in group:
            try:
                await self._write([pending])
            except Exception:
                await self._write_failed([pending])

    async def _ensure_partitions(self) -> None:
        """The months ahead exist (mesh/archive/partitions.py), checked at most hourly."""
        self._partitions_at = time.monotonic()
        try:
            # By the database's clock: an archiver whose clock is off makes no other months.
            await self._retrying("partitions", partitions.ensure_ahead)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            # Records of a month with no partition go to the default one: nothing is lost.
            self._log.error("archive partitions not created", error=str(exc).strip())

    async def _write_failed(self, group: Sequence[Pending]) -> None:
        if not self.source.redelivers:
            self.counters["dropped.write_failed"] += len(group)
            self._log.exception("archive write failed; messages dropped", count=len(group))
            return
        self.counters["returned.write_failed"] += len(group)
        self._log.exception("archive write failed; messages handed back", count=len(group))
        for pending in group:
            if pending.receipt.last_chance:
                self.counters["dead.max_deliver"] += 1
                self._log.error(
                    "archive write failed at the message's last delivery: it stays in the "
                    "stream, not delivered again",
                    kind=pending.item.kind.value,
                )
            with contextlib.suppress(Exception):
                await pending.receipt.again()

    async def _write(self, group: Sequence[Pending]) -> None:
        if time.monotonic() - self._partitions_at > partitions.ENSURE_EVERY_S:
            await self._ensure_partitions()
        items = [p.item for p in group]
        try:
            result = await self._retrying(
                "write", lambda conn: store.write(conn, items, self.settings.archiver_id)
            )
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            # PostgreSQL refuses something in the group (e.g. a NUL in a JSON string):
            # write them one by one, so that only that one is lost, with its reason.
            if len(group) > 1:
                for pending in group:
                    await self._write([pending])
                return
            self.counters[f"rejected.{items[0].kind.value}.db_refused"] += 1
            self._log.warning(
                "payload rejected", kind=items[0].kind.value, code="db_refused", reason=str(exc)
            )
            await group[0].receipt.refused()
            return
        # Committed: only now is each message done with at its source.
        for pending in group:
            await pending.receipt.stored()
        self._account(result)

    def _account(self, result: store.WriteResult) -> None:
        self.counters.update(result.counts)
        for conflict in result.conflicts:
            self._log.error("conflicting copy refused; the archived one is kept", detail=conflict)
        not_kept = sum(v for k, v in result.counts.items() if k.startswith("conflict_not_kept."))
        if not_kept:
            total = sum(v for k, v in self.counters.items() if k.startswith("conflict_not_kept."))
            if at_first_or_a_thousandth(total - not_kept, total):
                self._log.error(
                    "conflicting copies refused and not kept (cap per source and hour reached)",
                    total=total,
                )
        over_budget = result.counts["dropped.ack_budget"]
        if over_budget:
            total = self.counters["dropped.ack_budget"]
            if at_first_or_a_thousandth(total - over_budget, total):
                self._log.error(
                    "live acks dropped: a camera is past its budget of acks per hour "
                    "(a stolen credential?)",
                    cameras=",".join(sorted(result.over_budget)),
                    total=total,
                )
        # Published after every group of batches, advanced or not (a sender whose previous
        # announcement was lost is waiting for it): one per log, its latest (batches are
        # stored in seq order, so the last progress of a log is its highest watermark).
        latest = {(p.log_id, p.gateway_id): p for p in result.logs}
        if self.fills:
            for progress in latest.values():
                if progress.advanced:
                    self._due(progress.log_id)
        for progress in latest.values():
            synced = LogSynced(
                log_id=progress.log_id,
                synced_seq=progress.synced_seq,
                archiver=self.settings.archiver_id,
                at_ns=time.time_ns(),
                refused=progress.refused,
            )
            # A refusal is not retained: it answers batches just sent; a retained one would
            # end every later pass of the sender at its connect, before it sent anything.
            self.source.publish_answer(
                self.topics.log_synced(progress.log_id, progress.gateway_id),
                encode(synced),
                retain=progress.refused is None,
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
