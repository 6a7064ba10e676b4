"""``sage-resilience logs summarize FILE...``: what the logs say happened.

A thin layer over :func:`sage_resilience._logs.summarize` and its
renderers: arguments checked by argparse (exit 2, one line), the report to
stdout or a file, every error one line on stderr (exit 1), never a
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

from sage_resilience import _logs
from sage_resilience._logs.model import (
    _EVENTS,
    DEFAULT_HTML_OUTPUT,
    EVENT_KEYS,
    MAX_WINDOW,
    TIME_KEYS,
)
from sage_resilience._logs.times import _moment, parse_time
from sage_resilience._terminal import printable
from sage_resilience.cli._options import (
    complete_files,
    error,
    one_line_errors,
    positive_int,
    seconds,
)
from sage_resilience.cli._progress import ReadProgress

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sage_resilience._logs import KeysSeen, Summary

__all__ = ["add_summarize_arguments", "summarize_command"]

_positive_float = seconds(MAX_WINDOW)


def _time_argument(text: str) -> str:
    """``--since``/``--until``: checked here, kept as given.

    Checked by argparse, so that a bad value exits 2 with one line, like
    every other bad argument; parsed again (relative times from now) when
    the command runs.
    """
    try:
        parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(printable(str(exc))) from None
    return text


def add_summarize_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``logs summarize`` to *parser*.

    Every argument is checked by its argparse type: a bad one makes the
    parser exit with status 2 and one line on stderr (*parser* is made to
    print errors so).

    Args:
        parser: The sub-command's parser.

    .. versionadded:: 0.1.0
    """
    one_line_errors(parser)
    complete_files(
        parser.add_argument(
            "files",
            nargs="+",
            metavar="FILE",
            help="JSON-lines log files, plain or gzip-compressed; - for "
            "stdin. Several files are merged in time order.",
        )
    )
    parser.add_argument(
        "--since",
        metavar="T",
        type=_time_argument,
        help="ignore events before T: ISO-8601 (naive means UTC), epoch "
        "seconds/ms, or relative to now such as 2h, 30m, 1d",
    )
    parser.add_argument(
        "--until",
        metavar="T",
        type=_time_argument,
        help="ignore events after T (same forms)",
    )
    parser.add_argument(
        "--breaker",
        metavar="NAME",
        action="append",
        dest="breaker",
        help="only this breaker (repeatable; shell patterns like 'api*')",
    )
    parser.add_argument(
        "--format",
        choices=("table", "json", "html"),
        default="table",
        help="table (default), json (one object: lines, skipped, breakers, "
        "timeline) or html (one self-contained page)",
    )
    complete_files(
        parser.add_argument(
            "--output",
            metavar="PATH",
            help="write the report to PATH (default: stdout for table and "
            f"json, {DEFAULT_HTML_OUTPUT} for html); - for stdout",
        )
    )
    parser.add_argument(
        "--flapping-trips",
        type=positive_int,
        default=3,
        metavar="N",
        help="a breaker is flapping after N trips... (default 3)",
    )
    parser.add_argument(
        "--flapping-window",
        type=_positive_float,
        default=600.0,
        metavar="SECONDS",
        help="...within SECONDS (default 600)",
    )


_PROG: Final = "sage-resilience logs summarize"


def _error(message: str) -> None:
    """Print one line on stderr, control characters shown escaped."""
    error(_PROG, message)


def _names(keys: Iterable[str]) -> str:
    """``"a", "b" or "c"``."""
    quoted = [json.dumps(key, ensure_ascii=False) for key in keys]
    if len(quoted) < 2:
        return "".join(quoted)
    return f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _keys_list(seen: KeysSeen) -> str:
    shown = ", ".join(json.dumps(key, ensure_ascii=False) for key in seen.keys)
    return shown or "no keys"


def _lines_name(count: int) -> str:
    return "1 line names" if count == 1 else f"{count:,} lines name"


