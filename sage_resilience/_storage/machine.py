"""The shared state machine: one operation on one circuit, atomically.

Written twice and kept line for line alike: in Python (:func:`_step`, run
inside a ``BEGIN IMMEDIATE`` transaction by the sqlite backend, and by the
tests) and in Lua (:data:`_LUA`, run by Redis). The circuit is a
:class:`View`; an operation answers with the view after it and whether it
made a transition (an :class:`Outcome`). ``count`` operations carry the
failures and resets that merged while queued (:func:`merge_count`).

To change what an operation does, change both twins: the property test
``TestStateMachine.test_lua_and_python_agree`` runs random sequences
through both against a real Redis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from sage_resilience._names import CLOSED, HALF_OPEN, OPEN

if TYPE_CHECKING:
    from collections.abc import Iterable


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


@dataclass(frozen=True, slots=True)
class View:
    """One circuit as the shared store holds it.

    Times are integer milliseconds since the epoch; ``probe_at`` is when a
    probe becomes allowed (0 when closed or forced open). ``version``
    grows by one on every transition.
    """

    state: str = CLOSED
    counter: int = 0
    successes: int = 0
    opened_at: int = 0
    probe_at: int = 0
    forced: bool = False
    version: int = 0

    def args(self) -> tuple[str | int, ...]:
        """The fields in the order the seed operation takes them."""
        return (
            self.state,
            self.counter,
            self.successes,
            self.opened_at,
            self.probe_at,
            int(self.forced),
            self.version,
        )

    @classmethod
    def parse(cls, fields: Iterable[Any]) -> View:
        """Build a view from ``state, counter, ... , version`` values."""
        st, c, s, oa, pa, f, v = fields
        if isinstance(st, bytes):
            st = st.decode()
        if st not in {CLOSED, OPEN, HALF_OPEN}:
            msg = f"unknown circuit state {st!r}"
            raise ValueError(msg)
        return cls(
            str(st), int(c), int(s), int(oa), int(pa), bool(int(f)), int(v)
        )


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one operation did: the view after it, and its verdicts."""

    view: View
    won: bool  # this operation made the transition (or seeded the store)
    granted: bool = False  # a probe claim got its lease
    hint: int = 0  # no lease: when one may free up (ms), 0 if unknown


class _Row:
    """The mutable twin of the Lua script's locals."""

    __slots__ = (
        "c",
        "dirty",
        "f",
        "granted",
        "hint",
        "leases",
        "leases_changed",
        "missing",
        "now",
        "oa",
        "pa",
        "publish",
        "s",
        "st",
        "v",
        "won",
    )

    def __init__(
        self, view: View | None, leases: dict[str, int], now: int
    ) -> None:
        self.missing = view is None
        view = view or View()
        self.st = view.state
        self.c = view.counter
        self.s = view.successes
        self.oa = view.opened_at
        self.pa = view.probe_at
        self.f = int(view.forced)
        self.v = view.version
        self.leases = leases
        self.leases_changed = False
        self.now = now
        self.won = self.granted = self.hint = 0
        self.dirty = self.publish = False

    def view(self) -> View:
        return View(
            self.st, self.c, self.s, self.oa, self.pa, bool(self.f), self.v
        )

    def move(self, new: str) -> None:
        self.st = new
        self.v += 1
        self.s = 0
        self.won = 1
        self.dirty = self.publish = True
        if self.leases:
            self.leases.clear()
            self.leases_changed = True

    def open(self, for_ms: int, forced: int) -> None:
        self.move(OPEN)
        self.oa = self.now
        self.f = forced
        self.pa = 0 if forced else self.now + for_ms

    def close(self) -> None:
        self.move(CLOSED)
        self.c = self.oa = self.pa = self.f = 0

    def add_failures(self, n: int, threshold: int, for_ms: int) -> None:
        """*n* consecutive failures, as *n* single steps would count them.

        The one that reaches *threshold* opens the circuit and the rest
        find it open, so an opening leaves ``c`` at the threshold (or one
        above what it was, should a lowered threshold already be passed).
        """
        if self.st != CLOSED or n <= 0:
            return
        self.dirty = self.publish = True
        if self.c + n >= threshold:
            self.c = max(threshold, self.c + 1)
            self.open(for_ms, 0)
        else:
            self.c += n


