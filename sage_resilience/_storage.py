"""Circuit state storage backends, chosen by ``storage:`` in the YAML.

``memory`` is pybreaker's own :class:`pybreaker.CircuitMemoryStorage`.
``sqlite`` and ``redis`` share one circuit between processes (and, for
Redis, hosts) without ever putting storage I/O on the caller's thread:

* Each policy gets a :class:`SharedStorage`, a
  :class:`pybreaker.CircuitBreakerStorage` whose fields (state, counters,
  ``opened_at``) are a **local view** held in memory. pybreaker reads and
  writes that view; reading it costs nothing, so a closed circuit's
  success path touches no storage at all.
* What must reach the shared store is sent as an **operation** (a
  counted failure, a probe claim, a probe's verdict, an operator action)
  put on a queue. One background thread per backend (not per policy, not
  per call) runs the operations in order, batching what has piled up into
  one round trip (a Redis pipeline, one sqlite transaction). Every
  operation is one atomic step of a small state machine, a Lua script in
  Redis and a ``BEGIN IMMEDIATE`` transaction in sqlite, and answers with
  the circuit as it now stands (a :class:`View`) and whether *this* call
  made the transition (``won``). Only the winner logs
  ``circuit_state_changed``; every other process adopts the new state
  silently (a ``circuit_state_synced`` debug event).
* Other processes' transitions arrive by Redis pub/sub (about a
  millisecond) with a full refresh every second as a backstop, or, for
  sqlite, by polling ``PRAGMA data_version`` every 50 ms.
* When the store fails (Redis down or stalled, sqlite locked past its
  busy timeout) the backend goes **degraded**: ``storage_degraded`` is
  logged once, every policy keeps working on its local state exactly like
  the memory backend, and the thread retries every half second. When the
  store answers again ``storage_recovered`` is logged and every policy is
  resynchronised (the store's state wins; a store that lost its data, such
  as a restarted Redis without persistence, is seeded from the local
  state). Nothing a caller does ever raises because storage failed.

The state machine (what each operation does) is written twice, once in
Lua (:data:`_LUA`) and once in Python (:func:`_step`, used by sqlite and
the tests); the two are kept line for line alike. See ``docs/storage.md``
for the consistency each backend gives.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import json
import os
import queue
import select
import sqlite3
import threading
import time
import traceback
import uuid
import weakref
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import pybreaker

from sage_resilience._events import CLOSED, HALF_OPEN, OPEN, logger
from sage_resilience._redact import redact

if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Iterable

    from sage_resilience._config import StorageConfig

__all__ = [
    "REFRESH_INTERVAL",
    "SQLITE_POLL_INTERVAL",
    "SharedStorage",
    "View",
    "close_storages",
    "flush_storages",
    "make_storage",
]

#: Seconds between full re-reads of every circuit (Redis), the bound on
#: staleness when a pub/sub message is lost.
REFRESH_INTERVAL: Final = 1.0
#: Seconds between ``PRAGMA data_version`` checks (sqlite): the bound on
#: how long another process's change takes to be seen.
SQLITE_POLL_INTERVAL: Final = 0.05
#: Seconds between reconnection attempts while degraded.
RETRY_INTERVAL: Final = 0.5
#: Seconds a process constructing a policy outside an event loop waits for
#: the stored state (so it starts in the state its storage holds).
STARTUP_WAIT: Final = 2.0
#: Default socket timeouts for Redis (a URL query may override them).
REDIS_TIMEOUT: Final = 0.5
#: sqlite busy timeout: how long a transaction waits for another writer.
SQLITE_BUSY_TIMEOUT: Final = 2.0
#: Operations run in one round trip at most.
_BATCH: Final = 256
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


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _on_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


# --------------------------------------------------------------------------
# The shared state machine
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class View:
    """One circuit as the shared store holds it.

    Times are integer milliseconds since the epoch; ``probe_at`` is when a
    probe becomes allowed (0 when closed or forced open). ``version``
    grows by one on every transition.
    """

    state: str = CLOSED
    counter: int = 0
    successes: int = 0
    opened_at: int = 0
    probe_at: int = 0
    forced: bool = False
    version: int = 0

    def args(self) -> tuple[str | int, ...]:
        """The fields in the order the seed operation takes them."""
        return (
            self.state,
            self.counter,
            self.successes,
            self.opened_at,
            self.probe_at,
            int(self.forced),
            self.version,
        )

    @classmethod
    def parse(cls, fields: Iterable[Any]) -> View:
        """Build a view from ``state, counter, ... , version`` values."""
        st, c, s, oa, pa, f, v = fields
        if isinstance(st, bytes):
            st = st.decode()
        if st not in {CLOSED, OPEN, HALF_OPEN}:
            msg = f"unknown circuit state {st!r}"
            raise ValueError(msg)
        return cls(
            str(st), int(c), int(s), int(oa), int(pa), bool(int(f)), int(v)
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one operation did: the view after it, and its verdicts."""

    view: View
    won: bool  # this operation made the transition (or seeded the store)
    granted: bool = False  # a probe claim got its lease
    hint: int = 0  # no lease: when one may free up (ms), 0 if unknown


