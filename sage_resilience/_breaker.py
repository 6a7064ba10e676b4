"""Async-correct admission in front of a pybreaker circuit breaker.

pybreaker keeps the circuit state (its storage, counters, transitions and
listeners are the source of truth), but its ``call()`` holds a lock for the
whole protected call, does not understand coroutines, lets every concurrent
caller through while half-open and counts cancellation as a failure. So the
work is split in two:

1. :meth:`Gate.admit` decides *before* the call, in a few instructions on
   the closed path and under a short lock otherwise: closed -> go; open ->
   refuse until the recovery timeout has elapsed, then move pybreaker to
   half-open; half-open -> hand out at most ``half_open_max_calls`` probe
   slots. It returns a ticket naming the circuit generation it was admitted
   in.
2. The call runs outside every lock. Its outcome is then recorded into
   pybreaker by running pybreaker's own state machine on a trivial function
   (:meth:`Gate.success` / :meth:`Gate.failure`), unless the circuit has
   changed generation since admission: a late outcome of a call admitted
   before a trip is never mistaken for a probe's verdict. A cancelled call
   only gives its probe slot back (:meth:`Gate.release`).

Transitions are observed through a pybreaker listener, whichever way they
happen (our gate, ``breaker.open()`` by a user, a shared storage), and
reported as ``circuit_state_changed`` after the lock is released.

With a shared storage (:class:`~sage_resilience._storage.SharedStorage`,
backends ``sqlite`` and ``redis``) the gate still decides locally and never
waits for the store; what the fleet must agree on goes through the store's
atomic operations, sent from the gate's slow paths:

* a counted failure while closed is counted by the store (fleet-wide); the
  store opens the circuit when its count reaches the threshold and this
  gate follows when the answer comes back (well under a millisecond on a
  local Redis), so the success path of a closed circuit stays storage-free;
  ``failure_threshold`` consecutive failures seen here open it at once
  (a fast flood does not wait for the store), and the store follows;
* a probe needs one of the fleet's ``half_open_max_calls`` slots, claimed
  in the store as a lease: the first call past the recovery time waits
  for the claim's answer (awaits it on the async path, at most
  :data:`CLAIM_WAIT` on the sync path; a sync call on an event loop's
  thread is refused instead) and is the probe if it was granted;
* local transitions (a rate-window trip, a probe's verdict, an operator's
  open/close) happen at once and are confirmed by the store: only the
  process whose operation made the transition logs
  ``circuit_state_changed``, the others adopt it silently
  (``circuit_state_synced``, debug level);
* while the store is degraded the gate works exactly as with the memory
  storage, and on recovery adopts what the store holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Final

import pybreaker

from sage_resilience._classify import retry_after_of
from sage_resilience._events import StateChange, iso, logger
from sage_resilience._redact import MAX_TEXT, redact, secrets_of
from sage_resilience._storage.machine import _ms
from sage_resilience._storage.shared import _on_event_loop
from sage_resilience._window import TICKER
from sage_resilience.exceptions import CircuitOpenError, RefusalInfo

if TYPE_CHECKING:
    from collections.abc import Callable

    from sage_resilience._config import PolicyConfig
    from sage_resilience._storage import Outcome, SharedStorage, View
    from sage_resilience._window import SlidingWindow

__all__ = ["CLOSED", "HALF_OPEN", "OPEN", "Gate"]

CLOSED: Final = pybreaker.STATE_CLOSED
OPEN: Final = pybreaker.STATE_OPEN
HALF_OPEN: Final = pybreaker.STATE_HALF_OPEN

#: The clock a gate reads unless a test gives it another: every time a
#: gate keeps is on it, so stepping the wall clock moves no deadline.
#: Wall-clock times exist only at the edges: what is shown (status,
#: events) and what is shared with other processes (a store's times).
_LOCAL_CLOCK: Final = time.monotonic

#: How far the wall clock may run ahead of the local clock's progress
#: before a gate takes it as stepped (drift is a few microseconds a second).
_WALL_SLACK: Final = 0.001

_CANONICAL: Final = {state: state for state in (CLOSED, OPEN, HALF_OPEN)}

#: Tickets are ``generation << 1 | is_probe``: one int, no allocation.
_PROBE: Final = 1

_RATE_BUCKETS: Final = 60


#: How many counted-failure times a gate keeps.
_FAILURE_TIMES = 256


def _noop() -> None:
    return None


class _Synced:
    """A transition adopted from the shared storage (made elsewhere)."""

    __slots__ = ("breaker", "new_state", "old_state", "storage")

    def __init__(
        self, breaker: str, old_state: str, new_state: str, storage: str
    ) -> None:
        self.breaker = breaker
        self.old_state = old_state
        self.new_state = new_state
        self.storage = storage

    def emit(self) -> None:
        logger.debug(
            "circuit_state_synced",
            breaker=self.breaker,
            old_state=self.old_state,
            new_state=self.new_state,
            storage=self.storage,
        )


#: Why the store's answer moved this gate when this process's operation
#: made the transition there.
_MADE_HERE: Final = {
    (CLOSED, OPEN): "consecutive_failures",
    (OPEN, HALF_OPEN): "recovery_timeout_elapsed",
    (HALF_OPEN, CLOSED): "probe_succeeded",
    (HALF_OPEN, OPEN): "probe_failed",
}


def _raise(exc: BaseException) -> None:
    raise exc


def describe_failure(exc: BaseException) -> str:
    """``"ExcType: message"`` with secrets redacted, for status and events."""
    name = type(exc).__name__
    try:
        # Cut before anything else: a 10 MB message costs no more than
        # a short one.
        text = str(exc)[: 2 * MAX_TEXT].strip().split("\n", 1)[0]
    except Exception:  # a broken __str__ must not replace the error
        text = "<message could not be printed>"
    if not text:
        return name
    return f"{name}: {redact(text, known=secrets_of(exc))}"[:500]


class _RateCounter:
    """Counted failures in the last 60 s, in 60 one-second buckets.

    Constant memory whatever the failure rate.
    """

    __slots__ = ("_counts", "_seconds")

    def __init__(self) -> None:
        self._counts = [0] * _RATE_BUCKETS
        self._seconds = [-1] * _RATE_BUCKETS

    def add(self, now: float) -> None:
        second = int(now)
        i = second % _RATE_BUCKETS
        if self._seconds[i] != second:
            self._seconds[i] = second
            self._counts[i] = 0
        self._counts[i] += 1

    def total(self, now: float) -> int:
        oldest = int(now) - _RATE_BUCKETS
        return sum(
            c
            for c, s in zip(self._counts, self._seconds, strict=True)
            if s > oldest
        )

    def clear(self) -> None:
        self._counts = [0] * _RATE_BUCKETS
        self._seconds = [-1] * _RATE_BUCKETS


class _Listener(pybreaker.CircuitBreakerListener):
    """Mirrors pybreaker transitions into the gate."""

    def __init__(self, gate: Gate) -> None:
        self._gate = gate

    def state_change(
        self,
        cb: pybreaker.CircuitBreaker,  # noqa: ARG002 - pybreaker's signature
        old_state: pybreaker.CircuitBreakerState | None,
        new_state: pybreaker.CircuitBreakerState,
    ) -> None:
        old = old_state.name if old_state is not None else CLOSED
        self._gate._on_transition(old, new_state.name)


class _ClaimWait:
    """The answer to one probe claim, for the callers waiting on it."""

    __slots__ = ("_futures", "_lock", "done")

    def __init__(self) -> None:
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._futures: list[tuple[asyncio.AbstractEventLoop, Any]] = []

    def set(self) -> None:
        """The store answered (backend thread): wake every waiter."""
        with self._lock:
            self.done.set()
            futures, self._futures = self._futures, []
        for loop, future in futures:
            with contextlib.suppress(RuntimeError):  # a closed loop
                loop.call_soon_threadsafe(_resolve, future)

    async def wait(self, bound: float) -> None:
        """Until the answer came, or *bound* seconds."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            if self.done.is_set():
                return
            self._futures.append((loop, future))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bound):
                await future


