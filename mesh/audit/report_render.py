"""``trigger-mesh audit report``, the drawing: timelines and a latency histogram as PNG
(matplotlib, Agg), and one self-contained HTML page around them.

Imported only by the report command: nothing else in the mesh loads matplotlib. Figures
are built without pyplot, so no global figure registry grows and no GUI backend is chosen.
Everything that came from the log is escaped before it goes into the page.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable
from html import escape

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from mesh.audit.report import (
    ActivationTimeline,
    AuditReport,
    CameraLine,
    GroupSummary,
    local_m,
    placed_outcome,
)
from mesh.journal.chain import Verdict
from mesh.journal.integrity import Integrity
from mesh.protocol.models import OutcomeStatus
from mesh.timefmt import iso_ns

TIMELINE_LIMIT = 200  # activations drawn; the summary and the CSV files cover all
MAX_CAMERA_ROWS = 30  # per timeline; the rest are in cameras.csv
DPI = 90

STARTED = "#2e7d32"
ALREADY = "#1565c0"
NOT_STARTED = "#c62828"
PENDING = "#ef8f00"
UNEXPECTED = "#8e8e8e"
GATEWAY = "#333333"
OTHER = "#6a1b9a"


def _colour(camera: CameraLine) -> str:
    if not camera.expected:
        return UNEXPECTED
    if camera.status == OutcomeStatus.STARTED.value:
        return STARTED
    if camera.status == OutcomeStatus.ALREADY_RECORDING.value:
        return ALREADY
    if camera.status == OutcomeStatus.PENDING.value:
        return PENDING
    return NOT_STARTED


def _figure(width: float, height: float) -> Figure:
    # Constrained layout makes room for every label, title and the legend outside the
    # axes (nothing clipped); bbox_inches="tight" would draw each figure twice.
    return Figure(figsize=(width, height), layout="constrained")


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _rows(timeline: ActivationTimeline) -> tuple[list[CameraLine], int]:
    """Cameras to draw, top to bottom: those that started by ack time, then the ones that
    did not (always drawn first when there are too many), and how many were left out."""
    cameras = list(timeline.cameras.values())
    failed = [c for c in cameras if c.expected and not c.started]
    rest = sorted(
        (c for c in cameras if not (c.expected and not c.started)),
        key=lambda c: (timeline.ack_ms(c) is None, timeline.ack_ms(c) or 0.0),
    )
    room = max(0, MAX_CAMERA_ROWS - len(failed))
    # Too many: keep the slowest of those that started, they are the interesting ones.
    kept = rest[-room:] if room else []
    shown = kept + failed[:MAX_CAMERA_ROWS]
    return shown, len(cameras) - len(shown)


def _label(camera: CameraLine) -> str:
    name = camera.camera_id if len(camera.camera_id) <= 18 else camera.camera_id[:17] + "…"
    return name if camera.expected else f"{name} (extra)"


def timeline_png(timeline: ActivationTimeline) -> bytes:
    return _png(timeline_figure(timeline))


def timeline_figure(timeline: ActivationTimeline) -> Figure:
    """One activation: gateway milestones on the top row, then one row per camera, in ms
    after the gateway received the trigger."""
    cameras, hidden = _rows(timeline)
    ms = timeline.ms
    decided = ms(timeline.decided_at_ns) or 0.0
    published = ms(timeline.published_at_ns)
    finished = ms(timeline.finished_at_ns)
    acks = [v for v in (timeline.ack_ms(c) for c in cameras) if v is not None]
    # Late acks and cancels come seconds after the end: the page lists them; drawn, they
    # would squash the milliseconds that matter into one pixel.
    last = timeline.finished_at_ns
    marks = [(ms(m.at_ns) or 0.0, m) for m in timeline.marks if last is None or m.at_ns <= last]
    end = max([decided, published or 0.0, finished or 0.0, *acks, *(t for t, _ in marks), 1.0])
    observed = ms(timeline.observed_at_ns) or 0.0
    # The sensor's clock is not the gateway's: draw its time only when it fits the scale
    # (the page states it either way).
    show_observed = observed != 0.0 and -end <= observed <= end

    labels = ["gateway"] + [_label(c) for c in cameras]
    figure = _figure(10.0, 1.6 + 0.28 * len(labels))
    ax = figure.add_subplot()
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(len(labels) - 0.5, -1.6)
    ax.grid(axis="x", color="#dddddd", linewidth=0.6)
    ax.set_axisbelow(True)

    points = [(0.0, "seen", GATEWAY), (decided, "decided", GATEWAY)]
    if show_observed:
        points.insert(0, (observed, "sensor", GATEWAY))
    if published is not None:
        points.append((published, "published", GATEWAY))
    if finished is not None:
        points.append((finished, "finished", GATEWAY))
    rows = {c.camera_id: i for i, c in enumerate(cameras, start=1)}
    for x, mark in marks:
        row = rows.get(mark.camera_id or "", 0)
        if row:
            ax.plot([x], [row], marker="*", color=OTHER, markersize=8, linestyle="none")
        else:
            points.append((x, mark.tag, OTHER))
    _draw_gateway(ax, points, end - min(0.0, observed if show_observed else 0.0))
    start = published if published is not None else decided
    _draw_cameras(ax, timeline, cameras, start, finished if finished is not None else end)

    low = min(0.0, observed if show_observed else 0.0)
    ax.set_xlim(low - 0.05 * (end - low), end + 0.15 * (end - low))
    ax.set_xlabel("ms after the gateway received the trigger", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    title = f"{timeline.activation_id}  {timeline.kind}  unit {timeline.unit_id}  {timeline.state}"
    if hidden:  # a second line: one would run off a narrow figure
        title += f"\n{hidden} more cameras not drawn: see cameras.csv"
    ax.set_title(title, fontsize=9, loc="left")
    ax.legend(handles=_legend(), fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return figure


def _draw_gateway(ax: Axes, points: list[tuple[float, str, str]], span: float) -> None:
    """Milestones on row 0, dashed down the plot. Names of ones that (nearly) coincide, such
    as seen and decided, are joined; close ones are printed at staggered heights."""
    merged: list[tuple[float, list[str], str]] = []
    for x, name, colour in sorted(points, key=lambda p: p[0]):
        if merged and x - merged[-1][0] <= 0.01 * span and merged[-1][2] == colour:
            merged[-1][1].append(name)
        else:
            merged.append((x, [name], colour))
    previous: float | None = None
    level = 0
    for x, names, colour in merged:
        level = (level + 1) % 3 if previous is not None and x - previous < 0.12 * span else 0
        previous = x
        milestone = colour == GATEWAY
        ax.plot(
            [x],
            [0],
            marker="D" if milestone else "*",
            color=colour,
            markersize=5 if milestone else 8,
            linestyle="none",
        )
        if milestone:
            ax.axvline(x, color="#aaaaaa", linestyle="--", linewidth=0.6, zorder=0)
        ax.annotate(
            "/".join(names),
            (x, 0),
            xytext=(0, 5 + 9 * level),
            textcoords="offset points",
            fontsize=7,
            ha="center",
            va="bottom",
            color=colour,
        )


def _draw_cameras(
    ax: Axes,
    timeline: ActivationTimeline,
    cameras: list[CameraLine],
    start: float,
    silent_until: float,
) -> None:
    """A bar per camera from the publish to its ack (or, if it never answered, to the end)."""
    for row, camera in enumerate(cameras, start=1):
        colour = _colour(camera)
        acked = timeline.ack_ms(camera)
        stop = acked if acked is not None else silent_until
        ax.hlines(row, start, stop, color=colour, linewidth=3, alpha=0.55)
        marker = "o" if camera.started or not camera.expected else "X"
        ax.plot([stop], [row], marker=marker, color=colour, markersize=6, linestyle="none")
        text = f"{acked:.1f} ms" if acked is not None and camera.started else camera.status
        ax.annotate(
            text,
            (stop, row),
            xytext=(5, 0),
            textcoords="offset points",
            fontsize=7,
            va="center",
            color=colour,
        )


def _legend() -> list[Line2D]:
    def entry(colour: str, marker: str, label: str, line: bool = True) -> Line2D:
        style = "-" if line else "none"
        return Line2D([], [], color=colour, marker=marker, lw=3, ls=style, alpha=0.8, label=label)

    return [
        entry(STARTED, "o", "started"),
        entry(ALREADY, "o", "already recording"),
        entry(NOT_STARTED, "X", "did not start"),
        entry(PENDING, "X", "no answer yet (unfinished)"),
        entry(UNEXPECTED, "o", "extra: not expected"),
        entry(OTHER, "*", "retry, escalation, other", line=False),
    ]


def histogram_png(latencies_ms: list[float], p50: float | None, p99: float | None) -> bytes:
    return _png(histogram_figure(latencies_ms, p50, p99))


def histogram_figure(latencies_ms: list[float], p50: float | None, p99: float | None) -> Figure:
    figure = _figure(7.0, 2.8)
    ax = figure.add_subplot()
    ax.hist(latencies_ms, bins=min(40, max(5, len(latencies_ms) // 3)), color=STARTED, alpha=0.7)
    low, high = ax.get_xlim()
    for row, (value, name) in enumerate(((p50, "p50"), (p99, "p99"))):
        if value is not None:
            ax.axvline(value, color=GATEWAY, linestyle="--", linewidth=0.8)
            # Toward the middle of the plot, so a percentile at the right edge (p99 is the
            # slowest bar) keeps its label inside; p50 and p99 at different heights.
            right_half = value > (low + high) / 2
            ax.annotate(
                f"{name} {value:.1f} ms",
                (value, 1),
                xycoords=("data", "axes fraction"),
                xytext=(-4 if right_half else 4, -10 - 11 * row),
                textcoords="offset points",
                ha="right" if right_half else "left",
                fontsize=8,
                bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.8},
            )
    ax.set_xlabel("trigger → ack of the expected cameras that started (ms)", fontsize=8)
    ax.set_ylabel("cameras", fontsize=8)
    ax.tick_params(labelsize=8)
    return figure


# --- where: cameras against the range circle ------------------------------------------------
# Outcome -> (colour, marker); anything else is drawn as OTHER.
PLACES = {
    "started": (STARTED, "o"),
    "already recording": (ALREADY, "o"),
    "offline (missed)": (NOT_STARTED, "s"),
    "missed": (NOT_STARTED, "X"),
    "rejected": (NOT_STARTED, "P"),
    "said out of range": (NOT_STARTED, "v"),
    "no answer (unfinished)": (PENDING, "X"),
    "cancelled": (PENDING, "P"),
    "answered, not expected": (UNEXPECTED, "D"),
    "out of range": (UNEXPECTED, "o"),
    "offline": (UNEXPECTED, "s"),
    "asleep": (UNEXPECTED, "v"),
    "not targeted": (UNEXPECTED, "^"),
}
FRAME_RADII = 3.0  # the plot shows up to this many radii around the centre
LABEL_ALL_UP_TO = 20  # more cameras than this: only those that did not start are named
_NOT_STARTED_PLACES = frozenset(
    o for o, (colour, _) in PLACES.items() if colour in (NOT_STARTED, PENDING)
)


def range_png(timeline: ActivationTimeline) -> bytes | None:
    figure = range_figure(timeline)
    return None if figure is None else _png(figure)


def _placed(
    timeline: ActivationTimeline, centre: tuple[float, float], frame: float
) -> tuple[dict[str, list[tuple[str, float, float]]], int, int]:
    """Cameras by outcome, as (id, east, north) in metres from the centre; how many have no
    fix, and how many lie beyond ``frame`` metres."""
    groups: dict[str, list[tuple[str, float, float]]] = {}
    unplaced = beyond = 0
    for camera in timeline.considered:
        if camera.position is None:
            unplaced += 1
            continue
        east, north = local_m(centre, camera.position)
        if max(abs(east), abs(north)) > frame:
            beyond += 1
            continue
        groups.setdefault(placed_outcome(timeline, camera), []).append(
            (camera.camera_id, east, north)
        )
    return groups, unplaced, beyond


def range_figure(timeline: ActivationTimeline) -> Figure | None:
    """The cameras the decision considered, where the log placed them, against the range
    circle, each marked by its outcome; None if the command had no centre to draw."""
    from matplotlib.patches import Circle

    centre, radius = timeline.origin, timeline.radius_m
    if centre is None or radius is None:
        return None
    frame = max(radius, 1.0) * FRAME_RADII
    groups, unplaced, beyond = _placed(timeline, centre, frame)
    reach = max(
        [max(radius, 1.0)] + [max(abs(e), abs(n)) for g in groups.values() for _, e, n in g]
    )
    figure = _figure(7.5, 5.6)
    ax = figure.add_subplot()
    ax.add_patch(
        Circle((0, 0), radius, fill=False, ec=GATEWAY, ls="--", lw=1.0, label=f"range {radius:g} m")
    )
    ax.plot([0], [0], marker="+", color=GATEWAY, ms=12, ls="none", label="range centre")
    if timeline.gateway_at is not None:
        east, north = local_m(centre, timeline.gateway_at)
        reach = max(reach, abs(east), abs(north))
        ax.plot(
            [east],
            [north],
            marker="s",
            mfc="none",
            mec=OTHER,
            ms=11,
            mew=1.6,
            ls="none",
            label=f"gateway (unit {timeline.unit_id})",
        )
    crowded = sum(len(points) for points in groups.values()) > LABEL_ALL_UP_TO
    for outcome in sorted(groups, key=lambda o: list(PLACES).index(o) if o in PLACES else 99):
        colour, marker = PLACES.get(outcome, (OTHER, "o"))
        points = groups[outcome]
        ax.plot(
            [p[1] for p in points],
            [p[2] for p in points],
            marker=marker,
            color=colour,
            ms=7,
            ls="none",
            alpha=0.85,
            label=f"{outcome} ({len(points)})",
        )
        for name, east, north in points:
            if crowded and outcome not in _NOT_STARTED_PLACES:
                continue  # names on top of each other help nobody
            ax.annotate(
                name if len(name) <= 14 else name[:13] + "…",
                (east, north),
                xytext=(5, 3),
                textcoords="offset points",
                fontsize=6.5,
                color=colour,
                annotation_clip=True,
            )
    edge = reach * 1.15
    ax.set_xlim(-edge, edge)
    ax.set_ylim(-edge, edge)
    ax.set_aspect("equal")
    ax.grid(color="#eeeeee", linewidth=0.6)
    ax.set_axisbelow(True)
    ax.set_xlabel("metres east of the range centre", fontsize=8)
    ax.set_ylabel("metres north", fontsize=8)
    ax.tick_params(labelsize=7)
    title = f"{timeline.activation_id}  {timeline.kind}: cameras considered"
    notes = []
    if unplaced:
        notes.append(f"{unplaced} without a position fix")
    if beyond:
        notes.append(f"{beyond} beyond {frame:.0f} m")
    if notes:
        title += "\nnot drawn: " + ", ".join(notes) + " (see the targeting reasons)"
    if crowded:
        title += "\nnamed: only the expected cameras that did not start (all: cameras.csv)"
    ax.set_title(title, fontsize=9, loc="left")
    ax.legend(
        fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), title="outcome", title_fontsize=7
    )
    return figure


# --- HTML ------------------------------------------------------------------------------------
_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1100px}
table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:3px 8px}
th{background:#f2f2f2;text-align:left}td.n{text-align:right}tr.total td{font-weight:bold}
.bad{color:#c62828}.warn{color:#b36b00}section{margin:2em 0;border-top:1px solid #ddd}
img{max-width:100%}code{font-size:90%}ul.marks{font-size:90%;color:#555}
"""
SUMMARY_HEADINGS = (
    "unit",
    "kind",
    "activations",
    "unfinished",
    "suppressed",
    "refused",
    "cameras expected",
    "started",
    "confirmation",
    "p50 ms",
    "p99 ms",
    "missed",
    "missed cameras",
)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _num(value: float | None, fmt: str = "{:.1f}") -> str:
    return "–" if value is None else fmt.format(value)


