"""``sage-resilience demo``: a scripted outage and recovery, all local.

The script and its stand-ins are :mod:`sage_resilience._demo`; this
module reads the arguments and sends the events where asked: stdout (a
console view on a terminal, JSON lines otherwise; ``--log-format``
chooses) and, with ``--log FILE``, every event as JSON lines to FILE.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from sage_resilience.cli._options import (
    complete_files,
    error,
    one_line_errors,
)

if TYPE_CHECKING:
    import argparse

    from sage_resilience.cli._options import SubCommands

__all__ = ["add_demo_parser", "demo_command"]


def add_demo_parser(sub: SubCommands) -> None:
    """Add ``demo`` to the CLI's sub-commands *sub*."""
    demo = sub.add_parser(
        "demo",
        help="a scripted outage and recovery against local stand-ins",
        description="Runs a scripted outage and recovery of an "
        "OpenAI-compatible API and a PostgreSQL+pgvector server, both "
        "local stand-ins, printing its events (one readable line each on a "
        "terminal, JSON lines otherwise) and a final status table.",
    )
    one_line_errors(demo)
    complete_files(
        demo.add_argument(
            "--log", metavar="FILE", help="also write the JSON events to FILE"
        )
    )
    demo.add_argument(
        "--quick",
        action="store_true",
        help="skip the PostgreSQL part (no pgserver needed)",
    )
    demo.set_defaults(handler=demo_command)


def demo_command(args: argparse.Namespace) -> int:
    """Run the demo, its events on stdout (and all of them in ``--log``)."""
    from sage_resilience._demo import run_demo  # noqa: PLC0415
    from sage_resilience.cli._logging import configure_logging  # noqa: PLC0415

    log_file = None
    if args.log:
        try:
            log_file = Path(args.log).open("w", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            error("sage-resilience", f"cannot write the log {args.log}: {exc}")
            return 1
    try:
        configure_logging(
            sys.stdout,
            log_format=getattr(args, "log_format", "auto"),
            verbose=getattr(args, "verbose", False),
            log_files=() if log_file is None else (log_file,),
        )
        return run_demo(quick=args.quick, table_to=sys.stdout)
    finally:
        if log_file is not None:
            log_file.close()
