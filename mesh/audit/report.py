"""``trigger-mesh audit report``, the pure part: log records -> per-activation timelines,
per-(unit, kind) summaries and CSV rows. No plotting and no files here (mesh.audit.report_render
draws, mesh.cli.audit writes).

Times: every ``*_ms`` on a timeline is relative to when the gateway received the trigger,
on the gateway's wall clock (the clock of every record's ``at_ns``). The ``latency_ms`` a
gateway logs per camera is measured from its first send of the command, not from the
trigger, so it is kept as ``publish_to_ack_ms`` beside the trigger-relative figure.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mesh.decide.policy import Policy
from mesh.decide.stats import percentile
from mesh.journal.integrity import Integrity, verify_log
from mesh.journal.records import (
    AckEntry,
    ActivationEntry,
    CancelAckEntry,
    CancelEntry,
    EscalatedEntry,
    FinishedEntry,
    PublishedEntry,
    RecordingEntry,
    RecordKind,
    ResumedEntry,
    StartedEntry,
    TriggerEntry,
)
from mesh.journal.store import LogRecord, read_records
from mesh.protocol.models import (
    CONFIRMED_OUTCOMES,
    CameraPresence,
    OutcomeStatus,
    RecordingEvent,
    RecordingMessage,
    RecordingStopReason,
    TriggerEvent,
    TriggerKind,
)
from mesh.timefmt import iso_ns, parse_iso_ns

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

UNFINISHED = "unfinished"  # no "finished" record: still pending, or the gateway died
ALL = "all"  # the unit and kind of the overall summary row
_STARTED = frozenset(s.value for s in CONFIRMED_OUTCOMES)
_IDENT = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


# --- filters -----------------------------------------------------------------------------
# ISO 8601 -> ns; a time without an offset is UTC (shared with the other audit commands).
parse_utc = parse_iso_ns


def parse_kind(value: str) -> TriggerKind:
    try:
        return TriggerKind(value)
    except ValueError:
        choices = ", ".join(k.value for k in TriggerKind)
        raise ValueError(f"{value!r} is not a trigger kind ({choices})") from None


def check_unit(value: str) -> str:
    if not _IDENT.match(value):
        raise ValueError(f"{value!r} is not a unit id (1-64 of A-Z a-z 0-9 . _ : -)")
    return value


@dataclass(frozen=True)
class ReportFilter:
    """Which triggers a report covers: received in [start, end), of this unit and kind."""

    start_ns: int | None = None
    end_ns: int | None = None
    unit: str | None = None
    kind: TriggerKind | None = None

    def admits(self, trigger: TriggerEvent, received_at_ns: int) -> bool:
        return (
            (self.start_ns is None or received_at_ns >= self.start_ns)
            and (self.end_ns is None or received_at_ns < self.end_ns)
            and (self.unit is None or trigger.unit_id == self.unit)
            and (self.kind is None or trigger.kind == self.kind)
        )

    def describe(self) -> str:
        """In words, for the report: "triggers received from …, unit car-12, kind siren"."""
        parts = []
        if self.start_ns is not None:
            parts.append(f"received from {iso_ns(self.start_ns)}")
        if self.end_ns is not None:
            parts.append(f"received before {iso_ns(self.end_ns)}")
        if self.unit is not None:
            parts.append(f"unit {self.unit}")
        if self.kind is not None:
            parts.append(f"kind {self.kind.value}")
        return "triggers " + ", ".join(parts) if parts else "all triggers"


# --- one activation ------------------------------------------------------------------------
@dataclass
class CameraLine:
    camera_id: str
    unit_id: str | None
    expected: bool
    targeting: str
    status: str = OutcomeStatus.PENDING.value
    detail: str = ""
    attempts: int = 0
    acked_at_ns: int | None = None
    publish_to_ack_ms: float | None = None

    @property
    def started(self) -> bool:
        """Recording because of (or during) this activation: started or already recording."""
        return self.status in _STARTED


@dataclass(frozen=True)
class PlacedCamera:
    """A camera the decision considered, where the log last placed it before the decision
    (its latest presence record; None: no fix)."""

    camera_id: str
    position: tuple[float, float] | None  # (lat, lon)
    expected: bool
    reason: str  # the targeting reason, as logged


@dataclass(frozen=True)
class Mark:
    """Something else that happened to an activation (a retry, an escalation, a cancel)."""

    at_ns: int
    tag: str  # a word or two, for the plot
    label: str  # the whole story, for the page
    camera_id: str | None = None


@dataclass
class RecordingSpan:
    """One camera's recording for an activation, from its `recording` messages (trusted
    ones only): start to stop, why it stopped, and what is wrong with it."""

    camera_id: str
    recording_id: str
    started_at_ns: int
    first_frame_ns: int
    pre_event_kept_s: float
    stopped_at_ns: int | None = None
    reason: str | None = None  # RecordingStopReason value
    note: str = ""
    files: int = 0
    manifest_sha256: str | None = None
    flags: list[str] = field(default_factory=list)

    @property
    def duration_s(self) -> float | None:
        if self.stopped_at_ns is None:
            return None
        return round((self.stopped_at_ns - self.started_at_ns) / 1e9, 3)

    def judge(self, min_recording_s: float | None) -> None:
        """The flags: an officer's stop without a reason, a recording that ended before
        the policy's minimum (a cancelled one excepted: a false trigger may end early)."""
        self.flags = []
        if self.reason == RecordingStopReason.OFFICER.value and not self.note.strip():
            self.flags.append("officer stop without a reason")
        duration = self.duration_s
        if (
            min_recording_s is not None
            and duration is not None
            and duration < min_recording_s
            and self.reason != RecordingStopReason.CANCEL.value
        ):
            self.flags.append(
                f"ended after {duration:g} s, before the policy minimum of {min_recording_s:g} s"
            )


