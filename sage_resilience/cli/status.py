"""``sage-resilience status``: the status table of every breaker.

Reads the breakers of a running app (``--url``) or those built from the
configuration (``--config``). The latter only shows the application's
state with a shared storage that answers: with ``memory`` storage it is
this command's own process, and with a store that does not answer the
library's local fallback (all closed). Both are said plainly (stderr, and
in the table) and exit 1. Exit codes: 0 ok, 1 an invalid configuration,
an app or storage that cannot be read, or ``memory`` storage; 2 usage.
JSON goes to stdout alone, diagnostics to stderr.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any, Final

from sage_resilience._redact import redact
from sage_resilience._terminal import aligned, printable
from sage_resilience.cli._logging import wants_colour
from sage_resilience.cli._options import add_format, one_line_errors
from sage_resilience.cli._source import (
    CommandError,
    add_source,
    configure_from,
    fail,
    fetch_status,
    probe_storage,
    storage_location,
)

if TYPE_CHECKING:
    import argparse
    from collections.abc import Mapping

    from sage_resilience._config import StorageConfig

__all__ = ["add_status_arguments", "format_status_table", "status_command"]

#: ``storage_health`` of a local status entry: the storage is ``memory``
#: (the state is this process's own), answered, or did not answer.
THIS_PROCESS: Final = "this-process"
REACHABLE: Final = "ok"
UNREACHABLE: Final = "unreachable"

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
    parser.description = (
        "The status table of every breaker: those of a running app "
        "(--url, its /breakers), or those built from the configuration, "
        "whose state is the shared storage's (sqlite, redis). With memory "
        "storage this command can only show its own process, and a shared "
        "storage that does not answer leaves the local fallback: both are "
        "said on stderr and in the table (storage_health in JSON), exit 1."
    )
    add_source(parser)
    add_format(
        parser, "the status entries as one JSON object on stdout", "table"
    )


def status_command(args: argparse.Namespace) -> int:
    """Run ``sage-resilience status``; return the exit code.

    Prints a table (colours only on a terminal, unless ``NO_COLOR`` is
    set) or, with ``--format json`` (or ``--json``), the object
    ``breaker_status()`` returns. Without ``--url`` every entry also has
    ``storage_health`` (``ok``, ``unreachable``, or ``this-process`` for
    ``memory`` storage) and ``storage_error`` (the storage's error, or
    null).

    Returns:
        0 when the status was printed (whatever the states), 1 when the
        configuration is invalid, the app or the shared storage cannot be
        read, or the storage is ``memory`` (the table then shows this
        process only), 2 for a malformed ``--url``.

    .. versionadded:: 0.1.0
    """
    problem = heading = None
    try:
        if args.url is not None:
            status = fetch_status(args.url, args.timeout)
        else:
            status, heading, problem = _local_status(args)
    except CommandError as exc:
        return fail("status", exc)
    if args.format == "json":
        print(json.dumps(status, indent=2))
    else:
        table = format_status_table(status, colour=wants_colour(sys.stdout))
        print(table if heading is None else f"{printable(heading)}\n{table}")
    if problem is None:
        return 0
    return fail("status", CommandError(problem))


def _local_status(
    args: argparse.Namespace,
) -> tuple[dict[str, dict[str, Any]], str | None, str | None]:
    """The status built here: entries, a heading and a problem (or None)."""
    from sage_resilience.status import breaker_status  # noqa: PLC0415

    storage = configure_from(args)
    status = breaker_status()
    error = heading = problem = None
    if storage.backend == "memory":
        health = THIS_PROCESS
        problem = (
            "the storage is 'memory': every process keeps its own "
            "breakers, so this shows this command's process only, not the "
            "application's; use --url with the running app, or a shared "
            "storage (sqlite, redis)"
        )
    else:
        error = probe_storage(storage, args.timeout)
        health = REACHABLE if error is None else UNREACHABLE
        if error is not None:
            heading, problem = _unreachable(storage, error)
    entries = {
        name: {**entry, "storage_health": health, "storage_error": error}
        for name, entry in status.items()
    }
    return entries, heading, problem


def _unreachable(storage: StorageConfig, error: str) -> tuple[str, str]:
    """The table's heading and the stderr line for a silent storage."""
    where = storage_location(storage)
    return (
        f"storage {where}: unreachable ({error})",
        (
            f"storage {where} is unreachable ({error}): the states shown "
            "are this process's local fallback, not the shared state"
        ),
    )


def _cell(entry: Mapping[str, Any], key: str) -> str:
    value = entry.get(key)
    return "-" if value is None else str(value)


def _row(name: str, entry: Mapping[str, Any]) -> tuple[str, ...]:
    state = str(entry.get("state", "?"))
    shown = f"{state} (forced)" if entry.get("forced") else state
    retry_after = entry.get("retry_after") or 0
    last = entry.get("last_failure")
    storage = _cell(entry, "storage")
    health = entry.get("storage_health")
    if health == THIS_PROCESS:
        storage += " (this process)"
    elif health == UNREACHABLE:
        storage += " (unreachable)"
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
        storage,
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
