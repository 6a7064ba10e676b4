"""Hooks: the engine's side of :mod:`sage_resilience.instrumentation`.

A hook is any object with some of the methods ``on_state_change``,
``on_attempt``, ``on_retry`` and ``on_rejected``; each takes one frozen
details object. The engine reads one tuple per kind (:data:`STATE`,
:data:`ATTEMPT`, :data:`RETRY`, :data:`REJECTED`), rebuilt whenever a hook
is added or removed, so a kind nobody listens to costs one truthiness test
where it happens, and the success path none at all unless an attempt hook
is installed: then the attempt observer of :mod:`sage_resilience._attempt`
is set and policies take the call path that times attempts.

A hook that raises never breaks a call nor another hook: its error is
logged once (``hook_failed``) and swallowed.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

from sage_resilience import _events
from sage_resilience._events import StateChange, log_state_change, logger
from sage_resilience._names import RETRY_SCHEDULED
from sage_resilience._redact import redact
from sage_resilience._stats import describe_failure

if TYPE_CHECKING:
    from collections.abc import Callable


Outcome = Literal["success", "failure", "ignored", "neutral", "cancelled"]
#: ``(policy name, seconds, outcome, error)``.
AttemptObserver = "Callable[[str, float, Outcome, BaseException | None], None]"
RejectReason = Literal["open", "half_open_full", "bulkhead"]


@dataclass(frozen=True, slots=True)
class AttemptFinished:
    """One attempt ran to an end.

    ``outcome``: ``success``; ``failure`` (counted); ``ignored`` (a caller's
    fault, a success for the breaker); ``neutral`` (a programming error, or
    a deferred attempt released without verdict); ``cancelled``. Attempts
    refused before running are :class:`CallRejected` instead.
    """

    breaker: str
    outcome: Outcome
    duration: float  # seconds, bulkhead waiting excluded
    error: BaseException | None


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    """Attempt *attempt* failed and another follows after *wait* seconds."""

    breaker: str
    attempt: int
    wait: float
    error: BaseException | None
    #: Attempts the call may make in all (``retry.attempts``).
    max_attempts: int = 0


@dataclass(frozen=True, slots=True)
class CallRejected:
    """A call was refused without running.

    ``reason``: ``open`` (the circuit is open), ``half_open_full`` (every
    probe slot is taken), ``bulkhead`` (no bulkhead slot within
    ``max_wait``). ``retry_after``: seconds until a call may pass, 0 when
    unknown.
    """

    breaker: str
    reason: RejectReason
    retry_after: float


_METHODS: Final = ("on_state_change", "on_attempt", "on_retry", "on_rejected")

_lock = threading.Lock()
_hooks: list[object] = []
_reported: set[tuple[int, str]] = set()

#: The bound methods of each kind, in the order the hooks were added.
STATE: tuple[Callable[[StateChange], object], ...] = ()
ATTEMPT: tuple[Callable[[AttemptFinished], object], ...] = ()
RETRY: tuple[Callable[[RetryScheduled], object], ...] = ()
REJECTED: tuple[Callable[[CallRejected], object], ...] = ()


def add_hook(hook: object) -> None:
    """Call *hook*'s ``on_*`` methods from now on (added once only)."""
    if not any(callable(getattr(hook, m, None)) for m in _METHODS):
        msg = (
            f"{hook!r} is not a hook: it has none of the methods "
            + ", ".join(_METHODS)
        )
        raise TypeError(msg)
    with _lock:
        if not any(h is hook for h in _hooks):
            _hooks.append(hook)
            _rebuild()


def remove_hook(hook: object) -> None:
    """Stop calling *hook* (a hook never added is ignored)."""
    with _lock:
        kept = [h for h in _hooks if h is not hook]
        if len(kept) != len(_hooks):
            _hooks[:] = kept
            _rebuild()


def get_hooks() -> tuple[object, ...]:
    """The hooks installed, in the order they were added."""
    with _lock:
        return tuple(_hooks)


def clear() -> None:
    """Remove every hook (tests)."""
    with _lock:
        _hooks.clear()
        _reported.clear()
        _rebuild()


