"""Policy: one dependency's breaker, retries, timeout, bulkhead and chaos.

The success path of a call is: admit (one attribute read while closed),
call, record (one comparison while nothing failed). Retries, diagnosis and
tenacity objects are entered only after a first counted failure.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import random
import threading
import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar, overload

from sage_resilience._breaker import ClaimPending, Gate, describe_failure
from sage_resilience._classify import COUNTED, IGNORED, Classifier
from sage_resilience._events import logger
from sage_resilience._retry import RetryPlan
from sage_resilience.exceptions import (
    BulkheadFullError,
    ChaosError,
    CircuitOpenError,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Coroutine

    import pybreaker
    import tenacity

    from sage_resilience._config import PolicyConfig

__all__ = [
    "PendingVerdict",
    "Policy",
    "RetryHooks",
    "set_attempt_observer",
]

#: Called with (policy name, seconds) after every attempt that ran; the
#: metrics module installs one for its latency histogram.
_observer: Callable[[str, float], None] | None = None


def set_attempt_observer(
    observer: Callable[[str, float], None] | None,
) -> None:
    """Install (or remove, with None) the per-attempt latency observer.

    While one is installed every attempt that actually ran (a success, a
    counted or ignored failure, a timeout) reports its duration, bulkhead
    waiting excluded; refusals and cancellations are not reported. Without
    one the success path does not read the clock at all.
    """
    global _observer  # noqa: PLW0603 - one observer per process
    _observer = observer


P = ParamSpec("P")
T = TypeVar("T")


def _cause_of(exc: BaseException, kind: str | None) -> str | None:
    """The diagnosis code of a failure, for ``last_cause``; never raises."""
    try:
        from sage_resilience._diagnosis.chain import cause_of  # noqa: PLC0415
    except ImportError:  # pragma: no cover - diagnosis is part of the package
        return None
    try:
        cause: str | None = cause_of(exc, kind=kind)
    except Exception:  # pragma: no cover - diagnosis must not break calls
        return None
    return cause


class _Bulkhead:
    """At most ``limit`` attempts in flight, async and sync alike.

    Async callers wait on futures (no thread blocked); sync callers on a
    condition. One counter serves both.
    """

    __slots__ = ("_cond", "_in_flight", "_waiters", "limit", "max_wait")

    def __init__(self, limit: int, max_wait: float) -> None:
        self.limit = limit
        self.max_wait = max_wait
        self._in_flight = 0
        self._cond = threading.Condition(threading.Lock())
        self._waiters: list[
            tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]
        ] = []

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def _try_take(self) -> bool:
        if self._in_flight < self.limit:
            self._in_flight += 1
            return True
        return False

    async def acquire_async(self) -> bool:
        with self._cond:
            if self._try_take():
                return True
            if self.max_wait <= 0:
                return False
            loop = asyncio.get_running_loop()
            entry = (loop, loop.create_future())
            self._waiters.append(entry)
        try:
            async with asyncio.timeout(self.max_wait):
                await entry[1]
        except TimeoutError:
            return self._abandon(entry)
        except BaseException:
            if self._abandon(entry):
                self.release()
            raise
        return True

    def _abandon(
        self, entry: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]
    ) -> bool:
        """Stop waiting; True when release() had already handed us a slot.

        A slot belongs to the waiter that release() took off the list,
        whether or not the hand-over callback has run yet.
        """
        with self._cond:
            if entry in self._waiters:
                self._waiters.remove(entry)
                return False
        return True

    def acquire_sync(self) -> bool:
        with self._cond:
            if self._try_take():
                return True
            if self.max_wait <= 0:
                return False
            deadline = time.monotonic() + self.max_wait
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    return self._try_take()
                if self._try_take():
                    return True

    def release(self) -> None:
        with self._cond:
            # Hand the slot straight to a waiting coroutine, if any: from
            # now on the slot is that waiter's (see _abandon).
            while self._waiters:
                loop, waiter = self._waiters.pop(0)
                try:
                    loop.call_soon_threadsafe(_hand_over, waiter)
                except RuntimeError:  # its loop is closed
                    continue
                return
            self._in_flight -= 1
            self._cond.notify()


#: Attempt timeouts fire at most this late (seconds).
TIMEOUT_RESOLUTION: Final = 0.005


class _Expiry:
    """One timed attempt: the task to cancel and the bucket it waits in."""

    __slots__ = ("bucket", "fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False
        self.bucket: dict[_Expiry, None] | None = None

    def fire(self) -> None:
        self.fired = True
        self.task.cancel()


class _TimeoutWheel:
    """Attempt timeouts of one event loop, grouped in 5 ms buckets.

    ``asyncio.timeout`` schedules (and cancels) one timer per call, which
    costs more than the whole breaker; here one timer serves every attempt
    whose deadline falls in the same bucket.
    """

    __slots__ = ("_buckets", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._buckets: dict[int, dict[_Expiry, None]] = {}

    def add(self, expiry: _Expiry, timeout: float) -> None:
        loop = self._loop
        tick = int((loop.time() + timeout) / TIMEOUT_RESOLUTION) + 1
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = {}
            loop.call_at(tick * TIMEOUT_RESOLUTION, self._fire, tick)
        bucket[expiry] = None
        expiry.bucket = bucket

    def _fire(self, tick: int) -> None:
        for expiry in self._buckets.pop(tick, ()):
            expiry.fire()


_wheels: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, _TimeoutWheel
] = weakref.WeakKeyDictionary()


async def _within(timeout: float, awaitable: Awaitable[T]) -> T:  # noqa: ASYNC109
    """Await *awaitable*; raise ``TimeoutError`` after *timeout* seconds.

    Same semantics as ``asyncio.timeout`` (an outside cancellation that
    races the expiry still wins); the expiry is late by at most
    ``TIMEOUT_RESOLUTION``.
    """
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - awaited outside a task
        async with asyncio.timeout(timeout):
            return await awaitable
    loop = task.get_loop()
    wheel = _wheels.get(loop)
    if wheel is None:
        wheel = _wheels[loop] = _TimeoutWheel(loop)
    expiry = _Expiry(task)
    cancelling = task.cancelling()
    wheel.add(expiry, timeout)
    try:
        return await awaitable
    except asyncio.CancelledError as exc:
        if expiry.fired and task.uncancel() <= cancelling:
            raise TimeoutError from exc
        raise
    finally:
        if not expiry.fired:
            bucket = expiry.bucket
            if bucket is not None:
                bucket.pop(expiry, None)


def _hand_over(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


class _Settings:
    """What one configuration means for calls; swapped whole on reload."""

    __slots__ = (
        "attempts",
        "bulkhead",
        "chaos",
        "classify",
        "config",
        "deadline",
        "plain",
        "plan",
        "record",
        "timed",
        "timed_only",
        "timeout",
    )

    def __init__(
        self,
        name: str,
        config: PolicyConfig,
        record: tuple[type[BaseException], ...] | None = None,
        previous: _Settings | None = None,
    ) -> None:
        self.config = config
        self.record = record
        self.classify = Classifier(config, name=name, record=record)
        self.timeout = config.timeout
        self.plan = RetryPlan(config.retry)
        self.attempts = config.retry.attempts
        self.deadline = config.retry.deadline
        trip = config.trip
        self.timed = trip is not None and trip.slow_call_duration is not None
        self.chaos = config.chaos if config.chaos.enabled else None
        if config.max_concurrency is None:
            self.bulkhead = None
        elif (
            previous is not None
            and previous.bulkhead is not None
            and previous.bulkhead.limit == config.max_concurrency
        ):
            # Shared with the live settings: its max_wait changes only when
            # these settings are committed (a rejected reload changes nothing).
            self.bulkhead = previous.bulkhead
        else:
            self.bulkhead = _Bulkhead(config.max_concurrency, config.max_wait)
        extras = self.chaos or self.bulkhead or self.deadline
        self.plain = not (self.timed or extras)
        # Only slow-call timing: a lighter path than every feature's.
        self.timed_only = self.timed and not extras


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


class Policy:
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
        self._s = _Settings(name, config, record)
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
    ) -> _Settings:
        """Validate a new configuration without applying it."""
        return _Settings(self.name, config, record, self._s)

    def _commit(self, settings: _Settings, platform: str) -> None:
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
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``."""
        return self._gate.state

    def status(self) -> dict[str, Any]:
        """This policy's status entry (see ``docs/operations.md``)."""
        entry = self._gate.status()
        bulkhead = self._s.bulkhead
        entry["in_flight"] = bulkhead.in_flight if bulkhead else None
        entry["platform"] = self._gate.platform
        return entry

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

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                return await self.acall(fn, *args, **kwargs)

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
            return self.call(fn, *args, **kwargs)

        return wrapper

    # -- async --------------------------------------------------------------

    async def acall(
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
        s = self._s
        if not s.plain or _observer is not None:
            if s.timed_only and _observer is None:
                return await self._acall_timed(s, fn, args, kwargs)
            return await self._acall_full(s, fn, args, kwargs)
        gate = self._gate
        try:
            ticket = gate.admit(wait=True)
        except ClaimPending as pending:
            ticket = await pending.admit()
        try:
            if s.timeout is None:
                result = await fn(*args, **kwargs)
            else:
                result = await _within(s.timeout, fn(*args, **kwargs))
        except BaseException as exc:
            error: BaseException = exc
        else:
            gate.success(ticket)
            return result
        self._settle(s, ticket, error, 0.0, 1)
        return await self._aretry(s, error, fn, args, kwargs)

    async def _acall_timed(
        self,
        s: _Settings,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        """acall() for a policy whose only extra is slow-call timing."""
        gate = self._gate
        try:
            ticket = gate.admit(wait=True)
        except ClaimPending as pending:
            ticket = await pending.admit()
        started = time.perf_counter()
        try:
            if s.timeout is None:
                result = await fn(*args, **kwargs)
            else:
                result = await _within(s.timeout, fn(*args, **kwargs))
        except BaseException as exc:
            error: BaseException = exc
        else:
            gate.success(ticket, time.perf_counter() - started)
            return result
        self._settle(s, ticket, error, time.perf_counter() - started, 1)
        return await self._aretry(s, error, fn, args, kwargs)

    # -- bulkhead slots -------------------------------------------------

    async def _take_slot_async(self, bulkhead: _Bulkhead, ticket: int) -> None:
        """A bulkhead slot for an admitted attempt, or its refusal.

        However the wait ends (full, cancelled), the admission is freed:
        a half-open probe never keeps its slot without running.
        """
        started_wait = time.monotonic()
        try:
            taken = await bulkhead.acquire_async()
        except BaseException:
            self._gate.release(ticket)
            raise
        if not taken:
            raise self._bulkhead_full(bulkhead, ticket, started_wait)

    def _take_slot_sync(self, bulkhead: _Bulkhead, ticket: int) -> None:
        """The sync twin of :meth:`_take_slot_async`."""
        started_wait = time.monotonic()
        try:
            taken = bulkhead.acquire_sync()
        except BaseException:
            self._gate.release(ticket)
            raise
        if not taken:
            raise self._bulkhead_full(bulkhead, ticket, started_wait)

    def _bulkhead_full(
        self, bulkhead: _Bulkhead, ticket: int, started_wait: float
    ) -> BulkheadFullError:
        gate = self._gate
        gate.release(ticket)
        gate.bulkhead_rejections += 1
        return BulkheadFullError(
            self.name, bulkhead.limit, time.monotonic() - started_wait
        )

    async def _attempt_async(
        self,
        s: _Settings,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        number: int,
        defer: bool = False,
    ) -> T:
        """One attempt with every feature: bulkhead, chaos, slow timing.

        With *defer*, a result is not recorded as a success: it comes back
        as ``(result, PendingVerdict)`` for the caller to settle.
        """
        gate = self._gate
        try:
            ticket = gate.admit(wait=True)
        except ClaimPending as pending:
            ticket = await pending.admit()
        bulkhead = s.bulkhead
        if bulkhead is not None:
            await self._take_slot_async(bulkhead, ticket)
        started = time.perf_counter()
        try:
            try:
                if s.timeout is None:
                    if s.chaos is not None:
                        await self._inject_async(s)
                    result = await fn(*args, **kwargs)
                else:
                    result = await _within(
                        s.timeout, self._chaotic(s, fn, args, kwargs)
                    )
            finally:
                if bulkhead is not None:
                    bulkhead.release()
        except BaseException as exc:
            error: BaseException = exc
        else:
            duration = time.perf_counter() - started
            if defer:
                if _observer is not None:
                    _observer(self.name, duration)
                held: Any = (result, PendingVerdict(self, s, ticket, duration))
                return held  # type: ignore[no-any-return]
            gate.success(ticket, duration)
            if _observer is not None:
                _observer(self.name, duration)
            return result
        duration = time.perf_counter() - started
        if _observer is not None and isinstance(error, Exception):
            _observer(self.name, duration)
        self._settle(s, ticket, error, duration, number)
        raise error

    async def _acall_full(
        self,
        s: _Settings,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        started = time.monotonic()
        try:
            return await self._attempt_async(s, fn, args, kwargs, 1)
        except BaseException as exc:
            error: BaseException = exc
        return await self._aretry(s, error, fn, args, kwargs, started)

    async def _acall_once(
        self,
        fn: Callable[..., Awaitable[T]],
        /,
        *args: Any,
        **kwargs: Any,
    ) -> T:
        """One attempt under the policy, never retried.

        For a statement on a connection inside a transaction (the postgres
        integration): after an error the server aborts the transaction,
        and a retry would only meet that. The outcome is classified and
        recorded as for any attempt.
        """
        s = self._s
        return await self._attempt_async(s, fn, args, kwargs, s.attempts)

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
        s: _Settings,
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

    async def _chaotic(
        self,
        s: _Settings,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        """The call, preceded by injected faults when chaos is on."""
        if s.chaos is not None:
            await self._inject_async(s)
        return await fn(*args, **kwargs)

    async def _inject_async(self, s: _Settings) -> None:
        chaos = s.chaos
        assert chaos is not None
        if chaos.latency and random.random() < chaos.latency_rate:  # noqa: S311
            logger.info(
                "chaos_injected",
                breaker=self.name,
                fault="latency",
                latency=chaos.latency,
            )
            await asyncio.sleep(chaos.latency)
        if random.random() < chaos.failure_rate:  # noqa: S311
            logger.info("chaos_injected", breaker=self.name, fault="error")
            raise ChaosError(self.name)

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

    def _attempt_sync(
        self,
        s: _Settings,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        number: int,
        ticket: int | None = None,
        defer: bool = False,
    ) -> T:
        gate = self._gate
        if ticket is None:
            ticket = gate.admit()
        bulkhead = s.bulkhead
        if bulkhead is not None:
            self._take_slot_sync(bulkhead, ticket)
        observer = _observer
        timed = s.timed or observer is not None
        started = time.perf_counter() if timed else 0.0
        try:
            try:
                if s.chaos is not None:
                    self._inject_sync(s)
                result = fn(*args, **kwargs)
            finally:
                if bulkhead is not None:
                    bulkhead.release()
        except BaseException as exc:
            error: BaseException = exc
        else:
            if defer:
                duration = time.perf_counter() - started if timed else 0.0
                if observer is not None:
                    observer(self.name, duration)
                held: Any = (result, PendingVerdict(self, s, ticket, duration))
                return held  # type: ignore[no-any-return]
            if observer is not None:
                observer(self.name, time.perf_counter() - started)
            if timed:
                gate.success(ticket, time.perf_counter() - started)
            else:
                gate.success(ticket)
            return result
        duration = time.perf_counter() - started if timed else 0.0
        if observer is not None and isinstance(error, Exception):
            observer(self.name, duration)
        self._settle(s, ticket, error, duration, number)
        raise error

    def _retry_sync(
        self,
        s: _Settings,
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

    def _inject_sync(self, s: _Settings) -> None:
        chaos = s.chaos
        assert chaos is not None
        if chaos.latency and random.random() < chaos.latency_rate:  # noqa: S311
            logger.info(
                "chaos_injected",
                breaker=self.name,
                fault="latency",
                latency=chaos.latency,
            )
            # Real latency even in the testing mode, like the async path:
            # that mode only removes the waits between retries.
            time.sleep(chaos.latency)
        if random.random() < chaos.failure_rate:  # noqa: S311
            logger.info("chaos_injected", breaker=self.name, fault="error")
            raise ChaosError(self.name)

    # -- shared failure handling --------------------------------------------

    def _settle(
        self,
        s: _Settings,
        ticket: int,
        error: BaseException,
        duration: float,
        number: int,
    ) -> None:
        """Record a failed attempt.

        Raises a refusal (from *error*) when the circuit is now open and
        attempts were left: retrying stops at once.
        """
        verdict = s.classify(error)
        gate = self._gate
        if verdict == COUNTED:
            gate.failure(
                ticket, error, _cause_of(error, s.config.kind), duration
            )
            if number < s.attempts and gate.rejecting():
                refusal = gate.refusal()
                raise refusal from error
        elif verdict == IGNORED:
            gate.success(ticket, duration)
        else:
            gate.release(ticket)

    def _retryable(self, s: _Settings, error: BaseException) -> bool:
        if s.attempts <= 1 or s.classify(error) != COUNTED:
            return False
        hooks = self._retry_hooks
        return (
            hooks is None
            or hooks.should_retry is None
            or bool(hooks.should_retry(error))
        )

    def _hooks(self, s: _Settings, started: float) -> dict[str, Any]:
        gate = self._gate
        name = self.name
        hooks = self._retry_hooks

        def should_retry(exc: BaseException) -> bool:
            return self._retryable(s, exc)

        def before_sleep(rs: tenacity.RetryCallState) -> None:
            gate.retries += 1
            outcome = rs.outcome
            exc = outcome.exception() if outcome is not None else None
            if hooks is not None and hooks.before_retry is not None:
                _run_callback(name, hooks.before_retry, rs.attempt_number, exc)
            logger.info(
                "retry_scheduled",
                breaker=name,
                attempt=rs.attempt_number,
                max_attempts=s.attempts,
                wait=round(rs.upcoming_sleep, 3),
                error=_describe(exc),
            )

        def exhausted(rs: tenacity.RetryCallState) -> Any:
            outcome = rs.outcome
            assert outcome is not None
            logger.warning(
                "retry_exhausted",
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


class PendingVerdict:
    """The outcome, still to come, of an attempt that returned a result.

    Returned by :meth:`Policy.acall_deferred` and
    :meth:`Policy.call_deferred`. The first call of :meth:`success`,
    :meth:`failure` or :meth:`release` settles it; later calls do nothing.
    Thread-safe.

    .. versionadded:: 0.2.0
    """

    __slots__ = ("_duration", "_lock", "_policy", "_settings", "_ticket")

    def __init__(
        self, policy: Policy, settings: _Settings, ticket: int, duration: float
    ) -> None:
        self._policy: Policy | None = policy
        self._settings = settings
        self._ticket = ticket
        self._duration = duration
        self._lock = threading.Lock()

    def _take(self) -> Policy | None:
        with self._lock:
            policy, self._policy = self._policy, None
        return policy

    @property
    def settled(self) -> bool:
        """Whether the verdict was given."""
        return self._policy is None

    def success(self) -> None:
        """The work finished well: a success for the breaker."""
        policy = self._take()
        if policy is not None:
            policy._gate.success(self._ticket, self._duration)

    def failure(self, exc: BaseException) -> None:
        """The work failed with *exc*: judged as any attempt's error.

        A counted failure counts (never retried: the result was already
        handed out); a caller fault is a success; a programming error or
        a cancellation leaves no trace but the freed probe slot.
        """
        policy = self._take()
        if policy is not None:
            s = self._settings
            policy._settle(s, self._ticket, exc, self._duration, s.attempts)

    def release(self) -> None:
        """No verdict: free the attempt's probe slot, count nothing."""
        policy = self._take()
        if policy is not None:
            policy._gate.release(self._ticket)


def _describe(exc: BaseException | None) -> str | None:
    if exc is None:
        return None
    return describe_failure(exc)


def _warn_chaos(name: str, config: PolicyConfig) -> None:
    chaos = config.chaos
    logger.warning(
        "chaos_enabled",
        breaker=name,
        failure_rate=chaos.failure_rate,
        latency=chaos.latency,
        latency_rate=chaos.latency_rate,
    )
