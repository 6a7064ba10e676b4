"""Text for a terminal: escaping and aligned tables (_terminal)."""

from __future__ import annotations

from sage_resilience._terminal import aligned, printable


class TestPrintable:
    def test_controls_are_shown_escaped(self):
        """ESC, CR, NUL, BEL, CSI and a bidi override become escapes."""
        assert "\\x1b[2J\\x0d\\x00\\x07\\x9b\\u202e" == printable(
            "\x1b[2J\r\x00\x07\x9b\u202e"
        )

    def test_printable_text_is_kept(self):
        """Plain and non-ASCII printable text are returned as they are."""
        assert "café — ok" == printable("café — ok")

    def test_escaping_twice_changes_nothing(self):
        """An escaped text is printable: escaping is idempotent."""
        once = printable("a\x1b]0;title\x07b")
        assert once == printable(once)


class TestAligned:
    def test_cells_escaped_before_measuring(self):
        """Widths are those of the escaped cells: columns stay aligned."""
        lines = aligned([["name", "state"], ["a\x1bb", "open"], ["c", "x"]])
        assert [
            "name    state",
            "a\\x1bb  open",
            "c       x",
        ] == lines

    def test_right_columns_and_rule(self):
        """Right-aligned columns; a rule under the header when asked."""
        lines = aligned([["n", "count"], ["a", "7"]], right={1}, rule=True)
        assert ["n  count", "-  -----", "a      7"] == lines

    def test_paint_sees_padded_cells(self):
        """paint decorates padded cells, so decorations take no width."""
        lines = aligned(
            [["h", "s"], ["long", "x"]],
            paint=lambda row, column, cell: (
                f"<{cell}>" if (row, column) == (1, 0) else cell
            ),
        )
        assert ["h     s", "<long>  x"] == lines

    def test_no_rows(self):
        """No rows: no lines."""
        assert [] == aligned([])
