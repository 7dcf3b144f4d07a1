"""What the command line prints goes through rich as text, never as markup.

rich reads markup (``[red]``, ``[/]``, ``[link=…]``) and emoji codes (``:police_car:``) in
every plain string it prints, table cells and titles included. Much of what we print came
off the wire or out of a log: camera, unit, event and activation ids, a camera's reason, a
receipt's reason, problems that quote a log record. A reason of ``[/]`` stopped the command
(rich's MarkupError), ``[red]…`` and ``[link=…]`` changed what dispatch and auditors saw,
and ``bwc:police_car:7``, a valid camera id, was shown as ``bwc🚓7``.

So, at the boundary:

- every console the command line prints to comes from ``literal_console``: markup, emoji
  codes and highlighting off, so a plain string is printed as it is;
- our own styling is a ``(text, style)`` part of ``literal``, never markup in a string;
- table cells and titles become ``literal`` text (mesh.dispatch.render), whatever console
  draws them;
- control characters other than newline and tab (ESC starts a terminal's own escape
  sequences, which rich passes through) are shown as ``\\xNN``.
"""

from __future__ import annotations

from typing import IO, TYPE_CHECKING

from rich.text import Text

from mesh.ops.logs import printable

if TYPE_CHECKING:
    from rich.console import Console
    from rich.style import Style

Part = str | Text | tuple[str, "str | Style"]


def shown(text: str) -> str:
    """``text`` with every control character but newline and tab written as ``\\xNN`` (the
    one rule, shared with the fatal error lines of mesh.ops.logs.write_fatal)."""
    return printable(text)


def literal(*parts: Part) -> Text:
    """One piece of text, shown exactly as given: no markup, no emoji codes. A ``str`` part
    is plain text; a ``(text, style)`` part is text in one of our styles; a ``Text`` part
    is kept as it is (our own)."""
    pieces: list[str | Text | tuple[str, str | Style]] = []
    for part in parts:
        if isinstance(part, Text):
            pieces.append(part)
        elif isinstance(part, tuple):
            pieces.append((shown(part[0]), part[1]))
        else:
            pieces.append(shown(part))
    return Text.assemble(*pieces)


def literal_console(
    *,
    stderr: bool = False,
    soft_wrap: bool = True,
    width: int | None = None,
    file: IO[str] | None = None,
) -> Console:
    """A console that prints a plain string as it is: no markup, no emoji codes, no
    highlighting (styles come only from ``literal`` parts and ``Text``)."""
    from rich.console import Console

    return Console(
        stderr=stderr,
        soft_wrap=soft_wrap,
        width=width,
        file=file,
        markup=False,
        emoji=False,
        highlight=False,
    )
