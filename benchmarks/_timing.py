"""Timing helpers shared by the benchmarks: ns per call of a loop.

The benchmarks run as scripts (``python benchmarks/x.py``), so this module
is imported from the script's own directory.
"""

from __future__ import annotations

import time
from typing import Any


async def afn() -> int:
    """A bare coroutine: the baseline of async cases."""
    return 1


def fn() -> int:
    """A bare function: the baseline of sync cases."""
    return 1


def timed_sync(call: Any, calls: int) -> float:
    """ns per call of ``call()`` over *calls* calls."""
    start = time.perf_counter_ns()
    for _ in range(calls):
        call()
    return (time.perf_counter_ns() - start) / calls


async def timed_async(factory: Any, calls: int) -> float:
    """ns per call of ``await factory()`` over *calls* calls."""
    start = time.perf_counter_ns()
    for _ in range(calls):
        await factory()
    return (time.perf_counter_ns() - start) / calls
