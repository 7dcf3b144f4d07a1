"""Issue 18 item 9: the audit report's integrity section (the code of `audit verify`), its
plot of the cameras against the range circle, and figures with nothing clipped.

Logs are written through ActivationLog with a gateway's signing key; the tampered one is
edited in SQLite as tests/unit/test_audit_tamper.py does (the append-only triggers dropped).
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text
from typer.testing import CliRunner

from mesh.audit.report import (
    ActivationTimeline,
    CameraLine,
    PlacedCamera,
    build_report,
    local_m,
    placed_outcome,
)
from mesh.audit.report_render import histogram_figure, range_figure, timeline_figure
from mesh.cli.app import app
from mesh.journal.records import ActivationEntry, DecisionInputs, RecordKind, TargetEntry
from mesh.journal.signer import CheckpointSigner
from mesh.journal.store import ActivationLog
from mesh.protocol.models import (
    AckStatus,
    CameraPresence,
    CameraRole,
    GeoPoint,
    OutcomeStatus,
    Position,
    RecordStart,
    Targets,
    TriggerKind,
    TriggerSummary,
)
from mesh.security.keys import key_id, new_gateway_key
from tests.unit.test_audit_report import MS, T0, _Log

runner = CliRunner()
CENTRE = (39.9526, -75.1652)
NORTH_100M = 100 / 111_195.0  # degrees of latitude in 100 m (mean Earth radius)


def _presence(camera: str, lat: float | None, lon: float | None) -> str:
    fix = None if lat is None or lon is None else Position(lat=lat, lon=lon, fix_at_ns=T0)
    return CameraPresence(
        camera_id=camera,
        unit_id="car-1",
        role=CameraRole.BODY,
        online=True,
        recording=False,
        position=fix,
        last_seen_ns=T0,
    ).model_dump_json()


def _write(path: Path, signer: CheckpointSigner | None) -> None:
    """One activation: c-near started (100 m north), c-far out of range (300 m east),
    c-blind with no fix, decided at CENTRE; the log is signed when it closes."""
    w = _Log.__new__(_Log)
    w.log = ActivationLog(path, signer=signer)
    lat, lon = CENTRE
    east_300 = 300 / (111_195.0 * math.cos(math.radians(lat)))
    for camera, cam_lat, cam_lon in (
        ("c-near", lat + NORTH_100M, lon),
        ("c-far", lat, lon + east_300),
        ("c-blind", None, None),
    ):
        w.log.append_json(RecordKind.PRESENCE, None, _presence(camera, cam_lat, cam_lon), T0)
    trigger = w.trigger("car-1", TriggerKind.WEAPON_DRAW, T0 + MS)
    command = RecordStart(
        activation_id="a-1",
        issuer="gw",
        trigger=TriggerSummary.of(trigger),
        issued_at_ns=T0 + MS,
        origin=GeoPoint(lat=lat, lon=lon),
        radius_m=150.0,
        pre_event_s=30,
        targets=Targets(),
        expires_at_ns=T0 + 30_000 * MS,
    )
    targets = (
        TargetEntry(camera_id="c-near", unit_id="car-1", expected=True, reason="in range: 100 m"),
        TargetEntry(
            camera_id="c-far", unit_id=None, expected=False, reason="out of range: 300 m > 150 m"
        ),
        TargetEntry(camera_id="c-blind", unit_id=None, expected=False, reason="no position fix"),
    )
    inputs = DecisionInputs(gateway_position=GeoPoint(lat=lat - NORTH_100M, lon=lon))
    entry = ActivationEntry(
        trigger=trigger, received_at_ns=T0 + MS, command=command, targets=targets, inputs=inputs
    )
    w.log.append(RecordKind.ACTIVATION, "a-1", entry, T0 + MS)
    w.published("a-1", T0 + 2 * MS)
    w.ack("a-1", "c-near", AckStatus.STARTED, T0 + 9 * MS)
    w.finished("a-1", trigger, T0 + 10 * MS, {"c-near": (OutcomeStatus.STARTED, T0 + 9 * MS, True)})
    w.log.close()


@pytest.fixture
def signer() -> CheckpointSigner:
    return CheckpointSigner(Ed25519PrivateKey.generate())


@pytest.fixture
def signed_log(tmp_path: Path, signer: CheckpointSigner) -> Path:
    path = tmp_path / "log.db"
    _write(path, signer)
    return path


def _cli_report(log: Path, out: Path) -> dict[str, object]:
    result = runner.invoke(app, ["audit", "report", str(log), "--out", str(out)])
    assert result.exit_code == 0, result.output
    document = json.loads((out / "report.json").read_text())
    assert isinstance(document, dict)
    return document


def _integrity(document: dict[str, object]) -> dict[str, object]:
    section = document["integrity"]
    assert isinstance(section, dict)
    return section


# --- the integrity section -------------------------------------------------------------------
def test_a_signed_log_without_a_pinned_key_is_consistent_not_intact(
    signed_log: Path, signer: CheckpointSigner, tmp_path: Path
) -> None:
    """Its checkpoints verify with the key they name, which proves the log consistent,
    not who wrote it (pinned: test_pubkey_pins_the_signer_as_verify_does)."""
    out = tmp_path / "out"
    document = _cli_report(signed_log, out)
    section = _integrity(document)
    assert section["verdict"] == "consistent"
    assert section["headline"] == document["headline"]
    assert str(section["headline"]).startswith("consistent: every record is linked, unchanged")
    assert "not checked against a trusted key" in str(section["headline"])
    assert section["key_ids"] == [key_id(signer.public_key)]
    assert section["checkpoints"] == 1
    assert section["last_checkpoint_seq"] == section["last_seq"]
    assert section["unsigned_tail"] == 0
    assert section["problems"] == []
    # The same words as `audit verify`.
    verify = runner.invoke(app, ["audit", "verify", str(signed_log)])
    assert verify.exit_code == 0
    assert section["summary"] == verify.output.splitlines()[0]
    html = (out / "report.html").read_text()
    assert "<h2>Integrity</h2>" in html
    assert '<td class="warn">consistent: every record is linked, unchanged and signed' in html
    assert "intact" not in html
    assert key_id(signer.public_key) in html


def test_a_tampered_log_shows_its_first_break(signed_log: Path, tmp_path: Path) -> None:
    conn = sqlite3.connect(signed_log)
    conn.execute("DROP TRIGGER IF EXISTS records_append_only_update")
    (body,) = conn.execute("SELECT body FROM records WHERE seq = 2").fetchone()
    conn.execute("UPDATE records SET body = ? WHERE seq = 2", (body.replace("c-far", "c-fur"),))
    conn.commit()
    conn.close()

    section = _integrity(_cli_report(signed_log, tmp_path / "out"))
    assert section["verdict"] == "tampered"
    problems = section["problems"]
    assert isinstance(problems, list)
    assert problems[0]["seq"] == 2
    assert problems[0]["problem"] == "modified"
    html = (tmp_path / "out" / "report.html").read_text()
    assert "broken at record 2: modified" in html
    verify = runner.invoke(app, ["audit", "verify", str(signed_log)])
    assert verify.exit_code == 1
    assert "record 2: modified" in verify.output


def test_records_after_the_last_checkpoint_are_the_unsigned_tail(
    signed_log: Path, tmp_path: Path
) -> None:
    unsigned = ActivationLog(signed_log)  # no key: nothing it appends is signed
    for i in range(3):
        unsigned.append_json(RecordKind.PRESENCE, None, _presence(f"x-{i}", None, None), T0)
    unsigned.close()
    report = build_report(signed_log)
    assert report.integrity is not None
    assert report.integrity.verdict == "unsigned"
    assert report.integrity.report.unsigned_tail == 3
    section = _integrity(_cli_report(signed_log, tmp_path / "out"))
    assert section["unsigned_tail"] == 3
    assert section["verdict"] == "unsigned"
    assert str(section["headline"]).startswith("unsigned: the chain links, but records ")
    html = (tmp_path / "out" / "report.html").read_text()
    assert '<td class="warn">unsigned: the chain links' in html


def test_an_empty_log_is_reported_empty_not_intact(tmp_path: Path) -> None:
    log = tmp_path / "log.db"
    ActivationLog(log).close()
    section = _integrity(_cli_report(log, tmp_path / "out"))
    assert (section["verdict"], section["records"]) == ("empty", 0)
    assert str(section["headline"]).startswith("empty: the log holds no records")
    assert '<td class="warn">empty: ' in (tmp_path / "out" / "report.html").read_text()
    verify = runner.invoke(app, ["audit", "verify", str(log)])
    assert verify.exit_code == 0, verify.output
    assert verify.output.endswith(": empty: no records\n")


# --- cameras against the range circle --------------------------------------------------------
def test_local_metres() -> None:
    east, north = local_m(CENTRE, (CENTRE[0] + NORTH_100M, CENTRE[1]))
    assert abs(east) < 1e-9
    assert north == pytest.approx(100.0, abs=0.1)
    east, north = local_m((0.0, 0.0), (0.0, 0.001))
    assert east == pytest.approx(111.2, abs=0.1)


@pytest.mark.parametrize(
    ("expected", "status", "reason", "outcome"),
    [
        (True, "started", "in range", "started"),
        (True, "already_recording", "in range", "already recording"),
        (True, "missed", "in range", "missed"),
        (True, "missed", "in range; offline for 90 s, not waited for", "offline (missed)"),
        (True, "pending", "in range", "no answer (unfinished)"),
        (True, "out_of_range", "in range", "said out of range"),
        (False, None, "out of range: 400 m > 150 m (fix 3 s old)", "out of range"),
        (False, None, "its unit's position: 400 m > 150 m", "out of range"),
        (False, None, "in range: 10 m; asleep, and this kind does not wake cameras", "asleep"),
        (False, None, "no position fix, and none in unit car-9", "no position fix"),
        (False, None, "role dash not wanted", "not targeted"),
    ],
)
def test_placed_outcome(expected: bool, status: str | None, reason: str, outcome: str) -> None:
    timeline = ActivationTimeline("a", "u", "k", "manual", "s", "e", 0, 0, 0)
    if status is not None:
        timeline.cameras["c"] = CameraLine("c", None, expected, reason, status=status)
    assert placed_outcome(timeline, PlacedCamera("c", (0.0, 0.0), expected, reason)) == outcome


def _drawn(figure: Figure) -> dict[str, list[tuple[float, float]]]:
    """Legend label -> the points of that line, in data coordinates."""
    ax = figure.axes[0]
    return {
        str(line.get_label()): [(float(x), float(y)) for x, y in line.get_xydata()]  # type: ignore[misc]
        for line in ax.get_lines()
    }


def test_the_range_plot_places_each_camera_by_its_outcome(signed_log: Path) -> None:
    (timeline,) = build_report(signed_log).timelines
    figure = range_figure(timeline)
    assert figure is not None
    drawn = _drawn(figure)
    ((x, y),) = drawn["started (1)"]
    assert (x, y) == pytest.approx((0.0, 100.0), abs=0.2)
    ((x, y),) = drawn["out of range (1)"]
    assert (x, y) == pytest.approx((300.0, 0.0), abs=0.2)
    ((x, y),) = drawn["gateway (unit car-1)"]
    assert (x, y) == pytest.approx((0.0, -100.0), abs=0.2)
    ax = figure.axes[0]
    assert ax.get_aspect() == 1.0  # metres are metres both ways
    (circle,) = ax.patches
    assert circle.get_label() == "range 150 m"
    assert "1 without a position fix" in ax.get_title(loc="left")
    legend = ax.get_legend()
    assert legend is not None
    assert {t.get_text() for t in legend.get_texts()} >= {"started (1)", "out of range (1)"}


def test_no_range_plot_without_a_centre() -> None:
    timeline = ActivationTimeline("a", "u", "k", "manual", "s", "e", 0, 0, 0, radius_m=150.0)
    assert range_figure(timeline) is None


# --- nothing clipped --------------------------------------------------------------------------
def _outside(figure: Figure) -> list[str]:
    """Every text drawn that is not wholly inside the figure. Tick labels are checked
    through each axis' extent (which covers only the ticks it draws)."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = figure.bbox

    def inside(extent: object) -> bool:
        x0, y0, x1, y1 = extent.extents  # type: ignore[attr-defined]
        return (
            x0 >= box.x0 - 0.5 and y0 >= box.y0 - 0.5 and x1 <= box.x1 + 0.5 and y1 <= box.y1 + 0.5
        )

    ticks: set[int] = set()
    bad: list[str] = []
    for ax in figure.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                ticks.update((id(tick.label1), id(tick.label2)))
            extent = axis.get_tightbbox(renderer)
            if extent is not None and not inside(extent):
                bad.append(f"{axis.axis_name} axis")
    for text in figure.findobj(Text):
        if id(text) in ticks or not text.get_visible() or not text.get_text():
            continue
        assert isinstance(text, Text)
        if not inside(text.get_window_extent(renderer)):
            bad.append(text.get_text())
    return bad


