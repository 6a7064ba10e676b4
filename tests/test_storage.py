"""Shared and persisted circuit state.

Real stores only: a ``redis-server`` per module (tests.support.redis_server)
and sqlite files. Two kinds of tests:

- in one process, two policies with the same name share one circuit
  through the store (the backend thread and its connection are shared,
  which is what a process with several workers' worth of policies does);
- across OS processes: children started with ``python -m
  tests.test_storage`` run policies on an event loop and answer JSON
  commands on stdin/stdout (see :class:`_Child`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import select
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pybreaker
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sage_resilience import CircuitOpenError, Policy, PolicyConfig
from sage_resilience._config import ResilienceConfig, StorageConfig
from sage_resilience._registry import configure, policy
from sage_resilience._storage import (
    _LUA,
    REFRESH_INTERVAL,
    RESET,
    Count,
    SharedStorage,
    View,
    _Row,
    _step,
    close_storages,
    flush_storages,
    make_storage,
    merge_count,
)
from tests.helpers import named
from tests.support import need_binary
from tests.support.redis_server import RedisServer

ROOT = Path(__file__).resolve().parent.parent

#: The documented bound on how stale another instance's view may be
#: (docs/storage.md): Redis refreshes every second when pub/sub misses a
#: message; sqlite polls every 50 ms. Both are tested against 1 s.
STALENESS = REFRESH_INTERVAL

BACKENDS = ["redis", "sqlite"]


class Boom(ConnectionError):
    """A dependency failure."""


def boom() -> None:
    raise Boom("down")


def ok() -> str:
    return "ok"


def unique(prefix: str = "dep") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def redis_server() -> Any:
    """One redis-server for the module, on a free loopback port."""
    binary = need_binary(
        "redis-server", "install it with: apt-get install redis-server"
    )
    with RedisServer(binary) as server:
        yield server


@pytest.fixture(autouse=True)
def _stop_backends() -> Any:
    yield
    close_storages()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    return tmp_path / "state.sqlite"


def storage_config(
    backend: str, redis_server: RedisServer, sqlite_path: Path
) -> StorageConfig:
    if backend == "redis":
        return StorageConfig(
            backend="redis", url=redis_server.url, namespace=unique("ns")
        )
    return StorageConfig(backend="sqlite", path=str(sqlite_path))


@pytest.fixture(params=BACKENDS)
def shared(
    request: pytest.FixtureRequest,
    redis_server: RedisServer,
    sqlite_path: Path,
) -> StorageConfig:
    """A shared storage configuration, once per backend."""
    return storage_config(request.param, redis_server, sqlite_path)


def make(config: StorageConfig, name: str = "dep", **settings: Any) -> Policy:
    """A policy on *config*'s store (several may share one name)."""
    return Policy(
        name,
        PolicyConfig.model_validate(settings),
        storage=make_storage(config, name),
        storage_name=config.backend,
    )


def settle() -> None:
    """Wait until the store ran every queued operation and its news."""
    assert flush_storages(5.0)
    assert flush_storages(5.0)


