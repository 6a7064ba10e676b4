"""A gate's side of a shared storage: leases, claims, pushes, adoption.

A :class:`~sage_resilience._breaker.Gate` whose pybreaker storage is a
:class:`~sage_resilience._storage.SharedStorage` owns one :class:`Fleet`
(a gate on any other storage has none, and its hot path only checks for
``None``). The gate still decides locally; the fleet object sends what the
fleet must agree on to the store (counted failures, probe claims and
verdicts, openings and closings) and makes the local circuit what the
store answers.

The store calls back on the backend's thread through the four documented
methods of :class:`Fleet` (:meth:`~Fleet.sync`, :meth:`~Fleet.claimed`,
:meth:`~Fleet.local_failure`, :meth:`~Fleet.snapshot`). Everything else
here runs with the gate's lock held, unless said otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import threading
from typing import TYPE_CHECKING, Any, Final

from sage_resilience._circuit import CANONICAL
from sage_resilience._names import CLOSED, HALF_OPEN, OPEN
from sage_resilience._storage import (
    CLAIM_RETRY,
    LEASE_IDLE,
    LEASE_RESERVE,
    SharedStorage,
    View,
    new_token,
)
from sage_resilience._storage.machine import _ms

if TYPE_CHECKING:
    from collections.abc import Callable

    from sage_resilience._circuit import Circuit
    from sage_resilience._events import StateChange
    from sage_resilience._storage import Outcome
    from sage_resilience._storage.shared import _Op

__all__ = [
    "CLAIM_WAIT",
    "ClaimPending",
    "Fleet",
    "adopt_storage_state",
]

#: How long the caller that claimed a probe's lease waits for the answer.
CLAIM_WAIT: Final = 0.5

#: Why the store's answer moved this gate when this process's operation
#: made the transition there.
_MADE_HERE: Final = {
    (CLOSED, OPEN): "consecutive_failures",
    (OPEN, HALF_OPEN): "recovery_timeout_elapsed",
    (HALF_OPEN, CLOSED): "probe_succeeded",
    (HALF_OPEN, OPEN): "probe_failed",
}


class _ClaimWait:
    """The answer to one probe claim, for the callers waiting on it."""

    __slots__ = ("_futures", "_lock", "done")

    def __init__(self) -> None:
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._futures: list[tuple[asyncio.AbstractEventLoop, Any]] = []

    def set(self) -> None:
        """The store answered (backend thread): wake every waiter."""
        with self._lock:
            self.done.set()
            futures, self._futures = self._futures, []
        for loop, future in futures:
            with contextlib.suppress(RuntimeError):  # a closed loop
                loop.call_soon_threadsafe(_resolve, future)

    async def wait(self, bound: float) -> None:
        """Until the answer came, or *bound* seconds."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        with self._lock:
            if self.done.is_set():
                return
            self._futures.append((loop, future))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(bound):
                await future


def _resolve(future: Any) -> None:
    if not future.done():
        future.set_result(None)


class ClaimPending(Exception):  # noqa: N818 - not an error: a wait
    """This caller's probe claim is in flight (``Gate.admit(wait=True)``).

    Await :meth:`admit` for the ticket (or the refusal).
    """

    def __init__(
        self, name: str, claim: _ClaimWait, admit: Callable[[], int]
    ) -> None:
        super().__init__(name)
        self.claim = claim
        self._admit = admit

    async def admit(self) -> int:
        """The ticket once the store answered (or CircuitOpenError)."""
        await self.claim.wait(CLAIM_WAIT)
        return self._admit()


def adopt_storage_state(gate: Circuit) -> None:
    """Start from what *gate*'s storage holds (a persisted open circuit)."""
    storage = gate._storage
    state = storage.state
    if state == CLOSED:
        return
    opened = storage.opened_at
    with gate._lock:
        gate._state = CANONICAL[state]
        gate._clean = False
        if opened is not None:
            gate._opened_at = gate._from_wall(opened.timestamp())
            gate._probe_at = gate._opened_at + gate.current_recovery_timeout
        if state == HALF_OPEN:
            # Whoever held the probe slots is gone: start over.
            gate._probe_at = gate._clock()
            gate._state = OPEN


