"""The systemd units of deploy/systemd (issue 18 item 7): systemd's own checker accepts
them, they keep their hardening, and each ExecStart is a command line the real CLI takes."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mesh.cli.errors import EXIT_CODES, EXIT_USAGE
from mesh.extras import EXIT_MISSING_EXTRA
from tests.conftest import IN_CI

UNITS = Path(__file__).resolve().parents[2] / "deploy" / "systemd"
INSTALLED_AT = "/opt/trigger-mesh/venv/bin/trigger-mesh"
CLI = Path(sys.executable).parent / "trigger-mesh"
# What each service opens sockets for (comments in the units say why).
FAMILIES = {
    "trigger-mesh-gateway.service": "AF_UNIX AF_INET AF_INET6 AF_CAN AF_BLUETOOTH AF_NETLINK",
    "trigger-mesh-console.service": "AF_UNIX AF_INET AF_INET6",
    "trigger-mesh-archiver.service": "AF_UNIX AF_INET AF_INET6",
}
HARDENING = {
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "AmbientCapabilities": "",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes",
    "RestrictNamespaces": "yes",
    "RestrictSUIDSGID": "yes",
    "SystemCallFilter": "@system-service",
    "UMask": "0077",
    "Restart": "always",
}
# systemd-analyze security --offline=yes, 0 (best) to 10; "OK" is below 4.5.
MAX_EXPOSURE = 2.0


def _systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        message = "systemd-analyze is not installed (apt-get install -y systemd)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


def _service_section(unit: Path) -> dict[str, list[str]]:
    """Key -> every value of [Service] (a key may repeat, like LoadCredential)."""
    found: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def _installed_here(unit: Path, into: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's CLI (systemd-analyze verify
    checks that the program exists)."""
    copy = into / unit.name
    copy.write_text(unit.read_text().replace(INSTALLED_AT, str(CLI)))
    return copy


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_systemd_accepts_the_unit_and_rates_it_ok(name: str, tmp_path: Path) -> None:
    analyze = _systemd_analyze()
    unit = _installed_here(UNITS / name, tmp_path)
    # verify exits 0 even for an unknown key or value: it warns on stderr, so none may come.
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stderr) == (0, ""), done.stderr
    done = subprocess.run(
        [analyze, "security", "--offline=yes", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout)
    assert found is not None, done.stdout[-500:]
    assert float(found.group(1)) <= MAX_EXPOSURE, done.stdout[-2000:]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_the_unit_keeps_its_hardening(name: str) -> None:
    service = _service_section(UNITS / name)
    for key, value in HARDENING.items():
        assert service.get(key) == [value], f"{name}: {key}={service.get(key)}"
    assert service["RestrictAddressFamilies"] == [FAMILIES[name]]
    user = service["User"][0]
    assert user.startswith("trigger-mesh"), name
    assert service["Group"] == [user], name
    assert service["ExecStart"][0].startswith(INSTALLED_AT + " ")
    assert "--log-format json" in service["ExecStart"][0]


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_execstart_is_a_command_line_the_cli_takes(name: str, tmp_path: Path) -> None:
    (command,) = _service_section(UNITS / name)["ExecStart"]
    # systemd's specifiers: %d the credentials directory, %H the host name.
    argv = shlex.split(command.replace("%d", str(tmp_path)).replace("%H", "host-1"))
    assert argv[0] == INSTALLED_AT
    # --help after the options: click parses them all first, so an unknown one fails (2).
    done = subprocess.run(
        [str(CLI), *argv[1:], "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_every_shipped_unit_is_checked_here() -> None:
    assert sorted(FAMILIES) == sorted(p.name for p in UNITS.iterdir())


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_config_error_or_a_missing_extra_stops_the_restarts(name: str) -> None:
    # Restart=always would start a daemon with a bad config (2) or without its extra (69)
    # again every few seconds forever (StartLimitIntervalSec=0): a restart fixes neither.
    service = _service_section(UNITS / name)
    assert service["RestartPreventExitStatus"] == [f"{EXIT_USAGE} {EXIT_MISSING_EXTRA}"], name
    documented = {code.code: code.name for code in EXIT_CODES}
    assert (documented[EXIT_USAGE], documented[EXIT_MISSING_EXTRA]) == ("usage", "missing extra")


def test_the_console_takes_its_files_as_credentials() -> None:
    service = _service_section(UNITS / "trigger-mesh-console.service")
    credentials = {value.split(":", 1)[0] for value in service["LoadCredential"]}
    command = service["ExecStart"][0]
    for name in credentials:
        assert f"%d/{name}" in command
    assert {"users.yaml", "tls.crt", "tls.key"} == credentials


def test_the_archiver_takes_its_database_password_as_a_credential() -> None:
    """Never through the environment (tests/integration/test_archiver_pgpass.py runs it)."""
    service = _service_section(UNITS / "trigger-mesh-archiver.service")
    assert service["LoadCredential"] == ["pgpass:/etc/trigger-mesh/archiver.pgpass"]
    assert "PGPASSFILE=%d/pgpass" in service["Environment"]
