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

The gate's side of a shared store is :class:`~sage_resilience._fleet.Fleet`
(one per gate with a shared storage, None otherwise); what the gate shows
of its failures is :class:`~sage_resilience._stats.GateStats`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sage_resilience import _hooks
from sage_resilience._circuit import LOCAL_CLOCK, PROBE, Circuit
from sage_resilience._classify import retry_after_of
from sage_resilience._events import logger
from sage_resilience._fleet import (
    CLAIM_WAIT,
    ClaimPending,
    Fleet,
    adopt_storage_state,
)
from sage_resilience._names import CALL_REJECTED, CLOSED, HALF_OPEN, OPEN
from sage_resilience._pybreaker import pybreaker
from sage_resilience._stats import GateStats, describe_failure
from sage_resilience._storage import SharedStorage
from sage_resilience._storage.shared import _on_event_loop
from sage_resilience.exceptions import CircuitOpenError, RefusalInfo

if TYPE_CHECKING:
    from collections.abc import Callable

    from sage_resilience._config import PolicyConfig
    from sage_resilience._stats import GateEntry

__all__ = [
    "CLAIM_WAIT",
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "ClaimPending",
    "Gate",
    "describe_failure",
]


def _noop() -> None:
    return None


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


def _tell_rejected(name: str, state: str, retry_after: float) -> None:
    """The rejection hooks, told why (open, or every probe slot taken)."""
    reason: _hooks.RejectReason = "open" if state == OPEN else "half_open_full"
    _hooks.rejected(name, reason, retry_after)


