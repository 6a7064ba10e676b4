"""The policy's side of a shared store: a pybreaker storage and its queue.

:class:`SharedStorage` is the :class:`pybreaker.CircuitBreakerStorage` of
one policy. Its fields are a local view that pybreaker reads and writes
for free; what the fleet must agree on is sent to the backend thread as an
:class:`_Op` (``push_*``), and the store's answers come back through the
:class:`Sink` the gate binds. Counted failures and resets merge into the
queued ``count`` operation until the thread takes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Protocol

from sage_resilience._names import CLOSED
from sage_resilience._pybreaker import pybreaker
from sage_resilience._storage.machine import (
    RESET,
    Outcome,
    View,
    _ms,
    merge_count,
)

if TYPE_CHECKING:
    import datetime as dt

#: Seconds a process constructing a policy outside an event loop waits for
#: the stored state (so it starts in the state its storage holds).
STARTUP_WAIT: Final = 2.0
#: Minimum seconds between two probe claims that found no free slot.
CLAIM_RETRY: Final = 0.02
#: A probe slot is claimed for this long (s); a process that claimed one
#: uses it within :data:`LEASE_IDLE` s or forgets it, and the store frees
#: it when the reservation ends. A probe that starts extends its lease to
#: the policy's ``timeout`` (else its recovery time), at least this long.
LEASE_RESERVE: Final = 2.0
LEASE_IDLE: Final = 1.0

_INSTANCE: Final = f"{os.getpid()}-{uuid.uuid4().hex[:10]}"
_tokens = itertools.count(1)


def new_token() -> str:
    """A probe lease token unique across processes and hosts."""
    return f"{_INSTANCE}-{next(_tokens)}"


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _Op:
    """One operation queued for the backend thread."""

    __slots__ = (
        "args",
        "done",
        "events",
        "exc",
        "generation",
        "kind",
        "now",
        "outcome",
        "resync",
        "storage",
    )

    def __init__(
        self,
        storage: SharedStorage,
        kind: str,
        now: float,
        args: tuple[str | int, ...] = (),
        events: list[Any] | None = None,
    ) -> None:
        self.storage = storage
        self.kind = kind
        self.now = _ms(now)
        self.args = args
        self.events: list[Any] = events or []
        self.exc: BaseException | None = None
        self.generation = 0
        self.resync = False
        self.done: threading.Event | None = None
        self.outcome: Outcome | None = None


class Sink(Protocol):
    """What a storage tells the gate it serves (from the backend thread).

    :class:`sage_resilience._fleet.Fleet` is the gate's side.
    """

    def sync(
        self,
        view: View,
        *,
        ours: bool,
        events: list[Any],
        resync: bool = False,
    ) -> None: ...

    def claimed(
        self, outcome: Outcome | None, token: str, ttl_ms: int
    ) -> None: ...

    def local_failure(self, exc: BaseException, generation: int) -> None: ...

    def snapshot(self) -> View: ...


class Queue(Protocol):
    """What a storage needs of its backend (the thread behind it)."""

    name: str
    degraded: bool
    closed: bool

    def register(self, storage: SharedStorage) -> None: ...

    def submit(self, item: Any) -> None: ...


class SharedStorage(pybreaker.CircuitBreakerStorage):
    """A pybreaker storage whose state is shared through a backend.

    The fields pybreaker reads and writes are a local view in memory;
    the ``push_*`` methods queue the matching operation for the backend
    thread and never block. The gate bound with :meth:`bind` hears back
    through its :class:`Sink` (``sync``, ``claimed``, ``local_failure``,
    ``snapshot``).

    .. versionadded:: 0.1.0
    """

    def __init__(self, backend: Queue, name: str) -> None:
        super().__init__(backend.name)
        self.breaker_name = name
        self.backend = backend
        self._state: str = CLOSED
        self._counter = 0
        self._successes = 0
        self._opened_at: dt.datetime | None = None
        #: Guards the hand-over to the gate and the queue of sent ops.
        self._lock = threading.Lock()
        self._sink: Sink | None = None
        self._early: View | None = None
        self._constructed = False
        self._sent: deque[_Op] = deque()
        #: The queued ``count`` operation further counts merge into.
        self._tally: _Op | None = None
        self._optimistic = 0
        #: The highest ``version`` seen; older pub/sub news is ignored.
        self.seen_version = -1
        self._last: View | None = None
        backend.register(self)
        op = _Op(self, "seed", time.time(), View().args())
        op.done = threading.Event()
        self._send(op)
        if not _on_event_loop():
            op.done.wait(STARTUP_WAIT)
        with self._lock:
            self._constructed = True

    # -- pybreaker's storage interface: the local view ----------------------

    @property
    def state(self) -> str:
        """The circuit state of the local view."""
        return self._state

    @state.setter
    def state(self, state: str) -> None:
        self._state = state

    def increment_counter(self) -> None:
        """Count one consecutive failure (local view)."""
        self._counter += 1

    def reset_counter(self) -> None:
        """Zero the consecutive failures (local view)."""
        self._counter = 0

    def increment_success_counter(self) -> None:
        """Count one half-open success (local view)."""
        self._successes += 1

    def reset_success_counter(self) -> None:
        """Zero the half-open successes (local view)."""
        self._successes = 0

    @property
    def counter(self) -> int:
        """Consecutive failures (local view, fleet-wide as last seen)."""
        return self._counter

    @property
    def success_counter(self) -> int:
        """Half-open successes (local view)."""
        return self._successes

    @property
    def opened_at(self) -> dt.datetime | None:
        """When the circuit last opened."""
        return self._opened_at

    @opened_at.setter
    def opened_at(self, value: dt.datetime) -> None:
        self._opened_at = value

    def set_counts(self, counter: int, successes: int) -> None:
        """Adopt the counters of the shared store (gate lock held)."""
        self._counter = counter
        self._successes = successes

    # -- the gate's side ----------------------------------------------------

    @property
    def degraded(self) -> bool:
        """Whether the store is unreachable (the gate then works alone)."""
        return self.backend.degraded or self.backend.closed

    def bind(self, sink: Sink) -> View | None:
        """Route the store's answers to *sink*; the state loaded so far."""
        with self._lock:
            self._sink = sink
            early, self._early = self._early, None
        return early

    def optimistic(self) -> int:
        """Operations sent with a local transition not yet confirmed."""
        return self._optimistic

    def steal_events(self, state: str) -> list[Any]:
        """Take the events of the first unconfirmed transition to *state*.

        When an earlier operation (a fleet-wide count) made a transition
        that a later, still queued one also made locally, the winner logs
        the local event and the later operation has nothing left to log.
        """
        with self._lock:
            for op in self._sent:
                if op.events and op.events[-1].new_state == state:
                    events, op.events = op.events, []
                    self._optimistic -= 1
                    return events
        return []

    def push_failure(
        self,
        exc: BaseException,
        now: float,
        *,
        threshold: int,
        open_for: float,
        generation: int,
    ) -> None:
        """A counted failure while closed: the store counts, may open.

        Consecutive failures and resets wait in one ``count`` operation
        until the backend thread takes it, so a flood costs one queued
        operation per round trip, not one per call.
        """
        args = (threshold, _ms(open_for), 1, 0, 0)
        with self._lock:
            op = self._tally
            merged = None
            if op is not None and (
                op.generation == generation or op.exc is None
            ):
                merged = merge_count(op.args, args)
            if op is not None and merged is not None:
                op.args = merged
                op.now, op.exc, op.generation = _ms(now), exc, generation
                return
        op = _Op(self, "count", now, args)
        op.exc = exc
        op.generation = generation
        self._send(op, tally=True)

    def push_success(self, now: float) -> None:
        """A success while closed with failures counted: reset them."""
        with self._lock:
            op = self._tally
            if op is not None:
                merged = merge_count(op.args, RESET)
                if merged is not None:
                    op.args = merged
                    return
        self._send(_Op(self, "count", now, RESET), tally=True)

    def push_open(
        self,
        now: float,
        *,
        open_for: float,
        forced: bool,
        events: list[Any],
        wait: bool = False,
    ) -> _Op:
        """This process opened the circuit (rate window or operator)."""
        op = _Op(self, "open", now, (_ms(open_for), int(forced)), events)
        return self._send(op, wait=wait)

    def push_close(
        self, now: float, *, reset: bool, events: list[Any], wait: bool
    ) -> _Op:
        """An operator closed (or reset) the circuit."""
        op = _Op(self, "close", now, (int(reset),), events)
        return self._send(op, wait=wait)

    @staticmethod
    def wait(op: _Op, timeout: float = STARTUP_WAIT) -> bool:
        """Block until *op* ran (only where blocking is allowed)."""
        return op.done is not None and op.done.wait(timeout)

    def push_claim(
        self, now: float, *, max_calls: int, ttl: float, token: str
    ) -> None:
        """Ask for one of the fleet's ``half_open_max_calls`` probe slots."""
        self._send(_Op(self, "claim", now, (max_calls, token, _ms(ttl))))

    def push_verdict(
        self,
        token: str,
        now: float,
        *,
        ok: bool,
        success_threshold: int,
        open_for: float,
        events: list[Any],
    ) -> None:
        """A probe's outcome: it frees the lease, may close or reopen."""
        args = (token, int(ok), success_threshold, _ms(open_for))
        self._send(_Op(self, "done", now, args, events))

    def push_hold(self, token: str, now: float, *, ttl: float) -> None:
        """A probe starts on its lease: keep the slot for *ttl* seconds."""
        self._send(_Op(self, "hold", now, (token, _ms(ttl))))

    def push_release(self, token: str, now: float) -> None:
        """A probe was cancelled: free its lease, count nothing."""
        self._send(_Op(self, "release", now, (token,)))

    def _send(
        self, op: _Op, *, wait: bool = False, tally: bool = False
    ) -> _Op:
        if wait:
            op.done = threading.Event()
        with self._lock:
            self._sent.append(op)
            if op.events:
                self._optimistic += 1
            # Only consecutive counts merge: any other operation ends it.
            self._tally = op if tally else None
        self.backend.submit(op)
        return op

    # -- the backend thread's side -------------------------------------------

    def take(self, op: _Op) -> None:
        """The backend thread runs *op* now: nothing may merge into it."""
        with self._lock:
            if self._tally is op:
                self._tally = None

    def _settle(self, op: _Op) -> list[Any]:
        """Forget a sent operation; its events if they are still owed."""
        with self._lock:
            with contextlib.suppress(ValueError):
                self._sent.remove(op)
            events, op.events = op.events, []
            if events:
                self._optimistic -= 1
        return events

    def _complete(self, op: _Op, outcome: Outcome) -> None:
        """The store answered *op* (backend thread)."""
        events = self._settle(op)
        op.outcome = outcome
        self.seen_version = outcome.view.version
        self._last = outcome.view
        with self._lock:
            sink = self._sink
            if sink is None:
                self._early = outcome.view
                if not self._constructed:
                    self._load(outcome.view)
        if sink is not None:
            if op.kind == "claim":
                token, ttl_ms = str(op.args[1]), int(op.args[2])
                sink.claimed(outcome, token, ttl_ms)
            else:
                sink.sync(
                    outcome.view,
                    ours=outcome.won and op.kind != "seed",
                    events=events,
                    resync=op.resync,
                )
        if op.done is not None:
            op.done.set()

    def _fail(self, op: _Op) -> None:
        """The store could not run *op*: the local state stands alone."""
        self.take(op)
        events = self._settle(op)
        with self._lock:
            sink = self._sink
        # While degraded this process is the only authority it has.
        for event in events:
            event.emit()
        if sink is not None:
            if op.kind == "count" and op.exc is not None:
                # The gate reset its own count on the successes already;
                # the failures it left to the store are counted here.
                _, _, before, reset, after = op.args
                uncounted = int(after) + (0 if reset else int(before))
                for _ in range(uncounted):
                    sink.local_failure(op.exc, op.generation)
            elif op.kind == "claim":
                sink.claimed(None, str(op.args[1]), 0)
        if op.done is not None:
            op.done.set()

    def _news(self, view: View) -> None:
        """Another process changed the circuit (pub/sub, poll, refresh)."""
        if view.version < self.seen_version or view == self._last:
            return  # stale, or the echo of what we were just told
        self.seen_version = view.version
        self._last = view
        with self._lock:
            sink = self._sink
            if sink is None:
                self._early = view
                return
        sink.sync(view, ours=False, events=[])

    def _load(self, view: View) -> None:
        """Start from the stored state (before pybreaker reads it)."""
        self._state = view.state
        self._counter = view.counter
        self._successes = view.successes
        if view.opened_at:
            import datetime as dt  # noqa: PLC0415

            self._opened_at = dt.datetime.fromtimestamp(
                view.opened_at / 1000, tz=dt.UTC
            )

    def after_fork(self) -> None:
        """In a forked child: new lock; operations of the parent forgotten."""
        self._lock = threading.Lock()
        self._sent.clear()
        self._tally = None
        self._optimistic = 0

    def snapshot(self) -> View:
        """The local view, for seeding a store that lost the circuit."""
        with self._lock:
            sink = self._sink
        if sink is not None:
            return sink.snapshot()
        opened = self._opened_at
        return View(
            self._state,
            self._counter,
            self._successes,
            _ms(opened.timestamp()) if opened is not None else 0,
            0,
            forced=False,
            version=max(self.seen_version, 0),
        )
