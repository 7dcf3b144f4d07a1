"""How a command says why it stops (mesh.ops.logs.write_fatal, mesh.cli.errors.run_cli):
one record of the log pipeline when stderr gets JSON records, readable lines otherwise; a
crash of a command logging JSON is a critical record with its traceback. (The daemons, run
for real: tests/integration/test_fatal_errors_logged.py.)"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from mesh.cli.errors import EXIT_CRASH, BrokerUnreachable, run_cli
from mesh.ops import logs


@pytest.fixture(autouse=True)
def _restore_logs() -> Iterator[None]:
    yield
    logs.configure("console", "warning")  # as tests/conftest.py left it


def _records(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_readable_lines_without_json_logs(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("console", "warning")
    logs.write_fatal("cannot serve", code=2)
    logs.write_fatal(
        "config error", code=2, problems=["a.yaml: key 'x': bad", "a.yaml: key 'y': bad"]
    )
    assert capsys.readouterr().err == (
        "error: cannot serve\n"
        "error: config error: a.yaml: key 'x': bad\n"
        "error: config error: a.yaml: key 'y': bad\n"
    )


def test_control_characters_are_shown_never_sent(capsys: pytest.CaptureFixture[str]) -> None:
    # A problem may quote a file's key or a peer's words: ESC would drive the terminal.
    logs.configure("console", "warning")
    logs.write_fatal("config error", code=2, problems=["a.yaml: key '\x1b[2J\x9bx': bad"])
    assert capsys.readouterr().err == "error: config error: a.yaml: key '\\x1b[2J\\x9bx': bad\n"
    logs.configure("json", "info")
    logs.write_fatal("cannot serve \x1b[2J", code=2)
    err = capsys.readouterr().err
    assert "\x1b" not in err
    (record,) = _records(err)
    assert record["event"] == "cannot serve \x1b[2J"  # escaped by JSON, read back whole


def test_one_record_with_json_logs(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("json", "error")  # the highest level still lets it through
    logs.write_fatal("config error", code=2, problems=["a.yaml: key 'x': bad"])
    (record,) = _records(capsys.readouterr().err)
    assert record["event"] == "config error: a.yaml: key 'x': bad"
    assert (record["level"], record["logger"], record["exit_code"]) == ("error", "mesh.cli", 2)
    assert "problems" not in record  # one problem: the event says it


def test_json_logs_onto_another_stream_leave_stderr_readable(
    capsys: pytest.CaptureFixture[str],
) -> None:
    elsewhere = io.StringIO()
    logs.configure("json", "info", stream=elsewhere)
    logs.write_fatal("cannot serve", code=2)
    assert capsys.readouterr().err == "error: cannot serve\n"
    assert elsewhere.getvalue() == ""


def _boom() -> None:
    raise RuntimeError("boom")


def test_a_crash_with_json_logs_is_a_critical_record(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("json", "info")
    with pytest.raises(SystemExit) as stopped:
        run_cli(_boom)
    assert stopped.value.code == EXIT_CRASH == 1
    (record,) = _records(capsys.readouterr().err)
    assert record["event"] == "crashed: RuntimeError: boom"
    assert record["level"] == "critical"
    assert record["logger"] == "mesh.cli"
    assert "Traceback (most recent call last)" in record["exception"]
    assert 'raise RuntimeError("boom")' in record["exception"]


def test_a_crash_without_json_logs_is_left_to_python(capsys: pytest.CaptureFixture[str]) -> None:
    logs.configure("console", "info")
    with pytest.raises(RuntimeError, match="boom"):
        run_cli(_boom)
    assert capsys.readouterr().err == ""


def test_a_known_failure_with_json_logs_is_an_error_record(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def unreachable() -> None:
        raise BrokerUnreachable("127.0.0.1:1", "connection refused")

    logs.configure("json", "info")
    with pytest.raises(SystemExit) as stopped:
        run_cli(unreachable)
    assert stopped.value.code == 75
    (record,) = _records(capsys.readouterr().err)
    assert record["event"] == "cannot reach the MQTT broker at 127.0.0.1:1: connection refused"
    assert (record["level"], record["exit_code"]) == ("error", 75)
