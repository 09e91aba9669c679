"""Tables that fit the terminal: the columns a person needs stay whole, the others give way.

Rich shrinks every column of a table that is too wide, so at 80 columns an id became "4…",
and an id is what a person types next (`lopper confirm ID`). ``fitted_table`` measures the
table first, then drops whole columns in the order of their ``drop`` rank, then narrows the
columns that may be cut (down to their ``least``), and lets Rich wrap what may wrap; a column with ``keep=True`` is never cut.

Cells are Rich markup, as in any Rich table: text from a platform must be escaped first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

Justify = Literal["left", "right", "center"]
WRAP_LEAST = 24  # a column that wraps keeps at least this many cells a line


@dataclass(frozen=True)
class Column:
    header: str
    justify: Justify = "left"
    keep: bool = False  # never cut, wrapped or dropped (an id, a rank)
    drop: int = 0  # dropped when the table is too wide, highest first; 0: never
    least: int | None = None  # may be cut with "…" down to this width
    wrap: bool = False  # may wrap onto several lines (a sentence)


def _build(
    columns: Sequence[Column],
    rows: Sequence[Sequence[str]],
    widths: dict[int, int],
    table_options: dict[str, Any],
) -> Table:
    table = Table(**table_options)
    for index, column in enumerate(columns):
        cut = widths.get(index)
        table.add_column(
            column.header,
            justify=column.justify,
            no_wrap=not column.wrap,
            overflow="fold" if column.wrap else "ellipsis",
            max_width=cut,
            min_width=_natural(column, rows, index) if column.keep else None,
        )
    for row in rows:
        table.add_row(*(Text.from_markup(row[index]) for index in range(len(columns))))
    return table


def _natural(column: Column, rows: Sequence[Sequence[str]], index: int) -> int:
    """The width of the column's longest cell as it shows (markup is not shown)."""
    return max([len(column.header), *(Text.from_markup(row[index]).cell_len for row in rows)])


def fitted_table(
    console: Console,
    given_columns: Sequence[Column],
    given_rows: Sequence[Sequence[str]],
    **table_options: Any,
) -> tuple[Table, list[str]]:
    """The table at the console's width, and the headers of the columns left out."""
    width = console.width
    columns = list(given_columns)
    rows = [list(row) for row in given_rows]
    widths: dict[int, int] = {}
    dropped: list[str] = []

    def too_wide() -> int:
        """How many cells the table is wider than the console, once wrapping columns wrap."""
        naturals = [_natural(c, rows, i) for i, c in enumerate(columns)]
        table = _build(columns, rows, {}, table_options)
        measured = Measurement.get(console, console.options.update_width(10_000), table)
        frame = measured.maximum - sum(naturals)  # borders, padding and separators
        needed = sum(
            min(natural, WRAP_LEAST) if c.wrap else widths.get(i, natural)
            for i, (c, natural) in enumerate(zip(columns, naturals, strict=True))
        )
        return frame + needed - width

    excess = too_wide()
    # First leave out whole columns, the least needed first.
    while excess > 0:
        ranked = sorted((c.drop, i) for i, c in enumerate(columns) if c.drop and not c.wrap)
        if not ranked:
            break
        _rank, index = ranked[-1]
        dropped.append(columns[index].header)
        del columns[index]
        for row in rows:
            del row[index]
        widths = {(i if i < index else i - 1): w for i, w in widths.items() if i != index}
        excess = too_wide()
    # Then narrow what may be cut, all such columns alike, down to their least width.
    while excess > 0:
        cuttable = [
            i
            for i, c in enumerate(columns)
            if c.least is not None and widths.get(i, _natural(c, rows, i)) > c.least
        ]
        if not cuttable:
            break
        for index in cuttable:
            current = widths.get(index, _natural(columns[index], rows, index))
            least = columns[index].least or 0
            widths[index] = max(least, current - max(1, excess // len(cuttable)))
        excess = too_wide()
    return _build(columns, rows, widths, table_options), dropped
