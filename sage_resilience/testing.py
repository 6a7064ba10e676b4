"""Helpers for testing code that uses sage_resilience.

* :func:`set_testing` removes the sleeps between retries (attempts still
  happen, events are still logged), so a test of a 3-attempt policy takes
  no backoff time.
* :func:`capture_events` collects the library's structlog events.
* :func:`reset` forgets the registry and every other process-wide state
  (observer, timer wheels, ticker, storage backends), so each test starts
  from scratch.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import sys
from typing import TYPE_CHECKING, Any

from structlog.testing import capture_logs

from sage_resilience import _hooks
from sage_resilience._attempt import forget_wheels
from sage_resilience._registry import reset_registry
from sage_resilience._retry import SLEEPING
from sage_resilience._storage import close_storages
from sage_resilience._window import TICKER

if TYPE_CHECKING:
    from collections.abc import Iterator, MutableMapping

__all__ = ["capture_events", "is_testing", "reset", "set_testing"]


def set_testing(testing: bool) -> None:
    """Turn the testing mode (no sleeps between retries) on or off."""
    SLEEPING.enabled = not testing


def is_testing() -> bool:
    """Whether the testing mode is on."""
    return not SLEEPING.enabled


@contextlib.contextmanager
def capture_events() -> Iterator[list[MutableMapping[str, Any]]]:
    """Collect every structlog event logged inside the block."""
    with capture_logs() as events:
        yield events


def reset() -> None:
    """Start from scratch: every piece of process-wide state, in one call.

    Forgets every policy, code declaration and the configuration (and the
    compat module's breakers), removes every hook and the attempt
    observer (metrics' latency: ``register_metrics`` installs it again),
    drops the timeout
    wheels and the window ticker's gates, and flushes and stops the storage
    backends (policies built earlier keep their local state).
    """
    reset_registry()
    compat = sys.modules.get("sage_resilience.compat")
    if compat is not None:
        compat.forget()
    _hooks.clear()
    forget_wheels()
    TICKER.forget()
    close_storages()
