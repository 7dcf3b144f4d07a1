"""Rich tables for the demo, ``tail`` and ``trigger``."""

from __future__ import annotations

from collections.abc import Iterable

from rich.table import Table
from rich.text import Text

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


def activation_table(records: Iterable[ActivationRecord], title: str = "Activations") -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for name, justify in (
        ("time (UTC)", "left"),
        ("activation", "left"),
        ("kind", "left"),
        ("source", "left"),
        ("unit", "left"),
        ("state", "left"),
        ("expected", "right"),
        ("started", "right"),
        ("already", "right"),
        ("missed", "right"),
        ("merged", "right"),
        ("p50 ms", "right"),
        ("max ms", "right"),
        ("all acks ms", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for record in records:
        statuses = [c.status for c in record.cameras]
        missed = sum(1 for s in statuses if s in (OutcomeStatus.MISSED, OutcomeStatus.REJECTED))
        table.add_row(
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
    return table


def camera_outcomes_table(record: ActivationRecord) -> Table:
    table = Table(title=f"Cameras for {record.activation_id}", title_justify="left")
    for name in ("camera", "unit", "status", "ms", "why"):
        table.add_column(name)
    for cam in record.cameras:
        confirmed = cam.status in CONFIRMED_OUTCOMES
        style = "green" if confirmed else "bold red"
        if cam.status is OutcomeStatus.OUT_OF_RANGE:
            style = "dim"
        # For a camera that confirmed, why it was targeted says it all; otherwise add what
        # went wrong (no ack after N attempts, expired, out of range by its own fix).
        why = cam.targeting if confirmed or not cam.detail else f"{cam.targeting}; {cam.detail}"
        table.add_row(
            cam.camera_id + ("" if cam.expected else " (not expected)"),
            cam.unit_id or "-",
            Text(cam.status.value, style=style),
            _fmt_ms(cam.latency_ms),
            why,
        )
    return table
