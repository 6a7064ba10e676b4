"""Every way a call ends frees what it took; the circuit always recovers.

A property test over the memory, sqlite and Redis storages: hypothesis
draws a policy (small thresholds, short real times) and a sequence of
calls, async and sync, each ending one way -- success, a dependency
failure, a caller fault, an ignored or a neutral exception, an exception
that cannot be printed, a cancellation (async) or a KeyboardInterrupt
(sync), a bulkhead timeout (or a cancellation while queued for a slot), a
call that hangs past ``half_open_max_wait`` -- with raising listeners on
``policy.breaker`` and pauses that let the circuit go half-open.

Checked after every step: nothing but the expected exceptions escaped, and
the bulkhead holds exactly the calls still running. After the sequence,
with the hung calls still hanging: within the open time plus
``half_open_max_wait`` (twice the open time: a hung probe's half-open
ends by opening again) a few healthy calls close the circuit; once the
hung calls end, nothing is held, and a new trip lets exactly
``half_open_max_calls`` probes in (no probe slot leaked) and closes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pybreaker
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sage_resilience import (
    Policy,
    ResilienceConfig,
    configure,
    policy,
    testing,
)
from sage_resilience._storage import close_storages, flush_storages
from tests.support import need_binary
from tests.support.redis_server import RedisServer

# Some 150 s in all (sleeps in real time, three storages): slow.
pytestmark = pytest.mark.slow

#: Short real times: the open time, how long half-open waits for a hung
#: probe, how long a call queues for a bulkhead slot.
RECOVERY = 0.05
PROBE_WAIT = 0.12
QUEUE_WAIT = 0.02
#: Storage round trips and thread scheduling on a loaded machine.
SLACK = 1.5
#: How long any single wait in the test may take before it is a hang.
LIMIT = 10.0

BACKENDS = ["memory", "sqlite", "redis"]


# --------------------------------------------------------------------------
# The dependency's ways to end
# --------------------------------------------------------------------------


class Boom(ConnectionError):
    """A dependency failure (counted)."""


class CallerFault(Exception):
    """An HTTP 404: the caller's fault (a success for the breaker)."""

    status_code = 404


class Ignored(Exception):
    """Listed in ``ignore_exceptions``: a success for the breaker."""


class Unprintable(ConnectionError):
    """A counted failure whose ``str()`` and ``repr()`` raise."""

    def __str__(self) -> str:
        msg = "str() of this error fails"
        raise RuntimeError(msg)

    def __repr__(self) -> str:
        msg = "repr() of this error fails"
        raise RuntimeError(msg)


class RaisingListener(pybreaker.CircuitBreakerListener):
    """A user's listener that raises from every method pybreaker calls."""

    def _boom(self) -> None:
        msg = "listener bug"
        raise RuntimeError(msg)

    def before_call(self, cb: Any, func: Any, *args: Any, **kw: Any) -> None:
        self._boom()

    def state_change(self, cb: Any, old: Any, new: Any) -> None:
        self._boom()

    def failure(self, cb: Any, exc: BaseException) -> None:
        self._boom()

    def success(self, cb: Any) -> None:
        self._boom()


def _error(kind: str) -> BaseException:
    errors: dict[str, Callable[[], BaseException]] = {
        "fail": lambda: Boom("down"),
        "caller": lambda: CallerFault("not found"),
        "ignored": lambda: Ignored("ignored"),
        "neutral": lambda: TypeError("a bug in the caller"),
        "unprintable": Unprintable,
        "interrupt": KeyboardInterrupt,
    }
    return errors[kind]()


