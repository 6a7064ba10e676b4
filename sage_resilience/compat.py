"""Drop-in replacement for Sage's resilience package.

Sage's ``sage_core/resilience/circuit_breaker.py`` and ``retry_strategy.py``
can each become the single line::

    from sage_resilience.compat import *

and its call sites keep working unchanged::

    @retry(max_attempts=3, initial_delay=0.5)
    @circuit_breaker("database_fetch", failure_threshold=5,
                     recovery_timeout=60)
    async def fetch(self, query: str, *args: object) -> list[Record]: ...

Every breaker is an ordinary registered policy, visible in
``breaker_status()``, the metrics, the ASGI app and the CLI. The code's
arguments sit between the YAML's ``defaults:`` and ``policies.<name>``:
what operators write wins. ``retry`` stacked directly on a
``circuit_breaker`` function becomes that policy's retry plan (one loop,
every attempt through the breaker, a refusal stops it), never a second
loop around it. Declaring costs nothing at import time: the configuration
is read once, at the first call.

What changes on purpose, against Sage's own module: the circuit opens on
consecutive counted failures (a success resets the count), half-open lets
one probe through at a time, caller faults (HTTP 4xx, SQL data,
constraint and syntax errors) and programming errors are not counted,
retries never retry a refusal, and nothing is printed.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import enum
import functools
import inspect
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import tenacity

# typing_extensions: pydantic (FastAPI response models) reads it on 3.11.
from typing_extensions import TypedDict

from sage_resilience import _registry
from sage_resilience._classify import COUNTED, Classifier
from sage_resilience._config import Declaration, PolicyConfig
from sage_resilience._events import logger
from sage_resilience._names import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    RETRY_EXHAUSTED,
    RETRY_SCHEDULED,
)
from sage_resilience._policy import RetryHooks
from sage_resilience._pybreaker import pybreaker
from sage_resilience._retry import async_sleep, sync_sleep
from sage_resilience._stats import describe_failure
from sage_resilience.exceptions import CircuitOpenError

if TYPE_CHECKING:
    from collections.abc import Callable

    from sage_resilience._policy import Policy
    from sage_resilience._stats import StatusEntry

__all__ = [
    "DATABASE_RETRY_CONFIG",
    "DEFAULT_RETRY_CONFIG",
    "NETWORK_RETRY_CONFIG",
    "CircuitBreaker",
    "CircuitBreakerConfig",
    "CircuitBreakerManager",
    "CircuitBreakerOpenError",
    "CircuitState",
    "RetryConfig",
    "RetryManager",
    "RetryStrategy",
    "breaker_manager",
    "circuit_breaker",
    "get_breaker_stats",
    "retry",
]

F = TypeVar("F", bound="Callable[..., Any]")

#: The old name of :class:`sage_resilience.CircuitOpenError`; it can also
#: be built from a message alone (then ``policy`` is None).
CircuitBreakerOpenError = CircuitOpenError


class CircuitState(enum.Enum):
    """Sage's circuit states (note ``"half_open"``, with an underscore)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


_STATES = {
    CLOSED: CircuitState.CLOSED,
    OPEN: CircuitState.OPEN,
    HALF_OPEN: CircuitState.HALF_OPEN,
}


class SageStats(TypedDict):
    """Sage's statistics of one breaker (``get_stats()``).

    Not in ``__all__`` (a star import gives exactly Sage's names); import
    it by name to annotate.

    Attributes:
        state: A :class:`CircuitState` value (``"half_open"``).
        failure_count: Counted failures within ``monitoring_window``.
        failure_rate_per_minute: The same, per minute of the window.
        last_failure_time: Epoch seconds, or None.
        last_attempt_time: Epoch seconds, or None.

    .. versionadded:: 0.1.0
    """

    name: str
    state: str
    failure_count: int
    success_count: int
    failure_rate_per_minute: float
    last_failure_time: float | None
    last_attempt_time: float | None


