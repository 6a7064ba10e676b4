"""Hooks (sage_resilience.instrumentation): what they see, in what order,
and that none of them can break a call."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from sage_resilience import BulkheadFullError, CircuitOpenError, _attempt
from sage_resilience.instrumentation import (
    AttemptFinished,
    CallRejected,
    RetryScheduled,
    StateChange,
    add_hook,
    get_hooks,
    remove_hook,
)
from tests.helpers import make_policy, named


class Recorder:
    """A hook with every method: what it was told, in order."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def on_state_change(self, details: StateChange) -> None:
        self.seen.append(details)

    def on_attempt(self, details: AttemptFinished) -> None:
        self.seen.append(details)

    def on_retry(self, details: RetryScheduled) -> None:
        self.seen.append(details)

    def on_rejected(self, details: CallRejected) -> None:
        self.seen.append(details)

    def of(self, kind: type) -> list[Any]:
        return [d for d in self.seen if isinstance(d, kind)]


class Down(ConnectionError):
    pass


def down() -> None:
    msg = "refused by postgresql://app:hunter2@db/x"
    raise Down(msg)


def ok() -> str:
    return "ok"


class TestRegistration:
    def test_hooks_run_in_the_order_they_were_added(self) -> None:
        order: list[str] = []

        class Named:
            def __init__(self, name: str) -> None:
                self.name = name

            def on_attempt(self, details: AttemptFinished) -> None:
                order.append(self.name)

        first, second = Named("first"), Named("second")
        add_hook(first)
        add_hook(second)
        add_hook(first)  # once only
        assert (first, second) == get_hooks()
        make_policy().call(ok)
        assert ["first", "second"] == order

    def test_a_removed_hook_is_told_nothing(self) -> None:
        hook = Recorder()
        add_hook(hook)
        remove_hook(hook)
        remove_hook(hook)  # removing twice is harmless
        assert () == get_hooks()
        make_policy().call(ok)
        assert [] == hook.seen

    def test_an_object_without_hook_methods_is_refused(self) -> None:
        with pytest.raises(TypeError, match="on_state_change"):
            add_hook(object())

    def test_only_an_attempt_hook_costs_the_success_path(self) -> None:
        class StatesOnly:
            def on_state_change(self, details: StateChange) -> None: ...

        states = StatesOnly()
        add_hook(states)
        assert _attempt.attempt_observer is None  # the plain variant
        attempts = Recorder()
        add_hook(attempts)
        assert _attempt.attempt_observer is not None
        remove_hook(attempts)
        assert _attempt.attempt_observer is None


class TestRaisingHooks:
    def test_a_raising_hook_never_breaks_a_call(self, events: Any) -> None:
        class Broken:
            def on_attempt(self, details: AttemptFinished) -> None:
                msg = "hook bug"
                raise RuntimeError(msg)

            def on_state_change(self, details: StateChange) -> None:
                msg = "hook bug"
                raise RuntimeError(msg)

        after = Recorder()
        add_hook(Broken())
        add_hook(after)
        p = make_policy(failure_threshold=2)
        assert "ok" == p.call(ok)
        assert "ok" == p.call(ok)
        for _ in range(2):
            with pytest.raises(Down):
                p.call(down)
        assert "open" == p.state
        # The later hook still heard everything.
        assert 4 == len(after.of(AttemptFinished))
        assert 1 == len(after.of(StateChange))
        failed = named(events, "hook_failed")
        # Reported once per hook method, however often it raises.
        assert ["on_attempt", "on_state_change"] == sorted(
            e["method"] for e in failed
        )
        assert all(
            e["hook"]
            == "TestRaisingHooks.test_a_raising_hook_never_breaks_a_call.<locals>.Broken"
            for e in failed
        )


