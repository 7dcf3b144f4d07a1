"""Issue 18 items 8 and 9, through real commands in child processes: progress of
`audit report`, `log sync` and `archiver migrate` (JSON records on stderr when it is not
a terminal, a bar when it is: a pty), never on stdout; and `archiver verify` naming the
unit and the gateway of a demo log synced by hand (the log's own `started` record).

One demo log (`trigger-mesh demo --log`) serves the whole module.
"""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.archive.migrate import available
from mesh.journal.records import RecordKind, StartedEntry
from mesh.journal.store import log_id_of, read_records
from tests.integration.test_archive import running_archivers

PROGRESS_EVERY = {"TRIGGER_MESH_PROGRESS_S": "0"}  # a record on every step: no timing


def run(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = 120
) -> tuple[int, str, str]:
    """``trigger-mesh ARGS`` in a child process, stdout and stderr apart (both pipes)."""
    proc = subprocess.run(
        [sys.executable, "-m", "mesh", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


async def run_async(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """``run`` without blocking the event loop (an archiver runs in it)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mesh", *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200", **env},
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def progress_records(stderr: str, task: str) -> list[dict[str, object]]:
    records = []
    for line in stderr.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("event") == "progress" and record.get("task") == task:
                records.append(record)
    return records


@pytest.fixture(scope="module")
def demo_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    log = tmp_path_factory.mktemp("demo") / "demo.db"
    code, out, err = run("demo", "--log", str(log))
    assert code == 0, out + err
    return log


def _started(log: Path) -> StartedEntry:
    (record,) = [r for r in read_records(log) if r.kind == RecordKind.STARTED]
    return StartedEntry.model_validate_json(record.body)


# --- audit report -----------------------------------------------------------------------------
def test_report_progress_records_when_stderr_is_not_a_terminal(
    demo_log: Path, tmp_path: Path
) -> None:
    code, out, err = run(
        "audit", "report", str(demo_log), "--out", str(tmp_path / "r"), env=PROGRESS_EVERY
    )
    assert code == 0, err
    records = progress_records(err, "audit report")
    total = json.loads((tmp_path / "r" / "report.json").read_text())["activations"]
    assert total == sum(1 for r in read_records(demo_log) if r.kind == RecordKind.ACTIVATION)
    assert total >= 1
    # One per activation drawn (done 1..N of N), then the final one.
    assert [r["done"] for r in records] == [*range(1, total + 1), total]
    assert {r["total"] for r in records} == {total}
    assert records[-1]["final"] is True
    assert all(r["level"] == "info" and r["unit"] == "activations drawn" for r in records)
    rate = records[-1]["rate_per_s"]
    assert isinstance(rate, float)
    assert rate > 0
    # stdout carries the result only.
    assert '"event"' not in out
    assert out.startswith("wrote ")


def test_report_progress_is_one_final_record_by_default(demo_log: Path, tmp_path: Path) -> None:
    """The default interval (5 s) is longer than this report: no periodic record, the
    final one only (the time is measured, so the claim is checked, not assumed)."""
    started = time.monotonic()
    code, _, err = run("audit", "report", str(demo_log), "--out", str(tmp_path / "r"))
    elapsed = time.monotonic() - started
    assert code == 0, err
    records = progress_records(err, "audit report")
    if elapsed < 5.0:
        assert len(records) == 1
    assert records[-1]["final"] is True
    assert records[-1]["done"] == records[-1]["total"]


def test_report_draws_a_bar_on_a_terminal(demo_log: Path, tmp_path: Path) -> None:
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mesh", "audit", "report", str(demo_log), "--out", str(tmp_path)],
        stdin=secondary,
        stdout=subprocess.PIPE,
        stderr=secondary,
        env={**os.environ, "TERM": "xterm-256color", "COLUMNS": "120", **PROGRESS_EVERY},
    )
    os.close(secondary)
    screen = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([primary], [], [], deadline - time.monotonic())
        if not ready:
            break
        try:
            chunk = os.read(primary, 65536)
        except OSError:  # the child closed the terminal (Linux: EIO)
            break
        if not chunk:
            break
        screen += chunk
    os.close(primary)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    assert proc.wait(30) == 0
    text = screen.decode(errors="replace")
    total = sum(1 for r in read_records(demo_log) if r.kind == RecordKind.ACTIVATION)
    assert "audit report" in text
    assert "━" in text  # rich's bar
    assert f"{total}/{total}" in text
    assert "100%" in text
    assert '"event": "progress"' not in text  # a bar, not log records
    assert "━" not in out
    assert out.startswith("wrote ")


# --- log sync and archiver verify --------------------------------------------------------------
async def test_log_sync_progress_and_verify_names_unit_and_gateway(
    demo_log: Path, mosquitto: MosquittoProcess, topics: Topics, postgres: str
) -> None:
    log_id = log_id_of(demo_log)
    records = len(list(read_records(demo_log)))
    async with running_archivers(mosquitto.url, topics, postgres, names=("arch-p",)):
        # By hand, without --unit or --gateway: as the issue found it.
        code, out, err = await run_async(
            "log", "sync", str(demo_log), "--broker", str(mosquitto.url),
            "--prefix", topics.prefix, "--timeout", "30",
            env=PROGRESS_EVERY,
        )  # fmt: skip
    assert code == 0, err
    assert out == ""  # log sync writes nothing to stdout
    sync = progress_records(err, "log sync")
    assert sync[0]["done"] == 0
    assert {r["total"] for r in sync} == {records}
    assert [r["done"] for r in sync] == sorted(r["done"] for r in sync)
    assert sync[-1]["final"] is True
    assert sync[-1]["done"] == records

    started = _started(demo_log)
    code, out, err = run("archiver", "verify", "--log-id", log_id, "--db", postgres)
    assert code == 0, out + err
    assert f"archived from unit {started.unit_id} (gateway {started.gateway_id})" in out
    assert "?" not in out.split("archived from", 1)[1].split(":", 1)[0]


# --- archiver migrate --------------------------------------------------------------------------
def test_migrate_progress(postgres: str) -> None:
    code, out, err = run("archiver", "migrate", "--db", postgres, env=PROGRESS_EVERY)
    assert code == 0, err
    migrations = len(available())
    records = progress_records(err, "archiver migrate")
    assert [r["done"] for r in records] == [*range(migrations + 1), migrations]
    assert {r["total"] for r in records} == {migrations}
    assert out == "applied migrations " + ", ".join(f"{m.version:03d}" for m in available()) + "\n"
    # Nothing left to do: one record, 0 of 0.
    code, out, err = run("archiver", "migrate", "--db", postgres, env=PROGRESS_EVERY)
    assert code == 0, err
    assert [(r["done"], r["total"]) for r in progress_records(err, "archiver migrate")] == [
        (0, 0),
        (0, 0),
    ]
    assert "up to date" in out