class _DefaultInt(int):
    """A default the caller did not pass (only passed values declare)."""

    __slots__ = ()


class _DefaultFloat(float):
    """A default the caller did not pass (only passed values declare)."""

    __slots__ = ()


def _given(value: object) -> bool:
    return value is not None and not isinstance(
        value, _DefaultInt | _DefaultFloat
    )


def _caller(depth: int) -> tuple[str, int | None]:
    """``(file, line)`` of the code *depth* frames above the caller."""
    frame = inspect.currentframe()
    for _ in range(depth + 1):
        if frame is None:
            break
        frame = frame.f_back
    if frame is None:  # pragma: no cover - interpreters without frames
        return "<unknown>", None
    return frame.f_code.co_filename, frame.f_lineno


# --------------------------------------------------------------------------
# Circuit breakers
# --------------------------------------------------------------------------


@dataclass
class CircuitBreakerConfig:
    """Sage's breaker settings; only the fields given declare anything.

    Fields left at their defaults leave the policy to the YAML and the
    built-ins (``success_threshold`` there is 1, not 2).
    """

    failure_threshold: int = _DefaultInt(5)
    recovery_timeout: float = _DefaultFloat(60.0)
    expected_exception: (
        type[BaseException] | tuple[type[BaseException], ...]
    ) = Exception
    success_threshold: int = _DefaultInt(2)
    monitoring_window: float = _DefaultFloat(60.0)
    on_open: Callable[[], None] | None = None
    on_close: Callable[[], None] | None = None
    on_half_open: Callable[[], None] | None = None


def _breaker_settings(config: CircuitBreakerConfig) -> dict[str, Any]:
    """The policy keys the fields given declare."""
    return {
        key: getattr(config, key)
        for key in (
            "failure_threshold",
            "recovery_timeout",
            "success_threshold",
        )
        if _given(getattr(config, key))
    }


def _breaker_record(
    config: CircuitBreakerConfig,
) -> tuple[type[BaseException], ...] | None:
    expected = config.expected_exception
    record = expected if isinstance(expected, tuple) else (expected,)
    return None if record == (Exception,) else record


_lock = threading.Lock()
#: The first breaker object declared for each name (for the manager).
_known: dict[str, CircuitBreaker] = {}
#: Breakers given to ``breaker_manager.register()``.
_registered: dict[str, CircuitBreaker] = {}


