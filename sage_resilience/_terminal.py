"""Text for a terminal: control characters escaped, tables aligned.

Whatever the command line prints that came from elsewhere (log lines,
error messages stored in a breaker's status, the answer of a remote app)
goes through :func:`printable`, so it cannot move the cursor, recolour,
retitle or clear the terminal. Every table is built by :func:`aligned`,
which escapes each cell before measuring it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

__all__ = ["aligned", "printable"]

# C0 and C1 controls (ESC, CSI as U+009B), line and paragraph separators,
# bidirectional overrides, marks and isolates (text shown reversed),
# zero-width characters, and lone surrogates (not writable as UTF-8).
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069"
    "\ufeff\ud800-\udfff]"
)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    r"""*text* made safe for a terminal (no escape sequences).

    Every character that could move the cursor, recolour, retitle or
    clear the terminal, or reorder what is shown, is written as an escape:
    the ESC of ``ESC [2J`` is shown as the four characters ``\x1b``, a
    carriage return as ``\x0d``. Printable text is returned as it is, so
    escaping twice changes nothing.
    """
    if text.isascii() and text.isprintable():
        return text
    return _CONTROL.sub(_escaped, text)


def aligned(
    rows: Sequence[Sequence[str]],
    *,
    right: Collection[int] = (),
    rule: bool = False,
    paint: Callable[[int, int, str], str] | None = None,
) -> list[str]:
    """Rows of cells as aligned lines, every cell escaped first.

    Args:
        rows: The cells, row by row (the first row is the header, if any);
            every row has as many cells as the first.
        right: Indexes of the columns aligned to the right.
        rule: Put a line of dashes under the first row.
        paint: Called with (row index, column index, padded cell) to
            decorate a cell once the widths are known (ANSI colours that
            must not count in the width); returns the cell to print.

    Returns:
        One line per row, columns two spaces apart, no trailing spaces.
    """
    if not rows:
        return []
    cells = [[printable(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
    lines = []
    for row_index, row in enumerate(cells):
        padded = []
        for column, cell in enumerate(row):
            width = widths[column]
            text = cell.rjust(width) if column in right else cell.ljust(width)
            if paint is not None:
                text = paint(row_index, column, text)
            padded.append(text)
        lines.append("  ".join(padded).rstrip())
    if rule:
        lines.insert(1, "  ".join("-" * width for width in widths))
    return lines
