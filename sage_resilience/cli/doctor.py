"""``sage-resilience doctor``: check every configured dependency for real.

The checks are :func:`sage_resilience._diagnosis.doctor.run_doctor`'s;
this module reads the arguments and prints the findings. Exit codes: 0
every finding ``ok``, 1 a problem found or an invalid configuration, 2
usage.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from sage_resilience._redact import redact
from sage_resilience._terminal import printable
from sage_resilience.cli._options import (
    add_config,
    add_format,
    add_platform,
    add_timeout,
    add_url,
    error,
    one_line_errors,
)

if TYPE_CHECKING:
    import argparse

__all__ = ["add_doctor_arguments", "doctor_command"]

_PROG = "sage-resilience doctor"


def add_doctor_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``doctor`` options to *parser* (the CLI's subparser).

    A bad value makes *parser* exit 2 with one line.

    .. versionadded:: 0.1.0
    """
    one_line_errors(parser)
    add_config(parser)
    add_platform(parser)
    parser.add_argument(
        "--dsn",
        metavar="DSN",
        help="PostgreSQL URL for every postgres policy (password: from "
        "the URL or env PGPASSWORD)",
    )
    add_url(parser, "base URL for every http policy")
    add_format(parser, "the findings as a JSON list on stdout")
    add_timeout(parser, "time allowed to each connection and request")


def doctor_command(args: argparse.Namespace) -> int:
    """Run ``sage-resilience doctor``; return the exit code.

    One line per finding on stdout (``policy: cause - explanation /
    fix``, control characters escaped), or with ``--format json`` (or
    ``--json``) a JSON list of ``{policy, cause, explanation, fix}`` on
    stdout alone. Problems with
    the configuration go to stderr.

    Returns:
        0 when every finding is ``ok``, 1 when any is not or the
        configuration is invalid.

    .. versionadded:: 0.1.0
    """
    import asyncio  # noqa: PLC0415 - not needed for --help, --version

    from sage_resilience._config import load_config  # noqa: PLC0415
    from sage_resilience._diagnosis.doctor import run_doctor  # noqa: PLC0415
    from sage_resilience.exceptions import ConfigError  # noqa: PLC0415

    try:
        config = load_config(args.config, platform=args.platform)
    except ConfigError as exc:
        error(_PROG, redact(str(exc)))
        return 1
    findings = asyncio.run(
        run_doctor(config, dsn=args.dsn, url=args.url, timeout=args.timeout)
    )
    if args.format == "json":
        print(json.dumps([f.as_dict() for f in findings], indent=2))
    else:
        for finding in findings:
            print(printable(finding.line()))
    problems = sum(not finding.ok for finding in findings)
    if not findings:
        error(_PROG, "no policy has a kind to check")
    else:
        error(_PROG, f"{len(findings)} checked, {problems} problem(s)")
    return 1 if problems else 0
