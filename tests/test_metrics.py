"""Prometheus metrics read from the policies' status at scrape time."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sage_resilience import (
    BulkheadFullError,
    CircuitOpenError,
    _registry,
    configure,
    metrics,
    policy,
)
from tests.helpers import Clock, with_clock

if TYPE_CHECKING:
    from pathlib import Path

CONFIG = """\
version: 1
policies:
  db: {critical: true, failure_threshold: 2, recovery_timeout: 60}
  api:
    failure_threshold: 3
    recovery_timeout: 60
    retry: {attempts: 2}
    max_concurrency: 1
"""


@pytest.fixture
def configured(tmp_path: Path) -> Path:
    path = tmp_path / "resilience.yaml"
    path.write_text(CONFIG)
    configure(path)
    return path


@pytest.fixture
def registry() -> CollectorRegistry:
    fresh = CollectorRegistry()
    metrics.register_metrics(fresh, attempt_latency=False)
    return fresh


def scrape(registry: CollectorRegistry | None = None) -> dict[str, Any]:
    """Family name -> {(label values...): value} of one scrape."""
    text = metrics.generate_latest_text(registry).decode()
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        samples = out.setdefault(family.name, {})
        for sample in family.samples:
            key = (sample.name, *sorted(sample.labels.items()))
            samples[key] = sample.value
    return out


def values(
    found: dict[str, Any], family: str, sample: str | None = None
) -> dict[tuple[str, ...], float]:
    """{label values...: value} of *family*'s samples named *sample*."""
    sample = sample or family
    return {
        tuple(v for _, v in key[1:]): value
        for key, value in found.get(family, {}).items()
        if key[0] == sample
    }


def boom() -> None:
    raise ZeroDivisionError("boom")


@pytest.mark.usefixtures("configured")
class TestCollector:
    def test_families(self, registry: CollectorRegistry) -> None:
        """Every documented family is exposed, per breaker."""
        found = scrape(registry)
        assert {
            "sage_resilience_circuit_state",
            "sage_resilience_circuit_forced",
            "sage_resilience_calls",
            "sage_resilience_retries",
            "sage_resilience_open_seconds",
            "sage_resilience_failure_count",
            "sage_resilience_attempt_duration_seconds",
        } <= set(found)

    def test_state_gauge(self, registry: CollectorRegistry) -> None:
        """1 for the current state, 0 for the others."""
        policy("db").open()
        states = values(scrape(registry), "sage_resilience_circuit_state")
        assert {
            ("api", "closed"): 1.0,
            ("api", "half-open"): 0.0,
            ("api", "open"): 0.0,
            ("db", "closed"): 0.0,
            ("db", "half-open"): 0.0,
            ("db", "open"): 1.0,
        } == states
        forced = values(scrape(registry), "sage_resilience_circuit_forced")
        assert {("api",): 0.0, ("db",): 1.0} == forced

    def test_calls_by_outcome(self, registry: CollectorRegistry) -> None:
        """success, failure, rejected and bulkhead_rejected counters."""
        db = policy("db")
        db.call(lambda: None)
        for _ in range(2):
            with pytest.raises(ZeroDivisionError):
                db.call(boom)
        with pytest.raises(CircuitOpenError):
            db.call(boom)
        api = policy("api")
        holding = api._s.bulkhead
        assert holding is not None
        assert holding.acquire_sync()
        try:
            with pytest.raises(BulkheadFullError):
                api.call(lambda: None)
        finally:
            holding.release()
        calls = values(
            scrape(registry),
            "sage_resilience_calls",
            "sage_resilience_calls_total",
        )
        assert {
            ("api", "bulkhead_rejected"): 1.0,
            ("api", "failure"): 0.0,
            ("api", "rejected"): 0.0,
            ("api", "success"): 0.0,
            ("db", "bulkhead_rejected"): 0.0,
            ("db", "failure"): 2.0,
            ("db", "rejected"): 1.0,
            ("db", "success"): 1.0,
        } == calls

    def test_retries_and_failure_count(
        self, registry: CollectorRegistry
    ) -> None:
        """Retries scheduled and the consecutive failure count."""
        with pytest.raises(ZeroDivisionError):
            policy("api").call(boom)
        found = scrape(registry)
        retries = values(
            found, "sage_resilience_retries", "sage_resilience_retries_total"
        )
        assert {("api",): 1.0, ("db",): 0.0} == retries
        failing = values(found, "sage_resilience_failure_count")
        assert {("api",): 2.0, ("db",): 0.0} == failing

    def test_open_seconds_grow_while_open(
        self, registry: CollectorRegistry
    ) -> None:
        """Time open is counted for an open circuit and never goes down."""
        family = "sage_resilience_open_seconds"
        name = f"{family}_total"
        before = values(scrape(registry), family, name)
        clock = Clock(time.time())
        with_clock(policy("db"), clock)
        policy("db").open()
        clock.advance(100)  # open for 100 s by the circuit's own clock
        opened = values(scrape(registry), family, name)
        clock.advance(5)
        policy("db").close()
        clock.advance(50)  # closed: no longer grows
        closed = values(scrape(registry), family, name)
        assert opened["api",] == before["api",]
        assert opened["db",] - before["db",] >= 100
        assert 105 == closed["db",] - before["db",]

    def test_follows_reload(
        self, registry: CollectorRegistry, tmp_path: Path
    ) -> None:
        """A reload changes the breakers exposed at the next scrape."""
        path = tmp_path / "other.yaml"
        path.write_text("version: 1\npolicies:\n  cache: {}\n")
        configure(path)
        forced = values(scrape(registry), "sage_resilience_circuit_forced")
        assert {("cache",): 0.0} == forced