#: What may come out of a call, by how its dependency ends. A refusal is
#: always possible (the circuit may be open); a failure may also end as a
#: refusal when retrying stops because the circuit opened.
REFUSED = "CircuitOpenError"
EXPECTED: dict[str, set[str]] = {
    "ok": {"ok", REFUSED},
    "hold": {"ok", REFUSED},
    "hang": {"ok", REFUSED},
    "fail": {"Boom", REFUSED},
    "caller": {"CallerFault", REFUSED},
    "ignored": {"Ignored", REFUSED},
    "neutral": {"TypeError", REFUSED},
    "unprintable": {"Unprintable", REFUSED},
    "interrupt": {"KeyboardInterrupt", REFUSED},
    "cancel": {"CancelledError", REFUSED},
    "queued": {"BulkheadFullError", REFUSED},
    # (the cancellation may come after the wait ran out)
    "cancel_queued": {"CancelledError", "BulkheadFullError", REFUSED},
    "cancel_early": {"CancelledError", REFUSED},
    "burst": {"ok", "BulkheadFullError", REFUSED},
}


class Dep:
    """One call's dependency: it may hold until released, then ends."""

    def __init__(self, kind: str, *, holds: bool = False) -> None:
        self.kind = kind
        self.holds = holds
        self.entered = threading.Event()
        self.release = threading.Event()

    def _end(self) -> str:
        if self.kind in {"ok", "hold", "hang", "queued", "burst"}:
            return "ok"
        raise _error(self.kind)

    def sync(self) -> str:
        self.entered.set()
        if self.holds:
            assert self.release.wait(LIMIT)
        return self._end()

    async def run(self) -> str:
        self.entered.set()
        while self.holds and not self.release.is_set():
            await asyncio.sleep(0.002)
        return self._end()


def _name(exc: BaseException) -> str:
    return type(exc).__name__


def probes_held(p: Policy) -> int:
    """Half-open probe slots taken (the status does not show them)."""
    held: int = p._gate._probes
    return held


# --------------------------------------------------------------------------
# Running calls: sync on this thread or a worker, async on a loop thread
# --------------------------------------------------------------------------


@dataclass
class Call:
    """A call in flight: its dependency and how it ended (once it did)."""

    dep: Dep
    done: threading.Event = field(default_factory=threading.Event)
    outcome: str | None = None
    cancel: Callable[[], object] = lambda: None

    def ended(self, outcome: str) -> None:
        self.outcome = outcome
        self.done.set()

    def started(self) -> bool:
        """Wait until it entered the dependency (True) or ended (False)."""
        deadline = time.monotonic() + LIMIT
        while time.monotonic() < deadline:
            if self.dep.entered.is_set():
                return True
            if self.done.is_set():
                return False
            time.sleep(0.001)
        pytest.fail(f"call {self.dep.kind} neither started nor ended")

    def result(self) -> str:
        assert self.done.wait(LIMIT), f"call {self.dep.kind} never ended"
        assert self.outcome is not None
        return self.outcome


