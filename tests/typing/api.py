"""Type-checked use of the public API (run through mypy, never executed).

Checked by mypy (strict) and pyright (strict), both in ``.ci/run``. A line
that must be a type error carries both checkers' ignore comments: mypy's
``warn_unused_ignores`` and pyright's ``reportUnnecessaryTypeIgnoreComment``
fail the run should that line ever type-check.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal, assert_type

import httpx
import httpx2
import openai
import pybreaker
from sage_resilience import (
    Cause,
    CircuitOpenError,
    ConfigError,
    Diagnosis,
    HealthReport,
    Policy,
    PolicyConfig,
    ResilienceConfig,
    State,
    StatusEntry,
    UnknownPolicyError,
    breaker_status,
    configure,
    diagnose,
    health,
    load_config,
    policy,
)
from sage_resilience.compat import (
    CircuitBreaker,
    CircuitBreakerOpenError,
    CircuitState,
    breaker_manager,
    circuit_breaker,
    get_breaker_stats,
)
from sage_resilience.http import (
    ResilientTransport,
    resilient_client,
    resilient_sync_client,
)
from sage_resilience.openai import openai_client, sync_openai_client
from sage_resilience.status import HealthStatus, WindowFigures

config: ResilienceConfig = load_config(platform="windows")
resolved: PolicyConfig = config.policies["database_connection"]
timeout: float | None = resolved.timeout
configure({"version": 1, "policies": {"api": {"timeout": 5}}})
configure(config)
configure("config/resilience.yaml", platform="darwin")
standalone: Policy = Policy("payments", PolicyConfig(timeout=5))

api: Policy = policy("siliconflow_api")
breaker: pybreaker.CircuitBreaker = api.breaker
state: State = api.state
assert_type(api.state, Literal["closed", "open", "half-open"])
as_text: str = api.state


@api
async def complete(prompt: str) -> str:
    return prompt


@policy("database_connection")
def connect(dsn: str) -> int:
    return len(dsn)


async def use() -> None:
    text: str = await complete("hi")
    size: int = connect("postgresql://")
    again: str = await api.acall(complete, "hi")
    sized: int = api.call(connect, "x")
    print(text, size, again, sized)


try:
    connect("x")
except CircuitOpenError as exc:
    wait: float = exc.retry_after
    cause: str | None = exc.last_cause
    refused_in: State = exc.state
    found: Diagnosis = diagnose(exc, policy=api)
    code: str = found.cause
    assert_type(found.cause, Cause)
    plain_equal: bool = found.cause == "http_timeout"
    member_equal: bool = found.cause == Cause.PG_REFUSED
    as_pybreaker: pybreaker.CircuitBreakerError = exc
except ConfigError as exc:
    problems: list[ConfigError] = exc.problems
except UnknownPolicyError:
    pass

status: dict[str, StatusEntry] = breaker_status()
overall: HealthReport = health()
as_mapping: Mapping[str, object] = health()
assert_type(overall["status"], Literal["ok", "degraded", "down"])
assert_type(overall["breakers"], dict[str, StatusEntry])
entry: StatusEntry = api.status()
assert_type(entry["state"], State)
assert_type(entry["opened_at"], str | None)
assert_type(entry["failure_count"], int)
assert_type(entry["in_flight"], int | None)
window: WindowFigures | None = entry["window"]
if window is not None:
    assert_type(window["failure_rate"], float)

# Type errors, each expected by both checkers.
misspelt = health()["statuss"]  # type: ignore[typeddict-item]  # pyright: ignore[reportGeneralTypeIssues, reportUnknownVariableType]
no_such_key = entry["sate"]  # type: ignore[typeddict-item]  # pyright: ignore[reportGeneralTypeIssues, reportUnknownVariableType]
wrong_state: State = "half_open"  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
entry_state_typo = entry["state"] == "half_open"  # type: ignore[comparison-overlap]  # pyright: ignore[reportUnnecessaryComparison]
wrong_verdict: HealthStatus = "fine"  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]
verdict_typo = overall["status"] == "degradd"  # type: ignore[comparison-overlap]  # pyright: ignore[reportUnnecessaryComparison]
not_a_cause: Cause = "pg_refused"  # type: ignore[assignment]  # pyright: ignore[reportAssignmentType]


@circuit_breaker(
    "database_connection", failure_threshold=3, recovery_timeout=30
)
async def old_style() -> None: ...


stats: StatusEntry = get_breaker_stats("database_connection")
sage_stats = CircuitBreaker("database_connection").get_stats()
assert_type(sage_stats["failure_rate_per_minute"], float)
assert_type(sage_stats["last_failure_time"], float | None)
every: list[dict[str, object]] = [
    dict(s) for s in breaker_manager.get_all_stats()
]
open_state: CircuitState = CircuitState.OPEN
old_error: type[CircuitOpenError] = CircuitBreakerOpenError

# HTTP clients of either library, and the OpenAI SDK's.

default_client: httpx.AsyncClient = resilient_client("siliconflow_api")
new_client: httpx2.AsyncClient = resilient_client(
    "siliconflow_api", library="httpx2"
)
sync_new: httpx2.Client = resilient_sync_client("vectorizer", library="httpx2")
mounted = httpx2.AsyncClient(transport=ResilientTransport("vectorizer"))
legacy = httpx.Client(transport=ResilientTransport(api))
llm: openai.AsyncOpenAI = openai_client("siliconflow_api")
sync_llm: openai.OpenAI = sync_openai_client(api, max_retries=1)
