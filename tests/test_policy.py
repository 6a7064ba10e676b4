"""The policy engine, async and sync alike."""

from __future__ import annotations

import asyncio
import gc
import inspect
import threading
import tracemalloc

import httpx
import pybreaker
import pytest
from sage_resilience import CircuitOpenError
from sage_resilience.testing import set_testing
from tests.helpers import Clock, make_policy, named, with_clock
from tests.support.http_servers import Response, StandInServer


class Boom(ConnectionError):
    """A dependency failure."""


class Counter:
    """An async and sync dependency that fails a set number of times."""

    def __init__(self, failures: int = 0, exc: BaseException | None = None):
        self.calls = 0
        self.failures = failures
        self.exc = exc or Boom("boom")

    async def __call__(self) -> str:
        return self.sync()

    def sync(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "ok"


class TestCountedFailures:
    async def test_consecutive_failures_open_the_circuit(self):
        """failure_threshold consecutive counted failures open it."""
        p = make_policy(failure_threshold=3)
        dep = Counter(failures=10)
        for _ in range(2):
            with pytest.raises(Boom):
                await p.acall(dep)
        assert "closed" == p.state
        with pytest.raises(Boom):
            await p.acall(dep)
        assert "open" == p.state

    async def test_a_success_resets_the_count(self):
        """Failures must be consecutive: a success in between resets."""
        p = make_policy(failure_threshold=2)
        with pytest.raises(Boom):
            await p.acall(Counter(failures=1))
        assert "ok" == await p.acall(Counter())
        with pytest.raises(Boom):
            await p.acall(Counter(failures=1))
        assert "closed" == p.state
        assert 1 == p.status()["failure_count"]

    async def test_open_circuit_does_not_create_the_coroutine(self):
        """While open the function is not even called."""
        p = make_policy(failure_threshold=1)
        with pytest.raises(Boom):
            await p.acall(Counter(failures=1))
        called = []

        def factory() -> object:
            called.append(1)
            return asyncio.sleep(0)

        with pytest.raises(CircuitOpenError):
            await p.acall(factory)  # type: ignore[arg-type]
        assert [] == called

    async def test_refusal_describes_itself(self):
        """CircuitOpenError says which policy, failures, last error, wait."""
        p = make_policy("siliconflow_api", failure_threshold=2)
        p = with_clock(p, Clock())
        for _ in range(2):
            with pytest.raises(Boom):
                await p.acall(Counter(failures=1))
        with pytest.raises(CircuitOpenError) as info:
            await p.acall(Counter())
        err = info.value
        assert isinstance(err, pybreaker.CircuitBreakerError)
        assert "siliconflow_api" == err.policy
        assert 60.0 == err.retry_after
        assert 2 == err.failure_count
        assert "Boom: boom" == err.last_failure
        assert (
            "circuit breaker 'siliconflow_api' is open after 2 counted "
            "failure(s); last failure: Boom: boom (cause: "
            f"{err.last_cause}); next probe allowed in 60.00s - the "
            "dependency was not called"
        ) == str(err)

    def test_sync_calls_follow_the_same_rules(self):
        """call() counts, opens and refuses like acall()."""
        p = make_policy(failure_threshold=2)
        dep = Counter(failures=5)
        for _ in range(2):
            with pytest.raises(Boom):
                p.call(dep.sync)
        with pytest.raises(CircuitOpenError):
            p.call(dep.sync)
        assert 2 == dep.calls


class TestClassification:
    async def test_ignored_exceptions_count_as_success(self):
        """ignore_exceptions pass through, reset the count, no retry."""
        p = make_policy(
            failure_threshold=5,
            ignore_exceptions=["builtins.KeyError"],
            retry={"attempts": 3},
        )
        with pytest.raises(Boom):
            await p.acall(Counter(failures=3, exc=Boom("x")))
        assert 3 == p.status()["failure_count"]
        dep = Counter(failures=1, exc=KeyError("k"))
        with pytest.raises(KeyError):
            await p.acall(dep)
        assert 1 == dep.calls
        assert 0 == p.status()["failure_count"]

    async def test_record_exceptions_limits_what_counts(self):
        """With record_exceptions only those count."""
        p = make_policy(
            failure_threshold=1, record_exceptions=["builtins.TimeoutError"]
        )
        with pytest.raises(Boom):
            await p.acall(Counter(failures=1))
        assert "closed" == p.state
        with pytest.raises(TimeoutError):
            await p.acall(Counter(failures=1, exc=TimeoutError()))
        assert "open" == p.state

    async def test_http_client_errors_never_trip_or_retry(self):
        """A real 400 passes straight through; 429/503 count and retry."""
        p = make_policy(failure_threshold=2, retry={"attempts": 3})
        with StandInServer() as server:
            server.script("/bad", Response(400, json={"error": "bad model"}))
            server.script("/busy", Response(503))
            async with httpx.AsyncClient(base_url=server.url) as client:

                async def get(path: str) -> httpx.Response:
                    response = await client.get(path)
                    return response.raise_for_status()

                for _ in range(5):
                    with pytest.raises(httpx.HTTPStatusError):
                        await p.acall(get, "/bad")
                assert 5 == server.hits["/bad"]
                assert "closed" == p.state
                with pytest.raises(CircuitOpenError) as info:
                    await p.acall(get, "/busy")
                assert 2 == server.hits["/busy"]
                assert isinstance(info.value.__cause__, httpx.HTTPStatusError)

    @pytest.mark.parametrize(
        ("status", "counted"),
        [(400, False), (404, False), (408, True), (429, True), (500, True)],
    )
    async def test_status_classification(self, status, counted):
        """4xx other than 408/429 are the caller's fault."""
        p = make_policy(failure_threshold=1)
        request = httpx.Request("GET", "http://127.0.0.1/")
        error = httpx.HTTPStatusError(
            "x", request=request, response=httpx.Response(status)
        )
        with pytest.raises(httpx.HTTPStatusError):
            await p.acall(Counter(failures=1, exc=error))
        assert ("open" if counted else "closed") == p.state

    async def test_failure_statuses_are_configurable(self):
        """failure_statuses decides which statuses count."""
        p = make_policy(failure_threshold=1, failure_statuses=[404])
        request = httpx.Request("GET", "http://127.0.0.1/")
        error = httpx.HTTPStatusError(
            "x", request=request, response=httpx.Response(503)
        )
        with pytest.raises(httpx.HTTPStatusError):
            await p.acall(Counter(failures=1, exc=error))
        assert "closed" == p.state


class TestHalfOpen:
    async def _open(self, p, clock: Clock) -> None:
        for _ in range(p.config.failure_threshold):
            with pytest.raises(Boom):
                await p.acall(Counter(failures=1))
        assert "open" == p.state
        clock.advance(p.config.recovery_timeout)

    async def test_exactly_n_probes_among_1000_callers(self):
        """1,000 concurrent callers: exactly half_open_max_calls get in."""
        clock = Clock()
        p = with_clock(
            make_policy(failure_threshold=1, half_open_max_calls=3), clock
        )
        await self._open(p, clock)
        inside = 0
        release = asyncio.Event()

        async def probe() -> str:
            nonlocal inside
            inside += 1
            await release.wait()
            return "ok"

        tasks = [asyncio.create_task(p.acall(probe)) for _ in range(1000)]
        await asyncio.sleep(0.01)
        assert 3 == inside
        release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert 3 == sum(r == "ok" for r in results)
        assert 997 == sum(isinstance(r, CircuitOpenError) for r in results)
        assert "closed" == p.state

    async def test_success_threshold_needs_that_many_probes(self):
        """success_threshold successes close it, one probe at a time."""
        clock = Clock()
        p = with_clock(
            make_policy(failure_threshold=1, success_threshold=2), clock
        )
        await self._open(p, clock)
        await p.acall(Counter())
        assert "half-open" == p.state
        await p.acall(Counter())
        assert "closed" == p.state

    async def test_failed_probe_reopens(self, events):
        """A failed probe reopens the circuit, reason probe_failed."""
        clock = Clock()
        p = with_clock(make_policy(failure_threshold=1), clock)
        await self._open(p, clock)
        with pytest.raises(Boom):
            await p.acall(Counter(failures=1))
        assert "open" == p.state
        changes = named(events, "circuit_state_changed")
        assert [
            "consecutive_failures",
            "recovery_timeout_elapsed",
            "probe_failed",
        ] == [e["reason"] for e in changes]

    async def test_cancelled_probe_frees_its_slot(self):
        """Cancelling the probe gives its slot to the next caller."""
        clock = Clock()
        p = with_clock(make_policy(failure_threshold=1), clock)
        await self._open(p, clock)
        started = asyncio.Event()

        async def hang() -> None:
            started.set()
            await asyncio.sleep(3600)

        task = asyncio.create_task(p.acall(hang))
        await started.wait()
        with pytest.raises(CircuitOpenError):
            await p.acall(Counter())
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert "half-open" == p.state
        assert "ok" == await p.acall(Counter())
        assert "closed" == p.state

    async def test_late_outcome_is_not_a_probe_verdict(self):
        """A slow call admitted while closed cannot close a reopened
        circuit when it finally succeeds."""
        clock = Clock()
        p = with_clock(make_policy(failure_threshold=1), clock)
        release = asyncio.Event()

        async def slow() -> str:
            await release.wait()
            return "late"

        slow_task = asyncio.create_task(p.acall(slow))
        await asyncio.sleep(0)
        with pytest.raises(Boom):
            await p.acall(Counter(failures=1))
        clock.advance(60)
        probe_started = asyncio.Event()
        probe_release = asyncio.Event()

        async def probe() -> str:
            probe_started.set()
            await probe_release.wait()
            raise Boom("still down")

        probe_task = asyncio.create_task(p.acall(probe))
        await probe_started.wait()
        release.set()
        assert "late" == await slow_task
        assert "half-open" == p.state
        probe_release.set()
        with pytest.raises(Boom):
            await probe_task
        assert "open" == p.state


class TestCancellation:
    async def test_cancellation_never_counts(self):
        """CancelledError is re-raised, not counted, not retried."""
        p = make_policy(failure_threshold=1, retry={"attempts": 3})
        calls = 0

        async def hang() -> None:
            nonlocal calls
            calls += 1
            await asyncio.sleep(3600)

        task = asyncio.create_task(p.acall(hang))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert 1 == calls
        assert "closed" == p.state
        assert 0 == p.status()["failures"]

    def test_keyboard_interrupt_is_not_a_failure(self):
        """KeyboardInterrupt in a sync call passes through uncounted."""
        p = make_policy(failure_threshold=1)
        with pytest.raises(KeyboardInterrupt):
            p.call(Counter(failures=1, exc=KeyboardInterrupt()).sync)
        assert "closed" == p.state


class TestRetry:
    async def test_attempts_include_the_first(self, events):
        """attempts=3: three calls, two retry_scheduled, one exhausted."""
        p = make_policy(failure_threshold=10, retry={"attempts": 3})
        dep = Counter(failures=10)
        with pytest.raises(Boom) as info:
            await p.acall(dep)
        assert dep.exc is info.value  # the caller's own error
        assert 3 == dep.calls
        scheduled = named(events, "retry_scheduled")
        assert [1, 2] == [e["attempt"] for e in scheduled]
        assert {3} == {e["max_attempts"] for e in scheduled}
        assert {
            "breaker",
            "attempt",
            "max_attempts",
            "wait",
            "error",
            "event",
            "log_level",
        } == set(scheduled[0])
        assert "Boom: boom" == scheduled[0]["error"]
        (exhausted,) = named(events, "retry_exhausted")
        assert 3 == exhausted["attempts"]
        assert 2 == p.status()["retries"]

    async def test_retry_recovers(self):
        """A failure then a success returns the success."""
        p = make_policy(retry={"attempts": 3})
        dep = Counter(failures=1)
        assert "ok" == await p.acall(dep)
        assert 2 == dep.calls

    def test_sync_retry(self):
        """Sync calls retry the same way."""
        p = make_policy(retry={"attempts": 3})
        dep = Counter(failures=2)
        assert "ok" == p.call(dep.sync)
        assert 3 == dep.calls

    async def test_retrying_stops_once_the_circuit_opens(self):
        """The attempt that trips ends the retries with CircuitOpenError
        whose __cause__ is the last error."""
        p = make_policy(failure_threshold=2, retry={"attempts": 5})
        dep = Counter(failures=10)
        with pytest.raises(CircuitOpenError) as info:
            await p.acall(dep)
        assert 2 == dep.calls
        assert dep.exc is info.value.__cause__

    async def test_rejections_are_not_retried(self):
        """A refused call is not an attempt and is not retried."""
        p = make_policy(failure_threshold=1, retry={"attempts": 3})
        p.open()
        dep = Counter()
        with pytest.raises(CircuitOpenError):
            await p.acall(dep)
        assert 0 == dep.calls
        assert 1 == p.status()["rejections"]
        assert 0 == p.status()["retries"]

    async def test_retry_after_is_honoured(self, events):
        """A 429 Retry-After sets the wait (capped by backoff.max)."""
        p = make_policy(
            retry={"attempts": 3, "backoff": {"initial": 0.01, "max": 5}}
        )
        with StandInServer() as server:
            server.script(
                "/chat",
                [
                    Response(429, headers={"Retry-After": "2"}),
                    Response(503, headers={"Retry-After": "120"}),
                    Response(200, json={"ok": True}),
                ],
            )
            async with httpx.AsyncClient(base_url=server.url) as client:

                async def chat() -> httpx.Response:
                    return (await client.post("/chat")).raise_for_status()

                response = await p.acall(chat)
        assert 200 == response.status_code
        assert [2.0, 5.0] == [
            e["wait"] for e in named(events, "retry_scheduled")
        ]

    async def test_backoff_grows_exponentially(self, events):
        """Waits follow initial x multiplier^n plus jitter, up to max."""
        p = make_policy(
            failure_threshold=10,
            retry={
                "attempts": 5,
                "backoff": {
                    "initial": 1,
                    "multiplier": 3,
                    "max": 5,
                    "jitter": 0,
                },
            },
        )
        with pytest.raises(Boom):
            await p.acall(Counter(failures=10))
        waits = [e["wait"] for e in named(events, "retry_scheduled")]
        assert [1.0, 3.0, 5.0, 5.0] == waits

    async def test_real_sleeps_happen_outside_testing_mode(self):
        """Without the testing mode the backoff really waits."""
        set_testing(False)
        p = make_policy(
            retry={
                "attempts": 2,
                "backoff": {"initial": 0.05, "jitter": 0, "max": 1},
            }
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert "ok" == await p.acall(Counter(failures=1))
        assert loop.time() - started >= 0.05

    async def test_deadline_stops_retrying(self, events):
        """retry.deadline: no sleep may cross it."""
        p = make_policy(
            failure_threshold=10,
            retry={
                "attempts": 10,
                "deadline": 2.5,
                "backoff": {"initial": 1, "multiplier": 1, "jitter": 0},
            },
        )
        dep = Counter(failures=100)
        with pytest.raises(Boom):
            await p.acall(dep)
        assert 3 == dep.calls  # waits of 1 s + 1 s fit, a third would not
        assert 1 == len(named(events, "retry_exhausted"))


class TestTimeout:
    async def test_attempt_timeout_is_a_counted_failure(self):
        """timeout bounds each async attempt; TimeoutError counts."""
        set_testing(False)
        p = make_policy(failure_threshold=1, timeout=0.05)

        async def hang() -> None:
            await asyncio.sleep(3600)

        with pytest.raises(TimeoutError):
            await p.acall(hang)
        assert "open" == p.state
        assert "TimeoutError" == p.status()["last_failure"]

    async def test_timeouts_are_retried(self):
        """Each attempt gets the full timeout; timeouts are retried."""
        p = make_policy(timeout=0.05, retry={"attempts": 2})
        calls = 0

        async def slow_then_fast() -> str:
            nonlocal calls
            calls += 1
            if calls == 1:
                await asyncio.sleep(3600)
            return "fast"

        assert "fast" == await p.acall(slow_then_fast)

    async def test_real_slow_server_times_out(self):
        """A real HTTP server slower than timeout gives TimeoutError."""
        p = make_policy(timeout=0.2)
        with StandInServer() as server:
            server.script("/slow", Response(200, delay=5))
            async with httpx.AsyncClient(base_url=server.url) as client:
                with pytest.raises(TimeoutError):
                    await p.acall(client.get, "/slow")

    async def test_outside_cancellation_wins(self):
        """Cancelling the caller is a cancellation, never a TimeoutError."""
        p = make_policy(timeout=10)

        async def hang() -> None:
            await asyncio.sleep(3600)

        task = asyncio.create_task(p.acall(hang))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert 0 == p.status()["failures"]

    async def test_timer_of_a_finished_call_never_fires(self):
        """A completed attempt leaves nothing armed against its task."""
        set_testing(False)
        p = make_policy(timeout=0.01)

        async def quick() -> str:
            return "ok"

        assert "ok" == await p.acall(quick)
        await asyncio.sleep(0.05)  # past the deadline: must not cancel us
        assert "ok" == await p.acall(quick)


class TestThreads:
    def test_sync_calls_run_in_parallel(self):
        """8 threads are inside the protected call at the same time."""
        p = make_policy()
        barrier = threading.Barrier(8, timeout=10)

        def meet() -> int:
            return barrier.wait()

        results: list[int] = []
        threads = [
            threading.Thread(target=lambda: results.append(p.call(meet)))
            for _ in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == list(range(8))

    def test_counts_are_exact_under_threads(self, events):
        """Thread-safe: failures from many threads open it exactly once."""
        p = make_policy(failure_threshold=50, recovery_timeout=3600)
        errors: list[BaseException] = []

        def work() -> None:
            for _ in range(100):
                try:
                    p.call(Counter(failures=1).sync)
                except (Boom, CircuitOpenError) as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        status = p.status()
        assert "open" == status["state"]
        # Every call either ran and failed or was refused. Calls admitted
        # before the 50th failure was recorded may finish after it (at
        # most one in flight per other thread): they are counted in the
        # statistics but cannot change the circuit.
        assert 800 == status["failures"] + status["rejections"]
        assert 50 <= status["failures"] <= 50 + 7
        assert 50 == status["failure_count"]
        opened = [
            e
            for e in events
            if e["event"] == "circuit_state_changed"
            and e["new_state"] == "open"
        ]
        assert 1 == len(opened)


class TestEventsAndStatus:
    async def test_state_change_event_keys(self, events):
        """circuit_state_changed carries every key of the contract."""
        p = make_policy("db", failure_threshold=1)
        with pytest.raises(Boom):
            await p.acall(Counter(failures=1))
        (event,) = named(events, "circuit_state_changed")
        assert {
            "event",
            "log_level",
            "breaker",
            "old_state",
            "new_state",
            "failure_count",
            "failure_threshold",
            "recovery_timeout",
            "recent_failures",
            "failure_rate_per_min",
            "last_failure",
            "platform",
            "reason",
            "last_cause",
            "open_for",
        } == set(event)
        assert "warning" == event["log_level"]
        assert ("db", "closed", "open") == (
            event["breaker"],
            event["old_state"],
            event["new_state"],
        )
        assert 1 == event["failure_rate_per_min"]
        assert event["recent_failures"][0].endswith("Z")

    async def test_leaving_open_reports_rejections(self, events):
        """rejected_while_open is reported on leaving open;
        call_rejected is logged once per open period."""
        clock = Clock()
        p = with_clock(make_policy(failure_threshold=1), clock)
        with pytest.raises(Boom):
            await p.acall(Counter(failures=1))
        for _ in range(4):
            with pytest.raises(CircuitOpenError):
                await p.acall(Counter())
        clock.advance(60)
        await p.acall(Counter())
        changes = named(events, "circuit_state_changed")
        assert 4 == changes[1]["rejected_while_open"]
        assert "info" == changes[1]["log_level"]
        assert 1 == len(named(events, "call_rejected"))
        assert "probe_succeeded" == changes[2]["reason"]

    async def test_status_entry(self):
        """status() holds the contract's keys with live values."""
        clock = Clock()
        p = with_clock(make_policy("api", failure_threshold=1), clock)
        await p.acall(Counter())
        with pytest.raises(Boom):
            await p.acall(Counter(failures=1))
        clock.advance(15)
        status = p.status()
        for key in (
            "name",
            "state",
            "failure_count",
            "failure_threshold",
            "recovery_timeout",
            "success_threshold",
            "half_open_max_calls",
            "opened_at",
            "retry_after",
            "recent_failures",
            "failure_rate_per_min",
            "last_failure",
            "calls",
            "successes",
            "failures",
            "rejections",
            "retries",
            "storage",
        ):
            assert key in status
        assert "open" == status["state"]
        assert 45.0 == status["retry_after"]
        assert (2, 1, 1) == (
            status["calls"],
            status["successes"],
            status["failures"],
        )
        assert "memory" == status["storage"]
        assert status["opened_at"].endswith("Z")

    async def test_secrets_never_show(self, events):
        """A DSN password in an error reaches no event, status or error."""
        p = make_policy(failure_threshold=1)
        exc = Boom("cannot connect to postgresql://sage:hunter2@db:5432/x")
        with pytest.raises(Boom):
            await p.acall(Counter(failures=1, exc=exc))
        with pytest.raises(CircuitOpenError) as info:
            await p.acall(Counter())
        assert "hunter2" not in str(info.value)
        assert "hunter2" not in repr(p.status())
        assert "hunter2" not in repr(events)
        assert "postgresql://sage:***@db:5432/x" in p.status()["last_failure"]


class TestControls:
    async def test_forced_open_stays_open(self):
        """open() holds the circuit open past the recovery timeout."""
        clock = Clock()
        p = with_clock(make_policy(recovery_timeout=1), clock)
        p.open()
        clock.advance(3600)
        with pytest.raises(CircuitOpenError) as info:
            await p.acall(Counter())
        assert info.value.forced
        assert p.status()["forced"]
        p.close()
        assert "ok" == await p.acall(Counter())
        assert not p.status()["forced"]

    async def test_reset_clears_counters(self):
        """reset() closes and clears every counter."""
        p = make_policy(failure_threshold=1)
        with pytest.raises(Boom):
            await p.acall(Counter(failures=1))
        p.reset()
        status = p.status()
        assert ("closed", 0, 0, None) == (
            status["state"],
            status["failures"],
            status["failure_count"],
            status["last_failure"],
        )

    async def test_pybreaker_is_the_source_of_truth(self):
        """Opening the pybreaker breaker directly is seen by the policy."""
        p = make_policy()
        p.breaker.open()
        assert "open" == p.state
        with pytest.raises(CircuitOpenError):
            await p.acall(Counter())
        p.breaker.close()
        assert "ok" == await p.acall(Counter())


class TestDecorator:
    async def test_async_and_sync_functions(self):
        """The policy decorates both kinds and keeps their metadata."""
        p = make_policy(failure_threshold=1)

        @p
        async def fetch(x: int) -> int:
            """Fetch."""
            return x * 2

        @p
        def compute(x: int) -> int:
            return x + 1

        assert 4 == await fetch(2)
        assert 3 == compute(2)
        assert "fetch" == fetch.__name__
        assert "Fetch." == fetch.__doc__
        assert inspect.iscoroutinefunction(fetch)

    def test_generators_are_refused(self):
        """Wrapping a generator function is a clear TypeError."""
        p = make_policy()

        def stream():
            yield 1

        with pytest.raises(TypeError, match="generator function"):
            p(stream)


class TestMemory:
    def test_constant_memory_whatever_the_traffic(self):
        """Rejections and successes retain nothing per call."""
        refused = make_policy("refused")
        refused.open()
        ok = make_policy("ok")

        def run(n: int) -> None:
            for _ in range(n):
                try:
                    refused.call(Counter().sync)
                except CircuitOpenError:
                    pass
                ok.call(Counter().sync)

        run(1000)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        run(20_000)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        assert after - before < 10_000


class TestDeferredVerdicts:
    async def test_a_result_is_not_a_success_until_settled(self):
        """acall_deferred: success() counts it, once."""
        p = make_policy("dep")

        async def work() -> str:
            return "head"

        result, verdict = await p.acall_deferred(work)
        assert ("head", 0, False) == (
            result,
            p.status()["successes"],
            verdict.settled,
        )
        verdict.success()
        verdict.failure(Boom("late"))  # already settled: nothing
        assert (1, 0, True) == (
            p.status()["successes"],
            p.status()["failures"],
            verdict.settled,
        )

    async def test_failure_is_judged_like_an_attempts_error(self):
        """Counted for a dependency error, neutral for a programming one."""
        p = make_policy("dep", failure_threshold=1)

        async def work() -> int:
            return 1

        _, first = await p.acall_deferred(work)
        first.failure(TypeError("reader bug"))
        assert ("closed", 0, 0) == (
            p.state,
            p.status()["failures"],
            p.status()["calls"],
        )
        _, second = await p.acall_deferred(work)
        second.failure(Boom("cut"))
        assert ("open", 1) == (p.state, p.status()["failures"])

    async def test_errors_are_retried_results_are_not(self):
        """Failures before a result are retried as in acall."""
        p = make_policy("dep", retry={"attempts": 3})
        counter = Counter(failures=2)
        result, verdict = await p.acall_deferred(counter)
        verdict.success()
        assert ("ok", 3, 2, 1) == (
            result,
            counter.calls,
            p.status()["failures"],
            p.status()["successes"],
        )

    def test_sync_single_attempt(self):
        """call_deferred(retry=False): one attempt, its error raised."""
        p = make_policy("dep", retry={"attempts": 3})
        counter = Counter(failures=5)
        with pytest.raises(Boom):
            p.call_deferred(counter.sync, retry=False)
        assert (1, 1) == (counter.calls, p.status()["failures"])
