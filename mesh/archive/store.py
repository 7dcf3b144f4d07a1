"""Writing to and reading from the archive's PostgreSQL (the schema: migrations/).

Every write is idempotent: keyed by what makes a message the same message, with
``ON CONFLICT`` deciding what a second copy does (nothing, or for activation records,
replace an older version). So retrying a write after an error, or two archivers
receiving the same message, can never store anything twice.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from psycopg import AsyncCursor, sql

from bridge.topics import TopicKind
from mesh.archive.db import Conn
from mesh.archive.fold import PRESENCE_KIND, Delta, canonical_hex, fold, presence_key, unfold
from mesh.archive.intake import Item, activation_rank, signer_of
from mesh.archive.partitions import Month
from mesh.journal.store import LogRecord
from mesh.protocol.log_wire import LogBatch, LogBatchRecord
from mesh.protocol.models import (
    ActivationRecord,
    CameraAck,
    Escalation,
    TriggerEvent,
    TriggerReceipt,
)

# Small messages are written together, in one transaction, up to this many.
GROUP_MAX = 200
# Conflicts kept per kind and source in the last hour: distinct refused copies past this
# are counted and logged, not stored; repeats of a stored copy only raise its ``copies``.
# The source is who could have sent the copy, as the broker checked it, never a name the
# sender chose: the unit of an activation copy (its topic's unit level, which the ACL ties
# to the sender; with the unit of the row it contradicts, if another's), the gateway a log
# batch came from (its topic's sender level), the camera of an ack (its topic's camera
# level: a camera's credential, and a car bridge's user at central, may publish only the
# car's own cameras' acks; those of cameras the trust store does not know share one
# source, in case a central ACL still grants more). So the table grows at most this fast
# per unit (and pair of units), gateway and known camera, whatever a stolen credential
# sends. What is kept of each copy is cut at CONFLICT_PAYLOAD_MAX.
CONFLICTS_PER_SOURCE_HOUR = 100
# The source the refused acks of cameras the trust store does not know share (no
# "camera:" prefix: it cannot be a camera's).
UNKNOWN_CAMERA_SOURCE = "cameras not in the trust store"
CONFLICT_PAYLOAD_MAX = 64 * 1024
# How a log batch sent without a gateway level (before batches named one) is named.
NO_GATEWAY = "no gateway"
# Live acks stored per camera in the last hour, at most. A camera acks the commands it
# gets, a few per activation; any other activation id, attempt or clock reading is a new
# key, so a stolen camera credential would otherwise add a row per message. Past it the
# camera's live acks are counted (dropped.ack_budget) and logged, not stored; the acks
# its gateways took still reach the archive in their logs (an archiver with --trust and
# --fleet fills them in, outside this budget).
ACKS_PER_CAMERA_HOUR = 1_000


@dataclass(frozen=True)
class LogProgress:
    """What one stored batch did to its log's watermark."""

    log_id: str
    synced_seq: int
    advanced: bool
    # Who sent the batch: the watermark goes out under its name (bridge/topics.py).
    gateway_id: str | None = None
    # Why the batch was refused (the log is another gateway's): the answer says so.
    refused: str | None = None


@dataclass
class WriteResult:
    # "stored.trigger", "duplicate.ack", "replaced.activation", "superseded.activation" …
    counts: Counter[str] = field(default_factory=Counter)
    logs: list[LogProgress] = field(default_factory=list)
    # Copies refused because they conflict with what the archive holds (another gateway's
    # version of an activation, an ack the trust store refuses, a log record with another
    # hash), each described for the log; they are also in the conflicts table.
    conflicts: list[str] = field(default_factory=list)
    # Live acks not stored, per camera past its ACKS_PER_CAMERA_HOUR (counted in
    # ``counts`` too, as dropped.ack_budget, when the write ends).
    over_budget: Counter[str] = field(default_factory=Counter)


async def write(conn: Conn, items: Sequence[Item], archived_by: str) -> WriteResult:
    """Store ``items``: the small ones in one transaction, the log batches in one
    transaction per log and sender (each locks its log's row while the watermark is
    recomputed; logs are written in the order of their ids, batches of one log in seq
    order, so two archivers never deadlock)."""
    result = WriteResult()
    small = [i for i in items if i.kind is not TopicKind.LOG_RECORDS]
    if small:
        async with conn.transaction():
            await write_small(conn, small, archived_by, result)
    batches = sorted(
        (i.model for i in items if isinstance(i.model, LogBatch)),
        key=lambda b: (b.log_id, b.gateway_id or "", b.records[0].seq),
    )
    for _, of_log in itertools.groupby(batches, key=lambda b: (b.log_id, b.gateway_id)):
        # A transaction per log and sender: its row is locked only while its own batches
        # are written, so another archiver (taking logs in the same order) writes the log
        # before meanwhile, instead of waiting for the whole group to commit.
        async with conn.transaction():
            await _write_log(conn, list(of_log), archived_by, result)
    return result


async def write_small(
    conn: Conn, items: Sequence[Item], archived_by: str, result: WriteResult, *, live: bool = True
) -> None:
    """Store triggers, receipts, activations, acks and escalations, in the caller's
    transaction. Live acks (``live``; not those made from a gateway's log) are held to
    ACKS_PER_CAMERA_HOUR."""
    small = sorted(items, key=_lock_order)
    triggers = [i for i in small if isinstance(i.model, TriggerEvent)]
    if triggers:
        await _write_triggers(conn, triggers, archived_by, result)
    budget = await _ack_budget(conn, small) if live else None
    for item in small:
        if isinstance(item.model, TriggerEvent):
            continue
        if budget is not None and isinstance(item.model, CameraAck) and item.refusal is None:
            camera = item.model.camera_id
            if budget[camera] <= 0:
                result.over_budget[camera] += 1
                continue
            budget[camera] -= 1
        outcome = await _write_one(conn, item, archived_by, result)
        result.counts[f"{outcome}.{item.kind.value}"] += 1
    if result.over_budget:
        result.counts["dropped.ack_budget"] = result.over_budget.total()