class _Row:
    """The mutable twin of the Lua script's locals."""

    __slots__ = (
        "c",
        "dirty",
        "f",
        "granted",
        "hint",
        "leases",
        "leases_changed",
        "missing",
        "now",
        "oa",
        "pa",
        "publish",
        "s",
        "st",
        "v",
        "won",
    )

    def __init__(
        self, view: View | None, leases: dict[str, int], now: int
    ) -> None:
        self.missing = view is None
        view = view or View()
        self.st = view.state
        self.c = view.counter
        self.s = view.successes
        self.oa = view.opened_at
        self.pa = view.probe_at
        self.f = int(view.forced)
        self.v = view.version
        self.leases = leases
        self.leases_changed = False
        self.now = now
        self.won = self.granted = self.hint = 0
        self.dirty = self.publish = False

    def view(self) -> View:
        return View(
            self.st, self.c, self.s, self.oa, self.pa, bool(self.f), self.v
        )

    def move(self, new: str) -> None:
        self.st = new
        self.v += 1
        self.s = 0
        self.won = 1
        self.dirty = self.publish = True
        if self.leases:
            self.leases.clear()
            self.leases_changed = True

    def open(self, for_ms: int, forced: int) -> None:
        self.move(OPEN)
        self.oa = self.now
        self.f = forced
        self.pa = 0 if forced else self.now + for_ms

    def close(self) -> None:
        self.move(CLOSED)
        self.c = self.oa = self.pa = self.f = 0


def _step(row: _Row, op: str, args: tuple[str | int, ...]) -> None:
    """One operation on one circuit; the Python twin of :data:`_LUA`."""
    now = row.now
    if op == "fail":
        if row.st == CLOSED:
            row.c += 1
            row.dirty = row.publish = True
            if row.c >= int(args[0]):
                row.open(int(args[1]), 0)
    elif op == "ok":
        if row.st == CLOSED and row.c > 0:
            row.c = 0
            row.dirty = row.publish = True
    elif op == "open":
        if str(args[1]) == "1":
            if row.st != OPEN:
                row.open(int(args[0]), 1)
            elif row.f == 0:
                row.f, row.pa = 1, 0
                row.dirty = row.publish = True
        elif row.st == CLOSED:
            row.open(int(args[0]), 0)
    elif op == "close":
        if row.st != CLOSED or row.f == 1:
            row.close()
        if str(args[0]) == "1" and (row.c != 0 or row.s != 0):
            row.c = row.s = 0
            row.dirty = row.publish = True
    elif op == "claim":
        if row.st == OPEN and row.f == 0 and now >= row.pa:
            row.move(HALF_OPEN)
        if row.st == HALF_OPEN:
            live = {t: e for t, e in row.leases.items() if e > now}
            if len(live) != len(row.leases):
                row.leases_changed = True
            row.leases = live
            if len(live) < int(args[0]):
                live[str(args[1])] = now + int(args[2])
                row.leases_changed = True
                row.granted = 1
            else:
                row.hint = min(live.values())
        elif row.st == OPEN:
            row.hint = row.pa
    elif op == "done":
        if row.leases.pop(str(args[0]), None) is not None:
            row.leases_changed = True
            if row.st == HALF_OPEN:
                if str(args[1]) == "1":
                    row.s += 1
                    row.dirty = row.publish = True
                    if row.s >= int(args[2]):
                        row.close()
                else:
                    row.c += 1
                    row.open(int(args[3]), 0)
    elif op == "hold":
        if str(args[0]) in row.leases:
            row.leases[str(args[0])] = now + int(args[1])
            row.leases_changed = True
    elif op == "release":
        if row.leases.pop(str(args[0]), None) is not None:
            row.leases_changed = True
            row.publish = True
    elif op == "seed" and row.missing:
        seeded = View.parse(args)
        row.st, row.c, row.s = seeded.state, seeded.counter, seeded.successes
        row.oa, row.pa = seeded.opened_at, seeded.probe_at
        row.f, row.v = int(seeded.forced), seeded.version
        row.won = 1
        row.dirty = True


