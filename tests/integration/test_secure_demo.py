"""`trigger-mesh demo --secure`: the whole scenario on a broker run with exactly what
`broker-config` writes (TLS, client certificates, ACL), every command and ack signed,
then the attacks of docs/security.md, each of which must achieve nothing."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tests.conftest import require_mosquitto
from tests.integration.test_cli import run


def _tamper_first_ack(log: Path) -> None:
    """What someone with the file would do: change an ack's status, bypassing the
    append-only triggers."""
    conn = sqlite3.connect(log)
    conn.execute("DROP TRIGGER records_append_only_update")
    seq, body = conn.execute(
        "SELECT seq, body FROM records WHERE kind = 'ack' ORDER BY seq LIMIT 1"
    ).fetchone()
    conn.execute(
        "UPDATE records SET body = ? WHERE seq = ?",
        (body.replace('"status":"started"', '"status":"rejected"'), seq),
    )
    conn.commit()
    conn.close()


def test_demo_secure_holds_against_every_attack(tmp_path: Path) -> None:
    require_mosquitto()
    log = tmp_path / "secure.db"
    result = run("demo", "--secure", "--json", "--log", str(log), timeout=90)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True, summary["problems"]
    # The scenario itself ran as it does on the open broker.
    assert [(a["kind"], a["source"]) for a in summary["activations"]] == [
        ("emergency_lights", "can"),
        ("weapon_draw", "ble"),
        ("taser_arm", "ble"),
        ("manual", "manual"),
    ]
    assert all(a["missed"] == [] for a in summary["activations"])
    # Spoofed and replayed BLE adverts: rejected, nothing started.
    assert summary["replay"]["rejected"] > 0
    assert summary["replay"]["activations"] == 0
    attacks = summary["security"]
    assert attacks["held"] is True
    assert attacks["no_certificate_connected"] is False  # a rogue client without a cert
    # A stolen camera's credentials: its own ack topic works, the rest is dropped.
    assert attacks["allowed_probe_arrived"] is True
    assert attacks["stolen_camera_commands_delivered"] == 0
    assert attacks["stolen_camera_forged_acks_delivered"] == 0
    # The gateway's broker credentials without its signing key: every camera that got
    # the unsigned command refused it and said so.
    assert attacks["unsigned_commands_obeyed"] == 0
    assert attacks["unsigned_commands_refused"] == [
        "bwc-12a:unsigned",
        "bwc-12b:unsigned",
        "dash-12:unsigned",
    ]
    # A genuine signed command captured off the wire and replayed on every topic.
    assert attacks["replay_handled_by_cameras"] > 0
    assert attacks["replayed_new_recordings"] == 0
    # A tampered log: the chain the demo verified is broken by one changed ack.
    assert summary["audit"]["verified"] is True
    _tamper_first_ack(log)
    verdict = run("audit", "verify", str(log))
    assert verdict.returncode == 1, verdict.stdout
    assert "modified" in verdict.stdout
