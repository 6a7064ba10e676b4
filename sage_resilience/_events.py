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
    "Synced",
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


#: Told of every transition this process logs or adopts, with (breaker,
#: old state, new state, reason, failure count, last failure, last cause);
#: set by :mod:`sage_resilience._hooks` while a state hook is installed.
transition_listener: Callable[..., None] | None = None


def _tell(
    breaker: str,
    old_state: str,
    new_state: str,
    reason: str,
    failure_count: int,
    last_failure: str | None = None,
    last_cause: str | None = None,
) -> None:
    """Hand a transition to the state hooks, if any listen."""
    listener = transition_listener
    if listener is not None:
        listener(
            breaker,
            old_state,
            new_state,
            reason,
            failure_count,
            last_failure,
            last_cause,
        )


@dataclass(frozen=True, slots=True)
class StateChange:
    """One circuit transition, as logged in ``circuit_state_changed``."""

    breaker: str
    old_state: str
    new_state: str
    reason: str
    failure_count: int
    failure_threshold: int
    recovery_timeout: float
    recent_failures: tuple[float, ...]
    failure_rate_per_min: int
    last_failure: str | None
    last_cause: str | None
    rejected_while_open: int | None
    platform: str
    #: Seconds the circuit stays open (None unless opening, or forced).
    open_for: float | None = None

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
        """Log it (warning when the circuit opens, else info); tell hooks."""
        if self.new_state == OPEN:
            logger.warning(STATE_CHANGED, **self.as_event())
        else:
            logger.info(STATE_CHANGED, **self.as_event())
        _tell(
            self.breaker,
            self.old_state,
            self.new_state,
            self.reason,
            self.failure_count,
            self.last_failure,
            self.last_cause,
        )


class Synced:
    """A transition adopted from a shared storage (made elsewhere)."""

    __slots__ = ("breaker", "new_state", "old_state", "storage")

    def __init__(
        self, breaker: str, old_state: str, new_state: str, storage: str
    ) -> None:
        self.breaker = breaker
        self.old_state = old_state
        self.new_state = new_state
        self.storage = storage

    def emit(self) -> None:
        """Log it (``circuit_state_synced``, debug level); tell hooks."""
        logger.debug(
            STATE_SYNCED,
            breaker=self.breaker,
            old_state=self.old_state,
            new_state=self.new_state,
            storage=self.storage,
        )
        _tell(self.breaker, self.old_state, self.new_state, "storage", 0)
