"""The archive's monthly partitions: which to create ahead, which retention may drop
(pure), and doing it (SQL). docs/archive.md, "Volume, partitions and retention".

``log_records`` and ``presence_repeats`` are partitioned by month of ``at_ns`` (UTC), and
so are the live tables whose keys hold their time: ``receipts`` and ``escalations`` (by
``at_ns``) and ``acks`` (by ``received_at_ns``). A month is one partition of each of the
five tables (``<table>_pYYYYMM``), created together. Months are created ahead by the
archiver (``AHEAD_MONTHS``, bounded: a row further in the future than that lands in its
table's default partition, which retention never drops). Retention drops a month of all
five tables together, only when the whole month is older than the cutoff and no active
legal hold covers a row of it in any of them; every month dropped or kept for a hold is
written to ``retention_runs`` and logged. ``activations`` and ``triggers`` (not
partitioned: their keys hold no time) lose, after each month dropped, their rows dated
before its end that no hold keeps, deleted in batches.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg
import structlog
from psycopg import sql

from mesh.archive.db import Conn

NS = 1_000_000_000
# The edge logs' tables, then the live tables (migrations 004 and 006).
PARTITIONED = ("log_records", "presence_repeats", "receipts", "acks", "escalations")
# The tables whose partitions of a month are created together: a folded presence record
# and its base must be in the same month (mesh/archive/fold.py), so the log tables go
# together; each live table on its own, so that a row dated in a month ahead (an ack
# carries the camera's clock) keeps only its own table's month from being created.
CREATED_TOGETHER: tuple[tuple[str, ...], ...] = (
    ("log_records", "presence_repeats"),
    ("receipts",),
    ("acks",),
    ("escalations",),
)
# Months created ahead of the current one, each time the archiver starts and every
# ENSURE_EVERY_S while it runs.
AHEAD_MONTHS = 2
ENSURE_EVERY_S = 3600.0
# A retention run and hold changes serialise on this advisory lock ("tm" + "rt").
RETENTION_LOCK = 0x746D7274
_NAME = re.compile(r"^([a-z_]+)_p(\d{4})(\d{2})$")

_log = structlog.get_logger("mesh.archive.retention")


@dataclass(frozen=True, order=True)
class Month:
    year: int
    month: int

    @classmethod
    def of_ns(cls, at_ns: int) -> Month:
        # Whole seconds (months start on one): at_ns / NS, a float, rounds a time a few
        # hundred ns before a month's end up into the next month.
        when = datetime.fromtimestamp(at_ns // NS, UTC)
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


def month_of_partition(name: str, table: str = "log_records") -> Month | None:
    """The month of ``table``'s partition ``name`` (None: not one of its months, e.g. the
    default partition)."""
    match = _NAME.match(name)
    if match is None or match.group(1) != table:
        return None
    month = int(match.group(3))
    return Month(int(match.group(2)), month) if 1 <= month <= 12 else None


def missing_partitions(
    have: Mapping[Month, frozenset[str]], months: list[Month]
) -> list[tuple[Month, tuple[str, ...]]]:
    """Of ``months``, each that lacks a partition of some table, with the tables it lacks
    (in ``PARTITIONED`` order): what ``ensure_ahead`` creates, a month at a time."""
    found: list[tuple[Month, tuple[str, ...]]] = []
    for month in months:
        lacking = tuple(t for t in PARTITIONED if t not in have.get(month, frozenset()))
        if lacking:
            found.append((month, lacking))
    return found


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
async def existing_partitions(conn: Conn) -> dict[Month, frozenset[str]]:
    """Every month that has a partition of any partitioned table, with those tables."""
    cur = await conn.execute(
        "SELECT p.relname, c.relname FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent"
        " WHERE i.inhparent = ANY (%s::regclass[])",
        (list(PARTITIONED),),
    )
    found: dict[Month, set[str]] = {}
    for parent, name in await cur.fetchall():
        month = month_of_partition(str(name), str(parent))
        if month is not None:
            found.setdefault(month, set()).add(str(parent))
    return {month: frozenset(tables) for month, tables in sorted(found.items())}


async def existing_months(conn: Conn) -> list[Month]:
    return sorted(await existing_partitions(conn))


async def ensure_ahead(
    conn: Conn, now_ns: int | None = None, ahead: int = AHEAD_MONTHS
) -> list[str]:
    """Create the partitions of this month and ``ahead`` more that are missing; return
    the months (YYYYMM) that partitions were created for. This month is by the database's
    clock unless ``now_ns`` is given. The partitions of one group of
    ``CREATED_TOGETHER`` are created together or not at all: if a table's default
    partition already holds rows of the month (a clock that ran ahead), its group's are
    not created (logged), and those rows stay in the default; the other groups' are."""
    created: list[str] = []
    if now_ns is None:
        now_ns = await database_now_ns(conn)
    async with conn.transaction():
        # Archivers starting together, and retention: one at a time.
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (RETENTION_LOCK,))
        have = await existing_partitions(conn)
        for month, tables in missing_partitions(have, months_ahead(now_ns, ahead)):
            made = False
            for group in CREATED_TOGETHER:
                lacking = [t for t in group if t in tables]
                if lacking and await _create(conn, month, lacking):
                    made = True
            if made:
                created.append(month.label)
    if created:
        _log.info("archive partitions created", months=created)
    return created