class Runner:
    """Starts calls through one policy, on either path."""

    def __init__(self, loop: asyncio.AbstractEventLoop, p: Policy) -> None:
        self.loop = loop
        self.p = p

    def start(self, dep: Dep, *, use_async: bool) -> Call:
        call = Call(dep)
        if use_async:

            async def go() -> None:
                try:
                    result = await self.p.acall(dep.run)
                except BaseException as exc:
                    call.ended(_name(exc))
                    if not isinstance(exc, Exception | asyncio.CancelledError):
                        raise
                else:
                    call.ended(result)

            future = asyncio.run_coroutine_threadsafe(go(), self.loop)
            call.cancel = future.cancel
        else:

            def go_sync() -> None:
                try:
                    result = self.p.call(dep.sync)
                except BaseException as exc:
                    call.ended(_name(exc))
                else:
                    call.ended(result)

            threading.Thread(target=go_sync, daemon=True).start()
        return call

    def run_here(self, dep: Dep) -> str:
        """A sync call on this thread (KeyboardInterrupt comes here)."""
        try:
            return self.p.call(dep.sync)
        except (Exception, KeyboardInterrupt) as exc:
            return _name(exc)

    def run(self, dep: Dep, *, use_async: bool) -> str:
        if not use_async:
            return self.run_here(dep)
        return self.start(dep, use_async=True).result()


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop on its own thread, for the async calls."""
    running = asyncio.new_event_loop()
    thread = threading.Thread(target=running.run_forever, daemon=True)
    thread.start()
    yield running

    def stop() -> None:
        for task in asyncio.all_tasks(running):
            task.cancel()  # (left running by a failed example)
        running.call_soon(running.stop)

    running.call_soon_threadsafe(stop)
    thread.join(LIMIT)
    running.close()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    binary = need_binary(
        "redis-server", "install it with: apt-get install redis-server"
    )
    with RedisServer(binary) as server:
        yield server


@pytest.fixture(params=BACKENDS)
def storage(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[dict[str, Any]]:
    """The ``storage:`` section, once per backend."""
    backend = request.param
    if backend == "memory":
        yield {"backend": "memory"}
    elif backend == "sqlite":
        yield {"backend": "sqlite", "path": str(tmp_path / "state.sqlite")}
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        yield {
            "backend": "redis",
            "url": server.url,
            "namespace": f"ns-{uuid.uuid4().hex[:8]}",
        }
    close_storages()


# --------------------------------------------------------------------------
# Steps
# --------------------------------------------------------------------------

ENDINGS = [
    "ok",
    "fail",
    "caller",
    "ignored",
    "neutral",
    "unprintable",
    "abort",  # async: cancelled mid-call; sync: KeyboardInterrupt
    "cancel_early",  # async, cancelled at once: in admission, claim, queue
    "burst",  # three calls at once, async and sync
    "bulkhead_timeout",
    "cancel_queued",  # async: cancelled while queued for a slot
    "hang",
    "listener",
    "trip",  # failures until the circuit opens (or refuses)
    "wait",  # past the open time: the next call may be a probe
    "wait_long",  # past half_open_max_wait too
]
#: Where the circuit is brought before a step's call: left as the steps
#: so far made it, closed, or with the next call a probe (tripped if need
#: be, and past the open time). Without it most steps of a long sequence
#: would meet an open circuit and be refused.
PHASES = ["as_is", "as_is", "closed", "probe", "probe"]

steps = st.lists(
    st.tuples(
        st.sampled_from(PHASES), st.sampled_from(ENDINGS), st.booleans()
    ),
    min_size=1,
    max_size=10,
)


@dataclass
class Config:
    failure_threshold: int
    success_threshold: int
    half_open_max_calls: int
    attempts: int
    #: Bulkhead slots; a call hangs only while another slot stays free.
    slots: int

    def policy_settings(self) -> dict[str, Any]:
        return {
            "failure_threshold": self.failure_threshold,
            "success_threshold": self.success_threshold,
            "half_open_max_calls": self.half_open_max_calls,
            "recovery_timeout": RECOVERY,
            "half_open_max_wait": PROBE_WAIT,
            "timeout": None,  # an async call may hang too
            "max_concurrency": self.slots,
            "max_wait": QUEUE_WAIT,
            "ignore_exceptions": [f"{__name__}.Ignored"],
            "retry": {"attempts": self.attempts},
        }


configs = st.builds(
    Config,
    failure_threshold=st.integers(1, 3),
    success_threshold=st.integers(1, 2),
    half_open_max_calls=st.integers(1, 2),
    attempts=st.integers(1, 2),
    slots=st.integers(1, 2),
)


class Interleaving:
    """One example: a fresh policy driven through *steps*."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        storage: dict[str, Any],
        config: Config,
    ) -> None:
        testing.reset()
        testing.set_testing(True)
        name = f"dep-{uuid.uuid4().hex[:8]}"
        configure(
            ResilienceConfig.model_validate(
                {
                    "storage": storage,
                    "policies": {name: config.policy_settings()},
                }
            )
        )
        self.p = policy(name)
        self.config = config
        self.runner = Runner(loop, self.p)
        self.hung: list[Call] = []
        self.log: list[str] = []

    def in_flight(self) -> int:
        value = self.p.status()["in_flight"]
        assert isinstance(value, int)
        return value

    def check(self, kind: str, outcome: str) -> None:
        self.log.append(f"{kind}->{outcome}")
        assert outcome in EXPECTED[kind], (
            f"{kind!r} ended as {outcome!r}; steps: {self.log}"
        )

    def running(self) -> int:
        return sum(1 for c in self.hung if not c.done.is_set())

    def enter(self, phase: str) -> None:
        """Bring the circuit to *phase*, as far as it goes (best effort)."""
        if phase == "closed":
            self.close_it()
        elif phase == "probe":
            if self.p.state == "closed":
                for _ in range(self.config.failure_threshold):
                    self.runner.run_here(Dep("fail"))
            if self.p.state == "open":
                time.sleep(self.p.status()["retry_after"] + 0.005)

    def close_it(
        self, bound: float = 2 * RECOVERY + PROBE_WAIT + SLACK
    ) -> int:
        """Healthy calls until closed; how many succeeded before it was."""
        started = time.monotonic()
        successes = 0
        use_async = False
        while True:
            elapsed = time.monotonic() - started
            assert elapsed < bound, (
                f"still {self.p.state} after {elapsed:.2f}s; "
                f"status {self.p.status()}; steps: {self.log}"
            )
            use_async = not use_async
            outcome = self.runner.run(Dep("ok"), use_async=use_async)
            assert outcome in {"ok", REFUSED}, (outcome, self.log)
            if outcome == "ok" and self.p.state == "closed":
                return successes
            if outcome == "ok":
                successes += 1
            else:
                time.sleep(0.005)

    def step(self, phase: str, ending: str, use_async: bool) -> None:
        self.log.append(f"[{phase}]")
        self.enter(phase)
        runner = self.runner
        if ending == "listener":
            self.p.breaker.add_listener(RaisingListener())
        elif ending == "wait":
            time.sleep(RECOVERY * 1.2)
        elif ending == "wait_long":
            time.sleep(PROBE_WAIT * 1.2)
        elif ending == "abort":
            if use_async:
                self._cancel_mid_call()
            else:
                self.check("interrupt", runner.run_here(Dep("interrupt")))
        elif ending == "bulkhead_timeout":
            self._queue(use_async=use_async, cancel=False)
        elif ending == "cancel_queued":
            self._queue(use_async=use_async, cancel=use_async)
        elif ending == "hang":
            self._hang(use_async)
        elif ending == "cancel_early":
            call = runner.start(Dep(ending, holds=True), use_async=True)
            if use_async:
                time.sleep(0.0005)
            call.cancel()
            self.check(ending, call.result())
        elif ending == "burst":
            self._burst(use_async)
        elif ending == "trip":
            for _ in range(self.config.failure_threshold):
                self.check(
                    "fail", runner.run(Dep("fail"), use_async=use_async)
                )
        else:
            self.check(ending, runner.run(Dep(ending), use_async=use_async))
        self.holds([])

    def holds(self, calls: list[Call]) -> None:
        """Only the calls still running hold bulkhead or probe slots."""
        running = self.running() + sum(not c.done.is_set() for c in calls)
        assert self.in_flight() == running, self.log
        assert probes_held(self.p) <= running, self.log

    def _cancel_mid_call(self) -> None:
        call = self.runner.start(Dep("cancel", holds=True), use_async=True)
        if call.started():
            call.cancel()
        self.check("cancel", call.result())

    def _burst(self, use_async: bool) -> None:
        calls = [
            self.runner.start(
                Dep("burst", holds=True), use_async=use_async == (i % 2 == 0)
            )
            for i in range(3)
        ]
        for call in calls:
            call.started()
        for call in calls:
            call.dep.release.set()
        for call in calls:
            self.check("burst", call.result())

    def _hang(self, use_async: bool) -> None:
        if self.running() + 1 >= self.config.slots:  # a slot stays free
            self.check("ok", self.runner.run(Dep("ok"), use_async=use_async))
            return
        state = self.p.state
        call = self.runner.start(Dep("hang", holds=True), use_async=use_async)
        if call.started():
            self.hung.append(call)
            self.log.append(f"hang->running({state})")
        else:
            self.check("hang", call.result())

    def _queue(self, *, use_async: bool, cancel: bool) -> None:
        """Fill the free slots, then one call queues for a slot."""
        holders = []
        for _ in range(self.config.slots - self.running()):
            holder = self.runner.start(
                Dep("hold", holds=True), use_async=use_async
            )
            holder.started()
            holders.append(holder)
        kind = "cancel_queued" if cancel else "queued"
        queued = self.runner.start(Dep(kind), use_async=use_async)
        if cancel:
            time.sleep(QUEUE_WAIT / 4)  # (a refusal ends it at once)
            queued.cancel()
        outcome = queued.result()
        self.holds(holders)  # the queued call gave back what it took
        for holder in holders:
            holder.dep.release.set()
        for holder in holders:
            self.check("hold", holder.result())
        if holders and all(h.outcome == "ok" for h in holders):
            self.check(kind, outcome)
        else:  # a holder was refused: the queued call may have run
            self.check(kind, outcome if outcome != "ok" else REFUSED)

    # -- the invariant -----------------------------------------------------

    def recovers(self) -> None:
        """A few healthy calls close the circuit within a bounded time."""
        successes = self.close_it()
        # success_threshold probes close it; on a loaded machine the
        # probe wait may run out between two of them, once or twice.
        assert successes <= 3 * self.config.success_threshold, self.log

    def probes_are_all_free(self) -> None:
        """Trip again: exactly half_open_max_calls probes get in."""
        for _ in range(self.config.failure_threshold):
            self.check("fail", self.runner.run_here(Dep("fail")))
        assert self.p.state == "open", self.log
        time.sleep(RECOVERY * 1.2)
        probes: list[Call] = []
        deadline = time.monotonic() + SLACK
        most = self.config.half_open_max_calls
        room = min(most, self.config.slots)
        half_open_from = time.monotonic()  # (at the earliest)
        while len(probes) < room:
            assert time.monotonic() < deadline, (
                f"{len(probes)} probe(s) admitted; status {self.p.status()}; "
                f"steps: {self.log}"
            )
            probe = self.runner.start(Dep("hold", holds=True), use_async=False)
            if probe.started():
                probes.append(probe)
            else:
                assert probe.result() == REFUSED, self.log
                time.sleep(0.005)
        # One probe more is refused; or, with room for fewer probes in the
        # bulkhead, admitted and turned away by the bulkhead. (Unless the
        # probes took half_open_max_wait to get in on a loaded machine:
        # then the half-open period is over, and with it their slots.)
        extra = self.runner.run_here(Dep("ok"))
        if time.monotonic() - half_open_from < PROBE_WAIT:
            assert extra == (REFUSED if room == most else "BulkheadFullError")
            assert probes_held(self.p) == room, self.log
        for probe in probes:
            probe.dep.release.set()
        for probe in probes:
            assert probe.result() == "ok", self.log
        self.recovers()

    def finish(self) -> None:
        self.recovers()
        for call in self.hung:
            call.dep.release.set()
        for call in self.hung:
            self.check("hang", call.result())
        assert self.p.state == "closed", self.log  # late verdicts are stale
        assert self.in_flight() == 0, self.log
        flush_storages(LIMIT)
        self.probes_are_all_free()
        assert self.in_flight() == 0, self.log


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
    ],
)
@given(config=configs, plan=steps)
# Interleavings that found bugs or leaks, always tried first: a hung probe
# (sync, then async) with a shared storage kept its slot for ever; a probe
# cancelled while queued for the bulkhead must give its slot back.
@example(
    config=Config(1, 1, 1, 1, 2),
    plan=[
        ("as_is", "fail", False),
        ("as_is", "wait", False),
        ("as_is", "hang", False),
    ],
)
@example(config=Config(2, 2, 2, 2, 2), plan=[("probe", "hang", True)])
@example(config=Config(1, 2, 2, 1, 1), plan=[("probe", "cancel_queued", True)])
def test_every_ending_frees_what_it_took(
    loop: asyncio.AbstractEventLoop,
    storage: dict[str, Any],
    config: Config,
    plan: list[tuple[str, str, bool]],
) -> None:
    with testing.capture_events():
        run = Interleaving(loop, storage, config)
        try:
            for phase, ending, use_async in plan:
                run.step(phase, ending, use_async)
            run.finish()
            flush_storages(LIMIT)
        finally:
            for call in run.hung:
                call.dep.release.set()
                with contextlib.suppress(AssertionError):
                    call.result()
