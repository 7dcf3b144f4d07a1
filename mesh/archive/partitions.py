"""The archive's monthly partitions: which to create ahead, which retention may drop
(pure), and doing it (SQL). docs/archive.md, "Volume, partitions and retention".

``log_records`` and ``presence_repeats`` are partitioned by month of ``at_ns`` (UTC).
Months are created ahead by the archiver (``AHEAD_MONTHS``, bounded: a record further in
the future than that lands in the default partition, which retention never drops).
Retention drops a month of both tables together, only when the whole month is older
than the cutoff and no active legal hold covers a row in it; every month dropped or kept
for a hold is written to ``retention_runs`` and logged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import structlog
from psycopg import sql

from mesh.archive.db import Conn

NS = 1_000_000_000
PARTITIONED = ("log_records", "presence_repeats")
# Months created ahead of the current one, each time the archiver starts and every
# ENSURE_EVERY_S while it runs.
AHEAD_MONTHS = 2
ENSURE_EVERY_S = 3600.0
# A retention run and hold changes serialise on this advisory lock ("tm" + "rt").
RETENTION_LOCK = 0x746D7274
_NAME = re.compile(r"^log_records_p(\d{4})(\d{2})$")

_log = structlog.get_logger("mesh.archive.retention")


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def of_ns(cls, at_ns: int) -> Month:
        when = datetime.fromtimestamp(at_ns / NS, UTC)
        return cls(when.year, when.month)

    @property
    def label(self) -> str:
        return f"{self.year:04d}{self.month:02d}"

    def next(self) -> Month:
        return Month(self.year + 1, 1) if self.month == 12 else Month(self.year, self.month + 1)

    @property
    def from_ns(self) -> int:
        return int(datetime(self.year, self.month, 1, tzinfo=UTC).timestamp()) * NS

    @property
    def to_ns(self) -> int:
        return self.next().from_ns

    def partition(self, table: str) -> str:
        return f"{table}_p{self.label}"


def months_ahead(now_ns: int, ahead: int = AHEAD_MONTHS) -> list[Month]:
    """This month and ``ahead`` after it."""
    month = Month.of_ns(now_ns)
    found = [month]
    for _ in range(ahead):
        month = month.next()
        found.append(month)
    return found


def month_of_partition(name: str) -> Month | None:
    match = _NAME.match(name)
    if match is None:
        return None
    month = int(match.group(2))
    return Month(int(match.group(1)), month) if 1 <= month <= 12 else None


@dataclass(frozen=True)
class Hold:
    id: int
    activation_id: str | None
    unit_id: str | None
    from_ns: int | None
    to_ns: int | None
    reason: str
    placed_by: str
    placed_at: str
    released_by: str | None = None
    released_at: str | None = None

    def describe(self) -> str:
        if self.activation_id is not None:
            what = f"activation {self.activation_id}"
        elif self.unit_id is not None:
            what = f"unit {self.unit_id}"
        else:
            what = f"at_ns {self.from_ns}..{self.to_ns}"
        return f"hold {self.id} ({what}: {self.reason})"


@dataclass(frozen=True)
class Verdict:
    month: Month
    drop: bool
    held_by: tuple[int, ...]  # the active holds that keep it (drop is then False)


def cutoff_ns(now_ns: int, keep_days: int) -> int:
    return now_ns - keep_days * 86_400 * NS


def expired(month: Month, cutoff: int) -> bool:
    """Only a month that ended at or before the cutoff may go: nothing newer is lost."""
    return month.to_ns <= cutoff


def time_hold_covers(hold: Hold, month: Month) -> bool:
    return (
        hold.from_ns is not None
        and hold.to_ns is not None
        and hold.from_ns < month.to_ns
        and month.from_ns < hold.to_ns
    )


def verdict(month: Month, cutoff: int, holding: tuple[int, ...]) -> Verdict | None:
    """What retention does with a month: None while it is not yet expired."""
    if not expired(month, cutoff):
        return None
    return Verdict(month, drop=not holding, held_by=holding)


# --- SQL ---------------------------------------------------------------------------------
async def existing_months(conn: Conn) -> list[Month]:
    cur = await conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'log_records'::regclass"
    )
    found = [month_of_partition(str(name)) for (name,) in await cur.fetchall()]
    return sorted(m for m in found if m is not None)


async def ensure_ahead(conn: Conn, now_ns: int, ahead: int = AHEAD_MONTHS) -> list[str]:
    """Create the partitions of this month and ``ahead`` more that are missing; return
    those created. A month the default partition already holds rows of (an edge clock
    that ran ahead) cannot be created: logged, and its rows stay in the default."""
    created: list[str] = []
    async with conn.transaction():
        # Archivers starting together, and retention: one at a time.
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (RETENTION_LOCK,))
        have = set(await existing_months(conn))
        for month in months_ahead(now_ns, ahead):
            if month in have:
                continue
            try:
                async with conn.transaction():  # a savepoint: one month failing is one month
                    for table in PARTITIONED:
                        await conn.execute(
                            sql.SQL(
                                "CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})"
                            ).format(
                                sql.Identifier(month.partition(table)),
                                sql.Identifier(table),
                                sql.Literal(month.from_ns),
                                sql.Literal(month.to_ns),
                            )
                        )
            except psycopg.errors.CheckViolation as exc:
                _log.error(
                    "partition not created: the default partition holds rows of its month",
                    month=month.label,
                    error=str(exc).strip(),
                )
                continue
            created.append(month.label)
    if created:
        _log.info("archive partitions created", months=created)
    return created


async def dropped_months(conn: Conn) -> list[str]:
    """The months retention dropped (YYYY-MM), oldest first."""
    cur = await conn.execute(
        "SELECT DISTINCT month FROM retention_runs WHERE action = 'dropped' ORDER BY month"
    )
    return [f"{m[:4]}-{m[4:]}" for (m,) in await cur.fetchall()]


async def holds(conn: Conn, *, include_released: bool = False) -> list[Hold]:
    cur = await conn.execute(
        "SELECT id, activation_id, unit_id, from_ns, to_ns, reason, placed_by, placed_at,"
        " released_by, released_at FROM holds"
        " WHERE %s OR released_at IS NULL ORDER BY id",
        (include_released,),
    )
    return [
        Hold(
            int(r[0]),
            r[1],
            r[2],
            r[3],
            r[4],
            r[5],
            r[6],
            r[7].isoformat(),
            r[8],
            None if r[9] is None else r[9].isoformat(),
        )
        for r in await cur.fetchall()
    ]


async def place_hold(
    conn: Conn,
    *,
    reason: str,
    by: str,
    activation_id: str | None = None,
    unit_id: str | None = None,
    from_ns: int | None = None,
    to_ns: int | None = None,
) -> int:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (RETENTION_LOCK,))
        cur = await conn.execute(
            "INSERT INTO holds (activation_id, unit_id, from_ns, to_ns, reason, placed_by)"
            " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (activation_id, unit_id, from_ns, to_ns, reason, by),
        )
        row = await cur.fetchone()
    assert row is not None
    hold_id = int(row[0])
    _log.warning(
        "legal hold placed",
        hold=hold_id,
        activation=activation_id,
        unit=unit_id,
        from_ns=from_ns,
        to_ns=to_ns,
        reason=reason,
        by=by,
    )
    return hold_id


async def release_hold(conn: Conn, hold_id: int, *, by: str) -> bool:
    """Release an active hold (it stays listed, with who released it); False if there
    is no such active hold."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (RETENTION_LOCK,))
        cur = await conn.execute(
            "UPDATE holds SET released_by = %s, released_at = now()"
            " WHERE id = %s AND released_at IS NULL",
            (by, hold_id),
        )
    if cur.rowcount:
        _log.warning("legal hold released", hold=hold_id, by=by)
    return bool(cur.rowcount)