#: The same state machine, atomically in Redis. KEYS: the circuit's hash
#: and its probe leases (a sorted set of token -> expiry). ARGV: operation,
#: now (ms), pub/sub channel, circuit name, then the operation's arguments.
_LUA: Final = """
local key, leases = KEYS[1], KEYS[2]
local op, now, channel, name = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local h = redis.call('HMGET', key, 'st', 'c', 's', 'oa', 'pa', 'f', 'v')
local missing = not h[1]
local st = h[1] or 'closed'
local c = tonumber(h[2]) or 0
local s = tonumber(h[3]) or 0
local oa = tonumber(h[4]) or 0
local pa = tonumber(h[5]) or 0
local f = tonumber(h[6]) or 0
local v = tonumber(h[7]) or 0
local won, granted, hint = 0, 0, 0
local dirty, publish = false, false

local function move(new)
  st = new
  v = v + 1
  s = 0
  won = 1
  dirty = true
  publish = true
  redis.call('DEL', leases)
end

local function open(for_ms, forced)
  move('open')
  oa = now
  f = forced
  if forced == 1 then pa = 0 else pa = now + for_ms end
end

local function close()
  move('closed')
  c = 0
  oa = 0
  pa = 0
  f = 0
end

if op == 'fail' then
  if st == 'closed' then
    c = c + 1
    dirty = true
    publish = true
    if c >= tonumber(ARGV[5]) then open(tonumber(ARGV[6]), 0) end
  end
elseif op == 'ok' then
  if st == 'closed' and c > 0 then
    c = 0
    dirty = true
    publish = true
  end
elseif op == 'open' then
  if ARGV[6] == '1' then
    if st ~= 'open' then
      open(tonumber(ARGV[5]), 1)
    elseif f == 0 then
      f = 1
      pa = 0
      dirty = true
      publish = true
    end
  elseif st == 'closed' then
    open(tonumber(ARGV[5]), 0)
  end
elseif op == 'close' then
  if st ~= 'closed' or f == 1 then close() end
  if ARGV[5] == '1' and (c ~= 0 or s ~= 0) then
    c = 0
    s = 0
    dirty = true
    publish = true
  end
elseif op == 'claim' then
  if st == 'open' and f == 0 and now >= pa then move('half-open') end
  if st == 'half-open' then
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
    if redis.call('ZCARD', leases) < tonumber(ARGV[5]) then
      local ttl = tonumber(ARGV[7])
      redis.call('ZADD', leases, now + ttl, ARGV[6])
      granted = 1
    else
      hint = tonumber(redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')[2])
    end
  elseif st == 'open' then
    hint = pa
  end
elseif op == 'done' then
  if redis.call('ZREM', leases, ARGV[5]) == 1 and st == 'half-open' then
    if ARGV[6] == '1' then
      s = s + 1
      dirty = true
      publish = true
      if s >= tonumber(ARGV[7]) then close() end
    else
      c = c + 1
      open(tonumber(ARGV[8]), 0)
    end
  end
elseif op == 'hold' then
  if redis.call('ZSCORE', leases, ARGV[5]) then
    redis.call('ZADD', leases, now + tonumber(ARGV[6]), ARGV[5])
  end
elseif op == 'release' then
  if redis.call('ZREM', leases, ARGV[5]) == 1 then publish = true end
elseif op == 'seed' and missing then
  st = ARGV[5]
  c = tonumber(ARGV[6])
  s = tonumber(ARGV[7])
  oa = tonumber(ARGV[8])
  pa = tonumber(ARGV[9])
  f = tonumber(ARGV[10])
  v = tonumber(ARGV[11])
  won = 1
  dirty = true
end
if op == 'claim' or op == 'hold' then
  -- The leases key lives as long as its longest lease.
  local last = redis.call('ZRANGE', leases, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', leases, last[2]) end
end
if dirty then
  redis.call('HSET', key, 'st', st, 'c', c, 's', s, 'oa', oa, 'pa', pa,
             'f', f, 'v', v)
end
if publish then
  redis.call('PUBLISH', channel, cjson.encode({name, st, c, s, oa, pa, f, v}))
end
return {won, granted, hint, st, c, s, oa, pa, f, v}
"""


