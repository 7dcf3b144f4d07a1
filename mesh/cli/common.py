"""What the command-line modules share: options, exit codes, errors, running a coroutine."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from bridge.mqtt.client import ProtocolChoice
from bridge.mqtt.embedded import EmbeddedBroker, find_mosquitto
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.extras import require
from mesh.ops import logs
from mesh.ops.runtime import settle_heap_later

if TYPE_CHECKING:
    from pydantic import BaseModel
    from rich.console import Console

    from mesh.documents import ConfigError
    from mesh.security.checks import Security, SecurityConfig
    from mesh.security.signing import PayloadSigner

ENV_BROKER = "TRIGGER_MESH_BROKER"
DEFAULT_BROKER = "mqtt://127.0.0.1:1883"

BrokerOpt = Annotated[
    str | None,
    typer.Option("--broker", help=f"mqtt://host:port, mqtts://…, or 'embedded' (env {ENV_BROKER})"),
]
PrefixOpt = Annotated[str, typer.Option("--prefix", help="Topic prefix")]
LogFormatOpt = Annotated[
    str, typer.Option("--log-format", help="auto (console on a terminal, else JSON), json, console")
]
LogLevelOpt = Annotated[str, typer.Option("--log-level")]
SigningKeyOpt = Annotated[
    Path | None,
    typer.Option("--signing-key", help="Ed25519 key (`keys new`) that signs what this sends"),
]

# Exit statuses of `trigger` (documented in the README).
EXIT_OK, EXIT_NOT_CONFIRMED, EXIT_USAGE, EXIT_REFUSED, EXIT_NO_ANSWER = 0, 1, 2, 3, 4


def console(*, stderr: bool = False, soft_wrap: bool = True) -> Console:
    """The console every command prints to: what it prints is shown as it is, never read as
    markup or emoji codes (mesh.dispatch.literal: ids, reasons and problems come off the
    wire or out of a log); our own styling is a ``literal`` part."""
    # rich is imported only by commands that draw: the gateway daemon never loads it.
    from mesh.dispatch.literal import literal_console

    return literal_console(stderr=stderr, soft_wrap=soft_wrap)


def fail(message: str, code: int = EXIT_USAGE) -> NoReturn:
    """Stop with ``code``, saying why: ``error: <message>``, or a log record when the
    command's logs are JSON (mesh.ops.logs.write_fatal)."""
    logs.write_fatal(message, code=code)
    raise typer.Exit(code)


def configure_logs(fmt: str, level: str) -> None:
    """A daemon's log pipeline, set up first thing: every later failure (its config, its
    options, a missing extra) is then written through it (mesh.ops.logs.write_fatal)."""
    if fmt not in ("auto", "json", "console"):
        fail(f"--log-format must be auto, json or console, not {fmt!r}")
    try:
        logs.configure(fmt, level)  # type: ignore[arg-type]
    except ValueError as exc:
        fail(str(exc))


def broker_url(value: str) -> BrokerUrl:
    """``value`` parsed, with its TLS files (``?ca=``, ``cert=``, ``key=``) readable and
    usable; if not, exit 2 naming what is wrong (a daemon's link would otherwise die on the
    file at its first connect)."""
    try:
        url = BrokerUrl.parse(value)
        url.tls_context()
    except ValueError as exc:  # TlsFileError included
        fail(str(exc))
    return url


def reachable_broker(value: str) -> BrokerUrl:
    """The broker URL of a one-shot command, checked to accept connections: if not, one
    line and exit 75 (mesh.cli.errors) instead of retries that end in a timeout."""
    from mesh.cli.reach import require_broker

    return require_broker(broker_url(value))


def fail_config(exc: ConfigError, code: int = EXIT_USAGE) -> NoReturn:
    """Every problem of a bad config file and exit 2 (or ``code``): one line each, or one
    log record listing them when the command's logs are JSON (mesh.ops.logs.write_fatal)."""
    logs.write_fatal("config error", code=code, problems=exc.lines)
    raise typer.Exit(code)


def topic_schema(prefix: str) -> Topics:
    try:
        return Topics(prefix)
    except ValueError as exc:
        fail(str(exc))


def run_until_signal(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run until done or until SIGINT/SIGTERM, which cancel the work for a clean stop."""

    async def guarded() -> Any:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            return None

    return asyncio.run(guarded())


async def settle_when_ready(ready: asyncio.Event) -> None:
    await ready.wait()
    await settle_heap_later()


@contextlib.asynccontextmanager
async def broker_for(value: str) -> AsyncIterator[tuple[BrokerUrl, ProtocolChoice]]:
    """An external broker URL, or 'embedded': a private broker for this process."""
    if value != "embedded":
        yield broker_url(value), "auto"
        return
    if find_mosquitto() is None:  # then amqtt, in this process
        require("broker", "--broker embedded without mosquitto")
    async with EmbeddedBroker() as broker:
        console(stderr=True).print(f"embedded {broker.kind} broker listening on {broker.url}")
        yield broker.url, "3.1.1" if broker.kind == "amqtt" else "auto"


def client_broker(broker: str | None) -> str:
    return broker or os.environ.get(ENV_BROKER) or DEFAULT_BROKER


def load_signer(path: Path | None) -> PayloadSigner | None:
    """The signer of ``--signing-key``, or exit 2 naming the file."""
    if path is None:
        return None
    from mesh.security.keys import KeyFileError
    from mesh.security.signing import PayloadSigner

    try:
        return PayloadSigner.from_file(path)
    except KeyFileError as exc:
        fail(f"--signing-key: {exc}")


def seal_with_key(path: Path | None, payload: BaseModel) -> bytes:
    """What to send: ``payload`` signed with the key of ``--signing-key`` (a JWS), or the
    plain payload without one."""
    from mesh.protocol.codec import encode

    signer = load_signer(path)
    return encode(payload) if signer is None else signer.seal(payload).to_bytes()


def security_of(config: SecurityConfig, config_path: Path) -> Security:
    """The ``security:`` section of a config file, loaded, or exit 2 naming what is wrong."""
    from mesh.documents import ConfigError
    from mesh.security.checks import load_security

    try:
        return load_security(config, config_path)
    except ConfigError as exc:
        fail_config(exc)
