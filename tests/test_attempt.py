"""One attempt's timeout (_attempt.within and its wheel): the semantics of
``asyncio.timeout`` with one timer per 5 ms bucket."""

from __future__ import annotations

import asyncio

import pytest
from sage_resilience import _attempt
from sage_resilience._attempt import within


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