# --------------------------------------------------------------------------
# Operations and the policy-side storage
# --------------------------------------------------------------------------


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


class SharedStorage(pybreaker.CircuitBreakerStorage):
    """A pybreaker storage whose state is shared through a backend.

    The fields pybreaker reads and writes are a local view in memory;
    the ``push_*`` methods queue the matching operation for the backend
    thread and never block. The gate bound with :meth:`bind` hears back
    through its :class:`Sink` (``sync``, ``claimed``, ``local_failure``,
    ``snapshot``).

    .. versionadded:: 0.1.0
    """

    def __init__(self, backend: _Backend, name: str) -> None:
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
        return self.backend.degraded

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
        """A counted failure while closed: the store counts, may open."""
        op = _Op(self, "fail", now, (threshold, _ms(open_for)))
        op.exc = exc
        op.generation = generation
        self._send(op)

    def push_success(self, now: float) -> None:
        """A success while closed with failures counted: reset them."""
        self._send(_Op(self, "ok", now))

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

    def _send(self, op: _Op, *, wait: bool = False) -> _Op:
        if wait:
            op.done = threading.Event()
        with self._lock:
            self._sent.append(op)
            if op.events:
                self._optimistic += 1
        self.backend.submit(op)
        return op

    # -- the backend thread's side -------------------------------------------

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
        events = self._settle(op)
        with self._lock:
            sink = self._sink
        # While degraded this process is the only authority it has.
        for event in events:
            event.emit()
        if sink is not None:
            if op.kind == "fail" and op.exc is not None:
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


# --------------------------------------------------------------------------
# Backends: one thread, one connection, any number of policies
# --------------------------------------------------------------------------

_STOP: Final = object()
_TICK: Final = object()


def _yield_gil() -> None:
    """Let the event loop's thread run between two operations.

    Handling one answer is some tens of microseconds of Python; a batch
    of hundreds would otherwise keep the GIL for a whole switch interval
    (5 ms) while the loop thread waits for it.
    """
    try:
        time.sleep(0)
    except OSError:  # a C library that refuses the sleep (libfaketime)
        select.select((), (), (), 0)


