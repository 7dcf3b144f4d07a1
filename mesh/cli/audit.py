"""``trigger-mesh audit``: verify, replay and report on activation logs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer

from mesh.cli.common import EXIT_USAGE, console, fail
from mesh.cli.integrity import PubkeyOpt, load_pubkey
from mesh.extras import require

T = TypeVar("T")


def _option(name: str, value: str | None, parse: Callable[[str], T]) -> T | None:
    """Parse an option's value; a bad one is a usage error that names the option."""
    if value is None:
        return None
    try:
        return parse(value)
    except ValueError as exc:
        fail(f"{name}: {exc}", EXIT_USAGE)


# --- report ---------------------------------------------------------------------------------
def report(
    log: Annotated[Path, typer.Argument(help="The activation log (SQLite)", show_default=False)],
    *,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            help="Directory for report.html, report.json, activations.csv, cameras.csv, "
            "recordings.csv",
        ),
    ],
    start: Annotated[
        str | None,
        typer.Option("--from", help="Triggers received at or after this UTC time (ISO 8601)"),
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="Triggers received before this UTC time (ISO 8601)")
    ] = None,
    unit: Annotated[str | None, typer.Option("--unit", help="Only triggers of this unit")] = None,
    kind: Annotated[
        str | None, typer.Option("--kind", help="Only this trigger kind (e.g. weapon_draw)")
    ] = None,
    pubkey: PubkeyOpt = None,
) -> None:
    """Write an HTML report (integrity, summary, timelines, range plots), report.json and
    CSV files for an activation log."""
    require("report", "trigger-mesh audit report")
    import csv
    import json
    import sqlite3
    import time

    from mesh.audit.report import (
        ACTIVATION_COLUMNS,
        CAMERA_COLUMNS,
        RECORDING_COLUMNS,
        ReportFilter,
        activation_rows,
        build_report,
        camera_rows,
        check_unit,
        parse_kind,
        parse_utc,
        recording_rows,
        report_json,
    )
    from mesh.audit.report_render import TIMELINE_LIMIT, render_html
    from mesh.cli.progress import progress
    from mesh.dispatch.literal import literal

    # Only this command loads the report modules (and with them matplotlib).
    from mesh.journal.store import LogError

    flt = ReportFilter(
        start_ns=_option("--from", start, parse_utc),
        end_ns=_option("--to", end, parse_utc),
        unit=_option("--unit", unit, check_unit),
        kind=_option("--kind", kind, parse_kind),
    )
    if flt.start_ns is not None and flt.end_ns is not None and flt.start_ns >= flt.end_ns:
        fail(f"--from ({start}) must be before --to ({end})", EXIT_USAGE)
    if out.exists() and not out.is_dir():
        fail(f"--out: {out} exists and is not a directory", EXIT_USAGE)
    key = load_pubkey(pubkey)
    try:
        result = build_report(log, flt, key)
    except (LogError, sqlite3.DatabaseError) as exc:
        fail(str(exc) if isinstance(exc, LogError) else f"{log}: cannot read it ({exc})")

    out.mkdir(parents=True, exist_ok=True)
    html_path = out / "report.html"
    now = time.time_ns()
    with progress("audit report", "activations drawn") as report_progress:
        page = render_html(result, log_name=str(log), generated_at_ns=now, progress=report_progress)
    html_path.write_text(page, "utf-8")
    document = report_json(result, log_name=str(log), generated_at_ns=now)
    (out / "report.json").write_text(json.dumps(document, indent=1) + "\n", "utf-8")
    for name, columns, rows in (
        ("activations.csv", ACTIVATION_COLUMNS, activation_rows(result)),
        ("cameras.csv", CAMERA_COLUMNS, camera_rows(result)),
        ("recordings.csv", RECORDING_COLUMNS, recording_rows(result)),
    ):
        with (out / name).open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
    total = len(result.timelines)
    drawn = min(total, TIMELINE_LIMIT)
    console().print(
        literal(
            f"wrote {html_path} ({total} activation(s), {drawn} timeline(s); "
            f"{flt.describe()}; chain {result.integrity.verdict if result.integrity else '?'}), "
            f"{out / 'report.json'}, {out / 'activations.csv'}, {out / 'cameras.csv'} and "
            f"{out / 'recordings.csv'}"
        )
    )