def _summary_row(group: GroupSummary, total: bool = False) -> str:
    rate = group.confirmation_rate
    missed_cls = ' class="n bad"' if group.missed else ' class="n"'
    cells = [
        f"<td>{escape(group.unit_id)}</td>",
        f"<td>{escape(group.kind)}</td>",
        *(
            f'<td class="n">{value}</td>'
            for value in (
                group.activations,
                group.unfinished,
                group.suppressed,
                group.refused,
                group.cameras_expected,
                group.cameras_started,
                _num(None if rate is None else rate * 100, "{:.1f} %"),
                _num(group.p50_ms),
                _num(group.p99_ms),
            )
        ),
        f"<td{missed_cls}>{len(group.missed)}</td>",
        f"<td>{escape(' '.join(group.missed_ids))}</td>",
    ]
    return f"<tr{' class=total' if total else ''}>{''.join(cells)}</tr>"


def _facts(t: ActivationTimeline) -> str:
    def at(label: str, at_ns: int | None) -> str:
        return "" if at_ns is None else f"{label} +{t.ms(at_ns):.1f} ms"

    parts = [
        f"trigger {escape(t.event_id)} from {escape(t.source_type)} source {escape(t.source_id)}",
        f"received {iso_ns(t.received_at_ns)}",
        _observed(t.ms(t.observed_at_ns) or 0.0),
        at("decided", t.decided_at_ns),
        at("published", t.published_at_ns) or "never published",
        at("finished", t.finished_at_ns) or "no finished record",
    ]
    if t.all_acked_ms is not None:
        parts.append(f"all expected acked in {t.all_acked_ms:.1f} ms")
    parts.append(f"{len(t.expected)} expected, {t.not_targeted} considered and not targeted")
    if t.merged_triggers:
        parts.append(f"{t.merged_triggers} merged trigger(s)")
    if t.reason:
        parts.append(f"reason: {escape(t.reason)}")
    return "; ".join(p for p in parts if p)


