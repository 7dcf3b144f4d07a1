"""Writing to and reading from the archive's PostgreSQL (the schema: migrations/).

Every write is idempotent: keyed by what makes a message the same message, with
``ON CONFLICT`` deciding what a second copy does (nothing, or for activation records,
replace an older version). So retrying a write after an error, or two archivers
receiving the same message, can never store anything twice.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from psycopg import sql

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
# Conflicts kept per source (an activation, the camera an ack speaks for, a log) in the
# last hour: distinct refused copies past this are counted and logged, not stored, so the
# table grows at most this fast whatever a credential sends; repeats of a stored copy only
# raise its ``copies``. What is kept of each copy is cut at CONFLICT_PAYLOAD_MAX.
CONFLICTS_PER_SOURCE_HOUR = 100
CONFLICT_PAYLOAD_MAX = 64 * 1024


@dataclass(frozen=True)
class LogProgress:
    """What one stored batch did to its log's watermark."""

    log_id: str
    synced_seq: int
    advanced: bool
    # Who sent the batch: the watermark goes out under its name (bridge/topics.py).
    gateway_id: str | None = None


@dataclass
class WriteResult:
    # "stored.trigger", "duplicate.ack", "replaced.activation", "superseded.activation" …
    counts: Counter[str] = field(default_factory=Counter)
    logs: list[LogProgress] = field(default_factory=list)
    # Copies refused because they conflict with what the archive holds (another gateway's
    # version of an activation, an ack the trust store refuses, a log record with another
    # hash), each described for the log; they are also in the conflicts table.
    conflicts: list[str] = field(default_factory=list)


async def write(conn: Conn, items: Sequence[Item], archived_by: str) -> WriteResult:
    """Store ``items``: the small ones in one transaction, the log batches in another (each
    batch locks its log's row while the watermark is recomputed; logs are locked in the
    order of their ids, batches of one log in seq order, so two archivers never deadlock)."""
    result = WriteResult()
    small = sorted((i for i in items if i.kind is not TopicKind.LOG_RECORDS), key=_lock_order)
    if small:
        async with conn.transaction():
            triggers = [i for i in small if isinstance(i.model, TriggerEvent)]
            if triggers:
                await _write_triggers(conn, triggers, archived_by, result)
            for item in small:
                if not isinstance(item.model, TriggerEvent):
                    outcome = await _write_one(conn, item, archived_by, result)
                    result.counts[f"{outcome}.{item.kind.value}"] += 1
    batches = sorted(
        (i.model for i in items if isinstance(i.model, LogBatch)),
        key=lambda b: (b.log_id, b.records[0].seq),
    )
    if batches:
        async with conn.transaction():
            for batch in batches:
                await _write_batch(conn, batch, archived_by, result)
    return result


def _lock_order(item: Item) -> tuple[str, str]:
    # Two archivers writing the same rows lock them in the same order: no deadlock.
    model = item.model
    key = getattr(model, "activation_id", None) or getattr(model, "event_id", "")
    return item.kind.value, str(key)


@dataclass(frozen=True)
class Conflict:
    """A copy refused because it conflicts with what the archive holds."""

    kind: str  # activation, ack, log_record
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
    " ON CONFLICT DO NOTHING RETURNING event_id"
)


