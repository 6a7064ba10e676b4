"""A gate's statistics: recent failures, their rate, time open, status.

The call counters (``calls``, ``successes``, ...) stay on the gate: they
change on every call. What is here changes on failures and transitions
only, and is read by the status entry and the ``circuit_state_changed``
event. Times are on the gate's clock; they are shown on the wall clock.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Final, cast

# typing_extensions: pydantic (FastAPI response models) reads it on 3.11.
from typing_extensions import TypedDict

from sage_resilience._events import StateChange, iso
from sage_resilience._names import (
    CLOSED,
    OPEN,
    State,
)
from sage_resilience._redact import MAX_TEXT, redact, secrets_of
from sage_resilience._window import WindowFigures  # noqa: TC001 - idem

if TYPE_CHECKING:
    from collections.abc import Callable

    from sage_resilience._circuit import Circuit

__all__ = ["GateEntry", "GateStats", "StatusEntry", "describe_failure"]

_RATE_BUCKETS: Final = 60

#: How many counted-failure times a gate keeps.
_FAILURE_TIMES: Final = 256

#: How many recent failures a status entry and an event show.
_SHOWN: Final = 5


class GateEntry(TypedDict):
    """The part of a status entry the gate knows (all but the last two)."""

    name: str
    state: State
    forced: bool
    failure_count: int
    failure_threshold: int
    recovery_timeout: float
    current_recovery_timeout: float
    success_threshold: int
    half_open_max_calls: int
    opened_at: str | None
    retry_after: float
    recent_failures: list[str]
    failure_rate_per_min: int
    last_failure: str | None
    last_cause: str | None
    calls: int
    successes: int
    failures: int
    rejections: int
    retries: int
    bulkhead_rejections: int
    open_seconds_total: float
    storage: str
    window: WindowFigures | None
    critical: bool


class StatusEntry(GateEntry):
    """A policy's status entry: ``p.status()``, ``breaker_status()[name]``.

    Every key is always present (a value may be None). ``state`` is
    ``"closed"``, ``"open"`` or ``"half-open"``; ``opened_at`` and
    ``recent_failures`` are ISO-8601 UTC; ``last_cause`` is a diagnosis
    code (a :class:`~sage_resilience.Cause` value); ``window`` is None
    without a ``trip:`` window; ``in_flight`` is None without a bulkhead.
    See ``docs/operations.md``.

    .. versionadded:: 0.1.0
    """

    in_flight: int | None
    platform: str


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


class GateStats:
    """What a gate shows of its failures and open periods (its lock held).

    Attributes:
        recent: Gate-clock times of recent counted failures: the last 5
            are shown; more serve failure counts over a window (the
            compat layer).
        last_failure: ``"ExcType: message"`` of the last counted failure.
        last_cause: The classification of the last counted failure.
        open_seconds: Seconds spent open in closed open periods (never
            reset).
    """

    __slots__ = (
        "last_cause",
        "last_failure",
        "open_seconds",
        "rate",
        "recent",
    )

    def __init__(self) -> None:
        self.recent: deque[float] = deque(maxlen=_FAILURE_TIMES)
        self.rate = _RateCounter()
        self.last_failure: str | None = None
        self.last_cause: str | None = None
        self.open_seconds = 0.0

    def record_failure(
        self, now: float, exc: BaseException, cause: str | None
    ) -> None:
        """A counted failure at *now*."""
        self.recent.append(now)
        self.rate.add(now)
        self.last_failure = describe_failure(exc)
        self.last_cause = cause

    def closed_open_period(self, now: float, opened_at: float | None) -> None:
        """The circuit leaves open at *now* (it opened at *opened_at*)."""
        if opened_at is not None:
            self.open_seconds += max(0.0, now - opened_at)

    def shown(self, to_wall: Callable[[float], float]) -> tuple[float, ...]:
        """The recent failures shown, as wall-clock times, oldest first."""
        return tuple(to_wall(t) for t in tuple(self.recent)[-_SHOWN:])

    def per_minute(self, now: float) -> int:
        """Counted failures in the last 60 s."""
        return self.rate.total(now)

    def failure_times(self, to_wall: Callable[[float], float]) -> list[float]:
        """Wall-clock times of the recent counted failures, oldest first."""
        return [to_wall(t) for t in self.recent]

    def clear(self) -> None:
        """Forget the failures (the time spent open is kept)."""
        self.recent.clear()
        self.rate.clear()
        self.last_failure = self.last_cause = None

    def state_change(
        self,
        gate: Circuit,
        old: str,
        new: str,
        reason: str,
        rejected: int | None,
        now: float,
    ) -> StateChange:
        """The ``circuit_state_changed`` event of a transition made here."""
        return StateChange(
            breaker=gate.name,
            old_state=old,
            new_state=new,
            reason=reason,
            failure_count=gate.failure_count,
            failure_threshold=gate.config.failure_threshold,
            recovery_timeout=gate.current_recovery_timeout,
            recent_failures=self.shown(gate._to_wall),
            failure_rate_per_min=self.per_minute(now),
            last_failure=self.last_failure,
            last_cause=self.last_cause,
            rejected_while_open=rejected,
            platform=gate.platform,
            open_for=gate.current_recovery_timeout
            if new == OPEN and not gate._forced
            else None,
        )

    def adopted(self, gate: Circuit, old: str, new: str) -> StateChange:
        """A transition another process made, adopted from the store."""
        return StateChange(
            gate.name,
            old,
            new,
            "storage",
            gate.failure_count,
            self.last_failure,
            self.last_cause,
            storage=gate.storage_name,
        )

    def entry(self, gate: Circuit, now: float) -> GateEntry:
        """*gate*'s status entry (see ``docs/operations.md``)."""
        config = gate.config
        state = gate.state
        opened_at = gate._opened_at
        window = gate.window
        return {
            "name": gate.name,
            "state": state,
            "forced": gate.forced,
            "failure_count": gate.failure_count,
            "failure_threshold": config.failure_threshold,
            "recovery_timeout": config.recovery_timeout,
            "current_recovery_timeout": gate.current_recovery_timeout,
            "success_threshold": config.success_threshold,
            "half_open_max_calls": config.half_open_max_calls,
            "opened_at": iso(gate._to_wall(opened_at))
            if state != CLOSED and opened_at is not None
            else None,
            "retry_after": round(gate.retry_after(), 3),
            # iso() of a float is a str.
            "recent_failures": cast(
                "list[str]", [iso(t) for t in self.shown(gate._to_wall)]
            ),
            "failure_rate_per_min": self.rate.total(now),
            "last_failure": self.last_failure,
            "last_cause": self.last_cause,
            "calls": gate.calls,
            "successes": gate.successes,
            "failures": gate.failures,
            "rejections": gate.rejections,
            "retries": gate.retries,
            "bulkhead_rejections": gate.bulkhead_rejections,
            "open_seconds_total": self.open_seconds
            + (
                max(0.0, now - opened_at)
                if state == OPEN and opened_at is not None
                else 0.0
            ),
            "storage": gate.storage_name,
            "window": window.figures(now) if window is not None else None,
            "critical": config.critical,
        }