def _rebuild() -> None:
    """Recompute the per-kind tuples and the attempt observer (lock held)."""
    global STATE, ATTEMPT, RETRY, REJECTED  # noqa: PLW0603 - read on hot paths
    STATE = (EVENT_LOG.on_state_change, *_bound("on_state_change"))
    ATTEMPT = _bound("on_attempt")
    RETRY = (EVENT_LOG.on_retry, *_bound("on_retry"))
    REJECTED = _bound("on_rejected")
    _refresh_observer()


# -- the attempt observer ---------------------------------------------------

#: ``(policy name, seconds, outcome, error)`` after every attempt that ran
#: to an end while an attempt hook is installed, else None (then the
#: success path reads no clock). Modules that call it keep their own copy,
#: given to them by :func:`watch_observer` whenever it changes.
attempt_observer: (
    Callable[[str, float, Outcome, BaseException | None], None] | None
) = None
_sinks: list[Callable[[Any], None]] = []


def watch_observer(sink: Callable[[Any], None]) -> None:
    """Call *sink* with the attempt observer now and whenever it changes."""
    _sinks.append(sink)
    sink(attempt_observer)


def _refresh_observer() -> None:
    global attempt_observer  # noqa: PLW0603 - read on every attempt
    attempt_observer = _notify if ATTEMPT else None
    for sink in _sinks:
        sink(attempt_observer)


def _notify(
    name: str, duration: float, outcome: Outcome, error: BaseException | None
) -> None:
    hooks = ATTEMPT
    if hooks:
        dispatch(hooks, AttemptFinished(name, outcome, duration, error))


def _bound(method: str) -> tuple[Any, ...]:
    return tuple(
        _guarded(hook, method, fn)
        for hook in _hooks
        if callable(fn := getattr(hook, method, None))
    )


def _guarded(
    hook: object, method: str, fn: Callable[[Any], object]
) -> Callable[[Any], None]:
    key = (id(hook), method)

    def call(details: Any) -> None:
        try:
            fn(details)
        except Exception as exc:
            if key in _reported:
                return
            _reported.add(key)
            logger.warning(
                "hook_failed",
                hook=type(hook).__qualname__,
                method=method,
                error=redact(f"{type(exc).__name__}: {exc}")[:500],
            )

    return call


def dispatch(hooks: tuple[Callable[[Any], object], ...], details: Any) -> None:
    """Give *details* to every hook of one kind (each guarded)."""
    for hook in hooks:
        hook(details)


def _deliver(change: StateChange) -> None:
    """Every state hook, the event log first (``StateChange.emit``)."""
    dispatch(STATE, change)


def rejected(breaker: str, reason: RejectReason, retry_after: float) -> None:
    """A refusal (the caller checked :data:`REJECTED` first)."""
    dispatch(REJECTED, CallRejected(breaker, reason, retry_after))


def retry_scheduled(
    breaker: str,
    attempt: int,
    wait: float,
    error: BaseException | None,
    max_attempts: int,
) -> None:
    """A retry is about to sleep: the event log and every retry hook."""
    dispatch(
        RETRY, RetryScheduled(breaker, attempt, wait, error, max_attempts)
    )


class _EventLog:
    """The library's own events, written by a hook like an application's.

    Always first, never listed by :func:`get_hooks` and never removed:
    ``circuit_state_changed`` / ``circuit_state_synced`` and
    ``retry_scheduled`` are its output. (``call_rejected`` is logged by the
    gate, once per open period, from counts the rejection hooks do not
    see.)
    """

    __slots__ = ()

    on_state_change = staticmethod(log_state_change)

    @staticmethod
    def on_retry(details: RetryScheduled) -> None:
        error = details.error
        logger.info(
            RETRY_SCHEDULED,
            breaker=details.breaker,
            attempt=details.attempt,
            max_attempts=details.max_attempts,
            wait=round(details.wait, 3),
            error=None if error is None else describe_failure(error),
        )


#: The built-in hook (see :class:`_EventLog`).
EVENT_LOG: Final = _EventLog()
STATE = (EVENT_LOG.on_state_change,)
RETRY = (EVENT_LOG.on_retry,)
_events.deliver = _deliver