async def _ack_budget(conn: Conn, items: Sequence[Item]) -> Counter[str] | None:
    """How many more live acks each camera of ``items`` may store this hour (a camera
    past its budget has at most ACKS_PER_CAMERA_HOUR rows in the hour to count). Acks the
    trust store refused go to the conflicts, not to the budget: not counted for."""
    cameras = sorted(
        {i.model.camera_id for i in items if isinstance(i.model, CameraAck) and i.refusal is None}
    )
    if not cameras:
        return None
    cur = await conn.execute(
        "SELECT camera_id, count(*) FROM acks WHERE camera_id = ANY(%s)"
        " AND archived_at > now() - interval '1 hour' AND archived_by NOT LIKE '%%/log'"
        " GROUP BY camera_id",
        (cameras,),
    )
    used = {str(camera): int(n) for camera, n in await cur.fetchall()}
    return Counter({c: ACKS_PER_CAMERA_HOUR - used.get(c, 0) for c in cameras})


def _lock_order(item: Item) -> tuple[str, str]:
    # Two archivers writing the same rows lock them in the same order: no deadlock.
    # The model's fields from its __dict__: getattr with a default goes through pydantic's
    # __getattr__ and an AttributeError for a missing one (a twentieth of an archiver's
    # CPU on triggers).
    fields = item.model.__dict__
    key = fields.get("activation_id") or fields.get("event_id") or ""
    return item.kind.value, str(key)


def _sender_source(gateway_id: str | None) -> str:
    """What a refused log batch or record counts against: the gateway that sent it (its
    topic's sender level, which the broker checked)."""
    return f"from:{gateway_id or NO_GATEWAY}"


def _activation_source(sender_unit: str, held_unit: str) -> str:
    """What a refused activation copy counts against: the unit that sent it (its topic's),
    and the unit of the row it contradicts when that is another's. So a unit's copies
    refused on rows another unit bound first (a thief that beat its gateway to an id)
    have a cap of their own, which the thief's own flood does not use up."""
    if held_unit == sender_unit:
        return f"unit:{sender_unit}"
    return f"unit:{sender_unit} on unit:{held_unit}"


@dataclass(frozen=True)
class Conflict:
    """A copy refused because it conflicts with what the archive holds."""

    kind: str  # activation, ack, log_record, log_batch
    subject: str
    source: str  # what the cap counts against (see CONFLICTS_PER_SOURCE_HOUR)
    code: str
    detail: str
    unit_id: str | None
    issuer: str | None
    payload: str


async def _report(conn: Conn, conflict: Conflict, by: str, result: WriteResult) -> str:
    """Keep a refused copy in ``conflicts`` (bounded per source and hour); a new one is also
    described in ``result.conflicts`` (for the log: a repeat only raises ``copies``).
    Returns "conflict", or "refused" for an ack the trust store refused."""
    raw = conflict.payload.encode()
    digest = hashlib.sha256(raw).hexdigest()
    outcome = "refused" if conflict.kind == "ack" else "conflict"
    cur = await conn.execute(
        "UPDATE conflicts SET copies = copies + 1, last_at = now()"
        " WHERE kind = %s AND subject = %s AND digest = %s",
        (conflict.kind, conflict.subject, digest),
    )
    if cur.rowcount:
        return outcome
    cur = await conn.execute(
        "INSERT INTO conflicts (kind, subject, source, code, detail, unit_id, issuer, digest,"
        " size, payload, archived_by) SELECT %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s"
        " WHERE (SELECT count(*) FROM conflicts WHERE kind = %s AND source = %s"
        " AND first_at > now() - interval '1 hour') < %s"
        " ON CONFLICT (kind, subject, digest) DO UPDATE SET copies = conflicts.copies + 1,"
        " last_at = now()",
        (
            conflict.kind,
            conflict.subject,
            conflict.source,
            conflict.code,
            conflict.detail,
            conflict.unit_id,
            conflict.issuer,
            digest,
            len(raw),
            raw[:CONFLICT_PAYLOAD_MAX].decode(errors="ignore"),
            by,
            conflict.kind,
            conflict.source,
            CONFLICTS_PER_SOURCE_HOUR,
        ),
    )
    if cur.rowcount:
        result.conflicts.append(f"{conflict.kind} {conflict.subject}: {conflict.detail}")
    else:
        result.counts[f"conflict_not_kept.{conflict.kind}"] += 1
    return outcome


