"""Every exception sage_resilience raises of its own.

Hierarchy::

    Exception
    ├── pybreaker.CircuitBreakerError
    │   └── CircuitOpenError        the policy refused to call (open circuit,
    │                               or every half-open probe slot taken)
    ├── BulkheadFullError           too many calls in flight (max_concurrency)
    ├── ChaosError                  a fault injected on purpose (chaos block)
    ├── ValueError
    │   └── ConfigError             invalid YAML, env value or argument
    └── KeyError
        └── UnknownPolicyError      policy("name") for a name not configured

Errors of the dependency itself are never wrapped: a failed call raises the
dependency's own exception, so ``except httpx.HTTPStatusError`` keeps
working. When the policy refuses a call the error raised is
``CircuitOpenError`` and, if a failure of this very call led to the refusal,
its ``__cause__`` is that failure.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from sage_resilience._pybreaker import pybreaker

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sage_resilience._names import State

__all__ = [
    "BulkheadFullError",
    "ChaosError",
    "CircuitOpenError",
    "ConfigError",
    "UnknownPolicyError",
]


class RefusalInfo(NamedTuple):
    """What a :class:`CircuitOpenError` reports, shared by many refusals."""

    policy: str | None
    failure_count: int
    last_failure: str | None
    last_cause: str | None
    state: State
    forced: bool
    message: str | None = None


class CircuitOpenError(pybreaker.CircuitBreakerError):
    """The policy refused to call the dependency.

    Raised instead of calling while the circuit is open, or while it is
    half-open and every probe slot is taken. The function was not called and
    no coroutine was created.

    Attributes:
        policy: The policy's name.
        retry_after: Seconds until a probe call will be allowed (>= 0).
        failure_count: Consecutive counted failures recorded so far.
        last_failure: ``"ExcType: message"`` of the last counted failure
            (secrets redacted), or None.
        last_cause: The diagnosis code of the last failure (see
            :func:`sage_resilience.diagnose`), or None.
        state: The circuit state that refused the call.

    .. versionadded:: 0.1.0
    """

    # The facts live in one shared, immutable tuple per circuit episode,
    # so refusing a call costs two attribute writes; the message is built
    # only when someone reads it.
    _info: RefusalInfo
    _retry_after: float

    def __init__(
        self,
        policy: str | None = None,
        *,
        retry_after: float | None = None,
        failure_count: int | None = None,
        last_failure: str | None = None,
        last_cause: str | None = None,
        state: State = "open",
        forced: bool = False,
    ) -> None:
        super().__init__()
        if retry_after is None and failure_count is None:
            # Built by hand with a message, as Sage's code raised its own
            # ``CircuitBreakerOpenError("...")``: no policy behind it.
            self._info = RefusalInfo(
                None, 0, last_failure, last_cause, state, forced, policy
            )
            self._retry_after = 0.0
            return
        self._info = RefusalInfo(
            policy, failure_count or 0, last_failure, last_cause, state, forced
        )
        self._retry_after = max(0.0, retry_after or 0.0)

    @classmethod
    def _from_info(
        cls, info: RefusalInfo, retry_after: float
    ) -> CircuitOpenError:
        error = cls.__new__(cls)
        error._info = info
        error._retry_after = retry_after
        return error

    @property
    def policy(self) -> str | None:
        """The policy's name; None for an error built from a message."""
        return self._info.policy

    @property
    def retry_after(self) -> float:
        """Seconds until a probe call will be allowed (>= 0)."""
        return self._retry_after

    @property
    def failure_count(self) -> int:
        """Consecutive counted failures recorded so far."""
        return self._info.failure_count

    @property
    def last_failure(self) -> str | None:
        """``"ExcType: message"`` of the last counted failure, or None."""
        return self._info.last_failure

    @property
    def last_cause(self) -> str | None:
        """The diagnosis code of the last failure, or None."""
        return self._info.last_cause

    @property
    def state(self) -> State:
        """The circuit state that refused the call."""
        return self._info.state

    @property
    def forced(self) -> bool:
        """Whether an operator forced the circuit open."""
        return self._info.forced

    def __str__(self) -> str:
        info = self._info
        if info.policy is None:
            return info.message or "circuit breaker is open"
        if self.forced:
            why = "was opened by an operator"
            when = "until it is closed by hand"
        elif self.state == "half-open":
            why = "is half-open and every probe slot is taken"
            when = f"retry in {self.retry_after:.2f}s"
        else:
            why = f"is open after {self.failure_count} counted failure(s)"
            when = f"next probe allowed in {self.retry_after:.2f}s"
        last = (
            f"; last failure: {self.last_failure}" if self.last_failure else ""
        )
        cause = f" (cause: {self.last_cause})" if self.last_cause else ""
        return (
            f"circuit breaker {self.policy!r} {why}{last}{cause}; {when}"
            " - the dependency was not called"
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Exceptions with keyword-only arguments do not pickle by default.
        if self._info.policy is None:
            return (CircuitOpenError, (self._info.message,))
        return (
            _rebuild_circuit_open,
            (
                self.policy,
                self.retry_after,
                self.failure_count,
                self.last_failure,
                self.last_cause,
                self.state,
                self.forced,
            ),
        )


def _rebuild_circuit_open(
    policy: str | None,
    retry_after: float,
    failure_count: int,
    last_failure: str | None,
    last_cause: str | None,
    state: State,
    forced: bool,
) -> CircuitOpenError:
    return CircuitOpenError(
        policy,
        retry_after=retry_after,
        failure_count=failure_count,
        last_failure=last_failure,
        last_cause=last_cause,
        state=state,
        forced=forced,
    )


class BulkheadFullError(Exception):
    """Too many calls were in flight for the policy (``max_concurrency``).

    Never counted as a dependency failure and never retried.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self, policy: str, max_concurrency: int, waited: float
    ) -> None:
        self.policy = policy
        self.max_concurrency = max_concurrency
        self.waited = waited
        super().__init__(
            f"bulkhead of {policy!r} is full: {max_concurrency} call(s) "
            f"in flight, waited {waited:.3f}s - the dependency was not called"
        )


class ChaosError(Exception):
    """A failure injected on purpose by the policy's ``chaos`` block.

    Counted like a real dependency failure, so a game day exercises the
    whole path (retries, breaker, events).

    .. versionadded:: 0.1.0
    """

    def __init__(self, policy: str) -> None:
        self.policy = policy
        super().__init__(f"chaos: failure injected into {policy!r}")


class ConfigError(ValueError):
    """The configuration is invalid; nothing of it was applied.

    The message names the file, the line where known and the dotted key::

        config/resilience.yaml:14: policies.siliconflow_api.retry.attempts:
        must be >= 1 (got 0)

    Attributes:
        path: The file (or ``"<env>"``, ``"<string>"``, ``"<mapping>"``),
            or None.
        line: The 1-based line, or None.
        key: The dotted key, or None.
        problem: What is wrong, without the location.
        problems: Every problem found, in file order, each a
            ``ConfigError`` of its own (path, line, key); this one, the
            first, is ``problems[0]``. The message is the first's.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        problem: str,
        *,
        path: str | None = None,
        line: int | None = None,
        key: str | None = None,
    ) -> None:
        self.path = path
        self.line = line
        self.key = key
        self.problem = problem
        self.problems: list[ConfigError] = [self]
        super().__init__(self._message())

    def _message(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path
            if self.line is not None:
                where += f":{self.line}"
            where += ": "
        key = f"{self.key}: " if self.key else ""
        return f"{where}{key}{self.problem}"

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_config_error,
            (self.problem, self.path, self.line, self.key, self.problems[1:]),
        )


def _rebuild_config_error(
    problem: str,
    path: str | None,
    line: int | None,
    key: str | None,
    others: list[ConfigError] | None = None,
) -> ConfigError:
    error = ConfigError(problem, path=path, line=line, key=key)
    error.problems.extend(others or ())
    return error


class UnknownPolicyError(KeyError):
    """``policy(name)`` was asked for a name that is not configured.

    .. versionadded:: 0.1.0
    """

    def __init__(self, name: str, known: Iterable[str]) -> None:
        self.name = name
        self.known: tuple[str, ...] = tuple(sorted(known))
        super().__init__(name)

    def __str__(self) -> str:
        known = ", ".join(self.known) or "(none)"
        return f"unknown policy {self.name!r}; known policies: {known}"
