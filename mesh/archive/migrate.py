"""The archive's schema migrations: ``migrations/NNN_name.sql``, applied in order, once.

Applied versions are recorded in ``schema_migrations``. Everything runs in one transaction
under a PostgreSQL advisory lock (per schema), so archivers starting together do not race:
the second waits, then finds nothing left to do. PostgreSQL's DDL is transactional, so a
migration that fails leaves the schema as it was.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files

import structlog

from mesh.archive.db import Conn

# The first key of the two-key advisory lock ("tm" + "ar"); the second is the schema's hash.
LOCK_KEY = 0x746D6172
_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")

_log = structlog.get_logger("mesh.archive.migrate")


class MigrationError(RuntimeError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def available() -> list[Migration]:
    """Every migration shipped with the code, in version order."""
    found: dict[int, Migration] = {}
    for entry in files("mesh.archive").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations numbered {version:03d}")
        found[version] = Migration(version, match.group(2), entry.read_text())
    return [found[v] for v in sorted(found)]


async def migrate(
    conn: Conn, progress: Callable[[int, int | None], None] | None = None
) -> list[int]:
    """Apply the migrations this database lacks; return the versions applied now.
    ``progress`` is told (applied, to apply) as they go."""
    done: list[int] = []
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(coalesce(current_schema(), '')))",
            (LOCK_KEY,),
        )
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY,"
            " name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cur = await conn.execute("SELECT version FROM schema_migrations")
        applied = {row[0] for row in await cur.fetchall()}
        pending = [m for m in available() if m.version not in applied]
        if progress is not None:
            progress(0, len(pending))
        for migration in pending:
            # No parameters: psycopg sends the file as one simple query, many statements.
            await conn.execute(migration.sql.encode())
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            done.append(migration.version)
            if progress is not None:
                progress(len(done), len(pending))
    if done:
        _log.info("archive schema migrated", applied=done)
    return done
