"""The `trigger-mesh` command: one Typer app (`app.py`), its command groups registered there."""
