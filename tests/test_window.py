"""Rate and slow-call tripping over a sliding window."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sage_resilience import CircuitOpenError, PolicyConfig
from sage_resilience._config import TripConfig, load_config_text
from sage_resilience._window import BUCKETS, SlidingWindow
from sage_resilience.exceptions import ConfigError
from tests.helpers import Clock, make_policy, named, with_clock
from tests.support.http_servers import Response, StandInServer

T0 = 1_800_000_000.0


class Boom(ConnectionError):
    """A dependency failure."""


# -- a brute-force model of the window ---------------------------------------


@dataclass
class Model:
    """Every call as (bucket, failed, slow); expiry by scanning the list."""

    config: TripConfig
    calls: list[tuple[float, bool, bool]] = field(default_factory=list)
    head: float | None = None

    @property
    def width(self) -> float:
        return self.config.window / BUCKETS

    def advance(self, now: float) -> None:
        index = now // self.width
        if self.head is None or index > self.head:
            self.head = index
        self.calls = [c for c in self.calls if self.head - c[0] < BUCKETS]

    def record(
        self, now: float, *, failed: bool, duration: float
    ) -> str | None:
        self.advance(now)
        assert self.head is not None
        slow_after = self.config.slow_call_duration
        slow = slow_after is not None and duration > slow_after
        self.calls.append((self.head, failed, slow))
        calls = len(self.calls)
        if calls < self.config.minimum_calls:
            return None
        fails = sum(c[1] for c in self.calls)
        slows = sum(c[2] for c in self.calls)
        rate = self.config.failure_rate
        if rate is not None and fails >= rate * calls:
            return "failure_rate"
        rate = self.config.slow_call_rate
        if rate is not None and slows >= rate * calls:
            return "slow_call_rate"
        return None

    def figures(self, now: float) -> tuple[int, int, int]:
        self.advance(now)
        return (
            len(self.calls),
            sum(c[1] for c in self.calls),
            sum(c[2] for c in self.calls),
        )

    def clear(self) -> None:
        self.calls.clear()
        self.head = None


def gate_record(
    window: SlidingWindow, now: float, *, failed: bool, duration: float
) -> str | None:
    """Record like the gate does: the lock-free path first for successes."""
    if not failed and window.add_success(now, duration):
        return None
    return window.record(now, failed=failed, duration=duration)


def figures(window: SlidingWindow, now: float) -> tuple[int, int, int]:
    f = window.figures(now)
    return f["calls"], f["failures"], f["slow_calls"]


@st.composite
def trip_configs(draw: st.DrawFn) -> TripConfig:
    slow_after = draw(st.sampled_from([None, 0.5, 2.0]))
    return TripConfig(
        # Bucket widths 0.05 .. 3 s, including ones that are not exact
        # binary fractions.
        window=draw(st.sampled_from([1.0, 7.3, 20.0, 60.0])),
        minimum_calls=draw(st.integers(1, 12)),
        failure_rate=draw(st.sampled_from([None, 0.2, 0.5, 0.75, 1.0])),
        slow_call_duration=slow_after,
        slow_call_rate=None
        if slow_after is None
        else draw(st.sampled_from([None, 0.3, 0.8])),
    )


steps = st.one_of(
    st.tuples(
        st.just("call"),
        # Small steps, bucket-sized ones, and jumps far either way.
        st.one_of(
            st.just(0.0),
            st.floats(0, 0.5),
            st.floats(-5, 20),
            st.sampled_from([-1000.0, -60.0, 60.0, 1000.0]),
        ),
        st.booleans(),
        st.sampled_from([0.0, 0.1, 0.5, 1.0, 3.0]),
    ),
    st.tuples(
        st.just("figures"), st.floats(-5, 70), st.just(False), st.just(0.0)
    ),
    st.tuples(st.just("clear"), st.just(0.0), st.just(False), st.just(0.0)),
)


class TestSlidingWindow:
    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(config=trip_configs(), ops=st.lists(steps, max_size=120))
    def test_matches_the_brute_force_model(self, config, ops):
        """Same verdict and figures as a list of every call, at every step."""
        window, model = SlidingWindow(config), Model(config)
        now = T0
        for op, dt, failed, duration in ops:
            now += dt
            if op == "call":
                expected = model.record(now, failed=failed, duration=duration)
                actual = gate_record(
                    window, now, failed=failed, duration=duration
                )
                assert expected == actual
                if actual is not None:  # the gate opens and clears
                    window.clear()
                    model.clear()
            elif op == "figures":
                assert model.figures(now) == figures(window, now)
            else:
                window.clear()
                model.clear()
        assert model.figures(now) == figures(window, now)

    @settings(max_examples=200, deadline=None)
    @given(
        window_s=st.sampled_from([1.0, 7.3, 20.0, 60.0]),
        gaps=st.lists(st.floats(0, 10), min_size=1, max_size=60),
        later=st.floats(0, 100),
    )
    def test_a_call_leaves_within_the_last_bucket(self, window_s, gaps, later):
        """Counted while younger than window - bucket, gone at window."""
        window = SlidingWindow(TripConfig(window=window_s))
        times, now = [], T0
        for gap in gaps:
            now += gap
            times.append(now)
            gate_record(window, now, failed=False, duration=0.0)
        now += later
        width = window_s / BUCKETS
        # A margin of 1e-6 s keeps float rounding out of the bounds.
        surely_in = sum(now - t < window_s - width - 1e-6 for t in times)
        maybe_in = sum(now - t < window_s + 1e-6 for t in times)
        calls = window.figures(now)["calls"]
        assert surely_in <= calls <= maybe_in

    def test_failure_rate_opens_at_the_threshold(self):
        """At >= failure_rate of minimum_calls calls the verdict is given."""
        window = SlidingWindow(TripConfig(failure_rate=0.5, minimum_calls=4))
        outcomes = [True, False, False]
        assert [None, None, None] == [
            gate_record(window, T0, failed=f, duration=0) for f in outcomes
        ]
        assert "failure_rate" == window.record(T0, failed=True)

    def test_a_success_reaching_minimum_calls_can_open(self):
        """The success that completes minimum_calls is judged too."""
        window = SlidingWindow(TripConfig(failure_rate=0.5, minimum_calls=5))
        for _ in range(4):
            assert window.record(T0, failed=True) is None
        assert "failure_rate" == gate_record(
            window, T0, failed=False, duration=0
        )

    def test_expiry_raising_the_rate_is_judged_on_the_next_call(self):
        """Old successes leaving the window expose the failures."""
        window = SlidingWindow(
            TripConfig(failure_rate=0.5, minimum_calls=4, window=20)
        )
        for _ in range(10):
            gate_record(window, T0, failed=False, duration=0)
        for _ in range(3):
            assert window.record(T0 + 15, failed=True) is None
        assert "failure_rate" == gate_record(
            window, T0 + 20, failed=False, duration=0
        )

    def test_slow_means_strictly_longer(self):
        """A call lasting exactly slow_call_duration is not slow."""
        window = SlidingWindow(TripConfig(slow_call_duration=2.0))
        window.record(T0, failed=False, duration=2.0)
        window.record(T0, failed=False, duration=2.0001)
        assert (2, 0, 1) == figures(window, T0)

    def test_a_slow_failure_counts_as_both(self):
        """One slow failure raises both rates."""
        window = SlidingWindow(TripConfig(slow_call_duration=1.0))
        window.record(T0, failed=True, duration=1.5)
        window.record(T0, failed=False, duration=0.1)
        expected = {
            "calls": 2,
            "failures": 1,
            "slow_calls": 1,
            "failure_rate": 0.5,
            "slow_call_rate": 0.5,
        }
        assert expected == window.figures(T0)

    def test_failure_rate_wins_when_both_rates_cross(self):
        """Both thresholds crossed on one call: failure_rate is named."""
        window = SlidingWindow(
            TripConfig(
                failure_rate=0.5,
                slow_call_duration=1,
                slow_call_rate=0.5,
                minimum_calls=1,
            )
        )
        assert "failure_rate" == window.record(T0, failed=True, duration=2)

    def test_rates_off_never_open(self):
        """trip: without rates only keeps figures."""
        window = SlidingWindow(TripConfig(minimum_calls=1))
        assert [None] * 50 == [
            window.record(T0 + i, failed=True, duration=99) for i in range(50)
        ]
        assert 50 == window.figures(T0 + 50)["calls"]

    def test_a_backward_clock_records_into_the_newest_bucket(self):
        """Time going back never resurrects or lengthens expired calls."""
        window = SlidingWindow(TripConfig(window=20))
        window.record(T0 + 100, failed=True)
        window.record(T0, failed=False)  # 100 s in the past
        assert (2, 1, 0) == figures(window, T0 + 100)
        assert (0, 0, 0) == figures(window, T0 + 120)

    def test_memory_is_fixed(self):
        """A million calls later the window holds the same 3 x 20 slots."""
        window = SlidingWindow(TripConfig(window=1))
        now = T0
        for i in range(1_000_000 // 1000):
            for _ in range(1000):
                gate_record(window, now, failed=False, duration=0)
            window.record(now, failed=i % 2 == 0)
            now += 0.01
        assert [BUCKETS] * 3 == [
            len(window._calls),
            len(window._fails),
            len(window._slows),
        ]
        assert 0 < window.figures(now)["calls"] <= 1_001 * 100

    def test_clear_forgets_everything(self):
        """clear() empties the window."""
        window = SlidingWindow(TripConfig())
        window.record(T0, failed=True, duration=5)
        window.clear()
        assert (0, 0, 0) == figures(window, T0)


# -- through a policy ----------------------------------------------------------


def failing(exc: BaseException) -> object:
    async def fn() -> None:
        raise exc

    return fn


async def ok() -> str:
    return "ok"


async def run(p, fn) -> str:
    try:
        await p.acall(fn)
    except CircuitOpenError:
        return "refused"
    except Exception as exc:
        return type(exc).__name__
    return "ok"


async def run_many(p, fn, calls: int, parallel: int = 4) -> list[str]:
    """*calls* calls, *parallel* at a time (below the server's backlog).

    The queueing happens outside the policy, so it is not timed.
    """
    gate = asyncio.Semaphore(parallel)

    async def one() -> str:
        async with gate:
            return await run(p, fn)

    return list(await asyncio.gather(*(one() for _ in range(calls))))


def window_of(p) -> dict:
    return p.status()["window"]


class TestConfig:
    def test_defaults(self):
        """window 60, minimum_calls 20, rates off."""
        trip = PolicyConfig.model_validate({"trip": {}}).trip
        assert trip is not None
        expected = (60.0, 20, None, None, None)
        actual = (
            trip.window,
            trip.minimum_calls,
            trip.failure_rate,
            trip.slow_call_rate,
            trip.slow_call_duration,
        )
        assert expected == actual

    def test_no_trip_means_no_window(self):
        """Status window is null without trip:."""
        assert make_policy().status()["window"] is None

    def test_slow_call_rate_needs_slow_call_duration(self):
        """slow_call_rate alone is a ConfigError naming the key."""
        text = (
            "version: 1\npolicies:\n  api:\n    trip: {slow_call_rate: 0.5}\n"
        )
        with pytest.raises(ConfigError, match=r"policies\.api\.trip"):
            load_config_text(text, environ={})

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("failure_rate", 0),
            ("failure_rate", 1.5),
            ("minimum_calls", 0),
            ("window", 0),
        ],
    )
    def test_bad_values_name_file_line_and_key(self, key, value):
        """Out-of-range trip keys fail with file:line: dotted.key."""
        text = (
            f"version: 1\npolicies:\n  api:\n    trip:\n      {key}: {value}\n"
        )
        with pytest.raises(ConfigError) as info:
            load_config_text(text, source="r.yaml", environ={})
        assert str(info.value).startswith(f"r.yaml:5: policies.api.trip.{key}")


class TestWindowContents:
    async def test_successes_ignored_errors_and_failures(self):
        """Successes and ignored errors count as successes; failures fail."""
        p = make_policy(
            failure_threshold=100,
            trip={"minimum_calls": 1000},
            ignore_exceptions=["builtins.KeyError"],
        )
        for fn in (
            ok,
            failing(KeyError("no such memory")),
            failing(Boom()),
            ok,
        ):
            await run(p, fn)
        w = window_of(p)
        assert (4, 1, 0.25) == (w["calls"], w["failures"], w["failure_rate"])

    async def test_probes_and_rejections_stay_out(self):
        """Rejected calls and half-open probes are never recorded."""
        clock = Clock()
        p = with_clock(
            make_policy(
                failure_threshold=1,
                recovery_timeout=10,
                success_threshold=2,
                trip={"minimum_calls": 1000},
            ),
            clock,
        )
        await run(p, failing(Boom()))
        assert "refused" == await run(p, ok)
        assert 0 == window_of(p)["calls"]
        clock.advance(10)
        assert "ok" == await run(p, ok)  # probe 1 of 2
        assert "half-open" == p.state
        assert 0 == window_of(p)["calls"]
        assert "Boom" == await run(p, failing(Boom()))  # failed probe
        assert 0 == window_of(p)["calls"]

    async def test_cancelled_calls_stay_out(self):
        """A cancelled call is not recorded."""
        p = make_policy(trip={"minimum_calls": 1000})
        started = asyncio.Event()

        async def hang() -> None:
            started.set()
            await asyncio.sleep(60)

        task = asyncio.create_task(p.acall(hang))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert 0 == window_of(p)["calls"]

    async def test_cleared_on_every_transition(self):
        """Forced open, close, trips and probes all empty the window."""
        clock = Clock()
        p = with_clock(
            make_policy(
                failure_threshold=3,
                recovery_timeout=5,
                trip={"minimum_calls": 1000},
            ),
            clock,
        )

        async def fill() -> int:
            for fn in (ok, failing(Boom()), ok):
                await run(p, fn)
            return window_of(p)["calls"]

        assert 3 == await fill()
        p.open()
        assert 0 == window_of(p)["calls"]
        p.close()
        assert 0 == window_of(p)["calls"]
        assert 3 == await fill()
        for _ in range(3):
            await run(p, failing(Boom()))
        assert "open" == p.state
        assert 0 == window_of(p)["calls"]
        clock.advance(5)
        await run(p, ok)
        assert "closed" == p.state
        assert 0 == window_of(p)["calls"]
        assert 3 == await fill()
        p.reset()
        assert 0 == window_of(p)["calls"]

    async def test_a_call_leaves_after_window_seconds(self):
        """Still counted just before the last bucket, gone at window."""
        clock = Clock(T0)
        p = with_clock(make_policy(trip={"window": 20}), clock)
        await run(p, ok)
        clock.advance(18.9)
        assert 1 == window_of(p)["calls"]
        clock.advance(1.1)
        assert 0 == window_of(p)["calls"]

    def test_sync_calls_are_recorded_from_many_threads(self):
        """Threads record every call exactly (the lock-free path too)."""
        p = make_policy(
            failure_threshold=10_000, trip={"minimum_calls": 10**6}
        )
        barrier = threading.Barrier(8)

        def worker(i: int) -> None:
            barrier.wait()
            for j in range(500):
                try:
                    p.call(_sync_outcome, (i + j) % 5 == 0)
                except Boom:
                    pass

        threads = [
            threading.Thread(target=worker, args=(i,)) for i in range(8)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        w = window_of(p)
        assert (4000, 800) == (w["calls"], w["failures"])


def _sync_outcome(fail: bool) -> str:
    if fail:
        raise Boom("boom")
    return "ok"


class TestTicker:
    def test_fast_successes_land_in_the_current_bucket(self):
        """Without reading the clock, successes still go to the bucket of
        their time: the ticker thread moves the window on."""
        p = make_policy(
            failure_threshold=1000,
            trip={"failure_rate": 0.9, "window": 2.0, "minimum_calls": 10**6},
        )

        def ok() -> None:
            return None

        def boom() -> None:
            raise Boom("x")

        with pytest.raises(Boom):
            p.call(boom)
        for _ in range(10):  # the first one resets the count (locked path)
            p.call(ok)
        assert p._gate.window.fast_now
        time.sleep(1.2)
        for _ in range(7):
            p.call(ok)
        time.sleep(1.0)  # the first 11 calls have left; the 7 have not
        assert 7 == p.status()["window"]["calls"]

    def test_a_test_clock_turns_the_ticker_off(self):
        """A gate on another clock records every success under its lock."""
        clock = Clock()
        p = with_clock(
            make_policy(trip={"failure_rate": 0.5, "window": 60}), clock
        )

        def ok() -> None:
            return None

        for _ in range(3):
            p.call(ok)
        assert not p._gate.window.fast_now
        clock.advance(61)
        assert 0 == p.status()["window"]["calls"]


class TestRateTripping:
    async def test_failure_rate_opens_with_its_reason(self, events):
        """Interleaved failures never 3 in a row still open at 40 %."""
        p = make_policy(
            failure_threshold=3,
            trip={"failure_rate": 0.4, "minimum_calls": 10},
        )
        pattern = [ok, ok, failing(Boom()), ok, failing(Boom())] * 4
        outcomes = [await run(p, fn) for fn in pattern]
        assert ["refused"] * 10 == outcomes[10:]
        assert "open" == p.state
        (change,) = named(events, "circuit_state_changed")
        assert ("failure_rate", "open") == (
            change["reason"],
            change["new_state"],
        )

    async def test_consecutive_wins_when_both_cross_on_one_call(self, events):
        """The call that crosses both thresholds reads consecutive_failures."""
        p = make_policy(
            failure_threshold=3, trip={"failure_rate": 0.5, "minimum_calls": 3}
        )
        for _ in range(3):
            await run(p, failing(Boom()))
        (change,) = named(events, "circuit_state_changed")
        assert "consecutive_failures" == change["reason"]

    async def test_below_minimum_calls_never_opens(self):
        """All of 19 calls failing is not judged with minimum_calls 20."""
        p = make_policy(failure_threshold=100, trip={"failure_rate": 0.1})
        for _ in range(19):
            await run(p, failing(Boom()))
        assert "closed" == p.state
        await run(p, failing(Boom()))
        assert "open" == p.state

    def test_slow_sync_calls_open_with_slow_call_rate(self, events):
        """Sync attempts slower than slow_call_duration trip the rate."""
        p = make_policy(
            trip={
                "slow_call_duration": 0.02,
                "slow_call_rate": 0.5,
                "minimum_calls": 2,
            }
        )
        p.call(time.sleep, 0.03)
        assert "closed" == p.state
        p.call(time.sleep, 0.03)
        assert "open" == p.state
        (change,) = named(events, "circuit_state_changed")
        assert "slow_call_rate" == change["reason"]


class TestAgainstARealServer:
    """A local HTTP server failing or delaying a share of its answers."""

    async def test_a_partly_failing_api_trips_on_failure_rate(self, events):
        """40 % of 503s, never 3 in a row: open once 10 calls are in."""
        p = make_policy(
            failure_threshold=3,
            retry={"attempts": 1},
            trip={"failure_rate": 0.4, "minimum_calls": 10},
        )
        answers = [200, 503, 200, 503, 200] * 6
        with StandInServer() as server:
            server.script("/v1/chat", [Response(s) for s in answers])
            async with httpx.AsyncClient(base_url=server.url) as client:

                async def chat() -> httpx.Response:
                    return (await client.post("/v1/chat")).raise_for_status()

                outcomes = [await run(p, chat) for _ in range(20)]
            assert 10 == server.hits["/v1/chat"]
        assert ["ok", "HTTPStatusError"] * 2 == outcomes[:4]
        assert ["refused"] * 10 == outcomes[10:]
        (change,) = named(events, "circuit_state_changed")
        assert ("failure_rate", 10) == (
            change["reason"],
            p.status()["calls"],
        )

    async def test_a_slow_api_trips_on_slow_call_rate(self, events):
        """12 of 20 answers delayed: open on slow_call_rate."""
        p = make_policy(
            trip={
                "slow_call_duration": 0.15,
                "slow_call_rate": 0.5,
                "minimum_calls": 20,
            }
        )
        answers = [Response(200, delay=0.3)] * 12 + [Response(200)] * 8
        with StandInServer() as server:
            server.script("/v1/embed", [*answers, Response(200)])
            async with httpx.AsyncClient(base_url=server.url) as client:

                async def embed() -> httpx.Response:
                    return (await client.post("/v1/embed")).raise_for_status()

                outcomes = await run_many(p, embed, 20)
                assert ["ok"] * 20 == outcomes
                assert "refused" == await run(p, embed)
        (change,) = named(events, "circuit_state_changed")
        assert "slow_call_rate" == change["reason"]

    async def test_a_mostly_fast_api_stays_closed(self):
        """4 slow answers in 20 stay below the 50 % slow-call rate."""
        p = make_policy(
            trip={
                "slow_call_duration": 0.15,
                "slow_call_rate": 0.5,
                "minimum_calls": 20,
            }
        )
        answers = [Response(200, delay=0.3)] * 4 + [Response(200)] * 16
        with StandInServer() as server:
            server.script("/v1/embed", answers)
            async with httpx.AsyncClient(base_url=server.url) as client:

                async def embed() -> httpx.Response:
                    return (await client.post("/v1/embed")).raise_for_status()

                outcomes = await run_many(p, embed, 20)
        assert ["ok"] * 20 == outcomes
        assert "closed" == p.state
        assert 20 == window_of(p)["calls"]
        assert 4 <= window_of(p)["slow_calls"] < 10

    async def test_slow_failures_count_as_both(self):
        """Delayed 503s raise the failure and the slow-call rate."""
        p = make_policy(
            failure_threshold=100,
            timeout=5,
            trip={"slow_call_duration": 0.1, "minimum_calls": 1000},
        )
        with StandInServer() as server:
            server.script("/v1/chat", Response(503, delay=0.2))
            async with httpx.AsyncClient(base_url=server.url) as client:

                async def chat() -> httpx.Response:
                    return (await client.post("/v1/chat")).raise_for_status()

                outcomes = await run_many(p, chat, 3)
        assert ["HTTPStatusError"] * 3 == outcomes
        w = window_of(p)
        assert (3, 3, 3) == (w["calls"], w["failures"], w["slow_calls"])
