"""``sage-resilience``: a thin command line over the public API.

Exit codes: 0 ok, 1 a finding or invalid input, 2 usage. Machine-readable
output (``--json``, ``--format json``) goes to stdout alone; logs and
diagnostics go to stderr. This is the only place that configures structlog
(JSON lines); the library itself never does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["configure_logging", "main"]


class _Tee:
    """A structlog logger writing each line to several files."""

    def __init__(self, *files: IO[str]) -> None:
        self._files = files

    def msg(self, message: str) -> None:
        for file in self._files:
            file.write(message + "\n")
            file.flush()

    log = debug = info = warning = warn = error = critical = exception = msg


def configure_logging(*files: IO[str]) -> None:
    """Render sage_resilience events as JSON lines on *files*.

    Args:
        files: Where to write (stderr when none is given).
    """
    targets = files or (sys.stderr,)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        logger_factory=lambda *_: _Tee(*targets),
        cache_logger_on_first_use=False,
    )


def _fail(message: str) -> int:
    print(f"sage-resilience: {message}", file=sys.stderr)
    return 1


# -- config ------------------------------------------------------------------


def _config_show(args: argparse.Namespace) -> int:
    from sage_resilience._config import dump_config, load_config  # noqa: PLC0415
    from sage_resilience.exceptions import ConfigError  # noqa: PLC0415

    try:
        config = load_config(args.config, platform=args.platform)
    except ConfigError as exc:
        return _fail(str(exc))
    sys.stdout.write(dump_config(config, args.format))
    for name, variables in sorted(config.pending_env.items()):
        print(
            f"note: {', '.join(variables)} set(s) policy {name!r}, which no "
            "file declares: it applies when code declares that policy",
            file=sys.stderr,
        )
    return 0


def _config_validate(args: argparse.Namespace) -> int:
    from sage_resilience._config import (  # noqa: PLC0415
        PLATFORMS,
        load_config,
        self_tripping,
        validate_files,
    )

    failed = 0
    for path, error in validate_files(args.paths):
        if error is not None:
            failed += 1
            print(str(error), file=sys.stderr)
            continue
        print(f"{path}: ok")
        warnings: dict[str, None] = {}
        for platform in sorted(PLATFORMS):
            config = load_config(path, platform=platform, environ={})
            warnings.update(dict.fromkeys(self_tripping(config)))
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
    return 1 if failed else 0


def _config_schema(args: argparse.Namespace) -> int:
    from sage_resilience._config import config_schema  # noqa: PLC0415

    del args
    print(json.dumps(config_schema(), indent=2))
    return 0


# -- demo --------------------------------------------------------------------


def _demo(args: argparse.Namespace) -> int:
    from sage_resilience._demo import run_demo  # noqa: PLC0415

    log_file = None
    if args.log:
        try:
            log_file = Path(args.log).open("w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            return _fail(f"cannot write the log {args.log}: {exc}")
    try:
        files: list[IO[str]] = [sys.stdout]
        if log_file is not None:
            files.append(log_file)
        configure_logging(*files)
        return run_demo(quick=args.quick, table_to=sys.stdout)
    finally:
        if log_file is not None:
            log_file.close()


def _lazy(
    module: str, adder: str, command: str
) -> tuple[Callable[[argparse.ArgumentParser], None], Callable[..., int]]:
    """Argument adder and command of a sub-module, imported on demand."""

    def add(parser: argparse.ArgumentParser) -> None:
        getattr(_import(module), adder)(parser)

    def run(args: argparse.Namespace) -> int:
        result: int = getattr(_import(module), command)(args)
        return result

    return add, run


def _import(module: str) -> Any:
    import importlib  # noqa: PLC0415

    return importlib.import_module(module)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sage-resilience",
        description="Resilience policies for Sage's dependencies: "
        "circuit breakers, retries, diagnosis and log analysis.",
    )
    parser.add_argument(
        "--version", action="store_true", help="print the version and exit"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="a scripted outage and recovery against local stand-ins",
        description="Runs a scripted outage and recovery of an "
        "OpenAI-compatible API and a PostgreSQL+pgvector server, both "
        "local stand-ins, printing JSON events and a final status table.",
    )
    demo.add_argument(
        "--log", metavar="FILE", help="also write the JSON events to FILE"
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="skip the PostgreSQL part (no pgserver needed)",
    )
    demo.set_defaults(handler=_demo)

    config = sub.add_parser(
        "config", help="show, validate, or describe the YAML configuration"
    )
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION")
    show = config_sub.add_parser(
        "show", help="the resolved configuration for a platform"
    )
    show.add_argument("--platform", metavar="P")
    show.add_argument("--config", metavar="PATH")
    show.add_argument("--format", choices=["yaml", "json"], default="yaml")
    show.set_defaults(handler=_config_show)
    validate = config_sub.add_parser(
        "validate", help="check files for every platform"
    )
    validate.add_argument("paths", nargs="+", metavar="PATH")
    validate.set_defaults(handler=_config_validate)
    schema = config_sub.add_parser(
        "schema", help="JSON Schema of the YAML file (for editors)"
    )
    schema.set_defaults(handler=_config_schema)
    config.set_defaults(handler=lambda _args: _usage(config))

    for name, module, adder, command, help_text in (
        (
            "doctor",
            "sage_resilience._diagnosis.doctor",
            "add_doctor_arguments",
            "doctor_command",
            "check every configured dependency and diagnose problems",
        ),
        (
            "status",
            "sage_resilience._ops",
            "add_status_arguments",
            "status_command",
            "the status table of every breaker",
        ),
        (
            "breaker",
            "sage_resilience._ops",
            "add_breaker_arguments",
            "breaker_command",
            "open, close or reset a breaker by hand",
        ),
    ):
        add, run = _lazy(module, adder, command)
        sub_parser = sub.add_parser(name, help=help_text)
        try:
            add(sub_parser)
        except ImportError as exc:  # an optional dependency is missing
            sub_parser.set_defaults(
                handler=lambda _args, exc=exc: _fail(
                    f"this command needs {exc.name}: "
                    "pip install 'sage-resilience[all]'"
                )
            )
        else:
            sub_parser.set_defaults(handler=run)

    logs = sub.add_parser("logs", help="analyse JSON logs")
    logs_sub = logs.add_subparsers(dest="logs_command", metavar="ACTION")
    add, run = _lazy(
        "sage_resilience._logs", "add_summarize_arguments", "summarize_command"
    )
    summarize = logs_sub.add_parser(
        "summarize", help="trips, time open, causes and a timeline"
    )
    add(summarize)
    summarize.set_defaults(handler=run)
    logs.set_defaults(handler=lambda _args: _usage(logs))
    return parser


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.version:
        from sage_resilience import __version__  # noqa: PLC0415

        print(__version__)
        return 0
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    configure_logging(sys.stderr)
    try:
        code: int = handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
