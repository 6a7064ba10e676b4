"""Success-path and rejection overhead of a policy, in one run.

Every figure is the time a wrapper adds to a bare call (median of several
trials, ns per call), and the ratios compare it with raw pybreaker and raw
tenacity measured in the same process:

    python benchmarks/overhead.py [--calls 200000] [--trials 7]

Targets (issue: core): async success path with retry configured <= 1.5x raw
pybreaker's sync overhead; with a per-attempt timeout <= 3x; rejecting while
open cheaper than pybreaker's own rejection; memory constant per policy.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
import tracemalloc
from typing import Any

import pybreaker
import tenacity
from _timing import afn, fn, timed_async, timed_sync
from sage_resilience import CircuitOpenError, Policy, PolicyConfig


def _timed_reject_sync(fn: Any, calls: int, exc: type[BaseException]) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        try:
            fn()
        except exc:
            pass
    return (time.perf_counter_ns() - start) / calls


async def _timed_reject_async(
    factory: Any, calls: int, exc: type[BaseException]
) -> float:
    start = time.perf_counter_ns()
    for _ in range(calls):
        try:
            await factory()
        except exc:
            pass
    return (time.perf_counter_ns() - start) / calls


def _policy(**overrides: Any) -> Policy:
    config = PolicyConfig.model_validate(
        {"failure_threshold": 5, "retry": {"attempts": 3}, **overrides}
    )
    return Policy("bench", config)


async def measure(calls: int, trials: int) -> dict[str, float]:
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
    retry_async = tenacity.retry(
        stop=tenacity.stop_after_attempt(3), reraise=True
    )(afn)
    p_retry = _policy()
    p_timeout = _policy(timeout=5)
    p_sync = _policy()
    p_open = _policy()
    p_open.open()
    open_breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=3600)
    open_breaker.open()

    cases: dict[str, Any] = {
        "bare_sync": lambda: timed_sync(fn, calls),
        "pybreaker_sync": lambda: timed_sync(lambda: breaker.call(fn), calls),
        "policy_sync": lambda: timed_sync(lambda: p_sync.call(fn), calls),
        "pybreaker_reject": lambda: _timed_reject_sync(
            lambda: open_breaker.call(fn),
            calls,
            pybreaker.CircuitBreakerError,
        ),
        "policy_reject_sync": lambda: _timed_reject_sync(
            lambda: p_open.call(fn), calls, CircuitOpenError
        ),
    }
    async_cases: dict[str, Any] = {
        "bare_async": lambda: timed_async(afn, calls),
        "tenacity_async": lambda: timed_async(retry_async, calls // 10),
        "policy_async_retry": lambda: timed_async(
            lambda: p_retry.acall(afn), calls
        ),
        "policy_async_timeout": lambda: timed_async(
            lambda: p_timeout.acall(afn), calls
        ),
        "policy_reject_async": lambda: _timed_reject_async(
            lambda: p_open.acall(afn), calls, CircuitOpenError
        ),
    }
    samples: dict[str, list[float]] = {k: [] for k in [*cases, *async_cases]}
    for _ in range(trials):
        # Interleave the cases so drift in the machine hits all alike.
        for name, case in cases.items():
            samples[name].append(case())
        for name, acase in async_cases.items():
            samples[name].append(await acase())
    return {k: statistics.median(v) for k, v in samples.items()}


def memory_growth(calls: int) -> tuple[int, int]:
    """Bytes retained after N rejections and N successes (should be ~0)."""
    p_open = _policy()
    p_open.open()
    p_ok = _policy()

    def run() -> None:
        for _ in range(calls):
            try:
                p_open.call(fn)
            except CircuitOpenError:
                pass
            p_ok.call(fn)

    run()  # warm up caches and free lists
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    run()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return calls, grown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--trials", type=int, default=7)
    args = parser.parse_args()

    r = asyncio.run(measure(args.calls, args.trials))
    pyb = r["pybreaker_sync"] - r["bare_sync"]
    ten = r["tenacity_async"] - r["bare_async"]
    rows = [
        ("bare sync call", r["bare_sync"], None, None),
        ("bare await", r["bare_async"], None, None),
        ("raw pybreaker.call (sync)", r["pybreaker_sync"], pyb, None),
        (
            "raw tenacity AsyncRetrying (3 attempts)",
            r["tenacity_async"],
            ten,
            None,
        ),
        (
            "policy.acall, retry attempts=3",
            r["policy_async_retry"],
            r["policy_async_retry"] - r["bare_async"],
            1.5,
        ),
        (
            "policy.acall, attempts=3 + timeout",
            r["policy_async_timeout"],
            r["policy_async_timeout"] - r["bare_async"],
            3.0,
        ),
        (
            "policy.call (sync), attempts=3",
            r["policy_sync"],
            r["policy_sync"] - r["bare_sync"],
            None,
        ),
    ]
    print(
        f"{'case':44} {'ns/call':>9} {'overhead':>9} {'x pybreaker':>12} {'x tenacity':>11}"
    )
    for label, total, over, target in rows:
        over_s = "" if over is None else f"{over:9.0f}"
        xp = "" if over is None else f"{over / pyb:12.2f}"
        xt = "" if over is None else f"{over / ten:11.3f}"
        mark = ""
        if target is not None and over is not None:
            mark = (
                "  ok" if over / pyb <= target else f"  OVER TARGET {target}x"
            )
        print(f"{label:44} {total:9.0f} {over_s:>9} {xp:>12} {xt:>11}{mark}")
    print()
    print("Rejection while open (ns per refused call, exception included):")
    rej = r["pybreaker_reject"]
    for label, value in (
        ("raw pybreaker (CircuitBreakerError)", rej),
        ("policy.call (CircuitOpenError)", r["policy_reject_sync"]),
        ("policy.acall (CircuitOpenError)", r["policy_reject_async"]),
    ):
        print(f"  {label:40} {value:9.0f}  {value / rej:5.2f}x pybreaker")
    calls, grown = memory_growth(100_000)
    print()
    print(
        f"Memory retained after {calls:,} rejections + {calls:,} successes: "
        f"{grown:+,} bytes"
    )


if __name__ == "__main__":
    main()
