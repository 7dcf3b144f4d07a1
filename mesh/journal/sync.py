"""Log sync, the edge side: send an activation log's records to the central archive until
the archive's watermark says every one is stored (docs/archive.md, docs/protocol.md).

The archive publishes, retained, on ``{p}/log/{log_id}/synced/{gateway}`` the highest seq
up to which it holds every record of the log (under the name of the gateway whose batch it
answered). A sync reads that watermark, publishes the records
after it in batches (QoS 1) on ``{p}/log/{log_id}/records/{gateway}``, then waits for the watermark
to reach the last record it sent; if it does not in time (a batch lost with an archiver,
the database down), it sends again from wherever the watermark now is. Resending is
harmless: the archive stores each record once.

``LogSync.sync()`` is one pass (``trigger-mesh log sync``); ``run_forever()`` is the
gateway's background sync, a pass every few seconds while the broker is reachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sqlite3
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from bridge.mqtt.client import Inbound, LinkDown, LinkOptions, MqttLink, ProtocolChoice
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics, sender_level
from mesh.journal.records import RecordKind, StartedEntry
from mesh.journal.store import LogError, LogRecord, log_id_of, open_readonly
from mesh.protocol.codec import PayloadError, decode, encode
from mesh.protocol.log_wire import (
    BATCH_MAX_RECORDS,
    BATCH_TARGET_BYTES,
    LogBatch,
    LogBatchRecord,
    LogSynced,
)

# How long a pass waits for the retained watermark before assuming the archive has none.
WATERMARK_GRACE_S = 1.0
# The first wait for the watermark to catch up; doubled (to ACK_MAX_S) on every resend,
# so an archive whose database is down is not flooded with the same records.
ACK_TIMEOUT_S = 5.0
ACK_MAX_S = 60.0
# After the archive refused the log's batches (another gateway's log), the background sync
# tries again only this much later: a refusal stands until someone acts at the archive.
REFUSED_RETRY_S = 600.0
# The ids a batch may carry (log_wire's Ident).
_IDENT = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Per record, besides its body and kind: the JSON of the other fields.
_RECORD_OVERHEAD = 260


@dataclass(frozen=True)
class SyncResult:
    log_id: str
    sent: int  # records published in this pass, resends included
    synced_seq: int  # the archive's watermark when the pass ended
    head_seq: int  # the edge log's last record when the pass began
    # The archive's refusal of this pass's batches (the log is another gateway's), if any.
    refused: str | None = None

    @property
    def complete(self) -> bool:
        return self.synced_seq >= self.head_seq


class LogSync:
    """Syncs one activation log; owns its own MQTT link (so a gateway's subscriptions and
    session are untouched by it)."""

    def __init__(
        self,
        log_path: Path | str,
        *,
        url: BrokerUrl,
        topics: Topics,
        unit_id: str | None = None,
        gateway_id: str | None = None,
        protocol: ProtocolChoice = "auto",
        client_id: str | None = None,
        ack_timeout_s: float = ACK_TIMEOUT_S,
        batch_records: int = BATCH_MAX_RECORDS,
        batch_bytes: int = BATCH_TARGET_BYTES,
    ) -> None:
        self.log_path = Path(log_path)
        self.log_id = log_id_of(self.log_path)  # LogError if it is not a log
        self.topics = topics
        if unit_id is None or gateway_id is None:
            # Synced by hand (`log sync` without --unit/--gateway): the log says who wrote it.
            logged_unit, logged_gateway = started_by(self.log_path)
            unit_id = unit_id or logged_unit
            gateway_id = gateway_id or logged_gateway
        self.unit_id = unit_id
        self.gateway_id = gateway_id
        self._sender = sender_level(gateway_id)
        self.ack_timeout_s = ack_timeout_s
        self.batch_records = batch_records
        self.batch_bytes = batch_bytes
        self.counters: Counter[str] = Counter()
        # Told (sent, to send) during a pass: `log sync` shows it (mesh.cli.progress).
        self.progress: Callable[[int, int | None], None] | None = None
        # The highest watermark heard: it never goes back, even if announcements from two
        # archivers arrive out of order.
        self.watermark = 0
        # The archive's refusal of a batch sent in this pass (reset at each pass's start).
        self.refused: str | None = None
        self._heard = asyncio.Event()
        self._moved = asyncio.Event()
        self._log = structlog.get_logger("mesh.log_sync").bind(log_id=self.log_id)
        self.link = MqttLink(
            url,
            LinkOptions(
                client_id=client_id or f"tm-sync-{uuid.uuid4().hex[:8]}",
                # Whoever sent the batches it answered (this gateway, or `log sync` run by
                # hand): the highest watermark of this log counts.
                subscriptions=((topics.log_synced(self.log_id, "+"), 1),),
                # A clean session: every connect is sent the retained watermark afresh.
                persistent_session=False,
                protocol=protocol,
            ),
            logger=self._log,
        )

    # --- running ------------------------------------------------------------------------
    async def sync(self, timeout_s: float) -> SyncResult:
        """One pass with its own connection: returns when the archive holds every record
        the log had when it began, or when ``timeout_s`` has passed (check ``complete``)."""
        link = asyncio.ensure_future(self.link.run(self._on_message))
        try:
            return await self.sync_once(timeout_s)
        finally:
            link.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link

    async def run_forever(self, interval_s: float = 5.0, pass_timeout_s: float = 120.0) -> None:
        """Sync whenever the broker is reachable, a pass every ``interval_s``."""
        link = asyncio.ensure_future(self.link.run(self._on_message))
        try:
            while True:
                if self.link.is_up:
                    try:
                        result = await self.sync_once(pass_timeout_s)
                    except (LogError, OSError, sqlite3.Error) as exc:
                        self.counters["errors"] += 1
                        self._log.warning("log sync pass failed", error=str(exc))
                    else:
                        if result.refused is not None:
                            self._log.error(
                                "the archive refuses this log's batches",
                                reason=result.refused,
                                retry_s=REFUSED_RETRY_S,
                            )
                            await asyncio.sleep(REFUSED_RETRY_S)
                        elif result.sent:
                            self._log.info(
                                "log synced" if result.complete else "log sync incomplete",
                                sent=result.sent,
                                synced_seq=result.synced_seq,
                                head_seq=result.head_seq,
                            )
                await asyncio.sleep(interval_s)
        finally:
            link.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await link

    async def sync_once(self, timeout_s: float) -> SyncResult:
        """One pass over a link that is running (``sync`` and ``run_forever`` run it)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        head = await asyncio.to_thread(self._head_seq)
        sent = 0
        self.refused = None
        if head == 0:
            return SyncResult(self.log_id, 0, self.watermark, 0)
        if not await self._wait_for_link(deadline):
            return SyncResult(self.log_id, 0, self.watermark, head)
        if not self._heard.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_left(deadline, WATERMARK_GRACE_S)):
                    await self._heard.wait()
        patience = self.ack_timeout_s
        to_send = await asyncio.to_thread(self._count, self.watermark, head)
        self._progress(0, to_send)
        while self.watermark < head and self.refused is None and loop.time() < deadline:
            try:
                sent += await self._send(self.watermark, head, deadline, sent, to_send)
            except LinkDown as exc:
                self._log.debug("log sync waiting for the broker", error=str(exc))
                await self._wait_for_link(deadline)
                continue
            await self._wait_for_watermark(head, min(deadline, loop.time() + patience))
            if self.watermark < head and self.refused is None:
                self.counters["resends"] += 1
                patience = min(patience * 2, ACK_MAX_S)
        if self.watermark >= head:
            self._progress(to_send, to_send)  # all of them confirmed
        return SyncResult(self.log_id, sent, self.watermark, head, self.refused)

    def _progress(self, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(min(done, total), total)

    async def _wait_for_link(self, deadline: float) -> bool:
        try:
            await self.link.wait_up(_left(deadline))
        except LinkDown:
            return False
        return True

    async def _wait_for_watermark(self, target: int, until: float) -> None:
        loop = asyncio.get_running_loop()
        while self.watermark < target and self.refused is None and loop.time() < until:
            self._moved.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(until - loop.time()):
                    await self._moved.wait()

    # --- the archive's answers ------------------------------------------------------------
    def _on_message(self, message: Inbound) -> None:
        if not message.payload:
            return  # a cleared retained message: nothing archived
        try:
            synced = decode(LogSynced, message.payload, max_bytes=64 * 1024)
            if synced.log_id != self.log_id:
                raise PayloadError(
                    "id_mismatch", f"watermark of log {synced.log_id!r} on log {self.log_id!r}"
                )
        except PayloadError as exc:
            self.counters[f"rejected.{exc.code}"] += 1
            self._log.warning(
                "payload rejected", topic=message.topic, code=exc.code, reason=exc.reason
            )
            return
        if synced.refused is not None:
            # Only a refusal of what this sync sends (a hand-run `log sync` may hear the
            # answers to other senders of the log too).
            parsed = self.topics.parse(message.topic)
            if parsed is not None and parsed.args[1:] == (self._sender,):
                self.counters["refused"] += 1
                self.refused = synced.refused
                self._moved.set()
            return
        self._heard.set()
        if synced.synced_seq > self.watermark:
            self.watermark = synced.synced_seq
            self._moved.set()

    # --- the edge log ---------------------------------------------------------------------
    async def _send(
        self, after: int, head: int, deadline: float, before: int = 0, to_send: int = 0
    ) -> int:
        """Publish every record after ``after`` up to ``head``; the number published
        (``before`` of ``to_send`` were sent earlier in this pass: for progress)."""
        sent = 0
        while after < head and self.refused is None:  # a refusal: nothing more this pass
            batch = await asyncio.to_thread(self._read_batch, after, head)
            if batch is None:
                break  # nothing left (retention removed the rest since the pass began)
            payload = encode(batch)
            await self.link.publish(
                self.topics.log_records(self.log_id, self.gateway_id),
                payload,
                qos=1,
                wait_s=_left(deadline),
            )
            sent += len(batch.records)
            self.counters["records_sent"] += len(batch.records)
            self._progress(before + sent, to_send)
            after = batch.records[-1].seq
        return sent

    def _count(self, after: int, head: int) -> int:
        conn = open_readonly(self.log_path)
        try:
            row = conn.execute(
                "SELECT count(*) FROM records WHERE seq > ? AND seq <= ?", (after, head)
            ).fetchone()
        finally:
            conn.close()
        return int(row[0])

    def _head_seq(self) -> int:
        conn = open_readonly(self.log_path)
        try:
            row = conn.execute("SELECT coalesce(max(seq), 0) FROM records").fetchone()
        finally:
            conn.close()
        return int(row[0])

    def _read_batch(self, after: int, head: int) -> LogBatch | None:
        """The next batch after ``after``: up to batch_records records or about batch_bytes,
        each with the seq of the row before it in this log (retention leaves gaps)."""
        conn = open_readonly(self.log_path)
        try:
            conn.execute("BEGIN")  # one snapshot: retention may delete between statements
            (prev,) = conn.execute(
                "SELECT coalesce(max(seq), 0) FROM records WHERE seq <= ?", (after,)
            ).fetchone()
            rows = conn.execute(
                "SELECT seq, at_ns, kind, activation_id, body, prev_hash, hash FROM records "
                "WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?",
                (after, head, self.batch_records),
            ).fetchall()
        finally:
            conn.close()
        records: list[LogBatchRecord] = []
        size = 0
        for seq, at_ns, kind, activation_id, body, prev_hash, hash_ in rows:
            size += len(body) + len(kind) + _RECORD_OVERHEAD
            if records and size > self.batch_bytes:
                break
            # Our own rows, read back: constructed without validation, as they are typed.
            records.append(
                LogBatchRecord.model_construct(
                    seq=seq,
                    prev_seq=prev,
                    at_ns=at_ns,
                    kind=kind,
                    activation_id=activation_id,
                    body=body,
                    prev_hash=prev_hash,
                    hash=hash_,
                )
            )
            prev = seq
        if not records:
            return None
        return LogBatch.model_construct(
            log_id=self.log_id,
            unit_id=self.unit_id,
            gateway_id=self.gateway_id,
            head_seq=head,
            sent_at_ns=time.time_ns(),
            records=tuple(records),
        )


def batch_records(records: Iterable[LogRecord]) -> tuple[LogBatchRecord, ...]:
    """Consecutive rows of an edge log (no gap between them) as a batch carries them."""
    return tuple(
        LogBatchRecord(
            seq=r.seq,
            prev_seq=r.seq - 1,
            at_ns=r.at_ns,
            kind=r.kind,
            activation_id=r.activation_id,
            body=r.body,
            prev_hash=r.prev_hash,
            hash=r.hash,
        )
        for r in records
    )


def started_by(path: Path) -> tuple[str | None, str | None]:
    """(unit, gateway) of the gateway's latest ``started`` record in the log; None for
    either if there is none (retention removed it, or no gateway wrote this log) or it is
    not an id the archive takes."""
    conn = open_readonly(path)
    try:
        row = conn.execute(
            "SELECT body FROM records WHERE kind = ? ORDER BY seq DESC LIMIT 1",
            (RecordKind.STARTED.value,),
        ).fetchone()
    finally:
        conn.close()
    if row is None:
        return None, None
    try:
        started = StartedEntry.model_validate_json(row[0])
    except ValueError:  # unreadable: the archive then names neither (as before)
        return None, None

    def ident(value: str) -> str | None:
        return value if _IDENT.fullmatch(value) else None

    return ident(started.unit_id), ident(started.gateway_id)


def _left(deadline: float, cap: float | None = None) -> float:
    left = max(0.0, deadline - asyncio.get_running_loop().time())
    return left if cap is None else min(left, cap)
