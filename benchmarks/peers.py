"""sage_resilience against its peers and the floor, in one run.

What each wrapper adds to one call of a bare function, as ns and as a
multiple of the floor: a no-op decorator (``functools.wraps`` and one
frame), the least any Python wrapper can cost. Then refusals (an open
circuit, against circuitbreaker's and a plain raising function), and the
import time of ``sage_resilience`` against ``stamina``'s.

    pip install -r benchmarks/requirements-peers.txt
    python benchmarks/peers.py [--calls 200000] [--trials 7] [--json]

Peers missing from the environment are left out of the table (with a note
on stderr saying how to install them). Every row is the median of the
trials, the cases interleaved so a noisy machine slows them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.util
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sage_resilience import Policy, PolicyConfig  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

PEERS = ("circuitbreaker", "aiobreaker", "purgatory", "stamina")


async def target() -> int:
    return 1


def sync_target() -> int:
    return 1


def noop(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The floor: a decorator that only forwards the call."""
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            return await fn(*args, **kwargs)

        return wrapper

    @functools.wraps(fn)
    def sync_wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return sync_wrapper


def _policy(**settings: Any) -> Policy:
    return Policy(
        "bench",
        PolicyConfig.model_validate({"failure_threshold": 5, **settings}),
    )


def async_cases() -> dict[str, Callable[[], Awaitable[Any]]]:
    """Name -> a zero-argument coroutine function to await, success path."""
    cases: dict[str, Callable[[], Awaitable[Any]]] = {
        "bare call": target,
        "no-op decorator (floor)": noop(target),
        "@policy, plain": _policy()(target),
        "@policy, retries 3": _policy(retry={"attempts": 3})(target),
        "@policy, timeout": _policy(timeout=30)(target),
    }
    if importlib.util.find_spec("circuitbreaker"):
        from circuitbreaker import circuit  # noqa: PLC0415

        cases["circuitbreaker"] = circuit(
            failure_threshold=5, recovery_timeout=60
        )(target)
    if importlib.util.find_spec("aiobreaker"):
        import datetime as dt  # noqa: PLC0415

        from aiobreaker import CircuitBreaker  # noqa: PLC0415

        cases["aiobreaker"] = CircuitBreaker(
            fail_max=5, timeout_duration=dt.timedelta(seconds=60)
        )(target)
    if importlib.util.find_spec("purgatory"):
        from purgatory import AsyncCircuitBreakerFactory  # noqa: PLC0415

        cases["purgatory"] = AsyncCircuitBreakerFactory(default_threshold=5)(
            "bench"
        )(target)
    if importlib.util.find_spec("stamina"):
        import stamina  # noqa: PLC0415

        cases["stamina retry(3)"] = stamina.retry(on=Exception, attempts=3)(
            target
        )
    return cases


def sync_cases() -> dict[str, Callable[[], Any]]:
    return {
        "bare call": sync_target,
        "no-op decorator (floor)": noop(sync_target),
        "@policy, plain": _policy()(sync_target),
        "@policy, retries 3": _policy(retry={"attempts": 3})(sync_target),
    }


async def refusal_cases() -> dict[str, Callable[[], Awaitable[Any]]]:
    async def raising() -> int:
        raise ValueError

    p = _policy()
    p.open()
    cases: dict[str, Callable[[], Awaitable[Any]]] = {
        "plain raising function": raising,
        "@policy, open": p(target),
    }
    if importlib.util.find_spec("circuitbreaker"):
        from circuitbreaker import circuit  # noqa: PLC0415

        async def failing() -> int:
            raise ConnectionError

        opened = circuit(failure_threshold=1, recovery_timeout=3600)(failing)
        with contextlib.suppress(ConnectionError):
            await opened()
        cases["circuitbreaker, open"] = opened
    return cases


