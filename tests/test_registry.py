"""configure(), policy(), hot reload, health."""

from __future__ import annotations

import pytest
import sage_resilience
from sage_resilience import (
    CircuitOpenError,
    ConfigError,
    UnknownPolicyError,
    _registry,
    breaker_status,
    configure,
    health,
    policy,
)
from tests.helpers import named

YAML = """\
version: 1
policies:
  api:
    failure_threshold: {threshold}
    recovery_timeout: 60
  db:
    critical: true
    failure_threshold: 1
"""


def write(tmp_path, threshold=2):
    path = tmp_path / "resilience.yaml"
    path.write_text(YAML.format(threshold=threshold))
    return path


async def fail() -> None:
    raise ConnectionError("down")


class TestRegistry:
    def test_configures_itself_from_the_shipped_default(self):
        """policy() on first use loads config/resilience.yaml."""
        p = policy("siliconflow_api")
        assert "siliconflow_api" == p.name
        assert 3 == p.config.retry.attempts
        assert {
            "database_connection",
            "database_execute",
            "database_fetch",
            "database_fetchrow",
            "database_fetchval",
            "memory_save",
            "memory_search",
            "memory_storage_save",
            "memory_storage_search",
            "memory_storage_text_search",
            "siliconflow_api",
            "vectorizer",
        } == set(breaker_status())

    def test_configured_tells_without_configuring(self, tmp_path):
        """configured() is False until a first use or configure()."""
        assert not _registry.configured()
        assert not _registry.configured()  # asking did not configure it
        configure(write(tmp_path))
        assert _registry.configured()

    def test_env_names_the_file(self, tmp_path, monkeypatch):
        """SAGE_RESILIENCE_CONFIG is the default path."""
        monkeypatch.setenv("SAGE_RESILIENCE_CONFIG", str(write(tmp_path)))
        assert {"api", "db"} == set(breaker_status())

    def test_unknown_policy_lists_the_known(self, tmp_path):
        """UnknownPolicyError is a KeyError naming the known policies."""
        configure(write(tmp_path))
        with pytest.raises(KeyError) as info:
            policy("nope")
        assert isinstance(info.value, UnknownPolicyError)
        assert "unknown policy 'nope'; known policies: api, db" == str(
            info.value
        )

    def test_platform_override_applies(self):
        """configure(platform=...) resolves that platform's overrides."""
        config = configure(platform="windows")
        assert "windows" == config.platform
        database = policy("database_connection").config
        assert 10 == database.timeout
        assert "127.0.0.1" == database.settings["host"]

    def test_config_loaded_event(self, tmp_path, events):
        """configure() logs config_loaded with path, platform, policies."""
        path = write(tmp_path)
        configure(path, platform="linux")
        (event,) = named(events, "config_loaded")
        assert (str(path), "linux", ["api", "db"]) == (
            event["path"],
            event["platform"],
            event["policies"],
        )


class TestHotReload:
    async def test_reload_keeps_state_and_applies_settings(self, tmp_path):
        """A surviving policy keeps its open circuit; new values apply."""
        configure(write(tmp_path, threshold=1))
        api = policy("api")
        with pytest.raises(ConnectionError):
            await api.acall(fail)
        assert "open" == api.state
        configure(write(tmp_path, threshold=4))
        assert api is policy("api")
        assert "open" == api.state
        assert 4 == api.config.failure_threshold
        assert 4 == api.breaker.fail_max

    async def test_decorated_functions_follow_reloads(self, tmp_path):
        """A function decorated before a reload uses the new settings."""
        configure(write(tmp_path, threshold=3))

        @policy("api")
        async def call() -> None:
            raise ConnectionError("down")

        configure(write(tmp_path, threshold=1))
        with pytest.raises(ConnectionError):
            await call()
        with pytest.raises(CircuitOpenError):
            await call()

    def test_invalid_reload_changes_nothing(self, tmp_path, events):
        """A bad file raises; the configuration in force stays whole."""
        configure(write(tmp_path, threshold=2))
        bad = tmp_path / "bad.yaml"
        bad.write_text(YAML.format(threshold=0))
        with pytest.raises(ConfigError) as info:
            configure(bad)
        assert (
            f"{bad}:4: policies.api.failure_threshold: must be >= 1 (got 0)"
            == str(info.value)
        )
        assert 2 == policy("api").config.failure_threshold
        (event,) = named(events, "config_reload_failed")
        assert str(bad) == event["path"]
        assert str(info.value) == event["error"]

    def test_bad_exception_name_is_rejected_whole(self, tmp_path):
        """An unimportable ignore_exceptions entry fails the reload."""
        configure(write(tmp_path))
        path = tmp_path / "next.yaml"
        path.write_text(
            YAML.format(threshold=5)
            + "  cache:\n    ignore_exceptions: [nowhere.Missing]\n"
        )
        with pytest.raises(
            ConfigError, match=r"cannot import .nowhere\.Missing."
        ):
            configure(path)
        assert {"api", "db"} == set(breaker_status())
        assert 2 == policy("api").config.failure_threshold

    def test_removed_policies_leave(self, tmp_path):
        """A policy absent from the new file is no longer in the registry."""
        configure(write(tmp_path))
        only_api = tmp_path / "only.yaml"
        only_api.write_text("version: 1\npolicies:\n  api: {}\n")
        configure(only_api)
        with pytest.raises(UnknownPolicyError):
            policy("db")


class TestHealth:
    async def test_ok_degraded_down(self, tmp_path):
        """down when a critical policy is open, degraded when any is."""
        configure(write(tmp_path, threshold=1))
        assert "ok" == health()["status"]
        with pytest.raises(ConnectionError):
            await policy("api").acall(fail)
        assert "degraded" == health()["status"]
        with pytest.raises(ConnectionError):
            await policy("db").acall(fail)
        report = health()
        assert "down" == report["status"]
        assert sage_resilience.load_config().platform == report["platform"]
        assert {"api", "db"} == set(report["breakers"])
