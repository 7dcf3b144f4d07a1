"""Logs written by v1 gateways still verify and replay under protocol v2 (docs/protocol.md,
"From v1 to v2"). tests/data/v1/ holds two real v1 logs: `trigger-mesh demo --log` and
`demo --secure --log` (signed checkpoints, signed acks) run at commit 01037d0, the last
v1 code, then VACUUMed (which rewrites pages, never rows). Their bodies have integer
times, "v": 1 and v1 `sig` objects; the chain hashes are over the stored text."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

V1_LOGS = Path(__file__).resolve().parents[1] / "data" / "v1"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesh", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(params=["demo.db", "secure-demo.db"])
def v1_log(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    copy = tmp_path / str(request.param)
    shutil.copyfile(V1_LOGS / str(request.param), copy)
    return copy


def test_the_fixtures_are_v1_logs(v1_log: Path) -> None:
    with sqlite3.connect(v1_log) as db:
        body = db.execute("SELECT body FROM records WHERE kind = 'ack' LIMIT 1").fetchone()[0]
    assert '"v":1' in body
    assert '"received_at_ns":17' in body  # an integer time, as v1 wrote it


def test_a_v1_log_verifies(v1_log: Path) -> None:
    done = _cli("audit", "verify", str(v1_log))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "consistent, every record signed" in done.stdout  # no key pinned: not intact


def test_a_v1_log_replays_every_decision(v1_log: Path) -> None:
    done = _cli("audit", "replay", str(v1_log))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every decision reproduced" in done.stdout


def test_a_v1_log_is_still_tamper_evident(v1_log: Path) -> None:
    """Read by v2 code, a changed v1 record is still named (the insider drops the log's
    append-only trigger first, as anyone with the file can)."""
    with sqlite3.connect(v1_log) as db:
        db.execute("DROP TRIGGER records_append_only_update")
        seq, body = db.execute(
            "SELECT seq, body FROM records WHERE kind = 'ack' ORDER BY seq LIMIT 1"
        ).fetchone()
        db.execute(
            "UPDATE records SET body = ? WHERE seq = ?",
            (body.replace('"status":"started"', '"status":"rejected"'), seq),
        )
    done = _cli("audit", "verify", str(v1_log))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "modified" in done.stdout + done.stderr