_INSERT_TRIGGERS = (
    "INSERT INTO triggers (event_id, unit_id, kind, source_type, source_id, observed_at_ns,"
    " payload, archived_by, jws)"
    " SELECT r.event_id, r.unit_id, r.kind, r.source_type, r.source_id, r.observed_at_ns,"
    " r.payload::jsonb, %s, r.jws::jsonb"
    " FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::bigint[],"
    " %b::text[], %b::text[])"
    " AS r (event_id, unit_id, kind, source_type, source_id, observed_at_ns, payload, jws)"
    # A trigger made from a gateway's log has no signature (the log keeps the trigger, not
    # its JWS): its live copy, signed, arriving later, puts it in; only the same trigger's
    # (another signed one under the same event_id is a duplicate, not a replacement).
    " ON CONFLICT (event_id) DO UPDATE SET payload = EXCLUDED.payload, jws = EXCLUDED.jws,"
    " archived_by = EXCLUDED.archived_by, archived_at = now()"
    " WHERE triggers.jws IS NULL AND EXCLUDED.jws IS NOT NULL"
    " AND triggers.archived_by LIKE '%%/log'"
    " AND (triggers.unit_id, triggers.kind, triggers.source_type, triggers.source_id,"
    " triggers.observed_at_ns) = (EXCLUDED.unit_id, EXCLUDED.kind, EXCLUDED.source_type,"
    " EXCLUDED.source_id, EXCLUDED.observed_at_ns)"
    " RETURNING event_id"
)


async def _write_triggers(conn: Conn, items: Sequence[Item], by: str, result: WriteResult) -> None:
    """Triggers in one statement (keyed by event_id: a second copy, even in the same
    group, is a duplicate; of copies in one group, a signed one is written)."""
    first: dict[str, Item] = {}
    for item in items:
        if isinstance(item.model, TriggerEvent):
            held = first.get(item.model.event_id)
            if held is None or (held.jws is None and item.jws is not None):
                first[item.model.event_id] = item
    unique = list(first.values())  # an upsert may not meet one row twice
    models = [i.model for i in unique if isinstance(i.model, TriggerEvent)]
    cur = await conn.execute(
        _INSERT_TRIGGERS,
        (
            by,
            [m.event_id for m in models],
            [m.unit_id for m in models],
            [m.kind.value for m in models],
            [m.source.type.value for m in models],
            [m.source.id for m in models],
            [m.observed_at_ns for m in models],
            [i.raw for i in unique],
            [_jws_json(i) for i in unique],
        ),
    )
    stored = len(await cur.fetchall())
    result.counts["stored.trigger"] += stored
    result.counts["duplicate.trigger"] += len(items) - stored


async def _write_one(conn: Conn, item: Item, by: str, result: WriteResult) -> str:
    model = item.model
    if isinstance(model, TriggerReceipt):
        cur = await conn.execute(
            "INSERT INTO receipts (event_id, at_ns, unit_id, outcome, activation_id, reason,"
            " payload, archived_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (
                model.event_id,
                model.at_ns,
                model.unit_id,
                model.outcome.value,
                model.activation_id,
                model.reason,
                item.raw,
                by,
            ),
        )
    elif isinstance(model, CameraAck):
        if item.refusal is not None:
            return await _report(
                conn,
                Conflict(
                    kind="ack",
                    subject=f"{model.activation_id}/{model.camera_id}/{model.attempt}",
                    source=f"camera:{model.camera_id}"
                    if item.camera_known
                    else UNKNOWN_CAMERA_SOURCE,
                    code=item.refusal.code,
                    detail=f"{model.status.value} ack from {model.camera_id} to {item.args[0]} "
                    f"refused: {item.refusal.reason}",
                    unit_id=model.unit_id,
                    issuer=item.args[0],
                    payload=item.raw,
                ),
                by,
                result,
            )
        cur = await conn.execute(
            "INSERT INTO acks (activation_id, camera_id, attempt, received_at_ns, issuer,"
            " unit_id, status, reason, payload, archived_by, verified, signer, jws)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (
                model.activation_id,
                model.camera_id,
                model.attempt,
                model.received_at_ns,
                item.args[0],
                model.unit_id,
                model.status.value,
                model.reason,
                item.raw,
                by,
                item.verified,
                signer_of(item),
                _jws_json(item),
            ),
        )
    elif isinstance(model, Escalation):
        cur = await conn.execute(
            "INSERT INTO escalations (activation_id, camera_id, audience, reason, at_ns,"
            " unit_id, kind, payload, archived_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (
                model.activation_id,
                model.camera_id,
                model.audience,
                model.reason.value,
                model.at_ns,
                model.unit_id,
                model.kind.value,
                item.raw,
                by,
            ),
        )
    elif isinstance(model, ActivationRecord):
        return await _write_activation(conn, model, item.raw, by, result)
    else:
        raise TypeError(f"not a small archived message: {type(model).__name__}")
    return "stored" if cur.rowcount else "duplicate"


