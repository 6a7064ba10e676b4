"""Shared circuit state: what the sqlite and redis storages cost.

Starts its own ``redis-server`` on a free loopback port (and a temporary
sqlite file), then measures:

1. **Success-path overhead** of a policy whose circuit lives in Redis
   against one in memory (ns a call adds to a bare call, median of the
   trials), and, for comparison, raw pybreaker with its own
   ``CircuitRedisStorage`` against pybreaker with its memory storage.
   Goal: redis <= 2x memory (pybreaker's is about 160x).
2. **Event-loop lag** while storage operations happen: a probe task
   sleeps 1 ms over and over and records how late it wakes up, while
   calls fail and succeed in bursts so the circuit trips, probes and
   closes again and again (counted failures, claims, verdicts, pub/sub
   news). Measured with the memory backend (the baseline: the load's own
   CPU), with Redis, and with Redis frozen by SIGSTOP for a second.
   Goal: storage never blocks the loop for more than 1 ms.
3. **Cross-process propagation of a trip**: a second process watches the
   circuit; the time from the failing call in this process to the other
   process refusing calls, p50 and p99 over many trips, for Redis and
   sqlite.

    python benchmarks/storage.py [--calls 100000] [--trials 5] [--trips 200]
        [--lag-seconds 3] [--lag-trials 3] [--json]

The lag runs freeze the heap first (``gc.freeze()``, as servers do) and
report the longest collector pause next to the lag, so a collection is
not mistaken for storage.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pybreaker
import redis
import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _timing import afn, fn, timed_async, timed_sync  # noqa: E402
from sage_resilience import (  # noqa: E402
    CircuitOpenError,
    Policy,
    PolicyConfig,
)
from sage_resilience._config import StorageConfig  # noqa: E402
from sage_resilience._storage import (  # noqa: E402
    close_storages,
    flush_storages,
    make_storage,
)
from tests.support.redis_server import RedisServer  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable


class Boom(ConnectionError):  # noqa: N818 - the tests' name for it
    pass


def _quiet() -> None:
    """Drop the library's events: stdout carries results here."""

    def drop(*_args: Any) -> Any:
        raise structlog.DropEvent

    structlog.configure(processors=[drop])


def _policy(
    storage: StorageConfig | None, name: str, **settings: Any
) -> Policy:
    config = PolicyConfig.model_validate(
        {"failure_threshold": 5, "retry": {"attempts": 3}, **settings}
    )
    if storage is None:
        return Policy(name, config)
    return Policy(
        name,
        config,
        storage=make_storage(storage, name),
        storage_name=storage.backend,
    )


# -- 1. success path ----------------------------------------------------------


