"""One log pipeline (docs/observability.md, "Logs"): the real ``trigger-mesh dispatch``
process, whose stderr holds our records and uvicorn's (a standard-library logger) in one
format, each with its logger name; under systemd (``$JOURNAL_STREAM`` naming stderr) each
line starts with its syslog priority."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from bridge.mqtt.embedded import MosquittoProcess, free_port
from bridge.topics import Topics
from mesh.dispatch.console.auth import Role, add_user
from mesh.ops.logs import journal_stream_matches, syslog_priority
from tests.integration.test_cli import CLI, REPO

PRIORITY = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}


def _healthz(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def run_console(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path, *, journal: bool
) -> str:
    """Runs the console with stderr in a file, sends it a request that is not HTTP (uvicorn
    logs a warning), stops it; returns what it wrote to stderr."""
    users = tmp_path / "users.yaml"
    add_user(users, "ana", Role.DISPATCHER, "a long enough password")
    port = free_port()
    err_path = tmp_path / "stderr.log"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with err_path.open("w") as err:
        if journal:  # as systemd sets it: the device and inode of the stream it gave us
            st = os.fstat(err.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        proc = subprocess.Popen(
            [
                *CLI,
                "dispatch",
                "--users",
                str(users),
                "--broker",
                str(mosquitto.url),
                "--prefix",
                topics.prefix,
                "--port",
                str(port),
                "--log-format",
                "json",
                "--log-level",
                "info",
            ],
            stdout=subprocess.DEVNULL,
            stderr=err,
            cwd=REPO,
            env=env,
        )
        try:
            deadline = time.monotonic() + 20
            while not _healthz(port):
                assert proc.poll() is None, err_path.read_text()
                assert time.monotonic() < deadline, "the console did not come up"
                time.sleep(0.1)
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"\x16\x03\x01 not http at all\r\n\r\n")
                sock.recv(1024)  # uvicorn answers 400 and closes
        finally:
            proc.send_signal(signal.SIGINT)
            proc.wait(15)
    return err_path.read_text()


def records(text: str, *, prefixed: bool) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        priority, body = None, line
        if prefixed:
            found = re.fullmatch(r"<([0-7])>(\{.*\})", line)
            assert found, f"not a <N>-prefixed JSON line: {line!r}"
            priority, body = int(found.group(1)), found.group(2)
        record = json.loads(body)  # raises on a line that is not JSON
        assert isinstance(record, dict), line
        assert {"event", "logger", "level", "timestamp"} <= set(record), line
        if prefixed:
            assert priority == PRIORITY[record["level"]], line
        out.append(record)
    return out


def test_every_stderr_line_is_json_with_its_logger_ours_and_uvicorns(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    text = run_console(mosquitto, topics, tmp_path, journal=False)
    found = records(text, prefixed=False)
    assert not text.startswith("<")
    loggers = {(r["logger"], r["level"]) for r in found}
    assert ("uvicorn.error", "warning") in loggers, text
    assert any(name.startswith("mesh.") for name, _ in loggers), text


def test_under_systemd_every_line_carries_its_syslog_priority(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    text = run_console(mosquitto, topics, tmp_path, journal=True)
    found = records(text, prefixed=True)
    levels = {r["level"] for r in found}
    assert {"info", "warning"} <= levels, text  # <6> and <4> both seen
    assert text.startswith("<6>") or text.startswith("<4>")


def test_journal_stream_must_name_this_very_stream() -> None:
    assert journal_stream_matches("2049:1234", 2049, 1234)
    assert not journal_stream_matches("2049:1234", 2049, 1235)  # inherited, not ours
    assert not journal_stream_matches("2049:1234", 7, 1234)
    for junk in (None, "", "2049", "a:b", "2049:", ":1234", "1:2:3"):
        assert not journal_stream_matches(junk, 2049, 1234)
    assert [syslog_priority(n) for n in (10, 20, 30, 40, 50)] == [7, 6, 4, 3, 2]
    assert syslog_priority(logging.WARNING + 5) == 4
