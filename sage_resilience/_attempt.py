"""One attempt of a policy: admission, bulkhead, chaos, timeout, record.

Everything between the breaker's admission and the recording of one
attempt's outcome lives here; retries (tenacity, attempts 2..N) and the
public API live in :mod:`sage_resilience._policy`, whose ``Policy`` is an
:class:`AttemptRunner`. Integrations that need one attempt and never a
retry use :func:`acall_once`.

The call plan
-------------
``Policy.acall`` runs one of three variants, chosen from the
:class:`Settings` of the configuration in force (``plain`` and
``timed_only`` are computed once per configuration, not per call):

* **plain** (``Settings.plain``): no bulkhead, no chaos, no retry
  deadline, no slow-call timing, no attempt hook. Inlined in
  ``Policy.acall``: admit, call (under ``timeout`` when set), record. No
  clock is read on success.
* **timed-only** (``Settings.timed_only``): as plain, plus the attempt's
  duration for ``trip.slow_call_duration``
  (:meth:`AttemptRunner._attempt_timed`).
* **general**: every feature (:meth:`AttemptRunner._attempt_async`):
  chosen whenever a bulkhead, chaos or a retry deadline is configured, or a
  attempt hook is installed (:mod:`sage_resilience.instrumentation`).

``Policy.acall_deferred``, the retries (attempts 2..N) and
:func:`acall_once` always run the general variant. The sync path
(``Policy.call``) has one variant, :meth:`AttemptRunner._attempt_sync`,
which reads the clock only for slow-call timing or an observer. Every
variant hands a counted failure to the same retry loop.

A new per-attempt feature (a ``PolicyConfig`` key read while an attempt
runs) must either be honoured by the plain and timed-only variants too,
or make :class:`Settings` turn ``plain`` and ``timed_only`` off, so that
such policies take the general variant. Either way it is declared in
:data:`CALL_PLAN`, which ``tests/test_call_plan.py`` checks against every
field of ``PolicyConfig``.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar, cast

from sage_resilience import _hooks
from sage_resilience._breaker import ClaimPending, Gate
from sage_resilience._classify import COUNTED, IGNORED, Classifier
from sage_resilience._events import logger
from sage_resilience._retry import RetryPlan
from sage_resilience.exceptions import BulkheadFullError, ChaosError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from sage_resilience._config import ChaosConfig, PolicyConfig
    from sage_resilience._hooks import Outcome

__all__ = [
    "CALL_PLAN",
    "TIMEOUT_RESOLUTION",
    "AttemptRunner",
    "PendingVerdict",
    "Settings",
    "acall_once",
    "within",
]

T = TypeVar("T")

#: Which call variants honour each ``PolicyConfig`` key (nested models'
#: keys dotted: ``retry.backoff.initial``). See "The call plan" above.
#:
#: * ``"all"``: every variant, the plain one included: the key is read by
#:   what all of them share (the gate, the classifier, the retry loop, the
#:   integrations), or, like ``timeout``, by the plain variant itself.
#: * ``"timed"``: the timed-only and general variants; setting the key
#:   turns ``Settings.plain`` off.
#: * ``"general"``: the general variant only; setting the key (for keys
#:   of a switched section: switching that section on) turns
#:   ``Settings.plain`` and ``Settings.timed_only`` off.
CALL_PLAN: Final[Mapping[str, Literal["all", "timed", "general"]]] = {
    # Per attempt, on every variant.
    "timeout": "all",
    # The gate (admission and recording), shared by every variant.
    "failure_threshold": "all",
    "recovery_timeout": "all",
    "success_threshold": "all",
    "half_open_max_calls": "all",
    "half_open_max_wait": "all",
    "critical": "all",
    "trip": "all",
    "trip.failure_rate": "all",
    "trip.window": "all",
    "trip.minimum_calls": "all",
    "trip.slow_call_rate": "all",
    "recovery_backoff": "all",
    "recovery_backoff.multiplier": "all",
    "recovery_backoff.max": "all",
    # The classifier and the retry loop, entered after a failure.
    "kind": "all",
    "ignore_exceptions": "all",
    "record_exceptions": "all",
    "failure_statuses": "all",
    "retry": "all",
    "retry.attempts": "all",
    "retry.backoff": "all",
    "retry.backoff.strategy": "all",
    "retry.backoff.initial": "all",
    "retry.backoff.multiplier": "all",
    "retry.backoff.max": "all",
    "retry.backoff.jitter": "all",
    "retry.respect_retry_after": "all",
    # Read by the integrations only.
    "settings": "all",
    # Slow-call timing: the timed-only variant.
    "trip.slow_call_duration": "timed",
    # The general variant only.
    "retry.deadline": "general",
    "max_concurrency": "general",
    "max_wait": "general",
    "chaos": "general",
    "chaos.enabled": "general",
    "chaos.failure_rate": "general",
    "chaos.latency": "general",
    "chaos.latency_rate": "general",
}

# -- the attempt observer ---------------------------------------------------

#: Called with (policy name, seconds, outcome, error) after every attempt
#: that ran to an end: :mod:`sage_resilience._hooks` keeps it (while an
#: attempt hook is installed, metrics' latency included) and hands this
#: module its copy whenever it changes. None when nobody listens: the
#: success path reads no clock.
attempt_observer: (
    Callable[[str, float, Outcome, BaseException | None], None] | None
) = None


def _observe(observer: Any) -> None:
    global attempt_observer  # noqa: PLW0603 - one observer per process
    attempt_observer = observer


_hooks.watch_observer(_observe)


# -- bulkhead ----------------------------------------------------------------


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


def _hand_over(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# -- timeouts ----------------------------------------------------------------

#: Attempt timeouts fire at most this late (seconds).
TIMEOUT_RESOLUTION: Final = 0.005

# asyncio.current_task() is a Python function on 3.11; its two C halves
# cost half as much. get_running_loop() itself calls getpid() (a system
# call), so a timed attempt on the loop of the previous one finds its task
# by the thread running that loop instead (see _running).
_get_running_loop = asyncio.get_running_loop
_get_ident = threading.get_ident
_TICKS_PER_SECOND: Final = 1 / TIMEOUT_RESOLUTION


def _current_task_lookup() -> Callable[[Any], asyncio.Task[Any] | None]:
    """The cheapest way this Python has to find a loop's current task.

    Up to 3.13 asyncio keeps each loop's current task in the dict
    ``asyncio.tasks._current_tasks``; 3.14's C tasks keep it on the thread
    state and leave that dict empty: there, ``asyncio.current_task``.
    """
    tasks = asyncio.tasks
    table = cast(
        "dict[Any, Any] | None", getattr(tasks, "_current_tasks", None)
    )
    c_table = getattr(sys.modules.get("_asyncio"), "_current_tasks", None)
    pure = tasks._enter_task is getattr(tasks, "_py_enter_task", None)
    if table is not None and (pure or table is c_table):
        return table.get
    return asyncio.current_task


#: The task current on a loop (None outside a task), chosen once.
_task_of = _current_task_lookup()


class _TimeoutWheel:
    """Attempt timeouts of one event loop, grouped in 5 ms buckets.

    ``asyncio.timeout`` schedules (and cancels) one timer per call, which
    costs more than the whole breaker; here one timer serves every attempt
    whose deadline falls in the same bucket. A bucket maps each attempt's
    key (the awaitable it times) to its task; a key that fired goes to
    :attr:`fired` until its attempt has seen it.
    """

    __slots__ = (
        "_buckets",
        "_high",
        "_last",
        "_loop",
        "_low",
        "_time",
        "fired",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        # Weakly: the wheel lives in a weak dictionary keyed by its loop.
        self._loop = weakref.ref(loop)
        # The loop's clock; time.monotonic itself where that is all the
        # loop's time() does (one Python frame less per timed attempt).
        self._time: Callable[[], float] = (
            time.monotonic
            if type(loop).time is asyncio.BaseEventLoop.time
            else self._loop_time
        )
        self._buckets: dict[int, dict[object, asyncio.Task[Any]]] = {}
        # The bucket the previous attempt went to (most do likewise), and
        # the deadlines it serves: from _low to _high, when its timer fires
        # (an empty range once it has fired).
        self._last: dict[object, asyncio.Task[Any]] = {}
        self._low = 0.0
        self._high = -1.0
        self.fired: set[object] = set()

    def _loop_time(self) -> float:
        loop = self._loop()
        if loop is None:  # pragma: no cover - the loop is gone
            return time.monotonic()
        return loop.time()

    def bucket(self, tick: int) -> dict[object, asyncio.Task[Any]]:
        """The bucket of deadlines in *tick*, its timer set (and cached)."""
        found = self._buckets.get(tick)
        if found is None:
            found = self._buckets[tick] = {}
            loop = self._loop()
            if loop is not None:  # else nothing runs there any more
                loop.call_at(tick * TIMEOUT_RESOLUTION, self._fire, tick)
        self._last = found
        self._low = (tick - 1) * TIMEOUT_RESOLUTION
        self._high = tick * TIMEOUT_RESOLUTION
        return found

    def expired(
        self,
        key: object,
        task: asyncio.Task[Any],
        cancelling: int,
        cancelled: asyncio.CancelledError,
    ) -> BaseException:
        """What the attempt *key* raises on *cancelled*.

        A ``TimeoutError`` (caused by the cancellation) when this wheel
        cancelled it and nothing else did since it was armed (*cancelling*:
        the task's count then), else the cancellation itself.
        """
        fired = self.fired
        if key in fired:
            fired.discard(key)
            if task.uncancel() <= cancelling:
                timed_out = TimeoutError()
                timed_out.__cause__ = cancelled
                return timed_out
        return cancelled

    def _fire(self, tick: int) -> None:
        bucket = self._buckets.pop(tick, {})
        if bucket is self._last:
            self._high = -1.0  # its deadlines go to a new bucket
        for key, task in list(bucket.items()):
            self.fired.add(key)
            task.cancel()


_wheels: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, _TimeoutWheel
] = weakref.WeakKeyDictionary()

#: The last loop a timeout was armed on and its wheel: one identity test
#: instead of a weak-dictionary lookup on every timed attempt.
_last_wheel: tuple[asyncio.AbstractEventLoop | None, _TimeoutWheel | None] = (
    None,
    None,
)

#: The same when that loop is an asyncio.BaseEventLoop (it records the
#: thread running it): a timed attempt in that thread while that loop runs
#: a task is in that task, since a thread runs one loop at a time. The
#: decorator's wrapper takes this path (no get_running_loop()).
_running: tuple[asyncio.BaseEventLoop, _TimeoutWheel] | None = None


def forget_wheels() -> None:
    """Drop every loop's timeout wheel and the caches of the last one.

    For tests (pending expiries still fire), and in a child after fork():
    a fork made inside a running task leaves the child with the parent's
    loop "running" in the same thread and that task current, so
    ``_running`` would time the child's attempts on a loop that
    nothing runs there.
    """
    global _last_wheel, _running  # noqa: PLW0603
    _wheels.clear()
    _last_wheel = (None, None)
    _running = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=forget_wheels)


def _wheel_of(loop: asyncio.AbstractEventLoop) -> _TimeoutWheel:
    global _last_wheel, _running  # noqa: PLW0603 - caches of _wheels
    wheel = _wheels.get(loop)
    if wheel is None:
        wheel = _wheels[loop] = _TimeoutWheel(loop)
    _last_wheel = (loop, wheel)
    if isinstance(loop, asyncio.BaseEventLoop):
        _running = (loop, wheel)
    return wheel


async def within(timeout: float, awaitable: Awaitable[T]) -> T:  # noqa: ASYNC109
    """Await *awaitable*; raise ``TimeoutError`` after *timeout* seconds.

    Same semantics as ``asyncio.timeout`` (an outside cancellation that
    races the expiry still wins); the expiry is late by at most
    ``TIMEOUT_RESOLUTION``.
    """
    running = _running
    if (
        running is not None
        and running[0]._thread_id == _get_ident()  # type: ignore[attr-defined]
        and (task := _task_of(running[0])) is not None
    ):
        # On the loop of the previous timed attempt (see _running).
        wheel = running[1]
    else:
        loop = _get_running_loop()
        task = _task_of(loop)
        if task is None:  # pragma: no cover - awaited outside a task
            async with asyncio.timeout(timeout):
                return await awaitable
        cached, known = _last_wheel
        if cached is loop and known is not None:
            wheel = known
        else:
            wheel = _wheel_of(loop)
    cancelling = task.cancelling()
    # The attempt goes to the bucket whose timer fires first at or after
    # its deadline (the previous one, mostly); the awaitable is its key.
    clock = wheel._time  # an attribute, not a method: no method lookup
    deadline = clock() + timeout
    bucket = (
        wheel._last
        if wheel._low <= deadline <= wheel._high
        else wheel.bucket(int(deadline * _TICKS_PER_SECOND) + 1)
    )
    bucket[awaitable] = task
    try:
        return await awaitable
    except asyncio.CancelledError as exc:
        raise wheel.expired(awaitable, task, cancelling, exc)  # noqa: B904
    finally:
        bucket.pop(awaitable, None)
        if wheel.fired:
            wheel.fired.discard(awaitable)


# -- settings ----------------------------------------------------------------


class Settings:
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
        previous: Settings | None = None,
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
        # The call plan (module docstring): "general" keys of CALL_PLAN.
        extras = self.chaos or self.bulkhead or self.deadline
        self.plain = not (self.timed or extras)
        # Only slow-call timing: a lighter path than every feature's.
        self.timed_only = self.timed and not extras


# -- one attempt -------------------------------------------------------------


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


class AttemptRunner:
    """Single attempts of one policy, from admission to record; no retry.

    ``Policy`` is the one subclass: it sets ``name``, ``_gate`` and ``_s``
    (the :class:`Settings` in force) and adds retries on top. Each method
    here runs or settles exactly one attempt; a counted failure is recorded
    and raised for the caller's retry loop to judge.
    """

    name: str
    _gate: Gate
    _s: Settings

    async def _attempt_timed(
        self,
        s: Settings,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        """Attempt 1 of the timed-only variant: slow-call timing only."""
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
                result = await within(s.timeout, fn(*args, **kwargs))
        except BaseException as exc:
            error: BaseException = exc
        else:
            gate.success(ticket, time.perf_counter() - started)
            return result
        self._settle(s, ticket, error, time.perf_counter() - started, 1)
        raise error

    async def _attempt_async(
        self,
        s: Settings,
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
                        await self._inject_async(s.chaos)
                    result = await fn(*args, **kwargs)
                else:
                    result = await within(
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
                held: Any = (result, PendingVerdict(self, s, ticket, duration))
                return held  # type: ignore[no-any-return]
            gate.success(ticket, duration)
            if attempt_observer is not None:
                attempt_observer(self.name, duration, "success", None)
            return result
        duration = time.perf_counter() - started
        self._settle(s, ticket, error, duration, number)
        raise error

    def _attempt_sync(
        self,
        s: Settings,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        number: int,
        ticket: int | None = None,
        defer: bool = False,
    ) -> T:
        """The sync twin of :meth:`_attempt_async` (no timeout)."""
        gate = self._gate
        if ticket is None:
            ticket = gate.admit()
        bulkhead = s.bulkhead
        if bulkhead is not None:
            self._take_slot_sync(bulkhead, ticket)
        watching = attempt_observer
        timed = s.timed or watching is not None
        started = time.perf_counter() if timed else 0.0
        try:
            try:
                if s.chaos is not None:
                    self._inject_sync(s.chaos)
                result = fn(*args, **kwargs)
            finally:
                if bulkhead is not None:
                    bulkhead.release()
        except BaseException as exc:
            error: BaseException = exc
        else:
            if defer:
                duration = time.perf_counter() - started if timed else 0.0
                held: Any = (result, PendingVerdict(self, s, ticket, duration))
                return held  # type: ignore[no-any-return]
            if timed:
                duration = time.perf_counter() - started
                gate.success(ticket, duration)
                if watching is not None:
                    watching(self.name, duration, "success", None)
            else:
                gate.success(ticket)
            return result
        duration = time.perf_counter() - started if timed else 0.0
        self._settle(s, ticket, error, duration, number)
        raise error

    def _settle(
        self,
        s: Settings,
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
        outcome: Outcome
        if verdict == COUNTED:
            gate.failure(
                ticket, error, _cause_of(error, s.config.kind), duration
            )
            outcome = "failure"
        elif verdict == IGNORED:
            gate.success(ticket, duration)
            outcome = "ignored"
        else:
            gate.release(ticket)
            cancelled = not isinstance(error, Exception)
            outcome = "cancelled" if cancelled else "neutral"
        observer = attempt_observer
        if observer is not None:
            observer(self.name, duration, outcome, error)
        if verdict == COUNTED and number < s.attempts and gate.rejecting():
            refusal = gate.refusal()
            raise refusal from error

    # -- bulkhead slots ------------------------------------------------------

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
        if _hooks.REJECTED:
            _hooks.rejected(self.name, "bulkhead", 0.0)
        return BulkheadFullError(
            self.name, bulkhead.limit, time.monotonic() - started_wait
        )

    # -- chaos ---------------------------------------------------------------

    async def _chaotic(
        self,
        s: Settings,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        """The call, preceded by injected faults when chaos is on."""
        if s.chaos is not None:
            await self._inject_async(s.chaos)
        return await fn(*args, **kwargs)

    async def _inject_async(self, chaos: ChaosConfig) -> None:
        if chaos.latency and random.random() < chaos.latency_rate:  # noqa: S311
            self._injected_latency(chaos)
            await asyncio.sleep(chaos.latency)
        if random.random() < chaos.failure_rate:  # noqa: S311
            raise self._injected_error()

    def _inject_sync(self, chaos: ChaosConfig) -> None:
        if chaos.latency and random.random() < chaos.latency_rate:  # noqa: S311
            self._injected_latency(chaos)
            # Real latency even in the testing mode, like the async path:
            # that mode only removes the waits between retries.
            time.sleep(chaos.latency)
        if random.random() < chaos.failure_rate:  # noqa: S311
            raise self._injected_error()

    def _injected_latency(self, chaos: ChaosConfig) -> None:
        logger.info(
            "chaos_injected",
            breaker=self.name,
            fault="latency",
            latency=chaos.latency,
        )

    def _injected_error(self) -> ChaosError:
        logger.info("chaos_injected", breaker=self.name, fault="error")
        return ChaosError(self.name)


async def acall_once(
    runner: AttemptRunner,
    fn: Callable[..., Awaitable[T]],
    /,
    *args: Any,
    **kwargs: Any,
) -> T:
    """Await ``fn(*args, **kwargs)`` as one attempt of *runner*, never retried.

    The seam for integrations whose operation must not be repeated by the
    policy: a statement on a connection inside a transaction (the postgres
    integration), where after an error the server aborts the transaction
    and a retry would only meet that. Everything else of an attempt
    applies as in ``Policy.acall`` (admission, bulkhead, chaos, timeout,
    slow-call timing, attempt hooks); the outcome is classified and
    recorded as for any attempt, and its error raised as it is.

    Args:
        runner: The policy (a ``Policy`` is an :class:`AttemptRunner`).
        fn: The operation; awaited once at most.
        *args: Positional arguments for ``fn``.
        **kwargs: Keyword arguments for ``fn``.

    Raises:
        CircuitOpenError: The circuit refused the attempt.
        BulkheadFullError: Too many attempts in flight.
        TimeoutError: The attempt exceeded ``timeout``.
        Exception: ``fn``'s own error.
    """
    s = runner._s
    # Numbered as the last attempt: a failure never turns into a refusal.
    return await runner._attempt_async(s, fn, args, kwargs, s.attempts)


class PendingVerdict:
    """The outcome, still to come, of an attempt that returned a result.

    Returned by :meth:`Policy.acall_deferred` and
    :meth:`Policy.call_deferred`. The first call of :meth:`success`,
    :meth:`failure` or :meth:`release` settles it; later calls do nothing.
    Thread-safe.

    .. versionadded:: 0.2.0
    """

    __slots__ = ("_duration", "_lock", "_runner", "_settings", "_ticket")

    def __init__(
        self,
        runner: AttemptRunner,
        settings: Settings,
        ticket: int,
        duration: float,
    ) -> None:
        self._runner: AttemptRunner | None = runner
        self._settings = settings
        self._ticket = ticket
        self._duration = duration
        self._lock = threading.Lock()

    def _take(self) -> AttemptRunner | None:
        with self._lock:
            runner, self._runner = self._runner, None
        return runner

    @property
    def settled(self) -> bool:
        """Whether the verdict was given."""
        return self._runner is None

    def success(self) -> None:
        """The work finished well: a success for the breaker."""
        runner = self._take()
        if runner is not None:
            runner._gate.success(self._ticket, self._duration)
            observer = attempt_observer
            if observer is not None:
                observer(runner.name, self._duration, "success", None)

    def failure(self, exc: BaseException) -> None:
        """The work failed with *exc*: judged as any attempt's error.

        A counted failure counts (never retried: the result was already
        handed out); a caller fault is a success; a programming error or
        a cancellation leaves no trace but the freed probe slot.
        """
        runner = self._take()
        if runner is not None:
            s = self._settings
            runner._settle(s, self._ticket, exc, self._duration, s.attempts)

    def release(self) -> None:
        """No verdict: free the attempt's probe slot, count nothing."""
        runner = self._take()
        if runner is not None:
            runner._gate.release(self._ticket)
            observer = attempt_observer
            if observer is not None:
                observer(runner.name, self._duration, "neutral", None)
