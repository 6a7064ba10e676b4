"""Fault injection for game days: the ``chaos`` block."""

from __future__ import annotations

import math
import random

import pytest
from sage_resilience import ChaosError, PolicyConfig, configure, policy
from sage_resilience._config import load_config_text
from sage_resilience.exceptions import CircuitOpenError, ConfigError
from tests.helpers import make_policy, named

TRIALS = 10_000


def within_five_sigma(hits: int, trials: int, rate: float) -> bool:
    """Whether *hits* fits Binomial(trials, rate) at 5 standard deviations."""
    sigma = math.sqrt(trials * rate * (1 - rate))
    return abs(hits - trials * rate) <= 5 * sigma


class Dependency:
    """Counts the calls that really reached it."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return "ok"

    async def acall(self) -> str:
        return self()


def chaos_policy(**chaos) -> object:
    return make_policy(
        failure_threshold=10**6, chaos={"enabled": True, **chaos}
    )


class TestOffByDefault:
    def test_defaults(self):
        """Disabled, and every rate 0."""
        chaos = PolicyConfig().chaos
        expected = (False, 0.0, 0.0, 0.0)
        actual = (
            chaos.enabled,
            chaos.failure_rate,
            chaos.latency,
            chaos.latency_rate,
        )
        assert expected == actual

    async def test_rates_without_enabled_inject_nothing(self, events):
        """failure_rate 1 does nothing until enabled is true."""
        p = make_policy(chaos={"failure_rate": 1, "latency_rate": 1})
        dep = Dependency()
        for _ in range(100):
            assert "ok" == await p.acall(dep.acall)
            assert "ok" == p.call(dep)
        assert 200 == dep.calls
        assert [] == named(events, "chaos_injected")
        assert [] == named(events, "chaos_enabled")

    async def test_enabled_with_zero_rates_injects_nothing(self, events):
        """Enabled alone (rates 0) changes no call."""
        p = chaos_policy()
        dep = Dependency()
        for _ in range(100):
            await p.acall(dep.acall)
        assert 100 == dep.calls
        assert [] == named(events, "chaos_injected")


class TestEnvSwitch:
    TEXT = (
        "version: 1\n"
        "policies:\n"
        "  siliconflow_api:\n"
        "    chaos: {failure_rate: 0.1}\n"
    )

    @pytest.mark.parametrize(
        ("value", "expected"),
        [("true", True), ("yes", True), ("on", True), ("false", False)],
    )
    def test_env_enables_chaos(self, value, expected):
        """SAGE_RESILIENCE__<POLICY>__CHAOS__ENABLED is a YAML boolean."""
        env = {"SAGE_RESILIENCE__SILICONFLOW_API__CHAOS__ENABLED": value}
        config = load_config_text(self.TEXT, environ=env)
        chaos = config.policies["siliconflow_api"].chaos
        assert (expected, 0.1) == (chaos.enabled, chaos.failure_rate)

    def test_yaml_alone_keeps_it_off(self):
        """Without enabled (file or env) chaos stays off."""
        config = load_config_text(self.TEXT, environ={})
        assert not config.policies["siliconflow_api"].chaos.enabled

    def test_a_non_boolean_is_a_config_error(self):
        """A typo in the switch is refused, never taken as on."""
        env = {"SAGE_RESILIENCE__SILICONFLOW_API__CHAOS__ENABLED": "maybe"}
        with pytest.raises(ConfigError, match=r"chaos\.enabled"):
            load_config_text(self.TEXT, environ=env)

    @pytest.mark.parametrize(
        ("key", "value"),
        [("failure_rate", 1.5), ("latency_rate", -0.1), ("latency", -1)],
    )
    def test_bad_rates_name_file_line_and_key(self, key, value):
        """Out-of-range chaos keys fail with file:line: dotted.key."""
        text = f"version: 1\npolicies:\n  api:\n    chaos:\n      {key}: {value}\n"
        with pytest.raises(ConfigError) as info:
            load_config_text(text, source="c.yaml", environ={})
        assert str(info.value).startswith(
            f"c.yaml:5: policies.api.chaos.{key}"
        )


class TestWarning:
    def test_configure_warns_loudly(self, events):
        """chaos_enabled at warning level, with the rates, at configure."""
        text = (
            "version: 1\n"
            "policies:\n"
            "  api: {chaos: {enabled: true, failure_rate: 0.25}}\n"
            "  db: {}\n"
        )
        configure(load_config_text(text, environ={}))
        (warning,) = named(events, "chaos_enabled")
        expected = ("warning", "api", 0.25)
        actual = (
            warning["log_level"],
            warning["breaker"],
            warning["failure_rate"],
        )
        assert expected == actual

    def test_reload_warns_when_switched_on_or_changed(self, events):
        """A reload that enables chaos or changes its rates warns again."""
        base = "version: 1\npolicies:\n  api: {chaos: {%s}}\n"
        configure(load_config_text(base % "", environ={}))
        assert [] == named(events, "chaos_enabled")
        on = base % "enabled: true, failure_rate: 0.1"
        configure(load_config_text(on, environ={}))
        configure(load_config_text(on, environ={}))  # unchanged: quiet
        configure(
            load_config_text(
                base % "enabled: true, failure_rate: 0.3", environ={}
            )
        )
        rates = [e["failure_rate"] for e in named(events, "chaos_enabled")]
        assert [0.1, 0.3] == rates


class TestInjection:
    def test_failure_rate_is_statistically_right(self, events):
        """10,000 sync calls at 20 %: within 5 sigma; failures replace calls."""
        random.seed(20_240_611)
        p = chaos_policy(failure_rate=0.2)
        dep = Dependency()
        injected = 0
        for _ in range(TRIALS):
            try:
                p.call(dep)
            except ChaosError:
                injected += 1
        assert within_five_sigma(injected, TRIALS, 0.2)
        assert TRIALS - injected == dep.calls
        faults = named(events, "chaos_injected")
        assert [("dep", "error")] * injected == [
            (e["breaker"], e["fault"]) for e in faults
        ]

    async def test_async_failure_rate_is_statistically_right(self):
        """10,000 async calls at 5 %: within 5 sigma."""
        random.seed(7)
        p = chaos_policy(failure_rate=0.05)
        dep = Dependency()
        injected = 0
        for _ in range(TRIALS):
            try:
                await p.acall(dep.acall)
            except ChaosError:
                injected += 1
        assert within_five_sigma(injected, TRIALS, 0.05)
        assert TRIALS - injected == dep.calls
        assert injected == p.status()["failures"]

    def test_latency_rate_is_statistically_right(self, events):
        """10,000 calls at 30 % latency: within 5 sigma, call still made."""
        random.seed(99)
        p = chaos_policy(latency=0.000_01, latency_rate=0.3)
        dep = Dependency()
        for _ in range(TRIALS):
            p.call(dep)
        delayed = named(events, "chaos_injected")
        assert within_five_sigma(len(delayed), TRIALS, 0.3)
        assert {("latency", 0.000_01)} == {
            (e["fault"], e["latency"]) for e in delayed
        }
        assert TRIALS == dep.calls

    async def test_chaos_errors_count_and_trip_like_real_ones(self, events):
        """ChaosError opens the circuit with consecutive_failures."""
        p = make_policy(
            failure_threshold=3, chaos={"enabled": True, "failure_rate": 1}
        )
        dep = Dependency()
        for _ in range(3):
            with pytest.raises(ChaosError):
                await p.acall(dep.acall)
        with pytest.raises(CircuitOpenError):
            await p.acall(dep.acall)
        assert 0 == dep.calls
        (change,) = named(events, "circuit_state_changed")
        expected = ("consecutive_failures", "ChaosError")
        assert expected == (
            change["reason"],
            change["last_failure"].split(":")[0],
        )

    async def test_chaos_counts_even_with_record_exceptions(self):
        """record_exceptions narrows real errors, never injected ones."""
        p = make_policy(
            failure_threshold=1,
            record_exceptions=["builtins.TimeoutError"],
            chaos={"enabled": True, "failure_rate": 1},
        )
        with pytest.raises(ChaosError):
            await p.acall(Dependency().acall)
        assert "open" == p.state

    async def test_chaos_errors_are_retried(self, events):
        """Every attempt draws again: 3 attempts, 3 injections, 2 retries."""
        p = make_policy(
            failure_threshold=10,
            retry={"attempts": 3},
            chaos={"enabled": True, "failure_rate": 1},
        )
        with pytest.raises(ChaosError):
            await p.acall(Dependency().acall)
        assert 3 == len(named(events, "chaos_injected"))
        assert 2 == len(named(events, "retry_scheduled"))
        assert 1 == len(named(events, "retry_exhausted"))

    async def test_latency_runs_inside_the_timeout(self):
        """Injected latency longer than timeout is a TimeoutError."""
        p = make_policy(
            timeout=0.05,
            chaos={"enabled": True, "latency": 30, "latency_rate": 1},
        )
        dep = Dependency()
        with pytest.raises(TimeoutError):
            await p.acall(dep.acall)
        assert (0, 1) == (dep.calls, p.status()["failure_count"])

    @pytest.mark.parametrize("mode", ["async", "sync"])
    async def test_latency_makes_calls_slow(self, mode):
        """Injected latency is part of the attempt's duration."""
        p = make_policy(
            trip={"slow_call_duration": 0.01, "minimum_calls": 100},
            chaos={"enabled": True, "latency": 0.02, "latency_rate": 1},
        )
        dep = Dependency()
        if mode == "async":
            await p.acall(dep.acall)
        else:
            p.call(dep)
        window = p.status()["window"]
        assert (1, 1) == (window["calls"], window["slow_calls"])

    def test_policy_from_the_registry_injects(self, events):
        """A configured policy (not only a bare one) injects faults."""
        text = (
            "version: 1\npolicies:\n"
            "  api: {chaos: {enabled: true, failure_rate: 1}}\n"
        )
        configure(load_config_text(text, environ={}))
        with pytest.raises(ChaosError, match="api"):
            policy("api").call(Dependency())
        assert 1 == len(named(events, "chaos_injected"))
