"""Rich tables for the demo, ``tail``, ``trigger`` and ``keys list``.

Every cell and title is shown as it is (mesh.dispatch.literal): ids and reasons come off
the wire, and rich would read markup and emoji codes in a plain string."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import JustifyMethod
from rich.table import Table
from rich.text import Text

from mesh.dispatch.columns import ColumnNeed, choose_columns
from mesh.dispatch.literal import literal
from mesh.protocol.models import (
    CONFIRMED_OUTCOMES,
    ActivationRecord,
    ActivationState,
    OutcomeStatus,
)
from mesh.timefmt import clock_ms

STATE_STYLE = {
    ActivationState.PENDING: "yellow",
    ActivationState.CONFIRMED: "green",
    ActivationState.PARTIAL: "bold red",
    ActivationState.MISSED: "bold red",
    ActivationState.CANCELLED: "dim",
}


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


@dataclass(frozen=True)
class Col:
    """A column: its header, how much it matters when the width is short (higher stays
    longer), and whether it holds ids (never cut, never dropped) or text that may wrap."""

    name: str
    priority: int
    justify: JustifyMethod = "left"
    is_id: bool = False
    wraps: bool = False


def fitted_table(
    cols: Sequence[Col],
    rows: Iterable[Sequence[str | Text]],
    *,
    title: str | None = None,
    width: int | None = None,
) -> Table:
    """A table of the columns that fit ``width`` cells (mesh.dispatch.columns), all of them
    when ``width`` is None; a caption names the columns left out. A ``str`` cell or title
    is text, never markup: it is shown exactly as it is."""
    body = [[literal(cell) for cell in row] for row in rows]
    needs = [
        ColumnNeed(
            full=max([cell_len(col.name), *(row[i].cell_len for row in body)]),
            priority=col.priority,
            is_id=col.is_id,
            wraps=col.wraps,
            header=cell_len(col.name),
        )
        for i, col in enumerate(cols)
    ]
    kept = choose_columns(needs, width)
    table = Table(
        title=None if title is None else literal(title), title_justify="left", expand=False
    )
    for i in kept:
        col = cols[i]
        table.add_column(
            col.name,
            justify=col.justify,
            no_wrap=not col.wraps,
            min_width=needs[i].full if col.is_id else None,
            overflow="fold",
        )
    for row in body:
        table.add_row(*(row[i] for i in kept))
    hidden = [cols[i].name for i in range(len(cols)) if i not in kept]
    if hidden:
        table.caption = f"not shown, to fit: {', '.join(hidden)} (--wide shows all)"
        table.caption_justify = "left"
    return table


# Higher priority stays longer in a narrow terminal; the activation id is never dropped.
ACTIVATION_COLUMNS = (
    Col("time (UTC)", 70),
    Col("activation", 0, is_id=True),
    Col("kind", 80),
    Col("source", 30),
    Col("unit", 90),
    Col("state", 100),
    Col("expected", 50, "right"),
    Col("started", 55, "right"),
    Col("already", 15, "right"),
    Col("missed", 60, "right"),
    Col("merged", 10, "right"),
    Col("p50 ms", 20, "right"),
    Col("max ms", 25, "right"),
    Col("all acks ms", 40, "right"),
)


def activation_table(
    records: Iterable[ActivationRecord],
    title: str | None = "Activations",
    width: int | None = None,
) -> Table:
    rows = []
    for record in records:
        statuses = [c.status for c in record.cameras]
        missed = sum(1 for s in statuses if s in (OutcomeStatus.MISSED, OutcomeStatus.REJECTED))
        rows.append(
            (
                clock_ms(record.trigger.observed_at_ns),
                record.activation_id,
                record.trigger.kind.value,
                record.trigger.source.type.value,
                record.unit_id,
                Text(record.state.value, style=STATE_STYLE[record.state]),
                str(sum(1 for c in record.cameras if c.expected)),
                str(statuses.count(OutcomeStatus.STARTED)),
                str(statuses.count(OutcomeStatus.ALREADY_RECORDING)),
                Text(str(missed), style="bold red" if missed else ""),
                str(record.merged_triggers),
                _fmt_ms(record.latency_ms.p50),
                _fmt_ms(record.latency_ms.max),
                _fmt_ms(record.all_acked_ms),
            )
        )
    return fitted_table(ACTIVATION_COLUMNS, rows, title=title, width=width)


CAMERA_COLUMNS = (
    Col("camera", 0, is_id=True),
    Col("unit", 80),
    Col("status", 100),
    Col("ms", 50, "right"),
    Col("why", 40, wraps=True),
)


def camera_outcomes_table(record: ActivationRecord, width: int | None = None) -> Table:
    rows = []
    for cam in record.cameras:
        confirmed = cam.status in CONFIRMED_OUTCOMES
        style = "green" if confirmed else "bold red"
        if cam.status is OutcomeStatus.OUT_OF_RANGE:
            style = "dim"
        # For a camera that confirmed, why it was targeted says it all; otherwise add what
        # went wrong (no ack after N attempts, expired, out of range by its own fix).
        why = cam.targeting if confirmed or not cam.detail else f"{cam.targeting}; {cam.detail}"
        rows.append(
            (
                cam.camera_id + ("" if cam.expected else " (not expected)"),
                cam.unit_id or "-",
                Text(cam.status.value, style=style),
                _fmt_ms(cam.latency_ms),
                why,
            )
        )
    return fitted_table(
        CAMERA_COLUMNS, rows, title=f"Cameras for {record.activation_id}", width=width
    )
