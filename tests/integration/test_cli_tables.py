"""Tables fit the terminal without cutting ids (docs/cli.md, "Tables"): ``tail`` and
``trigger`` run in a real pseudo-terminal of 60 and 120 columns, and piped; every id
appears whole. The column choice itself: tests/unit/test_columns.py."""

from __future__ import annotations

import asyncio
import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.protocol.models import ActivationRecord
from tests.integration.test_cli import _retained, daemon

SCRIPT = str(Path(sys.executable).parent / "trigger-mesh")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


class Terminal:
    """A command in a pseudo-terminal of a given size: what a user's terminal shows."""

    def __init__(self, args: list[str], columns: int) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
        env = {**os.environ, "COLUMNS": str(columns), "LINES": "50", "TERM": "xterm"}
        self.proc = subprocess.Popen(
            [SCRIPT, *args], stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True
        )
        os.close(slave)
        self.text = ""

    def read_until(self, wanted: str, timeout_s: float) -> bool:
        """Read what it shows until ``wanted`` appears (True) or the time is up."""
        deadline = time.monotonic() + timeout_s
        while wanted not in self.screen and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.master], [], [], left)
            if not ready:
                break
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the command ended: the terminal is closed
                break
            if not chunk:
                break
            self.text += chunk.decode(errors="replace")
        return wanted in self.screen

    @property
    def screen(self) -> str:
        return ANSI.sub("", self.text)

    def close(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(15)
        finally:
            os.close(self.master)
        return code


def table_rows(text: str) -> list[list[str]]:
    """The cells of every table body row (│ a │ b │) in ``text``."""
    return [
        [cell.strip() for cell in line.strip().strip("│").split("│")]
        for line in text.splitlines()
        if line.strip().startswith("│")
    ]


@pytest.fixture
def mesh(mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path) -> Iterator[list[str]]:
    """A gateway for car-12 and nine cameras around it; the broker and prefix options."""
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"unit: car-12\nbroker: {mosquitto.url}\ntopic_prefix: {topics.prefix}\n"
        f"log: {tmp_path / 'car-12.db'}\nposition: {{lat: 39.952583, lon: -75.165222}}\n"
    )
    common = ["--broker", str(mosquitto.url), "--prefix", topics.prefix]
    with (
        daemon("gateway", "--config", str(config), "--log-format", "json"),
        daemon("cameras", "--count", "9", "--spread-m", "100", "--unit-prefix", "car", *common),
    ):
        asyncio.run(_retained(mosquitto, topics, online_gateway="gw-car-12", cameras=9))
        yield common


def trigger(common: list[str], source: str, *extra: str) -> list[str]:
    # A source of its own per call: a new activation, not one merged into the last.
    return ["trigger", "--kind", "manual", "--unit", "car-12", "--source", source,
            "--lat", "39.952583", "--lon", "-75.165222", *common, *extra]  # fmt: skip


def activation_id(common: list[str], source: str) -> str:
    result = subprocess.run(
        [SCRIPT, *trigger(common, source, "--json")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return ActivationRecord.model_validate_json(result.stdout.splitlines()[-1]).activation_id


@contextmanager
def terminal(args: list[str], columns: int) -> Iterator[Terminal]:
    term = Terminal(args, columns)
    try:
        yield term
    finally:
        term.close()


@pytest.mark.parametrize("columns", [60, 120])
def test_tail_in_a_terminal_shows_whole_activation_ids(mesh: list[str], columns: int) -> None:
    with terminal(["tail", *mesh], columns) as term:
        assert term.read_until("Ctrl-C to stop", 30), term.screen
        aid = activation_id(mesh, f"cli:tail-{columns}")
        assert term.read_until(f"│ {aid} │", 30), term.screen[-3000:]
        screen = term.screen
    rows = [row for row in table_rows(screen) if aid in row]
    assert rows
    assert all(len(line) <= columns for line in screen.splitlines() if "│" in line)
    if columns == 60:  # some columns do not fit: the caption says which, and how to see them
        assert "(--wide shows all)" in " ".join(screen.split())


def test_tail_piped_prints_every_column_whole(mesh: list[str]) -> None:
    proc = subprocess.Popen(
        [SCRIPT, "tail", *mesh],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "60"},
    )  # fmt: skip
    try:
        time.sleep(1)  # let it subscribe: an activation it did not see is not shown
        aid = activation_id(mesh, "cli:tail-piped")
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    rows = [row for row in table_rows(out) if aid in row]
    assert rows, out + err
    assert len(rows[-1]) == 14  # every column, even with COLUMNS=60
    assert "not shown" not in out


@pytest.mark.parametrize("columns", [60, 120])
def test_trigger_in_a_terminal_shows_whole_camera_ids(mesh: list[str], columns: int) -> None:
    with terminal(trigger(mesh, f"cli:trigger-{columns}"), columns) as term:
        assert term.read_until("all acks in", 60), term.screen
        assert term.proc.wait(30) == 0, term.screen
        term.read_until("never shown", 0.5)  # the rest of what it wrote
        screen = term.screen
    rows = table_rows(screen)
    cameras = [row[0] for row in rows if row[0]]  # a wrapped "why" continues on rows of its own
    assert len(cameras) >= 3
    # The fleet's ids (bwc-1-2, dash-3), whole: no ellipsis, nothing folded onto a next line.
    assert all(re.fullmatch(r"(bwc|dash)-\d+(-\d+)?( \(not expected\))?", c) for c in cameras)
    assert all(len(line) <= columns for line in screen.splitlines() if "│" in line)


def test_wide_shows_every_column_in_a_narrow_terminal(mesh: list[str]) -> None:
    with terminal(["tail", "--wide", *mesh], 60) as term:
        assert term.read_until("Ctrl-C to stop", 30), term.screen
        aid = activation_id(mesh, "cli:tail-wide")
        assert term.read_until("all acks ms", 30), term.screen[-3000:]
        assert term.read_until(aid, 30)
        screen = term.screen
    assert "not shown" not in screen