@dataclass
class ActivationTimeline:
    activation_id: str
    unit_id: str  # the trigger's unit
    kind: str
    source_type: str
    source_id: str
    event_id: str
    observed_at_ns: int  # on the sensor's clock
    received_at_ns: int
    decided_at_ns: int
    published_at_ns: int | None = None
    finished_at_ns: int | None = None
    state: str = UNFINISHED
    reason: str = ""
    all_acked_ms: float | None = None
    merged_triggers: int = 0
    not_targeted: int = 0  # cameras considered and left out (out of range, filtered)
    cameras: dict[str, CameraLine] = field(default_factory=dict)
    marks: list[Mark] = field(default_factory=list)
    cancelled_by: str | None = None
    # Where: the range circle's centre and radius (the command's), the car's position.
    origin: tuple[float, float] | None = None
    radius_m: float | None = None
    gateway_at: tuple[float, float] | None = None
    considered: list[PlacedCamera] = field(default_factory=list)
    # Each camera's recordings for it, by (camera, recording id), in the order logged.
    recordings: dict[tuple[str, str], RecordingSpan] = field(default_factory=dict)
    # The policy's min_recording_s for its kind when it was decided (None: no minimum).
    min_recording_s: float | None = None

    @property
    def flagged(self) -> list[RecordingSpan]:
        return [r for r in self.recordings.values() if r.flags]

    def ms(self, at_ns: int | None) -> float | None:
        return None if at_ns is None else round((at_ns - self.received_at_ns) / 1e6, 3)

    def ack_ms(self, camera: CameraLine) -> float | None:
        """Trigger received -> this camera's ack, ms."""
        return self.ms(camera.acked_at_ns)

    @property
    def expected(self) -> list[CameraLine]:
        return [c for c in self.cameras.values() if c.expected]

    @property
    def not_started(self) -> list[CameraLine]:
        return [c for c in self.expected if not c.started]

    def latencies_ms(self) -> list[float]:
        """Trigger -> ack of the expected cameras that started."""
        values = (self.ack_ms(c) for c in self.expected if c.started)
        return [v for v in values if v is not None]


def _on_recording(
    timelines: dict[str, ActivationTimeline], record: LogRecord, entry: RecordingEntry
) -> None:
    """A camera's recording started or stopped: its span on each activation it names that
    the report covers. One the gateway did not trust is a mark, never a span."""
    message = entry.recording
    named = [timelines[a] for a in message.activation_ids if a in timelines]
    if entry.effect != "accepted":
        for timeline in named:
            label = f"untrusted recording {message.event.value} ({entry.effect}), not counted"
            timeline.marks.append(Mark(record.at_ns, "untrusted", label, message.camera_id))
        return
    for timeline in named:
        key = (message.camera_id, message.recording_id)
        span = timeline.recordings.get(key)
        if span is None:
            span = timeline.recordings[key] = _span(message)
        if message.event is RecordingEvent.STOP:
            span.stopped_at_ns = message.stopped_at_ns
            span.reason = None if message.reason is None else message.reason.value
            span.note = message.note
            span.files = len(message.files) + message.files_omitted
            span.manifest_sha256 = message.manifest_sha256
        span.judge(timeline.min_recording_s)


