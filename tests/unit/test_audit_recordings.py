"""``audit report`` and cameras' recordings (issue 19, item 4): each camera's recording span per
activation, from the gateway's `recording` records, and the flags: an officer's stop without a
reason, a recording that ended before the policy's `min_recording_s` (a cancelled one
excepted). An untrusted report is shown as such, never as a span."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mesh.audit.report import collect
from mesh.audit.report_render import render_html
from mesh.cli.app import app
from mesh.decide.policy import Policy
from mesh.journal.records import RecordingEntry, RecordKind, StartedEntry
from mesh.journal.store import read_records
from mesh.protocol.models import (
    AckStatus,
    RecordingEvent,
    RecordingFile,
    RecordingMessage,
    RecordingStopReason,
    TriggerKind,
)
from tests.unit.test_audit_report import MS, T0, S, _csv, _Log

POLICY = Policy.model_validate({"kinds": {"weapon_draw": {"min_recording_s": 60}}})


def _message(
    camera: str,
    aids: tuple[str, ...],
    started_ns: int,
    *,
    stop_ns: int | None = None,
    reason: RecordingStopReason | None = None,
    note: str = "",
    files: int = 0,
) -> RecordingMessage:
    return RecordingMessage(
        camera_id=camera,
        recording_id=f"r-{camera}",
        activation_ids=aids,
        event=RecordingEvent.START if stop_ns is None else RecordingEvent.STOP,
        started_at_ns=started_ns,
        first_frame_ns=started_ns - 30 * S,
        pre_event_kept_s=30.0,
        stopped_at_ns=stop_ns,
        reason=reason,
        note=note,
        files=tuple(
            RecordingFile(
                name=f"seg-{n}.mkv",
                sha256=f"{n:064x}",
                first_frame_ns=started_ns + n * S,
                last_frame_ns=started_ns + (n + 1) * S,
            )
            for n in range(files)
        ),
    )


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    path = tmp_path / "log.db"
    w = _Log(path)
    started = StartedEntry(gateway_id="gw", unit_id="car-1", topic_prefix="mesh/v2", policy=POLICY)
    w.log.append(RecordKind.STARTED, None, started, T0 - S)
    w.activation("a-1", "car-1", TriggerKind.WEAPON_DRAW, T0, ["c1", "c2", "c3"])
    for camera in ("c1", "c2", "c3"):
        w.ack("a-1", camera, AckStatus.STARTED, T0 + 10 * MS)
    w.activation("a-2", "car-1", TriggerKind.SIREN, T0 + 2 * S, ["c4"])

    def log(message: RecordingMessage, at_ns: int, effect: str = "accepted") -> None:
        entry = RecordingEntry(recording=message, effect=effect)
        w.log.append(RecordKind.RECORDING, message.activation_ids[0], entry, at_ns)

    start = T0 + 10 * MS
    for camera in ("c1", "c2", "c3"):
        log(_message(camera, ("a-1",), start), start)
    # c4's recording was started for a-1's neighbour and joined by a-2: it names both.
    log(_message("c4", ("a-1", "a-2"), start), start)
    # A forged stop of c1's recording, refused by the gateway: evidence, not a span.
    forged = _message("c1", ("a-1",), start, stop_ns=T0 + 5 * S, reason=RecordingStopReason.OFFICER)
    log(forged, T0 + 5 * S, effect="untrusted:wrong_signer")
    # c2: the officer stopped it after 20 s, saying nothing: two flags.
    stop = T0 + 20 * S
    log(_message("c2", ("a-1",), start, stop_ns=stop, reason=RecordingStopReason.OFFICER), stop)
    # c3: cancelled (a false trigger) after 5 s: short, but not flagged.
    stop = T0 + 5 * S
    log(_message("c3", ("a-1",), start, stop_ns=stop, reason=RecordingStopReason.CANCEL), stop)
    # c1: stopped by the officer after 300 s, with a reason and three files.
    stop = T0 + 300 * S
    note = "scene secured, <subject> in custody"
    message = _message(
        "c1", ("a-1",), start, stop_ns=stop, reason=RecordingStopReason.OFFICER, note=note, files=3
    )
    log(message, stop)
    # c4: max duration after 30 s: short for a-1 (minimum 60 s), fine for a-2 (no minimum).
    stop = T0 + 30 * S
    message = _message(
        "c4", ("a-1", "a-2"), start, stop_ns=stop, reason=RecordingStopReason.MAX_DURATION
    )
    log(message, stop)
    w.log.close()
    return path


def test_each_cameras_span_and_its_flags(log_path: Path) -> None:
    report = collect(read_records(log_path))
    a1, a2 = report.timelines
    assert a1.min_recording_s == 60
    assert a2.min_recording_s is None
    spans = {r.camera_id: r for r in a1.recordings.values()}
    assert {c: (r.duration_s, r.reason, r.note, r.files) for c, r in spans.items()} == {
        "c1": (299.99, "officer", "scene secured, <subject> in custody", 3),
        "c2": (19.99, "officer", "", 0),
        "c3": (4.99, "cancel", "", 0),
        "c4": (29.99, "max_duration", "", 0),
    }
    assert {c: r.flags for c, r in spans.items()} == {
        "c1": [],
        "c2": [
            "officer stop without a reason",
            "ended after 19.99 s, before the policy minimum of 60 s",
        ],
        "c3": [],
        "c4": ["ended after 29.99 s, before the policy minimum of 60 s"],
    }
    # The same recording on the other activation it was for, under that one's policy.
    (c4,) = a2.recordings.values()
    assert (c4.camera_id, c4.duration_s, c4.flags) == ("c4", 29.99, [])
    # The forged stop is a mark on the activation, not c1's span.
    assert [m.label for m in a1.marks if m.tag == "untrusted"] == [
        "untrusted recording stop (untrusted:wrong_signer), not counted"
    ]


def test_a_recording_without_a_stop_is_shown_unflagged(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    w = _Log(path)
    w.activation("a-9", "car-1", TriggerKind.WEAPON_DRAW, T0, ["c1"])
    entry = RecordingEntry(recording=_message("c1", ("a-9",), T0 + MS), effect="accepted")
    w.log.append(RecordKind.RECORDING, "a-9", entry, T0 + MS)
    w.log.close()
    report = collect(read_records(path))
    (span,) = report.timelines[0].recordings.values()
    assert (span.stopped_at_ns, span.duration_s, span.flags) == (None, None, [])
    page = render_html(report, log_name="log.db", generated_at_ns=T0)
    assert "still recording, or its stop not reported" in page


def test_the_page_json_and_csv_show_spans_and_flags(log_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["audit", "report", str(log_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert str(out / "recordings.csv") in result.output
    page = (out / "report.html").read_text(encoding="utf-8")
    assert '<table class="recordings">' in page
    assert "policy minimum 60 s" in page
    assert "2 recording(s) flagged:" in page
    assert "officer stop without a reason" in page
    # Escaped, as everything from the log.
    assert "&lt;subject&gt;" in page
    assert "<subject>" not in page
    flags = json.loads((out / "report.json").read_text())["recording_flags"]
    assert [(f["activation_id"], f["camera_id"], f["flag"]) for f in flags] == [
        ("a-1", "c2", "officer stop without a reason"),
        ("a-1", "c2", "ended after 19.99 s, before the policy minimum of 60 s"),
        ("a-1", "c4", "ended after 29.99 s, before the policy minimum of 60 s"),
    ]
    rows = _csv(out / "recordings.csv")
    assert [
        (r["activation_id"], r["camera_id"], r["duration_s"], r["reason"], r["flags"]) for r in rows
    ] == [
        ("a-1", "c1", "299.99", "officer", ""),
        (
            "a-1",
            "c2",
            "19.99",
            "officer",
            "officer stop without a reason; ended after 19.99 s, before the policy minimum of 60 s",
        ),
        ("a-1", "c3", "4.99", "cancel", ""),
        (
            "a-1",
            "c4",
            "29.99",
            "max_duration",
            "ended after 29.99 s, before the policy minimum of 60 s",
        ),
        ("a-2", "c4", "29.99", "max_duration", ""),
    ]
    assert rows[0]["note"] == "scene secured, <subject> in custody"
    assert rows[0]["started_ms"] == "10.0"
    assert rows[0]["files"] == "3"
