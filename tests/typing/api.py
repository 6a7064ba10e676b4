"""Type-checked use of the public API (run through mypy, never executed)."""

from __future__ import annotations

import httpx
import httpx2
import openai
import pybreaker
from sage_resilience import (
    CircuitOpenError,
    ConfigError,
    Diagnosis,
    Policy,
    PolicyConfig,
    ResilienceConfig,
    UnknownPolicyError,
    breaker_status,
    configure,
    diagnose,
    health,
    load_config,
    policy,
)
from sage_resilience.compat import (
    CircuitBreakerOpenError,
    CircuitState,
    circuit_breaker,
    get_breaker_stats,
)
from sage_resilience.http import (
    ResilientTransport,
    resilient_client,
    resilient_sync_client,
)
from sage_resilience.openai import openai_client, sync_openai_client

config: ResilienceConfig = load_config(platform="windows")
resolved: PolicyConfig = config.policies["database_connection"]
timeout: float | None = resolved.timeout
configure({"version": 1, "policies": {"api": {"timeout": 5}}})
configure(config)
configure("config/resilience.yaml", platform="darwin")
standalone: Policy = Policy("payments", PolicyConfig(timeout=5))

api: Policy = policy("siliconflow_api")
breaker: pybreaker.CircuitBreaker = api.breaker
state: str = api.state


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
    found: Diagnosis = diagnose(exc, policy=api)
    code: str = found.cause
    as_pybreaker: pybreaker.CircuitBreakerError = exc
except ConfigError as exc:
    problems: list[ConfigError] = exc.problems
except UnknownPolicyError:
    pass

status: dict[str, dict[str, object]] = breaker_status()
overall: dict[str, object] = health()


@circuit_breaker(
    "database_connection", failure_threshold=3, recovery_timeout=30
)
async def old_style() -> None: ...


stats: dict[str, object] = get_breaker_stats("database_connection")
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
