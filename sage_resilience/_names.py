"""The vocabulary: circuit state names and shared event names.

Plain strings with no import behind them, so that log analysis and the CLI
can use them without loading the engine or structlog.
"""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

__all__ = [
    "CALL_REJECTED",
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "RETRY_EXHAUSTED",
    "RETRY_SCHEDULED",
    "STATE_CHANGED",
    "STATE_SYNCED",
    "State",
]

State: TypeAlias = Literal["closed", "open", "half-open"]
"""A circuit state: ``Policy.state``, a status entry's ``state``."""

#: The circuit states, as shown in status entries, events and metrics
#: (pybreaker's own names: a state read from pybreaker or a store is one
#: of these strings).
CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half-open"

#: Event names that more than one module logs or reads.
STATE_CHANGED: Final = "circuit_state_changed"
STATE_SYNCED: Final = "circuit_state_synced"
CALL_REJECTED: Final = "call_rejected"
RETRY_SCHEDULED: Final = "retry_scheduled"
RETRY_EXHAUSTED: Final = "retry_exhausted"
