"""`trigger-mesh demo --central` (`make central`): the demo's car bridged to a real 3-node
NATS cluster, two archivers into the real PostgreSQL, a console on the cluster.

The archive is read here directly, not through the demo's own summary: every activation
the car logged is in it, with its final state and its cameras' acks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import psycopg

from tests.conftest import require_mosquitto
from tests.integration.test_cli import CLI, REPO, run


def _archived(dsn: str, activation_ids: list[str]) -> tuple[dict[str, str], int]:
    with psycopg.connect(dsn) as conn:
        states = dict(
            conn.execute(
                "SELECT activation_id, state FROM activations WHERE activation_id = ANY(%s)",
                (activation_ids,),
            ).fetchall()
        )
        (acks,) = conn.execute(
            "SELECT count(DISTINCT (activation_id, camera_id)) FROM acks "
            "WHERE activation_id = ANY(%s)",
            (activation_ids,),
        ).fetchone() or (0,)
    return states, int(acks)


def test_the_central_demo_archives_every_activation(postgres: str) -> None:
    require_mosquitto()
    result = run("demo", "--central", "--json", "--db", postgres, timeout=150)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True, summary["problems"]
    finals = {a["activation_id"]: a["state"] for a in summary["activations"]}
    assert len(finals) == 4
    states, acks = _archived(postgres, list(finals))
    assert states == finals
    # Every camera that started answered, and each answer reached the archive.
    assert acks >= sum(len(a["started"]) for a in summary["activations"])
    central = summary["central"]
    assert central["nodes"] == ["nats-1", "nats-2", "nats-3"]
    assert central["console_saw"] == finals
    # On the locked-down car broker the attacks still achieve nothing.
    assert summary["security"]["held"] is True


def test_ctrl_c_stops_the_whole_central_tier(postgres: str) -> None:
    """--stay: up until SIGINT; then the summary, exit 0, and no node or broker left."""
    require_mosquitto()
    proc = subprocess.Popen(
        [*CLI, "demo", "--central", "--stay", "--json", "--db", postgres],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        assert proc.stderr is not None
        said: list[str] = []
        for line in proc.stderr:  # ends when the process does: no hang if it dies
            said.append(line)
            if "running until Ctrl-C" in line:
                break
        assert any("running until Ctrl-C" in line for line in said), "".join(said)[-3000:]
        children = _children(proc.pid)
        assert {"nats-server", "mosquitto"} <= {name for _, name in children}, children
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["ok"] is True, summary["problems"]
    left = [(pid, name) for pid, name in children if Path(f"/proc/{pid}").exists()]
    assert left == []


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, name) of every process whose parent is ``pid``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        if ppid == pid:
            found.append((int(entry), name))
    return found
