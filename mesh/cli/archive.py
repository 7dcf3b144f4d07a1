"""``trigger-mesh archiver`` (run, verify, migrate) and ``trigger-mesh log sync``: the
commands of the central archive and of its edge side. Registered by mesh/cli/app.py."""

from __future__ import annotations

import asyncio
import gc
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from bridge.topics import DEFAULT_PREFIX
from mesh.cli.common import (
    EXIT_USAGE,
    BrokerOpt,
    LogFormatOpt,
    LogLevelOpt,
    PrefixOpt,
    broker_for,
    broker_url,
    client_broker,
    configure_logs,
    console,
    fail,
    run_until_signal,
    topic_schema,
)
from mesh.cli.integrity import AllProblemsOpt, PubkeyOpt, exit_for, load_pubkey, show_report
from mesh.extras import require

if TYPE_CHECKING:
    from mesh.archive.db import Conn
    from mesh.archive.store import StoredConflict

T = TypeVar("T")

ENV_DB = "TRIGGER_MESH_DB"
# Allocations between two collections of the youngest generation (CPython's default: 700).
GC_YOUNG_THRESHOLD = 50_000
# `archiver verify` exits as `audit verify` does (docs/audit.md).
# `log sync`: 1 when the archive did not confirm every record within --timeout.
EXIT_SYNCED, EXIT_NOT_SYNCED = 0, 1
_IDENT = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")

DbOpt = Annotated[
    str | None,
    typer.Option("--db", envvar=ENV_DB, help=f"postgresql://user@host:port/db (env {ENV_DB})"),
]

ENV_NATS_PASSWORD_FILE = "TRIGGER_MESH_NATS_PASSWORD_FILE"  # noqa: S105 - a name
NatsOpt = Annotated[
    str | None,
    typer.Option(
        "--nats",
        help="The NATS cluster's client URLs, comma-separated (tls://n1:4222,tls://n2:4222): "
        "read from the archive's JetStream consumer instead of an MQTT shared subscription",
    ),
]
NatsUserOpt = Annotated[str | None, typer.Option("--nats-user", help="NATS user")]
NatsPasswordOpt = Annotated[
    Path | None,
    typer.Option(
        "--nats-password-file",
        envvar=ENV_NATS_PASSWORD_FILE,
        help="File holding the NATS user's password (broker-config's credentials/USER.password)",
    ),
]
NatsCaOpt = Annotated[
    Path | None, typer.Option("--nats-ca", help="CA of the nodes' certificate (central/ca.crt)")
]
NatsCertOpt = Annotated[
    Path | None,
    typer.Option(
        "--nats-cert",
        help="Client certificate instead of a password (a cluster of --central-auth cert: "
        "central/credentials/USER.crt)",
    ),
]
NatsKeyOpt = Annotated[Path | None, typer.Option("--nats-key", help="The key of --nats-cert")]

archiver_app = typer.Typer(
    help="The central archive: triggers, activations, acks and edge logs in PostgreSQL.",
    invoke_without_command=True,
)


def _dsn(db: str | None) -> str:
    from mesh.archive.db import describe

    if not db:
        fail(f"--db is required (or set {ENV_DB})")
    try:
        describe(db)
    except ValueError as exc:
        fail(f"--db: {exc}")
    return db


def _ident(value: str, option: str) -> str:
    if not _IDENT.match(value):
        fail(f"{option} {value!r}: 1 to 64 of A-Z a-z 0-9 . _ : -")
    return value


