"""Prometheus metrics read from the policies' status at scrape time."""

from __future__ import annotations

import time
import uuid
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


def fresh_policy(tmp_path: Path) -> str:
    """Configure one policy whose name no other test used.

    The latency histogram is process-wide: a fresh name starts at zero.
    """
    name = f"latency-{uuid.uuid4().hex[:12]}"
    path = tmp_path / "latency.yaml"
    path.write_text(f"version: 1\npolicies:\n  {name}: {{}}\n")
    configure(path)
    return name


@pytest.mark.usefixtures("configured")
class TestCollector:
    def test_families(self, registry: CollectorRegistry) -> None:
        """Every documented family is exposed, per breaker."""
        found = scrape(registry)
        assert {
            "sage_resilience_circuit_state",
            "sage_resilience_circuit_forced",
            "sage_resilience_circuit_critical",
            "sage_resilience_calls",
            "sage_resilience_retries",
            "sage_resilience_open_seconds",
            "sage_resilience_consecutive_failures",
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

    def test_critical_gauge(self, registry: CollectorRegistry) -> None:
        """1 for a policy with critical: true, 0 for the others."""
        critical = values(scrape(registry), "sage_resilience_circuit_critical")
        assert {("api",): 0.0, ("db",): 1.0} == critical

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
        failing = values(found, "sage_resilience_consecutive_failures")
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

    def test_complete_before_the_first_scrape(self, tmp_path: Path) -> None:
        """Registered, then called, then scraped: every attempt counted."""
        name = fresh_policy(tmp_path)
        fresh = CollectorRegistry()
        metrics.register_metrics(fresh)
        for _ in range(3):
            policy(name).call(lambda: None)
        with pytest.raises(ZeroDivisionError):
            policy(name).call(boom)
        family = "sage_resilience_attempt_duration_seconds"
        counts = values(scrape(fresh), family, f"{family}_count")
        assert 4.0 == counts[name,]

    def test_a_series_before_the_first_attempt(
        self, registry: CollectorRegistry, tmp_path: Path
    ) -> None:
        """Each breaker's histogram is there, at zero, before any attempt.

        A series that first appears with a count above zero hides those
        attempts from rate() and increase().
        """
        name = fresh_policy(tmp_path)
        family = "sage_resilience_attempt_duration_seconds"
        found = scrape(registry)
        assert 0.0 == values(found, family, f"{family}_count")[name,]
        buckets = {
            le: v
            for (breaker, le), v in values(
                found, family, f"{family}_bucket"
            ).items()
            if breaker == name
        }
        assert len(metrics.LATENCY_BUCKETS) + 1 == len(buckets)
        assert {0.0} == set(buckets.values())

    @pytest.mark.usefixtures("configured")
    def test_scraping_leaves_latency_off(self) -> None:
        """attempt_latency=False holds: a scrape does not turn it on."""
        fresh = CollectorRegistry()
        metrics.register_metrics(fresh, attempt_latency=False)
        family = "sage_resilience_attempt_duration_seconds"
        before = values(scrape(fresh), family, f"{family}_count")
        policy("db").call(lambda: None)
        after = values(scrape(fresh), family, f"{family}_count")
        assert before["db",] == after["db",]


#: Every family of the collector: (type, label names of its samples).
FAMILIES = {
    "sage_resilience_circuit_state": ("gauge", {"breaker", "state"}),
    "sage_resilience_circuit_forced": ("gauge", {"breaker"}),
    "sage_resilience_circuit_critical": ("gauge", {"breaker"}),
    "sage_resilience_calls": ("counter", {"breaker", "outcome"}),
    "sage_resilience_retries": ("counter", {"breaker"}),
    "sage_resilience_open_seconds": ("counter", {"breaker"}),
    "sage_resilience_consecutive_failures": ("gauge", {"breaker"}),
    "sage_resilience_attempt_duration_seconds": (
        "histogram",
        {"breaker", "le"},
    ),
}


@pytest.mark.usefixtures("configured")
class TestExposition:
    """The exposition as a Prometheus server parses it."""

    def exposition(self, registry: CollectorRegistry) -> str:
        policy("db").call(lambda: None)
        for _ in range(2):
            with pytest.raises(ZeroDivisionError):
                policy("db").call(boom)
        with pytest.raises(CircuitOpenError):
            policy("db").call(lambda: None)
        # The histogram is process-wide: its values are checked on a
        # breaker name no other test observes.
        self.observed = f"observed-{uuid.uuid4().hex[:12]}"
        metrics.observe_attempt(self.observed, 0.004)
        return metrics.generate_latest_text(registry).decode()

    def test_families_types_labels(self, registry: CollectorRegistry) -> None:
        """Each family has its type and labels, one series set per breaker."""
        parsed = {
            family.name: family
            for family in text_string_to_metric_families(
                self.exposition(registry)
            )
            if family.name.startswith("sage_resilience_")
        }
        assert set(FAMILIES) <= set(parsed)
        for name, (kind, labels) in FAMILIES.items():
            family = parsed[name]
            assert kind == family.type, name
            for sample in family.samples:
                if sample.name.endswith(("_count", "_sum", "_created")):
                    assert {"breaker"} == set(sample.labels), sample
                else:
                    assert labels == set(sample.labels), sample
            assert {"api", "db"} <= {
                s.labels["breaker"] for s in family.samples
            }, name

    def test_values(self, registry: CollectorRegistry) -> None:
        """The values are the status entry's, as numbers."""
        found = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(
                self.exposition(registry)
            )
            for sample in family.samples
        }

        def value(name: str, **labels: str) -> float:
            return found[name, tuple(sorted(labels.items()))]

        assert 1.0 == value(
            "sage_resilience_circuit_state", breaker="db", state="open"
        )
        assert 0.0 == value(
            "sage_resilience_circuit_state", breaker="db", state="closed"
        )
        calls = "sage_resilience_calls_total"
        assert 1.0 == value(calls, breaker="db", outcome="success")
        assert 2.0 == value(calls, breaker="db", outcome="failure")
        assert 1.0 == value(calls, breaker="db", outcome="rejected")
        assert 0.0 == value(calls, breaker="api", outcome="success")
        assert 2.0 == value(
            "sage_resilience_consecutive_failures", breaker="db"
        )
        assert 1.0 == value("sage_resilience_circuit_critical", breaker="db")
        family = "sage_resilience_attempt_duration_seconds"
        name = self.observed
        assert 0.0 == value(f"{family}_bucket", breaker=name, le="0.0025")
        assert 1.0 == value(f"{family}_bucket", breaker=name, le="0.005")
        assert 1.0 == value(f"{family}_bucket", breaker=name, le="+Inf")
        assert 1.0 == value(f"{family}_count", breaker=name)
        assert 0.004 == pytest.approx(value(f"{family}_sum", breaker=name))

    def test_old_name_is_gone(self, registry: CollectorRegistry) -> None:
        """The gauge renamed for promtool is not exposed under its old name."""
        assert "sage_resilience_failure_count" not in self.exposition(registry)