class TestRegistration:
    def test_idempotent(self) -> None:
        """Registering twice on one registry returns the same collector."""
        fresh = CollectorRegistry()
        first = metrics.register_metrics(fresh, attempt_latency=False)
        second = metrics.register_metrics(fresh, attempt_latency=False)
        assert first is second

    def test_registering_reads_no_configuration(self) -> None:
        """Registration does not configure the registry (describe only)."""
        metrics.register_metrics(CollectorRegistry(), attempt_latency=False)
        assert _registry._config is None

    @pytest.mark.usefixtures("configured")
    def test_default_registry(self) -> None:
        """Without a registry: prometheus-client's default one."""
        found = scrape()
        assert "sage_resilience_circuit_state" in found
        assert any(name.startswith("process_") for name in found) or any(
            name.startswith("python_") for name in found
        )
        assert metrics.register_metrics() is metrics.register_metrics(REGISTRY)


class TestAttemptLatency:
    def test_observe_attempt(self, registry: CollectorRegistry) -> None:
        """Observations land in the per-breaker histogram's buckets."""
        name = "latency-test-breaker"
        metrics.observe_attempt(name, 0.003)
        metrics.observe_attempt(name, 0.2)
        found = scrape(registry)
        family = "sage_resilience_attempt_duration_seconds"
        counts = values(found, family, f"{family}_count")
        assert 2.0 == counts[name,]
        buckets = {
            le: v
            for (breaker, le), v in values(
                found, family, f"{family}_bucket"
            ).items()
            if breaker == name
        }
        assert 0.0 == buckets["0.0025"]
        assert 1.0 == buckets["0.005"]
        assert 2.0 == buckets["0.25"]
        assert 2.0 == buckets["+Inf"]

    @pytest.mark.usefixtures("configured")
    def test_calls_are_observed(self, registry: CollectorRegistry) -> None:
        """With the hook installed, each attempt that ran is observed."""
        family = "sage_resilience_attempt_duration_seconds"
        assert metrics.enable_attempt_latency()
        try:
            before = values(scrape(registry), family, f"{family}_count")
            policy("db").call(lambda: None)
            with pytest.raises(ZeroDivisionError):
                policy("db").call(boom)
            after = values(scrape(registry), family, f"{family}_count")
        finally:
            metrics.enable_attempt_latency(False)
        assert 2.0 == after["db",] - before.get(("db",), 0.0)