async def _write_activation(
    conn: Conn, record: ActivationRecord, raw: str, by: str, result: WriteResult
) -> str:
    """The first copy of an activation binds its row to its issuer, unit and trigger: a
    later version replaces it only from the same three and only if it ranks higher. A copy
    from anyone else is refused and reported, never merged."""
    stage, answered = activation_rank(record)
    cur = await conn.execute(
        "INSERT INTO activations (activation_id, issuer, unit_id, kind, trigger_event_id,"
        " state, decided_at_ns, finished_at_ns, rank_stage, rank_answered, payload,"
        " archived_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (activation_id) DO UPDATE SET state = EXCLUDED.state,"
        " finished_at_ns = EXCLUDED.finished_at_ns, rank_stage = EXCLUDED.rank_stage,"
        " rank_answered = EXCLUDED.rank_answered, payload = EXCLUDED.payload,"
        " archived_by = EXCLUDED.archived_by, archived_at = now()"
        " WHERE (activations.issuer, activations.unit_id, activations.trigger_event_id)"
        " = (EXCLUDED.issuer, EXCLUDED.unit_id, EXCLUDED.trigger_event_id)"
        # Only a later version replaces the stored one (a redelivery is equal: kept).
        " AND (activations.rank_stage, activations.rank_answered)"
        " < (EXCLUDED.rank_stage, EXCLUDED.rank_answered)"
        " RETURNING (xmax = 0)",
        (
            record.activation_id,
            record.issuer,
            record.unit_id,
            record.trigger.kind.value,
            record.trigger.event_id,
            record.state.value,
            record.decided_at_ns,
            record.finished_at_ns,
            stage,
            answered,
            raw,
            by,
        ),
    )
    row = await cur.fetchone()
    if row is not None:
        return "stored" if row[0] else "replaced"
    cur = await conn.execute(
        "SELECT issuer, unit_id, trigger_event_id FROM activations WHERE activation_id = %s",
        (record.activation_id,),
    )
    held = await cur.fetchone()
    # The insert met this row and locked it: retention's delete waits for this commit.
    assert held is not None
    code = binding_conflict(
        (str(held[0]), str(held[1]), str(held[2])),
        (record.issuer, record.unit_id, record.trigger.event_id),
    )
    if code is None:
        return "superseded"  # the archive already holds this version or a later one
    return await _report(
        conn,
        Conflict(
            kind="activation",
            subject=record.activation_id,
            source=_activation_source(record.unit_id, str(held[1])),
            code=code,
            detail=f"{record.state.value} version from {record.issuer} of unit "
            f"{record.unit_id} (trigger {record.trigger.event_id}); the archive holds the "
            f"activation of {held[0]} of unit {held[1]} (trigger {held[2]})",
            unit_id=str(held[1]),
            issuer=str(held[0]),
            payload=raw,
        ),
        by,
        result,
    )


def binding_conflict(held: tuple[str, str, str], got: tuple[str, str, str]) -> str | None:
    """Why a copy of an activation (issuer, unit, trigger event) cannot be a version of
    the one held; None if it can."""
    for name, a, b in zip(("other_issuer", "other_unit", "other_trigger"), held, got, strict=True):
        if a != b:
            return name
    return None


# --- edge logs ------------------------------------------------------------------------------
# The first batch that names a gateway binds the log to it (and to the unit it names).
# The broker lets a gateway send batches only under its own name, but under any log id:
# a batch from another gateway, or from none, on a bound log changes nothing and is
# refused whole (conflict.log_batch), so that no other car's records take the seqs of
# the log's own. A log its earlier batches left bound to no gateway (sent before batches
# named one) but to a unit is bound only by a batch naming that unit (with the fleet
# file, a gateway may name only its own), and a batch from a gateway that may not bind it
# is refused likewise. Live rows are made from a log as its gateway's.
_MAY_WRITE = (
    "(logs.gateway_id = EXCLUDED.gateway_id OR logs.gateway_id IS NULL"
    " AND (EXCLUDED.gateway_id IS NULL OR logs.unit_id IS NULL"
    " OR logs.unit_id = EXCLUDED.unit_id))"
)
# Built from the constant above only (no input goes into the text).
_UPSERT_LOG = (
    "INSERT INTO logs (log_id, unit_id, gateway_id, head_seq) VALUES (%s, %s, %s, %s)"  # noqa: S608
    " ON CONFLICT (log_id) DO UPDATE SET"
    f" unit_id = CASE WHEN {_MAY_WRITE}"
    " THEN coalesce(logs.unit_id, EXCLUDED.unit_id) ELSE logs.unit_id END,"
    f" gateway_id = CASE WHEN {_MAY_WRITE}"
    " THEN coalesce(logs.gateway_id, EXCLUDED.gateway_id) ELSE logs.gateway_id END,"
    f" head_seq = CASE WHEN {_MAY_WRITE}"
    " THEN greatest(logs.head_seq, EXCLUDED.head_seq) ELSE logs.head_seq END,"
    f" last_batch_at = CASE WHEN {_MAY_WRITE} THEN now() ELSE logs.last_batch_at END"
    " RETURNING synced_seq, log_no, gateway_id, unit_id"
)
_COPY_RECORDS = (
    "COPY log_records (log_id, seq, prev_seq, at_ns, kind, activation_id, body, prev_hash,"
    " hash, archived_by) FROM STDIN (FORMAT BINARY)"
)
_COPY_TYPES = ("text", "int8", "int8", "int8", "text", "text", "text", "text", "text", "text")
_INSERT_REPEATS = (
    "INSERT INTO presence_repeats (log_no, seq, prev_seq, at_ns, base_seq, head, tail, middle,"
    " prev_hash, hash)"
    " SELECT %s, r.* FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], %s::bigint[],"
    " %s::integer[], %s::integer[], %s::text[], %s::bytea[], %s::bytea[])"
    " AS r (seq, prev_seq, at_ns, base_seq, head, tail, middle, prev_hash, hash)"
    " ON CONFLICT DO NOTHING"
)
# The records of a log the archive holds, full or folded (mesh/archive/fold.py). The
# tables are partitioned by at_ns and keyed (log_id, seq, at_ns): that a seq is one record
# is kept by looking it up under the log's row lock before inserting. The seqs are given
# as runs of consecutive seqs, each an index range: the cost follows the group, not the
# log (``seq = ANY(seqs)`` was planned as a filter over every row of the log, each compared
# with the whole array: bench/archive_write.py), and a batch whose seqs are far apart (any
# car may send one for any log) reads no more than its own seqs.
_HELD = (
    "SELECT l.seq, l.prev_seq, l.hash, 'log_records' FROM log_records l"
    " JOIN unnest(%(first)s::bigint[], %(last)s::bigint[]) AS r (first, last)"
    " ON l.seq BETWEEN r.first AND r.last WHERE l.log_id = %(log)s"
    " UNION ALL SELECT p.seq, p.prev_seq, encode(p.hash, 'hex'), 'presence_repeats'"
    " FROM presence_repeats p"
    " JOIN unnest(%(first)s::bigint[], %(last)s::bigint[]) AS r (first, last)"
    " ON p.seq BETWEEN r.first AND r.last"
    " WHERE p.log_no = (SELECT log_no FROM logs WHERE log_id = %(log)s)"
)


