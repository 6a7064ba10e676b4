"""``sage-resilience config show|validate|schema``: the YAML configuration.

Exit codes: 0 ok, 1 an invalid file, 2 usage. What is asked for goes to
stdout, errors, notes and warnings to stderr.
"""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

from sage_resilience.cli._options import (
    add_config,
    add_format,
    add_platform,
    complete_files,
    error,
    one_line_errors,
)

if TYPE_CHECKING:
    import argparse

    from sage_resilience.cli._options import SubCommands

__all__ = ["add_config_parser"]

_PROG = "sage-resilience"


def add_config_parser(sub: SubCommands) -> None:
    """Add ``config`` and its actions to the CLI's sub-commands *sub*."""
    config = sub.add_parser(
        "config", help="show, validate, or describe the YAML configuration"
    )
    one_line_errors(config)
    actions = config.add_subparsers(
        dest="config_command", metavar="ACTION", help="what to do"
    )
    show = actions.add_parser(
        "show", help="the resolved configuration for a platform"
    )
    add_platform(show)
    add_config(show)
    show.add_argument(
        "--format",
        choices=["yaml", "json"],
        default="yaml",
        help="yaml (default) or json, on stdout",
    )
    show.set_defaults(handler=show_command)
    validate = actions.add_parser(
        "validate", help="check files for every platform"
    )
    complete_files(
        validate.add_argument(
            "paths",
            nargs="*",
            metavar="PATH",
            help="the YAML files to check (default: env "
            "SAGE_RESILIENCE_CONFIG, else ./resilience.yaml, else the "
            "shipped one)",
        )
    )
    add_format(
        validate,
        "a JSON list of {path, ok, problem, problems, warnings} on stdout",
    )
    validate.set_defaults(handler=validate_command)
    schema = actions.add_parser(
        "schema", help="JSON Schema of the YAML file (for editors)"
    )
    schema.set_defaults(handler=schema_command)
    for parser in (show, validate, schema):
        one_line_errors(parser)
    config.set_defaults(handler=lambda _args: _usage(config))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    return 2


def _found() -> str:
    """The file read when none is named; says which on stderr."""
    from sage_resilience._config import find_config  # noqa: PLC0415

    path, why = find_config()
    print(f"note: using {path} ({why})", file=sys.stderr)
    return path


def show_command(args: argparse.Namespace) -> int:
    """``config show``: the resolved configuration, YAML or JSON."""
    from sage_resilience._config import dump_config, load_config  # noqa: PLC0415
    from sage_resilience.exceptions import ConfigError  # noqa: PLC0415

    try:
        if args.config is None:
            _found()
        config = load_config(args.config, platform=args.platform)
    except ConfigError as exc:
        error(_PROG, str(exc))
        return 1
    sys.stdout.write(dump_config(config, args.format))
    for name, variables in sorted(config.pending_env.items()):
        print(
            f"note: {', '.join(variables)} set(s) policy {name!r}, which no "
            "file declares: it applies when code declares that policy",
            file=sys.stderr,
        )
    return 0


def validate_command(args: argparse.Namespace) -> int:
    """``config validate PATH...``: each file checked for every platform."""
    from sage_resilience._config import (  # noqa: PLC0415
        PLATFORMS,
        load_config,
        self_tripping,
        validate_files,
    )

    failed = 0
    results: list[dict[str, object]] = []
    for path, problem in validate_files(args.paths or [_found()]):
        warnings: dict[str, None] = {}
        if problem is not None:
            failed += 1
            for each in problem.problems:
                print(str(each), file=sys.stderr)
        else:
            if args.format != "json":
                print(f"{path}: ok")
            for platform in sorted(PLATFORMS):
                config = load_config(path, platform=platform, environ={})
                warnings.update(dict.fromkeys(self_tripping(config)))
            for warning in warnings:
                print(f"warning: {warning}", file=sys.stderr)
        results.append(
            {
                "path": path,
                "ok": problem is None,
                "problem": None if problem is None else str(problem),
                "problems": []
                if problem is None
                else [str(each) for each in problem.problems],
                "warnings": list(warnings),
            }
        )
    if args.format == "json":
        print(json.dumps(results, indent=2))
    return 1 if failed else 0


def schema_command(args: argparse.Namespace) -> int:
    """``config schema``: the JSON Schema of the file, for editors."""
    from sage_resilience._config import schema_text  # noqa: PLC0415

    del args
    sys.stdout.write(schema_text())
    return 0