def _resolve(future: Any) -> None:
    if not future.done():
        future.set_result(None)


class ClaimPending(Exception):  # noqa: N818 - not an error: a wait
    """This caller's probe claim is in flight (``Gate.admit(wait=True)``).

    Await :meth:`admit` for the ticket (or the refusal).
    """

    def __init__(self, gate: Gate, claim: _ClaimWait) -> None:
        super().__init__(gate.name)
        self.gate = gate
        self.claim = claim

    async def admit(self) -> int:
        """The ticket once the store answered (or CircuitOpenError)."""
        await self.claim.wait(CLAIM_WAIT)
        return self.gate.admit()


#: How long the caller that claimed a probe's lease waits for the answer.
CLAIM_WAIT: Final = 0.5


class _GuardedListener(pybreaker.CircuitBreakerListener):
    """A user's listener on ``policy.breaker`` that cannot break the gate.

    pybreaker calls listeners inside its transitions: one that raises
    would leave pybreaker and the gate in different states (a circuit
    wedged half-open) or turn a success into the listener's error. Its
    errors are logged (``listener_failed``, once per listener) and
    swallowed.
    """

    __slots__ = ("_breaker_name", "_inner", "reported")

    def __init__(self, inner: Any, breaker_name: str) -> None:
        self._inner = inner
        self._breaker_name = breaker_name
        self.reported = False

    def _guard(self, method: str, *args: Any, **kwargs: Any) -> None:
        try:
            getattr(self._inner, method)(*args, **kwargs)
        except Exception as exc:
            if not self.reported:
                self.reported = True
                logger.warning(
                    "listener_failed",
                    breaker=self._breaker_name,
                    listener=type(self._inner).__qualname__,
                    method=method,
                    error=describe_failure(exc),
                )

    def before_call(
        self, cb: Any, func: Any, *args: Any, **kwargs: Any
    ) -> None:
        self._guard("before_call", cb, func, *args, **kwargs)

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        self._guard("state_change", cb, old_state, new_state)

    def failure(self, cb: Any, exc: BaseException) -> None:
        self._guard("failure", cb, exc)

    def success(self, cb: Any) -> None:
        self._guard("success", cb)


class _Breaker(pybreaker.CircuitBreaker):
    """pybreaker's breaker whose users' listeners are guarded.

    A listener added with :meth:`add_listener` is kept wrapped in a
    :class:`_GuardedListener` (pybreaker reads its listener list directly
    in some transitions, so the wrapping is done when it is added).
    """

    def add_listener(self, listener: Any) -> None:
        """Register *listener*; its errors never reach the circuit."""
        if not isinstance(listener, _Listener | _GuardedListener):
            listener = _GuardedListener(listener, self.name or "")
        super().add_listener(listener)

    def remove_listener(self, listener: Any) -> None:
        """Unregister *listener* (as it was given to :meth:`add_listener`)."""
        with self._lock:
            for held in self._listeners:
                if held is listener or (
                    isinstance(held, _GuardedListener)
                    and held._inner is listener
                ):
                    self._listeners.remove(held)
                    return
        raise ValueError(listener)