def _no_event_message(summary: Summary, args: argparse.Namespace) -> str:
    """Why nothing was found, and what the log holds instead (one line).

    Logs of another shape are the usual reason: the event name or the time
    under keys this command does not read.
    """
    files = ", ".join(args.files)
    counts = f"{summary.lines:,} lines read, {summary.skipped:,} skipped"
    time_keys = f"the time under {_names(TIME_KEYS)}"
    if summary.usable:
        return (
            f"no circuit breaker event found in {files}"
            f"{_describe_filters(args)} ({counts})"
        )
    if summary.recognised and summary.first_bad_event is not None:
        bad = summary.first_bad_event
        return (
            f"no circuit breaker event found in {files} ({counts}): "
            f"{_lines_name(summary.recognised)} one but were skipped; "
            f"the first, {bad.file}:{bad.line}, {bad.reason}; looked for "
            f"{time_keys}; its keys: {_keys_list(bad)}"
        )
    looked = (
        f"looked for the event name ({', '.join(sorted(_EVENTS))}) under "
        f"{_names(EVENT_KEYS)} and {time_keys}"
    )
    mention = summary.mention
    if mention is not None and mention.event_key is not None:
        instead = (
            f"{mention.file}:{mention.line} has an event name under the "
            f"key {json.dumps(mention.event_key, ensure_ascii=False)}; "
            f"its keys: {_keys_list(mention)}"
        )
    elif summary.first_object is not None:
        first = summary.first_object
        instead = (
            f"the first JSON object ({first.file}:{first.line}) has the "
            f"keys {_keys_list(first)}"
        )
    else:
        instead = "no line is a JSON object"
    return (
        f"no circuit breaker event found in {files} ({counts}): {looked}; "
        f"{instead}"
    )


def _describe_filters(args: argparse.Namespace) -> str:
    parts = []
    if args.since:
        parts.append(f"since {args.since}")
    if args.until:
        parts.append(f"until {args.until}")
    if args.breaker:
        parts.append("for breaker " + ", ".join(args.breaker))
    return (" " + " ".join(parts)) if parts else ""


def summarize_command(args: argparse.Namespace) -> int:  # noqa: PLR0911 - one exit per input problem
    """Run ``logs summarize`` with parsed arguments.

    Args:
        args: From a parser set up by :func:`add_summarize_arguments`.

    Returns:
        0 when the report was written; 1 when no circuit event was found,
        or a file could not be read or written; 2 for bad arguments. Errors
        are one line on stderr, never a traceback.

    .. versionadded:: 0.1.0
    """
    try:
        since = None if args.since is None else parse_time(args.since)
        until = None if args.until is None else parse_time(args.until)
    except ValueError as exc:
        _error(f"--since/--until: {exc}")
        return 2
    if since is not None and until is not None and since > until:
        _error("--since is after --until")
        return 2
    trips = getattr(args, "flapping_trips", 3)
    window = getattr(args, "flapping_window", 600.0)
    if not isinstance(trips, int) or trips < 1 or not 0 < window <= MAX_WINDOW:
        _error(
            "--flapping-trips must be >= 1 and --flapping-window in "
            f"(0, {MAX_WINDOW:.0e}]"
        )
        return 2
    # Progress on stderr, on a terminal only: each input counted as read.
    progress = ReadProgress()
    with contextlib.ExitStack() as stack:
        stack.callback(progress.finish)
        sources: list[tuple[str, IO[bytes]]] = []
        for name in args.files:
            if name == "-":
                sources.append(("-", progress.track(sys.stdin.buffer)))
                continue
            try:
                stream = stack.enter_context(Path(name).open("rb"))
            except OSError as exc:
                _error(f"cannot read {name}: {exc.strerror or exc}")
                return 1
            sources.append((name, progress.track(stream)))
        try:
            summary = _logs.summarize(
                sources,
                since=None if since is None else _moment(since),
                until=None if until is None else _moment(until),
                breakers=args.breaker,
                flapping_trips=trips,
                flapping_window=window,
            )
        except OSError as exc:
            _error(f"cannot read input: {exc.strerror or exc}")
            return 1
    for problem in summary.problems:
        _error(f"{problem.file}: {problem.reason}")
    if summary.events == 0:
        _error(_no_event_message(summary, args))
        return 1
    return _write_report(summary, args.format, args.output)


def _write_report(summary: Summary, fmt: str, output: str | None) -> int:
    if fmt == "json":
        text = json.dumps(summary.to_json(), indent=2, ensure_ascii=False)
        text += "\n"
    elif fmt == "html":
        text = _logs.render_html(summary)
        output = output or DEFAULT_HTML_OUTPUT
    else:
        text = _logs.render_table(summary)
    if output is None or output == "-":
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader went away (``| head``): no traceback, and none at
            # exit either, when Python flushes stdout again.
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            return 1
        return 0
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        _error(f"cannot write {output}: {exc.strerror or exc}")
        return 1
    print(f"wrote {output}", file=sys.stderr)
    return 0
