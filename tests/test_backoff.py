"""Adaptive open time: ``recovery_backoff``."""

from __future__ import annotations

import httpx2
import pytest
from sage_resilience import CircuitOpenError, PolicyConfig
from sage_resilience._config import load_config_text
from sage_resilience.exceptions import ConfigError
from tests.helpers import Clock, make_policy, named, with_clock


class Boom(ConnectionError):
    """A dependency failure."""


async def ok() -> str:
    return "ok"


async def boom() -> None:
    raise Boom("down")


class Outage:
    """A policy on a controllable clock, and the moves of an outage."""

    def __init__(self, **settings) -> None:
        self.clock = Clock()
        defaults = {
            "failure_threshold": 1,
            "recovery_timeout": 10,
            "recovery_backoff": {"multiplier": 2, "max": 35},
        }
        self.p = with_clock(
            make_policy(**{**defaults, **settings}), self.clock
        )

    async def trip(self) -> None:
        """One counted failure while closed: the circuit opens."""
        assert "closed" == self.p.state
        with pytest.raises(Boom):
            await self.p.acall(boom)
        assert "open" == self.p.state

    async def probe(self, fn) -> None:
        """Wait out the open time, then let one probe through."""
        self.clock.advance(self.p.status()["retry_after"])
        try:
            await self.p.acall(fn)
        except Boom:
            pass

    @property
    def open_time(self) -> float:
        return self.p.status()["current_recovery_timeout"]


class TestGrowth:
    async def test_failed_probes_multiply_up_to_max(self):
        """10, 20, 35 (capped), 35: each failed probe re-trips."""
        o = Outage()
        await o.trip()
        seen = [o.open_time]
        for _ in range(3):
            await o.probe(boom)
            assert "open" == o.p.state
            seen.append(o.open_time)
        assert [10, 20, 35, 35] == seen

    async def test_the_grown_time_is_really_waited(self):
        """After a re-trip, calls are refused until the grown time."""
        o = Outage()
        await o.trip()
        await o.probe(boom)
        assert 20 == o.p.status()["retry_after"]
        o.clock.advance(19.9)
        with pytest.raises(CircuitOpenError) as refused:
            await o.p.acall(ok)
        assert 0.1 == pytest.approx(refused.value.retry_after)
        o.clock.advance(0.1)
        assert "ok" == await o.p.acall(ok)
        assert "closed" == o.p.state

    async def test_events_report_the_open_time_in_force(self, events):
        """circuit_state_changed carries the grown recovery_timeout."""
        o = Outage()
        await o.trip()
        await o.probe(boom)
        opened = [
            (e["reason"], e["recovery_timeout"])
            for e in named(events, "circuit_state_changed")
            if e["new_state"] == "open"
        ]
        assert [("consecutive_failures", 10), ("probe_failed", 20)] == opened

    async def test_retrip_soon_after_a_close_grows(self):
        """Closed for less than recovery_timeout x multiplier: grows."""
        o = Outage()
        await o.trip()
        await o.probe(ok)
        assert "closed" == o.p.state
        o.clock.advance(19.9)  # stable period: 10 x 2 = 20 s
        await o.trip()
        assert 20 == o.open_time

    async def test_a_stable_close_resets(self):
        """Closed for the stable period: the next trip starts over."""
        o = Outage()
        await o.trip()
        await o.probe(boom)
        await o.probe(boom)
        assert 35 == o.open_time
        await o.probe(ok)
        o.clock.advance(20)  # the configured 10 x 2, not 35 x 2
        await o.trip()
        assert 10 == o.open_time

    async def test_rate_trips_grow_too(self, events):
        """A failure_rate re-trip within the stable period grows."""
        o = Outage(
            failure_threshold=100,
            trip={"failure_rate": 0.5, "minimum_calls": 2},
        )
        await o.p.acall(ok)
        with pytest.raises(Boom):
            await o.p.acall(boom)
        assert "open" == o.p.state
        await o.probe(ok)
        o.clock.advance(5)
        await o.p.acall(ok)
        with pytest.raises(Boom):
            await o.p.acall(boom)
        assert ("open", 20) == (o.p.state, o.open_time)
        reasons = [e["reason"] for e in named(events, "circuit_state_changed")]
        assert "failure_rate" == reasons[-1]

    async def test_without_backoff_the_open_time_is_constant(self):
        """No recovery_backoff: every trip opens for recovery_timeout."""
        o = Outage(recovery_backoff=None)
        await o.trip()
        for _ in range(3):
            await o.probe(boom)
        assert (10, 10) == (o.open_time, o.p.status()["retry_after"])

    async def test_multiplier_one_keeps_it_constant(self):
        """multiplier 1 never grows."""
        o = Outage(recovery_backoff={"multiplier": 1, "max": 35})
        await o.trip()
        await o.probe(boom)
        assert 10 == o.open_time

    async def test_forced_open_uses_the_base_time(self):
        """An operator's open/close neither grows nor keeps the growth."""
        o = Outage()
        await o.trip()
        await o.probe(boom)
        await o.probe(ok)
        assert 20 == o.open_time
        o.p.open()  # forced, within the stable period
        assert 10 == o.open_time
        o.p.close()
        await o.trip()  # within the stable period of that close
        assert 20 == o.open_time

    async def test_reset_forgets_the_growth(self):
        """reset() brings the open time back to recovery_timeout."""
        o = Outage()
        await o.trip()
        await o.probe(boom)
        o.p.reset()
        assert 10 == o.open_time
        await o.trip()
        assert 10 == o.open_time


