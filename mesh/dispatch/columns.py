"""Which columns of a table to show in a given width (pure: no rich, no terminal).

Ids are what people copy and type (an activation id into `audit`, a key id into `keys
revoke`), so an id column is never cut and never dropped; the other columns go, lowest
priority first, until what is left fits. A text column that stays may wrap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# Rich's default box with padding (0, 1): a border before each column and after the last,
# and a space either side of every cell.
PER_COLUMN = 3
TABLE_EDGE = 1
# A wrappable column is worth keeping if it gets at least this many cells (or its header).
MIN_WRAP_WIDTH = 16


@dataclass(frozen=True)
class ColumnNeed:
    """One column's widths in terminal cells: ``full`` fits every cell on one line."""

    full: int
    priority: int
    is_id: bool = False
    wraps: bool = False
    header: int = 0

    @property
    def minimum(self) -> int:
        if self.is_id or not self.wraps:
            return self.full
        return min(self.full, max(self.header, MIN_WRAP_WIDTH))


def table_width(widths: Sequence[int]) -> int:
    return sum(widths) + PER_COLUMN * len(widths) + TABLE_EDGE


def choose_columns(columns: Sequence[ColumnNeed], width: int | None) -> list[int]:
    """The indices (in order) of the columns to show in ``width`` cells; all of them when
    ``width`` is None (--wide, or output that is not a terminal). Id columns always stay:
    if they alone are wider than ``width`` the terminal wraps the line, cutting nothing."""
    kept = list(range(len(columns)))
    if width is None:
        return kept
    droppable = sorted(
        (i for i, c in enumerate(columns) if not c.is_id), key=lambda i: (columns[i].priority, -i)
    )
    for index in droppable:
        if table_width([columns[i].minimum for i in kept]) <= width:
            break
        kept.remove(index)
    return kept