class CircuitBreaker:
    """Sage's breaker object, backed by the registered policy ``name``.

    Attributes:
        name: The policy name.
        config: The :class:`CircuitBreakerConfig` it was declared with.
    """

    def __init__(
        self,
        name: str,
        config: CircuitBreakerConfig | None = None,
        *,
        _where: tuple[str, int | None] | None = None,
        _declare: bool = True,
    ) -> None:
        self.name = name
        self.config: CircuitBreakerConfig = config or CircuitBreakerConfig()
        path, line = _where or _caller(1)
        self._part = _registry.Part(
            "breaker",
            Declaration(_breaker_settings(self.config), path, line),
            record=_breaker_record(self.config),
        )
        #: When a call last went through this object (epoch seconds).
        self.last_attempt_time: float | None = None
        self._listening: Policy | None = None
        if _declare:
            _registry.declare(name, self._part)
            _known.setdefault(name, self)

    @property
    def policy(self) -> Policy:
        """The policy behind it (configuring the registry on first use)."""
        found = _registry.lookup(self.name)
        if found is None:
            if not _registry.declared(self.name):
                _registry.declare(self.name, self._part)  # after a reset
            found = _registry.resolve(self.name)
        if found is not self._listening:
            self._listen(found)
        return found

    def _listen(self, found: Policy) -> None:
        config = self.config
        self._listening = found
        if config.on_open or config.on_close or config.on_half_open:
            found.breaker.add_listener(_CallbackListener(self.name, config))

    @property
    def state(self) -> CircuitState:
        """The current state, as Sage spelt it."""
        return _STATES[self.policy.state]

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``func(*args, **kwargs)`` through the breaker."""
        self.last_attempt_time = time.time()
        return self.policy.call(func, *args, **kwargs)

    async def async_call(
        self, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """Await ``func(*args, **kwargs)`` through the breaker."""
        self.last_attempt_time = time.time()
        return await self.policy.acall(func, *args, **kwargs)

    def get_stats(self) -> SageStats:
        """Sage's statistics: ``name``, ``state``, ``failure_count`` ...

        ``failure_count`` counts counted failures within
        ``monitoring_window`` seconds; ``failure_rate_per_minute`` is the
        same over the window's length; times are epoch seconds or None.
        """
        return _stats(self.policy, float(self.config.monitoring_window), self)

    def reset(self) -> None:
        """Close the circuit and clear its counters."""
        self.policy.reset()
        self.last_attempt_time = None

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} state={self.state.value!r}>"


def _stats(
    found: Policy, window: float, breaker: CircuitBreaker | None
) -> SageStats:
    now = time.time()
    failures = [t for t in found.failure_times() if t > now - window]
    status = found.status()
    minutes = window / 60.0
    return {
        "name": found.name,
        "state": _STATES[status["state"]].value,
        "failure_count": len(failures),
        "success_count": status["successes"],
        "failure_rate_per_minute": round(len(failures) / minutes, 2)
        if minutes > 0
        else 0.0,
        "last_failure_time": failures[-1] if failures else None,
        "last_attempt_time": breaker.last_attempt_time if breaker else None,
    }


class _CallbackListener(pybreaker.CircuitBreakerListener):
    """Runs Sage's ``on_open`` / ``on_close`` / ``on_half_open``.

    A callback that raises is logged (``callback_failed``), never raised
    into the breaker's transition.
    """

    def __init__(self, name: str, config: CircuitBreakerConfig) -> None:
        self._name = name
        self._callbacks = {
            OPEN: config.on_open,
            CLOSED: config.on_close,
            HALF_OPEN: config.on_half_open,
        }

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,  # noqa: ARG002 - pybreaker's signature
        old_state: pybreaker.CircuitBreakerState | None,  # noqa: ARG002
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        callback = self._callbacks.get(new_state.name)
        if callback is None:
            return
        try:
            callback()
        except Exception as exc:
            logger.warning(
                "callback_failed",
                breaker=self._name,
                callback=getattr(callback, "__qualname__", repr(callback)),
                error=describe_failure(exc),
            )


def circuit_breaker(
    name: str,
    failure_threshold: int = _DefaultInt(5),
    recovery_timeout: float = _DefaultFloat(60.0),
    expected_exception: type[BaseException]
    | tuple[type[BaseException], ...] = Exception,
    **kwargs: Any,
) -> Callable[[F], F]:
    """Decorate a sync or async function with the policy *name*.

    Args:
        name: The policy.
        failure_threshold: Declares ``failure_threshold`` (the YAML's
            ``policies.<name>`` still wins).
        recovery_timeout: Declares ``recovery_timeout``.
        expected_exception: Only these exceptions count as failures.
        **kwargs: ``success_threshold``, ``monitoring_window``,
            ``on_open``, ``on_close``, ``on_half_open``.

    Returns:
        A decorator; the wrapper has ``.breaker`` (a
        :class:`CircuitBreaker`).

    Raises:
        ConfigError: Another place declared *name* with other arguments.
    """
    config = CircuitBreakerConfig(
        failure_threshold=failure_threshold,
        recovery_timeout=recovery_timeout,
        expected_exception=expected_exception,
        **kwargs,
    )
    breaker = CircuitBreaker(name, config, _where=_caller(1))

    def decorate(fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kw: Any) -> Any:
                breaker.last_attempt_time = time.time()
                return await breaker.policy.acall(fn, *args, **kw)

            wrapper: Any = async_wrapper
        else:

            @functools.wraps(fn)
            def sync_wrapper(*args: Any, **kw: Any) -> Any:
                breaker.last_attempt_time = time.time()
                return breaker.policy.call(fn, *args, **kw)

            wrapper = sync_wrapper
        wrapper.breaker = breaker
        return cast("F", wrapper)

    return decorate


class CircuitBreakerManager:
    """Every policy of the registry, as Sage's manager listed its breakers."""

    def register(self, breaker: CircuitBreaker) -> None:
        """Keep *breaker* (its policy is registered already)."""
        with _lock:
            _registered[breaker.name] = breaker

    def get(self, name: str) -> CircuitBreaker | None:
        """The breaker *name*, or None when no policy has that name."""
        with _lock:
            known = _registered.get(name)
        if known is None:
            known = _known.get(name)
        if known is not None:
            return known
        if name not in _registry.policies():
            return None
        # A policy from the YAML alone: a view, declaring nothing.
        return CircuitBreaker(
            name, _where=("<registry>", None), _declare=False
        )

    def get_all_stats(self) -> list[SageStats]:
        """Sage's statistics of every policy, one entry each."""
        with _lock:
            known = {**_known, **_registered}
        out: list[SageStats] = []
        for name, found in sorted(_registry.policies().items()):
            breaker = known.get(name)
            window = (
                float(breaker.config.monitoring_window) if breaker else 60.0
            )
            out.append(_stats(found, window, breaker))
        return out

    def reset_all(self) -> None:
        """Reset every policy."""
        for found in _registry.policies().values():
            found.reset()


