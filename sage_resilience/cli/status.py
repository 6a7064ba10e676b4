"""``sage-resilience status``: the status table of every breaker.

Reads the breakers built from the configuration (``--config``) or those
of a running app (``--url``). Exit codes: 0 ok, 1 an invalid
configuration or an app that cannot be read, 2 usage. JSON goes to stdout
alone, diagnostics to stderr.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Any, Final, TextIO

from sage_resilience._redact import redact
from sage_resilience._terminal import aligned, printable
from sage_resilience.cli._options import add_format, one_line_errors
from sage_resilience.cli._source import (
    CommandError,
    add_source,
    configure_from,
    fail,
    fetch_status,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping

__all__ = ["add_status_arguments", "format_status_table", "status_command"]

_COLOURS: Final = {"closed": "32", "half-open": "33", "open": "31"}

_HEADER: Final = (
    "BREAKER",
    "STATE",
    "FAILURES",
    "CALLS",
    "OK",
    "FAILED",
    "REJECTED",
    "RETRIES",
    "RETRY IN",
    "STORAGE",
    "LAST FAILURE",
)


def add_status_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``status`` options to *parser* (the CLI's subparser).

    ``status [--config PATH | --url URL] [--platform P] [--timeout
    SECONDS] [--format {table,json}]`` (``--json``: ``--format json``). A
    bad value makes *parser* exit 2 with one line.

    .. versionadded:: 0.1.0
    """
    one_line_errors(parser)
    add_source(parser)
    add_format(
        parser, "the status entries as one JSON object on stdout", "table"
    )


def status_command(args: argparse.Namespace) -> int:
    """Run ``sage-resilience status``; return the exit code.

    Prints a table (colours only on a terminal, unless ``NO_COLOR`` is
    set) or, with ``--format json`` (or ``--json``), the object
    ``breaker_status()`` returns.

    Returns:
        0 when the status was printed (whatever the states), 1 when the
        configuration is invalid or the app cannot be read, 2 for a
        malformed ``--url``.

    .. versionadded:: 0.1.0
    """
    try:
        if args.url is not None:
            status = fetch_status(args.url, args.timeout)
        else:
            from sage_resilience.status import breaker_status  # noqa: PLC0415

            configure_from(args)
            status = breaker_status()
    except CommandError as exc:
        return fail("status", exc)
    if args.format == "json":
        print(json.dumps(status, indent=2))
    else:
        print(format_status_table(status, colour=_colour_wanted(sys.stdout)))
    return 0


def _colour_wanted(stream: TextIO) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _cell(entry: Mapping[str, Any], key: str) -> str:
    value = entry.get(key)
    return "-" if value is None else str(value)


def _row(name: str, entry: Mapping[str, Any]) -> tuple[str, ...]:
    state = str(entry.get("state", "?"))
    shown = f"{state} (forced)" if entry.get("forced") else state
    retry_after = entry.get("retry_after") or 0
    last = entry.get("last_failure")
    return (
        str(entry.get("name", name)),
        shown,
        f"{_cell(entry, 'failure_count')}/{_cell(entry, 'failure_threshold')}",
        _cell(entry, "calls"),
        _cell(entry, "successes"),
        _cell(entry, "failures"),
        _cell(entry, "rejections"),
        _cell(entry, "retries"),
        f"{float(retry_after):.1f}s" if retry_after else "-",
        _cell(entry, "storage"),
        "-" if last is None else _shorten(redact(str(last)), 60),
    )


def format_status_table(
    status: Mapping[str, Mapping[str, Any]], *, colour: bool = False
) -> str:
    """A plain, aligned text table of status entries.

    Every cell is shown with its control characters escaped (an error
    message stored in a breaker's status cannot steer the terminal).

    Args:
        status: What :func:`sage_resilience.breaker_status` returns.
        colour: Colour the state with ANSI codes (for a terminal).

    Returns:
        The table, one line per breaker under a header, no final newline.

    .. versionadded:: 0.1.0
    """
    if not status:
        return "no breakers configured"
    states = [str(entry.get("state", "?")) for entry in status.values()]

    def paint(row: int, column: int, cell: str) -> str:
        # The padded state cell only, so that columns stay aligned.
        state = states[row - 1] if row else None
        if not colour or column != 1 or state not in _COLOURS:
            return cell
        return f"\x1b[{_COLOURS[state]}m{cell}\x1b[0m"

    rows = [_HEADER, *(_row(name, entry) for name, entry in status.items())]
    return "\n".join(aligned(rows, paint=paint))


def _shorten(text: str, limit: int) -> str:
    """One line of at most *limit* characters, once escaped."""
    text = printable(" ".join(text.split()))
    return text if len(text) <= limit else text[: limit - 3] + "..."