def until(predicate: Any, timeout: float = 5.0) -> bool:
    """Poll *predicate* (liveness only: the timeout is generous)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.002)
    return True


def fail_times(p: Policy, n: int) -> list[str]:
    outcomes = []
    for _ in range(n):
        try:
            p.call(boom)
        except Exception as exc:
            outcomes.append(type(exc).__name__)
    return outcomes


def attempt(p: Policy, fn: Any = ok) -> str:
    try:
        p.call(fn)
    except Exception as exc:
        return type(exc).__name__
    return "ok"


def transitions(events: list[Any], event: str) -> list[tuple[str, str]]:
    return [(e["old_state"], e["new_state"]) for e in named(events, event)]


# --------------------------------------------------------------------------
# One process, two instances of one breaker
# --------------------------------------------------------------------------


class TestSharedCircuit:
    def test_a_trip_is_seen_by_the_other_instance(self, shared, events):
        """A opens the circuit; B, on the same store, is open too."""
        a = make(shared, failure_threshold=3)
        b = make(shared, failure_threshold=3)
        assert ["Boom"] * 3 == fail_times(a, 3)
        settle()
        assert "open" == a.state
        assert until(lambda: b.state == "open")
        assert "CircuitOpenError" == attempt(b)

    def test_only_the_instance_that_trips_logs_it(self, shared, events):
        """circuit_state_changed once; the other instance syncs quietly."""
        a = make(shared, failure_threshold=2)
        b = make(shared, failure_threshold=2)
        fail_times(a, 2)
        settle()
        assert until(lambda: b.state == "open")
        settle()
        assert [("closed", "open")] == transitions(
            events, "circuit_state_changed"
        )
        assert [("closed", "open")] == transitions(
            events, "circuit_state_synced"
        )
        change = named(events, "circuit_state_changed")[0]
        assert "consecutive_failures" == change["reason"]
        assert "warning" == change["log_level"]
        assert "debug" == named(events, "circuit_state_synced")[0]["log_level"]

    def test_consecutive_failures_count_fleet_wide(self, shared, events):
        """Two failures in A and one in B reach a threshold of three."""
        a = make(shared, failure_threshold=3)
        b = make(shared, failure_threshold=3)
        fail_times(a, 2)
        settle()
        assert until(lambda: b.status()["failure_count"] == 2)
        assert "closed" == b.state
        fail_times(b, 1)
        settle()
        assert "open" == b.state
        assert until(lambda: a.state == "open")

    def test_a_success_resets_the_fleet_count(self, shared):
        """A success where failures were counted zeroes the shared count."""
        a = make(shared, failure_threshold=3)
        b = make(shared, failure_threshold=3)
        fail_times(a, 2)
        settle()
        assert until(lambda: b.status()["failure_count"] == 2)
        assert "ok" == attempt(b)
        settle()
        assert until(lambda: a.status()["failure_count"] == 0)
        fail_times(a, 2)
        settle()
        assert "closed" == a.state
        assert 2 == a.status()["failure_count"]

    def test_closed_successes_touch_no_storage(self, shared, monkeypatch):
        """The success path of a closed circuit sends nothing to the store."""
        p = make(shared, failure_threshold=3)
        settle()
        assert isinstance(p.breaker._state_storage, SharedStorage)
        backend = p.breaker._state_storage.backend
        sent: list[Any] = []
        real = backend.submit
        monkeypatch.setattr(
            backend, "submit", lambda item: (sent.append(item), real(item))
        )

        async def fetch() -> str:
            return "ok"

        async def many() -> None:
            for _ in range(1000):
                await p.acall(fetch)

        asyncio.run(many())
        for _ in range(1000):
            p.call(ok)
        assert [] == sent
        fail_times(p, 1)
        assert ["count"] == [op.kind for op in sent]

    def test_one_probe_between_instances(self, shared, events):
        """Past the recovery time only one instance gets the probe."""
        a = make(shared, failure_threshold=1, recovery_timeout=0.2)
        b = make(shared, failure_threshold=1, recovery_timeout=0.2)
        fail_times(a, 1)
        settle()
        assert until(lambda: b.state == "open")
        time.sleep(0.25)
        # The first call past the recovery time claims the slot and, once
        # it is granted, is the probe (here one that takes its time)...
        release = threading.Event()
        probe = threading.Thread(target=a.call, args=(release.wait, 5))
        probe.start()
        assert until(lambda: a.state == "half-open")
        assert until(lambda: b.state == "half-open")
        # ...so the other instance is refused, even when it asks.
        assert "CircuitOpenError" == attempt(b)
        settle()
        assert "CircuitOpenError" == attempt(b)
        release.set()
        probe.join(5)
        settle()
        assert "closed" == a.state
        assert until(lambda: b.state == "closed")
        assert "ok" == attempt(b)
        changes = transitions(events, "circuit_state_changed")
        assert [
            ("closed", "open"),
            ("open", "half-open"),
            ("half-open", "closed"),
        ] == changes

    def test_the_first_caller_after_recovery_is_the_probe(self, shared):
        """Four instances making one call each: the first one probes and
        recovery needs no second call (sync and async)."""
        fleet = [
            make(shared, failure_threshold=1, recovery_timeout=0.2)
            for _ in range(4)
        ]
        fail_times(fleet[0], 1)
        settle()
        assert until(lambda: all(p.state == "open" for p in fleet))
        time.sleep(0.25)
        assert "ok" == attempt(fleet[1])  # sync: waited for its lease
        settle()
        assert until(lambda: all(p.state == "closed" for p in fleet))
        fail_times(fleet[2], 1)
        settle()
        assert until(lambda: all(p.state == "open" for p in fleet))
        time.sleep(0.25)

        async def one_call() -> str:
            async def ok_async() -> str:
                return "ok"

            return await fleet[3].acall(ok_async)

        assert "ok" == asyncio.run(one_call())  # async: awaited it
        settle()
        assert until(lambda: all(p.state == "closed" for p in fleet))

    def test_a_hung_probe_loses_its_slot_in_its_own_process(self, shared):
        """One instance, its probe hung: past ``half_open_max_wait`` the
        store's lease has expired and the local slot is freed too, so a
        later call probes and closes the circuit (it used to stay refused
        until another instance's verdict came)."""
        p = make(
            shared,
            unique("hung"),
            failure_threshold=1,
            recovery_timeout=0.2,
            half_open_max_wait=0.4,
        )
        fail_times(p, 1)
        settle()
        time.sleep(0.25)
        entered, release = threading.Event(), threading.Event()

        def hang() -> None:
            entered.set()
            release.wait()

        probe = threading.Thread(target=p.call, args=(hang,))
        probe.start()  # the probe hangs (a sync call has no timeout)
        try:
            assert entered.wait(5)
            assert "CircuitOpenError" == attempt(p)  # its slot is taken
            assert until(lambda: attempt(p) == "ok", timeout=5.0)
            settle()
            assert "closed" == p.state
        finally:
            release.set()
            probe.join(5)
        settle()
        assert "closed" == p.state  # the late verdict changed nothing

    def test_a_late_answer_does_not_undo_a_newer_local_opening(
        self, shared, events
    ):
        """The store's answer to an older operation is older than a local
        transition still on its way: it must not move the gate back.

        Found by tests/test_interleavings.py: a probe closes the circuit,
        and before the store has answered that verdict the next failures
        open it here at once. The verdict's answer (closed) closed the
        gate again, letting calls through, until the opening's answer
        reopened it.
        """
        p = make(shared, failure_threshold=2, recovery_timeout=0.05)
        fail_times(p, 2)
        settle()
        time.sleep(0.08)
        assert "ok" == attempt(p)  # the probe: closed, the verdict sent
        assert ["Boom", "Boom"] == fail_times(p, 2)  # open here at once
        assert "open" == p.state
        settle()
        assert "open" == p.state
        assert ("open", "closed") not in transitions(
            events, "circuit_state_synced"
        )

    def test_a_failed_probe_reopens_everywhere(self, shared):
        """The probe's failure reopens the fleet's circuit."""
        a = make(shared, failure_threshold=1, recovery_timeout=0.2)
        b = make(shared, failure_threshold=1, recovery_timeout=0.2)
        fail_times(a, 1)
        settle()
        time.sleep(0.25)
        attempt(b)
        settle()
        assert "Boom" == attempt(b, boom)
        settle()
        assert "open" == b.state
        assert until(lambda: a.state == "open")
        assert "CircuitOpenError" == attempt(a)

    def test_a_cancelled_probe_frees_the_fleet_slot(self, shared):
        """A cancelled probe gives its lease back to the store."""
        a = make(shared, failure_threshold=1, recovery_timeout=0.2)
        b = make(shared, failure_threshold=1, recovery_timeout=0.2)
        fail_times(a, 1)
        settle()
        time.sleep(0.25)

        async def cancelled() -> None:
            async def hang() -> None:
                await asyncio.sleep(10)

            task = asyncio.ensure_future(a.acall(hang))
            await asyncio.sleep(0.01)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        # The first caller past the recovery time is the probe, cancelled.
        asyncio.run(cancelled())
        settle()
        assert "half-open" == a.state
        assert until(lambda: b.state == "half-open")
        assert "ok" == attempt(b)  # claims the freed slot and probes
        settle()
        assert "closed" == b.state

    def test_operator_controls_reach_every_instance(self, shared, events):
        """open() forces the fleet open; close() closes it everywhere."""
        a = make(shared, recovery_timeout=0.1)
        b = make(shared, recovery_timeout=0.1)
        a.open()  # outside an event loop: returns once stored
        settle()
        assert until(lambda: b.state == "open")
        assert b.status()["forced"]
        time.sleep(0.15)
        assert "CircuitOpenError" == attempt(b)  # no automatic half-open
        b.close()
        settle()
        assert until(lambda: a.state == "closed")
        assert not a.status()["forced"]
        assert [("closed", "open"), ("open", "closed")] == transitions(
            events, "circuit_state_changed"
        )

    def test_reset_clears_the_fleet_count(self, shared):
        """reset() zeroes the shared failure count too."""
        a = make(shared, failure_threshold=3)
        b = make(shared, failure_threshold=3)
        fail_times(a, 2)
        settle()
        a.reset()
        settle()
        assert until(lambda: b.status()["failure_count"] == 0)
        fail_times(b, 2)
        settle()
        assert "closed" == b.state
        assert 2 == b.status()["failure_count"]

    def test_a_new_instance_starts_in_the_stored_state(self, shared):
        """A policy built later starts open, with the remaining time."""
        a = make(shared, failure_threshold=1, recovery_timeout=30)
        fail_times(a, 1)
        settle()
        opened_at = a.status()["opened_at"]
        time.sleep(0.1)
        b = make(shared, failure_threshold=1, recovery_timeout=30)
        assert "open" == b.state
        assert opened_at == b.status()["opened_at"]
        assert 0 < b.status()["retry_after"] < 29.95
        assert "CircuitOpenError" == attempt(b)

    def test_the_open_time_is_kept_to_the_millisecond(self, shared):
        """A 0.3 s recovery time is honoured, not rounded to seconds."""
        a = make(shared, failure_threshold=1, recovery_timeout=0.3)
        b = make(shared, failure_threshold=1, recovery_timeout=0.3)
        fail_times(a, 1)
        settle()
        assert until(lambda: b.state == "open")
        retry_after = b.status()["retry_after"]
        assert 0.1 < retry_after <= 0.3
        time.sleep(0.05)
        assert "CircuitOpenError" == attempt(b)

    def test_status_names_the_backend(self, shared):
        """Status ``storage`` is the backend's name."""
        configure(
            ResilienceConfig.model_validate(
                {
                    "storage": shared.model_dump(),
                    "policies": {"api": {"failure_threshold": 2}},
                }
            )
        )
        assert shared.backend == policy("api").status()["storage"]
        assert isinstance(policy("api").breaker, pybreaker.CircuitBreaker)


class TestRecoveryBackoff:
    def test_the_grown_open_time_is_shared(self, shared):
        """A re-trip's longer open time is what the other instance waits."""
        settings = {
            "failure_threshold": 1,
            "recovery_timeout": 0.2,
            "recovery_backoff": {"multiplier": 10, "max": 60},
        }
        a = make(shared, **settings)
        b = make(shared, **settings)
        fail_times(a, 1)
        settle()
        time.sleep(0.25)
        attempt(a)
        settle()
        assert "Boom" == attempt(a, boom)  # the probe fails: 2 s now
        settle()
        assert until(lambda: b.state == "open")
        assert 1.5 < b.status()["retry_after"] <= 2.0
        assert 2.0 == b.status()["current_recovery_timeout"]


# --------------------------------------------------------------------------
# Redis unavailable
# --------------------------------------------------------------------------


class TestRedisOutage:
    def test_killed_and_restarted(self, events):
        """Redis dies: calls go on locally; it returns: state resyncs."""
        binary = need_binary("redis-server", "apt-get install redis-server")
        with RedisServer(binary) as server:
            config = StorageConfig(
                backend="redis", url=server.url, namespace="outage"
            )
            a = make(config, failure_threshold=2, recovery_timeout=30)
            b = make(config, failure_threshold=2, recovery_timeout=30)
            settle()
            server.kill()
            # Nothing raises but the dependency's own errors.
            assert ["Boom", "Boom"] == fail_times(a, 2)
            settle()
            assert "open" == a.state  # counted locally
            assert "CircuitOpenError" == attempt(a)
            assert "ok" == attempt(b)
            degraded = named(events, "storage_degraded")
            assert 1 == len(degraded)
            assert {"backend", "error", "event", "log_level"} == set(
                degraded[0]
            )
            assert "redis" == degraded[0]["backend"]
            # The trip made alone was logged here, by the one who made it.
            assert [("closed", "open")] == transitions(
                events, "circuit_state_changed"
            )
            server.start()
            assert until(lambda: named(events, "storage_recovered"))
            recovered = named(events, "storage_recovered")
            assert 1 == len(recovered)
            assert degraded[0]["error"] == recovered[0]["error"]
            settle()
            # The restarted Redis was empty: seeded from a local state, and
            # both instances now agree again, and follow each other.
            assert until(lambda: a.state == b.state)
            a.close()
            settle()
            assert until(lambda: b.state == "closed")
            b.open()
            settle()
            assert until(lambda: a.state == "open")
            assert 1 == len(named(events, "storage_degraded"))

    def test_unreachable_from_the_start(self, events):
        """A Redis that never answers: local state; no password leaks."""
        from tests.support.redis_server import free_port  # noqa: PLC0415

        url = f"redis://user:s3cret-pw@127.0.0.1:{free_port()}/0"
        config = StorageConfig(backend="redis", url=url, namespace="x")
        p = make(config, failure_threshold=2)
        assert "closed" == p.state
        assert ["Boom", "Boom"] == fail_times(p, 2)
        assert "open" == p.state
        assert "redis" == p.status()["storage"]
        degraded = named(events, "storage_degraded")
        assert 1 == len(degraded)
        assert "s3cret" not in json.dumps(events, default=str)

    def test_a_stalled_redis_never_blocks_the_caller(self):
        """SIGSTOP: calls on the loop stay fast; the store catches up."""
        binary = need_binary("redis-server", "apt-get install redis-server")
        with RedisServer(binary) as server:
            config = StorageConfig(
                backend="redis", url=server.url, namespace="stall"
            )
            p = make(config, failure_threshold=1000)
            settle()
            server.pause()
            try:
                lag = asyncio.run(_failures_with_lag_probe(p, 0.8))
            finally:
                server.resume()
            # A storage call on the loop would stall it for the socket
            # timeout (0.5 s); the probe sees scheduling noise only.
            assert lag < 0.25, lag
            assert p.status()["failures"] > 0


async def _failures_with_lag_probe(p: Policy, seconds: float) -> float:
    """Run failing calls for *seconds*; the event loop's worst lag."""
    loop = asyncio.get_running_loop()
    worst = 0.0
    stop = loop.time() + seconds

    async def probe() -> None:
        nonlocal worst
        while loop.time() < stop:
            before = loop.time()
            await asyncio.sleep(0.001)
            worst = max(worst, loop.time() - before - 0.001)

    async def fails() -> None:
        raise Boom("down")

    async def load() -> None:
        while loop.time() < stop:
            with contextlib.suppress(Boom, CircuitOpenError):
                await p.acall(fails)
            await asyncio.sleep(0.0005)

    await asyncio.gather(probe(), load())
    return worst


# --------------------------------------------------------------------------
# sqlite specifics
# --------------------------------------------------------------------------


class TestSqlite:
    def test_wal_mode_and_schema(self, sqlite_path):
        """The file is in WAL mode and holds one row per breaker."""
        p = make(StorageConfig(backend="sqlite", path=str(sqlite_path)))
        fail_times(p, 1)
        settle()
        with contextlib.closing(sqlite3.connect(sqlite_path)) as db:
            assert "wal" == db.execute("PRAGMA journal_mode").fetchone()[0]
            rows = db.execute("SELECT name, counter FROM breakers").fetchall()
        assert [("dep", 1)] == rows

    def test_a_restart_keeps_the_open_circuit(self, sqlite_path):
        """Stop every backend (a restart): the new one starts open."""
        config = StorageConfig(backend="sqlite", path=str(sqlite_path))
        p = make(config, failure_threshold=1, recovery_timeout=30)
        fail_times(p, 1)
        close_storages()
        restarted = make(config, failure_threshold=1, recovery_timeout=30)
        assert "open" == restarted.state
        assert 0 < restarted.status()["retry_after"] <= 30
        assert "CircuitOpenError" == attempt(restarted)

    def test_a_forked_child_gets_its_own_thread(self, sqlite_path):
        """Built before fork() (prefork servers): the child's ops still run."""
        config = StorageConfig(backend="sqlite", path=str(sqlite_path))
        p = make(config, failure_threshold=2)
        settle()
        pid = os.fork()
        if pid == 0:  # the child: trip the circuit, then leave at once
            code = 1
            try:
                fail_times(p, 2)
                code = 0 if flush_storages(5.0) and p.state == "open" else 1
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert 0 == os.waitstatus_to_exitcode(status)
        assert until(lambda: p.state == "open")

    def test_a_locked_database_degrades_then_recovers(
        self, sqlite_path, events, monkeypatch
    ):
        """A writer holding the lock too long: degraded, then recovered."""
        monkeypatch.setattr(
            "sage_resilience._storage.sqlite.SQLITE_BUSY_TIMEOUT", 0.05
        )
        config = StorageConfig(backend="sqlite", path=str(sqlite_path))
        p = make(config, failure_threshold=2)
        settle()
        with contextlib.closing(
            sqlite3.connect(sqlite_path, isolation_level=None)
        ) as other:
            other.execute("BEGIN EXCLUSIVE")
            assert ["Boom", "Boom"] == fail_times(p, 2)
            settle()
            assert "open" == p.state
            other.execute("ROLLBACK")
        assert until(lambda: named(events, "storage_recovered"))
        assert "sqlite" == named(events, "storage_degraded")[0]["backend"]


# --------------------------------------------------------------------------
# The state machine: Lua and Python agree
# --------------------------------------------------------------------------

_TOKENS = st.sampled_from(["t1", "t2", "t3"])
_OPERATIONS = st.one_of(
    st.tuples(
        st.just("count"),
        st.tuples(
            st.integers(1, 3),
            st.integers(0, 40),
            st.integers(0, 4),
            st.sampled_from([0, 1]),
            st.integers(0, 4),
        ),
    ),
    st.tuples(
        st.just("open"),
        st.tuples(st.integers(0, 40), st.sampled_from([0, 1])),
    ),
    st.tuples(st.just("close"), st.tuples(st.sampled_from([0, 1]))),
    st.tuples(
        st.just("claim"),
        st.tuples(st.integers(1, 2), _TOKENS, st.integers(1, 40)),
    ),
    st.tuples(st.just("hold"), st.tuples(_TOKENS, st.integers(1, 40))),
    st.tuples(
        st.just("done"),
        st.tuples(
            _TOKENS,
            st.sampled_from([0, 1]),
            st.integers(1, 2),
            st.integers(0, 40),
        ),
    ),
    st.tuples(st.just("release"), st.tuples(_TOKENS)),
    st.tuples(
        st.just("seed"),
        st.tuples(
            st.sampled_from(["closed", "open", "half-open"]),
            st.integers(0, 3),
            st.integers(0, 2),
            st.integers(0, 50),
            st.integers(0, 90),
            st.sampled_from([0, 1]),
            st.integers(0, 5),
        ),
    ),
)


class TestStateMachine:
    @settings(
        max_examples=60,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        steps=st.lists(st.tuples(_OPERATIONS, st.integers(0, 25)), max_size=20)
    )
    def test_lua_and_python_agree(self, redis_server, steps):
        """Every operation sequence gives the same answers in both."""
        import redis  # noqa: PLC0415

        client = redis.Redis.from_url(redis_server.url)
        sha = client.script_load(_LUA)
        keys = [f"sm:{uuid.uuid4().hex}", f"sm:{uuid.uuid4().hex}:probes"]
        # Far enough ahead that no lease key expires during the test.
        now = int(time.time() * 1000) + 3_600_000
        stored: View | None = None
        leases: dict[str, int] = {}
        try:
            for (op, args), advance in steps:
                now += advance
                reply = client.evalsha(
                    sha, 2, *keys, op, now, "sm:events", "n", *args
                )
                lua = (
                    bool(reply[0]),
                    bool(reply[1]),
                    int(reply[2]),
                    View.parse(reply[3:]),
                )
                row = _Row(stored, dict(leases), now)
                _step(row, op, args)
                python = (
                    bool(row.won),
                    bool(row.granted),
                    int(row.hint),
                    row.view(),
                )
                assert python == lua, (op, args)
                if row.dirty:
                    stored = row.view()
                leases = row.leases
                assert sorted(leases) == sorted(
                    t.decode() for t in client.zrange(keys[1], 0, -1)
                )
        finally:
            client.delete(*keys)
            client.close()

    def test_fail_opens_at_the_threshold(self):
        """The counting failure that reaches the threshold opens."""
        row = _Row(None, {}, 1000)
        _step(row, "count", (2, 500, 1, 0, 0))
        assert "closed" == row.st
        assert not row.won
        row = _Row(row.view(), {}, 1100)
        _step(row, "count", (2, 500, 1, 0, 0))
        assert View("open", 2, 0, 1100, 1600, forced=False, version=1) == (
            row.view()
        )
        assert row.won

    def test_claims_grant_at_most_the_slots(self):
        """Two slots: two claims granted, the third told when to retry."""
        view = View("open", 3, 0, 1000, 1500, forced=False, version=4)
        leases: dict[str, int] = {}
        granted = []
        for token in ("a", "b", "c"):
            row = _Row(view, leases, 1600)
            _step(row, "claim", (2, token, 300))
            view, leases = row.view(), row.leases
            granted.append((bool(row.granted), row.hint))
        assert [(True, 0), (True, 0), (False, 1900)] == granted
        assert "half-open" == view.state
        assert 5 == view.version

    def test_a_forced_circuit_grants_no_probe(self):
        """Forced open: a claim past any time gets nothing."""
        view = View("open", 0, 0, 1000, 0, forced=True, version=1)
        row = _Row(view, {}, 10**9)
        _step(row, "claim", (1, "a", 300))
        assert not row.granted
        assert "open" == row.st


# --------------------------------------------------------------------------
# Across OS processes
# --------------------------------------------------------------------------


class _Child:
    """A child process running policies; one JSON command per line."""

    def __init__(self) -> None:
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.test_storage"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def request(self, cmd: str, **arguments: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **arguments}) + "\n")
        self.process.stdin.flush()

    def reply(self, timeout: float = 60) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        if not ready:
            raise TimeoutError(self.stderr())
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"the child exited:\n{self.stderr()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise AssertionError(f"{answer['error']}\n{self.stderr()}")
        return answer

    def send(self, cmd: str, **arguments: Any) -> dict[str, Any]:
        self.request(cmd, **arguments)
        return self.reply()

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-4000:]

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.request("exit")
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._stderr.close()


