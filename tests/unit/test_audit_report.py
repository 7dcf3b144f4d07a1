"""``trigger-mesh audit report``: the numbers, the filters, and the files it writes (in
process; a fresh interpreter and a real mesh's log: tests/integration/test_audit_report_live.py)."""

from __future__ import annotations

import base64
import csv
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mesh.audit.report import AuditReport, ReportFilter, collect, parse_utc
from mesh.audit.report_render import render_html
from mesh.cli.app import app
from mesh.journal.records import (
    AckEntry,
    ActivationEntry,
    EscalatedEntry,
    FinishedEntry,
    PublishedEntry,
    RecordKind,
    TargetEntry,
    TriggerEntry,
)
from mesh.journal.store import ActivationLog, read_records
from mesh.protocol.models import (
    AckStatus,
    ActivationRecord,
    ActivationState,
    CameraAck,
    CameraOutcome,
    Escalation,
    EscalationReason,
    OutcomeStatus,
    RecordStart,
    SourceRef,
    SourceType,
    Targets,
    TriggerEvent,
    TriggerKind,
    TriggerSummary,
)

T0 = parse_utc("2026-11-22T10:00:00Z")
MS = 1_000_000
S = 1_000 * MS
PNG = b"\x89PNG\r\n\x1a\n"


class _Log:
    """Writes the records a gateway would, for activations described in a few words."""

    def __init__(self, path: Path) -> None:
        self.log = ActivationLog(path)

    def trigger(self, unit: str, kind: TriggerKind, at_ns: int) -> TriggerEvent:
        return TriggerEvent(
            event_id=f"ev-{unit}-{at_ns}",
            kind=kind,
            source=SourceRef(type=SourceType.MANUAL, id="test", authenticated=True),
            unit_id=unit,
            observed_at_ns=at_ns - 3 * MS,
        )

    def activation(
        self, aid: str, unit: str, kind: TriggerKind, at_ns: int, expected: list[str]
    ) -> TriggerEvent:
        trigger = self.trigger(unit, kind, at_ns)
        command = RecordStart(
            activation_id=aid,
            issuer="gw",
            trigger=TriggerSummary.of(trigger),
            issued_at_ns=at_ns,
            origin=None,
            radius_m=150.0,
            pre_event_s=30,
            targets=Targets(),
            expires_at_ns=at_ns + 30 * S,
        )
        targets = [
            TargetEntry(camera_id=c, unit_id=unit, expected=True, reason="in range")
            for c in expected
        ]
        targets.append(TargetEntry(camera_id="far", unit_id=None, expected=False, reason="far"))
        entry = ActivationEntry(
            trigger=trigger, received_at_ns=at_ns, command=command, targets=tuple(targets)
        )
        self.log.append(RecordKind.ACTIVATION, aid, entry, at_ns)
        return trigger

    def published(
        self, aid: str, at_ns: int, attempt: int = 0, cameras: tuple[str, ...] | None = None
    ) -> None:
        entry = PublishedEntry(attempt=attempt, topic="t", cameras=cameras)
        self.log.append(RecordKind.PUBLISHED, aid, entry, at_ns)

    def ack(
        self, aid: str, camera: str, status: AckStatus, at_ns: int, effect: str = "recorded"
    ) -> None:
        ack = CameraAck(activation_id=aid, camera_id=camera, status=status, received_at_ns=at_ns)
        self.log.append(
            RecordKind.ACK, aid, AckEntry(ack=ack, latency_ms=1.0, effect=effect), at_ns
        )

    def finished(
        self,
        aid: str,
        trigger: TriggerEvent,
        at_ns: int,
        outcomes: dict[str, tuple[OutcomeStatus, int | None, bool]],
        reason: str = "",
    ) -> None:
        cameras = tuple(
            CameraOutcome(
                camera_id=c,
                unit_id=trigger.unit_id,
                expected=expected,
                targeting="in range",
                status=status,
                acked_at_ns=acked,
            )
            for c, (status, acked, expected) in outcomes.items()
        )
        record = ActivationRecord(
            activation_id=aid,
            issuer="gw",
            unit_id=trigger.unit_id,
            trigger=TriggerSummary.of(trigger),
            state=ActivationState.PARTIAL,
            reason=reason,
            decided_at_ns=trigger.observed_at_ns,
            finished_at_ns=at_ns,
            expires_at_ns=at_ns + S,
            origin=None,
            radius_m=150.0,
            pre_event_s=30,
            cameras=cameras,
        )
        self.log.append(RecordKind.FINISHED, aid, FinishedEntry(record=record), at_ns)

    def not_activated(
        self, kind: RecordKind, trigger: TriggerEvent, at_ns: int, aid: str | None = None
    ) -> None:
        entry = TriggerEntry(
            trigger=trigger, received_at_ns=at_ns, code=kind.value, reason="x", activation_id=aid
        )
        self.log.append(kind, aid, entry, at_ns)


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    """Four activations: two weapon draws on car-1 (a camera missed, one rejected), two
    sirens on car-2 (one with an unexpected camera, one never finished); a merged trigger,
    a refused one, and a record that does not parse."""
    path = tmp_path / "log.db"
    w = _Log(path)
    started, already, missed = (
        OutcomeStatus.STARTED,
        OutcomeStatus.ALREADY_RECORDING,
        OutcomeStatus.MISSED,
    )
    # A1: c1 after 10 ms, c2 already recording after 20 ms, c3 silent, retried, missed.
    t = T0
    a1 = w.activation("a-1", "car-1", TriggerKind.WEAPON_DRAW, t, ["c1", "c2", "c3"])
    w.published("a-1", t + 2 * MS)
    w.ack("a-1", "c1", AckStatus.STARTED, t + 10 * MS)
    w.not_activated(
        RecordKind.SUPPRESSED, w.trigger("car-1", TriggerKind.WEAPON_DRAW, t + S), t + S, "a-1"
    )
    w.ack("a-1", "c2", AckStatus.ALREADY_RECORDING, t + 20 * MS)
    w.published("a-1", t + 500 * MS, attempt=1, cameras=("c3",))
    w.finished(
        "a-1",
        a1,
        t + 2 * S,
        {
            "c1": (started, t + 10 * MS, True),
            "c2": (already, t + 20 * MS, True),
            "c3": (missed, None, True),
        },
    )
    esc = Escalation(
        activation_id="a-1",
        issuer="gw",
        unit_id="car-1",
        kind=TriggerKind.WEAPON_DRAW,
        camera_id="c3",
        camera_unit_id="car-1",
        reason=EscalationReason.NO_ACK,
        audience="dispatch",
        at_ns=t + 2 * S,
    )
    w.log.append(RecordKind.ESCALATED, "a-1", EscalatedEntry(escalation=esc), t + 2 * S)
    w.ack("a-1", "c3", AckStatus.STARTED, t + 5 * S, effect="late")
    w.log.append_json(RecordKind.ACK, "a-1", '{"not": "an ack"}', t + 6 * S)
    # A2: c1 after 30 ms, c2 rejected the command.
    t = T0 + 60 * S
    a2 = w.activation("a-2", "car-1", TriggerKind.WEAPON_DRAW, t, ["c1", "c2"])
    w.published("a-2", t + 1 * MS)
    w.ack("a-2", "c1", AckStatus.STARTED, t + 30 * MS)
    w.ack("a-2", "c2", AckStatus.REJECTED, t + 40 * MS)
    w.finished(
        "a-2",
        a2,
        t + 50 * MS,
        {"c1": (started, t + 30 * MS, True), "c2": (OutcomeStatus.REJECTED, t + 40 * MS, True)},
        reason="<b>odd</b>",
    )
    # A3: c9 after 5 ms; x1, not expected, answered the broadcast too.
    t = T0 + 120 * S
    a3 = w.activation("a-3", "car-2", TriggerKind.SIREN, t, ["c9"])
    w.published("a-3", t + 1 * MS)
    w.ack("a-3", "c9", AckStatus.STARTED, t + 5 * MS)
    w.ack("a-3", "x1", AckStatus.STARTED, t + 7 * MS, effect="unexpected")
    w.finished(
        "a-3",
        a3,
        t + 8 * MS,
        {"c9": (started, t + 5 * MS, True), "x1": (started, t + 7 * MS, False)},
    )
    # A4: c9 after 50 ms, c8 silent, and the gateway never finished it.
    t = T0 + 180 * S
    w.activation("a-4", "car-2", TriggerKind.SIREN, t, ["c9", "c8"])
    w.published("a-4", t + 1 * MS)
    w.ack("a-4", "c9", AckStatus.STARTED, t + 50 * MS)
    w.ack("a-4", "c9", AckStatus.STARTED, t + 60 * MS, effect="duplicate")
    t = T0 + 200 * S
    w.not_activated(RecordKind.REFUSED, w.trigger("car-2", TriggerKind.SIREN, t), t)
    w.log.close()
    return path