async def _create(conn: Conn, month: Month, tables: list[str]) -> bool:
    """Create ``month``'s partitions of ``tables``, all or none (a savepoint)."""
    try:
        async with conn.transaction():
            for table in tables:
                await conn.execute(
                    sql.SQL("CREATE TABLE {} PARTITION OF {} FOR VALUES FROM ({}) TO ({})").format(
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
            tables=tables,
            error=str(exc).strip(),
        )
        return False
    return True


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


# Which rows of each table a hold on an activation or on a unit covers (a time range
# covers the months it overlaps, whatever they hold). presence_repeats has no activation
# id: a presence record is never an activation's (mesh/archive/fold.py folds only
# records without one). An ack's unit_id is the camera's and may be missing: an ack is
# also the unit's when its activation is.
_BY_ACTIVATION: dict[str, str] = {
    "log_records": "activation_id = %(id)s",
    "receipts": "activation_id = %(id)s",
    "acks": "activation_id = %(id)s",
    "escalations": "activation_id = %(id)s",
}
_BY_UNIT: dict[str, str] = {
    "log_records": "log_id IN (SELECT log_id FROM logs WHERE unit_id = %(id)s)",
    "presence_repeats": "log_no IN (SELECT log_no FROM logs WHERE unit_id = %(id)s)",
    "receipts": "unit_id = %(id)s",
    "acks": "unit_id = %(id)s"
    " OR activation_id IN (SELECT activation_id FROM activations WHERE unit_id = %(id)s)",
    "escalations": "unit_id = %(id)s",
}


async def _holding(
    conn: Conn, month: Month, tables: frozenset[str], active: list[Hold]
) -> tuple[int, ...]:
    """The active holds that cover a row of ``month`` in any of ``tables`` (its
    partitions; a time range: by overlap)."""
    found: list[int] = []
    for hold in active:
        if hold.from_ns is not None:
            if time_hold_covers(hold, month):
                found.append(hold.id)
            continue
        if hold.activation_id is not None:
            where, held = _BY_ACTIVATION, hold.activation_id
        else:
            assert hold.unit_id is not None
            where, held = _BY_UNIT, hold.unit_id
        for table in PARTITIONED:
            if table not in tables or table not in where:
                continue
            query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE {})").format(
                sql.Identifier(month.partition(table)), sql.SQL(where[table])
            )
            cur = await conn.execute(query, {"id": held})
            row = await cur.fetchone()
            if row is not None and row[0]:
                found.append(hold.id)
                break
    return tuple(found)


# activations and triggers are not partitioned (their keys hold no time). Once retention
# has dropped a month, their rows dated before that month's end go too (those of earlier
# months dropped before this existed, or that came late, included), except: rows in a
# month still partitioned (kept for a hold) or in a time-range hold; an activation a hold
# names; any row of a unit a hold names; a trigger while an activation of its unit is kept
# for it, or a receipt links it to a held activation (a trigger merged into it); and rows
# archived after the cutoff (a clock set back must not get fresh rows deleted). The same
# conditions count a dry run's rows. Activations go first.
_KEPT = sql.SQL(
    "NOT EXISTS (SELECT 1 FROM unnest(%(kept_from)s::bigint[], %(kept_to)s::bigint[])"
    " AS k (f, t) WHERE {col} >= k.f AND {col} < k.t)"
)
_ACTIVATION_GOES = sql.SQL(
    "a.decided_at_ns < %(to)s AND a.archived_at < %(archived_before)s"
    " AND NOT a.activation_id = ANY(%(activations)s::text[])"
    " AND NOT a.unit_id = ANY(%(units)s::text[]) AND {kept}"
).format(kept=_KEPT.format(col=sql.SQL("a.decided_at_ns")))
_TRIGGER_GOES = sql.SQL(
    "t.observed_at_ns < %(to)s AND t.archived_at < %(archived_before)s"
    " AND NOT t.unit_id = ANY(%(units)s::text[]) AND {kept}"
    " AND NOT EXISTS (SELECT 1 FROM activations a WHERE a.trigger_event_id = t.event_id"
    " AND a.unit_id = t.unit_id AND NOT ({activation_goes}))"
    " AND NOT EXISTS (SELECT 1 FROM receipts r WHERE r.event_id = t.event_id"
    " AND r.activation_id = ANY(%(activations)s::text[]))"
).format(kept=_KEPT.format(col=sql.SQL("t.observed_at_ns")), activation_goes=_ACTIVATION_GOES)
# (table, key, alias, which rows go)
_UNPARTITIONED = (
    ("activations", "activation_id", "a", _ACTIVATION_GOES),
    ("triggers", "event_id", "t", _TRIGGER_GOES),
)
# Deleted in batches, each a transaction of its own under the holds' lock: the archivers
# go on writing meanwhile (no table lock), and a hold placed meanwhile is seen.
DELETE_BATCH = 5_000
_DELETE_TRIES = 5


