"""Time-based sliding window of call outcomes (``trip:`` in the YAML).

The window is cut into :data:`BUCKETS` buckets of ``window / BUCKETS``
seconds each, so memory is constant and recording is O(1) whatever the
traffic. A call lands in the bucket of the time it completed (a clock that
went backwards records into the newest bucket) and leaves the window when
the newest bucket is :data:`BUCKETS` buckets later: between
``window - window / BUCKETS`` and ``window`` seconds after it completed.

Only calls completed while the circuit is closed are recorded, and the gate
clears the window on every transition.

Most successes take a short path, :meth:`SlidingWindow.add_success`,
meant to run without the gate's lock: it only bumps the newest bucket's
counter. It is taken only when the success cannot open the circuit: it is
not slow, falls in the newest bucket (so nothing expires), and the window's
last judgement found the failures and slow calls below their thresholds
even counted against ``max(calls, minimum_calls)`` (more successes only
lower the rates from there). There are no running totals to drift when two
threads race; totals are summed from the buckets (20 integers) whenever a
verdict or figures are needed, under the gate's lock.

On a gate that reads the real wall clock even that clock read is saved:
the :class:`Ticker` (one daemon thread per process) moves every such
window to its next bucket when the bucket's time is up, so a success only
checks :attr:`SlidingWindow.fast_now` and bumps a counter. A tick that comes
late lets a few successes land in the bucket before: they leave the window
a little early, never late.
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Final, Protocol

# typing_extensions: pydantic (FastAPI response models) reads it on 3.11.
from typing_extensions import TypedDict

from sage_resilience._threads import start_daemon

if TYPE_CHECKING:
    from sage_resilience._config import TripConfig

__all__ = ["BUCKETS", "TICKER", "SlidingWindow", "Ticker", "WindowFigures"]


class WindowFigures(TypedDict):
    """A sliding window's figures: a status entry's ``window``.

    Rates are fractions of ``calls`` (0.0 on an empty window).

    .. versionadded:: 0.1.0
    """

    calls: int
    failures: int
    slow_calls: int
    failure_rate: float
    slow_call_rate: float


#: Buckets per window: a call may leave the window up to one bucket (5 %)
#: before ``window`` seconds have passed, never after.
BUCKETS: Final = 20


class SlidingWindow:
    """Counts of calls, counted failures and slow calls over ``window`` s.

    Not locked itself: :meth:`record`, :meth:`figures` and :meth:`clear`
    run under the gate's lock; :meth:`add_success` may run outside it.

    Args:
        config: The policy's ``trip:`` block.
    """

    __slots__ = (
        "_calls",
        "_fails",
        "_fast",
        "_fast_until",
        "_head",
        "_slot",
        "_slow_after",
        "_slows",
        "_width",
        "config",
        "fast_now",
        "ticked",
    )

    def __init__(self, config: TripConfig) -> None:
        self.config = config
        self._width = config.window / BUCKETS
        slow = config.slow_call_duration
        self._slow_after = math.inf if slow is None else slow
        self._calls = [0] * BUCKETS
        self._fails = [0] * BUCKETS
        self._slows = [0] * BUCKETS
        # The newest bucket's number (``now // width``, a float) and slot.
        self._head: float | None = None
        self._slot = 0
        # Whether a fast success in the newest bucket cannot open it, and
        # until when (the newest bucket's end; -inf when it could).
        self._fast = False
        self._fast_until = -math.inf
        #: Whether the Ticker moves this window's buckets on time (its gate
        #: reads the real clock); then a success may skip reading the clock
        #: whenever ``fast_now`` is true.
        self.ticked = False
        self.fast_now = False

    @property
    def bucket_width(self) -> float:
        """Seconds per bucket: how coarse expiry is."""
        return self._width

    def clear(self) -> None:
        """Forget every call."""
        for counts in (self._calls, self._fails, self._slows):
            counts[:] = [0] * BUCKETS
        self._head = None
        self._slot = 0
        self._fast = False
        self._fast_until = -math.inf
        self.fast_now = False

    def _advance(self, now: float) -> int:
        """Expire buckets older than the window; return the newest slot."""
        index = now // self._width
        head = self._head
        if head is None or index - head >= BUCKETS:
            self.clear()
            self._head = index
        elif index > head:
            calls, fails, slows = self._calls, self._fails, self._slows
            for step in range(int(head) + 1, int(index) + 1):
                slot = step % BUCKETS
                calls[slot] = fails[slot] = slows[slot] = 0
            self._head = index
        else:
            # Same bucket, or a clock that went backwards: the newest one.
            return self._slot
        self._slot = int(self._head) % BUCKETS
        self._judge()  # expiry may have raised a rate
        return self._slot

    def add_success(self, now: float, duration: float = 0.0) -> bool:
        """Record a success that cannot open the circuit, if cheaply possible.

        Safe without the gate's lock: racing another thread can at worst
        misplace or lose this one count, never corrupt the window.

        Returns:
            True when recorded; False when the call was slow or the window
            must first move on: then :meth:`record` it under the lock.
        """
        if duration > self._slow_after or now >= self._fast_until:
            return False
        self._calls[self._slot] += 1
        return True

    def record(
        self, now: float, *, failed: bool, duration: float = 0.0
    ) -> str | None:
        """Record one completed call and judge the window.

        Args:
            now: When the call completed (the gate's clock).
            failed: Whether it was a counted failure.
            duration: How long its attempt took; slow when longer than
                ``slow_call_duration``.

        Returns:
            The opening reason (``"failure_rate"`` or ``"slow_call_rate"``)
            when the window now says the circuit must open, else None.
        """
        slot = self._advance(now)
        self._calls[slot] += 1
        if failed:
            self._fails[slot] += 1
        if duration > self._slow_after:
            self._slows[slot] += 1
        return self._judge()

    def _judge(self) -> str | None:
        """The opening reason the figures call for; also sets ``_fast``."""
        config = self.config
        calls = sum(self._calls)
        floor = max(calls, config.minimum_calls)
        judged = calls >= config.minimum_calls
        reason = None
        fast = True
        rate = config.failure_rate
        if rate is not None:
            fails = sum(self._fails)
            if judged and fails >= rate * calls:
                reason = "failure_rate"
            fast = fails < rate * floor
        rate = config.slow_call_rate
        if rate is not None:
            slows = sum(self._slows)
            if reason is None and judged and slows >= rate * calls:
                reason = "slow_call_rate"
            fast = fast and slows < rate * floor
        self._fast = fast
        head = self._head
        self._fast_until = (
            (head + 1) * self._width
            if fast and head is not None
            else -math.inf
        )
        self.fast_now = fast and self.ticked and head is not None
        return reason

    def tick(self, now: float) -> float | None:
        """Move to the bucket of *now* (under the gate's lock).

        Returns:
            When the newest bucket ends (the next tick is due), or None for
            an empty window (nothing to move until a call is recorded).
        """
        if self._head is None:
            return None
        self._advance(now)
        assert self._head is not None
        return float((self._head + 1) * self._width)

    def figures(self, now: float) -> WindowFigures:
        """``calls``, ``failures``, ``slow_calls`` and both rates right now.

        Rates are fractions of ``calls`` (0.0 on an empty window).
        """
        self._advance(now)
        calls = sum(self._calls)
        fails = sum(self._fails)
        slows = sum(self._slows)
        return {
            "calls": calls,
            "failures": fails,
            "slow_calls": slows,
            "failure_rate": fails / calls if calls else 0.0,
            "slow_call_rate": slows / calls if calls else 0.0,
        }


class _Ticked(Protocol):
    def _window_tick(self, now: float) -> float | None: ...


class Ticker:
    """Moves the watched gates' windows to their next bucket on time.

    One daemon thread per process, started on the first :meth:`watch`; it
    sleeps until the earliest bucket end among the watched windows (at
    least 2 ms, at most 1 s) and holds no reference that keeps a gate alive.
    """

    #: Never sleep longer, so a window that became busy is seen soon.
    MAX_SLEEP: Final = 1.0
    MIN_SLEEP: Final = 0.002

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._gates: weakref.WeakSet[_Ticked] = weakref.WeakSet()
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()

    def watch(self, gate: _Ticked) -> None:
        """Tick *gate*'s window from now on."""
        with self._lock:
            self._gates.add(gate)
            self._start()
        self._wake.set()

    def forget(self) -> None:
        """Stop ticking every gate watched so far (tests)."""
        with self._lock:
            self._gates.clear()

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = start_daemon(self._run, "window-ticker")

    def _run(self) -> None:
        while True:
            # The gates' own clock (see _circuit.LOCAL_CLOCK).
            now = time.monotonic()
            due = now + self.MAX_SLEEP
            with self._lock:
                gates = list(self._gates)
            for gate in gates:
                ends = gate._window_tick(now)
                if ends is not None and ends < due:
                    due = ends
            del gates
            self._wake.wait(max(self.MIN_SLEEP, due - time.monotonic()))
            self._wake.clear()

    def _after_fork(self) -> None:
        # The thread did not survive fork(): start a new one if needed.
        self._lock = threading.Lock()
        self._thread = None
        self._wake = threading.Event()
        if len(self._gates):
            self._start()


TICKER: Final = Ticker()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=TICKER._after_fork)