@archiver_app.callback()
def archiver(
    ctx: typer.Context,
    *,  # typer passes every option by name
    broker: BrokerOpt = None,
    db: DbOpt = None,
    prefix: PrefixOpt = DEFAULT_PREFIX,
    archiver_id: Annotated[
        str | None,
        typer.Option(
            "--id",
            help="This archiver's name (default: the host name); stable across restarts, "
            "distinct for each archiver",
        ),
    ] = None,
    group: Annotated[
        str, typer.Option("--group", help="Shared subscription group of the archivers")
    ] = "archivers",
    trust: Annotated[
        Path | None,
        typer.Option(
            "--trust",
            help="The fleet's trust store: acks must then be signed by their camera's key; "
            "others are kept among the conflicts, not as acks",
        ),
    ] = None,
    fleet: Annotated[
        Path | None,
        typer.Option(
            "--fleet",
            help="The fleet file (broker-config's), with --trust: a log batch naming another "
            "unit than its gateway's is refused, and the live rows a lost message left out "
            "are made from the gateways' synced logs, once a checkpoint signed by the "
            "gateway's trusted key vouches for them",
        ),
    ] = None,
    nats_servers: NatsOpt = None,
    nats_user: NatsUserOpt = None,
    nats_password_file: NatsPasswordOpt = None,
    nats_ca: NatsCaOpt = None,
    nats_cert: NatsCertOpt = None,
    nats_key: NatsKeyOpt = None,
    log_format: LogFormatOpt = "auto",
    log_level: LogLevelOpt = "info",
) -> None:
    """Run an archiver: archived topics in (over a shared subscription, or with --nats the
    archive's JetStream consumer, so several split the load), PostgreSQL out. The schema is
    migrated at start. With --nats, --broker is the MQTT listener of a node, where the log
    watermarks are published (retained); it takes the NATS password if it has none."""
    if ctx.invoked_subcommand is not None:
        return
    configure_logs(log_format, log_level)  # first: a bad option or file is a log record
    require("archive", "trigger-mesh archiver")
    from mesh.archive.archiver import Archiver, ArchiverSettings, default_archiver_id

    dsn = _dsn(db)
    name = _ident(archiver_id or default_archiver_id(), "--id")
    if not re.fullmatch(r"[A-Za-z0-9._-]+", group):
        fail(f"--group {group!r}: one topic level of A-Z a-z 0-9 . _ -")
    topics = topic_schema(prefix)
    store = None
    if trust is not None:
        from mesh.documents import ConfigError
        from mesh.security.trust import TrustStore

        if not trust.is_file():
            fail(f"--trust {trust}: no such file")
        try:
            store = TrustStore.load(trust)
        except ConfigError as exc:
            fail(f"--trust: {exc}")
    units = None
    if fleet is not None:
        from mesh.documents import ConfigError
        from mesh.security.fleet_file import load_fleet

        if store is None:
            fail(
                "--fleet needs --trust: a log's records are used only once its "
                "gateway's key vouches for them"
            )
        try:
            spec = load_fleet(fleet)
        except ConfigError as exc:
            fail(f"--fleet: {exc}")
        units = {g.name: g.unit for g in spec.gateways if g.unit is not None}

    login = None
    if nats_servers is not None:
        login = _nats_login(
            nats_servers, nats_user, nats_password_file, nats_ca, nats_cert, nats_key
        )

    async def serve() -> None:
        async with broker_for(client_broker(broker)) as (url, protocol):
            settings = ArchiverSettings(
                dsn=dsn, archiver_id=name, topics=topics, group=group, trust=store, units=units
            )
            if login is None:
                await Archiver(settings, url=url, protocol=protocol).run()
                return
            from mesh.archive.jetstream import archiver_source

            await Archiver(settings, source=archiver_source(login, url, name)).run()

    # An archiver holds thousands of decoded records in its queue, and with the default
    # thresholds the cycle collector walks them (and everything imported) again and again
    # (bench/central.py, paired runs in docs/benchmarks.md). What is loaded
    # by now lives as long as the process; records hold no reference cycles and are freed
    # by reference counting, so collecting less often keeps no more memory to speak of.
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD)
    run_until_signal(serve())


if TYPE_CHECKING:
    from mesh.archive.jetstream import NatsLogin