async def _unpartitioned_params(
    conn: Conn, month: Month, cutoff: int, dropped: frozenset[Month] = frozenset()
) -> dict[str, object]:
    """``dropped``: months still partitioned that count as dropped (a dry run's)."""
    active = await holds(conn)
    kept = sorted(set(await existing_partitions(conn)) - dropped)
    ranges = [(m.from_ns, m.to_ns) for m in kept] + [
        (h.from_ns, h.to_ns + 1) for h in active if h.from_ns is not None and h.to_ns is not None
    ]
    return {
        "to": month.to_ns,
        "archived_before": datetime.fromtimestamp(cutoff / NS, tz=UTC),
        "activations": [h.activation_id for h in active if h.activation_id is not None],
        "units": [h.unit_id for h in active if h.unit_id is not None],
        "kept_from": [f for f, _ in ranges],
        "kept_to": [t for _, t in ranges],
    }


async def _count_unpartitioned(
    conn: Conn, month: Month, cutoff: int, dropped: frozenset[Month]
) -> dict[str, int]:
    """What ``_delete_unpartitioned`` would delete once the months ``dropped`` (``month``
    the latest) are."""
    params = await _unpartitioned_params(conn, month, cutoff, dropped)
    counted: dict[str, int] = {}
    for table, _, alias, goes in _UNPARTITIONED:
        query = sql.SQL("SELECT count(*) FROM {} AS {} WHERE {}").format(
            sql.Identifier(table), sql.Identifier(alias), goes
        )
        cur = await conn.execute(query, params)
        row = await cur.fetchone()
        counted[table] = int(row[0]) if row is not None else 0
    return counted


async def _delete_unpartitioned(conn: Conn, month: Month, cutoff: int) -> dict[str, int]:
    """After ``month`` was dropped: delete the activations and triggers that go with it."""
    deleted = dict.fromkeys((table for table, *_ in _UNPARTITIONED), 0)
    for table, key, alias, goes in _UNPARTITIONED:
        statement = sql.SQL(
            "DELETE FROM {table} WHERE {key} IN (SELECT {key} FROM {table} AS {alias}"
            " WHERE {goes} LIMIT %(batch)s)"
        ).format(
            table=sql.Identifier(table),
            key=sql.Identifier(key),
            alias=sql.Identifier(alias),
            goes=goes,
        )
        while True:
            gone = await _delete_batch(conn, statement, month, cutoff)
            deleted[table] += gone
            if gone < DELETE_BATCH:
                break
    return deleted


async def _delete_batch(conn: Conn, statement: sql.Composed, month: Month, cutoff: int) -> int:
    """One batch, in a transaction of its own under the holds' lock; the rows deleted."""
    for attempt in range(_DELETE_TRIES):
        try:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (RETENTION_LOCK,))
                params = await _unpartitioned_params(conn, month, cutoff)
                cur = await conn.execute(statement, {**params, "batch": DELETE_BATCH})
                return cur.rowcount
        except psycopg.errors.DeadlockDetected:
            # An archiver upserting one of these rows: its write goes on, this batch is
            # tried again.
            if attempt == _DELETE_TRIES - 1:
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


async def _rows(conn: Conn, month: Month, tables: frozenset[str]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for table in PARTITIONED:
        if table not in tables:
            continue
        cur = await conn.execute(
            sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(month.partition(table)))
        )
        row = await cur.fetchone()
        counted[table] = int(row[0]) if row is not None else 0
    return counted


@dataclass(frozen=True)
class RetentionOutcome:
    month: Month
    action: str  # dropped, kept_for_hold (or would_drop, would_keep_for_hold: dry run)
    rows: int
    held_by: tuple[int, ...]
    # With a month dropped: the activations and triggers deleted with it (would be).
    deleted: Mapping[str, int] = dataclasses.field(default_factory=dict)