async def _write_triggers(conn: Conn, items: Sequence[Item], by: str, result: WriteResult) -> None:
    """Triggers in one statement (keyed by event_id: a second copy, even in the same
    group, is a duplicate)."""
    models = [i.model for i in items if isinstance(i.model, TriggerEvent)]
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
            [i.raw for i in items],
            [_jws_json(i) for i in items],
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
                    source=model.camera_id,
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
    assert held is not None  # the insert met this row (rows are never deleted)
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
            source=record.activation_id,
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
_UPSERT_LOG = (
    "INSERT INTO logs (log_id, unit_id, gateway_id, head_seq) VALUES (%s, %s, %s, %s)"
    " ON CONFLICT (log_id) DO UPDATE SET"
    " unit_id = coalesce(EXCLUDED.unit_id, logs.unit_id),"
    " gateway_id = coalesce(EXCLUDED.gateway_id, logs.gateway_id),"
    " head_seq = greatest(logs.head_seq, EXCLUDED.head_seq), last_batch_at = now()"
    " RETURNING synced_seq, log_no"
)
_INSERT_RECORDS = (
    "INSERT INTO log_records (log_id, seq, prev_seq, at_ns, kind, activation_id, body,"
    " prev_hash, hash, archived_by)"
    " SELECT %s, r.*, %s FROM unnest(%b::bigint[], %b::bigint[], %b::bigint[], %b::text[],"
    " %b::text[], %b::text[], %b::text[], %b::text[])"
    " AS r (seq, prev_seq, at_ns, kind, activation_id, body, prev_hash, hash)"
    " ON CONFLICT DO NOTHING"
)
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
# is kept by looking it up under the log's row lock before inserting.
_HELD = (
    "SELECT seq, prev_seq, hash, 'log_records' FROM log_records"
    " WHERE log_id = %s AND seq = ANY(%s)"
    " UNION ALL SELECT seq, prev_seq, encode(hash, 'hex'), 'presence_repeats'"
    " FROM presence_repeats WHERE log_no = %s AND seq = ANY(%s)"
)
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
# the edge had can be missing in between (its predecessor is at or before the step).
_WATERMARK = (
    "WITH RECURSIVE walk (seq) AS ("
    " SELECT %s::bigint"
    " UNION ALL"
    " SELECT nxt.seq FROM walk CROSS JOIN LATERAL ("
    "  SELECT * FROM ("
    "   (SELECT r.seq, r.prev_seq FROM log_records r"
    "    WHERE r.log_id = %s AND r.seq > walk.seq ORDER BY r.seq LIMIT 1)"
    "   UNION ALL"
    "   (SELECT p.seq, p.prev_seq FROM presence_repeats p"
    "    WHERE p.log_no = %s AND p.seq > walk.seq ORDER BY p.seq LIMIT 1)"
    "  ) AS both_ ORDER BY seq LIMIT 1) AS nxt"
    " WHERE nxt.prev_seq <= walk.seq)"
    " SELECT max(seq) FROM walk"
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


async def _write_batch(conn: Conn, batch: LogBatch, by: str, result: WriteResult) -> None:
    records = batch.records
    # The caller's transaction holds every batch of a group; this one is a savepoint in it.
    async with conn.transaction():
        # Locks the log's row until commit: batches of one log are stored one at a time
        # across all archivers, so each recomputation sees every batch committed before,
        # and a seq looked up here cannot be inserted by anyone else meanwhile.
        cur = await conn.execute(
            _UPSERT_LOG, (batch.log_id, batch.unit_id, batch.gateway_id, batch.head_seq)
        )
        row = await cur.fetchone()
        assert row is not None  # an upsert with RETURNING always returns its row
        before, log_no = int(row[0]), int(row[1])
        seqs = [r.seq for r in records]
        cur = await conn.execute(_HELD, (batch.log_id, seqs, log_no, seqs))
        held = {
            int(seq): (int(prev), str(h), str(table))
            for seq, prev, h, table in await cur.fetchall()
        }
        new = [r for r in records if r.seq not in held]
        cameras = sorted(
            {k[0] for r in new if (k := presence_key(r.kind, r.activation_id, r.body)) is not None}
        )
        bases: dict[str, _Base] = {}
        if cameras:
            cur = await conn.execute(_BASES, (batch.log_id, cameras))
            for camera, seq, at_ns, body in await cur.fetchall():
                found = presence_key(PRESENCE_KIND, None, body)
                bases[str(camera)] = _Base(
                    int(seq), int(at_ns), str(body), None if found is None else found[1]
                )
        plan = split(new, bases)
        if plan.full:
            full = plan.full
            await conn.execute(
                _INSERT_RECORDS,
                (
                    batch.log_id,
                    by,
                    [r.seq for r in full],
                    [r.prev_seq for r in full],
                    [r.at_ns for r in full],
                    [r.kind for r in full],
                    [r.activation_id for r in full],
                    [r.body for r in full],
                    [r.prev_hash for r in full],
                    [r.hash for r in full],
                ),
            )
        if plan.folded:
            folded = plan.folded
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
        if plan.bases:
            cams = sorted(plan.bases)
            await conn.execute(
                _UPSERT_BASES,
                (
                    batch.log_id,
                    cams,
                    [plan.bases[c].seq for c in cams],
                    [plan.bases[c].at_ns for c in cams],
                    [plan.bases[c].body for c in cams],
                ),
            )
        result.counts["stored.log_record"] += len(plan.full) + len(plan.folded)
        result.counts["folded.log_record"] += len(plan.folded)
        for record in records:
            if record.seq not in held:
                continue
            prev_seq, held_hash, table = held[record.seq]
            if held_hash == record.hash:
                if record.prev_seq < prev_seq:
                    # The same record resent after the edge's retention removed the one
                    # before it: it now names an earlier predecessor, which the watermark
                    # must be allowed to follow.
                    key = ("log_id", batch.log_id) if table == "log_records" else ("log_no", log_no)
                    await conn.execute(
                        sql.SQL("UPDATE {} SET prev_seq = %s WHERE {} = %s AND seq = %s").format(
                            sql.Identifier(table), sql.Identifier(key[0])
                        ),
                        (record.prev_seq, key[1], record.seq),
                    )
                    result.counts["relinked.log_record"] += 1
                else:
                    result.counts["duplicate.log_record"] += 1
                continue
            result.counts["conflict.log_record"] += 1
            conflict = Conflict(
                kind="log_record",
                subject=f"{batch.log_id}:{record.seq}",
                source=batch.log_id,
                code="differs",
                detail=f"log {batch.log_id} record {record.seq}: the archive holds hash "
                f"{held_hash}, the edge sent {record.hash}",
                unit_id=batch.unit_id,
                issuer=batch.gateway_id,
                payload=record.model_dump_json(),
            )
            await _report(conn, conflict, by, result)
        cur = await conn.execute(_WATERMARK, (before, batch.log_id, log_no))
        row = await cur.fetchone()
        after = int(row[0]) if row is not None and row[0] is not None else before
        if after > before:
            await conn.execute(
                "UPDATE logs SET synced_seq = %s WHERE log_id = %s", (after, batch.log_id)
            )
    result.counts["stored.log_batch"] += 1
    result.logs.append(LogProgress(batch.log_id, after, after > before, batch.gateway_id))


# --- reading --------------------------------------------------------------------------------
@dataclass(frozen=True)
class LogStatus:
    log_id: str
    unit_id: str | None
    gateway_id: str | None
    synced_seq: int
    head_seq: int
    records: int


async def log_status(conn: Conn, log_id: str) -> LogStatus | None:
    cur = await conn.execute(
        "SELECT l.unit_id, l.gateway_id, l.synced_seq, l.head_seq,"
        " (SELECT count(*) FROM log_records r WHERE r.log_id = l.log_id)"
        " + (SELECT count(*) FROM presence_repeats p WHERE p.log_no = l.log_no)"
        " FROM logs l WHERE l.log_id = %s",
        (log_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return None
    return LogStatus(log_id, row[0], row[1], int(row[2]), int(row[3]), int(row[4]))


async def read_log(conn: Conn, log_id: str, *, through_seq: int | None = None) -> list[LogRecord]:
    """The archived records of one log in seq order, as the edge's ``LogRecord``s: the same
    objects its own chain check reads (a folded presence record rebuilt from its base)."""
    cur = await conn.execute(
        "SELECT seq, at_ns, kind, activation_id, body, prev_hash, hash FROM log_records"
        " WHERE log_id = %s AND (%s::bigint IS NULL OR seq <= %s) ORDER BY seq",
        (log_id, through_seq, through_seq),
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
        " WHERE l.log_id = %s AND (%s::bigint IS NULL OR p.seq <= %s)",
        (log_id, through_seq, through_seq),
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
    return found


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