def _nats_login(
    servers: str,
    user: str | None,
    password_file: Path | None,
    ca: Path | None,
    cert: Path | None = None,
    key: Path | None = None,
) -> NatsLogin:
    """The NATS login of --nats and its options, or exit 2 naming what is wrong."""
    require("central", "--nats")
    from mesh.archive.jetstream import NatsLogin

    urls = tuple(u.strip() for u in servers.split(",") if u.strip())
    if not urls:
        fail("--nats: no URL")
    for url in urls:
        if not re.fullmatch(r"(nats|tls)://[A-Za-z0-9.\-\[\]:]+:[0-9]{1,5}", url):
            fail(f"--nats {url!r}: give nats://HOST:PORT or tls://HOST:PORT")
    if not user:
        fail("--nats needs --nats-user")
    if cert is None and key is None:
        password: str | None = _nats_password(password_file)
        files: dict[str, str] = {}
    else:
        password, files = None, _nats_cert_files(cert, key, password_file)
    if ca is not None and not ca.is_file():
        fail(f"--nats-ca {ca}: no such file")
    return NatsLogin(urls, user, password, None if ca is None else str(ca), **files)


def _nats_password(password_file: Path | None) -> str:
    if password_file is None:
        fail(f"--nats needs --nats-password-file (or {ENV_NATS_PASSWORD_FILE})")
    try:
        password = password_file.read_text().strip()
    except OSError as exc:
        fail(f"--nats-password-file {password_file}: {exc.strerror or exc}")
    if not password:
        fail(f"--nats-password-file {password_file}: empty")
    return password


def _nats_cert_files(
    cert: Path | None, key: Path | None, password_file: Path | None
) -> dict[str, str]:
    if cert is None or key is None:
        fail("--nats-cert and --nats-key go together")
    if password_file is not None:
        fail("--nats-cert or --nats-password-file, not both")
    for option, path in (("--nats-cert", cert), ("--nats-key", key)):
        if not path.is_file():
            fail(f"{option} {path}: no such file")
    return {"cert_file": str(cert), "key_file": str(key)}


@archiver_app.command("stream")
def stream(
    nats_servers: NatsOpt = None,
    nats_user: NatsUserOpt = "admin",
    nats_password_file: NatsPasswordOpt = None,
    nats_ca: NatsCaOpt = None,
    nats_cert: NatsCertOpt = None,
    nats_key: NatsKeyOpt = None,
    prefix: PrefixOpt = DEFAULT_PREFIX,
    replicas: Annotated[int, typer.Option("--replicas", min=1, max=5)] = 3,
    max_bytes: Annotated[
        int, typer.Option("--max-bytes", min=1, help="Backlog limit in bytes (oldest dropped)")
    ] = 10 * 1024**3,
    max_age_s: Annotated[
        float, typer.Option("--max-age", min=1, help="Backlog limit in seconds (oldest dropped)")
    ] = 7 * 86_400.0,
    duplicate_window_s: Annotated[float, typer.Option("--duplicate-window", min=0.1)] = 120.0,
    ack_wait_s: Annotated[float, typer.Option("--ack-wait", min=0.5)] = 30.0,
    max_deliver: Annotated[int, typer.Option("--max-deliver", min=1)] = 10,
    max_ack_pending: Annotated[int, typer.Option("--max-ack-pending", min=1)] = 20_000,
) -> None:
    """Create or update the archive's JetStream stream and the archivers' shared consumer
    (idempotent), with the operator's NATS user: an archiver's own may only consume."""
    if nats_servers is None:
        fail("--nats is required")
    login = _nats_login(nats_servers, nats_user, nats_password_file, nats_ca, nats_cert, nats_key)
    from mesh.archive.jetstream import (
        ADMIN_TIMEOUT_S,
        StreamSettings,
        connect,
        ensure_archive,
    )

    settings = StreamSettings(
        replicas=replicas,
        max_bytes=max_bytes,
        max_age_s=max_age_s,
        duplicate_window_s=duplicate_window_s,
        ack_wait_s=ack_wait_s,
        max_deliver=max_deliver,
        max_ack_pending=max_ack_pending,
    )
    topics = topic_schema(prefix)

    async def run() -> tuple[str, str]:
        nc = await connect(login, max_reconnect_attempts=0, allow_reconnect=False)
        try:
            return await ensure_archive(nc.jetstream(timeout=ADMIN_TIMEOUT_S), topics, settings)
        finally:
            await nc.close()

    try:
        stream_done, consumer_done = asyncio.run(run())
    except Exception as exc:
        fail(f"the archive's stream: {exc or type(exc).__name__}", code=1)
    console().print(
        f"stream {settings.stream} {stream_done}, consumer {settings.consumer} {consumer_done}"
    )


