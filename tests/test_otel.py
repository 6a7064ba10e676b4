"""OpenTelemetry: the SDK's in-memory metric reader and span exporter see
the instruments and span events of sage_resilience.otel."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from sage_resilience import CircuitOpenError, configure, otel, policy
from sage_resilience.instrumentation import get_hooks
from tests.helpers import make_policy


class Down(ConnectionError):
    pass


def down() -> None:
    msg = "refused by https://user:s3cret@api.example/v1"
    raise Down(msg)


@pytest.fixture
def reader() -> Any:
    reader = InMemoryMetricReader()
    otel.instrument(meter_provider=MeterProvider(metric_readers=[reader]))
    yield reader
    otel.uninstrument()


@pytest.fixture
def spans() -> Any:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def points(reader: InMemoryMetricReader) -> dict[str, Any]:
    """Every metric by name: (unit, kind, [(attributes, point), ...])."""
    found: dict[str, Any] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert "sage_resilience" == scope.scope.name
            for metric in scope.metrics:
                found[metric.name] = (
                    metric.unit,
                    type(metric.data).__name__,
                    [
                        (dict(p.attributes or {}), p)
                        for p in metric.data.data_points
                    ],
                )
    return found


def test_calls_durations_retries_and_rejections(reader: Any) -> None:
    p = make_policy(
        "api", failure_threshold=2, recovery_timeout=30, retry={"attempts": 2}
    )
    assert "ok" == p.call(lambda: "ok")
    with pytest.raises(Down):
        p.call(down)  # two attempts, the second opens the circuit
    with pytest.raises(CircuitOpenError):
        p.call(lambda: "ok")
    found = points(reader)
    unit, kind, calls = found["sage_resilience.calls"]
    assert ("{call}", "Sum") == (unit, kind)
    assert {("api", "success"): 1, ("api", "failure"): 2} == {
        (a["breaker"], a["outcome"]): point.value for a, point in calls
    }
    unit, kind, durations = found["sage_resilience.attempt.duration"]
    assert ("s", "Histogram") == (unit, kind)
    assert {"success": 1, "failure": 2} == {
        a["outcome"]: point.count for a, point in durations
    }
    _, _, retries = found["sage_resilience.retries"]
    assert [({"breaker": "api"}, 1)] == [(a, pt.value) for a, pt in retries]
    _, _, rejections = found["sage_resilience.rejections"]
    assert [({"breaker": "api", "reason": "open"}, 1)] == [
        (a, pt.value) for a, pt in rejections
    ]


def test_the_state_gauge_shows_each_configured_breaker(reader: Any) -> None:
    configure()
    p = policy("siliconflow_api")
    while p.state != "open":
        with pytest.raises((Down, CircuitOpenError)):
            p.call(down)
    _, kind, states = points(reader)["sage_resilience.circuit.state"]
    assert "Gauge" == kind
    shown = {(a["breaker"], a["state"]): point.value for a, point in states}
    assert 1 == shown[("siliconflow_api", "open")]
    assert 0 == shown[("siliconflow_api", "closed")]
    assert 0 == shown[("siliconflow_api", "half-open")]
    assert 1 == shown[("database_connection", "closed")]


def test_span_events_on_the_callers_span(reader: Any, spans: Any) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("app")
    p = make_policy(
        "db", failure_threshold=2, recovery_timeout=30, retry={"attempts": 2}
    )
    with tracer.start_as_current_span("request"):
        with pytest.raises(Down):
            p.call(down)
        with pytest.raises(CircuitOpenError):
            p.call(lambda: "ok")
    (span,) = exporter.get_finished_spans()
    events = [(e.name, dict(e.attributes or {})) for e in span.events]
    assert [
        "sage_resilience.retry",
        "sage_resilience.state_change",
        "sage_resilience.rejected",
    ] == [name for name, _ in events]
    retry, change, rejected = (attrs for _, attrs in events)
    assert ("db", 1, "Down") == (
        retry["breaker"],
        retry["attempt"],
        retry["error.type"],
    )
    assert "s3cret" not in retry["error.message"]
    assert ("closed", "open", "consecutive_failures") == (
        change["old_state"],
        change["new_state"],
        change["reason"],
    )
    assert "open" == rejected["reason"]
    assert 0 < rejected["retry_after"] <= 30


def test_uninstrument_stops_reporting(reader: Any) -> None:
    p = make_policy("api")
    p.call(lambda: "ok")
    otel.uninstrument()
    assert () == get_hooks()
    p.call(lambda: "ok")
    _, _, calls = points(reader)["sage_resilience.calls"]
    assert [1] == [point.value for _, point in calls]


def test_instrument_twice_keeps_one_hook() -> None:
    for _ in range(2):
        reader = InMemoryMetricReader()
        otel.instrument(meter_provider=MeterProvider(metric_readers=[reader]))
    try:
        assert 1 == len(get_hooks())
    finally:
        otel.uninstrument()
