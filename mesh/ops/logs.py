"""One log pipeline: structlog for our loggers *and* the standard library's (uvicorn, paho,
bumble, asyncio, warnings), so a stream holds one format. JSON lines for daemons,
readable key=value on a terminal; under systemd each line starts with its syslog priority
(sd-daemon(3)'s ``<4>``…) so ``journalctl -p warning`` can filter. docs/observability.md.

Our loggers are standard-library loggers wrapped by structlog; every record, ours or a
library's, is rendered by the one ``ProcessorFormatter`` on the root logger.

``write_fatal`` is how every command says why it stops: a record of that pipeline when it
writes JSON to stderr, one readable ``error: …`` line otherwise.
"""

from __future__ import annotations

import io
import logging
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, Literal, TextIO

import structlog

LogFormat = Literal["auto", "json", "console"]
_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
# Our packages log at the chosen level; libraries only speak up from WARNING (paho and
# bumble are chatty at INFO and DEBUG), unless the chosen level is higher still.
OUR_LOGGERS = ("mesh", "bridge", "triggers")
# The logger of the record that says why a command stopped (``write_fatal``).
FATAL_LOGGER = "mesh.cli"
# C0 and C1 controls and DEL, except newline and tab: ESC (0x1b) and CSI (0x9b) begin
# the sequences a terminal obeys (colours, cursor moves, titles, hyperlinks).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(text: str) -> str:
    """``text`` with every control character but newline and tab written as ``\\xNN``: what
    a message quotes (a file's key, a peer's words) is shown, never obeyed by a terminal
    (mesh.dispatch.literal shows the command line's text so too)."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class _Pipeline:
    """What ``configure`` set up last: the stream it writes JSON records to (None: it
    writes readable lines, or was never configured)."""

    json_stream: TextIO | None = None


def syslog_priority(levelno: int) -> int:
    """sd-daemon(3)'s SD_ERR (3), SD_WARNING (4), SD_INFO (6), SD_DEBUG (7), SD_CRIT (2)."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


# systemd's "<device>:<inode>", both decimal: ASCII digits only (str.isdigit() also takes
# "²" or "٣", and int() then fails or reads another number), nothing before or after.
_JOURNAL_STREAM = re.compile(r"([0-9]+):([0-9]+)", re.ASCII)


def journal_stream_matches(journal_stream: str | None, st_dev: int, st_ino: int) -> bool:
    """Whether ``$JOURNAL_STREAM`` ("<device>:<inode>", set by systemd) names this stream:
    a child that inherited the variable but writes elsewhere must not prefix. Anything
    else than two decimal numbers and a colon is "not the journal", never an error."""
    if not journal_stream:
        return False
    found = _JOURNAL_STREAM.fullmatch(journal_stream)
    if found is None:
        return False
    return int(found.group(1)) == st_dev and int(found.group(2)) == st_ino


def _on_journal(out: TextIO) -> bool:
    try:
        st = os.fstat(out.fileno())
    except (OSError, ValueError, io.UnsupportedOperation):
        return False  # not a file (a test's StringIO): not the journal
    return journal_stream_matches(os.environ.get("JOURNAL_STREAM"), st.st_dev, st.st_ino)


class _JournalFormatter(structlog.stdlib.ProcessorFormatter):
    """Prefixes each record with ``<priority>``; journald strips it and files the line at
    that priority."""

    def format(self, record: logging.LogRecord) -> str:
        return f"<{syslog_priority(record.levelno)}>{super().format(record)}"


def configure(fmt: LogFormat = "auto", level: str = "info", stream: TextIO | None = None) -> None:
    """``auto`` is console when the stream is a terminal, JSON otherwise (journald, files)."""
    out = stream or sys.stderr
    numeric = _LEVELS.get(level.lower())
    if numeric is None:
        raise ValueError(f"log level {level!r} is not one of {', '.join(_LEVELS)}")
    if fmt == "auto":
        fmt = "console" if out.isatty() else "json"
    _Pipeline.json_stream = out if fmt == "json" else None
    renderer: structlog.typing.Processor
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=out.isatty())
    # Run for every record: ours before they reach the standard library, the libraries'
    # in the formatter (``foreign_pre_chain``).
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=False,
    )
    formatter_class = _JournalFormatter if _on_journal(out) else structlog.stdlib.ProcessorFormatter
    formatter = formatter_class(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in root.handlers[:]:  # as basicConfig(force=True): one handler, ours
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(max(numeric, logging.WARNING))
    for name in OUR_LOGGERS:
        logging.getLogger(name).setLevel(numeric)
    logging.captureWarnings(True)  # warnings.warn too, as a record of logger "py.warnings"


def logs_json_to_stderr() -> bool:
    """Whether this process's stderr gets JSON log records (``configure`` chose JSON for
    it: ``--log-format json``, or ``auto`` off a terminal, as under systemd)."""
    stream = _Pipeline.json_stream
    return stream is not None and stream is sys.stderr and not stream.closed


def write_fatal(
    message: str,
    *,
    code: int,
    problems: Sequence[str] = (),
    crash: BaseException | None = None,
) -> None:
    """Say on stderr why the command stops, just before it exits with ``code``.

    When stderr gets JSON records (``logs_json_to_stderr``), it is one record of logger
    ``mesh.cli``, through the same pipeline as every other (so ``<3>``-prefixed on the
    journal): level error with an ``exit_code``, or critical with the traceback for a
    ``crash``. Each of ``problems`` (a config file's) follows ``message`` in its ``event``
    ("config error: a.yaml: key 'x': …"; several: "config error: 2 problems: …; …") and,
    when there are several, in a ``problems`` list too.

    Otherwise readable lines, as a person at a terminal wants them: ``error: <message>``,
    or ``error: <message>: <problem>`` for each problem, control characters shown as
    ``\\xNN`` (``printable``); ``<3>``-prefixed when stderr is the journal
    (``--log-format console`` under systemd). (The JSON renderer escapes them itself.)
    """
    out = sys.stderr
    if logs_json_to_stderr():
        fields: dict[str, Any] = {"exit_code": code}
        event = message
        if len(problems) == 1:
            event = f"{message}: {problems[0]}"
        elif problems:
            event = f"{message}: {len(problems)} problems: " + "; ".join(problems)
            fields["problems"] = list(problems)
        log = structlog.get_logger(FATAL_LOGGER)
        if crash is not None:
            log.critical(event, exc_info=crash, **fields)
        else:
            log.error(event, **fields)
        return
    lines = [f"{message}: {problem}" for problem in problems] if problems else [message]
    lines = [printable(line) for line in lines]
    prefix = f"<{syslog_priority(logging.ERROR)}>" if _on_journal(out) else ""
    label = "\x1b[1;31merror:\x1b[0m" if _coloured(out) else "error:"
    out.write("".join(f"{prefix}{label} {line}\n" for line in lines))
    out.flush()


def _coloured(out: TextIO) -> bool:
    """A terminal that takes colours (https://no-color.org, TERM=dumb: none)."""
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    try:
        return out.isatty()
    except ValueError:  # closed
        return False
