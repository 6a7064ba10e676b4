"""The circuit a gate keeps: its state, timing, counters and clocks.

:class:`Circuit` is the base of :class:`~sage_resilience._breaker.Gate`:
the state the gate's parts read and move with the gate's lock held (its
side of a shared store, :class:`~sage_resilience._fleet.Fleet`, and its
statistics, :class:`~sage_resilience._stats.GateStats`), and the helpers
they share: the recovery time (``recovery_backoff``, ``Retry-After``), the
conversions between the gate's clock and the wall clock, and the hand-over
of the events a transition made (logged once the lock is released).

Every time a gate keeps is on its own clock (monotonic unless a test gives
it another), so stepping the wall clock moves no deadline. Wall-clock
times exist only at the edges: what is shown (status, events) and what is
shared with other processes (a store's times).
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import TYPE_CHECKING, Final

from sage_resilience._names import CLOSED, HALF_OPEN, OPEN
from sage_resilience._storage import LEASE_RESERVE
from sage_resilience._window import TICKER, SlidingWindow

if TYPE_CHECKING:
    from collections.abc import Callable

    import pybreaker

    from sage_resilience._config import PolicyConfig
    from sage_resilience._events import StateChange
    from sage_resilience._names import State
    from sage_resilience.exceptions import RefusalInfo

__all__ = ["CANONICAL", "LOCAL_CLOCK", "PROBE", "Circuit"]

#: The clock a gate reads unless a test gives it another.
LOCAL_CLOCK: Final = time.monotonic

#: How far the wall clock may run ahead of the local clock's progress
#: before a gate takes it as stepped (drift is a few microseconds a second).
_WALL_SLACK: Final = 0.001

#: Each state name to the constant itself: the hot path compares states by
#: identity, and a state read back from a store is an equal string.
CANONICAL: Final[dict[str, State]] = {
    CLOSED: CLOSED,
    OPEN: OPEN,
    HALF_OPEN: HALF_OPEN,
}


#: Tickets are ``generation * 2 | is_probe``: one int, no allocation (``* 2``,
#: not ``<< 1``: the interpreter specialises ``*`` on small ints).
PROBE: Final = 1


def _raise(exc: BaseException) -> None:
    raise exc


class Circuit:
    """One gate's circuit: what pybreaker holds, mirrored, and its timing.

    Attributes:
        name: The policy's name.
        platform: Reported in ``circuit_state_changed``.
        storage_name: The storage backend's name (status).
        config: The policy's settings.
        breaker: The pybreaker breaker (set by the gate).
        window: The rate window of ``trip:`` (None without one).
        current_recovery_timeout: How long the circuit stays open when it
            opens (grown by ``recovery_backoff``, set by a Retry-After).
        calls: Admitted calls (the other counters likewise, for status
            and metrics; changed on every call).
    """

    # Slots: the hot path reads and writes these on every call, and a
    # slot is the cheapest attribute there is (an instance dict of this
    # many keys is not key-shared: every access is a hash lookup).
    __slots__ = (
        "__weakref__",
        "_asked",
        "_backoff_timeout",
        "_clean",
        "_clock",
        "_closed_at",
        "_forced",
        "_generation",
        "_local_base",
        "_lock",
        "_opened_at",
        "_pending",
        "_probe_at",
        "_probe_started_at",
        "_probes",
        "_reason",
        "_refusal_info",
        "_rejected_while_open",
        "_rejection_logged",
        "_state",
        "_storage",
        "_streak",
        "_wall_base",
        "_window_reason",
        "breaker",
        "bulkhead_rejections",
        "calls",
        "config",
        "current_recovery_timeout",
        "failures",
        "name",
        "platform",
        "rejections",
        "retries",
        "storage_name",
        "successes",
        "window",
    )

    breaker: pybreaker.CircuitBreaker
    _storage: pybreaker.CircuitBreakerStorage

    def __init__(
        self,
        name: str,
        config: PolicyConfig,
        platform: str,
        storage_name: str,
        clock: Callable[[], float],
    ) -> None:
        self.name = name
        self.platform = platform
        self.storage_name = storage_name
        self.config = config
        self._clock = clock
        # A wall-clock reading and the local clock at that moment: the
        # wall clock this gate reports never moves back (see _wall()).
        self._wall_base = time.time()
        self._local_base = LOCAL_CLOCK()
        self._lock = threading.Lock()
        self._pending: list[StateChange] = []
        self._refusal_info: RefusalInfo | None = None
        self._reason: str | None = None

        # Circuit state mirrored from pybreaker (read without the lock on
        # the hot path) and the generation, bumped on every transition.
        self._state: State = CLOSED
        self._generation = 0
        self._probes = 0
        self._probe_at = 0.0
        # When half-open began, then when it last admitted a probe: hung
        # probes are given up _probe_wait() after that (each probe gets
        # its whole wait, a later one too).
        self._probe_started_at = 0.0
        # Consecutive counted failures seen here while closed with a
        # shared storage (the store's count is fleet-wide and comes later).
        self._streak = 0
        self._opened_at: float | None = None
        self._forced = False
        # True while closed with a zero failure counter: a success then has
        # nothing to tell pybreaker.
        self._clean = True

        # Counters (status, metrics), on every call.
        self.calls = self.successes = self.failures = 0
        self.rejections = self.retries = self.bulkhead_rejections = 0
        self._rejected_while_open = 0
        self._rejection_logged = False

        # Adaptive open time (recovery_backoff).
        self._closed_at: float | None = None
        self.current_recovery_timeout = config.recovery_timeout
        # The open time recovery_backoff plans, before a Retry-After.
        self._backoff_timeout = config.recovery_timeout
        # The Retry-After of the failure being recorded (it may open).
        self._asked: float | None = None
        self.window: SlidingWindow | None = None
        # Why the rate window last said: open.
        self._window_reason = "failure_rate"

    def _on_transition(self, old: str, new: str) -> None:
        """Mirror a pybreaker transition (the gate's; lock held)."""
        raise NotImplementedError

    # -- transitions ----------------------------------------------------------

    def _enter(
        self, old: str, new: str, now: float, reason: str, *, adopted: bool
    ) -> None:
        """The circuit's timing and flags on entering *new* (lock held).

        *adopted*: the times of an opening are a store's, already set.
        """
        if new != OPEN:
            self._forced = False  # e.g. breaker.close() called directly
        if new == OPEN:
            if not adopted:
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
            self._probe_started_at = now
        if self.window is not None:
            self.window.clear()
        # The constant itself: the hot path compares by identity, and a
        # state read back from a store is an equal but different string.
        self._state = CANONICAL[new]

    def _clear(self) -> None:
        """Zero the counters and the recovery time (lock held)."""
        self._storage.reset_counter()
        self._storage.reset_success_counter()
        self._clean = True
        self.calls = self.successes = self.failures = 0
        self.rejections = self.retries = self.bulkhead_rejections = 0
        self._rejected_while_open = 0
        self.current_recovery_timeout = self.config.recovery_timeout
        self._backoff_timeout = self.config.recovery_timeout
        self.breaker.reset_timeout = self.current_recovery_timeout
        self._closed_at = None
        if self.window is not None:
            self.window.clear()

    # -- configuration ------------------------------------------------------

    def reconfigure(self, config: PolicyConfig) -> None:
        """Apply new settings; the circuit state is kept."""
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

    # -- rate window (trip:) ------------------------------------------------

    def _window_verdict(
        self, window: SlidingWindow, *, failed: bool, duration: float
    ) -> bool:
        """Record into the rate window; True when it says: open."""
        # Only a gate on the real clock lets the ticker move its buckets
        # (tests swap in a clock of their own).
        window.ticked = self._clock is LOCAL_CLOCK
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
            if self._clock is not LOCAL_CLOCK:
                window.ticked = window.fast_now = False
                return None
            return window.tick(now)

    # -- state --------------------------------------------------------------

    @property
    def state(self) -> State:
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

    def rejecting(self) -> bool:
        """Whether the next attempt would be refused (no side effects)."""
        state = self._state
        if state is CLOSED:
            return False
        if state == OPEN:
            return self._forced or self._clock() < self._probe_at
        return self._probes >= self.config.half_open_max_calls

    def _current(self, ticket: int) -> bool:
        """Whether *ticket*'s outcome may still change the circuit.

        Only outcomes of the generation they were admitted in count, and
        only in the state they were admitted for: probes while half-open,
        ordinary calls while closed (pybreaker would otherwise take them
        for the other kind).
        """
        if ticket >> 1 != self._generation:
            return False
        if ticket & PROBE:
            return self._state == HALF_OPEN
        return self._state == CLOSED

    def _probe_wait(self) -> float:
        """How long half-open waits for its probes' verdicts."""
        wait = self.config.half_open_max_wait
        if wait is not None:
            return wait
        timeout = self.config.timeout
        return max(LEASE_RESERVE, timeout or self.current_recovery_timeout)

    def _take_events(self) -> list[StateChange]:
        self._reason = None
        if not self._pending:
            return self._pending
        events, self._pending = self._pending, []
        return events

    @staticmethod
    def _emit(events: list[StateChange]) -> None:
        for event in events:
            event.emit()

    def _count(self, exc: BaseException) -> None:
        """Count a failure in pybreaker (it may open), which re-raises it."""
        with contextlib.suppress(BaseException):
            self.breaker.call(_raise, exc)

    # -- recovery time ------------------------------------------------------

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

    # -- clocks -------------------------------------------------------------

    def _wall(self) -> float:
        """Now on the wall clock, for a store: it never moves backwards.

        When the wall clock is stepped back, the time reported goes on
        from the last reading by the local clock's progress, until the
        wall clock catches up; a step forward is taken as it is. A test's
        clock (anything but the default) stands for the wall clock itself.
        """
        if self._clock is not LOCAL_CLOCK:
            return self._clock()
        now, local = time.time(), LOCAL_CLOCK()
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
        if self._clock is not LOCAL_CLOCK:
            return local
        self._wall()
        return local + (self._wall_base - self._local_base)

    def _from_wall(self, wall: float) -> float:
        """A wall-clock time (a store's) on this gate's clock."""
        if self._clock is not LOCAL_CLOCK:
            return wall
        self._wall()
        return wall - (self._wall_base - self._local_base)