def _report(path: Path, flt: ReportFilter | None = None) -> AuditReport:
    return collect(read_records(path), flt or ReportFilter())


def test_summary_numbers(log_path: Path) -> None:
    report = _report(log_path)
    assert [t.activation_id for t in report.timelines] == ["a-1", "a-2", "a-3", "a-4"]
    assert report.unreadable == 1
    car1, car2 = report.groups
    assert (car1.unit_id, car1.kind, car2.unit_id, car2.kind) == (
        "car-1",
        "weapon_draw",
        "car-2",
        "siren",
    )
    # car-1: c1, c2 (already recording) and c1 of 5 expected; trigger -> ack 10, 20, 30 ms.
    assert (car1.activations, car1.cameras_expected, car1.cameras_started) == (2, 5, 3)
    assert car1.confirmation_rate == pytest.approx(0.6)
    assert (car1.p50_ms, car1.p99_ms) == (20.0, 30.0)
    assert car1.missed == [("a-1", "c3"), ("a-2", "c2")]
    assert (car1.suppressed, car1.refused, car1.unfinished) == (1, 0, 0)
    # car-2: the unexpected x1 counts nowhere; c8 of the unfinished activation did not start.
    assert (car2.activations, car2.cameras_expected, car2.cameras_started) == (2, 3, 2)
    assert (car2.p50_ms, car2.p99_ms) == (5.0, 50.0)
    assert car2.missed_ids == ["c8"]
    assert (car2.suppressed, car2.refused, car2.unfinished) == (0, 1, 1)
    overall = report.overall
    assert (overall.activations, overall.cameras_expected, overall.cameras_started) == (4, 8, 5)
    assert overall.confirmation_rate == pytest.approx(5 / 8)
    assert (overall.p50_ms, overall.p99_ms) == (20.0, 50.0)
    assert overall.missed_ids == ["c2", "c3", "c8"]
    assert (overall.suppressed, overall.refused) == (1, 1)


