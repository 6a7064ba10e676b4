"""The gate: what it takes on admission is freed however a call ends."""

from __future__ import annotations

import threading
from typing import Any

import pybreaker
import pytest
from sage_resilience import CircuitOpenError
from tests.helpers import Clock, make_policy, named, with_clock


class _Raising(pybreaker.CircuitBreakerListener):
    """A user's listener that raises from every method pybreaker calls."""

    def __init__(self) -> None:
        self.calls = 0

    def _boom(self) -> None:
        self.calls += 1
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


def _fail() -> None:
    raise ConnectionError("down")


def test_a_raising_listener_never_wedges_the_circuit(
    events: list[Any],
) -> None:
    p = make_policy(failure_threshold=1, recovery_timeout=0.05)
    listener = _Raising()
    p.breaker.add_listener(listener)
    for _ in range(3):  # open, half-open, close: three times over
        with pytest.raises(ConnectionError):  # the dependency's error
            p.call(_fail)
        assert p.state == "open"
        threading.Event().wait(0.08)
        assert p.call(lambda: "ok") == "ok"  # not the listener's error
        assert p.state == "closed"
    assert listener.calls > 0  # it was called, and raised, every time
    failed = named(events, "listener_failed")
    assert len(failed) == 1  # reported once
    assert failed[0]["listener"] == "_Raising"
    assert "listener bug" in failed[0]["error"]


async def test_a_raising_listener_on_an_async_probe() -> None:
    p = make_policy(failure_threshold=1, recovery_timeout=0.05)
    p.breaker.add_listener(_Raising())

    async def fail() -> None:
        raise ConnectionError("down")

    async def ok() -> str:
        return "ok"

    with pytest.raises(ConnectionError):
        await p.acall(fail)
    with pytest.raises(CircuitOpenError):
        await p.acall(ok)
    threading.Event().wait(0.08)
    with pytest.raises(ConnectionError):  # a failed probe reopens
        await p.acall(fail)
    assert p.state == "open"
    threading.Event().wait(0.08)
    assert await p.acall(ok) == "ok"
    assert p.state == "closed"


def test_a_listener_removed_is_no_longer_called() -> None:
    p = make_policy(failure_threshold=1, recovery_timeout=60)
    listener = _Raising()
    p.breaker.add_listener(listener)
    p.breaker.remove_listener(listener)
    with pytest.raises(ConnectionError):
        p.call(_fail)
    assert listener.calls == 0


def test_a_hung_sync_probe_loses_its_slot_after_half_open_max_wait(
    events: list[Any],
) -> None:
    p = make_policy(
        failure_threshold=1, recovery_timeout=0.05, half_open_max_wait=0.2
    )
    with pytest.raises(ConnectionError):
        p.call(_fail)
    threading.Event().wait(0.08)
    release = threading.Event()
    probe = threading.Thread(target=p.call, args=(release.wait,))
    probe.start()  # the probe hangs (a sync call has no timeout)
    try:
        threading.Event().wait(0.05)
        with pytest.raises(CircuitOpenError):  # its slot is taken
            p.call(lambda: "ok")
        threading.Event().wait(0.2)
        # Past half_open_max_wait the hung probe loses its slot: the
        # circuit opens again, and after the open time a new probe runs.
        with pytest.raises(CircuitOpenError):
            p.call(lambda: "ok")
        assert p.state == "open"
        threading.Event().wait(0.08)
        assert p.call(lambda: "ok") == "ok"
        assert p.state == "closed"
    finally:
        release.set()
        probe.join(5)
    # The hung probe's late success changed nothing.
    assert p.state == "closed"
    reasons = [e["reason"] for e in named(events, "circuit_state_changed")]
    assert "half_open_timeout" in reasons


@pytest.mark.parametrize(
    ("second_probe_takes", "state_meanwhile"),
    [(4.0, "half-open"), (11.0, "open")],
    ids=["within-its-wait", "hung"],
)
def test_each_probe_gets_its_whole_half_open_max_wait(
    second_probe_takes: float, state_meanwhile: str, events: list[Any]
) -> None:
    """With success_threshold 2 the second probe starts after the first
    one's verdict: a caller refused while it runs gives it up only when
    it has run half_open_max_wait itself, not since half-open began."""
    clock = Clock()
    p = with_clock(
        make_policy(
            failure_threshold=1,
            recovery_timeout=5,
            success_threshold=2,
            half_open_max_wait=10,
        ),
        clock,
    )
    with pytest.raises(ConnectionError):
        p.call(_fail)
    clock.advance(5)
    seen: list[str] = []

    def probe(takes: float) -> str:
        clock.advance(takes)
        with pytest.raises(CircuitOpenError):  # the probe holds the slot
            p.call(lambda: "refused")
        seen.append(p.state)
        return "ok"

    assert "ok" == p.call(probe, 8.0)  # the first probe: 8 s of its 10
    assert "ok" == p.call(probe, second_probe_takes)  # 12 or 19 s in
    assert ["half-open", state_meanwhile] == seen
    reasons = [e["reason"] for e in named(events, "circuit_state_changed")]
    assert ("half_open_timeout" in reasons) == (state_meanwhile == "open")


def test_half_open_max_wait_defaults_to_the_lease_bound() -> None:
    p = make_policy(recovery_timeout=30, timeout=None)
    assert p._gate._probe_wait() == 30
    p = make_policy(recovery_timeout=30, timeout=5)
    assert p._gate._probe_wait() == 5
    p = make_policy(recovery_timeout=0.1)
    assert p._gate._probe_wait() == 2.0
