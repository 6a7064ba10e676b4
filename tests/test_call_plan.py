"""The call plan: every policy key is declared for the fast path or not.

``Policy.acall`` has a plain variant (inlined), a timed-only one and a
general one (see the docstring of ``sage_resilience._attempt``). A key read
while an attempt runs must be honoured by the variants that can run for
it: ``CALL_PLAN`` declares, for every ``PolicyConfig`` key, which variants
honour it, and these tests fail on a key it does not declare, so a new
per-attempt key cannot silently skip the fast path.
"""

from __future__ import annotations

import typing
from typing import Any

import pytest
from pydantic import BaseModel, Field
from sage_resilience import PolicyConfig, _attempt
from sage_resilience._attempt import CALL_PLAN, Settings
from tests.helpers import make_policy

#: For each key declared "timed" or "general": a configuration that uses
#: it (for a key of a switched section, with the section switched on).
USING: dict[str, dict[str, Any]] = {
    "trip.slow_call_duration": {"trip": {"slow_call_duration": 1.0}},
    "retry.deadline": {"retry": {"attempts": 3, "deadline": 5}},
    "max_concurrency": {"max_concurrency": 2},
    "max_wait": {"max_concurrency": 2, "max_wait": 1},
    "chaos": {"chaos": {"enabled": True}},
    "chaos.enabled": {"chaos": {"enabled": True}},
    "chaos.failure_rate": {"chaos": {"enabled": True, "failure_rate": 0.5}},
    "chaos.latency": {"chaos": {"enabled": True, "latency": 0.1}},
    "chaos.latency_rate": {
        "chaos": {"enabled": True, "latency": 0.1, "latency_rate": 0.5}
    },
}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (``X | None``, tuples...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_models_in(arg))
    return found


def keys_of(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every field of *model*, nested models' fields dotted, recursively."""
    keys: list[str] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        keys.append(key)
        for nested in _models_in(field.annotation):
            keys.extend(keys_of(nested, f"{key}."))
    return keys


def undeclared(model: type[BaseModel]) -> set[str]:
    """The keys of *model* that ``CALL_PLAN`` does not declare."""
    return set(keys_of(model)) - set(CALL_PLAN)


def variant(config: PolicyConfig) -> str:
    """The variant ``Policy.acall`` runs for *config* (no observer)."""
    s = Settings("dep", config)
    if s.plain:
        return "all"
    return "timed" if s.timed_only else "general"


class TestEveryKeyIsDeclared:
    def test_every_policy_key_is_in_the_call_plan(self):
        """A new PolicyConfig key fails here until CALL_PLAN declares it."""
        missing = undeclared(PolicyConfig)
        assert not missing, (
            f"PolicyConfig keys {sorted(missing)} are not declared in "
            "sage_resilience._attempt.CALL_PLAN: say which call variants "
            "honour them (see 'The call plan' in that module)"
        )

    def test_the_call_plan_names_no_key_that_is_gone(self):
        stale = set(CALL_PLAN) - set(keys_of(PolicyConfig))
        assert not stale, f"CALL_PLAN declares unknown keys {sorted(stale)}"

    def test_every_declaration_is_a_known_variant(self):
        assert set(CALL_PLAN.values()) <= {"all", "timed", "general"}

    def test_nested_keys_are_reached(self):
        keys = keys_of(PolicyConfig)
        for key in ("retry.backoff.jitter", "trip.window", "chaos.latency"):
            assert key in keys

    def test_an_unknown_key_is_caught(self):
        """The check fails for a key no one declared, nested ones too."""

        class Hedging(BaseModel):
            delay: float = 0.1

        class Extended(PolicyConfig):
            brand_new: int = 0
            hedging: Hedging | None = Field(default=None)

        new = undeclared(Extended) - undeclared(PolicyConfig)
        assert {"brand_new", "hedging", "hedging.delay"} == new


class TestDeclarationsHold:
    """What CALL_PLAN says about a key is what Settings chooses."""

    @pytest.mark.parametrize(
        "key",
        sorted({k for k, v in CALL_PLAN.items() if v != "all"} | set(USING)),
    )
    def test_a_key_off_the_plain_variant_leaves_it(self, key):
        assert key in USING, (
            f"{key!r} is declared {CALL_PLAN[key]!r}: give USING a "
            "configuration that uses it"
        )
        config = PolicyConfig.model_validate(USING[key])
        assert CALL_PLAN[key] == variant(config)

    def test_the_defaults_take_the_plain_variant(self):
        assert "all" == variant(PolicyConfig())

    def test_every_example_is_of_a_declared_key(self):
        assert set(USING) <= set(CALL_PLAN)


class TestDispatch:
    """Policy.acall runs the variant its settings chose."""

    @staticmethod
    def spy(
        p: Any, name: str, calls: list[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        real = getattr(p, name)

        async def spied(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return await real(*args, **kwargs)

        monkeypatch.setattr(p, name, spied)

    @pytest.mark.parametrize(
        ("settings", "expected"),
        [
            ({}, []),
            ({"timeout": 5}, []),
            (USING["trip.slow_call_duration"], ["_attempt_timed"]),
            (USING["max_concurrency"], ["_attempt_async"]),
            (USING["retry.deadline"], ["_attempt_async"]),
        ],
    )
    async def test_variant(self, settings, expected, monkeypatch):
        # No attempt hook (another test may have enabled the metrics).
        monkeypatch.setattr(_attempt, "attempt_observer", None)
        p = make_policy(**settings)
        calls: list[str] = []
        self.spy(p, "_attempt_timed", calls, monkeypatch)
        self.spy(p, "_attempt_async", calls, monkeypatch)

        async def ok() -> int:
            return 1

        assert 1 == await p.acall(ok)
        assert expected == calls

    async def test_an_observer_takes_the_general_variant(self, monkeypatch):
        seen: list[str] = []
        monkeypatch.setattr(
            _attempt,
            "attempt_observer",
            lambda name, _s, _o, _e: seen.append(name),
        )
        p = make_policy("observed", trip={"slow_call_duration": 1.0})
        calls: list[str] = []
        self.spy(p, "_attempt_async", calls, monkeypatch)

        async def ok() -> int:
            return 1

        await p.acall(ok)
        assert ["_attempt_async"] == calls
        assert ["observed"] == seen
