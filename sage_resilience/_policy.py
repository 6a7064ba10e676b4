"""Policy: one dependency's breaker, retries, timeout, bulkhead and chaos.

The success path of a call is: admit (one attribute read while closed),
call, record (one comparison while nothing failed). Retries, diagnosis and
tenacity objects are entered only after a first counted failure.

One attempt (admission, bulkhead, chaos, timeout, record) is run by
:class:`~sage_resilience._attempt.AttemptRunner`, which ``Policy`` extends
with retries and the public API. The module docstring of
:mod:`sage_resilience._attempt` describes the call plan: the variants of
:meth:`Policy.acall`, when each is chosen, and what a new per-attempt
feature must do.
"""

from __future__ import annotations

import functools
import inspect
import time
from asyncio import CancelledError
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from sage_resilience import _attempt
from sage_resilience._attempt import _TICKS_PER_SECOND as _TICKS
from sage_resilience._attempt import (
    AttemptRunner,
    PendingVerdict,
    Settings,
    _get_ident,
    _task_of,
    within,
)
from sage_resilience._breaker import ClaimPending, Gate
from sage_resilience._classify import COUNTED
from sage_resilience._events import logger
from sage_resilience._names import CLOSED, OPEN
from sage_resilience._retry import RetryHooks, retry_callbacks
from sage_resilience.exceptions import CircuitOpenError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    import pybreaker

    from sage_resilience._config import PolicyConfig
    from sage_resilience._names import State
    from sage_resilience._stats import StatusEntry

__all__ = [
    "PendingVerdict",
    "Policy",
    "RetryHooks",
]

P = ParamSpec("P")
T = TypeVar("T")