def _observed(offset_ms: float) -> str:
    when = "before" if offset_ms <= 0 else "after"
    return f"the sensor's clock says it observed it {abs(offset_ms):.1f} ms {when} that"


def _section(t: ActivationTimeline) -> str:
    state_cls = "" if t.state == "confirmed" else ' class="bad"'
    lines = [
        f'<section class="activation" id="{escape(t.activation_id)}">',
        f"<h3><code>{escape(t.activation_id)}</code> {escape(t.kind)}, unit "
        f"{escape(t.unit_id)}: <span{state_cls}>{escape(t.state)}</span></h3>",
        f"<p>{_facts(t)}</p>",
        f'<img class="timeline" alt="timeline of activation {escape(t.activation_id)}" '
        f'src="{_data_uri(timeline_png(t))}">',
    ]
    where = range_png(t)
    if where is None:
        lines.append(
            "<p>No range plot: the command had no centre "
            "(no position of the car or of the trigger).</p>"
        )
    else:
        lines.append(
            f'<img class="range" alt="cameras against the range circle of activation '
            f'{escape(t.activation_id)}" src="{_data_uri(where)}">'
        )
    if t.not_started:
        missed = ", ".join(
            f"<code>{escape(c.camera_id)}</code> ({escape(c.status)}"
            + (f": {escape(c.detail)}" if c.detail else "")
            + ")"
            for c in t.not_started
        )
        lines.append(f'<p class="bad">Did not start: {missed}</p>')
    if t.recordings:
        lines.append(_recordings(t))
    if t.marks:
        items = "".join(
            f"<li>+{t.ms(m.at_ns):.1f} ms: {escape(m.label)}"
            + (f" (<code>{escape(m.camera_id)}</code>)" if m.camera_id else "")
            + "</li>"
            for m in sorted(t.marks, key=lambda m: m.at_ns)
        )
        lines.append(f'<ul class="marks">{items}</ul>')
    lines.append("</section>")
    return "\n".join(lines)


