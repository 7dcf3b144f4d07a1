"""Filling in the live tables from the synced logs (docs/archive.md, "Live rows from the
logs"): what ``from_log`` decides, read from and written to the archive.

A log is checked from where the last check ended (``logs.vouched_seq``): its records
since then are read, their chain verified from that record on, the keys of its
checkpoints checked against the trust store, and the rows of the records a checkpoint
vouches for written as their live messages would have been (idempotent: what the live
path stored is a duplicate). Reading and verifying take no lock; the writing, in one
short transaction, locks the log's row and goes ahead only if no one moved the mark
meanwhile (another archiver did the same work).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from mesh.archive import store
from mesh.archive.db import Conn
from mesh.archive.from_log import live_items, vouch_problem
from mesh.journal.chain import CHECKPOINT_KIND, verify_chain
from mesh.security.trust import TrustStore

# Records read in one check: a longer stretch is gone through in several (the next check
# starts where a checkpoint in this one vouched). A gateway checkpoints every minute by
# default, far more often than this many records.
FILL_RECORDS_MAX = 50_000
# Logs looked at by one sweep (for the logs no batch has announced since a restart).
SWEEP_MAX = 1000


@dataclass
class FillOutcome:
    log_id: str
    vouched_seq: int
    # "filled", "nothing_new", "not_vouched" (no checkpoint covers the new records yet),
    # "unknown_gateway", "problem" (found now: the log will not be used, ``problem`` says
    # why), "known_problem" (found before), "raced" (another archiver moved the mark)
    status: str
    problem: str | None = None
    refused: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


async def due_logs(conn: Conn, limit: int = SWEEP_MAX) -> list[str]:
    """Logs with records synced past their mark, and no problem."""
    cur = await conn.execute(
        "SELECT log_id FROM logs WHERE synced_seq > vouched_seq AND vouch_problem IS NULL"
        " ORDER BY last_batch_at LIMIT %s",
        (limit,),
    )
    return [str(row[0]) for row in await cur.fetchall()]


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
        "SELECT gateway_id, synced_seq, vouched_seq, vouched_hash, vouch_problem FROM logs"
        " WHERE log_id = %s",
        (log_id,),
    )
    row = await cur.fetchone()
    if row is None:
        return FillOutcome(log_id, 0, "nothing_new")
    gateway, synced, vouched, vouched_hash, problem = row
    vouched = int(vouched)
    if problem is not None:
        return FillOutcome(log_id, vouched, "known_problem", problem)
    if int(synced) <= vouched:
        return FillOutcome(log_id, vouched, "nothing_new")
    unit = units.get(str(gateway)) if gateway is not None else None
    if gateway is None or unit is None:
        return FillOutcome(log_id, vouched, "unknown_gateway", f"gateway {gateway}")
    # Only a checkpoint vouches: without one past the mark, nothing to read (most checks,
    # as batches come every few seconds and checkpoints every minute).
    cur = await conn.execute(
        "SELECT max(seq) FROM log_records WHERE log_id = %s AND seq > %s AND seq <= %s"
        " AND kind = %s",
        (log_id, vouched, min(int(synced), vouched + FILL_RECORDS_MAX), CHECKPOINT_KIND),
    )
    last_checkpoint = await cur.fetchone()
    if last_checkpoint is None or last_checkpoint[0] is None:
        return FillOutcome(log_id, vouched, "not_vouched")
    through = int(last_checkpoint[0])
    records = await store.read_log(conn, log_id, after_seq=vouched, through_seq=through)
    follows = (vouched, str(vouched_hash)) if vouched > 0 and vouched_hash else None
    report = verify_chain(records, log_id=log_id, central_copy=True, follows=follows)
    if report.tampered and follows is not None:
        # A retention gap right after the mark, say: judged with the whole log (rare).
        whole = await store.read_log(conn, log_id, through_seq=through)
        report = verify_chain(whole, log_id=log_id, central_copy=True)
    problem = vouch_problem(report, trust, str(gateway))
    if problem is not None:
        async with conn.transaction():
            await conn.execute(
                "UPDATE logs SET vouch_problem = %s WHERE log_id = %s AND vouched_seq = %s",
                (problem, log_id, vouched),
            )
        return FillOutcome(log_id, vouched, "problem", problem)
    signed = report.signed_through
    if signed is None or signed <= vouched:
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
        await store.write_small(conn, rows.items, f"{archived_by}/log", result)
        await conn.execute(
            "UPDATE logs SET vouched_seq = %s, vouched_hash = %s WHERE log_id = %s",
            (signed, covered[-1].hash, log_id),
        )
    return FillOutcome(log_id, signed, "filled", None, rows.refused, dict(result.counts))
