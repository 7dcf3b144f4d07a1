"""``trigger-mesh log export``: the activation log as JSON lines or CSV, for auditors."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Literal, TextIO

from mesh.journal.store import LogRecord, read_records
from mesh.timefmt import iso_ns

ExportFormat = Literal["jsonl", "csv"]
CSV_COLUMNS = (
    "seq",
    "at",
    "at_ns",
    "kind",
    "activation_id",
    "trigger_kind",
    "camera_id",
    "status",
    "latency_ms",
    "detail",
    "body",
)


def export(path: Path | str, fmt: ExportFormat, out: TextIO) -> int:
    """Write every record, in log order; returns how many."""
    count = 0
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    for record in read_records(path):
        body = json.loads(record.body)
        if writer is None:
            row: dict[str, Any] = {
                "seq": record.seq,
                "at": iso_ns(record.at_ns),
                "at_ns": record.at_ns,
                "kind": record.kind,
                "activation_id": record.activation_id,
                "body": body,
            }
            out.write(json.dumps(row, separators=(",", ":")) + "\n")
        else:
            writer.writerow(_csv_row(record, body))
        count += 1
    return count


def _csv_row(record: LogRecord, body: dict[str, Any]) -> dict[str, Any]:
    """Flatten the fields auditors filter on; the whole body stays in the last column."""
    trigger = body.get("trigger") or body.get("record", {}).get("trigger") or {}
    ack = body.get("ack") or {}
    final = body.get("record") or {}
    return {
        "seq": record.seq,
        "at": iso_ns(record.at_ns),
        "at_ns": record.at_ns,
        "kind": record.kind,
        "activation_id": record.activation_id or "",
        "trigger_kind": trigger.get("kind", ""),
        "camera_id": ack.get("camera_id", ""),
        "status": ack.get("status") or final.get("state") or body.get("code", ""),
        "latency_ms": "" if body.get("latency_ms") is None else body["latency_ms"],
        "detail": ack.get("reason") or final.get("reason") or body.get("reason", ""),
        "body": record.body,
    }