def _all(children: list[_Child], cmd: str, **arguments: Any) -> list[Any]:
    """Send *cmd* to every child at once; their replies, in order."""
    for child in children:
        child.request(cmd, **arguments)
    return [child.reply() for child in children]


@pytest.fixture(scope="module")
def children() -> Any:
    """Four processes, reused by every cross-process test of the module."""
    started = [_Child() for _ in range(4)]
    try:
        _all(started, "ping")
        yield started
    finally:
        for child in started:
            child.close()


def _setup(
    children: list[_Child], storage: StorageConfig, **settings: Any
) -> str:
    name = unique("fleet")
    _all(
        children,
        "setup",
        name=name,
        storage=storage.model_dump(),
        settings=settings,
    )
    return name


class TestAcrossProcesses:
    @pytest.mark.parametrize("backend", BACKENDS)
    def test_a_trip_reaches_every_process(
        self, backend, children, redis_server, sqlite_path
    ):
        """Trip in one process; the others see it within the staleness."""
        storage = storage_config(backend, redis_server, sqlite_path)
        name = _setup(children, storage, failure_threshold=3)
        tripper, *others = children
        for child in others:
            child.request("wait", name=name, state="open", timeout=10)
        outcome = tripper.send("fail", name=name, n=3)
        assert ["Boom", "Boom", "Boom"] == outcome["outcomes"]
        tripped_at = tripper.send("wait", name=name, state="open")["at"]
        seen = [child.reply() for child in others]
        assert ["open"] * 3 == [s["state"] for s in seen]
        delays = [s["at"] - tripped_at for s in seen]
        assert max(delays) <= STALENESS, delays
        # Only the process that made the transition logs it.
        logs = _all(children, "events", name=name)
        changed = [
            transitions(log["events"], "circuit_state_changed") for log in logs
        ]
        assert [[("closed", "open")], [], [], []] == changed
        for log in logs[1:]:
            assert [("closed", "open")] == transitions(
                log["events"], "circuit_state_synced"
            )

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_exactly_one_probe_across_four_processes(
        self, backend, children, redis_server, sqlite_path
    ):
        """Every process hammers a half-open circuit: one probe runs."""
        storage = storage_config(backend, redis_server, sqlite_path)
        name = _setup(
            children, storage, failure_threshold=1, recovery_timeout=0.3
        )
        children[0].send("fail", name=name, n=1)
        _all(children, "wait", name=name, state="open")
        start = time.time() + 0.1
        # The probe holds its slot beyond the hammering, then fails.
        results = _all(
            children,
            "hammer",
            name=name,
            start=start,
            until=start + 1.2,
            hold=1.5,
        )
        assert 1 == sum(r["invocations"] for r in results), results
        rejected = sum(
            r["outcomes"].get("CircuitOpenError", 0) for r in results
        )
        assert rejected > 100

    def test_sqlite_shared_by_two_processes(self, children, sqlite_path):
        """Two processes on one file: counts, trips and closes are shared."""
        storage = StorageConfig(backend="sqlite", path=str(sqlite_path))
        pair = children[:2]
        name = _setup(pair, storage, failure_threshold=4)
        pair[0].send("fail", name=name, n=2)
        pair[1].send("fail", name=name, n=2)
        states = _all(pair, "wait", name=name, state="open")
        assert ["open", "open"] == [s["state"] for s in states]
        pair[1].send("control", name=name, action="close")
        assert (
            "closed"
            == pair[0].send("wait", name=name, state="closed")["state"]
        )
        with contextlib.closing(sqlite3.connect(sqlite_path)) as db:
            row = db.execute(
                "SELECT state, counter FROM breakers WHERE name = ?", (name,)
            ).fetchone()
        assert ("closed", 0) == row

    def test_sqlite_restart_keeps_the_remaining_time(self, sqlite_path):
        """A process restarted over an open circuit starts open."""
        storage = StorageConfig(backend="sqlite", path=str(sqlite_path))
        first = _Child()
        try:
            name = _setup(
                [first], storage, failure_threshold=1, recovery_timeout=20
            )
            first.send("fail", name=name, n=1)
            status = first.send("state", name=name)["status"]
        finally:
            first.close()
        time.sleep(0.3)
        second = _Child()
        try:
            second.send(
                "setup",
                name=name,
                storage=storage.model_dump(),
                settings={"failure_threshold": 1, "recovery_timeout": 20},
            )
            restarted = second.send("state", name=name)["status"]
            outcome = second.send("call", name=name)
        finally:
            second.close()
        assert "open" == restarted["state"]
        assert status["opened_at"] == restarted["opened_at"]
        assert 0 < restarted["retry_after"] < status["retry_after"] - 0.2
        assert "CircuitOpenError" == outcome["outcome"]

    def test_redis_killed_mid_run_and_restarted(self, children):
        """SIGKILL Redis under load: no exception reaches the callers."""
        binary = need_binary("redis-server", "apt-get install redis-server")
        with RedisServer(binary) as server:
            storage = StorageConfig(
                backend="redis", url=server.url, namespace="kill"
            )
            name = _setup(
                children, storage, failure_threshold=3, recovery_timeout=30
            )
            _all(children, "run", name=name, mode="ok")
            time.sleep(0.3)
            server.kill()
            time.sleep(0.8)
            _all(children, "mode", mode="fail")
            time.sleep(0.5)
            server.start()
            # Every process notices the return and resynchronises.
            _all(children, "wait_event", event="storage_recovered")
            _all(children, "mode", mode="ok")
            time.sleep(0.3)
            runs = _all(children, "stop_run")
            for run in runs:
                assert [] == run["unexpected"]
                assert run["outcomes"].get("Boom", 0) > 0
            logs = _all(children, "events", name=None)
            for log in logs:
                kinds = [e["event"] for e in log["events"]]
                assert 1 == kinds.count("storage_degraded"), [
                    (e["event"], e.get("error"))
                    for e in log["events"]
                    if e["event"].startswith("storage")
                ]
                assert 1 == kinds.count("storage_recovered")
                assert kinds.index("storage_degraded") < kinds.index(
                    "storage_recovered"
                )
            # Resynchronised: one trip is seen everywhere again.
            states = _all(children, "state", name=name)
            assert len({s["state"] for s in states}) == 1, states
            children[0].send("control", name=name, action="close")
            children[1].send("control", name=name, action="open")
            final = _all(children, "wait", name=name, state="open")
            assert ["open"] * 4 == [f["state"] for f in final]

    def test_a_stalled_redis_leaves_the_event_loop_running(self, children):
        """SIGSTOP Redis: every process's loop lag stays small."""
        binary = need_binary("redis-server", "apt-get install redis-server")
        with RedisServer(binary) as server:
            storage = StorageConfig(
                backend="redis", url=server.url, namespace="stop"
            )
            pair = children[:2]
            name = _setup(pair, storage, failure_threshold=10_000)
            _all(pair, "lag", action="start")
            _all(pair, "run", name=name, mode="fail")
            server.pause()
            try:
                time.sleep(1.5)
            finally:
                server.resume()
            time.sleep(0.3)
            runs = _all(pair, "stop_run")
            lags = _all(pair, "lag", action="stop")
        for run in runs:
            assert [] == run["unexpected"]
        # A storage call on the loop would stall it for the 0.5 s socket
        # timeout; this bound leaves room for a busy 2-core machine.
        assert max(lag["max_lag"] for lag in lags) < 0.25, lags