def _step(  # noqa: C901, PLR0912, PLR0915 - one branch per operation, as in the Lua twin
    row: _Row, op: str, args: tuple[str | int, ...]
) -> None:
    """One operation on one circuit; the Python twin of :data:`_LUA`."""
    now = row.now
    if op == "count":
        threshold, for_ms = int(args[0]), int(args[1])
        row.add_failures(int(args[2]), threshold, for_ms)
        if str(args[3]) == "1" and row.st == CLOSED and row.c > 0:
            row.c = 0
            row.dirty = row.publish = True
        row.add_failures(int(args[4]), threshold, for_ms)
    elif op == "open":
        if str(args[1]) == "1":
            if row.st != OPEN:
                row.open(int(args[0]), 1)
            elif row.f == 0:
                row.f, row.pa = 1, 0
                row.dirty = row.publish = True
        elif row.st == CLOSED:
            row.open(int(args[0]), 0)
    elif op == "close":
        if row.st != CLOSED or row.f == 1:
            row.close()
        if str(args[0]) == "1" and (row.c != 0 or row.s != 0):
            row.c = row.s = 0
            row.dirty = row.publish = True
    elif op == "claim":
        if row.st == OPEN and row.f == 0 and now >= row.pa:
            row.move(HALF_OPEN)
        if row.st == HALF_OPEN:
            live = {t: e for t, e in row.leases.items() if e > now}
            if len(live) != len(row.leases):
                row.leases_changed = True
            row.leases = live
            if len(live) < int(args[0]):
                live[str(args[1])] = now + int(args[2])
                row.leases_changed = True
                row.granted = 1
            else:
                row.hint = min(live.values())
        elif row.st == OPEN:
            row.hint = row.pa
    elif op == "done":
        if row.leases.pop(str(args[0]), None) is not None:
            row.leases_changed = True
            if row.st == HALF_OPEN:
                if str(args[1]) == "1":
                    row.s += 1
                    row.dirty = row.publish = True
                    if row.s >= int(args[2]):
                        row.close()
                else:
                    row.c += 1
                    row.open(int(args[3]), 0)
    elif op == "hold":
        if str(args[0]) in row.leases:
            row.leases[str(args[0])] = now + int(args[1])
            row.leases_changed = True
    elif op == "release":
        if row.leases.pop(str(args[0]), None) is not None:
            row.leases_changed = True
            row.publish = True
    elif op == "seed" and row.missing:
        seeded = View.parse(args)
        row.st, row.c, row.s = seeded.state, seeded.counter, seeded.successes
        row.oa, row.pa = seeded.opened_at, seeded.probe_at
        row.f, row.v = int(seeded.forced), seeded.version
        row.won = 1
        row.dirty = True


