"""Small builders shared by the engine tests."""

from __future__ import annotations

from typing import Any

from sage_resilience import Policy, PolicyConfig


def make_policy(name: str = "dep", **settings: Any) -> Policy:
    """A policy outside the registry, from YAML-like settings."""
    return Policy(name, PolicyConfig.model_validate(settings))


class Clock:
    """A controllable wall clock for a gate."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def with_clock(policy: Policy, clock: Clock) -> Policy:
    """Make *policy*'s circuit read time from *clock*."""
    policy._gate._clock = clock
    return policy


def named(events: list[Any], name: str) -> list[Any]:
    """The events called *name*, in order."""
    return [e for e in events if e["event"] == name]