def seq_runs(seqs: Sequence[int]) -> tuple[list[int], list[int]]:
    """The first and last seq of each run of consecutive seqs in ``seqs`` (sorted)."""
    firsts: list[int] = []
    lasts: list[int] = []
    for seq in seqs:
        if lasts and seq == lasts[-1] + 1:
            lasts[-1] = seq
        else:
            firsts.append(seq)
            lasts.append(seq)
    return firsts, lasts


_BASES = (
    "SELECT camera_id, seq, at_ns, body FROM presence_bases"
    " WHERE log_id = %s AND camera_id = ANY(%s)"
)
_UPSERT_BASES = (
    "INSERT INTO presence_bases (log_id, camera_id, seq, at_ns, body)"
    " SELECT %s, b.* FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::text[])"
    " AS b (camera_id, seq, at_ns, body)"
    " ON CONFLICT (log_id, camera_id) DO UPDATE SET seq = EXCLUDED.seq, at_ns = EXCLUDED.at_ns,"
    " body = EXCLUDED.body WHERE presence_bases.seq < EXCLUDED.seq"
)
# From the stored watermark, step to the next record the archive holds as long as nothing
# the edge had can be missing in between (its predecessor is at or before the step), and
# store where that ends. The next WATERMARK_WINDOW records after the watermark, both tables
# merged in seq order, are read with one index range scan each; a record links when its
# prev_seq is at or before the record before it (the watermark, for the first). The
# watermark moves to the last record before the first that does not link; "more" says
# that all of them linked and there may be more to step over (the caller asks again).
WATERMARK_WINDOW = 1000
_ADVANCE = (
    "WITH ahead AS (SELECT * FROM ("
    " (SELECT seq, prev_seq FROM log_records"
    "  WHERE log_id = %(log)s AND seq > %(from)s::bigint ORDER BY seq LIMIT %(window)s)"
    " UNION ALL"
    " (SELECT seq, prev_seq FROM presence_repeats"
    "  WHERE log_no = %(no)s AND seq > %(from)s::bigint ORDER BY seq LIMIT %(window)s)"
    " ) AS both_ ORDER BY seq LIMIT %(window)s),"
    " step AS (SELECT seq, prev_seq <= lag(seq, 1, %(from)s::bigint) OVER (ORDER BY seq) AS links"
    "  FROM ahead),"
    " gap AS (SELECT min(seq) AS seq FROM step WHERE NOT links),"
    " mark AS (SELECT coalesce(max(step.seq), %(from)s::bigint) AS seq FROM step, gap"
    "  WHERE gap.seq IS NULL OR step.seq < gap.seq),"
    " moved AS (UPDATE logs SET synced_seq = mark.seq FROM mark"
    "  WHERE logs.log_id = %(log)s AND mark.seq > logs.synced_seq)"
    " SELECT mark.seq, (SELECT seq FROM gap) IS NULL"
    " AND (SELECT count(*) FROM ahead) = %(window)s FROM mark"
)


@dataclass
class _Base:
    seq: int
    at_ns: int
    body: str
    key: str | None  # fold.presence_key's second half; None: nothing folds against it


@dataclass
class _Split:
    """A batch's new records: stored in full, or folded against their camera's base."""

    full: list[LogBatchRecord] = field(default_factory=list)
    # (record, its base's seq, the delta, prev_hash or None (its predecessor's), hash)
    folded: list[tuple[LogBatchRecord, int, Delta, bytes | None, bytes]] = field(
        default_factory=list
    )
    bases: dict[str, _Base] = field(default_factory=dict)  # camera -> its new base


def split(records: Sequence[LogBatchRecord], held: dict[str, _Base]) -> _Split:
    """Decide which records fold (pure; ``held`` is the stored base of each camera)."""
    out = _Split()
    before: LogBatchRecord | None = None  # the record stored just before, in this batch
    for record in records:
        previous, before = before, record
        found = presence_key(record.kind, record.activation_id, record.body)
        if found is None:
            camera = _removed_camera(record)
            if camera is not None:
                out.bases[camera] = _Base(record.seq, record.at_ns, record.body, None)
            out.full.append(record)
            continue
        camera, key = found
        base = out.bases.get(camera) or held.get(camera)
        hashes = (canonical_hex(record.prev_hash), canonical_hex(record.hash))
        folded = None
        if (
            base is not None
            and base.key is not None
            and base.seq < record.seq
            and Month.of_ns(base.at_ns) == Month.of_ns(record.at_ns)
            and hashes[0] is not None
            and hashes[1] is not None
        ):
            folded = fold(base.key, base.body, key, record.body)
        if folded is not None and base is not None and hashes[0] and hashes[1]:
            # Its predecessor is stored with it, in the same month, and it links to it:
            # the link is read back from there (read_log).
            linked = (
                previous is not None
                and previous.seq == record.prev_seq
                and previous.hash == record.prev_hash
                and Month.of_ns(previous.at_ns) == Month.of_ns(record.at_ns)
            )
            out.folded.append((record, base.seq, folded, None if linked else hashes[0], hashes[1]))
        else:
            out.full.append(record)
            out.bases[camera] = _Base(record.seq, record.at_ns, record.body, key)
    return out