@archiver_app.command("migrate")
def migrate(db: DbOpt = None) -> None:
    """Bring the archive's schema up to date (the archiver does this at start too)."""
    require("archive", "trigger-mesh archiver migrate")
    import asyncio

    import psycopg

    from mesh.archive.db import connect, describe
    from mesh.archive.migrate import migrate as apply
    from mesh.cli.progress import progress

    dsn = _dsn(db)
    configure_logs("auto", "info")  # on stderr: stdout says what was applied

    async def run() -> list[int]:
        conn = await connect(dsn, name="trigger-mesh migrate")
        try:
            with progress("archiver migrate", "migrations") as report:
                return await apply(conn, report)
        finally:
            await conn.close()

    try:
        applied = asyncio.run(run())
    except psycopg.Error as exc:
        fail(f"archive database {describe(dsn)}: {str(exc).strip()}")
    out = console()
    if applied:
        out.print(f"applied migrations {', '.join(f'{v:03d}' for v in applied)}", highlight=False)
    else:
        out.print("the archive's schema is up to date", highlight=False)


@archiver_app.command("verify")
def verify(
    log_id: Annotated[str, typer.Option("--log-id", help="The edge log's id")],
    db: DbOpt = None,
    pubkey: PubkeyOpt = None,
    all_problems: AllProblemsOpt = False,
) -> None:
    """Check the archive's copy of an edge log with the chain check of `audit verify`.

    Checked through the seq the archive has synced (records above it are still arriving).

    Exit 0: signed to the end (intact against --pubkey, consistent without it); 1:
    modified, missing, reordered or badly signed records (the first is named); 3: the chain
    links but its tail is unsigned; 2: no such log, or the database unreachable.
    """
    require("archive", "trigger-mesh archiver verify")
    import asyncio

    import psycopg

    from mesh.archive.db import connect, describe
    from mesh.archive.partitions import dropped_months
    from mesh.archive.store import LogStatus, StoredConflict, conflicts_for, log_status, read_log
    from mesh.dispatch.literal import literal
    from mesh.journal.chain import verify_chain
    from mesh.journal.store import LogRecord

    dsn = _dsn(db)
    key = load_pubkey(pubkey)
    Loaded = tuple[LogStatus | None, list[LogRecord], list[StoredConflict], int, list[str]]

    async def load() -> Loaded:
        conn = await connect(dsn, name="trigger-mesh verify")
        try:
            status = await log_status(conn, log_id)
            if status is None:
                return None, [], [], 0, []
            records = await read_log(conn, log_id, through_seq=status.synced_seq)
            found, total = await conflicts_for(
                conn, unit_id=status.unit_id, gateway_id=status.gateway_id, log_id=log_id
            )
            dropped = await dropped_months(conn)
            return status, records, found, total, dropped
        finally:
            await conn.close()

    try:
        status, records, conflicts, conflict_total, dropped = asyncio.run(load())
    except psycopg.Error as exc:
        fail(f"archive database {describe(dsn)}: {str(exc).strip()}")
    if status is None:
        fail(f"the archive holds no log {log_id!r}", EXIT_USAGE)
    report = verify_chain(records, log_id=log_id, public_key=key, central_copy=True)
    show_report(report, all_problems)
    beyond = status.records - report.records
    # The unit and gateway are what the log's sender said: text, never markup.
    console().print(
        literal(
            f"archived from unit {status.unit_id or '?'} (gateway {status.gateway_id or '?'}): "
            f"synced through seq {status.synced_seq}, edge head {status.head_seq}"
            + (
                f"; {beyond} record(s) above the watermark not checked (in flight)"
                if beyond
                else ""
            )
        )
    )
    if status.vouch_problem is not None:
        console().print(
            literal(f"not used for live rows (archive.md): {status.vouch_problem}"),
        )
    elif status.vouched_seq:
        console().print(
            f"live rows made from its records through seq {status.vouched_seq}", highlight=False
        )
    if dropped and records and records[0].seq > 1:
        # The archive's own retention (archiver retention) dropped whole months: a gap at
        # the start of its copy is reported above as missing records; say what it was.
        console().print(
            f"the archive's retention dropped the months {', '.join(dropped)} "
            "(retention_runs): records from them are missing here by design",
            highlight=False,
        )
    _show_conflicts(conflicts, conflict_total)
    exit_for(report)