def test_timeline_of_one_activation(log_path: Path) -> None:
    a1, _, a3, a4 = _report(log_path).timelines
    assert a1.ms(a1.published_at_ns) == 2.0
    assert a1.ms(a1.observed_at_ns) == -3.0
    assert {c: a1.ack_ms(line) for c, line in a1.cameras.items()} == {
        "c1": 10.0,
        "c2": 20.0,
        "c3": None,
    }
    assert a1.merged_triggers == 1
    labels = [m.label for m in a1.marks]
    assert labels[0] == "merged weapon_draw trigger"
    assert "retry 1 (1 cameras)" in labels
    assert "escalated (no_ack) to dispatch" in labels
    assert "late ack: started" in labels
    assert a1.cameras["c3"].status == "missed"  # the late ack changes nothing
    assert not a3.cameras["x1"].expected
    assert a4.state == "unfinished"
    assert {c: line.status for c, line in a4.cameras.items()} == {"c9": "started", "c8": "pending"}
    assert a4.ack_ms(a4.cameras["c9"]) == 50.0  # the duplicate ack after it changes nothing


@pytest.mark.parametrize(
    ("flt", "ids", "suppressed", "refused"),
    [
        (ReportFilter(unit="car-2"), ["a-3", "a-4"], 0, 1),
        (ReportFilter(kind=TriggerKind.WEAPON_DRAW), ["a-1", "a-2"], 1, 0),
        # [from, to): the activation received exactly at --to is left out.
        (ReportFilter(start_ns=T0 + 60 * S, end_ns=T0 + 180 * S), ["a-2", "a-3"], 0, 0),
        (ReportFilter(start_ns=T0 + 190 * S), [], 0, 1),
    ],
)
def test_filters(
    log_path: Path, flt: ReportFilter, ids: list[str], suppressed: int, refused: int
) -> None:
    report = _report(log_path, flt)
    assert [t.activation_id for t in report.timelines] == ids
    assert (report.overall.suppressed, report.overall.refused) == (suppressed, refused)


