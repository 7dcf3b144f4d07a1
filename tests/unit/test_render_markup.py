"""Text off the wire or out of a log is printed as it is, never read by rich as markup or
emoji codes (mesh.dispatch.literal).

rich reads ``[red]``, ``[/]`` and ``[link=…]`` in a plain string as markup, and
``:police_car:`` as an emoji. A camera's reason is free text: ``[/]`` in it raised rich's
MarkupError and ended the command, ``[red]…[/red]`` and ``[link=…]`` restyled it or put
a link on the screen. Ids are restricted to ``A-Z a-z 0-9 . _ : -``, so no brackets, but
``bwc:police_car:7`` is a valid camera id that rich showed as ``bwc🚓7``. The logs here are
written by the gateway's real Coordinator (tests/coordinator_helpers.py) with a real
activation log; the edits are an insider's, in sqlite3. The same over a real broker, with
the commands run as processes: tests/integration/test_cli_wire_markup.py.
"""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from mesh.cli.app import app
from mesh.dispatch.literal import literal
from mesh.dispatch.render import activation_table, camera_outcomes_table
from mesh.journal.signer import CheckpointSigner
from mesh.journal.store import ActivationLog, read_records
from mesh.protocol.models import AckStatus, ActivationRecord, OutcomeStatus, ReceiptOutcome
from mesh.security.keys import new_gateway_key
from tests.coordinator_helpers import camera, policy, running_coordinator
from tests.harness import event
from tests.unit.test_audit_tamper import forged, rewrite, rows_of

runner = CliRunner()
# A camera's reason, as hostile as the 512 characters allow: markup that closes nothing,
# colours, a link, and ESC, which starts a terminal's own escape sequences.
HOSTILE = "[/] [red]x[/red] [link=http://evil]click[/link] [bold red]FORGED[/]"
ESCAPE = "\x1b[2J"
# A valid camera id (Ident) that rich showed as "bwc🚓7".
EMOJI_ID = "bwc:police_car:7"
QUICK = policy(ack_deadline_ms=30, max_retries=0, command_ttl_s=10)


async def _activation(log: Path) -> ActivationRecord:
    """One activation by the real Coordinator: the camera ``EMOJI_ID`` starts, ``bwc-9``
    says it is out of range with the hostile reason (logged, and in the final record)."""
    cameras = [camera(EMOJI_ID), camera("bwc-9", north_m=40)]
    async with running_coordinator(log, cameras, QUICK) as rig:
        rig.publisher.answer(EMOJI_ID)
        rig.publisher.answer("bwc-9", AckStatus.OUT_OF_RANGE, reason=HOSTILE + ESCAPE)
        receipt = await rig.coordinator.submit(event())
        assert receipt.outcome is ReceiptOutcome.ACCEPTED, receipt
        aid = receipt.activation_id
        assert aid is not None
        await rig.publisher.wait_for(lambda: aid in rig.publisher.finals)
        await rig.coordinator.tasks.wait(5)
        return rig.publisher.final_record(aid)


def _rendered(table: object) -> str:
    # A console as rich makes it by default, markup and emoji on: the cells alone must
    # keep the text as it is, whatever console draws them.
    out = io.StringIO()
    Console(file=out, width=400, color_system=None).print(table)
    return out.getvalue()


def _completed(result: object) -> None:
    """The command ended by its own exit status, not by an exception (MarkupError)."""
    exception = getattr(result, "exception", None)
    assert exception is None or isinstance(exception, SystemExit), repr(exception)


async def test_the_trigger_and_tail_tables_show_wire_text_as_it_is(tmp_path: Path) -> None:
    record = await _activation(tmp_path / "log.db")
    why = {c.camera_id: c for c in record.cameras}["bwc-9"]
    assert why.status is OutcomeStatus.OUT_OF_RANGE
    assert why.detail == HOSTILE + ESCAPE  # what the camera said, kept by the gateway

    cameras = _rendered(camera_outcomes_table(record))
    assert HOSTILE in cameras
    assert EMOJI_ID in cameras
    assert "\\x1b[2J" in cameras  # ESC shown, not sent to the terminal
    assert "\x1b" not in cameras
    assert "🚓" not in cameras
    assert f"Cameras for {record.activation_id}" in cameras

    activations = _rendered(activation_table([record]))
    assert record.activation_id in activations