#: The same state machine, atomically in Redis. KEYS: the circuit's hash
#: and its probe leases (a sorted set of token -> expiry). ARGV: operation,
#: now (ms), pub/sub channel, circuit name, then the operation's arguments.
_LUA: Final = """
local key, leases = KEYS[1], KEYS[2]
local op, now, channel, name = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local h = redis.call('HMGET', key, 'st', 'c', 's', 'oa', 'pa', 'f', 'v')
local missing = not h[1]
local st = h[1] or 'closed'
local c = tonumber(h[2]) or 0
local s = tonumber(h[3]) or 0
local oa = tonumber(h[4]) or 0
local pa = tonumber(h[5]) or 0
local f = tonumber(h[6]) or 0
local v = tonumber(h[7]) or 0
local won, granted, hint = 0, 0, 0
local dirty, publish = false, false

local function move(new)
  st = new
  v = v + 1
  s = 0
  won = 1
  dirty = true
  publish = true
  redis.call('DEL', leases)
end

local function open(for_ms, forced)
  move('open')
  oa = now
  f = forced
  if forced == 1 then pa = 0 else pa = now + for_ms end
end

local function close()
  move('closed')
  c = 0
  oa = 0
  pa = 0
  f = 0
end

local function add_failures(n, threshold, for_ms)
  if st ~= 'closed' or n <= 0 then return end
  dirty = true
  publish = true
  if c + n >= threshold then
    c = math.max(threshold, c + 1)
    open(for_ms, 0)
  else
    c = c + n
  end
end

if op == 'count' then
  local threshold, for_ms = tonumber(ARGV[5]), tonumber(ARGV[6])
  add_failures(tonumber(ARGV[7]), threshold, for_ms)
  if ARGV[8] == '1' and st == 'closed' and c > 0 then
    c = 0
    dirty = true
    publish = true
  end
  add_failures(tonumber(ARGV[9]), threshold, for_ms)
elseif op == 'open' then
  if ARGV[6] == '1' then
    if st ~= 'open' then
      open(tonumber(ARGV[5]), 1)
    elseif f == 0 then
      f = 1
      pa = 0
      dirty = true
      publish = true
    end
  elseif st == 'closed' then
    open(tonumber(ARGV[5]), 0)
  end
elseif op == 'close' then
  if st ~= 'closed' or f == 1 then close() end
  if ARGV[5] == '1' and (c ~= 0 or s ~= 0) then
    c = 0
    s = 0
    dirty = true
    publish = true
  end
elseif op == 'claim' then
  if st == 'open' and f == 0 and now >= pa then move('half-open') end
  if st == 'half-open' then
    redis.call('ZREMRANGEBYSCORE', leases, '-inf', now)
    if redis.call('ZCARD', leases) < tonumber(ARGV[5]) then
      local ttl = tonumber(ARGV[7])
      redis.call('ZADD', leases, now + ttl, ARGV[6])
      granted = 1
    else
      hint = tonumber(redis.call('ZRANGE', leases, 0, 0, 'WITHSCORES')[2])
    end
  elseif st == 'open' then
    hint = pa
  end
elseif op == 'done' then
  if redis.call('ZREM', leases, ARGV[5]) == 1 and st == 'half-open' then
    if ARGV[6] == '1' then
      s = s + 1
      dirty = true
      publish = true
      if s >= tonumber(ARGV[7]) then close() end
    else
      c = c + 1
      open(tonumber(ARGV[8]), 0)
    end
  end
elseif op == 'hold' then
  if redis.call('ZSCORE', leases, ARGV[5]) then
    redis.call('ZADD', leases, now + tonumber(ARGV[6]), ARGV[5])
  end
elseif op == 'release' then
  if redis.call('ZREM', leases, ARGV[5]) == 1 then publish = true end
elseif op == 'seed' and missing then
  st = ARGV[5]
  c = tonumber(ARGV[6])
  s = tonumber(ARGV[7])
  oa = tonumber(ARGV[8])
  pa = tonumber(ARGV[9])
  f = tonumber(ARGV[10])
  v = tonumber(ARGV[11])
  won = 1
  dirty = true
end
if op == 'claim' or op == 'hold' then
  -- The leases key lives as long as its longest lease.
  local last = redis.call('ZRANGE', leases, -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', leases, last[2]) end
end
if dirty then
  redis.call('HSET', key, 'st', st, 'c', c, 's', s, 'oa', oa, 'pa', pa,
             'f', f, 'v', v)
end
if publish then
  redis.call('PUBLISH', channel, cjson.encode({name, st, c, s, oa, pa, f, v}))
end
return {won, granted, hint, st, c, s, oa, pa, f, v}
"""


#: The arguments of a ``count`` operation: threshold, open for (ms),
#: failures before a reset, whether a reset follows, failures after it.
Count = tuple[str | int, ...]
#: One success that resets the count (the threshold is the next failure's).
RESET: Final[Count] = (1, 0, 0, 1, 0)


def merge_count(queued: Count, one: Count) -> Count | None:
    """A queued ``count`` followed by *one* more outcome, as one ``count``.

    *one* is a single failure ``(threshold, ms, 1, 0, 0)`` or
    :data:`RESET`. A failure adds to the run after the last reset (and
    brings its threshold and open time: the latest apply). A reset
    forgets that run, unless it could have opened the circuit by itself:
    then it cannot merge (None) and starts the next operation.
    """
    threshold, for_ms, before, reset, after = queued
    if one[3]:
        if int(after) >= int(threshold):
            return None
        return (threshold, for_ms, before, 1, 0)
    if reset:
        return (one[0], one[1], before, 1, int(after) + 1)
    return (one[0], one[1], int(before) + 1, 0, 0)
