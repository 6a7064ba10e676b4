"""Hooks: observe every policy's state changes, attempts, retries, refusals.

A hook is any object with some of these methods, each taking one frozen
details object::

    from sage_resilience.instrumentation import add_hook

    class Audit:
        def on_state_change(self, details):  # StateChange
            print(details.breaker, details.old_state, "->", details.new_state)

        def on_rejected(self, details):  # CallRejected
            ...

    add_hook(Audit())

* ``on_state_change(StateChange)`` -- every transition this process makes
  or adopts from a shared storage (``reason == "storage"``), with the
  figures of the ``circuit_state_changed`` event;
* ``on_attempt(AttemptFinished)`` -- every attempt that ran, with its
  outcome (``success``, ``failure``, ``ignored``, ``neutral``,
  ``cancelled``) and duration;
* ``on_retry(RetryScheduled)`` -- a failed attempt about to be retried;
* ``on_rejected(CallRejected)`` -- a call refused without running
  (``open``, ``half_open_full``, ``bulkhead``).

Hooks run synchronously on the caller's thread (for async code: the event
loop's), in the order they were added: keep them quick. A hook that raises
never breaks a call nor the other hooks; its first error is logged
(``hook_failed``) and the rest are swallowed. With no hook that has
``on_attempt``, the success path does no extra work. The library's own
events (``circuit_state_changed``, ``retry_scheduled``), the Prometheus
latency histogram and the OpenTelemetry instruments
(:mod:`sage_resilience.otel`) are hooks like any other.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

from sage_resilience._events import StateChange
from sage_resilience._hooks import (
    AttemptFinished,
    CallRejected,
    RetryScheduled,
    add_hook,
    get_hooks,
    remove_hook,
)

__all__ = [
    "AttemptFinished",
    "CallRejected",
    "RetryScheduled",
    "StateChange",
    "add_hook",
    "get_hooks",
    "remove_hook",
]