class Fleet:
    """One gate's membership of a fleet sharing a circuit through a store.

    Attributes:
        shared: The gate's pybreaker storage.
        adopting: The store's view being adopted (during the transition).
        silent: Whether the transition being made is someone else's.
        diverged: Whether transitions were logged while degraded.
    """

    __slots__ = (
        "_claim_wait",
        "_claiming",
        "_gate",
        "_lease_pool",
        "_leases",
        "_next_claim",
        "adopting",
        "diverged",
        "shared",
        "silent",
    )

    def __init__(self, gate: Circuit, shared: SharedStorage) -> None:
        self._gate = gate
        self.shared = shared
        self.adopting: View | None = None
        self.silent = False
        # Probe leases granted by the store: (token, usable until).
        self._lease_pool: list[tuple[str, float]] = []
        # Leases held by running probes.
        self._leases: list[str] = []
        self._claiming = False
        self._claim_wait: _ClaimWait | None = None
        self._next_claim = 0.0
        self.diverged = False

    def join(self) -> None:
        """Hear from the store; start from what it holds (gate unlocked)."""
        gate = self._gate
        loaded = self.shared.bind(self)
        if loaded is None:
            adopt_storage_state(gate)
            return
        with gate._lock:
            self.apply_view(loaded, reason="storage", silent=True)
            events = gate._take_events()
        gate._emit(events)

    # -- the gate's side (its lock held) -------------------------------------

    def transitioned(self) -> None:
        """The gate moved: leases belong to the state that granted them."""
        self._lease_pool.clear()
        self._leases.clear()
        self._next_claim = 0.0
        if self.shared.degraded and not self.silent:
            self.diverged = True

    def take_lease(self, now: float) -> str | None:
        """A probe slot granted by the store, or None."""
        pool = self._lease_pool
        while pool:
            token, usable_until = pool.pop()
            if now < usable_until:
                return token
        return None

    def hold(self, token: str) -> None:
        """A probe runs on *token*'s lease: keep it alive in the store."""
        gate = self._gate
        self._leases.append(token)
        self.shared.push_hold(token, gate._wall(), ttl=self.lease_ttl())

    def pop_lease(self) -> str | None:
        """The lease of a probe that ended, if it had one."""
        return self._leases.pop() if self._leases else None

    def lease(self) -> str | None:
        """The lease of this process's latest running probe, if any."""
        return self._leases[-1] if self._leases else None

    def hung(self, token: str | None, events: list[StateChange]) -> None:
        """This process's probe (on *token*) hung past its wait: it failed.

        The store reopens the circuit for the fleet (its lease has run out
        meanwhile; if the store freed it already, the verdict is ignored
        there and the next claim probes again).
        """
        if token is not None:
            self.push_outcome(token, events, ok=False, tripped=False)
        else:
            self.push_open(events, forced=False)

    def release(self) -> None:
        """A cancelled probe gives its lease back."""
        if self._leases:
            self.shared.push_release(self._leases.pop(), self._gate._wall())

    def lease_ttl(self) -> float:
        """A shared store's lease expires like a memory gate's wait."""
        return self._gate._probe_wait()

    def claim(self, now: float) -> _ClaimWait | None:
        """Ask the store for a probe slot, one request at a time.

        Returns:
            The claim if this call sent it (its caller may wait for the
            answer), else None.
        """
        if self._claiming or now < self._next_claim:
            return None
        self._claiming = True
        self._claim_wait = claim = _ClaimWait()
        self.shared.push_claim(
            self._gate._wall(),
            max_calls=self._gate.config.half_open_max_calls,
            ttl=LEASE_RESERVE,
            token=new_token(),
        )
        return claim

    def push_outcome(
        self,
        token: str | None,
        events: list[StateChange],
        *,
        ok: bool,
        tripped: bool,
        reset: bool = False,
    ) -> list[StateChange]:
        """Tell the store about an outcome; the events it now owns go.

        A probe's verdict (*token*), an opening made here (*tripped*), or
        a success that reset the failure count (*reset*).
        """
        gate = self._gate
        if token is not None:
            self.shared.push_verdict(
                token,
                gate._wall(),
                ok=ok,
                success_threshold=gate.config.success_threshold,
                open_for=gate.current_recovery_timeout,
                events=events,
            )
            return []
        if tripped:
            self.push_open(events, forced=False)
            return []
        if reset:
            self.shared.push_success(gate._wall())
        return events

    def push_open(
        self,
        events: list[StateChange],
        *,
        forced: bool,
        wait: bool = False,
    ) -> _Op:
        """This process opened the circuit (rate window, flood, operator)."""
        gate = self._gate
        return self.shared.push_open(
            gate._wall(),
            open_for=gate.current_recovery_timeout,
            forced=forced,
            events=events,
            wait=wait,
        )

    def push_close(
        self, events: list[StateChange], *, reset: bool, wait: bool
    ) -> _Op:
        """An operator closed (or reset) the circuit."""
        return self.shared.push_close(
            self._gate._wall(), reset=reset, events=events, wait=wait
        )

    def count_failure(self, exc: BaseException, now: float) -> bool:
        """Count a failure while closed; True: opened here.

        ``failure_threshold`` consecutive failures seen here open the
        circuit at once (a fast flood would otherwise reach the dependency
        until the store's answer is back), and the store follows; fewer
        go to the store, which counts them fleet-wide and opens at the
        threshold.
        """
        gate = self._gate
        shared = self.shared
        threshold = gate.config.failure_threshold
        gate._streak += 1
        if gate._streak >= threshold:
            shared.set_counts(
                max(gate.failure_count, gate._streak),
                int(shared.success_counter),
            )
            gate.breaker.open()
            return True
        reason = "consecutive_failures"
        planned = gate._next_recovery_timeout(CLOSED, now, reason)
        shared.push_failure(
            exc,
            gate._wall(),
            threshold=threshold,
            open_for=gate._open_time(planned, reason),
            generation=gate._generation,
        )
        return False

    def apply_view(self, view: View, *, reason: str, silent: bool) -> None:
        """Make the local circuit what *view* says."""
        gate = self._gate
        shared = self.shared
        gate._forced = view.forced
        target = view.state
        # The counts first: the transition's event reports them.
        shared.set_counts(view.counter, view.successes)
        if target != gate._state:
            self.adopting = view
            self.silent = silent
            gate._reason = reason
            try:
                breaker = gate.breaker
                if breaker._state.name == target:
                    # pybreaker already holds it (a state loaded at start).
                    gate._on_transition(gate._state, target)
                elif target == OPEN:
                    breaker.open()
                elif target == HALF_OPEN:
                    breaker.half_open()
                else:
                    breaker.close()
            finally:
                self.adopting = None
                self.silent = False
                gate._reason = None
        elif target == OPEN:
            self.adopt_timing(view)
        # pybreaker zeroes them on some transitions: the store's win.
        shared.set_counts(view.counter, view.successes)
        gate._clean = gate._state == CLOSED and view.counter == 0
        if gate._clean:
            gate._streak = 0

    def adopt_timing(self, view: View) -> None:
        """Open since and until when the store says."""
        gate = self._gate
        gate._opened_at = gate._from_wall(view.opened_at / 1000)
        self.shared.opened_at = dt.datetime.fromtimestamp(
            view.opened_at / 1000, tz=dt.UTC
        )
        gate._refusal_info = None
        if view.forced:
            gate._probe_at = float("inf")
            return
        gate._probe_at = gate._from_wall(view.probe_at / 1000)
        open_for = (view.probe_at - view.opened_at) / 1000
        if open_for > 0:
            gate.current_recovery_timeout = open_for
            gate._backoff_timeout = open_for
            gate.breaker.reset_timeout = open_for

    # -- the store's side (its backend thread; the gate unlocked) ------------

    def sync(
        self,
        view: View,
        *,
        ours: bool,
        events: list[Any],
        resync: bool = False,
    ) -> None:
        """The store answered one of our operations, or sent news.

        Args:
            view: What the store holds now.
            ours: Whether this process's operation made the transition
                (it logs it; the others adopt it silently).
            events: The events the operation carried (to log if ours).
            resync: Whether this is the re-read after a degraded period.
        """
        gate = self._gate
        shared = self.shared
        with gate._lock:
            out: list[StateChange] = []
            if ours:
                # This process's operation made the transition: log it.
                if not events and view.state == gate._state:
                    events = shared.steal_events(view.state)
                out.extend(events)
                if view.state == gate._state == OPEN:
                    # Opened here and confirmed: the store's times are
                    # what the fleet shows.
                    self.adopt_timing(view)
                if view.state != gate._state and not shared.optimistic():
                    # (A later local transition still on its way to the
                    # store is newer than this answer: its own answer
                    # settles the state.)
                    self.apply_view(
                        view,
                        reason=_MADE_HERE.get(
                            (gate._state, view.state), "storage"
                        ),
                        silent=bool(events),
                    )
            elif not shared.optimistic():
                # Not ours (or lost a race): adopt, unless a local
                # transition of ours is still on its way to the store.
                self.apply_view(
                    view,
                    reason="storage_resync",
                    silent=not (resync and self.diverged),
                )
                self._next_claim = 0.0
            if resync:
                self.diverged = False
            out.extend(gate._take_events())
        gate._emit(out)

    def claimed(
        self, outcome: Outcome | None, token: str, ttl_ms: int
    ) -> None:
        """The store answered a probe claim (None: it could not).

        Args:
            outcome: The store's answer, or None when it could not run it.
            token: The claimed lease's token.
            ttl_ms: How long the lease is reserved for, in milliseconds.
        """
        gate = self._gate
        with gate._lock:
            self._claiming = False
            claim, self._claim_wait = self._claim_wait, None
            now = gate._clock()
            if outcome is None:
                self._next_claim = 0.0
                if claim is not None:
                    claim.set()
                return
            view = outcome.view
            if view.state != gate._state and (
                outcome.won or not self.shared.optimistic()
            ):
                self.apply_view(
                    view,
                    reason="recovery_timeout_elapsed",
                    silent=not outcome.won,
                )
            if outcome.granted and gate._state == HALF_OPEN:
                usable = now + min(LEASE_IDLE, ttl_ms / 1000)
                self._lease_pool.append((token, usable))
                self._next_claim = 0.0
            elif not outcome.granted:
                self._next_claim = max(
                    now + CLAIM_RETRY, gate._from_wall(outcome.hint / 1000)
                )
            events = gate._take_events()
        gate._emit(events)
        if claim is not None:
            claim.set()  # the claimant is the probe if it was granted

    def local_failure(self, exc: BaseException, generation: int) -> None:
        """A failure the store never counted: count it here.

        Args:
            exc: The failure.
            generation: The gate's circuit generation when it was sent
                (a failure of an earlier generation counts no more).
        """
        gate = self._gate
        with gate._lock:
            if generation != gate._generation or gate._state != CLOSED:
                return
            gate._reason = "consecutive_failures"
            gate._count(exc)
            events = gate._take_events()
        gate._emit(events)

    def snapshot(self) -> View:
        """The local circuit as a view (to seed a store that lost it)."""
        gate = self._gate
        with gate._lock:
            state = gate._state
            opened = gate._opened_at if state != CLOSED else None
            probe = (
                _ms(gate._to_wall(gate._probe_at))
                if state == OPEN and not gate._forced
                else 0
            )
            return View(
                state,
                gate.failure_count,
                int(self.shared.success_counter),
                _ms(gate._to_wall(opened)) if opened is not None else 0,
                probe,
                gate._forced,
                max(self.shared.seen_version, 0),
            )