class Gate(Circuit):
    """Admission, outcome recording and statistics for one policy.

    A gate outlives configuration reloads: :meth:`reconfigure` changes the
    thresholds of the same pybreaker breaker, so the circuit state survives.
    """

    __slots__ = ("_fleet", "_stats")

    def __init__(
        self,
        name: str,
        config: PolicyConfig,
        *,
        platform: str,
        storage: pybreaker.CircuitBreakerStorage | None = None,
        storage_name: str = "memory",
        clock: Callable[[], float] = LOCAL_CLOCK,
    ) -> None:
        super().__init__(name, config, platform, storage_name, clock)
        # Recent failures, their rate, time open (not the call counters).
        self._stats = GateStats()
        # The gate's side of a shared storage (None with any other).
        self._fleet: Fleet | None = None
        self._storage = storage or pybreaker.CircuitMemoryStorage(CLOSED)
        self.breaker = _Breaker(
            fail_max=config.failure_threshold,
            reset_timeout=config.recovery_timeout,
            success_threshold=config.success_threshold,
            listeners=[_Listener(self)],
            state_storage=self._storage,
            name=name,
            throw_new_error_on_trip=False,
        )
        self.reconfigure(config)
        if isinstance(self._storage, SharedStorage):
            self._fleet = Fleet(self, self._storage)
            self._fleet.join()
        else:
            adopt_storage_state(self)

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
            return generation * 2
        if state is OPEN:
            # Refusing needs no lock: nothing but counters changes.
            now = self._clock()
            if self._forced or now < self._probe_at:
                raise self._reject(now)
        return self._admit_slow(wait)

    def _admit_slow(self, wait: bool = False, again: bool = False) -> int:  # noqa: C901, PLR0912 - admission in one lock: every state and store case
        with self._lock:
            state = self._state
            if state == CLOSED:
                self.calls += 1
                return self._generation * 2
            now = self._clock()
            fleet = self._live()
            claim = None  # the probe claim this call sent, if any
            if state == OPEN and not self._forced and now >= self._probe_at:
                if fleet is None:
                    self._reason = "recovery_timeout_elapsed"
                    self.breaker.half_open()
                    state = self._state
                else:
                    # The store moves us to half-open with a lease.
                    claim = fleet.claim(now)
            token = None
            probe = (
                state == HALF_OPEN
                and self._probes < self.config.half_open_max_calls
            )
            if probe and fleet is not None:
                token = fleet.take_lease(now)
                if token is None:
                    claim = fleet.claim(now) or claim
                    probe = False
            if again or (claim is not None and not wait and _on_event_loop()):
                claim = None  # a sync call on a loop thread never blocks
            if probe:
                self._probes += 1
                self._probe_started_at = now
                self.calls += 1
                ticket = self._generation * 2 | PROBE
                if fleet is not None and token is not None:
                    fleet.hold(token)
            elif claim is not None:
                ticket = -2  # the claim is in flight: wait for it
            else:
                if (
                    state == HALF_OPEN
                    and (fleet is None or self._probes)
                    and now - self._probe_started_at >= self._probe_wait()
                ):
                    # Hung probes lose slots and leases; late verdicts go.
                    hung = fleet.lease() if fleet is not None else None
                    self._reason = "half_open_timeout"
                    self.breaker.open()
                    if fleet is not None:
                        fleet.hung(hung, self._take_events())
                ticket = -1
                error = self._reject(now)
            events = self._take_events()
        self._emit(events)
        if ticket == -2 and claim is not None:
            if wait:
                raise ClaimPending(self.name, claim, self.admit)
            claim.done.wait(CLAIM_WAIT)
            return self._admit_slow(again=True)
        if ticket < 0:
            raise error
        return ticket

    def _live(self) -> Fleet | None:
        """The fleet, unless its storage is degraded (or there is none)."""
        fleet = self._fleet
        if fleet is None or fleet.shared.degraded:
            return None
        return fleet

    def _reject(self, now: float) -> CircuitOpenError:
        self.rejections += 1
        if self._state == OPEN:
            self._rejected_while_open += 1
        retry_after = 0.0 if self._forced else max(0.0, self._probe_at - now)
        if _hooks.REJECTED:
            _tell_rejected(self.name, self._state, retry_after)
        if not self._rejection_logged and self._state == OPEN:
            self._rejection_logged = True
            logger.warning(
                CALL_REJECTED,
                breaker=self.name,
                retry_after=round(retry_after, 3),
                forced=self._forced,
            )
        info = self._refusal_info
        if info is None:
            stats = self._stats
            info = self._refusal_info = RefusalInfo(
                self.name,
                self.failure_count,
                stats.last_failure,
                stats.last_cause,
                self._state,
                self._forced,
            )
        return CircuitOpenError._from_info(info, retry_after)

    def refusal(self) -> CircuitOpenError:
        """The error a refused attempt gets, without counting a rejection."""
        return CircuitOpenError(
            self.name,
            retry_after=self.retry_after(),
            failure_count=self.failure_count,
            last_failure=self._stats.last_failure,
            last_cause=self._stats.last_cause,
            state=self._state,
            forced=self._forced,
        )

    # -- outcomes ---------------------------------------------------------

    def success(self, ticket: int, duration: float = 0.0) -> None:  # noqa: C901 - the success path, inlined for speed
        """Record a success (or an ignored exception) of an admitted call."""
        self.successes += 1
        window = self.window
        if ticket == self._generation * 2 and self._clean:
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
            fleet = self._live()
            token = None
            tripped = had_failures = False
            if ticket & PROBE:
                self._probes -= 1
                self._reason = "probe_succeeded"
                if self._fleet is not None:
                    token = self._fleet.pop_lease()
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
            if fleet is not None:
                events = fleet.push_outcome(
                    token, events, ok=True, tripped=tripped, reset=had_failures
                )
        self._emit(events)

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
            self._stats.record_failure(now, exc, cause)
            self._refusal_info = None
            if not self._current(ticket):
                return  # late: the circuit has moved on without it
            self._clean = False
            # Should this failure open the circuit, it stays open as long
            # as the answer asked (Retry-After); see _open_time().
            self._asked = asked
            fleet = self._live()
            token = None
            probe = ticket & PROBE
            if probe:
                self._probes -= 1
                self._reason = "probe_failed"
                if self._fleet is not None:
                    token = self._fleet.pop_lease()
            else:
                self._reason = "consecutive_failures"
            if fleet is not None and not probe:
                tripped = fleet.count_failure(exc, now)
            else:
                tripped = False
                self._count(exc)
            window = self.window
            if (
                window is not None
                and not probe
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
            if fleet is not None:
                events = fleet.push_outcome(
                    token, events, ok=False, tripped=tripped
                )
        self._emit(events)

    def release(self, ticket: int) -> None:
        """Give back the probe slot of a cancelled call; nothing is counted."""
        self.calls -= 1
        if not ticket & PROBE:
            return
        with self._lock:
            if ticket >> 1 == self._generation:
                self._probes -= 1
                fleet = self._live()
                if fleet is not None:
                    fleet.release()

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
            fleet = self._live()
            if fleet is not None:
                op = fleet.push_open(
                    events, forced=True, wait=not _on_event_loop()
                )
                events = []
        self._emit(events)
        if op is not None:
            SharedStorage.wait(op)

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
            fleet = self._live()
            if fleet is not None:
                op = fleet.push_close(
                    events, reset=reason == "reset", wait=not _on_event_loop()
                )
                events = []
        self._emit(events)
        if op is not None:
            SharedStorage.wait(op)

    def reset(self) -> None:
        """Close and clear every counter and statistic."""
        self.force_close(reason="reset")
        with self._lock:
            self._clear()
            self._stats.clear()

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
        fleet = self._fleet
        silent = False
        if fleet is not None:
            silent = fleet.silent
            fleet.transitioned()
        rejected: int | None = None
        if old == OPEN:
            rejected = self._rejected_while_open
            self._stats.closed_open_period(now, self._opened_at)
        adopted = False
        if new == OPEN and fleet is not None and fleet.adopting is not None:
            fleet.adopt_timing(fleet.adopting)  # the store's times
            adopted = True
        self._enter(old, new, now, reason, adopted=adopted)
        if silent:
            self._pending.append(self._stats.adopted(self, old, new))
            return
        self._pending.append(
            self._stats.state_change(self, old, new, reason, rejected, now)
        )

    # -- status -------------------------------------------------------------

    def failure_times(self) -> list[float]:
        """Epoch times of the recent counted failures, oldest first."""
        with self._lock:
            return self._stats.failure_times(self._to_wall)

    def status(self) -> GateEntry:
        """This gate's status entry (see ``docs/operations.md``)."""
        now = self._clock()
        with self._lock:
            return self._stats.entry(self, now)