def _show_conflicts(conflicts: list[StoredConflict], total: int) -> None:
    """Refused copies are not part of the chain (the archived copy stands); they are
    listed so that an auditor sees who tried to overwrite what."""
    from mesh.dispatch.literal import literal

    out = console()
    if not total:
        out.print("no conflicting copies were refused for this gateway, unit or log")
        return
    out.print(
        literal(
            (f"{total} conflicting cop{'y' if total == 1 else 'ies'} refused", "bold yellow"),
            " for this gateway, unit or log (the archived records stand):",
        )
    )
    for c in conflicts:
        times = f" (x{c.copies})" if c.copies > 1 else ""
        # Who sent the copy and what it said: text from the wire, shown as it is.
        out.print(literal(f"  {c.first_at} {c.kind} {c.subject} [{c.code}]{times}: {c.detail}"))
    if total > len(conflicts):
        out.print(f"  … and {total - len(conflicts)} more (table conflicts)", highlight=False)


def log_sync(
    log: Annotated[Path, typer.Argument(help="Activation log (SQLite)")],
    *,
    broker: BrokerOpt = None,
    prefix: PrefixOpt = DEFAULT_PREFIX,
    timeout_s: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to keep trying")
    ] = 60.0,
    unit: Annotated[
        str | None, typer.Option("--unit", help="The log's unit, for the archive")
    ] = None,
    gateway_id: Annotated[
        str | None, typer.Option("--gateway", help="The log's gateway, for the archive")
    ] = None,
) -> None:
    """Send the log's records to the central archive (`trigger-mesh archiver`), until the
    archive confirms it holds them all, as the log's gateway (--gateway, or the one its
    started record names). Exit 0 synced; 1 not confirmed within --timeout
    (the archive, or a broker that went away), or refused by the archive (the log is
    another gateway's); 2 not a log, a log naming no gateway
    without --gateway, a TLS file of the broker URL that cannot be read, or credentials
    the broker refuses; 75 the broker cannot be reached at the start."""
    from mesh.cli.progress import progress
    from mesh.cli.reach import require_broker
    from mesh.dispatch.literal import literal
    from mesh.journal.store import LogError
    from mesh.journal.sync import LogSync
    from mesh.ops import logs

    logs.configure("console", "warning")
    for value, option in ((unit, "--unit"), (gateway_id, "--gateway")):
        if value is not None:
            _ident(value, option)
    url = broker_url(client_broker(broker))
    try:
        sync = LogSync(
            log, url=url, topics=topic_schema(prefix), unit_id=unit, gateway_id=gateway_id
        )
    except LogError as exc:
        fail(str(exc))
    if sync.gateway_id is None:
        # The archive stores a log's batches from its gateway only, and the broker lets a
        # credential send them only under its own name (docs/protocol.md, "Log sync").
        fail(
            f"{log}: the log names no gateway (it holds no started record): give --gateway, "
            "the gateway whose log it is, with that gateway's broker credential"
        )
    require_broker(url)  # a missing log first (2), then a missing broker (75)
    with progress("log sync", "records") as report:
        sync.progress = report
        result = run_until_signal(sync.sync(timeout_s))
    if result is None:
        raise typer.Exit(130)
    out = console(stderr=True)
    if result.complete:
        out.print(
            literal(
                f"log {result.log_id}: {result.sent} records sent; the archive holds every "
                f"record through seq {result.synced_seq}"
            )
        )
        raise typer.Exit(EXIT_SYNCED)
    if result.refused is not None:
        out.print(
            literal(("not synced:", "bold red"), f" refused by the archive: {result.refused}")
        )
        raise typer.Exit(EXIT_NOT_SYNCED)
    out.print(
        literal(
            ("not synced:", "bold red"),
            f" log {result.log_id}: the archive confirmed seq "
            f"{result.synced_seq} of {result.head_seq} within {timeout_s:g} s "
            f"({result.sent} records sent; is an archiver running on {url}?)",
        )
    )
    raise typer.Exit(EXIT_NOT_SYNCED)


