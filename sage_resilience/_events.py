"""Event details and their emitters.

Each event is built from one frozen, slotted details object, so the log,
status counters and metrics all read the same facts. The library only asks
structlog for a named logger; it never configures structlog (the CLI does).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import structlog

__all__ = [
    "LOGGER_NAME",
    "StateChange",
    "iso",
    "logger",
]

LOGGER_NAME = "sage_resilience"

logger = structlog.get_logger(LOGGER_NAME)


def iso(ts: float | None) -> str | None:
    """Format a POSIX timestamp as ISO-8601 UTC with a ``Z`` suffix."""
    if ts is None:
        return None
    return (
        dt.datetime.fromtimestamp(ts, tz=dt.UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
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
        return event

    def emit(self) -> None:
        """Log it: warning when the circuit opens, info otherwise."""
        if self.new_state == "open":
            logger.warning("circuit_state_changed", **self.as_event())
        else:
            logger.info("circuit_state_changed", **self.as_event())