def test_literal_keeps_our_styles_and_nothing_else() -> None:
    text = literal(("refused:", "bold red"), " ", HOSTILE, " ", EMOJI_ID)
    assert text.plain == f"refused: {HOSTILE} {EMOJI_ID}"
    assert [(s.start, s.end, str(s.style)) for s in text.spans] == [(0, 8, "bold red")]


async def test_audit_replay_names_a_camera_by_its_id(tmp_path: Path) -> None:
    log = tmp_path / "log.db"
    await _activation(log)
    smaller = tmp_path / "policy.yaml"  # 10 m: the cameras 20 and 40 m away drop out
    smaller.write_text("kinds:\n  weapon_draw:\n    radius_m: 10\n")
    result = runner.invoke(app, ["audit", "replay", str(log), "--policy", str(smaller)])
    _completed(result)
    assert result.exit_code == 1, result.output  # the decisions differ, as they should
    assert f"camera {EMOJI_ID}: logged expected" in result.output
    assert "🚓" not in result.output


@pytest.fixture
async def signed_log(tmp_path: Path) -> tuple[Path, Path]:
    """The Coordinator's log, closed by a gateway holding the key (its checkpoint); the
    log and the gateway's public key."""
    log = tmp_path / "log.db"
    keys = new_gateway_key(tmp_path / "keys", "gw-car-12")
    await _activation(log)
    gateway = ActivationLog(log, signer=CheckpointSigner.from_file(keys.private))
    try:
        await gateway.checkpoint("shutdown")
    finally:
        gateway.close()
    return log, keys.public


def test_audit_verify_quotes_a_hostile_checkpoint_as_it_is(
    signed_log: tuple[Path, Path],
) -> None:
    """An insider writes markup into the closing checkpoint (and re-hashes it): verify
    names the bad checkpoint, quoting it, and exits 1; before, rich's MarkupError."""
    log, public = signed_log
    last = max(rows_of(log))
    seq, at_ns, kind, aid, body, prev, _ = rows_of(log)[last]
    assert kind == "checkpoint"
    edited = json.dumps({**json.loads(body), "vouches": HOSTILE})
    rewrite(log, delete=[seq], insert=[forged(seq, prev, kind, aid, edited, at_ns)])

    for pin in ([], ["--pubkey", str(public)]):
        result = runner.invoke(app, ["audit", "verify", str(log), "--all", *pin])
        _completed(result)
        assert result.exit_code == 1, result.output
        assert f"record {seq}: bad_checkpoint: unreadable checkpoint (vouches " in result.output
        assert repr(HOSTILE)[:40] in result.output


def test_audit_verify_shows_a_hostile_log_id_as_it_is(signed_log: tuple[Path, Path]) -> None:
    log, _ = signed_log
    with sqlite3.connect(log) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'log_id'", (HOSTILE,))
    conn.close()
    result = runner.invoke(app, ["audit", "verify", str(log)])
    _completed(result)
    assert result.exit_code == 1, result.output  # the checkpoints signed another log id
    assert result.output.startswith(f"log {HOSTILE}: ")
    assert "bad_signature" in result.output
    report = runner.invoke(app, ["audit", "report", str(log), "--out", str(log.parent / "r")])
    _completed(report)
    assert report.exit_code == 0, report.output
    integrity = json.loads((log.parent / "r" / "report.json").read_text())["integrity"]
    assert integrity["log_id"] == HOSTILE


def test_keys_list_shows_a_subject_as_it_is(tmp_path: Path) -> None:
    trust = tmp_path / "trust.yaml"
    made = runner.invoke(
        app,
        ["keys", "new", "--role", "camera", "--id", EMOJI_ID, "--out", str(tmp_path / "k"),
         "--trust", str(trust)],
    )  # fmt: skip
    _completed(made)
    assert made.exit_code == 0, made.output
    assert f"camera {EMOJI_ID}: key " in made.output
    listed = runner.invoke(app, ["keys", "list", "--trust", str(trust)])
    _completed(listed)
    assert listed.exit_code == 0, listed.output
    assert f"│ {EMOJI_ID} │" in listed.output
    assert "🚓" not in listed.output


async def test_the_log_holds_the_cameras_words(tmp_path: Path) -> None:
    """What the commands above print comes from here: the ack as the camera sent it."""
    log = tmp_path / "log.db"
    await _activation(log)
    acks = [json.loads(r.body)["ack"] for r in read_records(log) if r.kind == "ack"]
    assert {a["camera_id"]: a["reason"] for a in acks} == {EMOJI_ID: "", "bwc-9": HOSTILE + ESCAPE}
