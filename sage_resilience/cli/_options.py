"""What several sub-commands share: options, argument types, errors.

Every value is checked by its argparse ``type=`` function, so a bad one
makes the parser exit with status 2 and one line on stderr (the parsers
are made to print errors so: :func:`one_line_errors`), never a traceback.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import urllib.parse
from typing import TYPE_CHECKING, Final, NoReturn

from sage_resilience._redact import redact
from sage_resilience._terminal import printable

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeAlias

    # A parser, or a group of mutually exclusive options of one.
    _Options: TypeAlias = argparse._ActionsContainer
    #: What ``add_subparsers()`` returns: where sub-commands are added.
    SubCommands: TypeAlias = argparse._SubParsersAction[
        argparse.ArgumentParser
    ]

__all__ = [
    "FILES",
    "MAX_TIMEOUT",
    "add_config",
    "add_format",
    "add_log_options",
    "add_platform",
    "add_timeout",
    "add_url",
    "complete_files",
    "error",
    "http_url",
    "one_line_errors",
    "positive_int",
    "seconds",
    "shown",
]

#: The longest ``--timeout`` accepted, in seconds (a day).
MAX_TIMEOUT: Final = 86_400.0

#: What a shell completes for a file argument: shtab's ``FILE``, spelt
#: out so that building the parser does not need shtab.
FILES: Final = {
    "bash": "_shtab_compgen_files",
    "zsh": "_files",
    "tcsh": "f",
}

#: The help of ``--config`` where it names the configuration file.
CONFIG_HELP: Final = (
    "configuration file (default: env SAGE_RESILIENCE_CONFIG, else the "
    "shipped one)"
)


# -- errors -------------------------------------------------------------------


def one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make *parser* report a usage error in one line, exit status 2.

    argparse prints the whole usage (several lines) before the error; the
    error is what the user needs, and ``--help`` has the rest.
    """

    def fail(message: str) -> NoReturn:
        parser.exit(2, f"{parser.prog}: error: {message} (see --help)\n")

    parser.error = fail  # type: ignore[method-assign]


def error(prog: str, message: str) -> None:
    """Print ``prog: message`` on stderr, control characters escaped.

    Text from a remote app, a log or argv in it cannot steer the terminal.
    """
    print(printable(f"{prog}: {message}"), file=sys.stderr)


def shown(text: str, limit: int = 80) -> str:
    """An argument as quoted in an error message: short, printable."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return printable(repr(text))


# -- argument types -------------------------------------------------------


def positive_int(text: str) -> int:
    """An integer >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:  # also a 5000-digit number
        value = 0
    if value < 1:
        msg = f"must be an integer >= 1 (got {shown(text)})"
        raise argparse.ArgumentTypeError(msg)
    return value


def seconds(maximum: float) -> Callable[[str], float]:
    """An argparse type: a number of seconds > 0 and <= *maximum*.

    NaN and infinity are refused, as are 0 and negative numbers.
    """

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not 0 < value <= maximum:  # also refuses NaN and infinity
            msg = (
                f"must be a number of seconds > 0 and <= {maximum:g} "
                f"(got {shown(text)})"
            )
            raise argparse.ArgumentTypeError(msg)
        return value

    return parse


# What http.client refuses to put in a request line (spaces, controls).
_UNSENDABLE: Final = re.compile(r"[\x00-\x20\x7f]")


def http_url(text: str) -> str:
    """An ``http(s)://host[:port][/path]`` URL, kept as given.

    An argparse type. Refused with a usage error, the URL's secrets
    hidden: another scheme, no host, a malformed IPv6 address
    (``http://[::1``), a port that is not a number in 0-65535, a space or
    a control character.
    """
    problem = ""
    try:
        parts = urllib.parse.urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        problem = f"{exc}; "
    else:
        if _UNSENDABLE.search(text):
            problem = "spaces and control characters cannot be sent; "
        elif parts.scheme in {"http", "https"} and parts.hostname:
            return text
    msg = (
        "must be an http(s) URL with a host, such as "
        f"http://127.0.0.1:8000 ({problem}got {shown(redact(text))})"
    )
    raise argparse.ArgumentTypeError(msg)