#: The process-wide manager.
breaker_manager: CircuitBreakerManager = CircuitBreakerManager()


def forget() -> None:
    """Forget the breaker objects (``sage_resilience.testing.reset``)."""
    with _lock:
        _known.clear()
        _registered.clear()


def get_breaker_stats(name: str) -> StatusEntry:
    """The status entry of the breaker *name* (as ``breaker_status()``)."""
    return _registry.resolve(name).status()


# --------------------------------------------------------------------------
# Retries
# --------------------------------------------------------------------------


class RetryStrategy(enum.Enum):
    """How waits grow between attempts."""

    FIXED = "fixed"
    LINEAR = "linear"
    EXPONENTIAL = "exponential"
    FIBONACCI = "fibonacci"


@dataclass
class RetryConfig:
    """Sage's retry settings.

    ``max_attempts`` counts every attempt, the first included. With
    ``jitter`` each wait is shortened by up to half, at random.
    """

    max_attempts: int = 3
    initial_delay: float = 1.0
    max_delay: float = 60.0
    exponential_base: float = 2.0
    jitter: bool = True
    strategy: RetryStrategy = RetryStrategy.EXPONENTIAL
    retryable_exceptions: list[type[BaseException]] | None = None
    non_retryable_exceptions: list[type[BaseException]] | None = None
    retry_condition: Callable[[BaseException], bool] | None = None
    before_retry: Callable[[int, BaseException], None] | None = None
    on_exhausted: Callable[[BaseException], None] | None = None

    def __post_init__(self) -> None:
        if self.retryable_exceptions is None:
            self.retryable_exceptions = [Exception]
        if self.non_retryable_exceptions is None:
            self.non_retryable_exceptions = []

    def should_retry(self, exc: BaseException) -> bool:
        """Whether *exc* may be retried (before the caller-fault rule)."""
        if any(
            isinstance(exc, t) for t in self.non_retryable_exceptions or ()
        ):
            return False
        if self.retry_condition is not None and not self.retry_condition(exc):
            return False
        return any(isinstance(exc, t) for t in self.retryable_exceptions or ())

    def as_policy_settings(self) -> dict[str, Any]:
        """The policy's ``retry:`` section this configuration means."""
        strategy = self.strategy.value
        backoff: dict[str, Any] = {
            "strategy": strategy,
            "initial": self.initial_delay,
            "max": self.max_delay,
            # Sage's jitter shortens a wait by up to half; the policy's
            # adds up to this many seconds: half the first wait.
            "jitter": self.initial_delay / 2 if self.jitter else 0.0,
        }
        if strategy == "exponential":
            backoff["multiplier"] = self.exponential_base
        return {"retry": {"attempts": self.max_attempts, "backoff": backoff}}

    def as_retry_hooks(self) -> RetryHooks:
        """The filters and callbacks the policy consults on failures."""
        narrowed = (
            self.retryable_exceptions != [Exception]
            or bool(self.non_retryable_exceptions)
            or self.retry_condition is not None
        )
        return RetryHooks(
            should_retry=self.should_retry if narrowed else None,
            before_retry=self.before_retry,
            on_exhausted=self.on_exhausted,
        )


