"""The backend thread: one per store, any number of policies.

See :class:`Backend` for what a new store must implement.
"""

from __future__ import annotations

import contextlib
import queue
import select
import threading
import time
import traceback
import weakref
from typing import TYPE_CHECKING, Any, Final

from sage_resilience._events import logger
from sage_resilience._redact import redact
from sage_resilience._storage.shared import SharedStorage, _Op
from sage_resilience._threads import start_daemon

if TYPE_CHECKING:
    from collections.abc import Callable

    from sage_resilience._storage.machine import Outcome, View

#: Seconds between full re-reads of every circuit (Redis), the bound on
#: staleness when a pub/sub message is lost.
REFRESH_INTERVAL: Final = 1.0
#: Seconds between reconnection attempts while degraded.
RETRY_INTERVAL: Final = 0.5
#: Operations run in one round trip at most.
_BATCH: Final = 256
#: Operations a backend holds queued at most. Counts merge while queued
#: (one operation per circuit and round trip), so only a store far slower
#: than its callers fills it; the backend then goes degraded.
MAX_QUEUED = 10_000

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


class _Timers:
    """When the backend thread next refreshes, polls and reconnects."""

    __slots__ = ("backend", "poll", "refresh", "retry")

    def __init__(self, backend: Backend, now: float) -> None:
        self.backend = backend
        self.refresh = now + (backend.refresh_interval or 0)
        self.poll = now + (backend.poll_interval or 0)
        self.retry = now + RETRY_INTERVAL

    def wait(self, now: float) -> float:
        """How long the thread may wait for work (at most a second)."""
        backend = self.backend
        if backend.degraded:
            wake = self.retry
        else:
            wake = min(
                self.refresh if backend.refresh_interval else float("inf"),
                self.poll if backend.poll_interval else float("inf"),
            )
        return max(0.0, min(wake - now, 1))


class Backend:
    """The thread that runs operations against one store, in order.

    One backend (one thread, one connection) serves every policy of one
    store; :func:`~sage_resilience._storage.make_storage` finds it by the
    key of :data:`~sage_resilience._storage.BACKENDS`. The thread takes
    what is queued (operations, news, refresh requests), runs the
    operations in batches of at most :data:`_BATCH`, polls or refreshes,
    and goes degraded when the store fails or falls :data:`MAX_QUEUED`
    operations behind, retrying every :data:`RETRY_INTERVAL` s.

    **Implementing a backend.** Subclass and implement, all called on the
    backend thread only:

    * :meth:`_connect` (idempotent: connect unless connected),
      :meth:`_disconnect`, :meth:`_ping` (raise when the store is away);
    * :meth:`_execute`: run each operation as one atomic step of the state
      machine (:func:`~sage_resilience._storage.machine._step`, or a twin
      of it in the store's own language) and answer an
      :class:`~sage_resilience._storage.machine.Outcome` per operation, in
      order; raise on any store failure (the batch then fails as a whole
      and every policy works alone until :meth:`_ping` and a resync pass);
    * optionally :meth:`_poll` (the circuits other processes changed, every
      :attr:`poll_interval` s), :meth:`_stop_extra` (helper threads, such
      as a pub/sub listener that :meth:`submit` s ``(name, view)`` news),
      :meth:`_forget_connection` (after ``fork()``).

    Set :attr:`name` (the ``storage:`` backend, shown in status and
    events), :attr:`refresh_interval` (full re-reads, the bound on
    staleness), and :attr:`tell_siblings` when policies of one process
    share the connection and no poll would show them each other's changes.
    Then add the backend to :data:`~sage_resilience._storage.BACKENDS` and
    to ``storage.backend`` in the configuration models.
    """

    name = "shared"
    tell_siblings = False
    poll_interval: float | None = None
    refresh_interval: float | None = REFRESH_INTERVAL

    def __init__(self, location: str) -> None:
        self.location = redact(location)
        self.degraded = False
        self.closed = False
        self._overflow = False
        self._error: str | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._storages: dict[str, weakref.WeakSet[SharedStorage]] = {}
        self._registry_lock = threading.Lock()
        self._idle = threading.Condition()
        self._outstanding = 0
        self._start()

    def _start(self) -> None:
        self._thread = start_daemon(self._run, f"{self.name}-storage")

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
        self._overflow = False
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
                # Sent by a gate that had not seen the close yet, maybe
                # under its lock, which the answer takes: answer apart.
                threading.Thread(
                    target=item.storage._fail, args=(item,), daemon=True
                ).start()
            return
        with self._idle:
            self._outstanding += 1
            full = self._outstanding > MAX_QUEUED
        self._queue.put(item)
        if full and not self.degraded:
            # The store does not keep up: every gate works alone (as when
            # the store fails) until the thread has drained the queue and
            # resynchronised; the thread logs it and drops the connection.
            self.degraded = self._overflow = True

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
        timers = _Timers(self, time.monotonic())
        while True:
            items = self._take(timers.wait(time.monotonic()))
            stop = any(item is _STOP for item in items)
            if self._overflow:
                self._overflow = False
                self._log_degraded(
                    f"more than {MAX_QUEUED} operations queued:"
                    " the store does not keep up"
                )
                timers.retry = time.monotonic() + RETRY_INTERVAL
            try:
                self._process([i for i in items if i is not _STOP])
                self._housekeep(timers, time.monotonic())
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

    def _take(self, timeout: float) -> list[Any]:
        """What is queued, at most :data:`_BATCH`; waits up to *timeout*."""
        try:
            items = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return [_TICK]
        while len(items) < _BATCH:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _housekeep(self, timers: _Timers, now: float) -> None:
        """Reconnect while degraded; else poll and refresh when due."""
        if self.degraded:
            if now >= timers.retry:
                timers.retry = now + RETRY_INTERVAL
                self._try_recover()
            return
        if self.poll_interval and now >= timers.poll:
            timers.poll = now + self.poll_interval
            self._guard(self._apply_poll)
        if self.refresh_interval and now >= timers.refresh:
            timers.refresh = now + self.refresh_interval
            self._refresh()

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
        for op in ops:
            op.storage.take(op)
        try:
            outcomes = self._execute(ops)
        except Exception as exc:
            self._degrade(exc)
            for op in ops:
                op.storage._fail(op)
                _yield_gil()
            return
        for op, outcome in zip(ops, outcomes, strict=True):
            self._answer(op, outcome)

    def _answer(self, op: _Op, outcome: Outcome) -> None:
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
        self._log_degraded(f"{type(exc).__name__}: {exc}")

    def _log_degraded(self, error: str) -> None:
        self._error = redact(error)[:500]
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
