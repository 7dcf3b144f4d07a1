"""The exit statuses every command shares are the ones docs/cli.md lists, and the failures
that carry one use them (what the commands do: tests/integration/test_cli_broker_unreachable.py,
test_cli_first_contact.py)."""

from __future__ import annotations

import re
from pathlib import Path

from mesh.cli.errors import EXIT_BROKER_UNREACHABLE, EXIT_CODES, BrokerUnreachable, CliFailure

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_every_shared_exit_status_is_documented_once() -> None:
    section = DOC.read_text().split("## Exit statuses", 1)[1].split("\n## ", 1)[0]
    documented = [int(code) for code in re.findall(r"^\| (\d+) \|", section, re.MULTILINE)]
    assert documented == [row.code for row in EXIT_CODES]
    assert len(set(documented)) == len(documented)


def test_broker_unreachable_is_its_own_status() -> None:
    failure = BrokerUnreachable("127.0.0.1:1", "connection refused")
    assert isinstance(failure, CliFailure)
    assert failure.code == EXIT_BROKER_UNREACHABLE == 75
    assert str(failure) == "cannot reach the MQTT broker at 127.0.0.1:1: connection refused"
