"""``trigger-mesh audit verify | hold | prune``: the log's chain, its legal holds, retention.

Registered on the ``audit`` group (``mesh.cli.audit``) when ``mesh.cli.app`` imports this.
"""

from __future__ import annotations

import asyncio
import getpass
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mesh.cli.common import EXIT_USAGE, console, fail
from mesh.timefmt import parse_iso_ns

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from mesh.journal.chain import ChainReport
    from mesh.journal.signer import CheckpointSigner
    from mesh.journal.store import ActivationLog

# `audit verify` exit statuses (docs/audit.md).
EXIT_INTACT, EXIT_TAMPERED, EXIT_UNSIGNED_TAIL = 0, 1, 3

LogArg = Annotated[Path, typer.Argument(help="Activation log (SQLite)")]
KeyOpt = Annotated[
    Path | None,
    typer.Option("--key", help="The gateway's signing key: sign the new record at once"),
]


def _signer(key: Path | None) -> CheckpointSigner | None:
    from mesh.journal.signer import CheckpointSigner
    from mesh.security.keys import KeyFileError

    if key is None:
        return None
    try:
        return CheckpointSigner.from_file(key)
    except KeyFileError as exc:
        fail(str(exc))


PubkeyOpt = Annotated[
    Path | None,
    typer.Option("--pubkey", help="The gateway's public key (.pub from keys new-gateway)"),
]
AllProblemsOpt = Annotated[
    bool, typer.Option("--all", help="List every problem, not only the first")
]


def load_pubkey(pubkey: Path | None) -> Ed25519PublicKey | None:
    from mesh.security.keys import KeyFileError, load_public_key

    try:
        return load_public_key(pubkey) if pubkey is not None else None
    except KeyFileError as exc:
        fail(str(exc))


def show_report(report: ChainReport, all_problems: bool) -> None:
    from mesh.dispatch.literal import literal

    # The log's id and the problems quote the log: shown as they are, never as markup.
    out = console()
    out.print(literal(report.summary()))
    for problem in report.problems if all_problems else report.problems[:1]:
        out.print(literal(f"  {problem}"))


def exit_for(report: ChainReport) -> None:
    """Exit with verify's status (docs/audit.md) unless every record is signed."""
    if report.tampered:
        raise typer.Exit(EXIT_TAMPERED)
    if not report.ok:
        raise typer.Exit(EXIT_UNSIGNED_TAIL)


def verify(log: LogArg, pubkey: PubkeyOpt = None, all_problems: AllProblemsOpt = False) -> None:
    """Check the hash chain and every checkpoint signature of a log.

    Only --pubkey (the gateway's key) proves who wrote it: without it, the verdict is at
    best "consistent" (signed by the keys the log itself names), never "intact".

    Exit 0: signed to the end (intact against --pubkey, consistent without it), or an
    empty log without --pubkey; 1: modified, missing, reordered or badly signed records
    (the first is named), or with --pubkey no checkpoint signed by that key; 3: unsigned,
    records after the last checkpoint (or all of them) signed by none; 2: not a log.
    """
    from mesh.journal.integrity import verify_log
    from mesh.journal.store import LogError

    key = load_pubkey(pubkey)
    try:
        report = verify_log(log, key)  # the same check as the report's integrity section
    except LogError as exc:
        fail(str(exc))
    show_report(report, all_problems)
    exit_for(report)


def hold(
    log: LogArg,
    reason: Annotated[str, typer.Option("--reason", help="Case number, request, order …")],
    activation: Annotated[
        str | None, typer.Option("--activation", help="Keep every record of this activation")
    ] = None,
    start: Annotated[
        str | None, typer.Option("--from", help="Keep every record from this time (ISO 8601)")
    ] = None,
    end: Annotated[str | None, typer.Option("--to", help="… to this time (ISO 8601)")] = None,
    by: Annotated[str | None, typer.Option("--by", help="Who places it (default: $USER)")] = None,
    release: Annotated[bool, typer.Option("--release", help="Lift the hold instead")] = False,
    key: KeyOpt = None,
) -> None:
    """Place (or lift) a legal hold: retention never removes what a hold keeps.

    The hold is a record of the log's chain, so it is evidence too. Safe while the gateway
    runs (the writer reads the chain's head inside its write lock).
    """
    from mesh.journal.retention import hold_body
    from mesh.journal.store import ActivationLog, LogError, open_readonly

    if (activation is None) == (start is None and end is None):
        fail("give either --activation or --from/--to")
    try:
        from_ns = parse_iso_ns(start) if start else None
        to_ns = parse_iso_ns(end) if end else None
    except ValueError as exc:
        fail(f"--from/--to: {exc}")
    try:
        open_readonly(log).close()  # never create a log by accident
        body = hold_body(
            activation_id=activation,
            from_ns=from_ns,
            to_ns=to_ns,
            reason=reason,
            by=by or getpass.getuser(),
            release=release,
        )
    except (LogError, ValueError) as exc:
        fail(str(exc))
    seq = asyncio.run(_append_hold(ActivationLog(log, signer=_signer(key)), activation, body))
    what = f"activation {activation}" if activation else f"records from {start} to {end}"
    verb = "released" if release else "placed"
    console().print(f"hold {verb} on {what} (record {seq})", highlight=False)


async def _append_hold(log: ActivationLog, activation_id: str | None, body: str) -> int:
    """The hold record, filed under the activation it keeps (so it is kept with it)."""
    from mesh.journal.records import RecordKind

    try:
        seq = await log.append_durable(RecordKind.HOLD, activation_id, body, time.time_ns())
        await log.checkpoint("hold")
        return seq
    finally:
        log.close()


def prune(
    log: LogArg,
    days: Annotated[float, typer.Option("--days", help="Keep records younger than this")],
    key: KeyOpt = None,
) -> None:
    """Remove records older than --days that no legal hold keeps (the gateway does this
    itself every audit.retention_check_s). What went is recorded, so the chain verifies.
    A signed log needs --key: only a pass signed by the gateway's key accounts for what
    it removed (without one, `audit verify` would report those records as missing)."""
    from mesh.journal.records import RecordKind
    from mesh.journal.retention import RetentionPass
    from mesh.journal.store import ActivationLog, LogError, RetentionRefused, open_readonly

    if days <= 0:
        fail("--days must be positive", EXIT_USAGE)
    try:
        conn = open_readonly(log)
        try:
            signed = conn.execute(
                "SELECT 1 FROM records WHERE kind = ? LIMIT 1", (RecordKind.CHECKPOINT.value,)
            ).fetchone()
        finally:
            conn.close()
    except LogError as exc:
        fail(str(exc))
    if signed is not None and key is None:
        fail(
            f"{log} is signed (checkpoints): give the gateway's --key, or let the gateway "
            "prune; an unsigned retention pass would leave its removed records unaccounted "
            "for (audit verify: missing)"
        )

    async def run() -> dict[str, int]:
        opened = ActivationLog(log, signer=_signer(key))
        try:
            outcome = await opened.prune(RetentionPass(days, time.time_ns()))
            await opened.checkpoint("retention")
            return outcome
        finally:
            opened.close()

    try:
        outcome = asyncio.run(run())
    except RetentionRefused as exc:  # the log's tampering, for audit verify to name
        fail(str(exc), EXIT_TAMPERED)
    console().print(
        f"{outcome.get('removed', 0)} expired records removed, {outcome.get('held', 0)} kept "
        "by legal holds",
        highlight=False,
    )