# --------------------------------------------------------------------------
# The child process (python -m tests.test_storage)
# --------------------------------------------------------------------------


class _ChildServer:
    """Runs policies on an event loop for :class:`_Child`."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        structlog.configure(processors=[self._capture])
        self.policies: dict[str, Policy] = {}
        self.run_task: asyncio.Task[None] | None = None
        self.mode = "ok"
        self.outcomes: Counter[str] = Counter()
        self.unexpected: list[str] = []
        self.lag_task: asyncio.Task[None] | None = None
        self.max_lag = 0.0
        self.invocations = 0

    def _capture(self, _logger: Any, method: str, event: Any) -> Any:
        self.events.append({**event, "log_level": method})
        raise structlog.DropEvent

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line:
                return
            request = json.loads(line)
            cmd = request.pop("cmd")
            try:
                answer = await getattr(self, f"do_{cmd}")(**request)
            except Exception as exc:
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(answer, default=str) + "\n")
            sys.stdout.flush()
            if cmd == "exit":
                return

    async def do_ping(self) -> dict[str, Any]:
        return {"pid": os.getpid()}

    async def do_exit(self) -> dict[str, Any]:
        for task in (self.run_task, self.lag_task):
            if task is not None:
                task.cancel()
        flush_storages(2.0)
        return {}

    async def do_setup(
        self, name: str, storage: dict[str, Any], settings: dict[str, Any]
    ) -> dict[str, Any]:
        config = StorageConfig.model_validate(storage)
        # Built outside the loop, as a process does at start-up.
        made = await asyncio.to_thread(make_storage, config, name)
        self.policies[name] = Policy(
            name,
            PolicyConfig.model_validate(settings),
            storage=made,
            storage_name=config.backend,
        )
        return {"state": self.policies[name].state}

    async def _outcome(self, p: Policy, fn: Any) -> str:
        try:
            await p.acall(fn)
        except (Boom, CircuitOpenError) as exc:
            return type(exc).__name__
        return "ok"

    async def do_fail(self, name: str, n: int) -> dict[str, Any]:
        async def failing() -> None:
            raise Boom("down")

        p = self.policies[name]
        outcomes = [await self._outcome(p, failing) for _ in range(n)]
        await asyncio.to_thread(flush_storages, 2.0)
        return {"outcomes": outcomes}

    async def do_call(self, name: str) -> dict[str, Any]:
        async def fine() -> str:
            return "ok"

        return {"outcome": await self._outcome(self.policies[name], fine)}

    async def do_control(self, name: str, action: str) -> dict[str, Any]:
        p = self.policies[name]
        getattr(p, action)()
        await asyncio.to_thread(flush_storages, 2.0)
        return {"state": p.state}

    async def do_state(self, name: str) -> dict[str, Any]:
        p = self.policies[name]
        return {"state": p.state, "status": p.status()}

    async def do_wait(
        self, name: str, state: str, timeout: float = 10
    ) -> dict[str, Any]:
        p = self.policies[name]
        deadline = time.monotonic() + timeout
        while p.state != state and time.monotonic() < deadline:
            await asyncio.sleep(0.0005)
        return {"state": p.state, "at": time.time()}

    async def do_wait_event(
        self, event: str, timeout: float = 15
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(e["event"] == event for e in self.events):
                return {"seen": True}
            await asyncio.sleep(0.01)
        return {"seen": False}

    async def do_events(self, name: str | None) -> dict[str, Any]:
        return {
            "events": [
                e
                for e in self.events
                if name is None or e.get("breaker") == name
            ]
        }

    async def do_hammer(
        self, name: str, start: float, until: float, hold: float
    ) -> dict[str, Any]:
        p = self.policies[name]
        outcomes: Counter[str] = Counter()
        self.invocations = 0

        async def probe() -> None:
            self.invocations += 1
            await asyncio.sleep(hold)
            raise Boom("still down")

        async def one() -> None:
            outcomes[await self._outcome(p, probe)] += 1

        await asyncio.sleep(max(0.0, start - time.time()))
        tasks = []
        while time.time() < until:
            tasks.append(asyncio.ensure_future(one()))
            await asyncio.sleep(0.002)
        invocations = self.invocations  # probes started while hammering
        await asyncio.gather(*tasks)
        return {"invocations": invocations, "outcomes": dict(outcomes)}

    async def do_run(self, name: str, mode: str) -> dict[str, Any]:
        p = self.policies[name]
        self.mode = mode
        self.outcomes.clear()
        self.unexpected.clear()

        async def dependency() -> str:
            if self.mode == "fail":
                raise Boom("down")
            return "ok"

        async def loop() -> None:
            while True:
                try:
                    await p.acall(dependency)
                    self.outcomes["ok"] += 1
                except (Boom, CircuitOpenError) as exc:
                    self.outcomes[type(exc).__name__] += 1
                except Exception as exc:
                    self.unexpected.append(repr(exc))
                await asyncio.sleep(0.002)

        self.run_task = asyncio.ensure_future(loop())
        return {}

    async def do_mode(self, mode: str) -> dict[str, Any]:
        self.mode = mode
        return {}

    async def do_stop_run(self) -> dict[str, Any]:
        if self.run_task is not None:
            self.run_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.run_task
        return {
            "outcomes": dict(self.outcomes),
            "unexpected": list(self.unexpected),
        }

    async def do_lag(self, action: str) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        if action == "start":
            self.max_lag = 0.0

            async def probe() -> None:
                while True:
                    before = loop.time()
                    await asyncio.sleep(0.001)
                    lag = loop.time() - before - 0.001
                    self.max_lag = max(self.max_lag, lag)

            self.lag_task = asyncio.ensure_future(probe())
            return {}
        if self.lag_task is not None:
            self.lag_task.cancel()
        return {"max_lag": self.max_lag}


if __name__ == "__main__":
    asyncio.run(_ChildServer().serve())


class TestFastFlood:
    """50 callers of a dependency that fails at once: the circuit opens on
    local evidence as fast as with the memory storage."""

    @pytest.mark.parametrize("backend", ["memory", *BACKENDS])
    async def test_a_fast_flood_opens_at_once(
        self,
        backend: str,
        redis_server: RedisServer,
        sqlite_path: Path,
    ) -> None:
        settings = {"failure_threshold": 5, "recovery_timeout": 30}
        if backend == "memory":
            p = Policy("flood", PolicyConfig.model_validate(settings))
        else:
            config = storage_config(backend, redis_server, sqlite_path)
            p = make(config, unique("flood"), **settings)
        reached = 0

        async def dead() -> None:
            nonlocal reached
            reached += 1
            await asyncio.sleep(0)
            raise Boom("refused")

        async def caller(stop: float) -> None:
            loop = asyncio.get_running_loop()
            while loop.time() < stop:
                with contextlib.suppress(Boom, CircuitOpenError):
                    await p.acall(dead)
                await asyncio.sleep(0)

        stop = asyncio.get_running_loop().time() + 0.5
        await asyncio.gather(*(caller(stop) for _ in range(50)))
        # The threshold, plus what was in flight when it opened (the
        # memory storage's figure); it used to be thousands with a store.
        assert p.state == "open"
        assert reached <= 5 + 50, reached


class TestCoalescing:
    """Counts merge while queued; the queue has a bound."""

    def test_a_stalled_flood_is_one_increment_per_round_trip(self):
        """2,000 alternating outcomes while Redis answers nothing: a few
        script calls instead of 2,000, and the store counts what the
        calls one by one would have left."""
        binary = need_binary("redis-server", "apt-get install redis-server")
        with RedisServer(binary) as server:
            config = StorageConfig(
                backend="redis", url=server.url, namespace=unique("ns")
            )
            name = unique("co")
            p = make(config, name, failure_threshold=1000)
            settle()
            import redis  # noqa: PLC0415

            client = redis.Redis.from_url(server.url)
            client.config_resetstat()
            backend = p._gate._fleet.shared.backend  # type: ignore[union-attr]
            server.pause()
            try:
                for i in range(2000):
                    if i % 2:
                        p.call(ok)
                    else:
                        fail_times(p, 1)
                # Two failures since the last reset.
                fail_times(p, 2)
                queued = backend._outstanding
            finally:
                server.resume()
            settle()
            calls = client.info("commandstats")["cmdstat_evalsha"]["calls"]
            stored = client.hget(backend.keys(name)[0], "c")
            client.close()
        assert queued <= 3, queued
        assert calls <= 5, calls
        assert b"2" == stored

    def test_a_store_that_cannot_keep_up_degrades(
        self, events, monkeypatch: pytest.MonkeyPatch
    ):
        """Past the bound the backend goes degraded (logged), the gates
        work alone, and the store is resynchronised once it answers."""
        import sage_resilience._storage.backend as backend_module  # noqa: PLC0415

        monkeypatch.setattr(backend_module, "MAX_QUEUED", 10)
        binary = need_binary("redis-server", "apt-get install redis-server")
        with RedisServer(binary) as server:
            config = StorageConfig(
                backend="redis", url=server.url, namespace=unique("ns")
            )
            policies = [
                make(config, unique("many"), failure_threshold=2)
                for _ in range(40)
            ]
            settle()
            backend = policies[0]._gate._fleet.shared.backend  # type: ignore[union-attr]
            server.pause()
            try:
                most = 0
                for p in policies:
                    fail_times(p, 2)
                    most = max(most, backend._outstanding)
            finally:
                server.resume()
            assert until(lambda: named(events, "storage_recovered"))
            settle()
            import redis  # noqa: PLC0415

            client = redis.Redis.from_url(server.url)
            stored = [
                client.hget(backend.keys(p.name)[0], "st").decode()
                for p in policies
            ]
            client.close()
        # Alone, every gate opened on its own two failures; back with the
        # store, each follows it again (the store wins, as after an outage).
        opened = {
            e["breaker"]
            for e in named(events, "circuit_state_changed")
            if e["new_state"] == "open"
        }
        assert {p.name for p in policies} == opened
        assert stored == [p.state for p in policies]
        degraded = named(events, "storage_degraded")
        assert 1 == len(degraded)
        assert "operations queued" in degraded[0]["error"]
        assert most <= 10 + 2, most


_AFTER_CLOSE = """
import sys
from sage_resilience import CircuitOpenError, Policy, PolicyConfig
from sage_resilience._config import StorageConfig
from sage_resilience._storage import close_storages, make_storage