async def success_path(url: str, calls: int, trials: int) -> dict[str, float]:
    storage = StorageConfig(backend="redis", url=url, namespace="bench")
    memory = _policy(None, "memory")
    shared = _policy(storage, "shared")
    memory_sync = _policy(None, "memory_sync")
    shared_sync = _policy(storage, "shared_sync")
    # A failure then a success: the success path that follows is the
    # steady state of a healthy circuit that once counted a failure.
    for p in (memory, shared, memory_sync, shared_sync):
        with contextlib.suppress(Boom):
            p.call(_raise_boom)
        p.call(fn)
    flush_storages()

    client = redis.Redis.from_url(url)
    pyb_memory = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
    pyb_redis = pybreaker.CircuitBreaker(
        fail_max=5,
        reset_timeout=60,
        state_storage=pybreaker.CircuitRedisStorage(
            pybreaker.STATE_CLOSED, client, namespace="pybreaker-bench"
        ),
    )
    slow_calls = max(500, calls // 100)  # pybreaker+redis is ~100 us each

    cases: dict[str, Any] = {
        "bare_sync": lambda: timed_sync(fn, calls),
        "policy_memory_sync": lambda: timed_sync(
            lambda: memory_sync.call(fn), calls
        ),
        "policy_redis_sync": lambda: timed_sync(
            lambda: shared_sync.call(fn), calls
        ),
        "pybreaker_memory": lambda: timed_sync(
            lambda: pyb_memory.call(fn), calls
        ),
        "pybreaker_redis": lambda: timed_sync(
            lambda: pyb_redis.call(fn), slow_calls
        ),
    }
    async_cases: dict[str, Any] = {
        "bare_async": lambda: timed_async(afn, calls),
        "policy_memory_async": lambda: timed_async(
            lambda: memory.acall(afn), calls
        ),
        "policy_redis_async": lambda: timed_async(
            lambda: shared.acall(afn), calls
        ),
    }
    samples: dict[str, list[float]] = {k: [] for k in [*cases, *async_cases]}
    for _ in range(trials):
        for name, case in cases.items():
            samples[name].append(case())
        for name, acase in async_cases.items():
            samples[name].append(await acase())
    client.close()
    return {k: statistics.median(v) for k, v in samples.items()}


def _raise_boom() -> None:
    raise Boom("down")


async def failure_path(url: str, calls: int) -> dict[str, float]:
    """Caller-thread cost of a counted failure (no retry, never trips).

    With a shared storage this is where an operation is queued for the
    backend thread; the caller never waits for the store.
    """
    storage = StorageConfig(backend="redis", url=url, namespace="bench")

    async def failing() -> None:
        raise Boom("down")

    out = {}
    for label, config in (("memory", None), ("redis", storage)):
        p = _policy(
            config,
            f"fail-{label}",
            failure_threshold=1_000_000,  # the largest allowed, above --calls
            retry={"attempts": 1},
        )
        start = time.perf_counter_ns()
        for _ in range(calls):
            with contextlib.suppress(Boom):
                await p.acall(failing)
        out[label] = (time.perf_counter_ns() - start) / calls
        flush_storages(30)
    return out


# -- 2. event-loop lag ------------------------------------------------------------


async def loop_lag(
    storage: StorageConfig | None,
    seconds: float,
    stall: Any = None,
) -> dict[str, float]:
    """Worst and p99 lateness of a 1 ms sleep while the circuit churns.

    The load: 20 tasks calling a dependency that fails in bursts, so the
    circuit (threshold 3, open 50 ms) keeps tripping, probing, closing.
    """
    name = f"lag-{random.randrange(10**9)}"
    p = _policy(
        storage,
        name,
        failure_threshold=3,
        recovery_timeout=0.05,
        retry={"attempts": 1},
    )
    loop = asyncio.get_running_loop()
    stop = loop.time() + seconds
    lags: list[float] = []
    gate_calls = _time_gate_calls(p)
    gc_pauses: list[float] = []
    gc_started = [0.0]

    def gc_watch(phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        else:
            gc_pauses.append(time.perf_counter() - gc_started[0])

    # Long-lived objects (modules, pydantic models) out of the collector's
    # way, as servers do: what is left is the load's own garbage.
    gc.collect()
    gc.freeze()
    gc.callbacks.append(gc_watch)
    outcomes: dict[str, int] = {}
    failing = False

    async def dependency() -> int:
        await asyncio.sleep(0.0005)
        if failing:
            raise Boom("down")
        return 1

    async def flip() -> None:
        nonlocal failing
        while loop.time() < stop:
            failing = not failing
            await asyncio.sleep(0.1 if failing else 0.15)

    async def worker() -> None:
        while loop.time() < stop:
            try:
                await p.acall(dependency)
                key = "ok"
            except (Boom, CircuitOpenError) as exc:
                key = type(exc).__name__
            outcomes[key] = outcomes.get(key, 0) + 1
            await asyncio.sleep(0.001)

    async def probe() -> None:
        while loop.time() < stop:
            before = loop.time()
            await asyncio.sleep(0.001)
            lags.append(loop.time() - before - 0.001)

    async def stalled() -> None:
        if stall is None:
            return
        await asyncio.sleep(seconds / 3)
        stall.pause()
        try:
            await asyncio.sleep(1.0)
        finally:
            stall.resume()

    try:
        await asyncio.gather(
            probe(), flip(), stalled(), *(worker() for _ in range(20))
        )
    finally:
        gc.callbacks.remove(gc_watch)
        gc.unfreeze()
    lags.sort()
    gate_calls.sort()
    status = p.status()
    return {
        "gate_max_ms": gate_calls[-1] * 1000,
        "gate_p999_ms": gate_calls[int(len(gate_calls) * 0.999)] * 1000,
        "max_ms": lags[-1] * 1000,
        "p99_ms": lags[int(len(lags) * 0.99)] * 1000,
        "p50_ms": lags[len(lags) // 2] * 1000,
        "calls": sum(outcomes.values()),
        "failures": status["failures"],
        "rejections": status["rejections"],
        "gc_max_ms": max(gc_pauses, default=0.0) * 1000,
    }


def _time_gate_calls(p: Policy) -> list[float]:
    """Time every gate call the loop thread makes (where storage is met).

    ``admit``, ``success``, ``failure`` and ``release`` are everything the
    caller's thread does with the circuit, including queueing storage
    operations; their longest duration bounds what storage can take from
    the loop (a GC pause or the OS preempting the thread included).
    """
    gate = p._gate
    durations: list[float] = []

    def timing(real: Callable[..., Any]) -> Callable[..., Any]:
        def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return real(self, *args, **kwargs)
            finally:
                durations.append(time.perf_counter() - start)

        return timed

    # A gate has slots, not an instance dictionary: its class is swapped
    # for a subclass whose methods are timed (the same slots, no more).
    base = type(gate)
    timed_methods = {
        name: timing(getattr(base, name))
        for name in ("admit", "success", "failure", "release")
    }
    gate.__class__ = type(
        "TimedGate", (base,), {"__slots__": (), **timed_methods}
    )
    return durations


# -- 3. propagation -------------------------------------------------------------


def _watch(storage: dict[str, Any], name: str) -> None:
    """Child: report every state change of *name* with its wall time."""
    config = StorageConfig.model_validate(storage)
    p = Policy(
        name,
        PolicyConfig.model_validate(
            {"failure_threshold": 1, "recovery_timeout": 3600}
        ),
        storage=make_storage(config, name),
        storage_name=config.backend,
    )
    print(json.dumps({"state": p.state, "at": time.time()}), flush=True)
    last = p.state
    while True:
        state = p.state
        if state != last:
            print(json.dumps({"state": state, "at": time.time()}), flush=True)
            last = state
        time.sleep(0.0001)


def propagation(storage: StorageConfig, trips: int) -> dict[str, float]:
    """Trip here, see it there: seconds from the failing call."""
    name = f"prop-{random.randrange(10**9)}"
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--watch",
            json.dumps(storage.model_dump()),
            name,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        json.loads(child.stdout.readline())  # ready
        p = Policy(
            name,
            PolicyConfig.model_validate(
                {"failure_threshold": 1, "recovery_timeout": 3600}
            ),
            storage=make_storage(storage, name),
            storage_name=storage.backend,
        )
        delays = []
        for _ in range(trips):
            # A random pause: the watcher's sqlite poll must not be in
            # phase with the trips (it would always wait a full period).
            time.sleep(random.uniform(0, 0.06))
            started = time.time()
            with contextlib.suppress(Boom):
                p.call(_raise_boom)
            seen = json.loads(child.stdout.readline())
            assert seen["state"] == "open", seen
            delays.append(seen["at"] - started)
            p.close()
            seen = json.loads(child.stdout.readline())
            assert seen["state"] == "closed", seen
    finally:
        child.kill()
        child.wait()
    delays.sort()
    return {
        "p50_ms": delays[len(delays) // 2] * 1000,
        "p99_ms": delays[min(len(delays) - 1, int(len(delays) * 0.99))] * 1000,
        "max_ms": delays[-1] * 1000,
    }


# -- main ----------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--trips", type=int, default=200)
    parser.add_argument("--lag-seconds", type=float, default=3.0)
    parser.add_argument("--lag-trials", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--watch", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    _quiet()
    if args.watch:
        _watch(json.loads(args.watch[0]), args.watch[1])
        return

    results: dict[str, Any] = {}
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        redis_storage = StorageConfig(
            backend="redis", url=server.url, namespace="bench"
        )
        sqlite_storage = StorageConfig(
            backend="sqlite", path=str(Path(tmp) / "state.sqlite")
        )
        r = asyncio.run(success_path(server.url, args.calls, args.trials))
        results["success_path_ns"] = r
        results["failure_path_ns"] = asyncio.run(
            failure_path(server.url, max(1000, args.calls // 20))
        )
        lag_cases = {
            "memory": (None, None),
            "redis": (redis_storage, None),
            "redis_stalled_1s": (redis_storage, server),
            "sqlite": (sqlite_storage, None),
        }
        runs: dict[str, list[dict[str, float]]] = {k: [] for k in lag_cases}
        for _ in range(args.lag_trials):
            # Interleaved, so that the machine's own noise hits all alike.
            for label, (storage, stall) in lag_cases.items():
                runs[label].append(
                    asyncio.run(loop_lag(storage, args.lag_seconds, stall))
                )
        results["loop_lag"] = {
            label: {
                key: statistics.median(run[key] for run in trials)
                for key in trials[0]
            }
            for label, trials in runs.items()
        }
        results["propagation"] = {
            "redis": propagation(redis_storage, args.trips),
            "sqlite": propagation(sqlite_storage, max(20, args.trips // 4)),
        }
        close_storages()

    if args.json:
        print(json.dumps(results, indent=2))
        return
    _report(results)


def _report(results: dict[str, Any]) -> None:
    r = results["success_path_ns"]
    mem_a = r["policy_memory_async"] - r["bare_async"]
    red_a = r["policy_redis_async"] - r["bare_async"]
    mem_s = r["policy_memory_sync"] - r["bare_sync"]
    red_s = r["policy_redis_sync"] - r["bare_sync"]
    pyb_m = r["pybreaker_memory"] - r["bare_sync"]
    pyb_r = r["pybreaker_redis"] - r["bare_sync"]
    print("1. success path, closed circuit (ns added to a bare call)")
    print(f"   {'case':40} {'overhead':>10} {'x memory':>9}")
    for label, over, base in (
        ("policy.acall, memory storage", mem_a, mem_a),
        ("policy.acall, redis storage", red_a, mem_a),
        ("policy.call (sync), memory storage", mem_s, mem_s),
        ("policy.call (sync), redis storage", red_s, mem_s),
        ("pybreaker, memory storage", pyb_m, pyb_m),
        ("pybreaker, CircuitRedisStorage", pyb_r, pyb_m),
    ):
        print(f"   {label:40} {over:10.0f} {over / base:9.2f}")
    print("   goal: redis <= 2x memory")
    f = results["failure_path_ns"]
    print(
        "   a counted failure on the caller's thread (ns per failing call):"
        f" memory {f['memory']:.0f}, redis {f['redis']:.0f}"
    )
    print()
    print(
        "2. event-loop lag while the circuit churns (1 ms sleep lateness,"
        " median of trials)"
    )
    print(
        f"   {'backend':20} {'max ms':>8} {'p99 ms':>8} {'p50 ms':>8}"
        f" {'calls':>7} {'gc max ms':>10}"
        f" {'gate call max':>14} {'p99.9':>7}"
    )
    for label, lag in results["loop_lag"].items():
        print(
            f"   {label:20} {lag['max_ms']:8.2f} {lag['p99_ms']:8.2f}"
            f" {lag['p50_ms']:8.2f} {lag['calls']:7.0f}"
            f" {lag['gc_max_ms']:10.2f} {lag['gate_max_ms']:11.3f} ms"
            f" {lag['gate_p999_ms']:7.3f}"
        )
    print(
        "   goal: storage never blocks the loop > 1 ms. The loop thread"
        " meets storage only inside the gate calls (queueing operations):"
    )
    print(
        "   their longest duration is the bound; the lag columns also carry"
        " the machine's scheduling noise (compare with memory)."
    )
    print()
    print("3. trip propagation to another process (failing call -> refused)")
    for label, prop in results["propagation"].items():
        print(
            f"   {label:8} p50 {prop['p50_ms']:7.2f} ms   p99"
            f" {prop['p99_ms']:7.2f} ms   max {prop['max_ms']:7.2f} ms"
        )


if __name__ == "__main__":
    main()