def _span(message: RecordingMessage) -> RecordingSpan:
    return RecordingSpan(
        camera_id=message.camera_id,
        recording_id=message.recording_id,
        started_at_ns=message.started_at_ns,
        first_frame_ns=message.first_frame_ns,
        pre_event_kept_s=message.pre_event_kept_s,
    )


def _set_minimum(timeline: ActivationTimeline | None, policy: Policy) -> None:
    if timeline is not None:
        timeline.min_recording_s = policy.rules(TriggerKind(timeline.kind)).min_recording_s


def _started_policy(body: str) -> Policy | None:
    """The policy a gateway logged when it started (None if this version cannot read it:
    the report then applies no minimum)."""
    try:
        return StartedEntry.model_validate_json(body).policy
    except ValueError:
        return None


def _new_timeline(
    record: LogRecord, entry: ActivationEntry, positions: dict[str, tuple[float, float] | None]
) -> ActivationTimeline:
    trigger = entry.trigger
    command = entry.command
    gateway = entry.inputs.gateway_position if entry.inputs is not None else None
    timeline = ActivationTimeline(
        activation_id=entry.command.activation_id,
        unit_id=trigger.unit_id,
        kind=trigger.kind.value,
        source_type=trigger.source.type.value,
        source_id=trigger.source.id,
        event_id=trigger.event_id,
        observed_at_ns=trigger.observed_at_ns,
        received_at_ns=entry.received_at_ns,
        decided_at_ns=record.at_ns,
        origin=None if command.origin is None else (command.origin.lat, command.origin.lon),
        radius_m=command.radius_m,
        gateway_at=None if gateway is None else (gateway.lat, gateway.lon),
    )
    for target in entry.targets:
        timeline.considered.append(
            PlacedCamera(
                target.camera_id,
                positions.get(target.camera_id),
                target.expected or target.escalate is not None,
                target.reason,
            )
        )
        # One offline too long to wait for was wanted all the same (escalated, missed).
        if target.expected or target.escalate is not None:
            timeline.cameras[target.camera_id] = CameraLine(
                target.camera_id, target.unit_id, True, target.reason
            )
        else:
            timeline.not_targeted += 1
    return timeline


def _on_ack(timeline: ActivationTimeline, record: LogRecord, entry: AckEntry) -> None:
    ack = entry.ack
    if entry.effect == "late":
        timeline.marks.append(
            Mark(record.at_ns, "late ack", f"late ack: {ack.status.value}", ack.camera_id)
        )
        return
    if entry.effect not in ("recorded", "unexpected"):
        return  # duplicates change nothing
    camera = timeline.cameras.get(ack.camera_id)
    if camera is None:
        camera = CameraLine(ack.camera_id, ack.unit_id, False, "not expected; answered")
        timeline.cameras[ack.camera_id] = camera
    if camera.status == OutcomeStatus.PENDING.value:
        camera.status = ack.status.value
        camera.detail = ack.reason
        camera.acked_at_ns = record.at_ns
        camera.publish_to_ack_ms = entry.latency_ms


def _on_finished(timeline: ActivationTimeline, record: LogRecord, entry: FinishedEntry) -> None:
    # The finished record is the gateway's own final word on every camera.
    final = entry.record
    timeline.finished_at_ns = final.finished_at_ns or record.at_ns
    timeline.published_at_ns = final.published_at_ns or timeline.published_at_ns
    timeline.state = final.state.value
    timeline.reason = final.reason
    timeline.all_acked_ms = final.all_acked_ms
    timeline.merged_triggers = max(timeline.merged_triggers, final.merged_triggers)
    timeline.cancelled_by = final.cancelled_by or timeline.cancelled_by
    for outcome in final.cameras:
        camera = timeline.cameras.get(outcome.camera_id)
        if camera is None:
            camera = CameraLine(outcome.camera_id, outcome.unit_id, outcome.expected, "")
            timeline.cameras[outcome.camera_id] = camera
        camera.expected = outcome.expected
        camera.targeting = outcome.targeting or camera.targeting
        camera.status = outcome.status.value
        camera.detail = outcome.detail
        camera.attempts = outcome.attempts
        camera.acked_at_ns = outcome.acked_at_ns or camera.acked_at_ns
        camera.publish_to_ack_ms = outcome.latency_ms