def test_the_p99_label_at_the_right_edge_is_inside() -> None:
    latencies = [10.0 + i * 0.1 for i in range(50)] + [95.0]
    figure = histogram_figure(latencies, 12.5, 95.0)
    assert _outside(figure) == []


def test_no_text_of_the_report_figures_is_clipped(signed_log: Path) -> None:
    (timeline,) = build_report(signed_log).timelines
    # Long ids and more cameras than are drawn: the longest labels and title.
    for i in range(40):
        camera_id = f"camera-with-a-long-id-{i:02d}"
        timeline.cameras[camera_id] = CameraLine(camera_id, "car-1", True, "in range")
        timeline.considered.append(
            PlacedCamera(camera_id, (CENTRE[0] + NORTH_100M * i / 40, CENTRE[1]), True, "in range")
        )
    where = range_figure(timeline)
    assert where is not None
    for figure in (timeline_figure(timeline), where):
        assert _outside(figure) == []


def test_pubkey_pins_the_signer_as_verify_does(tmp_path: Path) -> None:
    ours = new_gateway_key(tmp_path / "ours", "gw-1")
    other = new_gateway_key(tmp_path / "other", "gw-2")
    log = tmp_path / "log.db"
    _write(log, CheckpointSigner.from_file(ours.private))
    args = ["audit", "report", str(log), "--pubkey"]
    result = runner.invoke(app, [*args, str(ours.public), "--out", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    section = _integrity(json.loads((tmp_path / "a" / "report.json").read_text()))
    assert (section["verdict"], section["pinned"]) == ("intact", True)
    assert str(section["headline"]).startswith("intact: every record is linked, unchanged")
    html = (tmp_path / "a" / "report.html").read_text()
    assert "<td>intact: every record is linked, unchanged and signed by the pinned key" in html
    result = runner.invoke(app, [*args, str(other.public), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    section = _integrity(json.loads((tmp_path / "b" / "report.json").read_text()))
    assert section["verdict"] == "tampered"
    problems = section["problems"]
    assert isinstance(problems, list)
    assert problems[0]["problem"] == "wrong_key"
