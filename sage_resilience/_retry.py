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
from typing import TYPE_CHECKING, Any

import tenacity
from tenacity.wait import wait_base

from sage_resilience._classify import retry_after_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from sage_resilience._config import RetryConfig

__all__ = ["RetryPlan", "async_sleep", "sync_sleep"]


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