def _on_published(timeline: ActivationTimeline, record: LogRecord, entry: PublishedEntry) -> None:
    # A published record is written once the broker took the command; the finished record
    # has the time it was sent, which wins when present.
    if entry.attempt == 0:
        if timeline.finished_at_ns is None and (
            timeline.published_at_ns is None or record.at_ns < timeline.published_at_ns
        ):
            timeline.published_at_ns = record.at_ns
        return
    label = f"retry {entry.attempt}"
    if all(m.tag != label for m in timeline.marks):
        count = "all" if entry.cameras is None else str(len(entry.cameras))
        timeline.marks.append(Mark(record.at_ns, label, f"{label} ({count} cameras)"))


def _on_cancel(timeline: ActivationTimeline, record: LogRecord, entry: CancelEntry) -> None:
    by = entry.cancel.by
    if entry.accepted:
        timeline.cancelled_by = by
        timeline.marks.append(Mark(record.at_ns, "cancelled", f"cancelled by {by}"))
    else:
        timeline.marks.append(
            Mark(record.at_ns, "cancel refused", f"cancel by {by} refused: {entry.reason}")
        )


# --- summaries -------------------------------------------------------------------------------
@dataclass
class GroupSummary:
    unit_id: str
    kind: str
    activations: int = 0
    unfinished: int = 0
    suppressed: int = 0
    refused: int = 0
    cameras_expected: int = 0
    cameras_started: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    missed: list[tuple[str, str]] = field(default_factory=list)  # (activation, camera)

    def add(self, timeline: ActivationTimeline) -> None:
        self.activations += 1
        self.unfinished += int(timeline.state == UNFINISHED)
        expected = timeline.expected
        self.cameras_expected += len(expected)
        self.cameras_started += sum(1 for c in expected if c.started)
        self.latencies_ms.extend(timeline.latencies_ms())
        self.missed.extend((timeline.activation_id, c.camera_id) for c in timeline.not_started)

    @property
    def confirmation_rate(self) -> float | None:
        """Expected cameras that started / expected cameras (None: none expected)."""
        if not self.cameras_expected:
            return None
        return self.cameras_started / self.cameras_expected

    @property
    def p50_ms(self) -> float | None:
        return percentile(self.latencies_ms, 50) if self.latencies_ms else None

    @property
    def p99_ms(self) -> float | None:
        return percentile(self.latencies_ms, 99) if self.latencies_ms else None

    @property
    def missed_ids(self) -> list[str]:
        return sorted({camera for _, camera in self.missed})


@dataclass
class AuditReport:
    filter: ReportFilter
    timelines: list[ActivationTimeline]  # in log order
    groups: list[GroupSummary]  # by unit, then kind
    overall: GroupSummary
    records_read: int
    unreadable: int  # records whose body did not parse (reported, not fatal)
    # The chain check of `audit verify` (mesh.journal.integrity); None: not checked.
    integrity: Integrity | None = None


def collect(records: Iterable[LogRecord], flt: ReportFilter = ReportFilter()) -> AuditReport:
    """Fold log records, in log order, into a report of the triggers ``flt`` admits."""
    timelines: dict[str, ActivationTimeline] = {}
    groups: dict[tuple[str, str], GroupSummary] = {}
    positions: dict[str, tuple[float, float] | None] = {}  # each camera's latest fix
    policy: list[Policy | None] = [None]  # the one the gateway last said it started with
    read = unreadable = 0

    def group(trigger: TriggerEvent) -> GroupSummary:
        key = (trigger.unit_id, trigger.kind.value)
        return groups.setdefault(key, GroupSummary(*key))

    for record in records:
        read += 1
        try:
            if record.kind == RecordKind.PRESENCE:
                _on_presence(record.body, positions)
            elif record.kind == RecordKind.STARTED:
                positions.clear()  # a gateway starts with no cameras (as audit replay does)
                policy[0] = _started_policy(record.body)
            elif record.kind == RecordKind.RECORDING:
                # A recording may be for several activations: the record names them all.
                entry = RecordingEntry.model_validate_json(record.body)
                _on_recording(timelines, record, entry)
            else:
                _fold(record, flt, timelines, group, positions)
                if record.kind == RecordKind.ACTIVATION and policy[0] is not None:
                    _set_minimum(timelines.get(record.activation_id or ""), policy[0])
        except ValueError:  # pydantic's ValidationError, or JSON that is not a presence
            unreadable += 1
    overall = GroupSummary(ALL, ALL)
    for timeline in timelines.values():
        if timeline.cancelled_by is not None:
            timeline.state = "cancelled"
        group_of = groups.setdefault(
            (timeline.unit_id, timeline.kind), GroupSummary(timeline.unit_id, timeline.kind)
        )
        group_of.add(timeline)
        overall.add(timeline)
    for summary in groups.values():
        overall.suppressed += summary.suppressed
        overall.refused += summary.refused
    return AuditReport(
        filter=flt,
        timelines=list(timelines.values()),
        groups=[groups[k] for k in sorted(groups)],
        overall=overall,
        records_read=read,
        unreadable=unreadable,
    )


