"""The drop-in for Sage's old breaker module."""

from __future__ import annotations

import pytest
from sage_resilience import CircuitOpenError, breaker_status, configure
from sage_resilience.compat import (
    CircuitBreakerOpenError,
    CircuitState,
    circuit_breaker,
    get_breaker_stats,
)


class Business(Exception):
    """Not a dependency failure for the old call site."""


class TestCompat:
    async def test_old_async_call_site_works(self):
        """The old decorator with its arguments opens after the threshold."""
        calls = 0

        @circuit_breaker("legacy_db", failure_threshold=2, recovery_timeout=30)
        async def get_connection() -> None:
            nonlocal calls
            calls += 1
            raise OSError("refused")

        for _ in range(2):
            with pytest.raises(OSError):
                await get_connection()
        with pytest.raises(CircuitBreakerOpenError):
            await get_connection()
        assert 2 == calls
        stats = get_breaker_stats("legacy_db")
        assert CircuitState.OPEN.value == stats["state"]
        assert 2 == stats["failure_threshold"]
        assert 30 == stats["recovery_timeout"]

    def test_old_sync_call_site_works(self):
        """Sync functions are decorated too."""

        @circuit_breaker("legacy_cache", failure_threshold=1)
        def read() -> str:
            return "value"

        assert "value" == read()
        assert "closed" == get_breaker_stats("legacy_cache")["state"]
        assert "legacy_cache" in breaker_status()

    async def test_only_expected_exceptions_count(self):
        """Other exceptions pass through without counting."""

        @circuit_breaker(
            "api", failure_threshold=1, expected_exception=ConnectionError
        )
        async def call(exc: Exception) -> None:
            raise exc

        with pytest.raises(Business):
            await call(Business())
        assert "closed" == get_breaker_stats("api")["state"]
        with pytest.raises(ConnectionError):
            await call(ConnectionError())
        assert "open" == get_breaker_stats("api")["state"]

    def test_names_are_the_new_ones(self):
        """The old names are aliases of the new API."""
        assert CircuitBreakerOpenError is CircuitOpenError
        assert ["closed", "open", "half-open"] == [
            s.value for s in CircuitState
        ]

    async def test_the_yaml_supplies_what_is_not_given(self):
        """A configured name keeps its retries; the arguments override."""
        calls = 0

        @circuit_breaker("database_connection", failure_threshold=2)
        async def connect() -> None:
            nonlocal calls
            calls += 1
            raise OSError("refused")

        with pytest.raises(CircuitOpenError) as info:
            await connect()
        assert 2 == calls  # the YAML's 3 attempts, cut by the opening
        assert isinstance(info.value.__cause__, OSError)

    def test_overrides_survive_a_reload(self):
        """Decorator arguments keep overriding the YAML after configure()."""

        @circuit_breaker("siliconflow_api", failure_threshold=7)
        def call() -> None:
            return None

        configure()
        assert 7 == get_breaker_stats("siliconflow_api")["failure_threshold"]
        assert 120 == get_breaker_stats("siliconflow_api")["recovery_timeout"]
