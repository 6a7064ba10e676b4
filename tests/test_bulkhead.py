"""Bulkheads: ``max_concurrency`` and ``max_wait``."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from sage_resilience import BulkheadFullError, CircuitOpenError, PolicyConfig
from tests.helpers import Clock, make_policy, named, with_clock


class Boom(ConnectionError):
    """A dependency failure."""


class InFlight:
    """A dependency that counts, for real, how many calls run at once."""

    def __init__(self, release: asyncio.Event | None = None) -> None:
        self.release = release
        self.now = 0
        self.peak = 0
        self.calls = 0
        self._lock = threading.Lock()

    def enter(self) -> None:
        with self._lock:
            self.calls += 1
            self.now += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self._lock:
            self.now -= 1

    async def __call__(self) -> str:
        self.enter()
        try:
            if self.release is not None:
                await self.release.wait()
            else:
                for _ in range(3):
                    await asyncio.sleep(0)
            return "ok"
        finally:
            self.leave()


async def outcome(p, fn, *args) -> object:
    try:
        return await p.acall(fn, *args)
    except (BulkheadFullError, CircuitOpenError, Boom) as exc:
        return type(exc)


class TestConfig:
    def test_defaults(self):
        """No bulkhead unless max_concurrency; max_wait 0 (fail fast)."""
        config = PolicyConfig()
        assert (None, 0.0) == (config.max_concurrency, config.max_wait)
        assert make_policy().status()["in_flight"] is None


class TestAsync:
    async def test_1000_callers_fail_fast_beyond_the_limit(self):
        """Exactly max_concurrency run; 990 get BulkheadFullError at once."""
        p = make_policy(max_concurrency=10)
        release = asyncio.Event()
        dep = InFlight(release)
        tasks = [asyncio.create_task(outcome(p, dep)) for _ in range(1000)]
        for _ in range(100):  # the refusals need one step each
            await asyncio.sleep(0)
        assert 990 == sum(t.done() for t in tasks)
        assert (10, 10) == (dep.now, p.status()["in_flight"])
        release.set()
        results = await asyncio.gather(*tasks)
        assert 10 == results.count("ok")
        assert 990 == results.count(BulkheadFullError)
        assert (10, 10) == (dep.peak, dep.calls)
        status = p.status()
        expected = (990, 10, 10, 0, 0, "closed", 0)
        actual = (
            status["bulkhead_rejections"],
            status["calls"],
            status["successes"],
            status["failures"],
            status["failure_count"],
            status["state"],
            status["in_flight"],
        )
        assert expected == actual

    async def test_1000_callers_wait_their_turn(self):
        """With max_wait, all 1,000 run, never more than 10 at once."""
        p = make_policy(max_concurrency=10, max_wait=60)
        dep = InFlight()
        results = await asyncio.gather(*(outcome(p, dep) for _ in range(1000)))
        assert ["ok"] * 1000 == results
        assert (10, 1000, 0) == (dep.peak, dep.calls, dep.now)
        assert 0 == p.status()["bulkhead_rejections"]

    async def test_waiters_give_up_after_max_wait(self):
        """Callers wait up to max_wait, then get BulkheadFullError."""
        p = make_policy(max_concurrency=2, max_wait=0.05)
        release = asyncio.Event()
        dep = InFlight(release)
        holders = [asyncio.create_task(outcome(p, dep)) for _ in range(2)]
        await asyncio.sleep(0)
        errors = []
        waiters = asyncio.gather(
            *(p.acall(dep) for _ in range(50)), return_exceptions=True
        )
        for result in await asyncio.wait_for(waiters, 10):
            assert isinstance(result, BulkheadFullError)
            errors.append(result)
        assert all(e.waited >= 0.049 for e in errors)
        assert {("dep", 2)} == {(e.policy, e.max_concurrency) for e in errors}
        release.set()
        assert ["ok", "ok"] == await asyncio.gather(*holders)
        assert "ok" == await p.acall(InFlight())
        assert (2, 0) == (dep.peak, p.status()["in_flight"])

    async def test_never_counted_never_retried(self, events):
        """A full bulkhead neither trips the circuit nor starts retries."""
        p = make_policy(
            failure_threshold=1, max_concurrency=1, retry={"attempts": 3}
        )
        release = asyncio.Event()
        holder = asyncio.create_task(p.acall(InFlight(release)))
        await asyncio.sleep(0)
        dep = InFlight()
        for _ in range(5):
            with pytest.raises(BulkheadFullError):
                await p.acall(dep)
        release.set()
        await holder
        status = p.status()
        assert (0, "closed", 0, 0, 5) == (
            dep.calls,
            status["state"],
            status["failure_count"],
            status["retries"],
            status["bulkhead_rejections"],
        )
        assert [] == named(events, "retry_scheduled")

    async def test_rejections_stay_out_of_the_window(self):
        """Bulkhead rejections are not calls of the rate window."""
        p = make_policy(max_concurrency=1, trip={"minimum_calls": 100})
        release = asyncio.Event()
        holder = asyncio.create_task(p.acall(InFlight(release)))
        await asyncio.sleep(0)
        for _ in range(3):
            with pytest.raises(BulkheadFullError):
                await p.acall(InFlight())
        release.set()
        await holder
        assert 1 == p.status()["window"]["calls"]

    async def test_the_breaker_admits_first(self):
        """An open circuit refuses before any slot is taken or waited for."""
        p = make_policy(max_concurrency=1, max_wait=60)
        release = asyncio.Event()
        holder = asyncio.create_task(p.acall(InFlight(release)))
        await asyncio.sleep(0)
        p.open()
        with pytest.raises(CircuitOpenError):
            # Would wait 60 s for the slot if it were taken first.
            await asyncio.wait_for(p.acall(InFlight()), 10)
        assert (1, 0) == (
            p.status()["in_flight"],
            p.status()["bulkhead_rejections"],
        )
        release.set()
        await holder

    async def test_each_attempt_takes_its_own_slot(self):
        """Retries re-acquire the slot: 1 slot is enough for 3 attempts."""
        p = make_policy(max_concurrency=1, retry={"attempts": 3})
        attempts = []

        async def flaky() -> str:
            attempts.append(p.status()["in_flight"])
            if len(attempts) < 3:
                raise Boom("again")
            return "ok"

        assert "ok" == await p.acall(flaky)
        assert [1, 1, 1] == attempts
        assert 0 == p.status()["in_flight"]

    async def test_a_cancelled_waiter_leaks_no_slot(self):
        """Cancelling a queued caller leaves the count right."""
        p = make_policy(max_concurrency=1, max_wait=60)
        release = asyncio.Event()
        holder = asyncio.create_task(p.acall(InFlight(release)))
        await asyncio.sleep(0)
        waiter = asyncio.create_task(p.acall(InFlight()))
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        release.set()
        await holder
        assert 0 == p.status()["in_flight"]
        assert "ok" == await p.acall(InFlight())

    async def test_waiting_does_not_count_against_timeout(self):
        """A caller queued longer than timeout still gets its full timeout."""
        p = make_policy(max_concurrency=1, max_wait=30, timeout=0.1)
        entered, release = threading.Event(), threading.Event()

        def hold() -> str:  # sync calls are not bound by timeout
            entered.set()
            release.wait(30)
            return "held"

        thread = threading.Thread(target=p.call, args=(hold,))
        thread.start()
        entered.wait(30)
        waiter = asyncio.create_task(p.acall(InFlight()))
        await asyncio.sleep(0.3)  # three timeouts' worth of queueing
        assert not waiter.done()
        release.set()
        assert "ok" == await waiter
        thread.join()
        assert 0 == p.status()["failures"]

    async def test_waiting_is_not_a_slow_call(self):
        """Slow-call timing starts once the slot is taken."""
        p = make_policy(
            max_concurrency=1,
            max_wait=30,
            trip={"slow_call_duration": 0.1, "minimum_calls": 100},
        )
        entered, release = threading.Event(), threading.Event()

        def hold() -> None:
            entered.set()
            release.wait(30)

        thread = threading.Thread(target=p.call, args=(hold,))
        thread.start()
        entered.wait(30)
        waiter = asyncio.create_task(p.acall(InFlight()))
        await asyncio.sleep(0.3)
        release.set()
        await waiter
        thread.join()
        window = p.status()["window"]
        assert (2, 1) == (window["calls"], window["slow_calls"])


class TestSync:
    def test_threads_never_exceed_the_limit(self):
        """48 threads through 4 slots: exactly 4 in flight at a time."""
        p = make_policy(max_concurrency=4, max_wait=60)
        dep = InFlight()
        together = threading.Barrier(4, timeout=30)

        def work() -> str:
            dep.enter()
            try:
                together.wait()  # only passes when 4 are inside
                return "ok"
            finally:
                dep.leave()

        results: list[str] = []
        threads = [
            threading.Thread(target=lambda: results.append(p.call(work)))
            for _ in range(48)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert ["ok"] * 48 == results
        assert (4, 48, 0) == (dep.peak, dep.calls, p.status()["in_flight"])

    def test_threads_fail_fast(self):
        """max_wait 0: beyond 4 in flight, threads fail at once."""
        p = make_policy(max_concurrency=4)
        release = threading.Event()
        dep = InFlight()
        rejected: list[BulkheadFullError] = []

        def hold() -> str:
            dep.enter()
            try:
                release.wait(30)
                return "ok"
            finally:
                dep.leave()

        def caller() -> None:
            try:
                p.call(hold)
            except BulkheadFullError as exc:
                rejected.append(exc)

        threads = [threading.Thread(target=caller) for _ in range(20)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(rejected) < 16 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert 4 == dep.now
        release.set()
        for t in threads:
            t.join()
        assert (16, 4, 4) == (len(rejected), dep.peak, dep.calls)
        assert 16 == p.status()["bulkhead_rejections"]

    def test_a_waiting_thread_gives_up_after_max_wait(self):
        """A thread waits max_wait for a slot, then BulkheadFullError."""
        p = make_policy(max_concurrency=1, max_wait=0.05)
        entered, release = threading.Event(), threading.Event()

        def hold() -> None:
            entered.set()
            release.wait(30)

        thread = threading.Thread(target=p.call, args=(hold,))
        thread.start()
        entered.wait(30)
        with pytest.raises(BulkheadFullError) as full:
            p.call(lambda: None)
        release.set()
        thread.join()
        assert full.value.waited >= 0.049

    async def test_async_and_sync_share_the_slots(self):
        """A sync holder keeps async callers out, and the reverse."""
        p = make_policy(max_concurrency=1)
        entered, release = threading.Event(), threading.Event()
        thread = threading.Thread(
            target=p.call, args=(lambda: (entered.set(), release.wait(30)),)
        )
        thread.start()
        entered.wait(30)
        with pytest.raises(BulkheadFullError):
            await p.acall(InFlight())
        release.set()
        thread.join()
        gate = asyncio.Event()
        holder = asyncio.create_task(p.acall(InFlight(gate)))
        await asyncio.sleep(0)
        with pytest.raises(BulkheadFullError):
            await asyncio.to_thread(p.call, lambda: None)
        gate.set()
        await holder


class TestProbeSlots:
    async def test_probe_cancelled_in_the_queue_frees_its_slot(self):
        """A half-open probe cancelled while waiting for a slot gives it back."""
        clock = Clock()
        p = with_clock(
            make_policy(
                failure_threshold=1,
                recovery_timeout=1,
                max_concurrency=1,
                max_wait=30,
            ),
            clock,
        )

        async def fail() -> None:
            raise Boom("down")

        with pytest.raises(Boom):
            await p.acall(fail)
        release = asyncio.Event()
        holder = InFlight(release)
        # The slot is taken, as by a call still in flight from before.
        bulkhead = p._s.bulkhead
        assert bulkhead is not None
        assert await bulkhead.acquire_async()
        clock.advance(2)
        probe = asyncio.create_task(p.acall(holder))
        for _ in range(5):
            await asyncio.sleep(0)
        probe.cancel()
        with pytest.raises(asyncio.CancelledError):
            await probe
        bulkhead.release()
        release.set()
        assert "half-open" == p.state
        assert "ok" == await p.acall(InFlight())
        assert "closed" == p.state

    async def test_unprintable_failure_is_counted_and_kept(self):
        """An exception whose __str__ raises still counts, and is raised."""

        class Unprintable(ConnectionError):
            def __str__(self) -> str:
                raise RuntimeError("no text")

        p = make_policy(failure_threshold=1, recovery_timeout=1)

        async def fail() -> None:
            raise Unprintable

        with pytest.raises(Unprintable):
            await p.acall(fail)
        assert "open" == p.state
        assert p.status()["last_failure"].startswith("Unprintable: ")