def _fold(
    record: LogRecord,
    flt: ReportFilter,
    timelines: dict[str, ActivationTimeline],
    group: Callable[[TriggerEvent], GroupSummary],
    positions: dict[str, tuple[float, float] | None],
) -> None:
    kind = record.kind
    if kind == RecordKind.ACTIVATION:
        entry = ActivationEntry.model_validate_json(record.body)
        if flt.admits(entry.trigger, entry.received_at_ns):
            timelines[entry.command.activation_id] = _new_timeline(record, entry, positions)
        return
    if kind in (RecordKind.SUPPRESSED, RecordKind.REFUSED):
        _on_trigger(record, TriggerEntry.model_validate_json(record.body), flt, timelines, group)
        return
    # Everything else belongs to an activation already seen (and admitted), or is ignored:
    # kinds this report does not use are skipped without being parsed.
    timeline = timelines.get(record.activation_id or "")
    if timeline is None:
        return
    if kind == RecordKind.PUBLISHED:
        _on_published(timeline, record, PublishedEntry.model_validate_json(record.body))
    elif kind == RecordKind.ACK:
        _on_ack(timeline, record, AckEntry.model_validate_json(record.body))
    elif kind == RecordKind.FINISHED:
        _on_finished(timeline, record, FinishedEntry.model_validate_json(record.body))
    elif kind == RecordKind.ESCALATED:
        esc = EscalatedEntry.model_validate_json(record.body).escalation
        label = f"escalated ({esc.reason.value}) to {esc.audience}"
        timeline.marks.append(Mark(record.at_ns, "escalated", label, esc.camera_id))
    elif kind == RecordKind.CANCEL:
        _on_cancel(timeline, record, CancelEntry.model_validate_json(record.body))
    elif kind == RecordKind.CANCEL_ACK:
        answer = CancelAckEntry.model_validate_json(record.body)
        label = f"cancel by {answer.ack.cancel_issuer}: {answer.effect}"
        if answer.ack.reason:
            label += f" ({answer.ack.reason})"
        timeline.marks.append(Mark(record.at_ns, "cancel ack", label, answer.ack.camera_id))
    elif kind == RecordKind.RESUMED:
        resumed = ResumedEntry.model_validate_json(record.body)
        label = f"gateway resumed it ({resumed.acks_recovered} acks recovered)"
        timeline.marks.append(Mark(record.at_ns, "resumed", label))


def _on_presence(body: str, positions: dict[str, tuple[float, float] | None]) -> None:
    data = json.loads(body)
    if not isinstance(data, dict) or not isinstance(data.get("camera_id"), str):
        raise ValueError("a presence record without a camera id")
    if data.get("removed"):
        positions.pop(data["camera_id"], None)
        return
    presence = CameraPresence.model_validate_json(body)
    fix = presence.position
    positions[presence.camera_id] = None if fix is None else (fix.lat, fix.lon)


def _on_trigger(
    record: LogRecord,
    entry: TriggerEntry,
    flt: ReportFilter,
    timelines: dict[str, ActivationTimeline],
    group: Callable[[TriggerEvent], GroupSummary],
) -> None:
    """A trigger that made no activation: counted in its group, shown on the one it joined."""
    if not flt.admits(entry.trigger, entry.received_at_ns):
        return
    summary = group(entry.trigger)
    if record.kind == RecordKind.REFUSED:
        summary.refused += 1
        return
    summary.suppressed += 1
    merged_into = timelines.get(entry.activation_id or "")
    if merged_into is not None:
        merged_into.merged_triggers += 1
        merged_into.marks.append(
            Mark(record.at_ns, "merged", f"merged {entry.trigger.kind.value} trigger")
        )


