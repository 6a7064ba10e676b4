"""Retry configuration -> tenacity ``Retrying`` / ``AsyncRetrying``.

tenacity costs far more per call than the breaker, so a policy enters it
only after a first counted failure: these objects are built on the failure
path, one per call (a tenacity object is not safe to share between
concurrent calls), never on the success path.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import tenacity
from tenacity.wait import wait_base

from sage_resilience import _hooks
from sage_resilience._breaker import describe_failure
from sage_resilience._classify import retry_after_of
from sage_resilience._events import logger
from sage_resilience._names import RETRY_EXHAUSTED

if TYPE_CHECKING:
    from collections.abc import Callable

    from sage_resilience._breaker import Gate
    from sage_resilience._config import RetryConfig

__all__ = [
    "RetryHooks",
    "RetryPlan",
    "async_sleep",
    "retry_callbacks",
    "sync_sleep",
]


class _Sleeping:
    """Whether retries really sleep (off in ``sage_resilience.testing``)."""

    enabled = True


SLEEPING = _Sleeping()


async def async_sleep(seconds: float) -> None:
    """``asyncio.sleep`` unless the testing mode removed sleeps."""
    if SLEEPING.enabled:
        await asyncio.sleep(seconds)


def sync_sleep(seconds: float) -> None:
    """``time.sleep`` unless the testing mode removed sleeps."""
    if SLEEPING.enabled:
        time.sleep(seconds)


class _WaitRetryAfterOrBackoff(wait_base):
    """Exponential backoff with jitter; a Retry-After answer wins."""

    def __init__(self, config: RetryConfig) -> None:
        backoff = config.backoff
        self._cap = backoff.max
        self._respect = config.respect_retry_after
        self._backoff: wait_base
        if backoff.strategy == "exponential":
            self._backoff = tenacity.wait_exponential_jitter(
                multiplier=backoff.initial,
                max=backoff.max,
                exp_base=backoff.multiplier,
                jitter=backoff.jitter,
            )
        else:
            self._backoff = _WaitSeries(
                backoff.strategy, backoff.initial, backoff.max, backoff.jitter
            )

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if self._respect and exc is not None:
            asked = retry_after_of(exc)
            if asked is not None:
                return min(asked, self._cap)
        return float(self._backoff(retry_state))


class _WaitSeries(wait_base):
    """``initial`` times 1 (fixed), n (linear) or fib(n) (fibonacci).

    Plus up to ``jitter`` seconds at random, capped at ``max``, as the
    exponential strategy (tenacity's ``wait_exponential_jitter``) does.
    """

    def __init__(
        self, strategy: str, initial: float, cap: float, jitter: float
    ) -> None:
        self._strategy = strategy
        self._initial = initial
        self._cap = cap
        self._jitter = jitter

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        n = retry_state.attempt_number
        if self._strategy == "linear":
            factor = float(n)
        elif self._strategy == "fibonacci":
            a, b = 1, 1
            for _ in range(min(n, 90) - 1):
                a, b = b, a + b
            factor = float(a)
        else:
            factor = 1.0
        spread = random.uniform(0, self._jitter)  # noqa: S311 - not crypto
        return max(0.0, min(self._cap, self._initial * factor + spread))


class _StopBeforeDeadline(tenacity.stop.stop_base):
    """Stop when the next sleep would end past the deadline.

    Time counts from the first attempt's start; sleeps skipped by the
    testing mode count as if they had happened, so tests see the same
    number of attempts as production.
    """

    def __init__(self, deadline: float, started: float) -> None:
        self._deadline = deadline
        self._started = started

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        elapsed = max(time.monotonic() - self._started, retry_state.idle_for)
        return elapsed + retry_state.upcoming_sleep > self._deadline


class RetryPlan:
    """Everything needed to build a tenacity retrier for one policy."""

    __slots__ = ("attempts", "deadline", "wait")

    def __init__(self, config: RetryConfig) -> None:
        self.attempts = config.attempts
        self.deadline = config.deadline
        self.wait = _WaitRetryAfterOrBackoff(config)

    def _kwargs(
        self,
        *,
        started: float,
        should_retry: Callable[[BaseException], bool],
        before_sleep: Callable[[tenacity.RetryCallState], None],
        exhausted: Callable[[tenacity.RetryCallState], Any],
    ) -> dict[str, Any]:
        stop: tenacity.stop.stop_base = tenacity.stop_after_attempt(
            self.attempts
        )
        if self.deadline is not None:
            stop = stop | _StopBeforeDeadline(self.deadline, started)
        return {
            "stop": stop,
            "wait": self.wait,
            "retry": tenacity.retry_if_exception(should_retry),
            "before_sleep": before_sleep,
            "retry_error_callback": exhausted,
            "reraise": True,
        }

    def async_retrying(self, **kwargs: Any) -> tenacity.AsyncRetrying:
        """A fresh ``AsyncRetrying`` for one call."""
        return tenacity.AsyncRetrying(
            sleep=async_sleep, **self._kwargs(**kwargs)
        )

    def retrying(self, **kwargs: Any) -> tenacity.Retrying:
        """A fresh ``Retrying`` for one call."""
        return tenacity.Retrying(sleep=sync_sleep, **self._kwargs(**kwargs))


@dataclass(frozen=True, slots=True)
class RetryHooks:
    """Retry filters and callbacks declared in code (Sage's ``retry``).

    Consulted on the failure path only: ``should_retry`` narrows which
    counted failures are retried, ``before_retry(attempt, error)`` runs
    before each wait, ``on_exhausted(error)`` once attempts ran out.
    """

    should_retry: Callable[[BaseException], bool] | None = None
    before_retry: Callable[[int, BaseException], None] | None = None
    on_exhausted: Callable[[BaseException], None] | None = None


def retry_callbacks(
    name: str,
    gate: Gate,
    hooks: RetryHooks | None,
    *,
    attempts: int,
    should_retry: Callable[[BaseException], bool],
    started: float,
) -> dict[str, Any]:
    """The callbacks of one call's retries, for :class:`RetryPlan`.

    The keyword arguments of :meth:`RetryPlan.async_retrying` and
    :meth:`RetryPlan.retrying` for a call of policy *name*:
    *should_retry* judges each failure; each scheduled retry is counted
    on *gate*, logged (``retry_scheduled``) and shown to the
    code-declared *hooks*; running out is logged (``retry_exhausted``)
    and re-raises the last error.
    """

    def before_sleep(rs: tenacity.RetryCallState) -> None:
        gate.retries += 1
        outcome = rs.outcome
        exc = outcome.exception() if outcome is not None else None
        if hooks is not None and hooks.before_retry is not None:
            _run_callback(name, hooks.before_retry, rs.attempt_number, exc)
        # Logged (retry_scheduled) by the event log hook, first of all.
        _hooks.retry_scheduled(
            name, rs.attempt_number, rs.upcoming_sleep, exc, attempts
        )

    def exhausted(rs: tenacity.RetryCallState) -> Any:
        outcome = rs.outcome
        assert outcome is not None
        logger.warning(
            RETRY_EXHAUSTED,
            breaker=name,
            attempts=rs.attempt_number,
            error=_describe(outcome.exception()),
        )
        if hooks is not None and hooks.on_exhausted is not None:
            _run_callback(name, hooks.on_exhausted, outcome.exception())
        return outcome.result()  # re-raises the last error

    return {
        "started": started,
        "should_retry": should_retry,
        "before_sleep": before_sleep,
        "exhausted": exhausted,
    }


def _run_callback(
    name: str, callback: Callable[..., object], *args: object
) -> None:
    """Run a user callback; its failure is logged, never raised."""
    try:
        callback(*args)
    except Exception as exc:
        logger.warning(
            "callback_failed",
            breaker=name,
            callback=getattr(callback, "__qualname__", repr(callback)),
            error=describe_failure(exc),
        )


def _describe(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    return describe_failure(exc)