def test_parse_utc() -> None:
    assert parse_utc("2026-11-22T10:00:00Z") == parse_utc("2026-11-22T11:00:00+01:00")
    assert parse_utc("2026-11-22T10:00:00") == T0  # no offset: UTC
    assert parse_utc("1970-01-01T00:00:00.000001Z") == 1000
    with pytest.raises(ValueError, match="not an ISO 8601 time"):
        parse_utc("yesterday")


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs))


def _png_of(src: str | None) -> bytes:
    assert src is not None
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix)
    return base64.b64decode(src[len(prefix) :], validate=True)


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_cli_writes_html_and_csv(log_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["audit", "report", str(log_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 activation(s)" in result.output
    assert str(out / "report.html") in result.output
    text = (out / "report.html").read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    page.close()
    timelines = [i for i in page.images if i.get("class") == "timeline"]
    assert [i["alt"] for i in timelines] == [f"timeline of activation a-{n}" for n in range(1, 5)]
    assert all(_png_of(i["src"]).startswith(PNG) for i in page.images)
    assert any(i.get("class") == "histogram" for i in page.images)
    # Self-contained, and what came from the log is escaped.
    assert "http://" not in text
    assert "https://" not in text
    assert "<script" not in text
    assert "<b>odd</b>" not in text
    assert "&lt;b&gt;odd&lt;/b&gt;" in text

    activations = _csv(out / "activations.csv")
    assert [
        (
            r["activation_id"],
            r["state"],
            r["cameras_expected"],
            r["cameras_started"],
            r["missed_ids"],
        )
        for r in activations
    ] == [
        ("a-1", "partial", "3", "2", "c3"),
        ("a-2", "partial", "2", "1", "c2"),
        ("a-3", "partial", "1", "1", ""),
        ("a-4", "unfinished", "2", "1", "c8"),
    ]
    assert activations[0]["published_ms"] == "2.0"
    assert activations[0]["received_at"] == "2026-11-22T10:00:00.000000000Z"
    cameras = _csv(out / "cameras.csv")
    assert [
        (r["activation_id"], r["camera_id"], r["status"], r["expected"], r["ack_ms"])
        for r in cameras
    ] == [
        ("a-1", "c1", "started", "true", "10.0"),
        ("a-1", "c2", "already_recording", "true", "20.0"),
        ("a-1", "c3", "missed", "true", ""),
        ("a-2", "c1", "started", "true", "30.0"),
        ("a-2", "c2", "rejected", "true", "40.0"),
        ("a-3", "c9", "started", "true", "5.0"),
        ("a-3", "x1", "started", "false", "7.0"),
        ("a-4", "c9", "started", "true", "50.0"),
        ("a-4", "c8", "pending", "true", ""),
    ]


def test_cli_filters(log_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--from", "2026-11-22T10:01:00Z", "--to", "2026-11-22T10:03:00Z", "--kind", "siren"]
    result = CliRunner().invoke(app, ["audit", "report", str(log_path), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    assert [r["activation_id"] for r in _csv(out / "activations.csv")] == ["a-3"]
    assert "1 activation(s)" in result.output


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--from", "noon"], "--from"),
        (["--to", "2026-13-01T00:00:00Z"], "--to"),
        (["--kind", "sneeze"], "--kind"),
        (["--unit", "car/1"], "--unit"),
        (["--from", "2026-11-22T11:00:00Z", "--to", "2026-11-22T10:00:00Z"], "--from"),
    ],
)
def test_bad_option_is_a_usage_error_naming_it(
    log_path: Path, tmp_path: Path, args: list[str], named: str
) -> None:
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["audit", "report", str(log_path), "--out", str(out), *args])
    assert result.exit_code == 2
    assert named in result.output
    assert not out.exists()


def test_missing_or_foreign_log_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a log")
    for name, message in (
        ("missing.db", "no such activation log"),
        ("notes.txt", "not a trigger-mesh activation log"),
    ):
        args = ["audit", "report", str(tmp_path / name), "--out", str(tmp_path / "out")]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2
        assert message in result.output


def test_timelines_are_capped_but_the_summary_covers_all(log_path: Path) -> None:
    report = _report(log_path)
    text = render_html(report, log_name="log.db", generated_at_ns=T0, limit=2)
    page = _Page()
    page.feed(text)
    assert sum(1 for i in page.images if i.get("class") == "timeline") == 2
    assert "first 2 of 4 activations" in text
    assert '<tr class=total><td>all</td><td>all</td><td class="n">4</td>' in text
