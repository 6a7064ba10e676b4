"""The CLI's structlog set-up: JSON lines, or a console view on a terminal.

The library never configures structlog; its command line does. Every
event goes to each target rendered for it:

- ``json``: one JSON object per line (what ``logs summarize`` reads);
- ``console``: structlog's :class:`~structlog.dev.ConsoleRenderer`, one
  short line per event, coloured only on a terminal (never with
  ``NO_COLOR``), every value's control characters escaped;
- ``auto`` (the command line's default): ``console`` when the target is a
  terminal, ``json`` otherwise.

Without ``verbose`` a target leaves out ``config_loaded`` and debug-level
events. A log file (``log_files``) always gets every event as JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from typing import IO, TYPE_CHECKING, Any, Final

from sage_resilience._terminal import printable

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, MutableMapping

__all__ = ["LOG_FORMATS", "configure_logging", "is_terminal", "wants_colour"]

#: The values of ``--log-format`` (``auto`` when it is not given).
LOG_FORMATS: Final = ("json", "console")

#: Events shown only with ``--verbose``.
_VERBOSE_ONLY: Final = frozenset({"config_loaded"})


def is_terminal(stream: object) -> bool:
    """Whether *stream* is a terminal (False for anything without isatty)."""
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # a closed or detached stream
        return False


def wants_colour(stream: object) -> bool:
    """ANSI colours for *stream*: a terminal, and ``NO_COLOR`` unset."""
    return not os.environ.get("NO_COLOR") and is_terminal(stream)


def _json_line(event: dict[str, Any]) -> str:
    return json.dumps(event, default=repr)


def _console(colour: bool) -> Callable[[dict[str, Any]], str]:
    import structlog  # noqa: PLC0415 - not needed for --help, --version

    renderer = structlog.dev.ConsoleRenderer(
        colors=colour,
        exception_formatter=structlog.dev.plain_traceback,
        sort_keys=False,
    )

    def render(event: dict[str, Any]) -> str:
        shown = {key: _safe(value) for key, value in event.items()}
        stamp = shown.get("timestamp")
        if isinstance(stamp, str):
            shown["timestamp"] = _clock(stamp)
        return str(renderer(None, "", shown))

    return render


def _safe(value: Any) -> Any:
    """Strings escaped for a terminal; the renderer reprs the rest."""
    return printable(value) if isinstance(value, str) else value


def _clock(stamp: str) -> str:
    """An ISO-8601 UTC time stamp as local ``HH:MM:SS``."""
    try:
        moment = dt.datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    return moment.astimezone().strftime("%H:%M:%S")


class _Target:
    """One file, how events are rendered for it, and which it gets."""

    def __init__(self, file: IO[str], log_format: str, verbose: bool) -> None:
        if log_format == "auto":
            log_format = "console" if is_terminal(file) else "json"
        self.file = file
        self.verbose = verbose
        self.render = (
            _console(wants_colour(file))
            if log_format == "console"
            else _json_line
        )

    def wants(self, event: dict[str, Any]) -> bool:
        if self.verbose:
            return True
        if event.get("level") == "debug":
            return False
        return event.get("event") not in _VERBOSE_ONLY

    def write(self, event: dict[str, Any]) -> None:
        if self.wants(event):
            self.file.write(self.render(event) + "\n")
            self.file.flush()


class _Tee:
    """A structlog logger writing each event to several targets."""

    def __init__(self, targets: Iterable[_Target]) -> None:
        self._targets = tuple(targets)

    def msg(self, **event: Any) -> None:
        for target in self._targets:
            target.write(event)

    log = debug = info = warning = warn = error = critical = exception = msg


def _as_dict(
    _logger: object, _name: str, event: MutableMapping[str, Any]
) -> dict[str, Any]:
    """The last processor: the logger renders each target's own way."""
    return dict(event)


def configure_logging(
    *files: IO[str],
    log_format: str = "json",
    verbose: bool = True,
    log_files: Iterable[IO[str]] = (),
) -> None:
    """Render sage_resilience events on *files*.

    Args:
        files: Where to write (stderr when none is given).
        log_format: ``json`` (JSON lines), ``console`` (structlog's
            console renderer, coloured on a terminal) or ``auto``
            (``console`` for a terminal, ``json`` otherwise).
        verbose: Also show ``config_loaded`` and debug-level events on
            *files*.
        log_files: Files that get every event as JSON lines, whatever
            *log_format* and *verbose* say (``demo --log``).
    """
    import structlog  # noqa: PLC0415 - not needed for --help, --version

    targets = [
        _Target(file, log_format, verbose) for file in files or (sys.stderr,)
    ]
    targets.extend(_Target(file, "json", verbose=True) for file in log_files)
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _as_dict,
        ],
        logger_factory=lambda *_: _Tee(targets),
        cache_logger_on_first_use=False,
    )