class TestWhatHooksSee:
    def test_state_changes_with_a_redacted_last_failure(self) -> None:
        hook = Recorder()
        add_hook(hook)
        p = make_policy(failure_threshold=1, recovery_timeout=30)
        with pytest.raises(Down):
            p.call(down)
        (change,) = hook.of(StateChange)
        assert (p.name, "closed", "open", "consecutive_failures", 1) == (
            change.breaker,
            change.old_state,
            change.new_state,
            change.reason,
            change.failure_count,
        )
        assert change.last_failure is not None
        assert "hunter2" not in change.last_failure
        p.close()
        assert ["open", "closed"] == [
            c.new_state for c in hook.of(StateChange)
        ]

    def test_a_state_change_carries_the_events_figures(
        self, events: Any
    ) -> None:
        """The library's own events are a hook's output: the event and the
        details hooks get are the same facts."""
        hook = Recorder()
        add_hook(hook)
        p = make_policy(failure_threshold=1, recovery_timeout=30)
        with pytest.raises(Down):
            p.call(down)
        (change,) = hook.of(StateChange)
        (logged,) = named(events, "circuit_state_changed")
        assert change.as_event() == {
            k: v for k, v in logged.items() if k not in {"event", "log_level"}
        }
        assert (1, 30.0, None) == (
            change.failure_threshold,
            change.open_for,
            change.storage,
        )
        assert (hook,) == get_hooks()  # the event log is built in, unlisted

    def test_retries_are_logged_by_the_same_path(self, events: Any) -> None:
        hook = Recorder()
        add_hook(hook)
        p = make_policy(failure_threshold=10, retry={"attempts": 2})
        with pytest.raises(Down):
            p.call(down)
        (retry,) = hook.of(RetryScheduled)
        (logged,) = named(events, "retry_scheduled")
        assert (retry.attempt, retry.max_attempts) == (
            logged["attempt"],
            logged["max_attempts"],
        )
        assert 2 == retry.max_attempts

    async def test_every_outcome_of_an_attempt(self) -> None:
        hook = Recorder()
        add_hook(hook)
        p = make_policy(
            failure_threshold=10, ignore_exceptions=["builtins.KeyError"]
        )

        async def fine() -> str:
            return "ok"

        async def failing() -> None:
            down()

        async def callers_fault() -> None:
            raise KeyError("nope")

        async def bug() -> None:
            msg = "bad call"
            raise TypeError(msg)

        async def hangs() -> None:
            await asyncio.Event().wait()

        await p.acall(fine)
        for fn, error in (
            (failing, Down),
            (callers_fault, KeyError),
            (bug, TypeError),
        ):
            with pytest.raises(error):
                await p.acall(fn)
        task = asyncio.ensure_future(p.acall(hangs))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        finished = hook.of(AttemptFinished)
        assert ["success", "failure", "ignored", "neutral", "cancelled"] == [
            a.outcome for a in finished
        ]
        assert [None, Down, KeyError, TypeError, asyncio.CancelledError] == [
            None if a.error is None else type(a.error) for a in finished
        ]
        assert all(a.duration >= 0 and a.breaker == p.name for a in finished)
        assert finished[-1].duration >= 0.005  # it ran until cancelled

    def test_sync_attempts_are_timed(self) -> None:
        hook = Recorder()
        add_hook(hook)
        p = make_policy()
        p.call(lambda: threading.Event().wait(0.01))
        (attempt,) = hook.of(AttemptFinished)
        assert ("success", None) == (attempt.outcome, attempt.error)
        assert attempt.duration >= 0.009

    def test_retries(self) -> None:
        hook = Recorder()
        add_hook(hook)
        p = make_policy(failure_threshold=10, retry={"attempts": 3})
        with pytest.raises(Down):
            p.call(down)
        retries = hook.of(RetryScheduled)
        assert [1, 2] == [r.attempt for r in retries]
        assert all(isinstance(r.error, Down) for r in retries)
        assert all(r.wait >= 0 for r in retries)
        assert 3 == len(hook.of(AttemptFinished))

    def test_rejections_say_why(self) -> None:
        hook = Recorder()
        add_hook(hook)
        p = make_policy(failure_threshold=1, recovery_timeout=30)
        with pytest.raises(Down):
            p.call(down)
        with pytest.raises(CircuitOpenError):
            p.call(ok)
        (refused,) = hook.of(CallRejected)
        assert ("open", p.name) == (refused.reason, refused.breaker)
        assert 29 < refused.retry_after <= 30

    def test_a_full_half_open_circuit_says_so(self) -> None:
        hook = Recorder()
        add_hook(hook)
        p = make_policy(failure_threshold=1, recovery_timeout=0.01)
        with pytest.raises(Down):
            p.call(down)
        threading.Event().wait(0.02)
        entered, release = threading.Event(), threading.Event()

        def probe() -> None:
            entered.set()
            release.wait(5)

        thread = threading.Thread(target=p.call, args=(probe,))
        thread.start()
        try:
            assert entered.wait(5)
            with pytest.raises(CircuitOpenError):
                p.call(ok)
        finally:
            release.set()
            thread.join(5)
        assert ["half_open_full"] == [r.reason for r in hook.of(CallRejected)]

    async def test_a_full_bulkhead_says_so(self) -> None:
        hook = Recorder()
        add_hook(hook)
        p = make_policy(max_concurrency=1, max_wait=0.01)
        release = asyncio.Event()

        async def hold() -> None:
            await release.wait()

        holder = asyncio.ensure_future(p.acall(hold))
        await asyncio.sleep(0)
        with pytest.raises(BulkheadFullError):
            await p.acall(hold)
        release.set()
        await holder
        assert ["bulkhead"] == [r.reason for r in hook.of(CallRejected)]


class TestConcurrency:
    async def test_a_thousand_callers_are_each_seen_once(self) -> None:
        hook = Recorder()
        add_hook(hook)
        p = make_policy()

        async def work(i: int) -> int:
            await asyncio.sleep(0)
            return i

        results = await asyncio.gather(
            *(p.acall(work, i) for i in range(1000))
        )
        assert list(range(1000)) == results
        attempts = hook.of(AttemptFinished)
        assert 1000 == len(attempts)
        assert {"success"} == {a.outcome for a in attempts}

    def test_hooks_added_and_removed_while_calls_run(self) -> None:
        p = make_policy()
        stop = threading.Event()
        errors: list[BaseException] = []

        def caller() -> None:
            try:
                while not stop.is_set():
                    p.call(ok)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=caller) for _ in range(4)]
        for thread in threads:
            thread.start()
        try:
            for _ in range(200):
                hook = Recorder()
                add_hook(hook)
                remove_hook(hook)
        finally:
            stop.set()
            for thread in threads:
                thread.join(5)
        assert [] == errors
        assert () == get_hooks()