# --- retention and legal holds (docs/archive.md, "Volume, partitions and retention") --------
hold_app = typer.Typer(
    help="Legal holds: while one is active, retention drops no month holding a row it covers.",
    no_args_is_help=True,
)
archiver_app.add_typer(hold_app, name="hold")

ByOpt = Annotated[
    str | None,
    typer.Option("--by", help="Who does this, for the record (default: user@host)"),
]


def _who(by: str | None) -> str:
    import getpass
    import socket

    if by is not None:
        if not by.strip() or len(by) > 200:
            fail("--by: 1 to 200 characters")
        return by
    return f"{getpass.getuser()}@{socket.gethostname()}"


def _instant_ns(value: str, option: str) -> int:
    from datetime import datetime

    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option} {value!r}: not an ISO 8601 time (e.g. 2026-03-01T00:00:00Z)")
    if when.tzinfo is None:
        fail(f"{option} {value!r}: give the time zone (e.g. Z or +01:00)")
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def _on_archive(dsn: str, name: str, action: Callable[[Conn], Awaitable[T]]) -> T:
    """Run ``action`` on the archive, its schema brought up to date first."""
    import asyncio

    import psycopg

    from mesh.archive.db import connect, describe
    from mesh.archive.migrate import migrate as apply

    async def run() -> T:
        conn = await connect(dsn, name=name)
        try:
            await apply(conn)
            return await action(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(run())
    except psycopg.Error as exc:
        fail(f"archive database {describe(dsn)}: {str(exc).strip()}")


@archiver_app.command("retention")
def retention(
    keep_days: Annotated[
        int,
        typer.Option("--keep-days", min=1, help="Keep what is younger than this many days"),
    ],
    db: DbOpt = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be dropped; change nothing")
    ] = False,
    by: ByOpt = None,
) -> None:
    """Drop the months of edge-log records, receipts, acks and escalations older than
    --keep-days, whole partitions at a time, with the triggers and activations of each
    month dropped that no hold covers; a month holding a row an active legal hold covers
    is kept (and said so)."""
    require("archive", "trigger-mesh archiver retention")
    from mesh.archive import partitions

    dsn = _dsn(db)
    who = _who(by)
    configure_logs("auto", "info")

    async def act(conn: Conn) -> list[partitions.RetentionOutcome]:
        # By PostgreSQL's clock, not this machine's.
        return await partitions.retention(conn, keep_days=keep_days, run_by=who, dry_run=dry_run)

    outcomes = _on_archive(dsn, "trigger-mesh retention", act)
    out = console()
    if not outcomes:
        out.print(f"nothing older than {keep_days} days", highlight=False)
    for o in outcomes:
        held = f" (holds {', '.join(str(h) for h in o.held_by)})" if o.held_by else ""
        gone = ", ".join(f"{n} {table}" for table, n in o.deleted.items() if n)
        with_it = f"; with it {gone}" if gone else ""
        out.print(
            f"{o.month.year:04d}-{o.month.month:02d}: {o.action.replace('_', ' ')}, "
            f"{o.rows} rows{held}{with_it}",
            highlight=False,
        )