async def _retain(
    conn: Conn,
    month: Month,
    tables: frozenset[str],
    active: list[Hold],
    *,
    cutoff: int,
    keep_days: int,
    run_by: str,
    dry_run: bool,
) -> RetentionOutcome:
    """Decide one expired month, and (unless a dry run) drop it or record it kept."""
    holding = await _holding(conn, month, tables, active)
    decided = verdict(month, cutoff, holding)
    assert decided is not None
    counted = await _rows(conn, month, tables)
    rows = sum(counted.values())
    if dry_run:
        action = "would_" + ("drop" if decided.drop else "keep_for_hold")
        return RetentionOutcome(month, action, rows, holding)
    action = "dropped" if decided.drop else "kept_for_hold"
    detail = (
        (
            f"older than {keep_days} days"
            if decided.drop
            else "kept for " + ", ".join(h.describe() for h in active if h.id in holding)
        )
        + "; rows: "
        + ", ".join(f"{t} {n}" for t, n in counted.items())
    )
    if decided.drop:
        for table in PARTITIONED:
            if table in tables:
                await conn.execute(
                    sql.SQL("DROP TABLE {}").format(sql.Identifier(month.partition(table)))
                )
    await conn.execute(
        "INSERT INTO retention_runs (month, from_ns, to_ns, action, rows, detail,"
        " run_by) VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (month.label, month.from_ns, month.to_ns, action, rows, detail, run_by),
    )
    return RetentionOutcome(month, action, rows, holding)


async def _record_deleted(
    conn: Conn, month: Month, deleted: Mapping[str, int], run_by: str
) -> None:
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO retention_runs (month, from_ns, to_ns, action, rows, detail, run_by)"
            " VALUES (%s, %s, %s, 'deleted', %s, %s, %s)",
            (
                month.label,
                month.from_ns,
                month.to_ns,
                sum(deleted.values()),
                "not partitioned, dated before the month's end, no hold: "
                + ", ".join(f"{t} {n}" for t, n in deleted.items()),
                run_by,
            ),
        )


async def database_now_ns(conn: Conn) -> int:
    """PostgreSQL's clock, in ns: the one every archiver and operator shares."""
    cur = await conn.execute("SELECT (extract(epoch FROM clock_timestamp()) * 1e9)::bigint")
    row = await cur.fetchone()
    assert row is not None  # a SELECT without FROM returns its row
    return int(row[0])


async def retention(
    conn: Conn,
    *,
    keep_days: int,
    run_by: str,
    dry_run: bool = False,
    now_ns: int | None = None,
) -> list[RetentionOutcome]:
    """Drop every expired month that no active hold covers: its partitions of every
    partitioned table, together. A month at a time, each in a transaction of its own
    under the lock that placing and releasing holds take (a hold placed meanwhile is
    seen), with the partitioned tables locked before its holds are looked for: no row
    can be written into the month between the check and the drop (writers, and readers,
    wait until the month's commit; a row of a dropped month then goes to the default
    partition, which retention never drops). After each month dropped, the activations and
    triggers that go with it are deleted in batches, without the tables' lock
    (``_delete_unpartitioned``), and written down as a ``deleted`` run. Its age is by the
    database's clock unless ``now_ns`` is given: a machine whose clock is wrong (years
    ahead, say) must not make it drop this month."""
    if now_ns is None:
        now_ns = await database_now_ns(conn)
    cutoff = cutoff_ns(now_ns, keep_days)
    async with conn.transaction():
        expired_months = [m for m in await existing_partitions(conn) if expired(m, cutoff)]
    outcomes: list[RetentionOutcome] = []
    for month in expired_months:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (RETENTION_LOCK,))
            if not dry_run:
                await conn.execute(
                    sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(
                        sql.SQL(", ").join(sql.Identifier(t) for t in PARTITIONED)
                    )
                )
            tables = (await existing_partitions(conn)).get(month)
            if not tables:
                continue  # dropped by another run meanwhile
            active = await holds(conn)
            outcome = await _retain(
                conn,
                month,
                tables,
                active,
                cutoff=cutoff,
                keep_days=keep_days,
                run_by=run_by,
                dry_run=dry_run,
            )
        if outcome.action == "would_drop":
            dropped = frozenset(o.month for o in outcomes if o.action == "would_drop")
            async with conn.transaction():
                deleted = await _count_unpartitioned(conn, month, cutoff, dropped | {month})
            outcome = dataclasses.replace(outcome, deleted=deleted)
        elif outcome.action == "dropped":
            deleted = await _delete_unpartitioned(conn, month, cutoff)
            if any(deleted.values()):
                await _record_deleted(conn, month, deleted, run_by)
            outcome = dataclasses.replace(outcome, deleted=deleted)
        outcomes.append(outcome)
    for outcome in outcomes:
        _log.info(
            "archive retention",
            month=outcome.month.label,
            action=outcome.action,
            rows=outcome.rows,
            deleted=dict(outcome.deleted),
            holds=list(outcome.held_by),
            keep_days=keep_days,
        )
    return outcomes
