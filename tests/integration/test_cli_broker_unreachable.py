"""An MQTT broker nobody can reach, met by every command that talks to one (docs/cli.md,
"Exit statuses"): a one-shot command says so in one line and exits 75; a daemon keeps
trying, with one warning per back-off step instead of one per link and attempt."""

from __future__ import annotations

import math
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bridge.mqtt.client import MIN_UNREACHABLE_WARNING_GAP_S, warning_due
from bridge.mqtt.embedded import free_port
from mesh.cli.errors import EXIT_BROKER_UNREACHABLE
from mesh.cli.reach import why_unreachable
from mesh.journal.store import ActivationLog

SCRIPT = str(Path(sys.executable).parent / "trigger-mesh")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dead_broker() -> str:
    """A loopback port nothing listens on (bound and released)."""
    return f"mqtt://127.0.0.1:{free_port()}"


def run(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, *args], capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd
    )


# Every one-shot command that needs the broker, with what else it needs to get that far.
ONE_SHOT = {
    "trigger": ["trigger", "--kind", "manual", "--unit", "car-1"],
    "tail": ["tail"],
    "tail --json": ["tail", "--json"],
    # A fleet logs JSON off a terminal, its fatal error too (test_fatal_errors_logged.py).
    "cameras": ["cameras", "--count", "2", "--log-format", "console"],
    "demo --broker": ["demo"],
    "conformance camera": ["conformance", "camera", "--camera-id", "bwc-1"],
    "conformance gateway": ["conformance", "gateway", "--unit", "car-1"],
    "log sync": ["log", "sync", "act.db", "--gateway", "gw-1", "--timeout", "5"],
    "audit replay --publish": ["audit", "replay", "act.db", "--publish"],
}


@pytest.mark.parametrize("command", list(ONE_SHOT))
def test_one_shot_command_is_one_line_and_exit_75(
    command: str, dead_broker: str, tmp_path: Path
) -> None:
    ActivationLog(tmp_path / "act.db").close()  # an empty log: log sync reads it first
    started = time.monotonic()
    result = run(*ONE_SHOT[command], "--broker", dead_broker, cwd=tmp_path)
    port = dead_broker.rsplit(":", 1)[1]
    assert result.returncode == EXIT_BROKER_UNREACHABLE, result.stderr
    assert result.stderr == (
        f"error: cannot reach the MQTT broker at 127.0.0.1:{port}: connection refused\n"
    )
    assert result.stdout == ""
    assert time.monotonic() - started < 30  # no waiting for a broker that is not there


@pytest.fixture
def silent_listener() -> Iterator[str]:
    """A TCP port that accepts connections and never says a word (not a broker: a
    mistyped port of some other service): the reachability check passes, MQTT does not."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"mqtt://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        server.close()
        for conn in held:
            conn.close()


def test_a_port_that_never_answers_mqtt_is_one_error_line_too(
    silent_listener: str, tmp_path: Path
) -> None:
    # The one MQTT CONNECT sent before the command starts (mesh/cli/reach.py) gets no answer.
    started = time.monotonic()
    result = run(
        "trigger", "--kind", "manual", "--unit", "car-1", "--broker", silent_listener, cwd=tmp_path
    )
    assert result.returncode == EXIT_BROKER_UNREACHABLE, result.stderr
    assert result.stderr == (
        f"error: cannot reach the MQTT broker at {silent_listener}: no MQTT answer within 5 s\n"
    )
    assert time.monotonic() - started < 30


# --- daemons wait, and say so once per back-off step -----------------------------------------
def _camera_config(tmp_path: Path, broker: str) -> Path:
    path = tmp_path / "camera.yaml"
    path.write_text(f"camera_id: bwc-1\nunit: car-1\nbroker: {broker}\n")
    return path


def _gateway_config(tmp_path: Path, broker: str) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"unit: car-1\nbroker: {broker}\nlog: {tmp_path / 'car-1.db'}\n")
    return path


@pytest.mark.parametrize("daemon", ["camera", "gateway"])
def test_daemon_keeps_trying_with_one_warning_per_back_off(
    daemon: str, dead_broker: str, tmp_path: Path
) -> None:
    config = (_camera_config if daemon == "camera" else _gateway_config)(tmp_path, dead_broker)
    started = time.monotonic()
    proc = subprocess.Popen(
        [SCRIPT, daemon, "--config", str(config), "--log-format", "json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
    )
    assert proc.stderr is not None
    lines: list[str] = []
    warned_twice = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if sum("cannot reach the MQTT broker" in seen for seen in lines) >= 2:
                warned_twice.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        # It keeps trying: a second warning comes, one back-off step later, and it runs on.
        assert warned_twice.wait(60), "".join(lines)
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        reader.join(10)
    elapsed = time.monotonic() - started
    err = "".join(lines)
    assert "Traceback" not in err
    warnings = [line for line in lines if "cannot reach the MQTT broker" in line]
    # Before: one warning per link (a camera has 3, a gateway 4) and attempt, ~25 in 12 s.
    assert 2 <= len(warnings) <= math.floor(elapsed / MIN_UNREACHABLE_WARNING_GAP_S) + 1
    assert not [line for line in lines if "mqtt connect failed" in line]


def test_warning_due() -> None:
    assert warning_due(None, 10.0, 1.0)
    assert not warning_due(10.0, 10.5, 1.0)
    assert warning_due(10.0, 11.0, 1.0)
    assert not warning_due(10.0, 13.0, 5.0)


def test_why_unreachable() -> None:
    assert why_unreachable(ConnectionRefusedError(111, "Connection refused"), 5) == (
        "connection refused"
    )
    assert why_unreachable(TimeoutError(), 5) == "no answer within 5 s"
    assert why_unreachable(socket.gaierror(-2, "Name or service not known"), 5) == (
        "unknown host (Name or service not known)"
    )
    assert why_unreachable(OSError(113, "No route to host"), 5) == "no route to host"


def test_an_unknown_host_is_one_line(tmp_path: Path) -> None:
    result = run("tail", "--broker", "mqtt://no-such-host.invalid:1883", cwd=tmp_path)
    assert result.returncode == EXIT_BROKER_UNREACHABLE
    assert result.stderr.startswith(
        "error: cannot reach the MQTT broker at no-such-host.invalid:1883: unknown host"
    )
    assert len(result.stderr.splitlines()) == 1
