"""Event details and their emitters.

Each event is built from one frozen, slotted details object, so the log,
status counters and metrics all read the same facts. The library never
configures logging and never writes to stdout: when the application has
configured structlog, events go through structlog's logger
``sage_resilience``; otherwise through the stdlib logger of the same name
(its level, handlers and error trackers apply; with no logging configured
at all, Python's last-resort handler shows warnings on stderr). Unconfigured
structlog would print to stdout, which corrupts a stdio protocol such as
MCP's.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

from sage_resilience._names import OPEN, STATE_CHANGED, STATE_SYNCED

__all__ = [
    "LOGGER_NAME",
    "EventLogger",
    "StateChange",
    "iso",
    "logger",
]

LOGGER_NAME = "sage_resilience"

#: ``LogRecord`` attributes an event key must not overwrite in ``extra``.
_RESERVED = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__
) | {"message", "asctime"}


class _Rendered:
    """``event key=value ...``, formatted only if a handler emits it."""

    __slots__ = ("event", "keys")

    def __init__(self, event: str, keys: dict[str, Any]) -> None:
        self.event = event
        self.keys = keys

    def __str__(self) -> str:
        pairs = " ".join(f"{k}={v!r}" for k, v in self.keys.items())
        return f"{self.event} {pairs}" if pairs else self.event


class EventLogger:
    """The library's logger: structlog when configured, else stdlib.

    Decided at every event (events are rare: transitions, retries, config
    loads), so an application that configures structlog after importing
    the library is followed.
    """

    __slots__ = ("_name", "_stdlib", "_structlog")

    def __init__(self, name: str) -> None:
        self._name = name
        self._structlog: Any = None
        self._stdlib = logging.getLogger(name)

    def _configured(self) -> Any:
        """Structlog's logger when the application configured structlog.

        structlog is never imported here: an application that has not
        imported it has not configured it (and the import costs tens of
        milliseconds at every start).
        """
        module = sys.modules.get("structlog")
        if module is None or not module.is_configured():
            return None
        if self._structlog is None:
            self._structlog = module.get_logger(self._name)
        return self._structlog

    def _log(self, level: int, event: str, keys: dict[str, Any]) -> None:
        configured = self._configured()
        if configured is not None:
            configured.log(level, event, **keys)
            return
        std = self._stdlib
        if not std.isEnabledFor(level):
            return
        extra = {
            (f"event_{k}" if k in _RESERVED else k): v for k, v in keys.items()
        }
        extra["event"] = event
        std.log(level, "%s", _Rendered(event, keys), extra=extra)

    def debug(self, event: str, **keys: Any) -> None:
        """Log *event* at debug level."""
        self._log(logging.DEBUG, event, keys)

    def info(self, event: str, **keys: Any) -> None:
        """Log *event* at info level."""
        self._log(logging.INFO, event, keys)

    def warning(self, event: str, **keys: Any) -> None:
        """Log *event* at warning level."""
        self._log(logging.WARNING, event, keys)

    def error(self, event: str, **keys: Any) -> None:
        """Log *event* at error level."""
        self._log(logging.ERROR, event, keys)

    def exception(self, event: str, **keys: Any) -> None:
        """Log *event* at error level with the current exception."""
        configured = self._configured()
        if configured is not None:
            configured.exception(event, **keys)
            return
        self._stdlib.exception(
            "%s", _Rendered(event, keys), extra={"event": event}
        )


logger = EventLogger(LOGGER_NAME)


def iso(ts: float | None) -> str | None:
    """Format a POSIX timestamp as ISO-8601 UTC with a ``Z`` suffix."""
    if ts is None:
        return None
    return (
        # Rounded, not cut: a time converted between clocks may lie a
        # fraction of a microsecond below the millisecond it names.
        dt.datetime.fromtimestamp(round(ts, 3), tz=dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


@dataclass(frozen=True, slots=True)
class StateChange:
    """A circuit moved from *old_state* to *new_state*.

    The details of ``circuit_state_changed`` (and of ``on_state_change``
    hooks). A transition another process made and this one adopted from a
    shared storage has ``reason == "storage"`` and ``storage`` set (the
    backend); it is logged as ``circuit_state_synced`` at debug level, and
    its figures beyond the first seven fields are not known here.
    """

    breaker: str
    old_state: str
    new_state: str
    reason: str
    failure_count: int
    last_failure: str | None = None
    last_cause: str | None = None
    failure_threshold: int = 0
    recovery_timeout: float = 0.0
    recent_failures: tuple[float, ...] = ()
    failure_rate_per_min: int = 0
    rejected_while_open: int | None = None
    platform: str = ""
    #: Seconds the circuit stays open (None unless opening, or forced).
    open_for: float | None = None
    #: The shared storage it was adopted from; None when made here.
    storage: str | None = None

    def as_event(self) -> dict[str, Any]:
        """The keys of the ``circuit_state_changed`` event."""
        event: dict[str, Any] = {
            "breaker": self.breaker,
            "old_state": self.old_state,
            "new_state": self.new_state,
            "reason": self.reason,
            "failure_count": self.failure_count,
            "failure_threshold": self.failure_threshold,
            "recovery_timeout": self.recovery_timeout,
            "recent_failures": [iso(t) for t in self.recent_failures],
            "failure_rate_per_min": self.failure_rate_per_min,
            "last_failure": self.last_failure,
            "last_cause": self.last_cause,
            "platform": self.platform,
        }
        if self.rejected_while_open is not None:
            event["rejected_while_open"] = self.rejected_while_open
        if self.open_for is not None:
            event["open_for"] = round(self.open_for, 3)
        return event

    def emit(self) -> None:
        """Hand it to the state hooks, the event log first."""
        deliver(self)


def log_state_change(change: StateChange) -> None:
    """The event log's side of a transition (a hook's ``on_state_change``).

    ``circuit_state_changed`` (warning when the circuit opens, else info),
    or ``circuit_state_synced`` at debug level for an adopted one.
    """
    if change.storage is not None:
        logger.debug(
            STATE_SYNCED,
            breaker=change.breaker,
            old_state=change.old_state,
            new_state=change.new_state,
            storage=change.storage,
        )
    elif change.new_state == OPEN:
        logger.warning(STATE_CHANGED, **change.as_event())
    else:
        logger.info(STATE_CHANGED, **change.as_event())


#: Where :meth:`StateChange.emit` sends a transition: every state hook,
#: the event log first (set by :mod:`sage_resilience._hooks`; the log alone
#: until then).
deliver: Callable[[StateChange], None] = log_state_change
