"""The archiver's database password comes from a pgpass file that PGPASSFILE names, the
systemd unit's credential, never from the environment or the command line.

A role with a password is made in the test PostgreSQL. That server lets 127.0.0.1 in
without one (trust), so a successful login proves nothing about the password; what is
checked is what libpq holds for the connection, the password it would send when asked
(PQpass, `pgconn.password`): it must be the file's, and it must be the role's real one,
checked against the SCRAM-SHA-256 verifier PostgreSQL stores for the role (pg_authid).
Without the file, libpq holds none.

systemd 254 and later show a credential's mode as 0440 (the ACL entry that lets the
service's user read it), and libpq refuses a pgpass file with a group bit; the files here
are given that mode, as the service would find them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import secrets
import shlex
import signal
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bridge.mqtt.embedded import MosquittoProcess
from mesh.archive.db import connect
from tests.conftest import DEFAULT_TEST_PG, ENV_TEST_PG, IN_CI
from tests.integration.test_service_units import INSTALLED_AT, UNITS, _service_section

CLI = Path(sys.executable).parent / "trigger-mesh"


@dataclass(frozen=True)
class Role:
    name: str
    password: str
    dsn: str  # no password in it
    schema: str  # the role's own, its search_path
    admin: str  # the test database's superuser DSN

    def pgpass(self, path: Path, mode: int) -> Path:
        """A pgpass file with this role's password for the test database, and another
        line before it that must not match."""
        path.write_text(
            f"127.0.0.1:5432:test:someone-else:not-this-one\n"
            f"127.0.0.1:5432:test:{self.name}:{self.password}\n"
        )
        path.chmod(mode)
        return path

    def verifier(self) -> str:
        return str(self.query("SELECT rolpassword FROM pg_authid WHERE rolname = %s", self.name))

    def query(self, sql: str, *params: Any) -> Any:
        import psycopg

        with psycopg.connect(self.admin, autocommit=True, connect_timeout=5) as admin:
            row = admin.execute(sql, params).fetchone()
        return None if row is None else row[0]


@pytest.fixture
def role() -> Iterator[Role]:
    """A login role with a random password, owning a schema of its own in `test`."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    base = os.environ.get(ENV_TEST_PG, DEFAULT_TEST_PG)
    name = f"tm_archiver_{uuid.uuid4().hex[:10]}"
    password = secrets.token_urlsafe(24)
    try:
        admin = psycopg.connect(base, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL is not reachable at {base} (set {ENV_TEST_PG}): {exc}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    with admin:
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(name), sql.Literal(password)
            )
        )
        admin.execute(
            sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(
                sql.Identifier(name), sql.Identifier(name)
            )
        )
    dsn = make_conninfo(base, user=name, options=f"-csearch_path={name}")
    assert "password" not in conninfo_to_dict(dsn)
    try:
        yield Role(name, password, dsn, name, base)
    finally:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (name,),
            )
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