def build_report(
    path: Path | str,
    flt: ReportFilter = ReportFilter(),
    public_key: Ed25519PublicKey | None = None,
) -> AuditReport:
    """Read the log at ``path`` (raises LogError if it is not one), and check its chain
    with the code of ``audit verify`` (``public_key`` pins the signer, as --pubkey does)."""
    report = collect(read_records(path), flt)
    report.integrity = Integrity(verify_log(path, public_key))
    return report


# --- where: cameras against the range circle ------------------------------------------------
EARTH_RADIUS_M = 6_371_008.8


def local_m(origin: tuple[float, float], point: tuple[float, float]) -> tuple[float, float]:
    """(east, north) metres of ``point`` from ``origin``, both (lat, lon): a flat local
    projection, well within a metre over a range circle of a few kilometres."""
    lat0, lon0 = origin
    lat, lon = point
    east = math.radians(lon - lon0) * math.cos(math.radians((lat + lat0) / 2)) * EARTH_RADIUS_M
    return east, math.radians(lat - lat0) * EARTH_RADIUS_M


def placed_outcome(timeline: ActivationTimeline, camera: PlacedCamera) -> str:
    """What became of a considered camera, in a few words, for the plot's legend."""
    line = timeline.cameras.get(camera.camera_id)
    if camera.expected and line is not None:
        if line.status == OutcomeStatus.STARTED.value:
            return "started"
        if line.status == OutcomeStatus.ALREADY_RECORDING.value:
            return "already recording"
        if "offline" in camera.reason:
            return "offline (missed)"
        return {
            OutcomeStatus.PENDING.value: "no answer (unfinished)",
            OutcomeStatus.OUT_OF_RANGE.value: "said out of range",
        }.get(line.status, line.status.replace("_", " "))
    if line is not None and not line.expected:
        return "answered, not expected"
    reason = camera.reason
    for words, outcome in (
        ("out of range", "out of range"),
        (" > ", "out of range"),  # "its unit's position: 400 m > 150 m"
        ("offline", "offline"),
        ("asleep", "asleep"),
        ("no position", "no position fix"),
    ):
        if words in reason:
            return outcome
    return "not targeted"


# --- CSV -------------------------------------------------------------------------------------
ACTIVATION_COLUMNS = (
    "activation_id",
    "unit_id",
    "kind",
    "source_type",
    "source_id",
    "event_id",
    "state",
    "reason",
    "observed_at",
    "received_at",
    "decided_at",
    "published_at",
    "finished_at",
    "observed_ms",
    "decided_ms",
    "published_ms",
    "finished_ms",
    "cameras_expected",
    "cameras_started",
    "cameras_missed",
    "missed_ids",
    "p50_ms",
    "max_ms",
    "all_acked_ms",
    "merged_triggers",
    "not_targeted",
)
CAMERA_COLUMNS = (
    "activation_id",
    "unit_id",
    "kind",
    "camera_id",
    "camera_unit_id",
    "expected",
    "targeting",
    "status",
    "started",
    "detail",
    "attempts",
    "acked_at",
    "ack_ms",
    "publish_to_ack_ms",
)


RECORDING_COLUMNS = (
    "activation_id",
    "unit_id",
    "kind",
    "camera_id",
    "recording_id",
    "started_at",
    "started_ms",
    "first_frame_at",
    "pre_event_kept_s",
    "stopped_at",
    "stopped_ms",
    "duration_s",
    "reason",
    "note",
    "files",
    "manifest_sha256",
    "flags",
)


def _iso(at_ns: int | None) -> str:
    return "" if at_ns is None else iso_ns(at_ns)


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _blank(value: object) -> object:
    return "" if value is None else value


