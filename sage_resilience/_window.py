"""Time-based sliding window of call outcomes (``trip:`` in the YAML).

The window is cut into a fixed number of buckets, so memory is constant
and recording is O(1) amortised whatever the traffic. A call leaves the
window between ``window - bucket`` and ``window`` seconds after it
completed. Only calls completed while the circuit is closed are recorded;
the gate clears the window on every transition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from sage_resilience._config import TripConfig

__all__ = ["BUCKETS", "SlidingWindow"]

#: Buckets per window: a call leaves at most one bucket (5 %) early.
BUCKETS: Final = 20


class SlidingWindow:
    """Counts of calls, counted failures and slow calls over ``window`` s."""

    __slots__ = (
        "_calls",
        "_fails",
        "_head",
        "_slows",
        "_total_calls",
        "_total_fails",
        "_total_slows",
        "_width",
        "config",
    )

    def __init__(self, config: TripConfig) -> None:
        self.config = config
        self._width = config.window / BUCKETS
        self._calls = [0] * BUCKETS
        self._fails = [0] * BUCKETS
        self._slows = [0] * BUCKETS
        self._total_calls = self._total_fails = self._total_slows = 0
        self._head: int | None = None

    def clear(self) -> None:
        """Forget every call."""
        for counts in (self._calls, self._fails, self._slows):
            counts[:] = [0] * BUCKETS
        self._total_calls = self._total_fails = self._total_slows = 0
        self._head = None

    def _advance(self, now: float) -> int:
        """Expire buckets older than the window; return the head slot."""
        index = int(now // self._width)
        head = self._head
        if head is None or index - head >= BUCKETS:
            if self._total_calls:
                self.clear()
            self._head = index
        elif index > head:
            for step in range(head + 1, index + 1):
                slot = step % BUCKETS
                self._total_calls -= self._calls[slot]
                self._total_fails -= self._fails[slot]
                self._total_slows -= self._slows[slot]
                self._calls[slot] = self._fails[slot] = self._slows[slot] = 0
            self._head = index
        # A clock that went backwards records into the newest bucket.
        assert self._head is not None
        return self._head % BUCKETS

    def record(
        self, now: float, *, failed: bool, duration: float = 0.0
    ) -> str | None:
        """Record one completed call.

        Returns:
            The opening reason (``"failure_rate"`` or ``"slow_call_rate"``)
            when the window now says the circuit must open, else None.
        """
        slot = self._advance(now)
        config = self.config
        self._calls[slot] += 1
        self._total_calls += 1
        if failed:
            self._fails[slot] += 1
            self._total_fails += 1
        slow_after = config.slow_call_duration
        if slow_after is not None and duration > slow_after:
            self._slows[slot] += 1
            self._total_slows += 1
        calls = self._total_calls
        if calls < config.minimum_calls:
            return None
        if (
            config.failure_rate is not None
            and self._total_fails >= config.failure_rate * calls
        ):
            return "failure_rate"
        if (
            config.slow_call_rate is not None
            and self._total_slows >= config.slow_call_rate * calls
        ):
            return "slow_call_rate"
        return None

    def figures(self, now: float) -> dict[str, Any]:
        """``calls``, ``failure_rate`` and ``slow_call_rate`` right now."""
        self._advance(now)
        calls = self._total_calls
        return {
            "calls": calls,
            "failures": self._total_fails,
            "slow_calls": self._total_slows,
            "failure_rate": self._total_fails / calls if calls else 0.0,
            "slow_call_rate": self._total_slows / calls if calls else 0.0,
        }
