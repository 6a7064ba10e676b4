"""Every public module's ``__all__`` is exactly its public API.

A name added to or dropped from a public module is an API change: it
must show up here, in the same commit, and in the changelog.
"""

from __future__ import annotations

import importlib

import pytest

PUBLIC = {
    "sage_resilience": {
        "BulkheadFullError",
        "Cause",
        "ChaosError",
        "CircuitOpenError",
        "ConfigError",
        "Diagnosis",
        "HealthReport",
        "Policy",
        "PolicyConfig",
        "ResilienceConfig",
        "State",
        "StatusEntry",
        "UnknownPolicyError",
        "breaker_status",
        "configure",
        "diagnose",
        "health",
        "load_config",
        "policy",
    },
    "sage_resilience.exceptions": {
        "BulkheadFullError",
        "ChaosError",
        "CircuitOpenError",
        "ConfigError",
        "UnknownPolicyError",
    },
    "sage_resilience.http": {
        "FailureStatusError",
        "LIBRARIES",
        "PolicyTimeoutError",
        "ResilientTransport",
        "resilient_client",
        "resilient_sync_client",
    },
    "sage_resilience.postgres": {
        "Guarded",
        "connect",
        "connect_kwargs",
        "create_pool",
        "guard",
    },
    "sage_resilience.openai": {
        "http_library",
        "openai_client",
        "sync_openai_client",
    },
    "sage_resilience.asgi": {
        "ResilienceApp",
        "TOKEN_ENV",
        "app",
        "create_app",
    },
    "sage_resilience.metrics": {
        "CONTENT_TYPE",
        "LATENCY_BUCKETS",
        "ResilienceCollector",
        "enable_attempt_latency",
        "generate_latest_text",
        "observe_attempt",
        "register_metrics",
    },
    "sage_resilience.status": {
        "HealthReport",
        "HealthStatus",
        "State",
        "StatusEntry",
        "WindowFigures",
        "breaker_status",
        "health",
    },
    "sage_resilience.otel": {"instrument", "uninstrument"},
    "sage_resilience.logs": {
        "BreakerSummary",
        "KeysSeen",
        "Segment",
        "SkippedLine",
        "Summary",
        "Transition",
        "parse_time",
        "render_html",
        "render_table",
        "summarize",
    },
    "sage_resilience.instrumentation": {
        "AttemptFinished",
        "CallRejected",
        "RetryScheduled",
        "StateChange",
        "add_hook",
        "get_hooks",
        "remove_hook",
    },
    "sage_resilience.testing": {
        "capture_events",
        "is_testing",
        "reset",
        "set_testing",
    },
    "sage_resilience.compat": {
        "CircuitBreaker",
        "CircuitBreakerConfig",
        "CircuitBreakerManager",
        "CircuitBreakerOpenError",
        "CircuitState",
        "DATABASE_RETRY_CONFIG",
        "DEFAULT_RETRY_CONFIG",
        "NETWORK_RETRY_CONFIG",
        "RetryConfig",
        "RetryManager",
        "RetryStrategy",
        "breaker_manager",
        "circuit_breaker",
        "get_breaker_stats",
        "retry",
    },
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_all_is_exactly_the_public_api(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert PUBLIC[module_name] == set(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None


@pytest.mark.parametrize("module_name", sorted(PUBLIC))
def test_a_star_import_gives_exactly_all(module_name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {module_name} import *", namespace)
    namespace.pop("__builtins__")
    assert PUBLIC[module_name] == set(namespace)


def test_the_exceptions_are_the_same_objects_everywhere() -> None:
    import sage_resilience  # noqa: PLC0415
    from sage_resilience import exceptions  # noqa: PLC0415

    for name in PUBLIC["sage_resilience.exceptions"]:
        assert getattr(sage_resilience, name) is getattr(exceptions, name)


def test_version() -> None:
    """__version__ comes from the package metadata."""
    import sage_resilience  # noqa: PLC0415

    assert sage_resilience.__version__.count(".") >= 2
