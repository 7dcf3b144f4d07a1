"""Why a daemon stopped, in its own log (docs/observability.md, "Logs"): with JSON logs
(``--log-format json``, or ``auto`` off a terminal, as under systemd) a fatal error is one
JSON record at level error on stderr, ``<3>``-prefixed when stderr is the journal, so that
``journalctl -p err`` shows it; on a terminal it stays one readable line. The daemons set
up their logs before they read their config, so a bad config is such a record too."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from mesh.cli.errors import EXIT_USAGE
from mesh.dispatch.console.auth import Role, add_user
from tests.integration.test_cli import CLI, REPO


def _gateway(tmp_path: Path) -> tuple[list[str], str]:
    path = tmp_path / "gateway.yaml"
    path.write_text("unit: car-1\nbrokr: mqtt://127.0.0.1:1\n")
    return (
        ["gateway", "--config", str(path)],
        f"config error: {path}: key 'brokr': unknown key (did you mean 'broker'?)",
    )


def _camera(tmp_path: Path) -> tuple[list[str], str]:
    path = tmp_path / "no-such-camera.yaml"
    return (
        ["camera", "--config", str(path)],
        f"config error: {path}: top level: cannot read: No such file or directory",
    )


def _dispatch(tmp_path: Path) -> tuple[list[str], str]:
    path = tmp_path / "users.yaml"
    add_user(path, "dana", Role.DISPATCHER, "a long enough password")
    path.write_text(path.read_text().replace("role: dispatcher", "role: chief"))
    return (
        ["dispatch", "--users", str(path), "--port", "0"],
        f"config error: {path}: key 'users.dana.role': Input should be 'viewer' or 'dispatcher'",
    )


def _archiver(tmp_path: Path) -> tuple[list[str], str]:
    trust = tmp_path / "no-such-trust.yaml"
    return (
        ["archiver", "--db", "postgresql://nobody@127.0.0.1:1/none", "--trust", str(trust)],
        f"--trust {trust}: no such file",
    )


def _gateway_tls(tmp_path: Path) -> tuple[list[str], str]:
    """A CA file of the config's broker URL that is not there: a config error at start, not
    a link that dies on it at its first connect."""
    ca = tmp_path / "no-such-ca.pem"
    path = tmp_path / "gateway.yaml"
    path.write_text(
        f"unit: car-1\nbroker: 'mqtts://127.0.0.1:1?ca={ca}'\nlog: {tmp_path / 'x.db'}\n"
    )
    return (
        ["gateway", "--config", str(path)],
        f"config error: {path}: key 'broker': Value error, broker URL mqtts://127.0.0.1:1: "
        f"ca={ca}: No such file or directory",
    )


def _dispatch_tls(tmp_path: Path) -> tuple[list[str], str]:
    """A client certificate of --broker that is not there."""
    users = tmp_path / "users.yaml"
    add_user(users, "dana", Role.DISPATCHER, "a long enough password")
    cert = tmp_path / "no-such.crt"
    return (
        ["dispatch", "--users", str(users), "--port", "0", "--broker", f"mqtts://h:1?cert={cert}"],
        f"broker URL mqtts://h:1: cert={cert}: No such file or directory",
    )


DAEMONS = {
    "gateway": _gateway,
    "camera": _camera,
    "dispatch": _dispatch,
    "archiver": _archiver,
    "gateway broker tls": _gateway_tls,
    "dispatch broker tls": _dispatch_tls,
}


def _run(args: list[str], stderr_file: Path, *, journal: bool = False) -> tuple[int, str, str]:
    """Run the CLI with stderr in a file: the returncode, stdout and stderr. With
    ``journal``, $JOURNAL_STREAM names that file as systemd names the journal's stream."""
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with stderr_file.open("w") as err:
        if journal:
            st = os.fstat(err.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        result = subprocess.run(
            [*CLI, *args],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            env=env,
            cwd=REPO,
            timeout=60,
            check=False,
        )
    return result.returncode, result.stdout, stderr_file.read_text()


def _record(line: str) -> dict[str, Any]:
    record = json.loads(line)
    assert isinstance(record, dict), line
    return record


@pytest.mark.parametrize("daemon", list(DAEMONS))
def test_a_fatal_error_is_one_json_record_with_json_logs(daemon: str, tmp_path: Path) -> None:
    args, message = DAEMONS[daemon](tmp_path)
    code, out, err = _run([*args, "--log-format", "json"], tmp_path / "err")
    assert code == EXIT_USAGE, err
    assert out == ""
    (line,) = err.splitlines()  # exactly one line: no readable copy, no traceback
    record = _record(line)
    assert record["event"] == message
    assert record["level"] == "error"
    assert record["logger"] == "mesh.cli"
    assert record["exit_code"] == EXIT_USAGE
    assert record["timestamp"].endswith("Z")


def test_every_problem_of_a_config_is_in_the_one_record(tmp_path: Path) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text("unit: car-1\nbrokr: x\nstatus_interval_s: 0\n")
    code, _, err = _run(
        ["gateway", "--config", str(path), "--log-format", "json"], tmp_path / "err"
    )
    assert code == EXIT_USAGE
    (line,) = err.splitlines()
    record = _record(line)
    problems = [
        f"{path}: key 'status_interval_s': Input should be greater than 0",
        f"{path}: key 'brokr': unknown key (did you mean 'broker'?)",
    ]
    assert record["problems"] == problems
    assert record["event"] == "config error: 2 problems: " + "; ".join(problems)


@pytest.mark.parametrize("daemon", list(DAEMONS))
def test_under_systemd_the_record_carries_priority_3(daemon: str, tmp_path: Path) -> None:
    # As the unit runs it: no --log-format (auto: JSON, stderr being the journal's stream).
    args, message = DAEMONS[daemon](tmp_path)
    code, _, err = _run(args, tmp_path / "err", journal=True)
    assert code == EXIT_USAGE, err
    (line,) = err.splitlines()
    found = re.fullmatch(r"<3>(\{.*\})", line)
    assert found, line
    record = _record(found.group(1))
    assert (record["event"], record["level"], record["logger"]) == (message, "error", "mesh.cli")


def test_console_logs_under_systemd_get_priority_3_too(tmp_path: Path) -> None:
    args, message = _gateway(tmp_path)
    code, _, err = _run([*args, "--log-format", "console"], tmp_path / "err", journal=True)
    assert code == EXIT_USAGE
    assert err == f"<3>error: {message}\n"


def test_console_logs_get_the_readable_line(tmp_path: Path) -> None:
    args, message = _gateway(tmp_path)
    code, _, err = _run([*args, "--log-format", "console"], tmp_path / "err")
    assert code == EXIT_USAGE
    assert err == f"error: {message}\n"


def test_on_a_terminal_it_stays_one_readable_line(tmp_path: Path) -> None:
    """``auto`` in a real terminal (a pseudo-terminal): not JSON, one line."""
    args, message = _gateway(tmp_path)
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "NO_COLOR")}
    proc = subprocess.Popen(
        [*CLI, *args], stdin=slave, stdout=slave, stderr=slave, env=env, cwd=REPO
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while True:  # until the terminal closes (EIO on Linux once the child is gone)
            assert time.monotonic() < deadline, b"".join(chunks)
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert proc.wait(30) == EXIT_USAGE
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = b"".join(chunks).decode()
    plain = re.sub(r"\x1b\[[0-9;]*m", "", text)  # bold red "error:"
    assert plain.splitlines() == [f"error: {message}"], text
    assert "\x1b[1;31merror:" in text  # in colour, as before


def test_a_one_shot_command_stays_readable_under_the_journal(tmp_path: Path) -> None:
    """A one-shot command logs readable lines: its fatal error is one, prefixed for the
    journal (a timer unit running `trigger-mesh log sync`, say)."""
    code, _, err = _run(
        ["log", "sync", str(tmp_path / "nope.db"), "--broker", "mqtt://127.0.0.1:1"],
        tmp_path / "err",
        journal=True,
    )
    assert code == EXIT_USAGE
    assert re.fullmatch(r"<3>error: [^\n]*nope\.db[^\n]*\n", err), err