def _recordings(t: ActivationTimeline) -> str:
    """Each camera's recording span for the activation (its `recording` messages), with
    the flags: an officer's stop without a reason, shorter than the policy's minimum."""

    def at(at_ns: int | None) -> str:
        ms = t.ms(at_ns)
        return "not reported" if ms is None else f"+{ms / 1000:.3f} s"

    rows = []
    for r in t.recordings.values():
        duration = r.duration_s
        flags = "; ".join(r.flags)
        rows.append(
            "<tr>"
            f"<td><code>{escape(r.camera_id)}</code></td>"
            f"<td><code>{escape(r.recording_id)}</code></td>"
            f"<td>{escape(at(r.started_at_ns))} ({r.pre_event_kept_s:g} s before)</td>"
            f"<td>{escape(at(r.stopped_at_ns))}</td>"
            f"<td>{'' if duration is None else f'{duration:g} s'}</td>"
            f"<td>{escape(r.reason or 'still recording, or its stop not reported')}</td>"
            f"<td>{escape(r.note)}</td>"
            f"<td>{r.files}</td>"
            f"<td{' class=bad' if flags else ''}>{escape(flags)}</td>"
            "</tr>"
        )
    minimum = (
        "no minimum" if t.min_recording_s is None else f"policy minimum {t.min_recording_s:g} s"
    )
    return (
        f"<p>Recordings (times after the trigger was received; {minimum}):</p>"
        '<table class="recordings"><tr><th>camera</th><th>recording</th><th>started</th>'
        "<th>stopped</th><th>duration</th><th>reason</th><th>note</th><th>files</th>"
        "<th>flags</th></tr>" + "".join(rows) + "</table>"
    )