def _removed_camera(record: LogBatchRecord) -> str | None:
    if record.kind != PRESENCE_KIND or '"removed"' not in record.body:
        return None
    try:
        data = json.loads(record.body)
    except ValueError:
        return None
    camera = data.get("camera_id") if isinstance(data, dict) else None
    return camera if isinstance(camera, str) else None


@dataclass
class _Pending:
    """A log's records to store, as the group's batches are gone through in seq order: a
    record of a later batch finds one of an earlier batch here as it would find it stored."""

    full: dict[int, LogBatchRecord] = field(default_factory=dict)
    folded: dict[int, tuple[LogBatchRecord, int, Delta, bytes | None, bytes]] = field(
        default_factory=dict
    )
    bases: dict[str, _Base] = field(default_factory=dict)  # every camera's base, as stored
    changed: set[str] = field(default_factory=set)  # cameras whose base is to be stored
    relinks: list[tuple[str, int, int]] = field(default_factory=list)  # (table, seq, prev_seq)
    conflicts: list[Conflict] = field(default_factory=list)

    def hash_of(self, seq: int) -> tuple[int, str] | None:
        """(prev_seq, hash) of a record to be stored, if any."""
        record = self.full.get(seq) or (self.folded[seq][0] if seq in self.folded else None)
        return None if record is None else (record.prev_seq, record.hash)

    def relink(self, seq: int, prev_seq: int) -> None:
        if seq in self.full:
            self.full[seq] = self.full[seq].model_copy(update={"prev_seq": prev_seq})
        else:
            record, base_seq, delta, prev_hash, hash_ = self.folded[seq]
            record = record.model_copy(update={"prev_seq": prev_seq})
            self.folded[seq] = (record, base_seq, delta, prev_hash, hash_)

    def add(self, plan: _Split) -> None:
        self.full.update((r.seq, r) for r in plan.full)
        self.folded.update((f[0].seq, f) for f in plan.folded)
        for camera, base in plan.bases.items():  # as _UPSERT_BASES: only a later one
            held = self.bases.get(camera)
            if held is None or held.seq < base.seq:
                self.bases[camera] = base
                self.changed.add(camera)


async def _write_log(conn: Conn, batches: Sequence[LogBatch], by: str, result: WriteResult) -> None:
    """Store one log's batches of a group from one sender (in seq order; refused if the
    log is another gateway's), in the caller's transaction,
    which holds the log's row lock until it commits: batches of one log are stored one
    group at a time across all archivers, so the watermark is computed over every batch
    committed before, and a seq looked up here cannot be inserted by anyone else meanwhile.

    Three round trips whatever the number of batches (the statements of a batch each, on
    a partitioned table, cost more than their rows): the log's row, the seqs held and the
    presence bases; a COPY of the new full records; the rest and the watermark (psycopg's
    pipeline mode). The batches are gone through in memory as if each were stored before
    the next."""
    log_id, log = batches[0].log_id, _Pending()
    seqs = sorted({r.seq for b in batches for r in b.records})
    cameras = sorted(
        {
            k[0]
            for b in batches
            for r in b.records
            if (k := presence_key(r.kind, r.activation_id, r.body)) is not None
        }
    )
    # What the batches' upserts, one after the other, would leave.
    unit_id = next((b.unit_id for b in batches if b.unit_id is not None), None)
    gateway_id = batches[0].gateway_id  # the same in each: the caller groups by sender
    async with conn.pipeline():
        log_cur = await conn.execute(
            _UPSERT_LOG, (log_id, unit_id, gateway_id, max(b.head_seq for b in batches))
        )
        firsts, lasts = seq_runs(seqs)
        held_cur = await conn.execute(_HELD, {"log": log_id, "first": firsts, "last": lasts})
        bases_cur = await conn.execute(_BASES, (log_id, cameras)) if cameras else None
    row = await log_cur.fetchone()
    assert row is not None  # an upsert with RETURNING always returns its row
    before, log_no, owner, log_unit = int(row[0]), int(row[1]), row[2], row[3]
    if owner != gateway_id and (owner is not None or gateway_id is not None):
        # Another gateway's log, or (owner None) a unit's the sender could not bind.
        await _refuse_foreign(conn, batches, owner, log_unit, by=by, result=result)
        return
    held = {
        int(seq): (int(prev), str(h), str(table))
        for seq, prev, h, table in await held_cur.fetchall()
    }
    if bases_cur is not None:
        for camera, seq, at_ns, body in await bases_cur.fetchall():
            found = presence_key(PRESENCE_KIND, None, body)
            log.bases[str(camera)] = _Base(
                int(seq), int(at_ns), str(body), None if found is None else found[1]
            )
    for batch in batches:
        new = [r for r in batch.records if r.seq not in held and log.hash_of(r.seq) is None]
        plan = split(new, log.bases)
        _resent(batch, held, log, result)
        log.add(plan)
        result.counts["stored.log_record"] += len(plan.full) + len(plan.folded)
        result.counts["folded.log_record"] += len(plan.folded)
        result.counts["stored.log_batch"] += 1
    if log.full:
        # COPY, the fastest way in: none of these seqs is held, and none can be inserted by
        # anyone else while this transaction holds the log's row.
        async with conn.cursor() as cur, cur.copy(_COPY_RECORDS) as copy:
            copy.set_types(_COPY_TYPES)
            for r in log.full.values():
                row = (log_id, r.seq, r.prev_seq, r.at_ns, r.kind, r.activation_id, r.body)
                await copy.write_row((*row, r.prev_hash, r.hash, by))
    async with conn.pipeline():
        if log.folded:
            folded = list(log.folded.values())
            await conn.execute(
                _INSERT_REPEATS,
                (
                    log_no,
                    [r.seq for r, *_ in folded],
                    [r.prev_seq for r, *_ in folded],
                    [r.at_ns for r, *_ in folded],
                    [base for _, base, *_ in folded],
                    [d.head for _, _, d, *_ in folded],
                    [d.tail for _, _, d, *_ in folded],
                    [d.middle for _, _, d, *_ in folded],
                    [prev for *_, prev, _ in folded],
                    [h for *_, h in folded],
                ),
            )
        if log.changed:
            cams = sorted(log.changed)
            await conn.execute(
                _UPSERT_BASES,
                (
                    log_id,
                    cams,
                    [log.bases[c].seq for c in cams],
                    [log.bases[c].at_ns for c in cams],
                    [log.bases[c].body for c in cams],
                ),
            )
        for table, seq, prev_seq in log.relinks:
            key = ("log_id", log_id) if table == "log_records" else ("log_no", log_no)
            await conn.execute(
                sql.SQL("UPDATE {} SET prev_seq = %s WHERE {} = %s AND seq = %s").format(
                    sql.Identifier(table), sql.Identifier(key[0])
                ),
                (prev_seq, key[1], seq),
            )
        mark_cur = await conn.execute(
            _ADVANCE, {"log": log_id, "no": log_no, "from": before, "window": WATERMARK_WINDOW}
        )
    after, more = await _advanced(mark_cur)
    while more:  # more than a window of records stepped over: on from there
        cur = await conn.execute(
            _ADVANCE, {"log": log_id, "no": log_no, "from": after, "window": WATERMARK_WINDOW}
        )
        after, more = await _advanced(cur)
    for conflict in log.conflicts:  # rare: each is two statements, one after the other
        await _report(conn, conflict, by, result)
    # The watermark goes out under the name of each gateway that sent a batch.
    for gateway in dict.fromkeys(b.gateway_id for b in batches):
        result.logs.append(LogProgress(log_id, after, after > before, gateway))