class Policy(AttemptRunner):
    """The resilience policy of one dependency.

    Use it as a decorator on ``async def`` and plain functions, or call
    through it with :meth:`acall` / :meth:`call`. Obtain policies with
    :func:`sage_resilience.policy`; a policy object stays valid across
    configuration reloads and follows them.

    .. versionadded:: 0.1.0
    """

    def __init__(
        self,
        name: str,
        config: PolicyConfig,
        *,
        platform: str = "linux",
        storage: pybreaker.CircuitBreakerStorage | None = None,
        storage_name: str = "memory",
        record: tuple[type[BaseException], ...] | None = None,
    ) -> None:
        self.name = name
        self._record = record
        self._retry_hooks: RetryHooks | None = None
        self._s = Settings(name, config, record)
        self._gate = Gate(
            name,
            config,
            platform=platform,
            storage=storage,
            storage_name=storage_name,
        )
        if self._s.chaos is not None:
            _warn_chaos(name, config)

    # -- configuration ------------------------------------------------------

    def _prepare(
        self,
        config: PolicyConfig,
        record: tuple[type[BaseException], ...] | None = None,
    ) -> Settings:
        """Validate a new configuration without applying it."""
        return Settings(self.name, config, record, self._s)

    def _commit(self, settings: Settings, platform: str) -> None:
        previous_chaos = self._s.chaos
        if settings.bulkhead is not None:
            settings.bulkhead.max_wait = settings.config.max_wait
        self._record = settings.record
        self._s = settings
        self._gate.platform = platform
        self._gate.reconfigure(settings.config)
        # Warn when chaos gets switched on, or its rates change.
        if settings.chaos is not None and settings.chaos != previous_chaos:
            _warn_chaos(self.name, settings.config)

    @property
    def config(self) -> PolicyConfig:
        """The resolved configuration in force."""
        return self._s.config

    @property
    def breaker(self) -> pybreaker.CircuitBreaker:
        """The underlying ``pybreaker.CircuitBreaker`` (source of truth)."""
        return self._gate.breaker

    @property
    def state(self) -> State:
        """``"closed"``, ``"open"`` or ``"half-open"``."""
        return self._gate.state

    def status(self) -> StatusEntry:
        """This policy's status entry (see ``docs/operations.md``)."""
        bulkhead = self._s.bulkhead
        return {
            **self._gate.status(),
            "in_flight": bulkhead.in_flight if bulkhead else None,
            "platform": self._gate.platform,
        }

    def failure_times(self) -> list[float]:
        """Epoch times of the recent counted failures (up to 256)."""
        return self._gate.failure_times()

    def open(self) -> None:
        """Force the circuit open until :meth:`close` (no half-open)."""
        self._gate.force_open()

    def close(self) -> None:
        """Close the circuit (also ends a forced open)."""
        self._gate.force_close()

    def reset(self) -> None:
        """Close the circuit and clear every counter."""
        self._gate.reset()

    def __repr__(self) -> str:
        return f"<Policy {self.name!r} state={self.state!r}>"

    # -- decorator ----------------------------------------------------------

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]: ...

    @overload
    def __call__(self, fn: Callable[P, T]) -> Callable[P, T]: ...

    def __call__(self, fn: Callable[P, Any]) -> Callable[P, Any]:
        """Decorate a function so every call goes through the policy."""
        if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
            msg = (
                f"policy {self.name!r} cannot wrap generator function "
                f"{fn.__qualname__}: wrap the call that opens the stream"
            )
            raise TypeError(msg)
        if inspect.iscoroutinefunction(fn):
            return _async_wrapper(self, fn)
        return _sync_wrapper(self, fn)

    # -- async --------------------------------------------------------------

    async def acall(  # noqa: C901, PLR0911, PLR0912 - plain path inlined
        self,
        fn: Callable[P, Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """Await ``fn(*args, **kwargs)`` under the policy.

        Raises:
            CircuitOpenError: The circuit refused the call; ``fn`` was not
                called. Its ``__cause__`` is this call's last failure when
                retrying stopped because the circuit opened.
            BulkheadFullError: Too many calls in flight.
            TimeoutError: An attempt exceeded ``timeout``.
            Exception: The dependency's own error once retries ran out.
        """
        # The call plan (see sage_resilience._attempt): the plain variant
        # inline, the timed-only one a frame away, the general one last.
        s = self._s
        if not s.plain or _attempt.attempt_observer is not None:
            if not s.timed_only or _attempt.attempt_observer is not None:
                return await self._acall_full(s, fn, args, kwargs)
            try:
                return await self._attempt_timed(s, fn, args, kwargs)
            except BaseException as exc:
                error: BaseException = exc
            return await self._aretry(s, error, fn, args, kwargs)
        gate = self._gate
        generation = gate._generation  # Gate.admit, inlined
        state = gate._state
        if state is CLOSED:
            gate.calls += 1
            ticket = generation * 2
        else:
            if state is OPEN:  # a refusal raised here: one frame less
                now = gate._clock()
                if gate._forced or now < gate._probe_at:
                    raise gate._reject(now)
            try:
                ticket = gate.admit(wait=True)
            except ClaimPending as pending:
                ticket = await pending.admit()
        try:
            if s.timeout is None:
                result = await fn(*args, **kwargs)
            else:
                result = await within(s.timeout, fn(*args, **kwargs))
        except BaseException as exc:
            error = exc
        else:
            # Gate.success, inlined: lock-free unless the circuit moved on, a
            # failure was counted or the window must move on (not fast_now).
            if ticket == gate._generation * 2 and gate._clean:
                window = gate.window
                if window is None:
                    gate.successes += 1
                    return result
                if window.fast_now:
                    gate.successes += 1
                    window._calls[window._slot] += 1
                    return result
            gate.success(ticket)
            return result
        self._settle(s, ticket, error, 0.0, 1)
        return await self._aretry(s, error, fn, args, kwargs)

    async def _acall_full(
        self,
        s: Settings,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        """acall() on the general variant: every per-attempt feature."""
        started = time.monotonic()
        try:
            return await self._attempt_async(s, fn, args, kwargs, 1)
        except BaseException as exc:
            error: BaseException = exc
        return await self._aretry(s, error, fn, args, kwargs, started)

    async def acall_deferred(
        self, fn: Callable[[], Awaitable[T]], *, retry: bool = True
    ) -> tuple[T, PendingVerdict]:
        """Await ``fn()`` under the policy; its success is settled later.

        For a result whose work goes on after it is returned, such as an
        HTTP response whose body is still to be read: an exception from
        ``fn`` is judged, counted and retried as in :meth:`acall`, but a
        result is not yet a success. It comes back with a
        :class:`PendingVerdict`; call its :meth:`~PendingVerdict.success`
        or :meth:`~PendingVerdict.failure` once that work is done (the
        attempt holds its half-open probe slot until then).

        Args:
            fn: The attempt, without arguments (``functools.partial``).
            retry: False for a single attempt (a body that cannot be
                sent twice): still through the breaker, never retried.

        Returns:
            ``(result, verdict)``.

        Raises:
            CircuitOpenError: As :meth:`acall`.
            Exception: As :meth:`acall`.

        .. versionadded:: 0.2.0
        """
        s = self._s
        started = time.monotonic()
        number = 1 if retry else s.attempts
        # With defer=True the engine returns (result, verdict).
        untyped: Callable[[], Awaitable[Any]] = fn
        try:
            held: tuple[T, PendingVerdict] = await self._attempt_async(
                s, untyped, (), {}, number, defer=True
            )
        except BaseException as exc:
            if not retry:
                raise
            error: BaseException = exc
        else:
            return held
        again: tuple[T, PendingVerdict] = await self._aretry(
            s, error, untyped, (), {}, started, defer=True
        )
        return again

    async def _aretry(
        self,
        s: Settings,
        first: BaseException,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        started: float | None = None,
        defer: bool = False,
    ) -> T:
        """Attempts 2..N through tenacity; attempt 1 already failed."""
        if not self._retryable(s, first):
            raise first
        if started is None:
            started = time.monotonic()
        last = [first]
        attempted = False

        async def attempt() -> T:
            nonlocal attempted
            if not attempted:
                attempted = True
                raise first  # replays attempt 1 so tenacity counts it
            try:
                return await self._attempt_async(
                    s, fn, args, kwargs, len(last) + 1, defer
                )
            except CircuitOpenError as refused:
                if refused.__cause__ is None:
                    refused.__cause__ = last[-1]
                raise
            except BaseException as exc:
                last.append(exc)
                raise

        retrying = s.plan.async_retrying(**self._hooks(s, started))
        result: T = await retrying(attempt)
        return result

    # -- sync ---------------------------------------------------------------

    def call(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Call ``fn(*args, **kwargs)`` under the policy.

        ``timeout`` is not enforced on sync calls (a thread cannot be
        interrupted): integrations pass it on to their client.

        Raises:
            CircuitOpenError: The circuit refused the call.
            BulkheadFullError: Too many calls in flight.
            Exception: The dependency's own error once retries ran out.
        """
        s = self._s
        started = time.monotonic() if s.deadline else 0.0
        ticket = self._gate.admit()
        try:
            return self._attempt_sync(s, fn, args, kwargs, 1, ticket)
        except BaseException as exc:
            error: BaseException = exc
        if not self._retryable(s, error):
            raise error
        return self._retry_sync(s, error, fn, args, kwargs, started)

    def call_deferred(
        self, fn: Callable[[], T], *, retry: bool = True
    ) -> tuple[T, PendingVerdict]:
        """Call ``fn()`` under the policy; its success is settled later.

        The sync twin of :meth:`acall_deferred`.

        .. versionadded:: 0.2.0
        """
        s = self._s
        started = time.monotonic()
        number = 1 if retry else s.attempts
        untyped: Callable[[], Any] = fn  # (result, verdict) comes back
        try:
            held: tuple[T, PendingVerdict] = self._attempt_sync(
                s, untyped, (), {}, number, None, defer=True
            )
        except BaseException as exc:
            if not retry or not self._retryable(s, exc):
                raise
            error: BaseException = exc
        else:
            return held
        again: tuple[T, PendingVerdict] = self._retry_sync(
            s, error, untyped, (), {}, started, defer=True
        )
        return again

    def _retry_sync(
        self,
        s: Settings,
        first: BaseException,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        started: float,
        defer: bool = False,
    ) -> T:
        last = [first]
        attempted: list[bool] = []

        def attempt() -> T:
            if not attempted:
                attempted.append(True)
                raise first
            try:
                return self._attempt_sync(
                    s, fn, args, kwargs, len(last) + 1, None, defer
                )
            except CircuitOpenError as refused:
                if refused.__cause__ is None:
                    refused.__cause__ = last[-1]
                raise
            except BaseException as exc:
                last.append(exc)
                raise

        retrying = s.plan.retrying(**self._hooks(s, started))
        result: T = retrying(attempt)
        return result

    def _retryable(self, s: Settings, error: BaseException) -> bool:
        if s.attempts <= 1 or s.classify(error) != COUNTED:
            return False
        hooks = self._retry_hooks
        return (
            hooks is None
            or hooks.should_retry is None
            or bool(hooks.should_retry(error))
        )

    def _hooks(self, s: Settings, started: float) -> dict[str, Any]:
        """The tenacity callbacks of one call's retries."""
        return retry_callbacks(
            self.name,
            self._gate,
            self._retry_hooks,
            attempts=s.attempts,
            should_retry=functools.partial(self._retryable, s),
            started=started,
        )


def _warn_chaos(name: str, config: PolicyConfig) -> None:
    chaos = config.chaos
    logger.warning(
        "chaos_enabled",
        breaker=name,
        failure_rate=chaos.failure_rate,
        latency=chaos.latency,
        latency_rate=chaos.latency_rate,
    )


# -- the decorator's wrappers ----------------------------------------------
#
# The plain variant (see sage_resilience._attempt) inlined in the wrapper
# itself: one frame between the caller and ``fn``, admission and success
# recorded without a call. Anything else goes through Policy.acall/call.


def _async_wrapper(  # noqa: C901, PLR0915 - the hot path below, inlined
    policy: Policy, fn: Callable[..., Awaitable[Any]]
) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(fn)
    async def wrapper(  # noqa: C901, PLR0912, PLR0915 - the hot path, inlined
        *args: Any, **kwargs: Any
    ) -> Any:
        s = policy._s
        if not s.plain or _attempt.attempt_observer is not None:
            return await policy.acall(fn, *args, **kwargs)
        gate = policy._gate
        generation = gate._generation
        state = gate._state
        if state is CLOSED:
            gate.calls += 1
            ticket = generation * 2
        else:
            if state is OPEN:  # a refusal raised here: one frame less
                now = gate._clock()
                if gate._forced or now < gate._probe_at:
                    raise gate._reject(now)
            try:
                ticket = gate.admit(wait=True)
            except ClaimPending as pending:
                ticket = await pending.admit()
        try:
            timeout = s.timeout
            if timeout is None:
                result = await fn(*args, **kwargs)
            else:  # _attempt.within, inlined: no frame of its own
                attempt = fn(*args, **kwargs)
                running = _attempt._running
                if (
                    running is None
                    or (loop := running[0])._thread_id  # type: ignore[attr-defined]
                    != _get_ident()
                    or (task := _task_of(loop)) is None
                ):
                    result = await within(timeout, attempt)
                else:
                    wheel = running[1]
                    cancelling = task.cancelling()
                    clock = wheel._time  # an attribute: no method lookup
                    deadline = clock() + timeout
                    bucket = (
                        wheel._last
                        if wheel._low <= deadline <= wheel._high
                        else wheel.bucket(int(deadline * _TICKS) + 1)
                    )
                    bucket[attempt] = task
                    try:
                        result = await attempt
                    except CancelledError as exc:
                        raise wheel.expired(  # noqa: B904 - chained inside
                            attempt, task, cancelling, exc
                        )
                    finally:
                        bucket.pop(attempt, None)
                        if wheel.fired:
                            wheel.fired.discard(attempt)
        except BaseException as exc:
            error = exc
        else:
            # Gate.success, inlined: lock-free unless the circuit moved on, a
            # failure was counted or the window must move on (not fast_now).
            if ticket == gate._generation * 2 and gate._clean:
                window = gate.window
                if window is None:
                    gate.successes += 1
                    return result
                if window.fast_now:
                    gate.successes += 1
                    window._calls[window._slot] += 1
                    return result
            gate.success(ticket)
            return result
        policy._settle(s, ticket, error, 0.0, 1)
        return await policy._aretry(s, error, fn, args, kwargs)

    return wrapper


def _sync_wrapper(  # noqa: C901 - the hot path below, inlined for speed
    policy: Policy, fn: Callable[..., Any]
) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:  # noqa: C901 - inlined
        s = policy._s
        if not s.plain or _attempt.attempt_observer is not None:
            return policy.call(fn, *args, **kwargs)
        gate = policy._gate
        generation = gate._generation
        state = gate._state
        if state is CLOSED:
            gate.calls += 1
            ticket = generation * 2
        else:
            if state is OPEN:  # a refusal raised here: one frame less
                now = gate._clock()
                if gate._forced or now < gate._probe_at:
                    raise gate._reject(now)
            ticket = gate.admit()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:
            error = exc
        else:
            # Gate.success, inlined: lock-free unless the circuit moved on, a
            # failure was counted or the window must move on (not fast_now).
            if ticket == gate._generation * 2 and gate._clean:
                window = gate.window
                if window is None:
                    gate.successes += 1
                    return result
                if window.fast_now:
                    gate.successes += 1
                    window._calls[window._slot] += 1
                    return result
            gate.success(ticket)
            return result
        policy._settle(s, ticket, error, 0.0, 1)  # may raise the refusal
        if not policy._retryable(s, error):
            raise error
        return policy._retry_sync(s, error, fn, args, kwargs, 0.0)

    return wrapper