def scram_matches(verifier: str, password: str) -> bool:
    """Whether ``password`` is the one PostgreSQL's SCRAM-SHA-256 verifier was made from
    (RFC 5802/7677: StoredKey = H(HMAC(SaltedPassword, "Client Key")))."""
    method, iterations_salt, keys = verifier.split("$")
    assert method == "SCRAM-SHA-256", verifier
    iterations, salt = iterations_salt.split(":")
    stored_key = keys.split(":")[0]
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), base64.b64decode(stored_key))


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No password from anywhere else: no PGPASSWORD, no ~/.pgpass, no PGPASSFILE."""
    for name in ("PGPASSWORD", "PGPASSFILE", "CREDENTIALS_DIRECTORY", "PGUSER", "PGSERVICE"):
        monkeypatch.delenv(name, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return monkeypatch


async def _held_password(role: Role) -> tuple[str, str]:
    """(the password libpq holds for the archiver's connection, whom it is logged in as)."""
    conn = await connect(role.dsn)
    try:
        cursor = await conn.execute("SELECT current_user")
        row = await cursor.fetchone()
        assert row is not None
        return conn.pgconn.password.decode(), str(row[0])
    finally:
        await conn.close()


async def test_the_password_comes_from_the_file_PGPASSFILE_names(
    role: Role, clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    verifier = role.verifier()
    assert await _held_password(role) == ("", role.name)  # nothing without the file
    clean_env.setenv("PGPASSFILE", str(role.pgpass(tmp_path / "archiver.pgpass", 0o600)))
    password, user = await _held_password(role)
    assert (password, user) == (role.password, role.name)
    assert scram_matches(verifier, password)
    assert not scram_matches(verifier, "not-this-one")


async def test_a_systemd_credential_is_read_though_its_acl_shows_as_group_read(
    role: Role, clean_env: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    verifier = role.verifier()  # before PGPASSFILE is set: libpq would warn of it here too
    credentials = tmp_path / "credentials" / "trigger-mesh-archiver.service"
    credentials.mkdir(parents=True)
    pgpass = role.pgpass(credentials / "pgpass", 0o440)
    clean_env.setenv("PGPASSFILE", str(pgpass))
    # Outside a credentials directory, libpq's own rule: a group-readable file is ignored.
    assert await _held_password(role) == ("", role.name)
    assert "has group or world access" in capfd.readouterr().err
    # The unit's credential: read (a private copy, mode 0600, handed to libpq).
    clean_env.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    password, _ = await _held_password(role)
    assert password == role.password
    assert scram_matches(verifier, password)
    assert capfd.readouterr().err == ""
    # A credential anyone may read is left to libpq, which refuses it.
    pgpass.chmod(0o444)
    assert await _held_password(role) == ("", role.name)


def _unit_environment(credentials: Path, env_file: dict[str, str]) -> dict[str, str]:
    """The archiver's environment as systemd makes it from the unit: its Environment=
    lines (%d the credentials directory), its EnvironmentFile (``env_file``), its
    LoadCredential= files copied into ``credentials``; nothing else of ours but PATH."""
    service = _service_section(UNITS / "trigger-mesh-archiver.service")
    env = {"PATH": os.environ["PATH"], "HOME": str(credentials.parent)}
    assert service["EnvironmentFile"] == ["/etc/trigger-mesh/archiver.env"]
    env.update(env_file)
    for line in service["Environment"]:
        for assignment in shlex.split(line.replace("%d", str(credentials))):
            key, _, value = assignment.partition("=")
            env[key] = value
    env["CREDENTIALS_DIRECTORY"] = str(credentials)
    return env


async def test_the_units_archiver_logs_in_with_its_credential_and_no_password_in_its_environment(
    role: Role, own_mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    service = _service_section(UNITS / "trigger-mesh-archiver.service")
    assert service["LoadCredential"] == ["pgpass:/etc/trigger-mesh/archiver.pgpass"]
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    # /etc/trigger-mesh/archiver.pgpass, as systemd 254+ hands it to the service.
    role.pgpass(credentials / "pgpass", 0o440)
    env = _unit_environment(
        credentials,
        # What docs/deployment.md puts in /etc/trigger-mesh/archiver.env: no password.
        {"TRIGGER_MESH_DB": role.dsn, "TRIGGER_MESH_BROKER": str(own_mosquitto.url)},
    )
    assert env["PGPASSFILE"] == f"{credentials}/pgpass"
    name = f"arch-{uuid.uuid4().hex[:6]}"
    (command,) = service["ExecStart"]
    argv = shlex.split(command.replace(INSTALLED_AT, str(CLI)).replace("%H", name))
    daemon = await asyncio.create_subprocess_exec(
        *argv, env=env, cwd="/", stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    seen: list[str] = []
    try:
        assert daemon.stderr is not None
        stderr = daemon.stderr

        async def up() -> None:
            # It migrates the schema (as the role), then connects to the broker: "archiver up".
            while line := (await stderr.readline()).decode():
                seen.append(line)
                if line.startswith("{") and json.loads(line).get("event") == "archiver up":
                    return
            raise AssertionError("the archiver stopped: " + "".join(seen))

        await asyncio.wait_for(up(), 30)
        application = f"trigger-mesh archiver {name}"
        assert (
            role.query(
                "SELECT usename FROM pg_stat_activity WHERE application_name = %s", application
            )
            == role.name
        )
        assert (
            role.query(
                "SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = 'triggers'",
                role.schema,
            )
            == role.name
        )
        # What another process of the same user could read of it: no password.
        secret = role.password.encode()
        assert secret not in Path(f"/proc/{daemon.pid}/environ").read_bytes()
        assert secret not in Path(f"/proc/{daemon.pid}/cmdline").read_bytes()
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, rest = await asyncio.wait_for(daemon.communicate(), 30)
        seen.append(rest.decode())
    assert daemon.returncode == 0, "".join(seen)
    # libpq took the credential: it did not set it aside as group-readable.
    assert "password file" not in "".join(seen), "".join(seen)
