"""OpenTelemetry metrics and span events for every policy (extra ``otel``).

::

    from sage_resilience import otel

    otel.instrument()  # the global MeterProvider; or meter_provider=...

Instruments, on the meter ``sage_resilience`` (attributes in brackets):

* ``sage_resilience.calls``: counter (``breaker``, ``outcome``);
* ``sage_resilience.attempt.duration``: histogram in ``s`` (``breaker``,
  ``outcome``);
* ``sage_resilience.rejections``: counter (``breaker``, ``reason``);
* ``sage_resilience.retries``: counter (``breaker``);
* ``sage_resilience.circuit.state``: observable gauge (``breaker``,
  ``state``).

``calls`` counts attempts that ran, by outcome (``success``, ``failure``,
``ignored``, ``neutral``, ``cancelled``); ``circuit.state`` is 1 for each
configured policy's current state and 0 for the two others. Retries,
refusals and state changes are also recorded as span events on the
caller's current span (``sage_resilience.retry``,
``sage_resilience.rejected``, ``sage_resilience.state_change``), with the
details' fields as attributes (errors as ``error.type`` and a redacted
``error.message``); there is no span of the library's own. Everything is
one hook of :mod:`sage_resilience.instrumentation`; :func:`uninstrument`
removes it. Needs only ``opentelemetry-api``: without an SDK configured,
the API's no-op providers make it cost next to nothing.

.. versionadded:: 0.2.0
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Final

from sage_resilience._extras import needs_extra

with needs_extra("sage_resilience.otel", "opentelemetry-api", "otel"):
    from opentelemetry import metrics, trace

from sage_resilience import _registry
from sage_resilience._hooks import add_hook, remove_hook
from sage_resilience._names import CLOSED, HALF_OPEN, OPEN
from sage_resilience._stats import describe_failure

if TYPE_CHECKING:
    from collections.abc import Iterable

    from opentelemetry.metrics import CallbackOptions, MeterProvider
    from opentelemetry.trace import TracerProvider

    from sage_resilience._events import StateChange
    from sage_resilience._hooks import (
        AttemptFinished,
        CallRejected,
        RetryScheduled,
    )

__all__ = ["instrument", "uninstrument"]

_STATES = (CLOSED, OPEN, HALF_OPEN)
#: The counters, in the order of :class:`_Instruments`' attributes
#: ``calls``, ``rejections``, ``retries``: name, unit, description.
_COUNTERS: Final = (
    ("sage_resilience.calls", "{call}", "Attempts that ran, by outcome."),
    (
        "sage_resilience.rejections",
        "{call}",
        "Calls refused without running, by reason.",
    ),
    (
        "sage_resilience.retries",
        "{retry}",
        "Retries scheduled after a failed attempt.",
    ),
)
_lock = threading.Lock()
_installed: _Instruments | None = None


def instrument(
    *,
    meter_provider: MeterProvider | None = None,
    tracer_provider: TracerProvider | None = None,
) -> None:
    """Report every policy through OpenTelemetry (idempotent).

    Args:
        meter_provider: Where the instruments are created; the global one
            (``opentelemetry.metrics.get_meter_provider()``) when None.
        tracer_provider: Accepted for symmetry with other
            instrumentations; span events always go to the caller's
            current span, whichever provider made it.

    Calling it again replaces the previous instrumentation (for example
    with another meter provider).
    """
    del tracer_provider  # the current span is the context's
    global _installed  # noqa: PLW0603 - one instrumentation per process
    with _lock:
        if _installed is not None:
            _installed.active = False
            remove_hook(_installed)
        _installed = _Instruments(meter_provider)
        add_hook(_installed)


def uninstrument() -> None:
    """Stop reporting (instruments stay registered but record nothing)."""
    global _installed  # noqa: PLW0603
    with _lock:
        if _installed is not None:
            _installed.active = False
            remove_hook(_installed)
            _installed = None


def _error_attributes(error: BaseException | None) -> dict[str, str]:
    if error is None:
        return {}
    return {
        "error.type": type(error).__qualname__,
        "error.message": describe_failure(error),
    }


def _span_event(name: str, attributes: dict[str, Any]) -> None:
    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(
            name, {k: v for k, v in attributes.items() if v is not None}
        )


class _Instruments:
    """The hook: instruments on one meter, span events on current spans."""

    def __init__(self, provider: MeterProvider | None) -> None:
        meter = metrics.get_meter("sage_resilience", meter_provider=provider)
        self.active = True
        self.calls, self.rejections, self.retries = (
            meter.create_counter(name, unit=unit, description=description)
            for name, unit, description in _COUNTERS
        )
        self.duration = meter.create_histogram(
            "sage_resilience.attempt.duration",
            unit="s",
            description="Duration of attempts that ran.",
        )
        meter.create_observable_gauge(
            "sage_resilience.circuit.state",
            callbacks=[self._states],
            description="1 for each breaker's current state, 0 otherwise.",
        )

    def on_attempt(self, details: AttemptFinished) -> None:
        attributes = {"breaker": details.breaker, "outcome": details.outcome}
        self.calls.add(1, attributes)
        self.duration.record(details.duration, attributes)

    def on_retry(self, details: RetryScheduled) -> None:
        self.retries.add(1, {"breaker": details.breaker})
        _span_event(
            "sage_resilience.retry",
            {
                "breaker": details.breaker,
                "attempt": details.attempt,
                "wait": details.wait,
                **_error_attributes(details.error),
            },
        )

    def on_rejected(self, details: CallRejected) -> None:
        self.rejections.add(
            1, {"breaker": details.breaker, "reason": details.reason}
        )
        _span_event(
            "sage_resilience.rejected",
            {
                "breaker": details.breaker,
                "reason": details.reason,
                "retry_after": details.retry_after,
            },
        )

    def on_state_change(self, details: StateChange) -> None:
        _span_event(
            "sage_resilience.state_change",
            {
                "breaker": details.breaker,
                "old_state": details.old_state,
                "new_state": details.new_state,
                "reason": details.reason,
                "failure_count": details.failure_count,
                "last_failure": details.last_failure,
                "last_cause": details.last_cause,
            },
        )

    def _states(self, _options: CallbackOptions) -> Iterable[Any]:
        from opentelemetry.metrics import Observation  # noqa: PLC0415

        if not self.active or not _registry.configured():
            return []
        return [
            Observation(
                int(p.state == state), {"breaker": name, "state": state}
            )
            for name, p in sorted(_registry.policies().items())
            for state in _STATES
        ]