config = StorageConfig(backend="sqlite", path=sys.argv[1])
settings = PolicyConfig.model_validate({"failure_threshold": 3})
p = Policy("late", settings, storage=make_storage(config, "late"))
close_storages()

def boom():
    raise ConnectionError("down")

for _ in range(5):
    try:
        p.call(boom)
    except (ConnectionError, CircuitOpenError):
        pass
sys.stderr.write(p.state)
"""


def test_a_policy_used_after_the_storages_closed_works_alone(
    sqlite_path: Path,
) -> None:
    """After ``close_storages()`` (interpreter exit, a test's teardown) a
    failure used to deadlock on the gate's own lock; now the gate counts
    alone, as when the store is down. A child process, so a regression
    cannot hang the suite."""
    done = subprocess.run(
        [sys.executable, "-c", _AFTER_CLOSE, str(sqlite_path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        check=False,
    )
    assert 0 == done.returncode, done.stderr
    assert done.stderr.endswith("open"), done.stderr
    assert "" == done.stdout


def test_a_count_is_the_steps_it_merges() -> None:
    """A ``count`` of (before, reset, after) leaves the circuit as the
    failures and resets it merges would have, one by one."""

    @settings(max_examples=200, deadline=None)
    @given(
        view=st.builds(
            View,
            st.just("closed"),
            st.integers(0, 4),
            st.just(0),
            st.just(0),
            st.just(0),
            st.just(False),
            st.integers(0, 3),
        ),
        outcomes=st.lists(st.booleans(), max_size=12),
        threshold=st.integers(1, 5),
    )
    def check(view: View, outcomes: list[bool], threshold: int) -> None:
        one_by_one = _Row(view, {}, 1000)
        for failed in outcomes:
            one = (threshold, 500, 1, 0, 0) if failed else RESET
            _step(one_by_one, "count", one)
        merges: list[Count] = []
        for failed in outcomes:
            one = (threshold, 500, 1, 0, 0) if failed else RESET
            joined = merge_count(merges[-1], one) if merges else None
            if joined is None:
                merges.append(one)
            else:
                merges[-1] = joined
        merged = _Row(view, {}, 1000)
        won = 0
        for args in merges:
            merged = _Row(merged.view(), {}, 1000)
            _step(merged, "count", args)
            won |= merged.won
        assert one_by_one.view() == merged.view()
        assert one_by_one.won == won
        # Only a run of failures that opens on its own splits the merge.
        assert len(merges) <= 1 + outcomes.count(True) // threshold

    check()


def test_a_storage_thread_error_is_logged_redacted(
    sqlite_path: Path, events: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected error in the storage thread never kills it, and the
    event carries no secret (message and traceback both redacted)."""
    config = StorageConfig(backend="sqlite", path=str(sqlite_path))
    p = make(config, unique("thread"), failure_threshold=3)
    backend = p._gate._fleet.shared.backend  # type: ignore[union-attr]
    real = backend._process
    calls = 0

    def broken(items: list[Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            msg = "lost postgresql://app:hunter2secret@db/x"
            raise RuntimeError(msg)
        real(items)

    monkeypatch.setattr(backend, "_process", broken)
    fail_times(p, 1)
    settle()
    fail_times(p, 1)
    settle()
    logged = [e for e in events if e["event"] == "storage_thread_error"]
    assert len(logged) == 1
    assert "hunter2secret" not in repr(logged[0])
    assert "RuntimeError" in logged[0]["error"]
    assert "Traceback" in logged[0]["traceback"]
    assert backend._thread.is_alive()