async def timed_async(fn: Callable[[], Awaitable[Any]], calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        await fn()
    return (time.perf_counter_ns() - start) / calls


async def timed_refusals(
    fn: Callable[[], Awaitable[Any]], calls: int
) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        try:
            await fn()
        except Exception:
            pass
    return (time.perf_counter_ns() - start) / calls


def timed_sync(fn: Callable[[], Any], calls: int) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        fn()
    return (time.perf_counter_ns() - start) / calls


async def measure(calls: int, trials: int) -> dict[str, dict[str, float]]:
    acases = async_cases()
    scases = sync_cases()
    rcases = await refusal_cases()
    runs: dict[str, dict[str, list[float]]] = {
        "async": {k: [] for k in acases},
        "sync": {k: [] for k in scases},
        "refusal": {k: [] for k in rcases},
    }
    for _ in range(trials):
        for name, fn in acases.items():
            runs["async"][name].append(await timed_async(fn, calls))
        for name, sfn in scases.items():
            runs["sync"][name].append(timed_sync(sfn, calls))
        for name, fn in rcases.items():
            runs["refusal"][name].append(await timed_refusals(fn, calls))
    return {
        group: {name: statistics.median(v) for name, v in cases.items()}
        for group, cases in runs.items()
    }


def import_time(
    statement: str, module: str, cache: Path, runs: int = 7
) -> float | None:
    """Median seconds of ``python -c statement`` in a fresh process.

    Every process reads its bytecode from *cache* (``PYTHONPYCACHEPREFIX``),
    written by one discarded run first: an installed package has its
    bytecode compiled at install, so neither side pays the compiler,
    whatever ``PYTHONDONTWRITEBYTECODE`` says in the caller's environment.
    """
    if importlib.util.find_spec(module) is None:
        return None
    env = {
        k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"
    }
    env["PYTHONPYCACHEPREFIX"] = str(cache)
    times = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", statement], check=True, cwd=ROOT, env=env
        )
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def report(results: dict[str, Any]) -> str:
    lines = []
    for group in ("async", "sync"):
        figures = results[group]
        bare = figures["bare call"]
        floor = figures["no-op decorator (floor)"] - bare
        lines.append(f"{group} success path: ns added per call, vs floor")
        for name, value in figures.items():
            if name == "bare call":
                continue
            added = value - bare
            lines.append(f"  {name:30} {added:8.0f}  {added / floor:5.1f}x")
    refusals = results["refusal"]
    lines.append("refusals: ns per refused call")
    base = refusals.get("circuitbreaker, open")
    for name, value in refusals.items():
        ratio = f"  {value / base:4.2f}x circuitbreaker" if base else ""
        lines.append(f"  {name:30} {value:8.0f}{ratio}")
    times = results["import"]
    start, theirs = times["python"], times.get("stamina")
    lines.append(
        "import, ms beyond an empty interpreter's start (bytecode cached)"
    )
    for name, value in times.items():
        if name == "python" or value is None:
            continue
        ratio = ""
        if theirs and name != "stamina":
            ratio = f"  {(value - start) / (theirs - start):4.2f}x stamina"
        lines.append(f"  {name:40} {(value - start) * 1000:6.0f}{ratio}")
    lines.append(
        f"(python {platform.python_version()}, {platform.machine()}, "
        f"{time.strftime('%Y-%m-%d')})"
    )
    return "\n".join(lines)


def _quiet() -> None:
    """Drop the library's events: stdout carries results here."""

    def drop(*_args: Any) -> Any:
        raise structlog.DropEvent

    structlog.configure(processors=[drop])


def main() -> None:
    _quiet()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--trials", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    missing = [p for p in PEERS if importlib.util.find_spec(p) is None]
    if missing:
        print(
            f"peers not installed, left out: {', '.join(missing)} "
            "(pip install -r benchmarks/requirements-peers.txt)",
            file=sys.stderr,
        )
    results: dict[str, Any] = asyncio.run(measure(args.calls, args.trials))
    with tempfile.TemporaryDirectory(prefix="peers-pycache-") as cache:
        where = Path(cache)
        results["import"] = {
            "python": import_time("pass", "sys", where),
            "import sage_resilience": import_time(
                "import sage_resilience", "sage_resilience", where
            ),
            "from sage_resilience import policy": import_time(
                "from sage_resilience import policy", "sage_resilience", where
            ),
            "stamina": import_time("import stamina", "stamina", where),
        }
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(report(results))


if __name__ == "__main__":
    main()