class TestConfig:
    def test_defaults(self):
        """multiplier 2, max 600."""
        config = PolicyConfig.model_validate({"recovery_backoff": {}})
        backoff = config.recovery_backoff
        assert backoff is not None
        assert (2.0, 600.0) == (backoff.multiplier, backoff.max)

    def test_status_starts_at_recovery_timeout(self):
        """current_recovery_timeout is recovery_timeout before any trip."""
        p = make_policy(recovery_timeout=7, recovery_backoff={"max": 70})
        assert 7 == p.status()["current_recovery_timeout"]

    @pytest.mark.parametrize(
        ("block", "key", "problem"),
        [
            ("{multiplier: 0.5}", "multiplier", ">= 1"),
            ("{max: 5}", "max", "recovery_timeout"),
        ],
    )
    def test_bad_values_name_file_line_and_key(self, block, key, problem):
        """multiplier >= 1 and max >= recovery_timeout, with file:line."""
        text = (
            "version: 1\npolicies:\n  api:\n    recovery_timeout: 30\n"
            f"    recovery_backoff: {block}\n"
        )
        with pytest.raises(ConfigError) as info:
            load_config_text(text, source="b.yaml", environ={})
        message = str(info.value)
        assert message.startswith("b.yaml:5: policies.api.recovery_backoff")
        assert problem in message
        assert key in message


def rate_limited(status: int = 429, retry_after: str | None = "5"):
    """An httpx2 status error as a client raises it (pure logic)."""
    request = httpx2.Request("POST", "https://api.test/v1/chat/completions")
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    response = httpx2.Response(status, headers=headers, request=request)
    return httpx2.HTTPStatusError(
        f"{status}", request=request, response=response
    )


def failing(exc: BaseException):
    async def call() -> None:
        raise exc

    return call


class TestRetryAfterOpenTime:
    async def test_the_opening_answer_sets_the_open_time(self, events):
        """429 with Retry-After: 5 opens for 5 s, not recovery_timeout."""
        o = Outage(recovery_timeout=120, recovery_backoff=None)
        with pytest.raises(httpx2.HTTPStatusError):
            await o.p.acall(failing(rate_limited(retry_after="5")))
        status = o.p.status()
        assert ("open", 5.0, 5.0) == (
            status["state"],
            status["current_recovery_timeout"],
            status["retry_after"],
        )
        [opened] = named(events, "circuit_state_changed")
        assert (5.0, "consecutive_failures") == (
            opened["open_for"],
            opened["reason"],
        )

    async def test_the_circuit_half_opens_when_asked(self):
        """After the asked wait a probe goes through and closes it."""
        o = Outage(recovery_timeout=120, recovery_backoff=None)
        with pytest.raises(httpx2.HTTPStatusError):
            await o.p.acall(failing(rate_limited(retry_after="1")))
        o.clock.advance(0.9)
        with pytest.raises(CircuitOpenError):
            await o.p.acall(ok)
        o.clock.advance(0.2)
        assert ("ok", "closed") == (await o.p.acall(ok), o.p.state)

    async def test_capped_by_recovery_timeout_without_backoff(self):
        """Retry-After: 3600 opens for recovery_timeout at most."""
        o = Outage(recovery_timeout=120, recovery_backoff=None)
        with pytest.raises(httpx2.HTTPStatusError):
            await o.p.acall(failing(rate_limited(retry_after="3600")))
        assert 120 == o.open_time

    async def test_capped_by_backoff_max(self):
        """With recovery_backoff, the cap is max(recovery_timeout, max)."""
        o = Outage(
            recovery_timeout=120,
            recovery_backoff={"multiplier": 2, "max": 600},
        )
        with pytest.raises(httpx2.HTTPStatusError):
            await o.p.acall(failing(rate_limited(retry_after="3600")))
        assert 600 == o.open_time

    async def test_without_retry_after_the_plan_holds(self, events):
        """A 503 without Retry-After opens for recovery_timeout."""
        o = Outage(recovery_timeout=120, recovery_backoff=None)
        with pytest.raises(httpx2.HTTPStatusError):
            await o.p.acall(failing(rate_limited(503, retry_after=None)))
        [opened] = named(events, "circuit_state_changed")
        assert (120, 120) == (o.open_time, opened["open_for"])

    async def test_only_the_opening_failure_counts(self):
        """An earlier 429's Retry-After does not set the open time."""
        o = Outage(
            failure_threshold=2, recovery_timeout=30, recovery_backoff=None
        )
        with pytest.raises(httpx2.HTTPStatusError):
            await o.p.acall(failing(rate_limited(retry_after="2")))
        with pytest.raises(Boom):
            await o.p.acall(boom)
        assert ("open", 30) == (o.p.state, o.open_time)

    async def test_a_failed_probe_with_retry_after(self):
        """A probe answered 503 Retry-After: 7 reopens for 7 s."""
        o = Outage()  # recovery_timeout 10, backoff x2 up to 35
        await o.trip()
        o.clock.advance(o.p.status()["retry_after"])
        with pytest.raises(httpx2.HTTPStatusError):
            await o.p.acall(failing(rate_limited(503, retry_after="7")))
        assert ("open", 7) == (o.p.state, o.open_time)

    async def test_the_backoff_plan_is_not_lowered_by_it(self):
        """After a 1 s Retry-After, a failed probe grows from the plan."""
        o = Outage()  # 10, then x2 per failed probe
        with pytest.raises(httpx2.HTTPStatusError):
            await o.p.acall(failing(rate_limited(retry_after="1")))
        assert 1 == o.open_time
        await o.probe(boom)
        assert 20 == o.open_time

    async def test_forced_open_ignores_it(self, events):
        """An operator's open has no open_for: it lasts until closed."""
        o = Outage()
        o.p.open()
        [opened] = named(events, "circuit_state_changed")
        assert ("forced", None) == (opened["reason"], opened.get("open_for"))
