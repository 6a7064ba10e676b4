"""A flood of callers on each storage: what reaches the dependency and the store.

Starts its own ``redis-server`` on a free loopback port (and a temporary
sqlite file). Two scenarios, each on the memory, sqlite and Redis storages,
50 async callers on one event loop:

1. **Dead dependency**: every call fails at once (``failure_threshold: 5``),
   for ``--seconds``. Reported: calls that reached the dependency, the time
   from the first call to the circuit opening, the event loop's worst lag
   (a task sleeping 1 ms, how late it wakes), and peak RSS.
2. **Flaky dependency**: every other call fails, the threshold is never
   reached (``failure_threshold: 1000000``), so every call is a counted
   failure or a reset. Reported: calls per second, operations the
   policies handed to the backend against the round trips the store
   served (script calls for Redis, from ``INFO commandstats``), the longest
   queue seen, worst loop lag and RSS growth.

    python benchmarks/flood.py [--seconds 1.0] [--callers 50] [--json]

The figures are one run on a shared machine: compare them with each other,
not with another run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sage_resilience import CircuitOpenError, Policy, PolicyConfig  # noqa: E402
from sage_resilience._config import StorageConfig  # noqa: E402
from sage_resilience._storage import (  # noqa: E402
    close_storages,
    flush_storages,
    make_storage,
)
from tests.support.redis_server import RedisServer  # noqa: E402


class Boom(ConnectionError):  # noqa: N818 - the tests' name for it
    pass


def _quiet() -> None:
    """Drop the library's events: stdout carries results here."""

    def drop(*_args: Any) -> Any:
        raise structlog.DropEvent

    structlog.configure(processors=[drop])


def _rss_mb() -> float:
    """Peak resident set size of this process so far (MB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _policy(storage: StorageConfig | None, threshold: int) -> Policy:
    name = f"flood-{uuid.uuid4().hex[:8]}"
    config = PolicyConfig.model_validate(
        {"failure_threshold": threshold, "recovery_timeout": 30}
    )
    if storage is None:
        return Policy(name, config)
    return Policy(
        name,
        config,
        storage=make_storage(storage, name),
        storage_name=storage.backend,
    )


class _Watch:
    """The loop's worst lag, and the longest storage queue, while it runs."""

    def __init__(self, p: Policy) -> None:
        shared = p.breaker._state_storage
        self.backend = getattr(shared, "backend", None)
        self.lag = 0.0
        self.queue = 0

    async def run(self, stop: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < stop:
            before = loop.time()
            await asyncio.sleep(0.001)
            self.lag = max(self.lag, loop.time() - before - 0.001)
            if self.backend is not None:
                self.queue = max(self.queue, self.backend._outstanding)


async def dead(
    storage: StorageConfig | None, seconds: float, callers: int
) -> dict[str, Any]:
    p = _policy(storage, threshold=5)
    reached = 0
    opened_after: float | None = None
    loop = asyncio.get_running_loop()
    start = loop.time()

    async def dependency() -> None:
        nonlocal reached
        reached += 1
        await asyncio.sleep(0)
        raise Boom("refused")

    async def caller(stop: float) -> None:
        nonlocal opened_after
        while loop.time() < stop:
            with contextlib.suppress(Boom, CircuitOpenError):
                await p.acall(dependency)
            if opened_after is None and p.state == "open":
                opened_after = loop.time() - start
            await asyncio.sleep(0)

    stop = start + seconds
    watch = _Watch(p)
    await asyncio.gather(
        watch.run(stop), *(caller(stop) for _ in range(callers))
    )
    return {
        "calls_to_dependency": reached,
        "time_to_open_ms": None
        if opened_after is None
        else round(opened_after * 1000, 1),
        "max_loop_lag_ms": round(watch.lag * 1000, 1),
        "peak_rss_mb": round(_rss_mb(), 1),
    }


async def flaky(
    storage: StorageConfig | None,
    seconds: float,
    callers: int,
    client: redis.Redis | None,
) -> dict[str, Any]:
    p = _policy(storage, threshold=1_000_000)
    shared = p.breaker._state_storage
    handed = 0
    backend = getattr(shared, "backend", None)
    if backend is not None:
        real = backend.submit

        def counting(item: Any) -> None:
            nonlocal handed
            handed += hasattr(item, "kind")  # an operation, not news
            real(item)

        backend.submit = counting
    if client is not None:
        client.config_resetstat()
    calls = 0
    loop = asyncio.get_running_loop()

    async def dependency() -> None:
        nonlocal calls
        calls += 1
        if calls % 2:
            raise Boom("flaky")

    async def caller(stop: float) -> None:
        while loop.time() < stop:
            with contextlib.suppress(Boom, CircuitOpenError):
                await p.acall(dependency)
            await asyncio.sleep(0)

    rss_before = _rss_mb()
    start = loop.time()
    stop = start + seconds
    watch = _Watch(p)
    await asyncio.gather(
        watch.run(stop), *(caller(stop) for _ in range(callers))
    )
    elapsed = loop.time() - start
    flush_storages(10.0)
    result: dict[str, Any] = {
        "calls_per_s": round(calls / elapsed),
        "operations_handed": handed,
        "longest_queue": watch.queue,
        "max_loop_lag_ms": round(watch.lag * 1000, 1),
        "rss_growth_mb": round(_rss_mb() - rss_before, 1),
    }
    if client is not None:
        stats = client.info("commandstats").get("cmdstat_evalsha", {})
        result["store_script_calls"] = stats.get("calls", 0)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--callers", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    _quiet()
    results: dict[str, dict[str, Any]] = {}
    with RedisServer() as server, tempfile.TemporaryDirectory() as tmp:
        client = redis.Redis.from_url(server.url)
        storages: dict[str, StorageConfig | None] = {
            "memory": None,
            "sqlite": StorageConfig(
                backend="sqlite", path=str(Path(tmp) / "s.db")
            ),
            "redis": StorageConfig(
                backend="redis", url=server.url, namespace="flood"
            ),
        }
        for backend, storage in storages.items():
            results[f"dead/{backend}"] = asyncio.run(
                dead(storage, args.seconds, args.callers)
            )
            results[f"flaky/{backend}"] = asyncio.run(
                flaky(
                    storage,
                    args.seconds,
                    args.callers,
                    client if backend == "redis" else None,
                )
            )
            close_storages()
        client.close()
    if args.json:
        print(json.dumps(results, indent=2))
        return
    for case, figures in results.items():
        shown = ", ".join(f"{k} {v}" for k, v in figures.items())
        print(f"{case:14} {shown}")
    print(f"(python {sys.version.split()[0]}, {time.strftime('%Y-%m-%d')})")


if __name__ == "__main__":
    main()
