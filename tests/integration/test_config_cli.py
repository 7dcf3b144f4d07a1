"""A bad configuration file, given to the command line in a process of its own: exit 2, and
the message names the file, the key and the problem (tests/unit/test_config.py: the loaders)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.unit.test_config import write


def test_cli_exits_2_naming_file_key_and_problem(tmp_path: Path) -> None:
    path = write(tmp_path, "unit: car-1\nbroker: ftp://nowhere\n")
    result = subprocess.run(
        [sys.executable, "-m", "mesh", "gateway", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert str(path) in message
    assert "key 'broker'" in message
    assert "scheme must be mqtt" in message
