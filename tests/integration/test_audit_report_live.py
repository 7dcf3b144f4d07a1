"""``trigger-mesh audit report`` beyond the unit tests (tests/unit/test_audit_report.py): the
command line without matplotlib in a fresh interpreter, and a report on a real mesh's log."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from bridge.mqtt.embedded import MosquittoProcess
from bridge.topics import Topics
from mesh.audit.report import build_report
from mesh.cli.app import app
from mesh.protocol.models import TriggerKind
from tests.harness import event, running_mesh
from tests.unit.test_audit_report import _csv


def test_only_the_report_command_loads_matplotlib() -> None:
    code = "import sys, mesh.cli.app, mesh.audit.report; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_report_on_a_log_from_a_real_mesh(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    log = tmp_path / "log.db"
    async with running_mesh(mosquitto.url, topics, log) as mesh:
        record = await mesh.activate(event(TriggerKind.WEAPON_DRAW))
    report = build_report(log)
    (timeline,) = report.timelines
    assert timeline.activation_id == record.activation_id
    assert timeline.state == "confirmed"
    assert report.overall.confirmation_rate == 1.0
    # Trigger -> ack covers the publish, so it is at least the gateway's publish -> ack.
    for outcome in record.cameras:
        camera = timeline.cameras[outcome.camera_id]
        assert outcome.latency_ms is not None
        ack_ms = timeline.ack_ms(camera)
        assert ack_ms is not None
        assert ack_ms >= outcome.latency_ms
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["audit", "report", str(log), "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = _csv(out / "cameras.csv")
    assert sorted(r["camera_id"] for r in rows) == ["bwc-12a", "bwc-7a", "dash-12"]
    assert {r["status"] for r in rows} == {"started"}
