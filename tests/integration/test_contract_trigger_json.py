"""`trigger-mesh trigger --json` prints one JSON object for a merged trigger too, run as a
user runs it against a real gateway over a real mosquitto (issue 17 item 3).

README: `--json` prints the final record. A merged trigger has no activation of its own:
while the activation it joined is pending, its final record is still to come and is what
`--json` prints; once that activation has finished, its record went out before this
trigger and is not retained, so `--json` prints the gateway's receipt (as for a refused
trigger, which has no record either).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from bridge.mqtt.embedded import MosquittoProcess
from bridge.mqtt.urls import BrokerUrl
from bridge.topics import Topics
from mesh.decide.policy import Policy
from mesh.protocol.codec import encode
from mesh.protocol.models import (
    AckStatus,
    ActivationRecord,
    ActivationState,
    CameraAck,
    ReceiptOutcome,
    TriggerKind,
    TriggerReceipt,
    TriggerSummary,
)
from tests.harness import UNIT, Mesh, event, ghost, running_mesh, wait_until

REPO = Path(__file__).resolve().parents[2]
SOURCE = "holster-7"  # the CLI's trigger and the first one share (unit, kind, source)

# Slow retries: the first activation stays pending until the test answers for its camera.
PATIENT = Policy.model_validate({"defaults": {"ack_deadline_ms": 5000, "max_retries": 3}})


async def trigger_cli(mesh: Mesh, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        *(sys.executable, "-m", "mesh", "trigger"),
        *("--kind", "weapon_draw", "--unit", UNIT, "--source", SOURCE, "--json"),
        *("--broker", str(mesh.url), "--prefix", mesh.topics.prefix, *args),
    ]
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=60, cwd=REPO
    )


def json_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, f"stdout: {result.stdout!r}; stderr: {result.stderr[-2000:]}"
    return lines[0]


async def test_a_trigger_merged_into_a_pending_activation_prints_its_final_record(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db", policy=PATIENT) as mesh:
        await ghost(mesh, "bwc-silent", 50, online=True, offline_s=0)
        first = event(TriggerKind.WEAPON_DRAW, source_id=SOURCE)
        await mesh.send(first)
        receipt = await mesh.receipt(first)
        assert receipt.outcome is ReceiptOutcome.ACCEPTED
        aid = receipt.activation_id
        assert aid is not None
        cli = asyncio.create_task(trigger_cli(mesh))
        counters = mesh.gateway.coordinator.counters
        await wait_until(lambda: counters["triggers.suppressed"] == 1, 30)
        assert aid in mesh.gateway.coordinator.live  # merged while it was pending
        # The silent camera answers at last: the activation finishes, confirmed.
        ack = CameraAck(
            activation_id=aid,
            camera_id="bwc-silent",
            unit_id="car-7",
            status=AckStatus.STARTED,
            received_at_ns=time.time_ns(),
        )
        await mesh.driver.publish(
            topics.ack(mesh.gateway.settings.issuer, "bwc-silent"), encode(ack)
        )
        result = await cli
    assert result.returncode == 0, result.stdout + result.stderr
    record = ActivationRecord.model_validate_json(json_line(result))
    assert record.activation_id == aid
    assert record.state is ActivationState.CONFIRMED
    assert record.merged_triggers == 1
    assert "merged into activation" in result.stderr  # the words go to stderr


async def test_a_trigger_merged_into_a_finished_activation_prints_the_receipt(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db") as mesh:
        record = await mesh.activate(event(TriggerKind.WEAPON_DRAW, source_id=SOURCE))
        assert record.state is ActivationState.CONFIRMED
        result = await trigger_cli(mesh)
    assert result.returncode == 0, result.stdout + result.stderr
    receipt = TriggerReceipt.model_validate_json(json_line(result))
    assert receipt.outcome is ReceiptOutcome.SUPPRESSED
    assert receipt.activation_id == record.activation_id
    assert receipt.activation_pending is False


async def test_a_refused_trigger_prints_the_receipt(
    mosquitto: MosquittoProcess, topics: Topics, tmp_path: Path
) -> None:
    disabled = Policy.model_validate({"kinds": {"weapon_draw": {"enabled": False}}})
    async with running_mesh(mosquitto.url, topics, tmp_path / "log.db", policy=disabled) as mesh:
        result = await trigger_cli(mesh)
    assert result.returncode == 3, result.stdout + result.stderr
    receipt = TriggerReceipt.model_validate_json(json_line(result))
    assert receipt.outcome is ReceiptOutcome.REJECTED
    assert "disabled" in receipt.reason


async def test_a_resend_answered_as_its_own_repeat_reports_its_own_outcome(
    topics: Topics, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CLI sends a trigger again until a receipt comes; if the receipt of the repeat
    comes first (the command's publish was slow), it names the trigger's own activation:
    that is no merge, and the outcome decides the exit status."""
    from mesh.cli.app import _report
    from mesh.cli.common import EXIT_NOT_CONFIRMED
    from mesh.decide.admission import activation_id_for
    from mesh.dispatch.watch import ActivationWatcher

    mine = event(TriggerKind.WEAPON_DRAW, source_id=SOURCE)
    aid = activation_id_for(mine.event_id)
    # Not connected: the final record is already in it, as if heard before the receipt.
    watcher = ActivationWatcher(
        BrokerUrl.parse("mqtt://127.0.0.1:1"), topics, client_id="t-own-repeat"
    )
    record = ActivationRecord(
        activation_id=aid,
        issuer="gw-car-12",
        unit_id=UNIT,
        trigger=TriggerSummary.of(mine),
        state=ActivationState.PARTIAL,
        decided_at_ns=mine.observed_at_ns,
        expires_at_ns=mine.observed_at_ns + 30 * 10**9,
        origin=None,
        radius_m=150,
        pre_event_s=60,
    )
    watcher.records[aid] = record
    repeat = TriggerReceipt(
        event_id=mine.event_id,
        unit_id=UNIT,
        outcome=ReceiptOutcome.SUPPRESSED,
        activation_id=aid,
        reason="duplicate delivery of the same trigger event",
        at_ns=time.time_ns(),
        activation_pending=True,
    )
    code = await _report(watcher, mine, repeat, Console(stderr=True), True, 1.0)
    assert code == EXIT_NOT_CONFIRMED  # its own activation was partial: not "merged", 0
    assert ActivationRecord.model_validate_json(capsys.readouterr().out) == record