async def _refuse_foreign(
    conn: Conn,
    batches: Sequence[LogBatch],
    owner: str | None,
    log_unit: str | None,
    *,
    by: str,
    result: WriteResult,
) -> None:
    """Batches from a gateway other than the log's (``owner``), or that may not bind a
    log bound to no gateway but to unit ``log_unit``: none of their records is stored."""
    log_id, gateway_id = batches[0].log_id, batches[0].gateway_id  # one log, one sender
    sender = gateway_id or NO_GATEWAY
    whose = f"gateway {owner}'s" if owner is not None else f"unit {log_unit}'s"
    for batch in batches:
        first, last = batch.records[0].seq, batch.records[-1].seq
        conflict = Conflict(
            kind="log_batch",
            subject=f"{batch.log_id}:{first}-{last}:{sender}",
            # The cap counts against the sender, whose name the broker checked: what one
            # credential sends, under however many log ids, keeps at most the cap an hour.
            source=_sender_source(gateway_id),
            code="other_gateway" if owner is not None else "other_unit",
            detail=f"log {batch.log_id} is {whose}: a batch from {sender} naming unit "
            f"{batch.unit_id or 'none'} (records {first}-{last}) was not stored",
            unit_id=None if owner is not None else log_unit,
            issuer=owner,  # whose log it concerns: `archiver verify` lists it there
            # The records only: the same records resent (a new sent_at_ns) are one copy.
            payload="[" + ",".join(r.model_dump_json() for r in batch.records) + "]",
        )
        await _report(conn, conflict, by, result)
    result.counts["conflict.log_batch"] += len(batches)
    result.logs.append(
        LogProgress(
            log_id,
            0,
            False,
            gateway_id,
            # Not whose it is: the sender learns only that the log is not its own.
            refused=f"log {log_id} is another {'gateway' if owner is not None else 'unit'}'s:"
            f" the archive stores none of its batches from {sender}",
        )
    )


def _resent(
    batch: LogBatch, held: dict[int, tuple[int, str, str]], log: _Pending, result: WriteResult
) -> None:
    """Count the batch's records the archive already holds (or an earlier batch of the
    group brings), relink those resent with an earlier predecessor, and note the
    conflicting ones."""
    for record in batch.records:
        stored = held.get(record.seq)
        pending = log.hash_of(record.seq)
        if stored is not None:
            prev_seq, held_hash = stored[0], stored[1]
        elif pending is not None:
            prev_seq, held_hash = pending
        else:
            continue  # new
        if held_hash == record.hash:
            if record.prev_seq < prev_seq:
                # The same record resent after the edge's retention removed the one before
                # it: it now names an earlier predecessor, which the watermark must be
                # allowed to follow.
                if stored is not None:
                    log.relinks.append((stored[2], record.seq, record.prev_seq))
                    held[record.seq] = (record.prev_seq, stored[1], stored[2])
                else:
                    log.relink(record.seq, record.prev_seq)
                result.counts["relinked.log_record"] += 1
            else:
                result.counts["duplicate.log_record"] += 1
            continue
        result.counts["conflict.log_record"] += 1
        log.conflicts.append(
            Conflict(
                kind="log_record",
                subject=f"{batch.log_id}:{record.seq}",
                source=_sender_source(batch.gateway_id),
                code="differs",
                detail=f"log {batch.log_id} record {record.seq}: the archive holds hash "
                f"{held_hash}, the edge sent {record.hash}",
                unit_id=batch.unit_id,
                issuer=batch.gateway_id,
                payload=record.model_dump_json(),
            )
        )


