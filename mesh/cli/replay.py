"""``trigger-mesh audit replay``: re-decide a log, or re-publish it for review.

Registered on the ``audit`` group (``mesh.cli.audit``) when ``mesh.cli.app`` imports this.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated

import typer

from mesh.cli.common import (
    BrokerOpt,
    broker_url,
    client_broker,
    console,
    fail,
    reachable_broker,
    run_until_signal,
)
from mesh.cli.integrity import PubkeyOpt, load_pubkey

# 4: the decisions may all be reproduced, but the log they came from does not verify.
EXIT_SAME, EXIT_DIFFERENT, EXIT_NOT_INTACT = 0, 1, 4


def replay(
    log: Annotated[Path, typer.Argument(help="Activation log (SQLite)")],
    policy: Annotated[
        Path | None,
        typer.Option("--policy", help="Decide by this policy instead of the logged one"),
    ] = None,
    publish: Annotated[
        bool, typer.Option("--publish", help="Re-publish the history under --prefix")
    ] = False,
    speed: Annotated[float, typer.Option("--speed", help="Pace of --publish (x real time)")] = 1.0,
    prefix: Annotated[
        str, typer.Option("--prefix", help="Prepended to the logged topic prefix")
    ] = "replay/",
    broker: BrokerOpt = None,
    limit: Annotated[int, typer.Option("--limit", help="Differences to print")] = 20,
    pubkey: PubkeyOpt = None,
) -> None:
    """Re-run every logged trigger through the policy and range code and print what would
    differ (exit 0: nothing, 1: differences, 4: the log's chain does not verify, as in
    audit verify). With --publish, also re-send the history (presence, receipts,
    activations, escalations; never commands) for dispatch review."""
    from mesh.audit.replay import Replayer
    from mesh.config import load_policy
    from mesh.documents import ConfigError
    from mesh.journal.chain import Verdict, verify_chain
    from mesh.journal.store import LogError, log_id_of, read_records

    key = load_pubkey(pubkey)
    if publish:  # before the work, not after it
        reachable_broker(client_broker(broker))
    try:
        chosen = load_policy(policy) if policy is not None else None
        result = Replayer(chosen).run(read_records(log))
        # A replay re-decides what the log says; whether the log says what happened is
        # the chain's to tell, so the same check as `audit verify` runs with it.
        chain = verify_chain(read_records(log), log_id=log_id_of(log), public_key=key)
    except (LogError, ConfigError) as exc:
        fail(str(exc))
    from mesh.dispatch.literal import literal

    # Problems, notes and differences quote the log (camera ids, reasons): text, not markup.
    out = console()
    if chain.tampered:
        out.print(
            literal(
                f"chain: does not verify, so this replay vouches for nothing: {chain.problems[0]}"
                " (audit verify --all lists every problem)"
            )
        )
    elif chain.verdict is not Verdict.INTACT:
        # Consistent, unsigned or empty: say what the chain does not prove.
        out.print(literal(f"chain: {chain.headline()}"))
    basis = f"policy {policy}" if policy is not None else "the logged policy"
    out.print(
        f"{result.triggers} triggers re-decided by {basis} ({result.activations} activations, "
        f"{result.presence_updates} presence updates): "
        + ("every decision reproduced" if result.same else f"{len(result.differences)} differ"),
        highlight=False,
    )
    for note in dict.fromkeys(result.notes):
        out.print(literal(f"note: {note}"))
    for difference in result.differences[:limit]:
        out.print(literal(str(difference)))
    if len(result.differences) > limit:
        out.print(f"… and {len(result.differences) - limit} more (--limit)", highlight=False)
    if publish:
        if speed <= 0:
            fail("--speed must be positive")
        sent = run_until_signal(_publish(log, client_broker(broker), prefix, speed))
        out.print(literal(f"{sent or 0} messages re-published under {prefix!r}"))
    if chain.tampered:
        raise typer.Exit(EXIT_NOT_INTACT)
    if not result.same:
        raise typer.Exit(EXIT_DIFFERENT)


async def _publish(log: Path, broker: str, prefix: str, speed: float) -> int:
    import asyncio

    from bridge.mqtt.client import LinkOptions, MqttLink
    from mesh.audit.replay_publish import messages, publish_history
    from mesh.journal.store import LogError, read_records

    try:
        outbound = list(messages(read_records(log), prefix))
    except LogError as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(f"--prefix: {exc}")
    link = MqttLink(
        broker_url(broker),
        LinkOptions(client_id=f"tm-replay-{uuid.uuid4().hex[:8]}", persistent_session=False),
    )
    runner = asyncio.ensure_future(link.run(lambda _message: None))
    try:
        await link.wait_up(10)
        sent = await publish_history(outbound, link, speed=speed)
        await link.drain()
        return sent
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