class _Backend:
    """The thread that runs operations against one store, in order."""

    name = "shared"
    tell_siblings = False
    poll_interval: float | None = None
    refresh_interval: float | None = REFRESH_INTERVAL

    def __init__(self, location: str) -> None:
        self.location = redact(location)
        self.degraded = False
        self.closed = False
        self._error: str | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._storages: dict[str, weakref.WeakSet[SharedStorage]] = {}
        self._registry_lock = threading.Lock()
        self._idle = threading.Condition()
        self._outstanding = 0
        self._start()

    def _start(self) -> None:
        self._thread = threading.Thread(
            target=self._run,
            name=f"sage-resilience-{self.name}-storage",
            daemon=True,
        )
        self._thread.start()

    def after_fork(self) -> None:
        """In a forked child: new locks, queue and thread, no connection.

        Threads do not survive ``fork()``; a prefork server (gunicorn
        ``--preload``) that built its policies before forking would
        otherwise queue operations nobody runs. Connections inherited
        from the parent are dropped unclosed (closing them would close
        the parent's too).
        """
        self._queue = queue.SimpleQueue()
        self._registry_lock = threading.Lock()
        self._idle = threading.Condition()
        self._outstanding = 0
        self._forget_connection()
        if not self.closed:
            self._start()
        for storage in self.storages():
            storage.after_fork()

    def _forget_connection(self) -> None:
        """Drop the connection objects without using them."""

    # -- used by storages and the module ------------------------------------

    def register(self, storage: SharedStorage) -> None:
        with self._registry_lock:
            self._storages.setdefault(
                storage.breaker_name, weakref.WeakSet()
            ).add(storage)

    def storages(self, name: str | None = None) -> list[SharedStorage]:
        with self._registry_lock:
            if name is not None:
                return list(self._storages.get(name, ()))
            return [s for group in self._storages.values() for s in group]

    def submit(self, item: Any) -> None:
        if self.closed:
            if isinstance(item, _Op):
                item.storage._fail(item)
            return
        with self._idle:
            self._outstanding += 1
        self._queue.put(item)

    def flush(self, timeout: float) -> bool:
        """Wait until every queued operation ran (or *timeout* passed)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._outstanding:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._idle.wait(left)
        return True

    def close(self) -> None:
        if self.closed:
            return
        self._queue.put(_STOP)
        self._thread.join(timeout=5)
        self.closed = True
        self._stop_extra()

    # -- to implement --------------------------------------------------

    def _connect(self) -> None:
        raise NotImplementedError

    def _disconnect(self) -> None:
        raise NotImplementedError

    def _execute(self, ops: list[_Op]) -> list[Outcome]:
        """Run *ops* atomically each, in order; raise on store failure."""
        raise NotImplementedError

    def _ping(self) -> None:
        raise NotImplementedError

    def _poll(self) -> list[tuple[str, View]]:
        """Circuits other processes changed since the last poll."""
        return []

    def _stop_extra(self) -> None:
        """Stop helper threads (pub/sub)."""

    # -- the thread ----------------------------------------------------

    def _run(self) -> None:
        try:
            self._connect()
        except Exception as exc:
            self._degrade(exc)
        now = time.monotonic()
        next_refresh = now + (self.refresh_interval or 0)
        next_poll = now + (self.poll_interval or 0)
        next_retry = now + RETRY_INTERVAL
        while True:
            now = time.monotonic()
            if self.degraded:
                wake = next_retry
            else:
                wake = min(
                    next_refresh if self.refresh_interval else float("inf"),
                    next_poll if self.poll_interval else float("inf"),
                )
            try:
                first = self._queue.get(timeout=max(0.0, min(wake - now, 1)))
            except queue.Empty:
                first = _TICK
            items = [first]
            while len(items) < _BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            stop = any(item is _STOP for item in items)
            try:
                self._process([i for i in items if i is not _STOP])
                now = time.monotonic()
                if self.degraded:
                    if now >= next_retry:
                        next_retry = now + RETRY_INTERVAL
                        self._try_recover()
                else:
                    if self.poll_interval and now >= next_poll:
                        next_poll = now + self.poll_interval
                        self._guard(self._apply_poll)
                    if self.refresh_interval and now >= next_refresh:
                        next_refresh = now + self.refresh_interval
                        self._refresh()
            except Exception as exc:  # never kill the thread
                logger.error(
                    "storage_thread_error",
                    backend=self.name,
                    error=redact(f"{type(exc).__name__}: {exc}")[:500],
                    traceback=redact(traceback.format_exc()),
                )
            finally:
                self._done(
                    sum(1 for i in items if i is not _TICK and i is not _STOP)
                )
            if stop:
                break
        with contextlib.suppress(Exception):
            self._disconnect()

    def _done(self, count: int) -> None:
        if not count:
            return
        with self._idle:
            self._outstanding -= count
            if self._outstanding <= 0:
                self._outstanding = 0
                self._idle.notify_all()

    def _process(self, items: list[Any]) -> None:
        ops: list[_Op] = []
        for item in items:
            if isinstance(item, _Op):
                ops.append(item)
                continue
            self._run_ops(ops)
            ops = []
            if isinstance(item, tuple):  # (name, view) news
                name, view = item
                for storage in self.storages(name):
                    storage._news(view)
            elif item is _REFRESH and not self.degraded:
                self._refresh()
        self._run_ops(ops)

    def _run_ops(self, ops: list[_Op]) -> None:
        if not ops:
            return
        if self.degraded:
            for op in ops:
                op.storage._fail(op)
                _yield_gil()
            return
        try:
            outcomes = self._execute(ops)
        except Exception as exc:
            self._degrade(exc)
            for op in ops:
                op.storage._fail(op)
                _yield_gil()
            return
        for op, outcome in zip(ops, outcomes, strict=True):
            op.storage._complete(op, outcome)
            _yield_gil()
            if self.tell_siblings:
                # Policies of this process with the same name share the
                # connection, so no poll would show them the change.
                for sibling in self.storages(op.storage.breaker_name):
                    if sibling is not op.storage:
                        sibling._news(outcome.view)

    def _guard(self, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:
            self._degrade(exc)

    def _apply_poll(self) -> None:
        for name, view in self._poll():
            for storage in self.storages(name):
                storage._news(view)

    def _refresh(self, *, resync: bool = False) -> bool:
        """Re-read every circuit; seed the ones the store lost.

        Returns:
            Whether the store answered.
        """
        ops = []
        for storage in self.storages():
            op = _Op(storage, "seed", time.time(), storage.snapshot().args())
            op.resync = resync
            ops.append(op)
        if not ops:
            return True
        try:
            outcomes = self._execute(ops)
        except Exception as exc:
            self._degrade(exc)
            return False
        for op, outcome in zip(ops, outcomes, strict=True):
            op.storage._complete(op, outcome)
            _yield_gil()
        return True

    def _degrade(self, exc: BaseException) -> None:
        if self.degraded:
            return
        self.degraded = True
        self._error = redact(f"{type(exc).__name__}: {exc}")[:500]
        logger.warning(
            "storage_degraded", backend=self.name, error=self._error
        )
        with contextlib.suppress(Exception):
            self._disconnect()

    def _try_recover(self) -> None:
        """Back to the store once it answers a ping *and* the resync.

        A store that is starting (a restarting Redis) may accept a
        connection and still fail the first real work; declaring recovery
        only after the resync keeps degraded/recovered from flapping.
        """
        try:
            self._connect()
            self._ping()
        except Exception:
            with contextlib.suppress(Exception):
                self._disconnect()
            return
        if not self._refresh(resync=True):
            with contextlib.suppress(Exception):
                self._disconnect()
            return
        self.degraded = False
        logger.info("storage_recovered", backend=self.name, error=self._error)


_REFRESH: Final = object()


# -- Redis -------------------------------------------------------------------


class _RedisBackend(_Backend):
    """Redis: Lua scripts, pub/sub news, a refresh every second."""

    name = "redis"

    def __init__(self, url: str, namespace: str) -> None:
        import redis  # noqa: PLC0415

        self._redis = redis
        self._url = url
        self._namespace = namespace
        self.channel = f"{namespace}:events"
        self._client: Any = None
        self._sha: str | None = None
        self._stopping = threading.Event()
        self._pubsub: Any = None
        super().__init__(url)
        self._start_listener()

    def _start_listener(self) -> None:
        self._listener = threading.Thread(
            target=self._listen,
            name="sage-resilience-redis-pubsub",
            daemon=True,
        )
        self._listener.start()

    def _new_client(self) -> Any:
        from redis.backoff import NoBackoff  # noqa: PLC0415
        from redis.retry import Retry  # noqa: PLC0415

        kwargs: dict[str, Any] = {"retry": Retry(NoBackoff(), 0)}
        if "socket_timeout" not in self._url:
            kwargs["socket_timeout"] = REDIS_TIMEOUT
        if "socket_connect_timeout" not in self._url:
            kwargs["socket_connect_timeout"] = REDIS_TIMEOUT
        return self._redis.Redis.from_url(self._url, **kwargs)

    def keys(self, name: str) -> list[str]:
        """The circuit's hash and its probe leases."""
        base = f"{self._namespace}:breaker:{name}"
        return [base, f"{base}:probes"]

    def _connect(self) -> None:
        if self._client is None:
            self._client = self._new_client()

    def _disconnect(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()

    def _ping(self) -> None:
        self._client.ping()

    def _execute(self, ops: list[_Op]) -> list[Outcome]:
        self._connect()
        client = self._client
        if self._sha is None:
            self._sha = client.script_load(_LUA)
        try:
            replies = self._pipeline(client, ops)
        except self._redis.exceptions.NoScriptError:
            replies = [self._redis.exceptions.NoScriptError()]
        if any(_noscript(r) for r in replies):
            # The server lost its script cache (a restart): load it again.
            # No operation ran: a missing script fails before any write.
            self._sha = client.script_load(_LUA)
            replies = self._pipeline(client, ops)
        outcomes = []
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
            outcomes.append(
                Outcome(
                    View.parse(reply[3:]),
                    bool(reply[0]),
                    bool(reply[1]),
                    int(reply[2]),
                )
            )
        return outcomes

    def _pipeline(self, client: Any, ops: list[_Op]) -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for op in ops:
            name = op.storage.breaker_name
            pipe.evalsha(
                self._sha,
                2,
                *self.keys(name),
                op.kind,
                op.now,
                self.channel,
                name,
                *op.args,
            )
        replies: list[Any] = pipe.execute(raise_on_error=False)
        return replies

    def _listen(self) -> None:
        """Pub/sub: turn other processes' transitions into news."""
        while not self._stopping.is_set():
            client = None
            try:
                client = self._new_client()
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                self._pubsub = pubsub
                pubsub.subscribe(self.channel)
                # Whatever was published while unsubscribed: re-read.
                self.submit(_REFRESH)
                while not self._stopping.is_set():
                    # Short waits so that close() is prompt; idle cost is
                    # a few wake-ups a second.
                    message = pubsub.get_message(timeout=0.25)
                    if message is None:
                        continue
                    with contextlib.suppress(ValueError, TypeError):
                        fields = json.loads(message["data"])
                        self.submit((str(fields[0]), View.parse(fields[1:])))
            except Exception:
                self._stopping.wait(RETRY_INTERVAL)
            finally:
                with contextlib.suppress(Exception):
                    if self._pubsub is not None:
                        self._pubsub.close()
                    if client is not None:
                        client.close()
                self._pubsub = None

    def _stop_extra(self) -> None:
        self._stopping.set()
        self._listener.join(timeout=3)

    def _forget_connection(self) -> None:
        self._client = None
        self._pubsub = None
        self._stopping = threading.Event()
        if not self.closed:
            self._start_listener()


def _noscript(reply: Any) -> bool:
    return isinstance(reply, Exception) and (
        type(reply).__name__ == "NoScriptError" or "NOSCRIPT" in str(reply)
    )


# -- sqlite ------------------------------------------------------------------

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS breakers (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    counter INTEGER NOT NULL,
    successes INTEGER NOT NULL,
    opened_at INTEGER NOT NULL,
    probe_at INTEGER NOT NULL,
    forced INTEGER NOT NULL,
    version INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS probes (
    name TEXT NOT NULL,
    token TEXT NOT NULL,
    expires INTEGER NOT NULL,
    PRIMARY KEY (name, token)
) WITHOUT ROWID;
"""

_COLUMNS: Final = (
    "state, counter, successes, opened_at, probe_at, forced, version"
)


class _SqliteBackend(_Backend):
    """sqlite in WAL mode: short transactions, ``data_version`` polling."""

    name = "sqlite"
    tell_siblings = True
    poll_interval = SQLITE_POLL_INTERVAL
    refresh_interval = None

    def __init__(self, path: str) -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None
        self._data_version = -1
        super().__init__(path)

    def _connect(self) -> None:
        if self._db is not None:
            return
        Path(self._path).parent.mkdir(parents=True, exist_ok=True)
        # Several processes opening a new file at once race for the switch
        # to WAL, which needs an exclusive lock and answers "database is
        # locked" at once instead of waiting: retry within the busy timeout.
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT
        while True:
            try:
                self._db = self._open()
            except sqlite3.OperationalError as exc:
                locked = "locked" in str(exc) or "busy" in str(exc)
                if not locked or time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)
            else:
                return

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(
            self._path, timeout=SQLITE_BUSY_TIMEOUT, isolation_level=None
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute("COMMIT")
        except BaseException:
            db.close()
            raise
        return db

    def _disconnect(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()

    def _forget_connection(self) -> None:
        self._db = None
        self._data_version = -1

    def _ping(self) -> None:
        assert self._db is not None
        self._db.execute("SELECT 1").fetchone()

    def _execute(self, ops: list[_Op]) -> list[Outcome]:
        self._connect()
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            outcomes = [self._one(db, op) for op in ops]
            db.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        return outcomes

    def _one(self, db: sqlite3.Connection, op: _Op) -> Outcome:
        name = op.storage.breaker_name
        found = db.execute(
            f"SELECT {_COLUMNS} FROM breakers WHERE name = ?",  # noqa: S608
            (name,),
        ).fetchone()
        leases = dict(
            db.execute(
                "SELECT token, expires FROM probes WHERE name = ?", (name,)
            ).fetchall()
        )
        row = _Row(View.parse(found) if found else None, leases, op.now)
        _step(row, op.kind, op.args)
        if row.dirty:
            db.execute(
                f"INSERT OR REPLACE INTO breakers (name, {_COLUMNS}) "  # noqa: S608
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (name, *row.view().args()),
            )
        if row.leases_changed:
            db.execute("DELETE FROM probes WHERE name = ?", (name,))
            db.executemany(
                "INSERT INTO probes (name, token, expires) VALUES (?, ?, ?)",
                [(name, t, e) for t, e in row.leases.items()],
            )
        return Outcome(
            row.view(), bool(row.won), bool(row.granted), int(row.hint)
        )

    def _poll(self) -> list[tuple[str, View]]:
        self._connect()
        db = self._db
        assert db is not None
        (version,) = db.execute("PRAGMA data_version").fetchone()
        if version == self._data_version:
            return []
        self._data_version = version
        names = {s.breaker_name for s in self.storages()}
        news = []
        for name, *fields in db.execute(
            f"SELECT name, {_COLUMNS} FROM breakers"  # noqa: S608
        ):
            if name in names:
                news.append((name, View.parse(fields)))
        return news


# --------------------------------------------------------------------------
# Construction
# --------------------------------------------------------------------------

_backends: dict[tuple[str, ...], _Backend] = {}
_backends_lock = threading.Lock()


def _backend_for(config: StorageConfig) -> _Backend:
    if config.backend == "sqlite":
        assert config.path is not None
        key: tuple[str, ...] = ("sqlite", str(Path(config.path).resolve()))
    else:
        assert config.url is not None
        key = ("redis", config.url, config.namespace)
    with _backends_lock:
        backend = _backends.get(key)
        if backend is None or backend.closed:
            if key[0] == "sqlite":
                backend = _SqliteBackend(key[1])
            else:
                backend = _RedisBackend(key[1], key[2])
            _backends[key] = backend
        return backend


def make_storage(
    config: StorageConfig, name: str
) -> pybreaker.CircuitBreakerStorage:
    """The pybreaker storage for policy *name*.

    ``memory`` gives a :class:`pybreaker.CircuitMemoryStorage`; ``sqlite``
    and ``redis`` give a :class:`SharedStorage` on the backend shared by
    every policy with the same store (one thread, one connection). Outside
    a running event loop this waits (at most :data:`STARTUP_WAIT` s) for
    the stored state, so a restarted process starts where it left off;
    inside one it never waits and the state arrives moments later.

    .. versionadded:: 0.1.0
    """
    if config.backend == "memory":
        return pybreaker.CircuitMemoryStorage(CLOSED)
    return SharedStorage(_backend_for(config), name)


def flush_storages(timeout: float = 2.0) -> bool:
    """Wait until every queued storage operation has run.

    Returns:
        False when *timeout* passed first.

    .. versionadded:: 0.1.0
    """
    deadline = time.monotonic() + timeout
    with _backends_lock:
        backends = list(_backends.values())
    return all(
        b.flush(max(0.0, deadline - time.monotonic())) for b in backends
    )


def close_storages() -> None:
    """Flush and stop every backend thread (tests, interpreter exit).

    Policies built earlier keep working on their local state.

    .. versionadded:: 0.1.0
    """
    with _backends_lock:
        backends = list(_backends.values())
        _backends.clear()
    for backend in backends:
        backend.flush(2.0)
        backend.close()


def _after_fork_in_child() -> None:
    global _backends_lock  # noqa: PLW0603 - the lock may be held: replace
    _backends_lock = threading.Lock()
    for backend in list(_backends.values()):
        backend.after_fork()


atexit.register(flush_storages)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
