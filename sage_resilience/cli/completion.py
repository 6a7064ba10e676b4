"""``sage-resilience completion bash|zsh|tcsh``: a shell completion script.

The script is generated from the parser itself by shtab (the
``completion`` extra), so it knows every sub-command and option. Exit
codes: 0 printed, 1 shtab missing, 2 usage.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Final

from sage_resilience.cli._options import error, one_line_errors

if TYPE_CHECKING:
    from sage_resilience.cli._options import SubCommands

__all__ = ["SHELLS", "add_completion_parser", "completion_command"]

#: The shells a completion script can be printed for.
SHELLS: Final = ("bash", "zsh", "tcsh")

_INSTALL: Final = """\
install it, for example:
  bash: sage-resilience completion bash \\
          > ~/.local/share/bash-completion/completions/sage-resilience
  zsh:  sage-resilience completion zsh > ~/.zfunc/_sage-resilience
        (with fpath+=(~/.zfunc) before compinit in ~/.zshrc)
  tcsh: sage-resilience completion tcsh > ~/.sage-resilience.completion
        (and source it from ~/.tcshrc)
"""


def add_completion_parser(
    sub: SubCommands, root: argparse.ArgumentParser
) -> None:
    """Add ``completion`` to *sub*, completing the options of *root*."""
    completion = sub.add_parser(
        "completion",
        help="print a shell completion script (needs the completion extra)",
        description="Prints a completion script for SHELL on stdout. "
        "Needs shtab: pip install 'sage-resilience[completion]'.",
        epilog=_INSTALL,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    one_line_errors(completion)
    completion.add_argument(
        "shell", choices=SHELLS, help="the shell to complete for"
    )
    completion.set_defaults(
        handler=lambda args: completion_command(root, args)
    )


def completion_command(
    root: argparse.ArgumentParser, args: argparse.Namespace
) -> int:
    """Print the completion script of *root* for ``args.shell``."""
    try:
        import shtab  # noqa: PLC0415
    except ImportError:
        error(
            "sage-resilience completion",
            "this command needs shtab: "
            "pip install 'sage-resilience[completion]'",
        )
        return 1
    script: str = shtab.complete(root, shell=args.shell)
    sys.stdout.write(script if script.endswith("\n") else script + "\n")
    return 0