class Gate:
    """Admission, outcome recording and statistics for one policy.

    A gate outlives configuration reloads: :meth:`reconfigure` changes the
    thresholds of the same pybreaker breaker, so the circuit state survives.
    """

    def __init__(
        self,
        name: str,
        config: PolicyConfig,
        *,
        platform: str,
        storage: pybreaker.CircuitBreakerStorage | None = None,
        storage_name: str = "memory",
        clock: Callable[[], float] = _LOCAL_CLOCK,
    ) -> None:
        self.name = name
        self.platform = platform
        self.storage_name = storage_name
        self._clock = clock
        # A wall-clock reading and the local clock at that moment: the
        # wall clock this gate reports never moves back (see _wall()).
        self._wall_base = time.time()
        self._local_base = _LOCAL_CLOCK()
        self._lock = threading.Lock()
        self._pending: list[StateChange | _Synced] = []
        self._refusal_info: RefusalInfo | None = None
        self._reason: str | None = None

        # Circuit state mirrored from pybreaker (read without the lock on
        # the hot path) and the generation, bumped on every transition.
        self._state: str = CLOSED
        self._generation = 0
        self._probes = 0
        self._probe_at = 0.0
        self._half_open_at = 0.0
        # Consecutive counted failures seen here while closed with a
        # shared storage (the store's count is fleet-wide and comes later).
        self._streak = 0
        self._opened_at: float | None = None
        self._forced = False
        # True while closed with a zero failure counter: a success then has
        # nothing to tell pybreaker.
        self._clean = True

        # Statistics (status, metrics, events).
        self.calls = 0
        self.successes = 0
        self.failures = 0
        self.rejections = 0
        self.retries = 0
        self.bulkhead_rejections = 0
        self._open_seconds = 0.0  # closed open periods; never reset
        self._rejected_while_open = 0
        self._rejection_logged = False
        # Epoch times of recent counted failures: the last 5 are reported;
        # more serve failure counts over a window (the compat layer).
        self._recent: deque[float] = deque(maxlen=_FAILURE_TIMES)
        self._rate = _RateCounter()
        self.last_failure: str | None = None
        self.last_cause: str | None = None

        # Adaptive open time (recovery_backoff).
        self._closed_at: float | None = None
        self.current_recovery_timeout = config.recovery_timeout
        # The open time recovery_backoff plans, before a Retry-After.
        self._backoff_timeout = config.recovery_timeout
        # The Retry-After of the failure being recorded (it may open).
        self._asked: float | None = None
        self.window: SlidingWindow | None = None

        # Shared storage: the store's view being adopted, whether the
        # transition is someone else's, probe leases granted by the store
        # (token, usable until) and held by running probes, claim state.
        self._shared: SharedStorage | None = None
        self._adopting: View | None = None
        self._silent = False
        self._lease_pool: list[tuple[str, float]] = []
        self._leases: list[str] = []
        self._claiming = False
        self._claim_wait: _ClaimWait | None = None
        self._next_claim = 0.0
        self._diverged = False  # transitions logged while degraded

        self._storage = storage or pybreaker.CircuitMemoryStorage(CLOSED)
        self.breaker: pybreaker.CircuitBreaker = _Breaker(
            fail_max=config.failure_threshold,
            reset_timeout=config.recovery_timeout,
            success_threshold=config.success_threshold,
            listeners=[_Listener(self)],
            state_storage=self._storage,
            name=name,
            throw_new_error_on_trip=False,
        )
        self.config = config
        self.reconfigure(config)
        from sage_resilience._storage import SharedStorage  # noqa: PLC0415

        if isinstance(self._storage, SharedStorage):
            self._shared = self._storage
            loaded = self._shared.bind(self)
            if loaded is not None:
                with self._lock:
                    self._apply_view(loaded, reason="storage", silent=True)
                    events = self._take_events()
                self._emit(events)
                return
        self._adopt_storage_state()

    # -- configuration ----------------------------------------------------

    def reconfigure(self, config: PolicyConfig) -> None:
        """Apply new settings; the circuit state is kept."""
        from sage_resilience._window import SlidingWindow  # noqa: PLC0415

        with self._lock:
            old = self.config
            self.config = config
            self.breaker.fail_max = config.failure_threshold
            self.breaker.success_threshold = config.success_threshold
            if (
                old.recovery_timeout != config.recovery_timeout
                or old.recovery_backoff != config.recovery_backoff
                or (self.window is None and config.trip is not None)
            ):
                self.current_recovery_timeout = config.recovery_timeout
                self._backoff_timeout = config.recovery_timeout
            self.breaker.reset_timeout = self.current_recovery_timeout
            if self._state == OPEN and self._opened_at is not None:
                self._probe_at = (
                    self._opened_at + self.current_recovery_timeout
                )
            trip = config.trip
            if trip is None:
                self.window = None
            elif self.window is None or self.window.config != trip:
                self.window = SlidingWindow(trip)
            self._clean = self._state == CLOSED and not self.failure_count

    def _adopt_storage_state(self) -> None:
        """Start from what the storage holds (a persisted open circuit)."""
        state = self._storage.state
        if state == CLOSED:
            return
        opened = self._storage.opened_at
        with self._lock:
            self._state = _CANONICAL[state]
            self._clean = False
            if opened is not None:
                self._opened_at = self._from_wall(opened.timestamp())
                self._probe_at = (
                    self._opened_at + self.current_recovery_timeout
                )
            if state == HALF_OPEN:
                # Whoever held the probe slots is gone: start over.
                self._probe_at = self._clock()
                self._state = OPEN

    # -- admission --------------------------------------------------------

    def admit(self, wait: bool = False) -> int:
        """Admit one attempt or raise :class:`CircuitOpenError`.

        With a shared storage, the first caller past the recovery time
        claims the probe's lease and is the probe if it is granted: a sync
        caller off the event loop waits for the answer (at most
        :data:`CLAIM_WAIT`); with *wait* (async callers) :class:`ClaimPending`
        is raised instead, to be awaited.

        Returns:
            The ticket to hand back to :meth:`success`, :meth:`failure` or
            :meth:`release`.
        """
        # The generation is read before the state: a transition in between
        # makes the ticket stale, never a ticket of the wrong state.
        generation = self._generation
        state = self._state
        if state is CLOSED:
            self.calls += 1
            return generation << 1
        if state is OPEN:
            # Refusing needs no lock: nothing but counters changes.
            now = self._clock()
            if self._forced or now < self._probe_at:
                raise self._reject(now)
        return self._admit_slow(wait)

    def _admit_slow(self, wait: bool = False, again: bool = False) -> int:
        with self._lock:
            state = self._state
            if state == CLOSED:
                self.calls += 1
                return self._generation << 1
            now = self._clock()
            shared = self._live()
            claimed = False
            if state == OPEN and not self._forced and now >= self._probe_at:
                if shared is None:
                    self._reason = "recovery_timeout_elapsed"
                    self.breaker.half_open()
                    state = self._state
                else:
                    # The store moves us to half-open with a lease.
                    claimed = self._claim(shared, now)
            token = None
            probe = (
                state == HALF_OPEN
                and self._probes < self.config.half_open_max_calls
            )
            if probe and shared is not None:
                token = self._take_lease(now)
                if token is None:
                    claimed = self._claim(shared, now) or claimed
                    probe = False
            claim = self._claim_wait if claimed and not again else None
            if claim is not None and not wait and _on_event_loop():
                claim = None  # a sync call on a loop thread never blocks
            if probe:
                self._probes += 1
                self.calls += 1
                ticket = self._generation << 1 | _PROBE
                if shared is not None and token is not None:
                    self._leases.append(token)
                    shared.push_hold(
                        token, self._wall(), ttl=self._lease_ttl()
                    )
            elif claim is not None:
                ticket = -2  # the claim is in flight: wait for it
            else:
                if (
                    state == HALF_OPEN
                    and (shared is None or self._probes)
                    and now - self._half_open_at >= self._probe_wait()
                ):
                    # The probes hang: they lose their slots, and the
                    # circuit opens again (their late verdicts are stale).
                    # With a store their leases have expired there too;
                    # the next claim after the open time probes again.
                    self._reason = "half_open_timeout"
                    self.breaker.open()
                ticket = -1
                error = self._reject(now)
            events = self._take_events()
        self._emit(events)
        if ticket == -2 and claim is not None:
            if wait:
                raise ClaimPending(self, claim)
            claim.done.wait(CLAIM_WAIT)
            return self._admit_slow(again=True)
        if ticket < 0:
            raise error
        return ticket

    def _probe_wait(self) -> float:
        """How long half-open waits for its probes' verdicts."""
        wait = self.config.half_open_max_wait
        if wait is not None:
            return wait
        from sage_resilience._storage import LEASE_RESERVE  # noqa: PLC0415

        timeout = self.config.timeout
        return max(LEASE_RESERVE, timeout or self.current_recovery_timeout)

    def _live(self) -> SharedStorage | None:
        """The shared storage, unless it is degraded (or there is none)."""
        shared = self._shared
        if shared is None or shared.degraded:
            return None
        return shared

    def _lease_ttl(self) -> float:
        # A shared store's lease expires like a memory gate's wait.
        return self._probe_wait()

    def _take_lease(self, now: float) -> str | None:
        """A probe slot granted by the store, or None."""
        pool = self._lease_pool
        while pool:
            token, usable_until = pool.pop()
            if now < usable_until:
                return token
        return None

    def _claim(self, shared: SharedStorage, now: float) -> bool:
        """Ask the store for a probe slot, one request at a time.

        Returns:
            Whether this call sent the claim (its caller may wait for it).
        """
        if self._claiming or now < self._next_claim:
            return False
        from sage_resilience._storage import (  # noqa: PLC0415
            LEASE_RESERVE,
            new_token,
        )

        self._claiming = True
        self._claim_wait = _ClaimWait()
        shared.push_claim(
            self._wall(),
            max_calls=self.config.half_open_max_calls,
            ttl=LEASE_RESERVE,
            token=new_token(),
        )
        return True

    def _reject(self, now: float) -> CircuitOpenError:
        self.rejections += 1
        if self._state == OPEN:
            self._rejected_while_open += 1
        retry_after = 0.0 if self._forced else max(0.0, self._probe_at - now)
        if not self._rejection_logged and self._state == OPEN:
            self._rejection_logged = True
            logger.warning(
                "call_rejected",
                breaker=self.name,
                retry_after=round(retry_after, 3),
                forced=self._forced,
            )
        info = self._refusal_info
        if info is None:
            info = self._refusal_info = RefusalInfo(
                self.name,
                self.failure_count,
                self.last_failure,
                self.last_cause,
                self._state,
                self._forced,
            )
        return CircuitOpenError._from_info(info, retry_after)

    def rejecting(self) -> bool:
        """Whether the next attempt would be refused (no side effects)."""
        state = self._state
        if state is CLOSED:
            return False
        if state == OPEN:
            return self._forced or self._clock() < self._probe_at
        return self._probes >= self.config.half_open_max_calls

    def refusal(self) -> CircuitOpenError:
        """The error a refused attempt gets, without counting a rejection."""
        return CircuitOpenError(
            self.name,
            retry_after=self.retry_after(),
            failure_count=self.failure_count,
            last_failure=self.last_failure,
            last_cause=self.last_cause,
            state=self._state,
            forced=self._forced,
        )

    # -- outcomes ---------------------------------------------------------

    def success(self, ticket: int, duration: float = 0.0) -> None:
        """Record a success (or an ignored exception) of an admitted call."""
        self.successes += 1
        window = self.window
        if ticket == self._generation << 1 and self._clean:
            if window is None:
                return
            # A success that cannot open the circuit is counted without the
            # lock (SlidingWindow.add_success, inlined: this is on every
            # call of a policy with trip:). While the ticker keeps the
            # window's buckets current, not even the clock is read.
            if duration <= window._slow_after and (
                window.fast_now or self._clock() < window._fast_until
            ):
                window._calls[window._slot] += 1
                return
        with self._lock:
            if not self._current(ticket):
                return  # a late outcome from an earlier circuit generation
            shared = self._live()
            token = None
            tripped = had_failures = False
            if ticket & _PROBE:
                self._probes -= 1
                self._reason = "probe_succeeded"
                token = self._leases.pop() if self._leases else None
            elif window is not None and self._window_verdict(
                window, failed=False, duration=duration
            ):
                self._reason = self._window_reason
                self.breaker.open()
                tripped = True
            if self._state == CLOSED:
                self._streak = 0
            if self._state != OPEN and not self._clean:
                had_failures = self._state == CLOSED
                self.breaker.call(_noop)
                self._clean = self._state == CLOSED
            events = self._take_events()
            if shared is not None:
                events = self._push_success(
                    shared, token, events, tripped=tripped, reset=had_failures
                )
        self._emit(events)

    def _push_success(
        self,
        shared: SharedStorage,
        token: str | None,
        events: list[StateChange | _Synced],
        *,
        tripped: bool,
        reset: bool,
    ) -> list[StateChange | _Synced]:
        """Tell the store about a success; the events it now owns go."""
        now = self._wall()
        if token is not None:
            shared.push_verdict(
                token,
                now,
                ok=True,
                success_threshold=self.config.success_threshold,
                open_for=self.current_recovery_timeout,
                events=events,
            )
            return []
        if tripped:
            shared.push_open(
                now,
                open_for=self.current_recovery_timeout,
                forced=False,
                events=events,
            )
            return []
        if reset:
            shared.push_success(now)
        return events

    def failure(
        self,
        ticket: int,
        exc: BaseException,
        cause: str | None = None,
        duration: float = 0.0,
    ) -> None:
        """Record a counted failure of an admitted call."""
        now = self._clock()
        asked = retry_after_of(exc)
        with self._lock:
            self.failures += 1
            self._recent.append(now)
            self._rate.add(now)
            self.last_failure = describe_failure(exc)
            self.last_cause = cause
            self._refusal_info = None
            if not self._current(ticket):
                return  # late: the circuit has moved on without it
            self._clean = False
            # Should this failure open the circuit, it stays open as long
            # as the answer asked (Retry-After); see _open_time().
            self._asked = asked
            shared = self._live()
            token = None
            if ticket & _PROBE:
                self._probes -= 1
                self._reason = "probe_failed"
                token = self._leases.pop() if self._leases else None
            else:
                self._reason = "consecutive_failures"
            if shared is not None and not ticket & _PROBE:
                tripped = self._count_shared(shared, exc, now)
            else:
                tripped = False
                # pybreaker counts it (and may open), then re-raises it.
                with contextlib.suppress(BaseException):
                    self.breaker.call(_raise, exc)
            window = self.window
            if (
                window is not None
                and not ticket & _PROBE
                and self._state == CLOSED
                and self._window_verdict(
                    window, failed=True, duration=duration
                )
            ):
                self._reason = self._window_reason
                self.breaker.open()
                tripped = True
            self._asked = None
            events = self._take_events()
            if shared is not None and token is not None:
                shared.push_verdict(
                    token,
                    self._wall(),
                    ok=False,
                    success_threshold=self.config.success_threshold,
                    open_for=self.current_recovery_timeout,
                    events=events,
                )
                events = []
            elif shared is not None and tripped:
                shared.push_open(
                    self._wall(),
                    open_for=self.current_recovery_timeout,
                    forced=False,
                    events=events,
                )
                events = []
        self._emit(events)

    def _count_shared(
        self, shared: SharedStorage, exc: BaseException, now: float
    ) -> bool:
        """Count a failure while closed with a store; True: opened here.

        ``failure_threshold`` consecutive failures seen here open the
        circuit at once (a fast flood would otherwise reach the dependency
        until the store's answer is back), and the store follows; fewer
        go to the store, which counts them fleet-wide and opens at the
        threshold (lock held).
        """
        self._streak += 1
        if self._streak >= self.config.failure_threshold:
            shared.set_counts(
                max(self.failure_count, self._streak),
                int(shared.success_counter),
            )
            self.breaker.open()
            return True
        reason = "consecutive_failures"
        shared.push_failure(
            exc,
            self._wall(),
            threshold=self.config.failure_threshold,
            open_for=self._open_time(
                self._next_recovery_timeout(CLOSED, now, reason), reason
            ),
            generation=self._generation,
        )
        return False

    def _current(self, ticket: int) -> bool:
        """Whether *ticket*'s outcome may still change the circuit.

        Only outcomes of the generation they were admitted in count, and
        only in the state they were admitted for: probes while half-open,
        ordinary calls while closed (pybreaker would otherwise take them
        for the other kind).
        """
        if ticket >> 1 != self._generation:
            return False
        if ticket & _PROBE:
            return self._state == HALF_OPEN
        return self._state == CLOSED

    def release(self, ticket: int) -> None:
        """Give back the probe slot of a cancelled call; nothing is counted."""
        self.calls -= 1
        if not ticket & _PROBE:
            return
        with self._lock:
            if ticket >> 1 == self._generation:
                self._probes -= 1
                shared = self._live()
                if self._leases and shared is not None:
                    shared.push_release(self._leases.pop(), self._wall())

    _window_reason = "failure_rate"

    def _window_verdict(
        self, window: SlidingWindow, *, failed: bool, duration: float
    ) -> bool:
        """Record into the rate window; True when it says: open."""
        # Only a gate on the real clock lets the ticker move its buckets
        # (tests swap in a clock of their own).
        window.ticked = self._clock is _LOCAL_CLOCK
        was_fast = window.fast_now
        reason = window.record(self._clock(), failed=failed, duration=duration)
        if window.fast_now and not was_fast:
            TICKER.watch(self)  # (again): the next bucket end is now due
        if reason is None:
            return False
        self._window_reason = reason
        return True

    def _window_tick(self, now: float) -> float | None:
        """Called by the ticker thread: move the window to *now*'s bucket.

        Returns:
            When the next tick is due, or None when none is needed.
        """
        window = self.window
        if window is None or not window.ticked:
            return None
        with self._lock:
            if self.window is not window:
                return None
            if self._clock is not _LOCAL_CLOCK:
                window.ticked = window.fast_now = False
                return None
            return window.tick(now)

    # -- operator controls -------------------------------------------------

    def force_open(self) -> None:
        """Open until :meth:`force_close`; no automatic half-open.

        With a shared storage the whole fleet follows; called outside an
        event loop it returns once the store has it (at most 2 s).
        """
        op = None
        with self._lock:
            self._forced = True
            self._reason = "forced"
            if self._state == OPEN:
                self._probe_at = float("inf")
                self._refusal_info = None
            else:
                self.breaker.open()
            events = self._take_events()
            shared = self._live()
            if shared is not None:
                op = shared.push_open(
                    self._wall(),
                    open_for=self.current_recovery_timeout,
                    forced=True,
                    events=events,
                    wait=not _on_event_loop(),
                )
                events = []
        self._emit(events)
        if op is not None and self._shared is not None:
            self._shared.wait(op)

    def force_close(self, reason: str = "forced") -> None:
        """Close the circuit (also ends a forced open).

        With a shared storage the whole fleet follows (see
        :meth:`force_open`).
        """
        op = None
        with self._lock:
            self._forced = False
            self._reason = reason
            if self._state != CLOSED:
                self.breaker.close()
            events = self._take_events()
            shared = self._live()
            if shared is not None:
                op = shared.push_close(
                    self._wall(),
                    reset=reason == "reset",
                    events=events,
                    wait=not _on_event_loop(),
                )
                events = []
        self._emit(events)
        if op is not None and self._shared is not None:
            self._shared.wait(op)

    def reset(self) -> None:
        """Close and clear every counter and statistic."""
        self.force_close(reason="reset")
        with self._lock:
            self._storage.reset_counter()
            self._storage.reset_success_counter()
            self._clean = True
            self.calls = self.successes = self.failures = 0
            self.rejections = self.retries = self.bulkhead_rejections = 0
            self._rejected_while_open = 0
            self._recent.clear()
            self._rate.clear()
            self.last_failure = self.last_cause = None
            self.current_recovery_timeout = self.config.recovery_timeout
            self._backoff_timeout = self.config.recovery_timeout
            self.breaker.reset_timeout = self.current_recovery_timeout
            self._closed_at = None
            if self.window is not None:
                self.window.clear()

    # -- transitions --------------------------------------------------------

    def _on_transition(self, old: str, new: str) -> None:
        """Called by pybreaker (under our lock when we caused it)."""
        now = self._clock()
        reason = self._reason or "external"
        self._reason = None
        self._generation += 1
        self._probes = 0
        self._streak = 0
        self._refusal_info = None
        adopting = self._adopting
        if self._shared is not None:
            # Leases belong to the state that granted them.
            self._lease_pool.clear()
            self._leases.clear()
            self._next_claim = 0.0
            if self._shared.degraded and not self._silent:
                self._diverged = True
        if new != OPEN:
            self._forced = False  # e.g. breaker.close() called directly
        rejected: int | None = None
        if old == OPEN:
            rejected = self._rejected_while_open
            if self._opened_at is not None:
                self._open_seconds += max(0.0, now - self._opened_at)
        if new == OPEN:
            if adopting is not None:
                self._adopt_timing(adopting)
            else:
                self._grow_recovery_timeout(old, now, reason)
                self._opened_at = now
                self._probe_at = (
                    float("inf")
                    if self._forced
                    else now + self.current_recovery_timeout
                )
            self._rejected_while_open = 0
            self._rejection_logged = False
            self._clean = False
        elif new == CLOSED:
            self._opened_at = None
            self._closed_at = now
            self._clean = True
        else:
            self._clean = False
            self._half_open_at = now
        if self.window is not None:
            self.window.clear()
        # The constant itself: the hot path compares by identity, and a
        # state read back from a store is an equal but different string.
        self._state = _CANONICAL[new]
        if self._silent:
            self._pending.append(
                _Synced(self.name, old, new, self.storage_name)
            )
            return
        self._pending.append(
            StateChange(
                breaker=self.name,
                old_state=old,
                new_state=new,
                reason=reason,
                failure_count=self.failure_count,
                failure_threshold=self.config.failure_threshold,
                recovery_timeout=self.current_recovery_timeout,
                recent_failures=tuple(
                    self._to_wall(t) for t in tuple(self._recent)[-5:]
                ),
                failure_rate_per_min=self._rate.total(now),
                last_failure=self.last_failure,
                last_cause=self.last_cause,
                rejected_while_open=rejected,
                platform=self.platform,
                open_for=self.current_recovery_timeout
                if new == OPEN and not self._forced
                else None,
            )
        )

    def _grow_recovery_timeout(
        self, old: str, now: float, reason: str
    ) -> None:
        self._backoff_timeout = self._next_recovery_timeout(old, now, reason)
        self.current_recovery_timeout = self._open_time(
            self._backoff_timeout, reason
        )
        self.breaker.reset_timeout = self.current_recovery_timeout

    def _open_time(self, planned: float, reason: str) -> float:
        """How long to stay open: what the provider asked, else *planned*.

        The failure that opens the circuit may carry a ``Retry-After``
        (429/503): the circuit then opens for that long, at most
        ``max(recovery_timeout, recovery_backoff.max)``.
        """
        asked = self._asked
        if asked is None or reason == "forced":
            return planned
        config = self.config
        cap = config.recovery_timeout
        if config.recovery_backoff is not None:
            cap = max(cap, config.recovery_backoff.max)
        return min(asked, cap)

    def _next_recovery_timeout(
        self, old: str, now: float, reason: str
    ) -> float:
        """How long the circuit would stay open if it opened now."""
        backoff = self.config.recovery_backoff
        base = self.config.recovery_timeout
        if backoff is None or reason == "forced":
            return base
        stable = base * backoff.multiplier
        retrip = old == HALF_OPEN or (
            self._closed_at is not None and now - self._closed_at < stable
        )
        if not retrip:
            return base
        return min(self._backoff_timeout * backoff.multiplier, backoff.max)

    # -- shared storage (called from the storage's thread) -------------------

    def _apply_view(self, view: View, *, reason: str, silent: bool) -> None:
        """Make the local circuit what *view* says (lock held)."""
        assert self._shared is not None
        self._forced = view.forced
        target = view.state
        # The counts first: the transition's event reports them.
        self._shared.set_counts(view.counter, view.successes)
        if target != self._state:
            self._adopting = view
            self._silent = silent
            self._reason = reason
            try:
                if self.breaker._state.name == target:
                    # pybreaker already holds it (a state loaded at start).
                    self._on_transition(self._state, target)
                elif target == OPEN:
                    self.breaker.open()
                elif target == HALF_OPEN:
                    self.breaker.half_open()
                else:
                    self.breaker.close()
            finally:
                self._adopting = None
                self._silent = False
                self._reason = None
        elif target == OPEN:
            self._adopt_timing(view)
        # pybreaker zeroes them on some transitions: the store's win.
        self._shared.set_counts(view.counter, view.successes)
        self._clean = self._state == CLOSED and view.counter == 0
        if self._clean:
            self._streak = 0

    def _adopt_timing(self, view: View) -> None:
        """Open since and until when the store says (lock held)."""
        import datetime as dt  # noqa: PLC0415

        self._opened_at = self._from_wall(view.opened_at / 1000)
        self._storage.opened_at = dt.datetime.fromtimestamp(
            view.opened_at / 1000, tz=dt.UTC
        )
        self._refusal_info = None
        if view.forced:
            self._probe_at = float("inf")
            return
        self._probe_at = self._from_wall(view.probe_at / 1000)
        open_for = (view.probe_at - view.opened_at) / 1000
        if open_for > 0:
            self.current_recovery_timeout = open_for
            self._backoff_timeout = open_for
            self.breaker.reset_timeout = open_for

    def _storage_sync(
        self,
        view: View,
        *,
        ours: bool,
        events: list[Any],
        resync: bool = False,
    ) -> None:
        """The store answered one of our operations, or sent news."""
        shared = self._shared
        assert shared is not None
        with self._lock:
            out: list[StateChange | _Synced] = []
            if ours:
                # This process's operation made the transition: log it.
                if not events and view.state == self._state:
                    events = shared.steal_events(view.state)
                out.extend(events)
                if view.state == self._state == OPEN:
                    # Opened here and confirmed: the store's times are
                    # what the fleet shows.
                    self._adopt_timing(view)
                if view.state != self._state:
                    self._apply_view(
                        view,
                        reason=_MADE_HERE.get(
                            (self._state, view.state), "storage"
                        ),
                        silent=bool(events),
                    )
            elif not shared.optimistic():
                # Not ours (or lost a race): adopt, unless a local
                # transition of ours is still on its way to the store.
                self._apply_view(
                    view,
                    reason="storage_resync",
                    silent=not (resync and self._diverged),
                )
                self._next_claim = 0.0
            if resync:
                self._diverged = False
            out.extend(self._take_events())
        self._emit(out)

    def _storage_claimed(
        self, outcome: Outcome | None, token: str, ttl_ms: int
    ) -> None:
        """The store answered a probe claim (None: it could not)."""
        from sage_resilience._storage import (  # noqa: PLC0415
            CLAIM_RETRY,
            LEASE_IDLE,
        )

        shared = self._shared
        assert shared is not None
        with self._lock:
            self._claiming = False
            claim, self._claim_wait = self._claim_wait, None
            now = self._clock()
            if outcome is None:
                self._next_claim = 0.0
                if claim is not None:
                    claim.set()
                return
            view = outcome.view
            if view.state != self._state and (
                outcome.won or not shared.optimistic()
            ):
                self._apply_view(
                    view,
                    reason="recovery_timeout_elapsed",
                    silent=not outcome.won,
                )
            if outcome.granted and self._state == HALF_OPEN:
                usable = now + min(LEASE_IDLE, ttl_ms / 1000)
                self._lease_pool.append((token, usable))
                self._next_claim = 0.0
            elif not outcome.granted:
                self._next_claim = max(
                    now + CLAIM_RETRY, self._from_wall(outcome.hint / 1000)
                )
            events = self._take_events()
        self._emit(events)
        if claim is not None:
            claim.set()  # the claimant is the probe if it was granted

    def _storage_local_failure(
        self, exc: BaseException, generation: int
    ) -> None:
        """A failure the store never counted: count it here."""
        with self._lock:
            if generation != self._generation or self._state != CLOSED:
                return
            self._reason = "consecutive_failures"
            with contextlib.suppress(BaseException):
                self.breaker.call(_raise, exc)
            events = self._take_events()
        self._emit(events)

    def _storage_snapshot(self) -> View:
        """The local circuit as a view (to seed a store that lost it)."""
        from sage_resilience._storage import View  # noqa: PLC0415

        shared = self._shared
        assert shared is not None
        with self._lock:
            opened = self._opened_at if self._state != CLOSED else None
            probe = (
                _ms(self._to_wall(self._probe_at))
                if self._state == OPEN and not self._forced
                else 0
            )
            return View(
                self._state,
                self.failure_count,
                int(self._storage.success_counter),
                _ms(self._to_wall(opened)) if opened is not None else 0,
                probe,
                self._forced,
                max(shared.seen_version, 0),
            )

    def _take_events(self) -> list[StateChange | _Synced]:
        self._reason = None
        if not self._pending:
            return self._pending
        events, self._pending = self._pending, []
        return events

    @staticmethod
    def _emit(events: list[StateChange | _Synced]) -> None:
        for event in events:
            event.emit()

    # -- clocks -------------------------------------------------------------

    def _wall(self) -> float:
        """Now on the wall clock, for a store: it never moves backwards.

        When the wall clock is stepped back, the time reported goes on
        from the last reading by the local clock's progress, until the
        wall clock catches up; a step forward is taken as it is. A test's
        clock (anything but the default) stands for the wall clock itself.
        """
        if self._clock is not _LOCAL_CLOCK:
            return self._clock()
        now, local = time.time(), _LOCAL_CLOCK()
        expected = self._wall_base + (local - self._local_base)
        if now - expected > _WALL_SLACK:
            # Stepped forward (or drifted): take the new reading.
            self._wall_base, self._local_base = now, local
            return now
        # Within the slack, or stepped back: the same time line, so that
        # times converted back and forth stay put.
        return expected

    def _to_wall(self, local: float) -> float:
        """A time of this gate's clock as a wall-clock (epoch) time."""
        if self._clock is not _LOCAL_CLOCK:
            return local
        self._wall()
        return local + (self._wall_base - self._local_base)

    def _from_wall(self, wall: float) -> float:
        """A wall-clock time (a store's) on this gate's clock."""
        if self._clock is not _LOCAL_CLOCK:
            return wall
        self._wall()
        return wall - (self._wall_base - self._local_base)

    # -- status -------------------------------------------------------------

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half-open"``."""
        return self._state

    @property
    def forced(self) -> bool:
        """Whether an operator forced the circuit open."""
        return self._forced

    @property
    def failure_count(self) -> int:
        """Consecutive counted failures held by pybreaker's storage."""
        return int(self._storage.counter)

    def retry_after(self) -> float:
        """Seconds until a probe is allowed (0 unless open)."""
        if self._state != OPEN or self._forced:
            return 0.0
        return max(0.0, self._probe_at - self._clock())

    def failure_times(self) -> list[float]:
        """Epoch times of the recent counted failures, oldest first."""
        with self._lock:
            return [self._to_wall(t) for t in self._recent]

    def status(self) -> dict[str, Any]:
        """This gate's status entry (see ``docs/operations.md``)."""
        now = self._clock()
        with self._lock:
            window = self.window
            entry: dict[str, Any] = {
                "name": self.name,
                "state": self._state,
                "forced": self._forced,
                "failure_count": self.failure_count,
                "failure_threshold": self.config.failure_threshold,
                "recovery_timeout": self.config.recovery_timeout,
                "current_recovery_timeout": self.current_recovery_timeout,
                "success_threshold": self.config.success_threshold,
                "half_open_max_calls": self.config.half_open_max_calls,
                "opened_at": iso(self._to_wall(self._opened_at))
                if self._state != CLOSED and self._opened_at is not None
                else None,
                "retry_after": round(self.retry_after(), 3),
                "recent_failures": [
                    iso(self._to_wall(t)) for t in list(self._recent)[-5:]
                ],
                "failure_rate_per_min": self._rate.total(now),
                "last_failure": self.last_failure,
                "last_cause": self.last_cause,
                "calls": self.calls,
                "successes": self.successes,
                "failures": self.failures,
                "rejections": self.rejections,
                "retries": self.retries,
                "bulkhead_rejections": self.bulkhead_rejections,
                "open_seconds_total": self._open_seconds
                + (
                    max(0.0, now - self._opened_at)
                    if self._state == OPEN and self._opened_at is not None
                    else 0.0
                ),
                "storage": self.storage_name,
                "window": window.figures(now) if window is not None else None,
                "critical": self.config.critical,
            }
        return entry