def _flag_summary(report: AuditReport) -> list[str]:
    flagged = [(t, r) for t in report.timelines for r in t.flagged]
    if not flagged:
        return []
    items = "".join(
        f'<li><a href="#{escape(t.activation_id)}"><code>{escape(t.activation_id)}</code></a> '
        f"<code>{escape(r.camera_id)}</code>: {escape('; '.join(r.flags))}</li>"
        for t, r in flagged
    )
    return [f'<p class="bad">{len(flagged)} recording(s) flagged:</p><ul>{items}</ul>']


def _integrity(integrity: Integrity | None) -> list[str]:
    """The chain check of `audit verify`, as a table (mesh.journal.integrity)."""
    if integrity is None:
        return ['<h2>Integrity</h2><p class="warn">The chain was not checked.</p>']
    # Only a chain checked against a pinned key is intact: consistent (no key given),
    # unsigned and empty are warnings, tampered is a break.
    verdict = integrity.verdict
    cls = (
        ' class="bad"' if verdict is Verdict.TAMPERED else ' class="warn"' if verdict.warns else ""
    )
    rows = "".join(
        f"<tr><th>{escape(label)}</th><td{cls if label == 'chain' else ''}>{escape(text)}</td></tr>"
        for label, text in integrity.lines()
    )
    return [
        "<h2>Integrity</h2>",
        f'<table class="integrity">{rows}</table>',
        "<p>The same check as <code>trigger-mesh audit verify</code>: each record's hash, "
        "its link to the one before, every checkpoint's signature.</p>",
    ]


