"""Exit statuses and the errors that end a command with one line on stderr.

A command that fails for a reason a user can act on raises a ``CliFailure`` (or a
subclass); ``run_cli`` prints ``error: <message>`` and exits with the failure's status:
no traceback. A daemon whose logs are JSON (``--log-format json``, or ``auto`` under
systemd) writes a log record instead, and a crash too (mesh.ops.logs.write_fatal).
``EXIT_CODES`` is the table docs/cli.md shows; a new kind of failure adds its subclass
and a row.
"""

from __future__ import annotations

import errno
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, NoReturn

from mesh.extras import EXIT_MISSING_EXTRA, MissingExtra
from mesh.ops.logs import logs_json_to_stderr, write_fatal

if TYPE_CHECKING:
    from collections.abc import Callable


@dataclass(frozen=True)
class ExitCode:
    code: int
    name: str
    meaning: str


# Statuses that mean the same for every command. Some commands give 1, 3 and 4 a meaning
# of their own (docs/cli.md lists them); 2, 69, 75 and 130 mean the same everywhere.
EXIT_OK = 0
EXIT_USAGE = 2
# sysexits.h EX_TEMPFAIL ("try again later"): the broker may come back, a port may be freed;
# far from the small statuses commands use for their results, and apart from a missing
# extra's EX_UNAVAILABLE. The systemd units restart on it (not on 2 or 69).
EXIT_TEMPFAIL = 75
EXIT_BROKER_UNREACHABLE = EXIT_TEMPFAIL
EXIT_INTERRUPTED = 130
# What Python exits with after an uncaught exception (a bug): kept when the crash is logged.
EXIT_CRASH = 1

EXIT_CODES: tuple[ExitCode, ...] = (
    ExitCode(EXIT_OK, "ok", "done; for a check, everything passed"),
    ExitCode(1, "failed", "the command's own negative result (see its --help)"),
    ExitCode(
        EXIT_USAGE,
        "usage",
        "bad option, bad or missing file, invalid configuration (every error printed), "
        "credentials or a certificate the MQTT broker refuses",
    ),
    ExitCode(
        EXIT_MISSING_EXTRA,
        "missing extra",
        "the command needs an optional part that is not installed (docs/install.md)",
    ),
    ExitCode(
        EXIT_TEMPFAIL,
        "try again later",
        "a command that needs the MQTT broker could not connect to it; a daemon's port is "
        "taken or its address is not (yet) this machine's",
    ),
    ExitCode(EXIT_INTERRUPTED, "interrupted", "stopped by Ctrl-C (SIGINT) before finishing"),
)


# A port another process holds (an old instance still closing) or an address the machine
# does not have yet (the network not up at boot) may be fine a second later; any other bind
# error (a privileged port, a malformed address) will not be.
_BIND_ERRORS_THAT_PASS = frozenset({errno.EADDRINUSE, errno.EADDRNOTAVAIL})


def listen_failure_code(error_number: int | None) -> int:
    """The exit status of a daemon that cannot listen where it was told to."""
    return EXIT_TEMPFAIL if error_number in _BIND_ERRORS_THAT_PASS else EXIT_USAGE


class CliFailure(Exception):
    """A failure reported as one line (``error: …``) and an exit status."""

    code: ClassVar[int] = EXIT_USAGE


class BrokerUnreachable(CliFailure):
    code = EXIT_BROKER_UNREACHABLE

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"cannot reach the MQTT broker at {where}: {reason}")
        self.where, self.reason = where, reason


class BrokerRefused(CliFailure):
    """The broker answered and said no to who we are (credentials, a certificate), or its
    certificate does not verify: a configuration problem, which retrying cannot solve."""

    code = EXIT_USAGE

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"the MQTT broker at {where} refused the connection: {reason}")


def report(failure: Exception, code: int) -> NoReturn:
    write_fatal(str(failure), code=code)
    sys.exit(code)


def run_cli(app: Callable[[], object]) -> None:
    """Run the typer app; a CliFailure, a missing extra or a link that never came up is
    one line and its status, no traceback (a log record when the logs are JSON, as is a
    crash then)."""
    from bridge.mqtt.client import LinkDown

    try:
        app()
    except CliFailure as failure:
        report(failure, failure.code)
    except MissingExtra as exc:
        # An optional part left out of the install is no bug.
        report(exc, EXIT_MISSING_EXTRA)
    except LinkDown as exc:
        # A one-shot command's link that stayed down (the broker went away after the
        # reachability check, or it accepts TCP but not our MQTT).
        down = BrokerUnreachable(_where(str(exc)), str(exc))
        report(down, down.code)
    except Exception as exc:
        if not logs_json_to_stderr():
            raise  # the traceback, for the person at the terminal
        # A daemon logging JSON (systemd): the traceback in one critical record, so that
        # `journalctl -p err` shows why it died; the status Python gives a crash.
        write_fatal(f"crashed: {type(exc).__name__}: {exc}", code=EXIT_CRASH, crash=exc)
        sys.exit(EXIT_CRASH)


def _where(message: str) -> str:
    # LinkDown says "no connection to mqtt://host:port within N s".
    words = message.split()
    return next((w for w in words if "://" in w), "the configured address")
