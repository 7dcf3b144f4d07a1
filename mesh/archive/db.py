"""Connecting to the archive's PostgreSQL.

The password comes from a pgpass file, never from the command line or the environment:
libpq reads the file ``PGPASSFILE`` names (its own lookup: host, port, database, user), and
the archiver's systemd unit hands the file over as a credential (``LoadCredential=pgpass:…``,
``PGPASSFILE=%d/pgpass``; docs/archive.md). libpq ignores a pgpass file with any group or
other permission bit, and systemd 254 and later give a service's user read access to its
credentials with an ACL entry, which shows as group read (mode 0440): a credential would be
ignored. A file in ``$CREDENTIALS_DIRECTORY`` (the unit's own, which no one else can enter)
whose only extra bit is that one is therefore handed to libpq as a private copy in memory
(a memfd with mode 0600, named by ``passfile``); libpq's check stands for any other file.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING, Any

from psycopg import AsyncConnection

if TYPE_CHECKING:
    from collections.abc import Mapping

Conn = AsyncConnection[tuple[Any, ...]]

CONNECT_TIMEOUT_S = 5
ENV_PASSFILE = "PGPASSFILE"
ENV_CREDENTIALS = "CREDENTIALS_DIRECTORY"
# (path, device, inode, size, mtime) of a credential -> the memfd holding its copy.
_copies: dict[tuple[str, int, int, int, int], int] = {}


async def connect(dsn: str, *, name: str = "trigger-mesh archiver") -> Conn:
    """Autocommit: every write is an explicit ``conn.transaction()``, and reads never leave
    a transaction idle."""
    options: dict[str, Any] = {}
    passfile = credential_passfile(os.environ)
    if passfile is not None:
        options["passfile"] = passfile
    return await AsyncConnection.connect(
        dsn, autocommit=True, application_name=name, connect_timeout=CONNECT_TIMEOUT_S, **options
    )


def credential_passfile(environ: Mapping[str, str]) -> str | None:
    """The pgpass file to give libpq in place of ``PGPASSFILE`` (a path under
    /proc/self/fd), or None to leave libpq to read ``PGPASSFILE`` (or ~/.pgpass) itself.

    Only a regular file directly in ``$CREDENTIALS_DIRECTORY`` that libpq would refuse for
    its group read bit alone (mode 0440 or 0640, as systemd's ACL shows it) is copied."""
    path, credentials = environ.get(ENV_PASSFILE), environ.get(ENV_CREDENTIALS)
    if not path or not credentials:
        return None
    real = os.path.realpath(path)
    if os.path.dirname(real) != os.path.realpath(credentials):
        return None
    try:
        info = os.stat(real)
    except OSError:
        return None  # libpq will not find it either, and goes on without a password
    mode = stat.S_IMODE(info.st_mode)
    if not stat.S_ISREG(info.st_mode) or mode & 0o037 or not mode & 0o040:
        return None  # libpq's own rule decides: it takes 0600/0400, refuses the rest
    key = (real, info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)
    if key not in _copies:
        with open(real, "rb") as source:
            data = source.read()
        fd = os.memfd_create("pgpass", os.MFD_CLOEXEC)
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        for old in [k for k in _copies if k[0] == real]:
            os.close(_copies.pop(old))
        _copies[key] = fd
    return f"/proc/self/fd/{_copies[key]}"


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
