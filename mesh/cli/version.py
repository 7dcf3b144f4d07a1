"""``trigger-mesh --version``: the installed distribution's version and the Python running it."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version
from typing import Annotated

import typer

DISTRIBUTION = "trigger-mesh"


def version_text() -> str:
    try:
        ours = version(DISTRIBUTION)
    except PackageNotFoundError:  # run from a source tree that was never installed
        ours = "unknown (not installed)"
    return f"{DISTRIBUTION} {ours} (Python {platform.python_version()})"


def _show(value: bool) -> None:
    if value:
        print(version_text())
        raise typer.Exit()


VersionOpt = Annotated[
    bool,
    typer.Option("--version", callback=_show, is_eager=True, help="Print the version and exit"),
]
