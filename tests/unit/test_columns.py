"""Which columns a table keeps in a width (mesh.dispatch.columns), and the tables built with
it rendered by rich at that width: ids whole, nothing wider than the terminal (the command
line in a real terminal: tests/integration/test_cli_tables.py)."""

from __future__ import annotations

from rich.console import Console

from mesh.dispatch.columns import (
    MIN_WRAP_WIDTH,
    PER_COLUMN,
    TABLE_EDGE,
    ColumnNeed,
    choose_columns,
    table_width,
)
from mesh.dispatch.render import Col, fitted_table

COLUMNS = [
    ColumnNeed(full=12, priority=70),  # time
    ColumnNeed(full=18, priority=0, is_id=True),  # activation id
    ColumnNeed(full=16, priority=80),  # kind
    ColumnNeed(full=9, priority=100),  # state
    ColumnNeed(full=40, priority=40, wraps=True, header=3),  # why
    ColumnNeed(full=6, priority=10),  # merged
]


def test_table_width_counts_borders_and_padding() -> None:
    assert table_width([10, 5]) == 15 + 2 * PER_COLUMN + TABLE_EDGE == 22


def test_everything_when_no_width_is_given() -> None:
    assert choose_columns(COLUMNS, None) == [0, 1, 2, 3, 4, 5]


def test_everything_that_fits_stays() -> None:
    full = table_width([c.full for c in COLUMNS])
    assert choose_columns(COLUMNS, full) == [0, 1, 2, 3, 4, 5]


def test_a_wrapping_column_counts_at_its_minimum() -> None:
    # "why" may wrap to MIN_WRAP_WIDTH: nothing needs to go for a width that holds that.
    narrow = [c.full for c in COLUMNS[:4]] + [MIN_WRAP_WIDTH, COLUMNS[5].full]
    assert choose_columns(COLUMNS, table_width(narrow)) == [0, 1, 2, 3, 4, 5]
    assert choose_columns(COLUMNS, table_width(narrow) - 1) == [0, 1, 2, 3, 4]


def test_lowest_priority_goes_first_and_the_id_never() -> None:
    assert choose_columns(COLUMNS, 60) == [1, 2, 3]  # merged, why, time gone, in that order
    assert choose_columns(COLUMNS, 40) == [1, 3]
    assert choose_columns(COLUMNS, 10) == [1]  # wider than 10: the terminal wraps, never cuts


def test_equal_priorities_drop_the_rightmost_first() -> None:
    same = [ColumnNeed(full=10, priority=5), ColumnNeed(full=10, priority=5)]
    assert choose_columns(same, table_width([10])) == [0]


def _render(width: int) -> str:
    cols = (
        Col("time (UTC)", 70),
        Col("activation", 0, is_id=True),
        Col("kind", 80),
        Col("state", 100),
        Col("why", 40, wraps=True),
        Col("merged", 10, "right"),
    )
    row = (
        "04:59:19.180",
        "a-3b60d4f3d2729db9",
        "emergency_lights",
        "confirmed",
        "in range: 58 m <= 100 m (fix 1 s old)",
        "0",
    )
    console = Console(width=width, force_terminal=True, color_system=None)
    with console.capture() as captured:
        console.print(fitted_table(cols, [row], width=width))
    return captured.get()


def test_rendered_tables_keep_ids_whole_at_every_width() -> None:
    for width in (30, 40, 60, 80, 120):
        text = _render(width)
        assert "│ a-3b60d4f3d2729db9 │" in text, (width, text)
        assert "…" not in text
        assert all(len(line) <= width for line in text.splitlines()), (width, text)
    assert "not shown, to fit: time (UTC), why, merged" in " ".join(_render(60).split())
    assert "not shown" not in _render(120)
