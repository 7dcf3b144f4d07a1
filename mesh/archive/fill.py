"""Filling in the live tables from the synced logs (docs/archive.md, "Live rows from the
logs"): what ``from_log`` decides, read from and written to the archive.

A log is checked from where the last check ended (``logs.vouched_seq``): its records
since then, up to its last checkpoint within a bounded stretch, are read, their chain
verified from that record on (in a thread: the event loop keeps serving), the keys of its
checkpoints checked against the trust store, and the rows of the records a checkpoint
vouches for written as their live messages would have been (idempotent: what the live
path stored is a duplicate; a row PostgreSQL refuses is refused alone). Reading and
verifying take no lock; the writing, in one short transaction, locks the log's row and
goes ahead only if no one moved the mark meanwhile (another archiver did the work).

A log is looked at again only once it has more records (``fill_checked_seq``), so logs
that cannot be filled yet (no checkpoint, a gateway not in the fleet file) cost one
query each, once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import psycopg

from mesh.archive import store
from mesh.archive.db import Conn
from mesh.archive.from_log import SeenCheckpoint, VouchProblem, live_items, vouch_problem
from mesh.archive.intake import Item
from mesh.journal.chain import CHECKPOINT_KIND, ChainReport, verify_chain
from mesh.journal.store import LogRecord
from mesh.security.trust import TrustStore

# One check reads at most this many records and this many bytes of their bodies, up to
# the last checkpoint within both (a longer stretch is gone through in several). A gateway
# checkpoints every minute by default: far fewer. A stretch between two checkpoints over
# the byte budget is a problem of the copy.
FILL_RECORDS_MAX = 20_000
FILL_BYTES_MAX = 64 * 1024 * 1024
# A stretch that does not link to the mark is judged with the whole log, up to this many
# records; a longer log is left to ``archiver verify``.
WHOLE_RECORDS_MAX = 200_000
# Logs looked at by one sweep (for the logs no batch has announced since a restart).
SWEEP_MAX = 1000


@dataclass
class FillOutcome:
    log_id: str
    vouched_seq: int
    # "filled", "nothing_new", "not_vouched" (no checkpoint covers the new records yet),
    # "unknown_gateway", "problem" (found now: the log is not used, ``problem`` says why),
    # "known_problem" (found before), "raced" (another archiver moved the mark)
    status: str
    problem: str | None = None
    refused: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


async def due_logs(conn: Conn, limit: int = SWEEP_MAX) -> list[str]:
    """Logs with records synced past both their mark and their last check, no problem."""
    cur = await conn.execute(
        "SELECT log_id FROM logs WHERE vouch_problem IS NULL"
        " AND synced_seq > greatest(vouched_seq, fill_checked_seq)"
        " ORDER BY last_batch_at LIMIT %s",
        (limit,),
    )
    return [str(row[0]) for row in await cur.fetchall()]


async def forget_key_problems(conn: Conn) -> int:
    """Let the logs refused for a key be checked again (the trust store may have changed:
    an archiver calls this when it starts)."""
    async with conn.transaction():
        cur = await conn.execute(
            "UPDATE logs SET vouch_problem = NULL, vouch_problem_kind = NULL"
            " WHERE vouch_problem_kind = 'key'"
        )
    return cur.rowcount


async def fill_log(
    conn: Conn,
    log_id: str,
    *,
    trust: TrustStore,
    units: Mapping[str, str],
    archived_by: str,
) -> FillOutcome:
    """Make the live rows of ``log_id``'s records vouched for since its mark. ``units``:
    each gateway's unit, from the fleet file."""
    cur = await conn.execute(
        "SELECT gateway_id, synced_seq, vouched_seq, vouched_hash, vouch_problem,"
        " fill_checked_seq FROM logs WHERE log_id = %s",
        (log_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return FillOutcome(log_id, 0, "nothing_new")
    gateway, synced, vouched, vouched_hash, problem, checked = row
    synced, vouched = int(synced), int(vouched)
    if problem is not None:
        return FillOutcome(log_id, vouched, "known_problem", str(problem))
    if synced <= max(vouched, int(checked)):
        return FillOutcome(log_id, vouched, "nothing_new")
    unit = units.get(str(gateway)) if gateway is not None else None
    if gateway is None or unit is None:
        await _checked(conn, log_id, synced)
        return FillOutcome(log_id, vouched, "unknown_gateway", f"gateway {gateway}")
    start = await _first_after(conn, log_id, vouched)
    if start is None:  # nothing past the mark (a watermark that stepped over a gap)
        await _checked(conn, log_id, synced)
        return FillOutcome(log_id, vouched, "not_vouched")
    # The window counts seqs from the first record past the mark (a retention gap right
    # after it is no window at all): at most FILL_RECORDS_MAX records, folded or not.
    window = min(synced, start - 1 + FILL_RECORDS_MAX)
    checkpoints, over_budget = await _checkpoints(conn, log_id, vouched, window, FILL_BYTES_MAX)
    if not checkpoints:
        if over_budget:
            found = VouchProblem(
                "copy",
                f"more than {FILL_BYTES_MAX} bytes of records after record {vouched} before "
                "a checkpoint",
            )
            return await _refused(conn, log_id, vouched, found)
        await _checked(conn, log_id, synced)
        return FillOutcome(log_id, vouched, "not_vouched")
    through = checkpoints[-1].seq
    records = await store.read_log(conn, log_id, after_seq=vouched, through_seq=through)
    follows = (vouched, str(vouched_hash or "")) if vouched > 0 else None
    report = await _verified(records, log_id, follows)
    if report.tampered:
        # A gap the stretch cannot judge alone (one right after the mark; the edge's
        # retention run that a retention record further on accounts for): judged with the
        # whole log as synced.
        count = await _records_through(conn, log_id, synced)
        if count > WHOLE_RECORDS_MAX:
            found = VouchProblem(
                "copy",
                f"records after {vouched} do not verify on their own ({report.tampering[0]}), "
                f"and the log ({count} records) is too long to check whole here: archiver verify",
            )
            return await _refused(conn, log_id, vouched, found)
        whole = await store.read_log(conn, log_id, through_seq=synced)
        report = await _verified(whole, log_id, None)
        records = [r for r in whole if r.seq > vouched]
        checkpoints, _ = await _checkpoints(conn, log_id, vouched, synced, None)
    problem_now = vouch_problem(report, checkpoints, trust, str(gateway))
    if problem_now is not None:
        return await _refused(conn, log_id, vouched, problem_now)
    signed = report.signed_through
    if signed is None or signed <= vouched:
        await _checked(conn, log_id, synced)
        return FillOutcome(log_id, vouched, "not_vouched")
    covered = [r for r in records if r.seq <= signed]
    rows = live_items(covered, str(gateway), unit, trust)
    result = store.WriteResult()
    async with conn.transaction():
        cur = await conn.execute(
            "SELECT vouched_seq FROM logs WHERE log_id = %s FOR UPDATE", (log_id,)
        )
        held = await cur.fetchone()
        if held is None or int(held[0]) != vouched:
            return FillOutcome(log_id, vouched, "raced")
        refused = await _write(conn, rows.items, f"{archived_by}/log", result)
        await conn.execute(
            "UPDATE logs SET vouched_seq = %s, vouched_hash = %s WHERE log_id = %s",
            (signed, covered[-1].hash, log_id),
        )
    return FillOutcome(log_id, signed, "filled", None, rows.refused + refused, dict(result.counts))


async def _first_after(conn: Conn, log_id: str, seq: int) -> int | None:
    cur = await conn.execute(
        "SELECT least((SELECT min(seq) FROM log_records WHERE log_id = %s AND seq > %s),"
        " (SELECT min(p.seq) FROM presence_repeats p JOIN logs l ON l.log_no = p.log_no"
        "  WHERE l.log_id = %s AND p.seq > %s))",
        (log_id, seq, log_id, seq),
    )
    row = await cur.fetchone()
    return None if row is None or row[0] is None else int(row[0])


async def _records_through(conn: Conn, log_id: str, seq: int) -> int:
    cur = await conn.execute(
        "SELECT (SELECT count(*) FROM log_records WHERE log_id = %s AND seq <= %s)"
        " + (SELECT count(*) FROM presence_repeats p JOIN logs l ON l.log_no = p.log_no"
        "  WHERE l.log_id = %s AND p.seq <= %s)",
        (log_id, seq, log_id, seq),
    )
    row = await cur.fetchone()
    return 0 if row is None else int(row[0])


async def _checkpoints(
    conn: Conn, log_id: str, after: int, through: int, bytes_max: int | None
) -> tuple[list[SeenCheckpoint], bool]:
    """The checkpoints in (after, through], up to the one past which the records' bodies
    add up to more than ``bytes_max`` (None: no budget), and whether one lay past it."""
    cur = await conn.execute(
        "SELECT seq, at_ns, body, (extract(epoch FROM archived_at) * 1e9)::bigint, bytes"
        " FROM (SELECT seq, at_ns, kind, body, archived_at,"
        "  sum(octet_length(body)) OVER (ORDER BY seq) AS bytes FROM log_records"
        "  WHERE log_id = %s AND seq > %s AND seq <= %s) AS stretch"
        " WHERE kind = %s ORDER BY seq",
        (log_id, after, through, CHECKPOINT_KIND),
    )
    found: list[SeenCheckpoint] = []
    over = False
    for seq, at_ns, body, archived_ns, size in await cur.fetchall():
        if bytes_max is not None and int(size) > bytes_max:
            over = True
            break
        found.append(SeenCheckpoint.of(int(seq), int(at_ns), str(body), int(archived_ns)))
    return found, over


async def _verified(
    records: Sequence[LogRecord], log_id: str, follows: tuple[int, str] | None
) -> ChainReport:
    # Hashing a stretch takes tens of milliseconds: off the event loop.
    return await asyncio.to_thread(
        verify_chain, records, log_id=log_id, central_copy=True, follows=follows
    )


async def _checked(conn: Conn, log_id: str, synced: int) -> None:
    async with conn.transaction():
        await conn.execute(
            "UPDATE logs SET fill_checked_seq = greatest(fill_checked_seq, %s) WHERE log_id = %s",
            (synced, log_id),
        )


async def _refused(conn: Conn, log_id: str, vouched: int, found: VouchProblem) -> FillOutcome:
    async with conn.transaction():
        await conn.execute(
            "UPDATE logs SET vouch_problem = %s, vouch_problem_kind = %s"
            " WHERE log_id = %s AND vouched_seq = %s",
            (found.reason, found.kind, log_id, vouched),
        )
    return FillOutcome(log_id, vouched, "problem", found.reason)


async def _write(
    conn: Conn, items: Sequence[Item], by: str, result: store.WriteResult
) -> list[str]:
    """The rows, in savepoints: if PostgreSQL refuses one (a NUL in its text, say), the
    others are written one by one and that one is refused alone (its reason returned)."""
    try:
        async with conn.transaction():
            await store.write_small(conn, items, by, result, live=False)
        return []
    except (psycopg.DataError, psycopg.IntegrityError):
        result.counts.clear()  # rolled back: counted again below
        result.conflicts.clear()
    refused: list[str] = []
    for item in items:
        try:
            async with conn.transaction():
                await store.write_small(conn, [item], by, result, live=False)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            first = str(exc).strip().splitlines()[0]
            refused.append(f"{item.kind.value} not stored: PostgreSQL refused it ({first})")
    return refused
