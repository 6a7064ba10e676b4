"""One attempt's timeout (_attempt.within, its wheel, and the decorator's
inlined copy): the semantics of ``asyncio.timeout`` with one timer per 5 ms
bucket."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import threading
import time
import weakref
from typing import TYPE_CHECKING

import pytest
from sage_resilience import Policy, PolicyConfig, _attempt
from sage_resilience._attempt import within

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


async def sleeper(seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "done"


def wheel() -> _attempt._TimeoutWheel:
    loop = asyncio.get_running_loop()
    return _attempt._wheels[loop]


async def test_an_expired_attempt_raises_timeout_error() -> None:
    with pytest.raises(TimeoutError):
        await within(0.02, sleeper(5))
    assert "done" == await within(1, sleeper(0))
    assert not wheel().fired


async def test_an_outside_cancellation_stays_a_cancellation() -> None:
    task = asyncio.ensure_future(within(5, sleeper(5)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_nested_timeouts_each_keep_their_own_deadline() -> None:
    """Two timed attempts in one task: the inner one's expiry is the
    inner one's, the outer one's cancels both and surfaces outside."""

    async def inner() -> str:
        with pytest.raises(TimeoutError):
            await within(0.02, sleeper(5))
        return "inner timed out"

    assert "inner timed out" == await within(1, inner())

    async def outer_expires() -> str:
        return await within(5, sleeper(5))

    with pytest.raises(TimeoutError):
        await within(0.03, outer_expires())
    assert not wheel().fired


async def test_two_deadlines_in_one_bucket_as_asyncio_timeout() -> None:
    """Both expire together: as with asyncio.timeout, the outer one says
    TimeoutError and the inner one lets the cancellation through."""

    async def nested(timeout: object) -> list[str]:
        seen: list[str] = []

        async def inner() -> None:
            try:
                if timeout is within:
                    await within(0.02, sleeper(5))
                else:
                    async with asyncio.timeout(0.02):
                        await sleeper(5)
            except BaseException as exc:
                seen.append(type(exc).__name__)
                raise

        try:
            if timeout is within:
                await within(0.02, inner())
            else:
                async with asyncio.timeout(0.02):
                    await inner()
        except BaseException as exc:
            seen.append(type(exc).__name__)
        return seen

    expected = await nested(asyncio.timeout)
    assert ["CancelledError", "TimeoutError"] == expected
    assert expected == await nested(within)


async def test_a_swallowed_cancellation_leaves_nothing_behind() -> None:
    async def stubborn() -> str:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return "kept going"
        return "slept"

    assert "kept going" == await within(0.01, stubborn())
    assert not wheel().fired


async def test_finished_attempts_leave_their_buckets() -> None:
    results = await asyncio.gather(
        *(within(30, sleeper(0)) for _ in range(500))
    )
    assert ["done"] * 500 == results
    assert all(not bucket for bucket in wheel()._buckets.values())


def test_each_event_loop_has_its_wheel() -> None:
    for _ in range(3):
        with pytest.raises(TimeoutError):
            asyncio.run(within(0.01, sleeper(5)))
        assert "done" == asyncio.run(within(1, sleeper(0)))


def test_a_closed_loop_is_not_kept_alive_by_its_wheel() -> None:
    """Only the cache of the last loop used holds a loop strongly."""
    refs = []
    for _ in range(4):
        loop = asyncio.new_event_loop()
        assert "done" == loop.run_until_complete(within(1, sleeper(0)))
        loop.close()
        refs.append(weakref.ref(loop))
        del loop
    gc.collect()
    assert [False, False, False, True] == [ref() is not None for ref in refs]
    assert 1 == len(_attempt._wheels)


# -- finding the current task -------------------------------------------------


async def test_the_current_task_is_found_on_this_python() -> None:
    loop = asyncio.get_running_loop()
    assert asyncio.current_task() is _attempt._task_of(loop)
    found: list[object] = []
    loop.call_soon(lambda: found.append(_attempt._task_of(loop)))
    await asyncio.sleep(0)
    assert [None] == found  # a loop callback runs outside any task


def test_the_dict_of_current_tasks_is_used_only_where_asyncio_keeps_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """3.11-3.13 keep asyncio.tasks._current_tasks (C or pure-Python
    tasks); 3.14's C tasks keep the current task on the thread state and
    leave that dict empty, so the lookup becomes asyncio.current_task."""
    lookup = _attempt._current_task_lookup
    kept = asyncio.tasks._current_tasks  # type: ignore[attr-defined]
    if asyncio.tasks._enter_task is not asyncio.tasks._py_enter_task:  # type: ignore[attr-defined]
        assert kept is __import__("_asyncio")._current_tasks
    assert kept.get == lookup()  # this Python keeps it
    monkeypatch.setattr(asyncio.tasks, "_current_tasks", {})  # 3.14, C tasks
    assert asyncio.current_task is lookup()
    monkeypatch.setattr(
        asyncio.tasks, "_enter_task", asyncio.tasks._py_enter_task
    )  # type: ignore[attr-defined]
    assert asyncio.tasks._current_tasks.get == lookup()  # type: ignore[attr-defined]
    monkeypatch.delattr(asyncio.tasks, "_current_tasks")
    assert asyncio.current_task is lookup()


# -- the decorator's own copy of within() --------------------------------------
#
# Policy's wrapper arms the attempt's deadline in its own frame when the
# loop of the previous timed attempt runs in this thread (_attempt._running);
# within() itself (Policy.acall) takes the same shortcut. The same
# semantics, checked through the decorator and, where the shortcut could
# go wrong (threads, fork), through acall too.


def timed(
    timeout: float,
    fn: Callable[[float], Awaitable[str]] = sleeper,
    entry: str = "decorator",
) -> Callable[[float], Awaitable[str]]:
    """*fn* under a policy with *timeout*, one attempt, never opening:
    decorated, or called through ``Policy.acall`` (*entry* ``"acall"``)."""
    config = PolicyConfig.model_validate(
        {"timeout": timeout, "failure_threshold": 10_000}
    )
    policy = Policy("timed", config)
    if entry == "acall":
        return lambda seconds: policy.acall(fn, seconds)
    return policy(fn)


async def armed_here() -> None:
    """A first timed call, so the next ones take the wrapper's own path."""
    assert "done" == await timed(1)(0)
    running = _attempt._running
    assert running is not None
    assert running[0] is asyncio.get_running_loop()