@hold_app.command("place")
def hold_place(
    reason: Annotated[str, typer.Option("--reason", help="Why (case number, request)")],
    db: DbOpt = None,
    activation: Annotated[
        str | None, typer.Option("--activation", help="Hold this activation's records")
    ] = None,
    unit: Annotated[
        str | None, typer.Option("--unit", help="Hold this unit's logs and live rows")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--from", help="Hold records from this time (ISO 8601)")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--to", help="... up to this time (ISO 8601, exclusive)")
    ] = None,
    by: ByOpt = None,
) -> None:
    """Place a legal hold on an activation, a unit, or a time range (exactly one)."""
    require("archive", "trigger-mesh archiver hold place")
    from mesh.archive import partitions

    dsn = _dsn(db)
    chosen = sum(x is not None for x in (activation, unit, since or until))
    if chosen != 1:
        fail("give exactly one of --activation, --unit, or --from with --to")
    if not reason.strip() or len(reason) > 1000:
        fail("--reason: 1 to 1000 characters")
    if activation is not None:
        _ident(activation, "--activation")
    if unit is not None:
        _ident(unit, "--unit")
    from_ns = to_ns = None
    if since is not None or until is not None:
        if since is None or until is None:
            fail("--from and --to go together")
        from_ns, to_ns = _instant_ns(since, "--from"), _instant_ns(until, "--to")
        if from_ns >= to_ns:
            fail("--from must be before --to")
    who = _who(by)
    configure_logs("auto", "info")

    async def act(conn: Conn) -> int:
        return await partitions.place_hold(
            conn,
            reason=reason,
            by=who,
            activation_id=activation,
            unit_id=unit,
            from_ns=from_ns,
            to_ns=to_ns,
        )

    hold_id = _on_archive(dsn, "trigger-mesh hold", act)
    console().print(f"hold {hold_id} placed", highlight=False)


@hold_app.command("list")
def hold_list(
    db: DbOpt = None,
    all_holds: Annotated[bool, typer.Option("--all", help="Released holds too")] = False,
) -> None:
    """The legal holds (active ones, or --all)."""
    require("archive", "trigger-mesh archiver hold list")
    from mesh.archive import partitions
    from mesh.dispatch.literal import literal

    dsn = _dsn(db)

    async def act(conn: Conn) -> list[partitions.Hold]:
        return await partitions.holds(conn, include_released=all_holds)

    found = _on_archive(dsn, "trigger-mesh hold", act)
    out = console()
    if not found:
        out.print("no holds" if all_holds else "no active holds", highlight=False)
    for hold in found:
        state = (
            "active"
            if hold.released_at is None
            else f"released {hold.released_at} by {hold.released_by}"
        )
        out.print(
            literal(f"{hold.describe()}, placed {hold.placed_at} by {hold.placed_by}: {state}")
        )


@hold_app.command("release")
def hold_release(
    hold_id: Annotated[int, typer.Argument(help="The hold's id (hold list)")],
    db: DbOpt = None,
    by: ByOpt = None,
) -> None:
    """Release a legal hold (it stays listed with --all, with who released it)."""
    require("archive", "trigger-mesh archiver hold release")
    from mesh.archive import partitions

    dsn = _dsn(db)
    who = _who(by)
    configure_logs("auto", "info")

    async def act(conn: Conn) -> bool:
        return await partitions.release_hold(conn, hold_id, by=who)

    if not _on_archive(dsn, "trigger-mesh hold", act):
        fail(f"no active hold {hold_id}", 1)
    console().print(f"hold {hold_id} released", highlight=False)
