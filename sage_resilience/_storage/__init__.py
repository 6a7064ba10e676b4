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
  one round trip (a Redis pipeline, one sqlite transaction). Counted
  failures and resets merge into one queued ``count`` operation until the
  thread takes it, and the queue is bounded (:data:`MAX_QUEUED`). Every
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

The package, in the order a call meets it:

* ``shared.py`` -- :class:`SharedStorage`, the policy's side: the local
  view, the ``push_*`` operations, the merging of queued counts;
* ``backend.py`` -- :class:`~sage_resilience._storage.backend.Backend`,
  the thread, and what a new store must implement;
* ``machine.py`` -- the state machine, written twice and kept line for line
  alike: in Python (``_step``, used by sqlite and the tests) and in Lua
  (``_LUA``, run by Redis);
* ``redis.py``, ``sqlite.py`` -- the two stores;
* this module -- :data:`BACKENDS` and the functions the rest of the
  library calls (:func:`make_storage`, :func:`flush_storages`,
  :func:`close_storages`).

See ``docs/storage.md`` for the consistency each backend gives.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Final

from sage_resilience._names import CLOSED
from sage_resilience._pybreaker import pybreaker
from sage_resilience._storage.backend import (
    MAX_QUEUED,
    REFRESH_INTERVAL,
    Backend,
)
from sage_resilience._storage.machine import (
    _LUA,
    RESET,
    Count,
    Outcome,
    View,
    _Row,
    _step,
    merge_count,
)
from sage_resilience._storage.redis import RedisBackend
from sage_resilience._storage.shared import (
    CLAIM_RETRY,
    LEASE_IDLE,
    LEASE_RESERVE,
    STARTUP_WAIT,
    SharedStorage,
    new_token,
)
from sage_resilience._storage.sqlite import SQLITE_POLL_INTERVAL, SqliteBackend
from sage_resilience.exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable

    from sage_resilience._config import StorageConfig

__all__ = [
    "BACKENDS",
    "CLAIM_RETRY",
    "LEASE_IDLE",
    "LEASE_RESERVE",
    "MAX_QUEUED",
    "REFRESH_INTERVAL",
    "RESET",
    "SQLITE_POLL_INTERVAL",
    "STARTUP_WAIT",
    "Count",
    "Outcome",
    "SharedStorage",
    "View",
    "close_storages",
    "flush_storages",
    "make_storage",
    "merge_count",
    "new_token",
]

# Re-exported for the state-machine tests.
_TWINS = (_LUA, _Row, _step)


_backends: dict[tuple[str, ...], Backend] = {}
_backends_lock = threading.Lock()


def _sqlite(
    config: StorageConfig,
) -> tuple[tuple[str, ...], Callable[[], Backend]]:
    assert config.path is not None
    path = str(Path(config.path).resolve())
    return ("sqlite", path), lambda: SqliteBackend(path)


def _redis(
    config: StorageConfig,
) -> tuple[tuple[str, ...], Callable[[], Backend]]:
    url, namespace = config.url, config.namespace
    assert url is not None
    return ("redis", url, namespace), lambda: RedisBackend(url, namespace)


#: The shared stores by ``storage.backend``: the key one backend serves
#: (one thread and connection for every policy of that store) and how to
#: build it. ``memory`` is pybreaker's own storage and needs no backend.
#: The library a store needs beyond the core install is in
#: ``sage_resilience._config.BACKEND_EXTRAS``, checked before building.
BACKENDS: Final[
    dict[
        str,
        Callable[
            [StorageConfig], tuple[tuple[str, ...], Callable[[], Backend]]
        ],
    ]
] = {"sqlite": _sqlite, "redis": _redis}


def _backend_for(config: StorageConfig) -> Backend:
    key, build = BACKENDS[config.backend](config)
    with _backends_lock:
        backend = _backends.get(key)
        if backend is None or backend.closed:
            backend = build()
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

    Raises:
        ConfigError: The backend's library is not installed (the message
            names ``storage.backend`` and the extra to install).

    .. versionadded:: 0.1.0
    """
    if config.backend == "memory":
        return pybreaker.CircuitMemoryStorage(CLOSED)
    missing = config.missing_extra()
    if missing is not None:
        raise ConfigError(missing, key="storage.backend")
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
