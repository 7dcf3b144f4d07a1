"""``trigger-mesh audit``: verify, replay and report on activation logs."""

from __future__ import annotations

import typer

audit_app = typer.Typer(help="Verify, replay and report on activation logs.", no_args_is_help=True)