_PG_SCHEMES: Final = frozenset({"postgresql", "postgres"})


def postgres_dsn(text: str) -> str:
    """A ``postgresql://`` (or ``postgres://``) URL, kept as given.

    An argparse type, for the URLs asyncpg takes. Refused with a usage
    error, the URL's secrets hidden: another scheme, a malformed IPv6
    address (``postgresql://[::1``), a port that is not a number in
    0-65535, a space or a control character. The host may be left out
    (``postgresql:///sage?host=/run/postgresql``); a list of hosts is left
    to asyncpg.
    """
    problem = ""
    try:
        parts = urllib.parse.urlsplit(text)
        if "," not in parts.netloc:  # host1:5432,host2:5433 has no .port
            parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        problem = f"{exc}; "
    else:
        if parts.scheme not in _PG_SCHEMES:
            pass  # (a libpq "host=... dbname=..." string included)
        elif _UNSENDABLE.search(text):
            problem = "spaces and control characters are not allowed; "
        else:
            return text
    msg = (
        "must be a postgresql:// URL, such as "
        f"postgresql://sage@127.0.0.1:5432/sage ({problem}"
        f"got {shown(redact(text))})"
    )
    raise argparse.ArgumentTypeError(msg)


# -- options ------------------------------------------------------------------


def complete_files(action: argparse.Action) -> argparse.Action:
    """Make the shell complete *action*'s value as a file name."""
    action.complete = FILES  # type: ignore[attr-defined]
    return action


def add_config(
    parser: _Options,
    help_text: str = CONFIG_HELP,
) -> None:
    """``--config PATH``."""
    complete_files(
        parser.add_argument("--config", metavar="PATH", help=help_text)
    )


def add_platform(
    parser: argparse.ArgumentParser,
    help_text: str = "apply this platform's overrides (linux, darwin, "
    "windows)",
) -> None:
    """``--platform P``."""
    parser.add_argument("--platform", metavar="P", help=help_text)


def add_url(
    parser: _Options,
    help_text: str,
) -> None:
    """``--url URL``, an http(s) URL checked by argparse."""
    parser.add_argument("--url", metavar="URL", type=http_url, help=help_text)


def add_timeout(parser: argparse.ArgumentParser, help_text: str) -> None:
    """``--timeout SECONDS``: > 0, at most a day, 5 by default."""
    parser.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=seconds(MAX_TIMEOUT),
        default=5.0,
        help=f"{help_text} (default 5)",
    )


def add_format(
    parser: argparse.ArgumentParser,
    json_help: str,
    text: str = "text",
) -> None:
    """``--format {text,json}`` and its alias ``--json``.

    Both set ``args.format``; JSON goes to stdout alone. *text* names the
    human-readable format (the default), *json_help* says what the JSON
    holds.
    """
    parser.add_argument(
        "--format",
        choices=(text, "json"),
        default=text,
        help=f"{text} (default) or json: {json_help}",
    )
    parser.add_argument(
        "--json",
        action="store_const",
        const="json",
        dest="format",
        help="the same as --format json",
    )


def add_log_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """``--log-format {json,console}`` and ``-v``/``--verbose``.

    Global options: the top parser holds their defaults (*top*), and
    every sub-command's parser takes them too, without a default of its
    own, so that they may come before or after the command's name.
    """
    parser.add_argument(
        "--log-format",
        choices=("json", "console"),
        default="auto" if top else argparse.SUPPRESS,
        help="how events are shown (on stderr; demo: stdout): json (JSON "
        "lines) or console (one readable line each, coloured on a "
        "terminal); default: console on a terminal, json otherwise",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="also show config_loaded and debug events",
    )