def render_html(
    report: AuditReport,
    *,
    log_name: str,
    generated_at_ns: int,
    limit: int = TIMELINE_LIMIT,
    progress: Callable[[int, int | None], None] | None = None,
) -> str:
    """The page; ``progress`` is told (done, total) of the activations drawn: drawing
    them is what takes the time."""
    total = len(report.timelines)
    drawn = report.timelines[:limit]
    head = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Activation audit report: {escape(log_name)}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>Activation audit report</h1>",
        f"<p>Log <code>{escape(log_name)}</code>; covers {escape(report.filter.describe())}. "
        f"Generated "
        f"{iso_ns(generated_at_ns)}. {report.records_read} records read, "
        f"{total} activation(s).</p>",
    ]
    if report.unreadable:
        head.append(
            f'<p class="warn">{report.unreadable} record(s) could not be read and are left out.</p>'
        )
    summary = [
        *_integrity(report.integrity),
        "<h2>Summary</h2>",
        "<table class=summary><tr>" + "".join(f"<th>{h}</th>" for h in SUMMARY_HEADINGS) + "</tr>",
        *(_summary_row(g) for g in report.groups),
        _summary_row(report.overall, total=True),
        "</table>",
        "<p>Confirmation: expected cameras that started (or were already recording) / "
        "expected cameras. Latencies: trigger received → ack, for those cameras. Missed: "
        "expected cameras that did not start, for any reason (missed, rejected, out of "
        "range, cancelled, or no answer yet in an unfinished activation).</p>",
        *_flag_summary(report),
    ]
    overall = report.overall
    if overall.latencies_ms:
        png = histogram_png(overall.latencies_ms, overall.p50_ms, overall.p99_ms)
        summary.append(f'<img class="histogram" alt="latency histogram" src="{_data_uri(png)}">')
    body = ["<h2>Activations</h2>"]
    if total > len(drawn):
        body.append(
            f'<p class="warn">Timelines are drawn for the first {len(drawn)} of {total} '
            "activations (in log order); the summary and the CSV files cover all of them.</p>"
        )
    elif not total:
        body.append("<p>No activation matches.</p>")
    for done, t in enumerate(drawn, start=1):
        body.append(_section(t))
        if progress is not None:
            progress(done, len(drawn))
    return "\n".join([*head, *summary, *body, "</body></html>"]) + "\n"
