"""Drop-in replacement for Sage's old hand-rolled breaker module.

Existing call sites keep working unchanged::

    from sage_resilience.compat import circuit_breaker, CircuitBreakerOpenError

    @circuit_breaker("database_connection", failure_threshold=3,
                     recovery_timeout=30)
    async def get_connection(): ...

Arguments given override the YAML for that name (everything else, such as
retries and timeouts, comes from the configuration); only instances of
``expected_exception`` count as failures. Underneath is an ordinary policy,
visible in ``breaker_status()`` and reported like every other.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, TypeVar, cast

from sage_resilience._registry import override
from sage_resilience.exceptions import CircuitOpenError

if TYPE_CHECKING:
    from collections.abc import Callable

    from sage_resilience._policy import Policy

__all__ = [
    "CircuitBreakerOpenError",
    "CircuitState",
    "circuit_breaker",
    "get_breaker_stats",
]

F = TypeVar("F", bound="Callable[..., Any]")

#: The old name of :class:`sage_resilience.CircuitOpenError`.
CircuitBreakerOpenError = CircuitOpenError


class CircuitState(enum.Enum):
    """The old module's circuit states (values are the contract's)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


def circuit_breaker(
    name: str,
    failure_threshold: int | None = None,
    recovery_timeout: float | None = None,
    expected_exception: type[BaseException]
    | tuple[type[BaseException], ...] = Exception,
) -> Callable[[F], F]:
    """Decorate a sync or async function with the policy *name*.

    Args:
        name: The policy; taken from the configuration if it has one,
            otherwise built from the configuration's defaults.
        failure_threshold: Overrides the YAML's ``failure_threshold``.
        recovery_timeout: Overrides the YAML's ``recovery_timeout``.
        expected_exception: Only these exceptions count as failures.
    """
    policy_obj = _policy_for(
        name, failure_threshold, recovery_timeout, expected_exception
    )

    def decorate(fn: F) -> F:
        return cast("F", policy_obj(fn))

    return decorate


def _policy_for(
    name: str,
    failure_threshold: int | None,
    recovery_timeout: float | None,
    expected: type[BaseException] | tuple[type[BaseException], ...],
) -> Policy:
    update: dict[str, Any] = {}
    if failure_threshold is not None:
        update["failure_threshold"] = failure_threshold
    if recovery_timeout is not None:
        update["recovery_timeout"] = recovery_timeout
    record = expected if isinstance(expected, tuple) else (expected,)
    return override(name, update, None if record == (Exception,) else record)


def get_breaker_stats(name: str) -> dict[str, Any]:
    """The status entry of the breaker *name* (as ``breaker_status()``)."""
    from sage_resilience._registry import policy  # noqa: PLC0415

    return policy(name).status()