async def test_decorated_expiry_raises_timeout_error() -> None:
    await armed_here()
    for _ in range(2):
        with pytest.raises(TimeoutError) as raised:
            await timed(0.02)(5)
        assert isinstance(raised.value.__cause__, asyncio.CancelledError)
    assert "done" == await timed(1)(0)
    assert not wheel().fired
    assert all(not bucket for bucket in wheel()._buckets.values())


async def test_decorated_outside_cancellation_stays_a_cancellation() -> None:
    await armed_here()
    task = asyncio.ensure_future(timed(5)(5))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(not bucket for bucket in wheel()._buckets.values())


@pytest.mark.parametrize("first", ["outside", "expiry"])
async def test_decorated_outside_cancellation_racing_the_expiry_wins(
    first: str,
) -> None:
    """Both in one iteration, in either order: as with asyncio.timeout,
    the cancellation from outside surfaces, not a TimeoutError."""
    await armed_here()
    task = asyncio.ensure_future(timed(30)(5))
    await asyncio.sleep(0)  # the attempt is armed and asleep
    timers = wheel()
    ticks = [tick for tick, bucket in timers._buckets.items() if bucket]
    assert 1 == len(ticks)
    if first == "outside":
        task.cancel()
    timers._fire(ticks[0])
    if first == "expiry":
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not timers.fired


async def test_decorated_expiry_alone_is_a_timeout() -> None:
    """The same set-up without the outside cancellation."""
    await armed_here()
    task = asyncio.ensure_future(timed(30)(5))
    await asyncio.sleep(0)
    timers = wheel()
    (tick,) = [tick for tick, bucket in timers._buckets.items() if bucket]
    timers._fire(tick)
    with pytest.raises(TimeoutError):
        await task


async def spinner(seconds: float) -> str:
    """Busy for *seconds* without giving the loop back: its task is the
    loop's current task all along."""
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        pass
    return "done"


@pytest.mark.parametrize("entry", ["decorator", "acall"])
def test_decorated_timeouts_of_loops_in_two_threads_stay_apart(
    entry: str,
) -> None:
    """Each thread's attempts are timed on its own loop and cancel only its
    own tasks, also while the other thread's loop is the one cached and a
    task of it is running (the spinner's thread)."""
    start = threading.Barrier(2)
    results: dict[str, list[str]] = {}

    async def calls(
        name: str, policy: Callable[[float], Awaitable[str]], seconds: float
    ) -> None:
        seen = results.setdefault(name, [])
        for _ in range(30):
            try:
                seen.append(await policy(seconds))
            except TimeoutError:
                seen.append("timed out")
            except asyncio.CancelledError:  # pragma: no cover - the bug
                seen.append("cancelled")
                return

    def run(
        name: str, policy: Callable[[float], Awaitable[str]], seconds: float
    ) -> None:
        start.wait()
        asyncio.run(calls(name, policy, seconds))

    threads = [
        threading.Thread(
            target=run, args=("spin", timed(5, spinner, entry), 0.02)
        ),
        threading.Thread(
            target=run, args=("expire", timed(0.005, sleeper, entry), 0.5)
        ),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert ["done"] * 30 == results["spin"]
    assert ["timed out"] * 30 == results["expire"]


@pytest.mark.parametrize("entry", ["decorator", "acall"])
async def test_decorated_timeout_in_a_child_forked_from_a_coroutine(
    entry: str,
) -> None:
    """The child of a fork made inside a running task sees the parent's
    loop as running in its own thread, with that task current: its timed
    attempts must still be timed on the loop the child runs."""
    await armed_here()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            signal.alarm(10)  # whatever happens, the child ends
            try:
                # Untimed, the attempt would sleep for 5 s and return.
                asyncio.run(timed(0.02, sleeper, entry)(5))
            except TimeoutError:
                code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status), status
    assert 0 == os.WEXITSTATUS(status)


async def test_a_fired_bucket_takes_no_more_attempts() -> None:
    """A bucket fired (here, ahead of its time) is gone from the wheel: an
    attempt whose deadline falls in its range goes to a new one, with a
    timer of its own, in within() as in the decorator's copy."""
    await armed_here()
    timers = wheel()
    # Its clock stopped: every deadline falls in the same bucket's range.
    now = timers._time()
    timers._time = lambda: now
    first = asyncio.ensure_future(timed(30)(5))
    await asyncio.sleep(0)
    (tick,) = [tick for tick, bucket in timers._buckets.items() if bucket]
    timers._fire(tick)
    with pytest.raises(TimeoutError):
        await first
    for second in (timed(30)(5), within(30, sleeper(5))):
        task = asyncio.ensure_future(second)
        await asyncio.sleep(0)
        held = [bucket for bucket in timers._buckets.values() if bucket]
        assert 1 == len(held), "the attempt went to the fired bucket"
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
