"""`trigger-mesh recording ...`: a camera's recordings (docs/camera.md)."""

from __future__ import annotations

import typer

recording_app = typer.Typer(
    help="A camera's recordings: stop one with a reason, verify one's evidence manifest.",
    no_args_is_help=True,
)
