"""Consoles for the tables the command line prints (mesh.dispatch.render): a terminal's
width with low-priority columns left out, or every column with ``--wide``; output that is
not a terminal (a pipe, a file) gets every column, whole."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from rich.console import Console

# The width of output that is not a terminal, and of --wide: no table of ours reaches it,
# so rich never shrinks or cuts a column; a terminal wraps what is longer than itself.
UNLIMITED_WIDTH = 10_000

WideOpt = Annotated[
    bool,
    typer.Option("--wide", help="Every column, even wider than the terminal (lines then wrap)"),
]


def table_console(*, wide: bool = False, stderr: bool = False, soft_wrap: bool = True) -> Console:
    """A console that prints strings as they are (mesh.dispatch.literal), sized as above."""
    from mesh.dispatch.literal import literal_console

    console = literal_console(stderr=stderr, soft_wrap=soft_wrap)
    if wide or not console.is_terminal:
        return literal_console(stderr=stderr, soft_wrap=soft_wrap, width=UNLIMITED_WIDTH)
    return console


def fit_width(console: Console) -> int | None:
    """The width tables must fit, or None for all columns (see table_console)."""
    return None if console.width >= UNLIMITED_WIDTH else console.width
