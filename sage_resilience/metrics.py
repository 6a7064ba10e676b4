"""Prometheus metrics of every policy, read at scrape time.

Needs the ``metrics`` extra (``pip install 'sage-resilience[metrics]'``).
Nothing is added to the call path: the collector reads each policy's
status entry when Prometheus scrapes. Only the attempt latency histogram
needs per-attempt observations; it is fed through the engine's attempt
observer hook, which costs nothing until :func:`register_metrics` (or
:func:`enable_attempt_latency`) installs it; from then on every attempt is
counted, also those made before the first scrape. The ASGI app
(:mod:`sage_resilience.asgi`) calls :func:`register_metrics` when it is
created, so its ``/metrics`` counts every attempt from the start.

Without the ASGI app::

    from prometheus_client import start_http_server
    from sage_resilience.metrics import register_metrics

    register_metrics()          # on prometheus_client's default registry
    start_http_server(9464)     # serves /metrics from a thread

Metrics (label ``breaker`` is the policy name):

- ``sage_resilience_circuit_state{breaker,state}`` (gauge): 1 for the
  current state (``closed``, ``open``, ``half-open``), 0 for the others.
- ``sage_resilience_circuit_forced{breaker}`` (gauge): 1 while an operator
  holds the circuit open.
- ``sage_resilience_circuit_critical{breaker}`` (gauge): 1 for a policy
  with ``critical: true`` (its open circuit takes health ``down``), 0
  otherwise; alerting rules join on it.
- ``sage_resilience_calls_total{breaker,outcome}`` (counter): ``success``,
  ``failure`` (counted failures), ``rejected`` (refused by the open
  circuit), ``bulkhead_rejected``.
- ``sage_resilience_retries_total{breaker}`` (counter).
- ``sage_resilience_open_seconds_total{breaker}`` (counter): time spent in
  state ``open``.
- ``sage_resilience_consecutive_failures{breaker}`` (gauge): consecutive
  counted failures now (named ``sage_resilience_failure_count`` before
  0.2.0: Prometheus reserves ``_count`` for histograms and summaries).
- ``sage_resilience_attempt_duration_seconds{breaker}`` (histogram): the
  duration of each attempt that ran; every configured breaker has its
  series (zeros until its first attempt), so ``rate()`` sees the first
  attempts too.

The names pass ``promtool check metrics``; ``contrib/`` has a Grafana
dashboard and alerting rules built on them (``docs/monitoring.md``).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Final, Literal

from sage_resilience._extras import needs_extra

with needs_extra("sage_resilience.metrics", "prometheus-client", "metrics"):
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        REGISTRY,
        CollectorRegistry,
        Histogram,
        generate_latest,
    )
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from sage_resilience._hooks import add_hook, remove_hook
from sage_resilience._names import CLOSED, HALF_OPEN, OPEN
from sage_resilience.status import breaker_status

if TYPE_CHECKING:
    from collections.abc import Iterable

    from prometheus_client.metrics_core import Metric

    from sage_resilience._hooks import AttemptFinished

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "ResilienceCollector",
    "enable_attempt_latency",
    "generate_latest_text",
    "observe_attempt",
    "register_metrics",
]

#: The ``Content-Type`` of :func:`generate_latest_text`'s output.
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST

#: Upper bounds (seconds) of the attempt latency histogram's buckets.
LATENCY_BUCKETS: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)

_STATES: Final = (CLOSED, OPEN, HALF_OPEN)

#: ``outcome`` label -> status entry counter.
_OUTCOMES: Final[
    tuple[
        tuple[
            str,
            Literal[
                "successes", "failures", "rejections", "bulkhead_rejections"
            ],
        ],
        ...,
    ]
] = (
    ("success", "successes"),
    ("failure", "failures"),
    ("rejected", "rejections"),
    ("bulkhead_rejected", "bulkhead_rejections"),
)

_PREFIX: Final = "sage_resilience"

# One histogram for the process, whatever the number of registries: it is
# exposed by every ResilienceCollector and never registered by itself.
_latency = Histogram(
    f"{_PREFIX}_attempt_duration_seconds",
    "Duration of each attempt that ran through a policy (seconds).",
    ["breaker"],
    buckets=LATENCY_BUCKETS,
    registry=None,
)


def observe_attempt(breaker: str, seconds: float) -> None:
    """Record one attempt's duration in the latency histogram.

    The latency hook does this for every attempt once attempt latency is
    enabled; applications need not call it.

    Args:
        breaker: The policy name.
        seconds: How long the attempt ran (bulkhead waiting excluded).

    .. versionadded:: 0.1.0
    """
    _latency.labels(breaker).observe(seconds)


def enable_attempt_latency(enabled: bool = True) -> bool:
    """Add (or remove) the latency histogram's hook.

    A hook like an application's (:mod:`sage_resilience.instrumentation`):
    the engine measures attempt durations only while a hook wants them, so
    the call path costs nothing extra until then.

    Args:
        enabled: Install when true, remove when false.

    Returns:
        True (kept for callers that check it).

    .. versionadded:: 0.1.0
    """
    if enabled:
        add_hook(_LATENCY_HOOK)
    else:
        remove_hook(_LATENCY_HOOK)
    return True


class _LatencyHook:
    """The histogram as a hook: every attempt that ran, by breaker."""

    __slots__ = ()

    def on_attempt(self, details: AttemptFinished) -> None:
        if details.outcome != "cancelled":
            _latency.labels(details.breaker).observe(details.duration)


#: The hook :func:`enable_attempt_latency` adds (one per process).
_LATENCY_HOOK: Final = _LatencyHook()


class ResilienceCollector:
    """A prometheus-client collector over every policy's status.

    It reads :func:`sage_resilience.breaker_status` when collected, so it
    follows configuration reloads and adds nothing to the call path.

    .. versionadded:: 0.1.0
    """

    def describe(self) -> Iterable[Metric]:
        """The metric families, without samples (for registration)."""
        yield from self._families()
        yield from _latency.describe()

    def collect(self) -> Iterable[Metric]:
        """The metric families with one sample set per policy."""
        families = self._families()
        state, forced, critical, calls, retries, open_s, failing = families
        for name, entry in breaker_status().items():
            current = entry["state"]
            for value in _STATES:
                state.add_metric([name, value], 1.0 if current == value else 0)
            forced.add_metric([name], 1.0 if entry.get("forced") else 0.0)
            critical.add_metric([name], 1.0 if entry.get("critical") else 0.0)
            for outcome, key in _OUTCOMES:
                calls.add_metric([name, outcome], float(entry.get(key, 0)))
            retries.add_metric([name], float(entry.get("retries", 0)))
            open_s.add_metric([name], float(entry["open_seconds_total"]))
            failing.add_metric([name], float(entry["failure_count"]))
            # The breaker's histogram series exists before its first
            # attempt: a series that appears with a count above zero
            # hides those first attempts from rate() and increase().
            _latency.labels(name)
        yield from families
        yield from _latency.collect()

    @staticmethod
    def _families() -> tuple[
        GaugeMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        GaugeMetricFamily,
    ]:
        return (
            GaugeMetricFamily(
                f"{_PREFIX}_circuit_state",
                "Circuit state: 1 for the current state, 0 for the others.",
                labels=["breaker", "state"],
            ),
            GaugeMetricFamily(
                f"{_PREFIX}_circuit_forced",
                "1 while an operator holds the circuit open.",
                labels=["breaker"],
            ),
            GaugeMetricFamily(
                f"{_PREFIX}_circuit_critical",
                "1 for a critical policy (open: health is down), else 0.",
                labels=["breaker"],
            ),
            CounterMetricFamily(
                f"{_PREFIX}_calls",
                "Attempts by outcome: success, failure (counted failures), "
                "rejected (circuit open), bulkhead_rejected.",
                labels=["breaker", "outcome"],
            ),
            CounterMetricFamily(
                f"{_PREFIX}_retries",
                "Retries scheduled.",
                labels=["breaker"],
            ),
            CounterMetricFamily(
                f"{_PREFIX}_open_seconds",
                "Time spent with the circuit open (seconds).",
                labels=["breaker"],
            ),
            GaugeMetricFamily(
                f"{_PREFIX}_consecutive_failures",
                "Consecutive counted failures now.",
                labels=["breaker"],
            ),
        )


_lock = threading.Lock()
_registered: weakref.WeakKeyDictionary[
    CollectorRegistry, ResilienceCollector
] = weakref.WeakKeyDictionary()


def register_metrics(
    registry: CollectorRegistry | None = None,
    *,
    attempt_latency: bool = True,
) -> ResilienceCollector:
    """Register the sage_resilience collector on *registry* (idempotent).

    Args:
        registry: Where to register; prometheus-client's default registry
            (the one ``start_http_server`` serves) when None.
        attempt_latency: Also install the attempt observer that feeds
            ``sage_resilience_attempt_duration_seconds`` (one clock read
            and one histogram update per attempt).

    Returns:
        The collector registered there (the same one on later calls).

    .. versionadded:: 0.1.0
    """
    target = REGISTRY if registry is None else registry
    with _lock:
        collector = _registered.get(target)
        if collector is None:
            collector = ResilienceCollector()
            target.register(collector)
            _registered[target] = collector
    if attempt_latency:
        enable_attempt_latency()
    return collector


def generate_latest_text(registry: CollectorRegistry | None = None) -> bytes:
    """The Prometheus text exposition of *registry*.

    The sage_resilience collector is registered there first if it is not
    yet (see :func:`register_metrics`); the default registry also carries
    prometheus-client's process and platform metrics and the
    application's own.

    Args:
        registry: The registry to render; the default one when None.

    Returns:
        The exposition, to be served with :data:`CONTENT_TYPE`.

    .. versionadded:: 0.1.0
    .. versionchanged:: 0.2.0
       Registers (and installs the attempt observer) only when the
       registry has no sage_resilience collector yet, so a registry set
       up with ``attempt_latency=False`` keeps the call path free.
    """
    target = REGISTRY if registry is None else registry
    if not _is_registered(target):
        register_metrics(target)
    return generate_latest(target)


def _is_registered(registry: CollectorRegistry) -> bool:
    with _lock:
        return registry in _registered