def activation_rows(report: AuditReport) -> Iterator[dict[str, object]]:
    for t in report.timelines:
        latencies = t.latencies_ms()
        yield {
            "activation_id": t.activation_id,
            "unit_id": t.unit_id,
            "kind": t.kind,
            "source_type": t.source_type,
            "source_id": t.source_id,
            "event_id": t.event_id,
            "state": t.state,
            "reason": t.reason,
            "observed_at": _iso(t.observed_at_ns),
            "received_at": _iso(t.received_at_ns),
            "decided_at": _iso(t.decided_at_ns),
            "published_at": _iso(t.published_at_ns),
            "finished_at": _iso(t.finished_at_ns),
            "observed_ms": t.ms(t.observed_at_ns),
            "decided_ms": t.ms(t.decided_at_ns),
            "published_ms": _blank(t.ms(t.published_at_ns)),
            "finished_ms": _blank(t.ms(t.finished_at_ns)),
            "cameras_expected": len(t.expected),
            "cameras_started": len(t.expected) - len(t.not_started),
            "cameras_missed": len(t.not_started),
            "missed_ids": " ".join(c.camera_id for c in t.not_started),
            "p50_ms": percentile(latencies, 50) if latencies else "",
            "max_ms": max(latencies) if latencies else "",
            "all_acked_ms": _blank(t.all_acked_ms),
            "merged_triggers": t.merged_triggers,
            "not_targeted": t.not_targeted,
        }


def camera_rows(report: AuditReport) -> Iterator[dict[str, object]]:
    for t in report.timelines:
        for c in t.cameras.values():
            yield {
                "activation_id": t.activation_id,
                "unit_id": t.unit_id,
                "kind": t.kind,
                "camera_id": c.camera_id,
                "camera_unit_id": _blank(c.unit_id),
                "expected": _bool(c.expected),
                "targeting": c.targeting,
                "status": c.status,
                "started": _bool(c.started),
                "detail": c.detail,
                "attempts": c.attempts,
                "acked_at": _iso(c.acked_at_ns),
                "ack_ms": _blank(t.ack_ms(c)),
                "publish_to_ack_ms": _blank(c.publish_to_ack_ms),
            }


def recording_rows(report: AuditReport) -> Iterator[dict[str, object]]:
    """recordings.csv: one row per camera recording per activation it was for."""
    for t in report.timelines:
        for r in t.recordings.values():
            yield {
                "activation_id": t.activation_id,
                "unit_id": t.unit_id,
                "kind": t.kind,
                "camera_id": r.camera_id,
                "recording_id": r.recording_id,
                "started_at": _iso(r.started_at_ns),
                "started_ms": t.ms(r.started_at_ns),
                "first_frame_at": _iso(r.first_frame_ns),
                "pre_event_kept_s": r.pre_event_kept_s,
                "stopped_at": _iso(r.stopped_at_ns),
                "stopped_ms": _blank(t.ms(r.stopped_at_ns)),
                "duration_s": _blank(r.duration_s),
                "reason": _blank(r.reason),
                "note": r.note,
                "files": r.files,
                "manifest_sha256": _blank(r.manifest_sha256),
                "flags": "; ".join(r.flags),
            }


# --- JSON ------------------------------------------------------------------------------------
def _group_json(group: GroupSummary) -> dict[str, object]:
    return {
        "unit_id": group.unit_id,
        "kind": group.kind,
        "activations": group.activations,
        "unfinished": group.unfinished,
        "suppressed": group.suppressed,
        "refused": group.refused,
        "cameras_expected": group.cameras_expected,
        "cameras_started": group.cameras_started,
        "confirmation_rate": group.confirmation_rate,
        "p50_ms": group.p50_ms,
        "p99_ms": group.p99_ms,
        "missed": [{"activation_id": a, "camera_id": c} for a, c in group.missed],
    }


def report_json(report: AuditReport, *, log_name: str, generated_at_ns: int) -> dict[str, object]:
    """report.json: the integrity section and the summary, for machines (the rows per
    activation and per camera are the CSV files)."""
    return {
        "log": log_name,
        "generated_at": iso_ns(generated_at_ns),
        "covers": report.filter.describe(),
        "records_read": report.records_read,
        "unreadable": report.unreadable,
        "activations": len(report.timelines),
        # The chain's verdict in words, as the page's Integrity section says it.
        "headline": (
            "the chain was not checked" if report.integrity is None else report.integrity.headline()
        ),
        "integrity": None if report.integrity is None else report.integrity.as_dict(),
        "summary": [_group_json(g) for g in report.groups],
        "overall": _group_json(report.overall),
        "recording_flags": [
            {
                "activation_id": t.activation_id,
                "camera_id": r.camera_id,
                "recording_id": r.recording_id,
                "flag": flag,
            }
            for t in report.timelines
            for r in t.recordings.values()
            for flag in r.flags
        ],
    }
