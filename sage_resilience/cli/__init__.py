"""``sage-resilience``: a thin command line over the public API.

One module per sub-command (:mod:`.demo`, :mod:`.config`, :mod:`.doctor`,
:mod:`.status`, :mod:`.breaker`, :mod:`.logs`, :mod:`.completion`); the
options several of them share are declared once, in :mod:`._options`.
Building the parser imports none of the engine: ``--help`` and
``--version`` answer without it, and each command imports what it needs
when it runs.

Exit codes: 0 ok, 1 a finding or invalid input, 2 usage (a bad argument:
one line on stderr, never a traceback). Machine-readable output
(``--format json``, alias ``--json``) goes to stdout alone; logs and
diagnostics go to stderr. This is the only place that configures
structlog (:mod:`._logging`: a console view on a terminal, JSON lines
otherwise, ``--log-format`` to choose); the library itself never does.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import TYPE_CHECKING, Any, cast

from sage_resilience.cli._logging import configure_logging
from sage_resilience.cli._options import (
    add_log_options,
    error,
    one_line_errors,
)
from sage_resilience.cli.completion import add_completion_parser
from sage_resilience.cli.config import add_config_parser
from sage_resilience.cli.demo import add_demo_parser

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sage_resilience.cli._options import SubCommands

__all__ = ["configure_logging", "main"]

# Sub-commands whose module is imported on demand, when the parser is
# built: (name, module, argument adder, command, help). A module needing
# an optional dependency that is missing makes its command say so.
_LAZY: tuple[tuple[str, str, str, str, str], ...] = (
    (
        "doctor",
        "sage_resilience.cli.doctor",
        "add_doctor_arguments",
        "doctor_command",
        "check every configured dependency and diagnose problems",
    ),
    (
        "status",
        "sage_resilience.cli.status",
        "add_status_arguments",
        "status_command",
        "the status table of every breaker",
    ),
    (
        "breaker",
        "sage_resilience.cli.breaker",
        "add_breaker_arguments",
        "breaker_command",
        "open, close or reset a breaker by hand",
    ),
)


def _lazy(
    module: str, adder: str, command: str
) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[..., int]]:
    """Argument adder and command of a sub-module, imported on demand."""

    def add(parser: argparse.ArgumentParser) -> None:
        getattr(importlib.import_module(module), adder)(parser)

    def run(args: argparse.Namespace) -> int:
        result: int = getattr(importlib.import_module(module), command)(args)
        return result

    return add, run


def _add_lazy_parsers(sub: SubCommands) -> None:
    for name, module, adder, command, help_text in _LAZY:
        add, run = _lazy(module, adder, command)
        sub_parser = sub.add_parser(name, help=help_text)
        try:
            add(sub_parser)
        except ImportError as exc:  # an optional dependency is missing
            sub_parser.set_defaults(
                handler=lambda _args, exc=exc: _missing(exc)
            )
        else:
            sub_parser.set_defaults(handler=run)


def _missing(exc: ImportError) -> int:
    error(
        "sage-resilience",
        f"this command needs {exc.name}: pip install 'sage-resilience[all]'",
    )
    return 1


def _add_logs_parser(sub: SubCommands) -> None:
    logs = sub.add_parser("logs", help="analyse JSON logs")
    one_line_errors(logs)
    actions = logs.add_subparsers(
        dest="logs_command", metavar="ACTION", help="what to do"
    )
    add, run = _lazy(
        "sage_resilience.cli.logs",
        "add_summarize_arguments",
        "summarize_command",
    )
    summarize = actions.add_parser(
        "summarize", help="trips, time open, causes and a timeline"
    )
    add(summarize)
    # It runs no policy: no event to render, so structlog (about 80 ms to
    # import) is neither imported nor configured.
    summarize.set_defaults(handler=run, emits_events=False)
    logs.set_defaults(handler=lambda _args: _usage(logs))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sage-resilience",
        description="Resilience policies for Sage's dependencies: "
        "circuit breakers, retries, diagnosis and log analysis.",
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the version and exit",
    )
    add_log_options(parser, top=True)
    # Every sub-command's parser is a _CommandParser (mypy cannot tell).
    sub = cast(
        "SubCommands",
        parser.add_subparsers(
            dest="command",
            metavar="COMMAND",
            help="what to do",
            parser_class=_CommandParser,
        ),
    )
    add_demo_parser(sub)
    add_config_parser(sub)
    _add_lazy_parsers(sub)
    _add_logs_parser(sub)
    add_completion_parser(sub, parser)
    return parser


class _CommandParser(argparse.ArgumentParser):
    """A sub-command's parser: it takes the global options too.

    Sub-commands of a sub-command (``config show``) are of this class as
    well, argparse making them of their parent's class.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        add_log_options(self, top=False)


class _VersionAction(argparse.Action):
    """``--version``, as argparse's version action, read only when asked.

    Reading the installed version's metadata costs start-up time.
    """

    def __init__(
        self,
        option_strings: list[str],
        dest: str = argparse.SUPPRESS,
        default: str = argparse.SUPPRESS,
        help: str | None = None,  # noqa: A002 - argparse's own name
    ) -> None:
        super().__init__(
            option_strings=option_strings,
            dest=dest,
            default=default,
            nargs=0,
            help=help,
        )

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        _namespace: argparse.Namespace,
        _values: Any,
        _option_string: str | None = None,
    ) -> None:
        sys.stdout.write(f"{parser.prog} {_version()}\n")
        parser.exit()


def _version() -> str:
    """The installed distribution's version, read from its metadata."""
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("sage-resilience")
    except PackageNotFoundError:  # run from a source tree, not installed
        return "unknown"


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    if getattr(args, "emits_events", True):
        configure_logging(
            sys.stderr, log_format=args.log_format, verbose=args.verbose
        )
    try:
        code: int = handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    return code
