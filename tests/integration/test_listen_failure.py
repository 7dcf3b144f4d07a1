"""A daemon that cannot listen where it was told (docs/cli.md, "Exit statuses"): a port
another process holds, or an address the machine does not have (yet), may be fine a moment
later, so it exits 75 and its systemd unit restarts it; an address it can never listen on
is a usage error, 2, and the unit stays failed (RestartPreventExitStatus=2 69)."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.cli.errors import EXIT_TEMPFAIL, EXIT_USAGE
from mesh.dispatch.console.auth import Role, add_user
from tests.integration.test_cli import CLI, REPO

# Nothing listens there: the daemons must fail on their port before they need a broker.
NO_BROKER = "mqtt://127.0.0.1:1"


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def _run(args: list[str]) -> tuple[int, str]:
    result = subprocess.run(
        [*CLI, *args, "--broker", NO_BROKER, "--log-format", "console"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=False,
    )
    return result.returncode, result.stderr


def _console(tmp_path: Path, host: str, port: int) -> list[str]:
    users = tmp_path / "users.yaml"
    add_user(users, "dana", Role.DISPATCHER, "a long enough password")
    return ["dispatch", "--users", str(users), "--host", host, "--port", str(port)]


def test_a_gateway_whose_metrics_port_is_taken_exits_75(tmp_path: Path, taken_port: int) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(f"unit: car-1\nlog: {tmp_path / 'car-1.db'}\n")
    code, err = _run(["gateway", "--config", str(config), "--metrics-port", str(taken_port)])
    assert (code, err) == (
        EXIT_TEMPFAIL,
        f"error: cannot serve /metrics and /health: cannot listen on 127.0.0.1:{taken_port}: "
        "Address already in use\n",
    )
    assert not (tmp_path / "car-1.db").exists()  # stopped before the log was opened


def test_a_console_whose_port_is_taken_exits_75(tmp_path: Path, taken_port: int) -> None:
    code, err = _run(_console(tmp_path, "127.0.0.1", taken_port))
    assert (code, err) == (
        EXIT_TEMPFAIL,
        f"error: cannot serve on 127.0.0.1:{taken_port}: Address already in use\n",
    )


def test_a_console_on_an_address_not_yet_this_machines_exits_75(tmp_path: Path) -> None:
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never a local address, as an interface not yet up.
    code, err = _run(_console(tmp_path, "192.0.2.1", 0))
    assert (code, err) == (
        EXIT_TEMPFAIL,
        "error: cannot serve on 192.0.2.1:0: Cannot assign requested address\n",
    )


def test_an_address_that_can_never_be_listened_on_is_a_usage_error(tmp_path: Path) -> None:
    code, err = _run(_console(tmp_path, "999.1.1.1", 0))
    assert code == EXIT_USAGE, err
    assert err.startswith("error: cannot serve on 999.1.1.1:0: "), err