#: What the library counts as the dependency's failure, with no policy.
_CLASSIFY = Classifier(PolicyConfig.model_validate({}), name="retry")


class _Wait(tenacity.wait.wait_base):
    """Sage's delays: the strategy's series, capped, jitter shortening."""

    def __init__(self, config: RetryConfig) -> None:
        self._config = config

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        return RetryManager(self._config).get_delay(retry_state.attempt_number)


class RetryManager:
    """Runs a function with Sage's retry semantics (through tenacity).

    Caller faults (HTTP 4xx, SQL data/constraint/syntax errors),
    programming errors and refusals are never retried, whatever
    ``retryable_exceptions`` says.
    """

    def __init__(self, config: RetryConfig) -> None:
        self.config = config

    def should_retry(self, exception: BaseException) -> bool:
        """Whether *exception* is retried."""
        if _CLASSIFY(exception) != COUNTED:
            return False  # a refusal, a caller fault, a programming error
        return self.config.should_retry(exception)

    def get_delay(self, attempt: int) -> float:
        """The wait after failed attempt *attempt* (1-based), seconds."""
        config = self.config
        strategy = config.strategy
        if strategy is RetryStrategy.FIXED:
            delay = config.initial_delay
        elif strategy is RetryStrategy.LINEAR:
            delay = config.initial_delay * attempt
        elif strategy is RetryStrategy.FIBONACCI:
            a, b = 0, 1
            for _ in range(min(attempt, 90)):
                a, b = b, a + b
            delay = config.initial_delay * a
        else:
            delay = config.initial_delay * config.exponential_base ** (
                attempt - 1
            )
        delay = min(delay, config.max_delay)
        if config.jitter:
            import random  # noqa: PLC0415

            delay *= 0.5 + random.random() * 0.5  # noqa: S311 - not crypto
        return delay

    def _kwargs(self, name: str) -> dict[str, Any]:
        config = self.config

        def before_sleep(rs: tenacity.RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            logger.info(
                RETRY_SCHEDULED,
                breaker=None,
                function=name,
                attempt=rs.attempt_number,
                max_attempts=config.max_attempts,
                wait=round(rs.upcoming_sleep, 3),
                error=describe_failure(exc) if exc else None,
            )
            if config.before_retry is not None and exc is not None:
                config.before_retry(rs.attempt_number, exc)

        def exhausted(rs: tenacity.RetryCallState) -> Any:
            assert rs.outcome is not None
            exc = rs.outcome.exception()
            logger.warning(
                RETRY_EXHAUSTED,
                breaker=None,
                function=name,
                attempts=rs.attempt_number,
                error=describe_failure(exc) if exc else None,
            )
            if config.on_exhausted is not None and exc is not None:
                config.on_exhausted(exc)
            return rs.outcome.result()

        return {
            "stop": tenacity.stop_after_attempt(max(1, config.max_attempts)),
            "wait": _Wait(config),
            "retry": tenacity.retry_if_exception(self.should_retry),
            "before_sleep": before_sleep,
            "retry_error_callback": exhausted,
            "reraise": True,
        }

    async def execute_with_retry(
        self, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """Call *func* (async or not) until it succeeds or attempts run out.

        Raises:
            Exception: The last error once attempts ran out, or the first
                one that is not retried.
        """
        name = getattr(func, "__qualname__", repr(func))
        retrying = tenacity.AsyncRetrying(
            sleep=async_sleep, **self._kwargs(name)
        )

        async def attempt() -> Any:
            result = func(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result

        return await retrying(attempt)

    def execute_sync(
        self, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """The same for a plain function, sleeping the thread."""
        name = getattr(func, "__qualname__", repr(func))
        retrying = tenacity.Retrying(sleep=sync_sleep, **self._kwargs(name))
        return retrying(func, *args, **kwargs)


def retry(
    max_attempts: int = 3,
    initial_delay: float = 1.0,
    max_delay: float = 60.0,
    strategy: RetryStrategy = RetryStrategy.EXPONENTIAL,
    retryable_exceptions: list[type[BaseException]] | None = None,
    **kwargs: Any,
) -> Callable[[F], F]:
    """Retry a sync or async function with Sage's semantics.

    Stacked directly on a :func:`circuit_breaker` function, it becomes
    that policy's retry plan: one loop, every attempt through the breaker,
    stopped at the first refusal; the YAML's ``policies.<name>.retry``
    still wins. On any other function it retries through tenacity and
    logs ``retry_scheduled`` / ``retry_exhausted``.

    Args:
        max_attempts: Every attempt, the first included.
        initial_delay: The first wait, seconds.
        max_delay: The longest wait, seconds.
        strategy: How waits grow.
        retryable_exceptions: Only these are retried (default: any).
        **kwargs: The other :class:`RetryConfig` fields.

    Raises:
        ConfigError: Another place declared the same policy's retries with
            other arguments.
    """
    config = RetryConfig(
        max_attempts=max_attempts,
        initial_delay=initial_delay,
        max_delay=max_delay,
        strategy=strategy,
        retryable_exceptions=retryable_exceptions,
        **kwargs,
    )
    path, line = _caller(1)

    def decorate(fn: F) -> F:
        breaker = getattr(fn, "breaker", None)
        if isinstance(breaker, CircuitBreaker):
            part = _registry.Part(
                "retry",
                Declaration(config.as_policy_settings(), path, line),
                hooks=config.as_retry_hooks(),
            )
            _registry.declare(breaker.name, part)
            return fn
        manager = RetryManager(config)
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kw: Any) -> Any:
                return await manager.execute_with_retry(fn, *args, **kw)

            return cast("F", async_wrapper)

        @functools.wraps(fn)
        def sync_wrapper(*args: Any, **kw: Any) -> Any:
            return manager.execute_sync(fn, *args, **kw)

        return cast("F", sync_wrapper)

    return decorate


#: Sage's preset for any call: the defaults of ``RetryConfig()``.
DEFAULT_RETRY_CONFIG = RetryConfig()
#: Sage's preset for database calls: 5 attempts, exponential from 0.5 s,
#: on ``ConnectionError`` and ``TimeoutError``.
DATABASE_RETRY_CONFIG = RetryConfig(
    max_attempts=5,
    initial_delay=0.5,
    max_delay=30.0,
    strategy=RetryStrategy.EXPONENTIAL,
    retryable_exceptions=[ConnectionError, TimeoutError],
)
#: Sage's preset for network calls: 3 attempts, exponential from 1 s,
#: with jitter.
NETWORK_RETRY_CONFIG = RetryConfig(
    max_attempts=3,
    initial_delay=1.0,
    max_delay=10.0,
    strategy=RetryStrategy.EXPONENTIAL,
    exponential_base=2.0,
    jitter=True,
)