async def _advanced(cur: AsyncCursor[tuple[Any, ...]]) -> tuple[int, bool]:
    row = await cur.fetchone()
    assert row is not None  # one row: the watermark, stored
    return int(row[0]), bool(row[1])


# --- reading --------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogStatus:
    log_id: str
    unit_id: str | None
    gateway_id: str | None
    synced_seq: int
    head_seq: int
    records: int
    # Live rows are made from its records through this seq (mesh/archive/fill.py); or why
    # they never will be.
    vouched_seq: int = 0
    vouch_problem: str | None = None


async def log_status(conn: Conn, log_id: str) -> LogStatus | None:
    cur = await conn.execute(
        "SELECT l.unit_id, l.gateway_id, l.synced_seq, l.head_seq,"
        " (SELECT count(*) FROM log_records r WHERE r.log_id = l.log_id)"
        " + (SELECT count(*) FROM presence_repeats p WHERE p.log_no = l.log_no),"
        " l.vouched_seq, l.vouch_problem"
        " FROM logs l WHERE l.log_id = %s",
        (log_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return LogStatus(
        log_id, row[0], row[1], int(row[2]), int(row[3]), int(row[4]), int(row[5]), row[6]
    )


async def read_log(
    conn: Conn, log_id: str, *, through_seq: int | None = None, after_seq: int = 0
) -> list[LogRecord]:
    """The archived records of one log in seq order, as the edge's ``LogRecord``s: the same
    objects its own chain check reads (a folded presence record rebuilt from its base).
    ``after_seq``: only those after it (the record at it is read too, for the link of a
    folded record that follows it, and left out)."""
    cur = await conn.execute(
        "SELECT seq, at_ns, kind, activation_id, body, prev_hash, hash FROM log_records"
        " WHERE log_id = %s AND seq >= %s AND (%s::bigint IS NULL OR seq <= %s) ORDER BY seq",
        (log_id, after_seq, through_seq, through_seq),
    )
    found = [
        LogRecord(
            seq=int(seq),
            at_ns=int(at_ns),
            kind=kind,
            activation_id=activation_id,
            body=body,
            prev_hash=prev_hash,
            hash=hash_,
        )
        for seq, at_ns, kind, activation_id, body, prev_hash, hash_ in await cur.fetchall()
    ]
    unlinked: dict[int, int] = {}  # seq of a folded record without prev_hash -> prev_seq
    cur = await conn.execute(
        "SELECT p.seq, p.at_ns, b.body, p.head, p.tail, p.middle, p.prev_hash, p.hash,"
        " p.prev_seq"
        " FROM presence_repeats p JOIN logs l ON l.log_no = p.log_no"
        " LEFT JOIN log_records b ON b.log_id = l.log_id AND b.seq = p.base_seq"
        " WHERE l.log_id = %s AND p.seq >= %s AND (%s::bigint IS NULL OR p.seq <= %s)",
        (log_id, after_seq, through_seq, through_seq),
    )
    for seq, at_ns, base, head, tail, middle, prev_hash, hash_, prev_seq in await cur.fetchall():
        # A base is in the same month as its repeats: retention drops them together.
        body = "" if base is None else unfold(str(base), Delta(int(head), int(tail), str(middle)))
        if prev_hash is None:
            unlinked[int(seq)] = int(prev_seq)
        found.append(
            LogRecord(
                seq=int(seq),
                at_ns=int(at_ns),
                kind=PRESENCE_KIND,
                activation_id=None,
                body=body,
                prev_hash="" if prev_hash is None else bytes(prev_hash).hex(),
                hash=bytes(hash_).hex(),
            )
        )
    found.sort(key=lambda r: r.seq)
    if unlinked:
        # The link of a folded record is its predecessor's hash (stored in the same batch
        # and month, and checked then): empty if the predecessor is not there, which the
        # chain check reports.
        hashes = {r.seq: r.hash for r in found}
        found = [
            r if r.seq not in unlinked else replace(r, prev_hash=hashes.get(unlinked[r.seq], ""))
            for r in found
        ]
    return [r for r in found if r.seq > after_seq]


@dataclass(frozen=True)
class StoredConflict:
    kind: str
    subject: str
    code: str
    detail: str
    copies: int
    first_at: str


async def conflicts_for(
    conn: Conn, *, unit_id: str | None, gateway_id: str | None, log_id: str, limit: int = 1000
) -> tuple[list[StoredConflict], int]:
    """The refused copies that concern one edge log's gateway or unit, or its records,
    oldest first (at most ``limit``), and how many there are in all."""
    where = (
        " FROM conflicts WHERE unit_id = %s OR issuer = %s"
        " OR (kind = 'log_record' AND subject LIKE %s)"
    )
    pattern = log_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + ":%"
    params = (unit_id, gateway_id, pattern)
    cur = await conn.execute(f"SELECT count(*){where}", params)
    row = await cur.fetchone()
    total = int(row[0]) if row is not None else 0
    cur = await conn.execute(
        f"SELECT kind, subject, code, detail, copies, first_at{where} ORDER BY id LIMIT %s",
        (*params, limit),
    )
    found = [
        StoredConflict(kind, subject, code, detail, int(copies), first_at.isoformat())
        for kind, subject, code, detail, copies, first_at in await cur.fetchall()
    ]
    return found, total


def _jws_json(item: Item) -> str | None:
    return None if item.jws is None else item.jws.to_json()
