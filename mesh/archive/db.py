"""Connecting to the archive's PostgreSQL."""

from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection

Conn = AsyncConnection[tuple[Any, ...]]

CONNECT_TIMEOUT_S = 5


async def connect(dsn: str, *, name: str = "trigger-mesh archiver") -> Conn:
    """Autocommit: every write is an explicit ``conn.transaction()``, and reads never leave
    a transaction idle."""
    return await AsyncConnection.connect(
        dsn, autocommit=True, application_name=name, connect_timeout=CONNECT_TIMEOUT_S
    )


def describe(dsn: str) -> str:
    """Where a DSN points, for logs and messages: host, port, database, never a password.
    Raises ValueError for a DSN that cannot be parsed."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(dsn)
    except ProgrammingError as exc:
        raise ValueError(f"not a PostgreSQL connection string: {exc}") from None
    host, port = parts.get("host") or "localhost", parts.get("port") or 5432
    return f"{host}:{port}/{parts.get('dbname') or ''}"
