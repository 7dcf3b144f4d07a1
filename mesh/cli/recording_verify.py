"""``trigger-mesh recording verify DIR``: a recording against its signed manifest.

Registered on the ``recording`` group (``mesh.cli.recording``) by ``mesh.cli.app``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from mesh.cli.common import EXIT_USAGE, fail
from mesh.cli.tables import WideOpt, fit_width, table_console

if TYPE_CHECKING:
    from mesh.camera.recording.verify import VerifyReport
    from mesh.security.trust import TrustStore

# `recording verify` exit statuses (docs/cli.md, docs/camera.md).
EXIT_INTACT, EXIT_FINDINGS, EXIT_UNVERIFIED = 0, 1, 3
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def _trust(path: Path | None) -> TrustStore | None:
    from mesh.documents import ConfigError
    from mesh.security.trust import TrustStore

    if path is None:
        return None
    if not path.is_file():
        fail(f"--trust {path}: no such file")
    try:
        return TrustStore.load(path)
    except ConfigError as exc:
        fail(f"trust store: {exc}")


def verify(
    directory: Annotated[
        Path, typer.Argument(help="The recording's directory (holds manifest.json)")
    ],
    trust: Annotated[
        Path | None,
        typer.Option("--trust", help="The trust store: check the signature by the camera's key"),
    ] = None,
    camera: Annotated[
        str | None, typer.Option("--camera", help="The camera the recording must be from")
    ] = None,
    expected_sha256: Annotated[
        str | None,
        typer.Option(
            "--manifest-sha256",
            help="The manifest hash the activation log holds (its `recording` record)",
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="The report as one JSON object")] = False,
    wide: WideOpt = False,
) -> None:
    """Check a recording against its signed manifest.json.

    Checks the signature, every segment's presence, size and SHA-256, their order and
    continuity, and that the directory holds nothing else (any unlisted file or a
    subdirectory is extra; only recording.json, segments.jsonl and the manifest writer's
    temporary files are left out); names each removed, edited, reordered, moved or extra
    segment and each gap.

    Only --trust (the fleet's trust store) proves which camera signed it: without it the
    verdict is at best "unverified", never "intact".

    Exit 0: intact (with --trust); 1: findings (each named); 3: no finding, but the
    signature was not checked (no --trust); 2: no such directory, no readable
    manifest.json, or a bad option or trust store.
    """
    from mesh.camera.recording.verify import (
        ManifestUnreadable,
        Verdict,
        check_recording,
        read_manifest,
        scan_directory,
    )

    if expected_sha256 is not None and _SHA256.fullmatch(expected_sha256) is None:
        fail(f"--manifest-sha256 {expected_sha256!r}: 64 hex digits", EXIT_USAGE)
    store = _trust(trust)
    try:
        data = read_manifest(directory)
        files = scan_directory(directory)
    except ManifestUnreadable as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{directory}: cannot read the recording ({exc.strerror})")
    report = check_recording(
        data, files, trust=store, camera=camera, expected_sha256=expected_sha256
    )
    if json_out:
        print(json.dumps(report.as_dict(), separators=(",", ":"), ensure_ascii=False))
    else:
        _show(report, directory, wide=wide)
    if report.verdict is Verdict.FAILED:
        raise typer.Exit(EXIT_FINDINGS)
    if report.verdict is Verdict.UNVERIFIED:
        raise typer.Exit(EXIT_UNVERIFIED)


def _show(report: VerifyReport, directory: Path, *, wide: bool) -> None:
    from mesh.dispatch.literal import literal
    from mesh.dispatch.render import Col, fitted_table
    from mesh.timefmt import iso_ns

    out = table_console(wide=wide)
    manifest = report.manifest
    out.print(literal(f"recording {directory}"))
    out.print(literal(f"manifest.json SHA-256 {report.manifest_sha256}"))
    if manifest is not None:
        out.print(
            literal(
                f"camera {manifest.camera_id}, recording {manifest.recording_id}, activations "
                f"{', '.join(manifest.activations)}; stopped {iso_ns(manifest.stopped_at_ns)} "
                f"({manifest.stop_reason.value}"
                + (f": {manifest.stop_note}" if manifest.stop_note else "")
                + ")"
            )
        )
        rows = [
            (
                str(segment.index),
                segment.name,
                str(segment.bytes),
                str(segment.frames),
                iso_ns(segment.first_frame_ns),
                iso_ns(segment.last_frame_ns),
                report.segment_status.get(position, "ok"),
            )
            for position, segment in enumerate(manifest.segments)
        ]
        columns = (
            Col("#", 100, justify="right"),
            Col("file", 0, is_id=True),
            Col("bytes", 20, justify="right"),
            Col("frames", 30, justify="right"),
            Col("first frame (UTC)", 40),
            Col("last frame (UTC)", 10),
            Col("status", 100),
        )
        out.print(fitted_table(columns, rows, width=fit_width(out)))
    out.print(literal(report.signature_line()))
    for finding in report.findings:
        out.print(literal(f"{finding.kind.value.upper()}: {finding.message}"))
    if report.unlisted:
        out.print(
            literal(f"ignored, the manifest writer's temporary files: {', '.join(report.unlisted)}")
        )
    out.print(literal(report.summary()))