async def _holding(conn: Conn, month: Month, active: list[Hold]) -> tuple[int, ...]:
    """The active holds that cover a row of ``month`` (a time range: by overlap)."""
    found: list[int] = []
    for hold in active:
        if hold.from_ns is not None:
            if time_hold_covers(hold, month):
                found.append(hold.id)
            continue
        part = sql.Identifier(month.partition("log_records"))
        if hold.activation_id is not None:
            query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE activation_id = %s)").format(
                part
            )
            params: tuple[str, ...] = (hold.activation_id,)
        else:
            assert hold.unit_id is not None
            query = sql.SQL(
                "SELECT EXISTS (SELECT 1 FROM {} r WHERE r.log_id IN"
                " (SELECT log_id FROM logs WHERE unit_id = %s))"
            ).format(part)
            params = (hold.unit_id,)
        cur = await conn.execute(query, params)
        row = await cur.fetchone()
        if row is not None and row[0]:
            found.append(hold.id)
    return tuple(found)


async def _rows(conn: Conn, month: Month) -> int:
    total = 0
    for table in PARTITIONED:
        cur = await conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(month.partition(table)))
        )
        row = await cur.fetchone()
        total += int(row[0]) if row is not None else 0
    return total


@dataclass(frozen=True)
class RetentionOutcome:
    month: Month
    action: str  # dropped, kept_for_hold (or would_drop, would_keep_for_hold: dry run)
    rows: int
    held_by: tuple[int, ...]


async def retention(
    conn: Conn, *, now_ns: int, keep_days: int, run_by: str, dry_run: bool = False
) -> list[RetentionOutcome]:
    """Drop every expired month that no active hold covers. One transaction, under the
    lock that placing and releasing holds take: a hold placed meanwhile is seen."""
    cutoff = cutoff_ns(now_ns, keep_days)
    outcomes: list[RetentionOutcome] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (RETENTION_LOCK,))
        active = await holds(conn)
        for month in await existing_months(conn):
            holding = await _holding(conn, month, active)
            decided = verdict(month, cutoff, holding)
            if decided is None:
                continue
            rows = await _rows(conn, month)
            action = "dropped" if decided.drop else "kept_for_hold"
            if dry_run:
                action = "would_" + ("drop" if decided.drop else "keep_for_hold")
            outcomes.append(RetentionOutcome(month, action, rows, holding))
            if dry_run:
                continue
            detail = (
                f"older than {keep_days} days"
                if decided.drop
                else "kept for " + ", ".join(h.describe() for h in active if h.id in holding)
            )
            if decided.drop:
                for table in PARTITIONED:
                    await conn.execute(
                        sql.SQL("DROP TABLE IF EXISTS {}").format(
                            sql.Identifier(month.partition(table))
                        )
                    )
            await conn.execute(
                "INSERT INTO retention_runs (month, from_ns, to_ns, action, rows, detail,"
                " run_by) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (month.label, month.from_ns, month.to_ns, action, rows, detail, run_by),
            )
    for outcome in outcomes:
        _log.info(
            "archive retention",
            month=outcome.month.label,
            action=outcome.action,
            rows=outcome.rows,
            holds=list(outcome.held_by),
            keep_days=keep_days,
        )
    return outcomes
