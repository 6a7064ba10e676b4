"""The typed results match what is returned at run time.

``StatusEntry``, ``HealthReport``, ``WindowFigures``, ``SageStats``, the
``State`` literal and the ``Cause`` enum describe the dictionaries and
codes the library hands out; these tests hold the two together (the
static side is tests/typing/api.py).
"""

from __future__ import annotations

import json
import typing

import pydantic
import pytest
import sage_resilience
from sage_resilience import (
    Cause,
    CircuitOpenError,
    HealthReport,
    ResilienceConfig,
    State,
    StatusEntry,
    breaker_status,
    configure,
    diagnose,
    health,
    policy,
    status,
)
from sage_resilience._diagnosis.describe import (
    _FIXES,
    CAUSES,
    diagnosis_for,
)
from sage_resilience._names import CLOSED, HALF_OPEN, OPEN
from sage_resilience.compat import (
    CircuitBreaker,
    SageStats,
    breaker_manager,
    get_breaker_stats,
)
from sage_resilience.status import HealthStatus, WindowFigures
from tests.helpers import make_policy

CONFIG = ResilienceConfig.model_validate(
    {
        "version": 1,
        "policies": {
            "db": {"critical": True, "failure_threshold": 1},
            "api": {
                "max_concurrency": 2,
                "trip": {"window": 10, "failure_rate": 0.5},
            },
        },
    }
)


def _fail() -> None:
    raise ConnectionRefusedError(111, "Connection refused")


def _keys(shape: type) -> list[str]:
    return list(typing.get_type_hints(shape))


class TestStatusEntry:
    def test_the_keys_are_those_of_the_entry_in_order(self):
        """StatusEntry lists every key p.status() returns, in order."""
        configure(CONFIG)
        assert _keys(StatusEntry) == list(policy("db").status())
        assert set(StatusEntry.__required_keys__) == set(
            policy("api").status()
        )

    def test_the_window_figures(self):
        """WindowFigures is the window's shape; None without trip:."""
        configure(CONFIG)
        window = policy("api").status()["window"]
        assert window is not None
        assert _keys(WindowFigures) == list(window)
        assert policy("db").status()["window"] is None

    def test_entries_validate_against_the_types(self):
        """pydantic reads the TypedDicts (FastAPI response models)."""
        configure(CONFIG)
        with pytest.raises(ConnectionRefusedError):
            policy("db").call(_fail)
        with pytest.raises(CircuitOpenError):
            policy("db").call(_fail)
        found = breaker_status()
        assert found == pydantic.TypeAdapter(
            dict[str, StatusEntry]
        ).validate_python(found, strict=True)
        assert found["db"]["state"] == OPEN
        assert found["db"]["last_cause"] == Cause.CONNECTION_REFUSED

    def test_a_policy_outside_the_registry(self):
        """A policy built by hand has the same entry."""
        entry = make_policy("loose").status()
        assert _keys(StatusEntry) == list(entry)
        assert entry["in_flight"] is None


class TestHealthReport:
    def test_the_report_validates(self):
        """health() is a HealthReport; its status is a HealthStatus."""
        configure(CONFIG)
        report = health()
        assert _keys(HealthReport) == list(report)
        assert report == pydantic.TypeAdapter(HealthReport).validate_python(
            report, strict=True
        )
        assert report["status"] in typing.get_args(HealthStatus)

    def test_down_when_a_critical_policy_opens(self):
        """The literal values are the ones health() answers."""
        configure(CONFIG)
        assert health()["status"] == "ok"
        with pytest.raises(ConnectionRefusedError):
            policy("db").call(_fail)
        assert health()["status"] == "down"

    def test_a_wrong_status_is_rejected(self):
        """The literal is enforced where it is read at run time."""
        with pytest.raises(pydantic.ValidationError):
            pydantic.TypeAdapter(HealthReport).validate_python(
                {"status": "fine", "platform": "linux", "breakers": {}}
            )


class TestState:
    def test_the_literal_holds_the_state_names(self):
        """State is exactly the three names, shared with _names."""
        assert typing.get_args(State) == (CLOSED, OPEN, HALF_OPEN)
        assert status.State is State
        assert sage_resilience.State is State

    def test_every_state_a_policy_reports_is_one(self):
        """p.state and the entry's state stay within State."""
        configure(CONFIG)
        p = policy("db")
        seen = {p.state}
        p.open()
        seen.add(p.status()["state"])
        p.close()
        seen.add(p.state)
        assert seen <= set(typing.get_args(State))


class TestSageStats:
    def test_get_stats_has_the_typed_keys(self):
        """CircuitBreaker.get_stats() and get_all_stats() are SageStats."""
        breaker = CircuitBreaker("legacy", None)
        stats = breaker.get_stats()
        assert _keys(SageStats) == list(stats)
        adapter = pydantic.TypeAdapter(list[SageStats])
        every = breaker_manager.get_all_stats()
        assert every == adapter.validate_python(every, strict=True)

    def test_get_breaker_stats_is_a_status_entry(self):
        """get_breaker_stats() answers the status entry."""
        CircuitBreaker("legacy", None)
        assert _keys(StatusEntry) == list(get_breaker_stats("legacy"))


class TestCause:
    def test_the_codes_are_unchanged(self):
        """Cause holds exactly the codes of CAUSES, fixes for all but ok."""
        assert list(CAUSES) == list(Cause)
        assert {str(c) for c in Cause} - set(_FIXES) == {"ok"}
        assert all(type(c.value) is str for c in Cause)

    def test_a_cause_is_its_string(self):
        """Equality, hashing, formatting and JSON are the plain string's."""
        assert Cause.PG_REFUSED == "pg_refused"
        assert "pg_refused" == Cause.PG_REFUSED
        assert {"pg_refused": 1}[Cause.PG_REFUSED] == 1
        assert f"{Cause.HTTP_TIMEOUT}" == "http_timeout"
        assert str(Cause.HTTP_TIMEOUT) == "http_timeout"
        assert json.dumps([Cause.OK]) == '["ok"]'

    def test_a_diagnosis_cause_is_a_cause(self):
        """diagnose() and diagnosis_for() give a Cause; as_dict a str."""
        found = diagnose(ConnectionRefusedError(111, "Connection refused"))
        assert found.cause is Cause.CONNECTION_REFUSED
        assert found.cause == "connection_refused"
        assert type(found.as_dict()["cause"]) is str
        assert json.loads(json.dumps(found.as_dict()))["cause"] == (
            "connection_refused"
        )
        assert diagnosis_for("ok", "fine").cause is Cause.OK
