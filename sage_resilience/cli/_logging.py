"""The CLI's structlog set-up: JSON lines.

The library never configures structlog; its command line does.
"""

from __future__ import annotations

import sys
from typing import IO

__all__ = ["configure_logging"]


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
    import structlog  # noqa: PLC0415 - not needed for --help, --version

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
