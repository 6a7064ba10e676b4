"""Aggregation: from the events of every source to one :class:`Summary`.

Several files are merged in time order (:func:`heapq.merge` over one lazy
event stream per file), so the order of the files on the command line does
not matter and a duplicated event found in two overlapping files is
counted once. Transitions are sorted by time at the end, so lines out of
order inside a file are fine too. Memory grows with the number of breakers
and transitions only (plus a bounded window used to drop duplicated retry
events).
"""

from __future__ import annotations

import datetime as dt
import heapq
import re
import sys
from collections import Counter, deque
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from operator import itemgetter
from typing import IO, TYPE_CHECKING, Any, Final

from sage_resilience._logs.lines import _count, _hashable, _safe_text, _state
from sage_resilience._logs.model import (
    _CLOSED,
    _OPEN,
    MAX_WINDOW,
    BreakerSummary,
    Cause,
    Segment,
    SkippedLine,
    Summary,
    Transition,
)
from sage_resilience._logs.read import (
    _EXAMPLES,
    _PRE,
    _Event,
    _scratch,
    _Source,
)
from sage_resilience._logs.times import (
    _EPOCH,
    _ONE_US,
    _US,
    _in_range,
    parse_time,
    parse_timestamp,
)
from sage_resilience._names import (
    RETRY_EXHAUSTED,
    RETRY_SCHEDULED,
    STATE_CHANGED,
)
from sage_resilience._redact import redact

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

__all__ = ["normalise_cause", "summarize"]

_TOP_CAUSES: Final = 5


# Duplicated retry and rejection events (log shippers resend lines, rotated
# files overlap) are recognised within this many microseconds of the newest
# event seen, and always among the last _DEDUP_KEEP such events (a copy a
# few lines away, however old its timestamp), remembering at most
# _DEDUP_MAX of them: bounded memory.
_DEDUP_HORIZON_US: Final = 120_000_000
_DEDUP_KEEP: Final = 1_000
_DEDUP_MAX: Final = 100_000
_MAX_WINDOW: Final = MAX_WINDOW
# The types of JSON values _hashable keeps as they are (checked at once).
_PLAIN: Final = frozenset({type(None), str, int, float, bool})

# ---------------------------------------------------------------------------
# Root causes


# (pattern, placeholder), applied in this order.
_CAUSE_RULES: Final = tuple(
    (re.compile(pattern), placeholder)
    for pattern, placeholder in (
        (
            (
                r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
                r"[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
            ),
            "<uuid>",
        ),
        # [::1]:5432, 10.0.0.1:5432, ::1, fe80::1, full eight-group IPv6
        (r"\[[0-9a-fA-F:.%\w]*:[0-9a-fA-F:.%\w]*\](?::\d+)?", "<ip>"),
        (r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b", "<ip>"),
        (
            (
                r"(?<![\w:])(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}(?![\w:])"
                r"|(?<![\w:])[0-9a-fA-F:]*::[0-9a-fA-F:]*(?![\w:])"
            ),
            "<ip>",
        ),
        (r"\b0[xX][0-9a-fA-F]+\b", "<hex>"),
        (r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b", "<hex>"),
    )
)
# Quoted strings, matched left to right so that pairs stay aligned; a
# placeholder already quoted ('<ip>') is kept.
_QUOTED: Final = re.compile(r"'(<\w+>)'|\"(<\w+>)\"|'[^'\n]*'|\"[^\"\n]*\"")
_NUMBER: Final = re.compile(r"(?<![A-Za-z_<])\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _quoted(match: re.Match[str]) -> str:
    if match.group(1) or match.group(2):
        return match.group()
    quote = match.group()[0]
    return f"{quote}<str>{quote}"


_CAUSE_MAX: Final = 300
# Of a last_failure, only this many characters are looked at: the report
# keeps 300, and redaction and normalisation then cost bounded time on a
# message of any length (a 10 MB message is cut before, not after).
_CAUSE_READ: Final = 1000


def _first_line(text: str) -> str:
    """The first line of *text*, at most _CAUSE_READ characters.

    Cut at a space, so that no half of a secret (a token cut in two, which
    redaction would no longer recognise) survives the cut.
    """
    head = text[: _CAUSE_READ + 1].strip()
    lines = head.splitlines()
    first = lines[0] if lines else ""
    if len(first) > _CAUSE_READ:
        cut = first.rfind(" ", 0, _CAUSE_READ)
        first = first[:cut] + " …" if cut > 0 else "…"
    return first


def normalise_cause(last_failure: str) -> str:
    """Group a ``last_failure`` text with others of the same kind.

    Keeps the exception type and the first line of the message, hides
    secrets, and replaces the parts that vary from one failure to the next:
    UUIDs, IP addresses and ports, hex ids, quoted strings and numbers.

    Args:
        last_failure: ``"ExcType: message"`` as logged.

    Returns:
        The normalised cause, for example ``"ConnectionRefusedError: [Errno
        <n>] Connect call failed ('<ip>', <n>)"``.

    .. versionadded:: 0.1.0
    """
    text = redact(_first_line(last_failure))
    for pattern, replacement in _CAUSE_RULES:
        text = pattern.sub(replacement, text)
    text = _QUOTED.sub(_quoted, text)
    text = _NUMBER.sub("<n>", text)
    text = " ".join(text.split())
    if len(text) > _CAUSE_MAX:
        text = text[: _CAUSE_MAX - 1] + "…"
    return _safe_text(text)


def _cause_of(obj: dict[str, Any]) -> str:
    """The root cause of one trip, for ``top_causes``."""
    if obj.get("reason") == "forced":
        return "(forced open)"
    last_failure = obj.get("last_failure")
    if isinstance(last_failure, str) and last_failure.strip():
        return normalise_cause(last_failure)
    last_cause = obj.get("last_cause")
    if isinstance(last_cause, str) and last_cause:
        return f"({normalise_cause(last_cause)})"
    return "(unknown)"


# ---------------------------------------------------------------------------
# Merging and aggregating


@dataclass(slots=True)
class _Counts:
    """Per-breaker counters that do not need the sorted timeline."""

    retries_scheduled: int = 0
    retries_exhausted: int = 0
    call_rejected: int = 0
    events: int = 0


@dataclass(slots=True)
class _Aggregator:
    """Consumes the merged event stream; memory bounded by transitions."""

    matches: Callable[[str], bool]
    counts: dict[str, _Counts] = field(default_factory=dict)
    transitions: list[tuple[int, int, Transition]] = field(
        default_factory=list
    )
    seen_transitions: set[tuple[int, str, str | None, str]] = field(
        default_factory=set
    )
    # Latest transition before --since, per breaker: (time, new_state).
    before: dict[str, tuple[int, str]] = field(default_factory=dict)
    recent: dict[int, int] = field(default_factory=dict)
    recent_order: deque[tuple[int, int]] = field(default_factory=deque)
    newest: int = 0
    events: int = 0

    def add(self, event: _Event) -> None:
        us, kind, breaker, obj = event
        if not self.matches(breaker):
            return
        breaker = sys.intern(breaker)
        if kind == _PRE:
            state = _state(obj.get("new_state"))
            previous = self.before.get(breaker)
            if state is not None and (previous is None or previous[0] <= us):
                self.before[breaker] = (us, state)
            return
        if kind == STATE_CHANGED:
            self._transition(us, breaker, obj)
            return
        if self._duplicate(us, kind, breaker, obj):
            return
        counts = self._counts(breaker)
        counts.events += 1
        self.events += 1
        if kind == RETRY_SCHEDULED:
            counts.retries_scheduled += 1
        elif kind == RETRY_EXHAUSTED:
            counts.retries_exhausted += 1
        else:
            counts.call_rejected += 1

    def _counts(self, breaker: str) -> _Counts:
        counts = self.counts.get(breaker)
        if counts is None:
            counts = self.counts[breaker] = _Counts()
        return counts

    def _transition(self, us: int, breaker: str, obj: dict[str, Any]) -> None:
        old = _state(obj.get("old_state"))
        new = _state(obj.get("new_state"))
        assert new is not None  # checked by the scanner
        key = (us, breaker, old, new)
        if key in self.seen_transitions:
            return
        self.seen_transitions.add(key)
        transition = Transition(
            time_us=us,
            breaker=breaker,
            old_state=old,
            new_state=new,
            cause=None,
            rejected=_count(obj.get("rejected_while_open")) or 0,
        )
        if transition.is_trip:
            cause = sys.intern(_cause_of(obj))
            transition = Transition(
                us, breaker, old, new, cause, transition.rejected
            )
        self.transitions.append((us, len(self.transitions), transition))
        self._counts(breaker).events += 1
        self.events += 1

    def _duplicate(
        self, us: int, kind: str, breaker: str, obj: dict[str, Any]
    ) -> bool:
        """Whether this retry/rejection event was already counted."""
        get = obj.get
        values: tuple[object, ...] = (
            get("attempt"),
            get("attempts"),
            get("max_attempts"),
            get("wait"),
            get("error"),
            get("retry_after"),
        )
        if not _PLAIN.issuperset(map(type, values)):
            values = tuple(map(_hashable, values))
        key = hash((us, kind, breaker, *values))
        if key in self.recent:
            return True
        self.newest = max(self.newest, us)
        self.recent[key] = us
        self.recent_order.append((us, key))
        horizon = self.newest - _DEDUP_HORIZON_US
        order = self.recent_order
        while order and (
            len(order) > _DEDUP_MAX
            or (order[0][0] < horizon and len(order) > _DEDUP_KEEP)
        ):
            old_us, old_key = order.popleft()
            if self.recent.get(old_key) == old_us:
                del self.recent[old_key]
        return False


def _segments(
    transitions: Sequence[Transition],
    initial: str | None,
    start: int | None,
    end: int,
) -> list[Segment]:
    """A breaker's states over [start, end], adjacent equal states merged."""
    pieces: list[Segment] = []

    def extend(begin: int, finish: int, state: str) -> None:
        if pieces and pieces[-1].state == state:
            pieces[-1] = Segment(pieces[-1].start_us, finish, state)
        else:
            pieces.append(Segment(begin, finish, state))

    if transitions:
        first = transitions[0].time_us
        state = initial or transitions[0].old_state or _CLOSED
        if start is not None and start < first:
            extend(start, first, state)
        for current, following in zip(
            transitions, [*transitions[1:], None], strict=True
        ):
            finish = end if following is None else following.time_us
            extend(
                current.time_us,
                max(finish, current.time_us),
                current.new_state,
            )
    elif initial is not None and start is not None:
        extend(start, max(end, start), initial)
    return pieces


def _flapping(trip_times: Sequence[int], trips: int, window: float) -> bool:
    """Whether *trips* trips fall within *window* seconds of each other."""
    if trips <= 0 or len(trip_times) < trips:
        return False
    span = round(window * _US)
    return any(
        trip_times[i + trips - 1] - trip_times[i] <= span
        for i in range(len(trip_times) - trips + 1)
    )


def _breaker_matcher(
    breakers: Iterable[str] | None,
) -> Callable[[str], bool]:
    """Exact names or shell-style patterns (``siliconflow*``), cached."""
    if breakers is None:
        return lambda _name: True
    patterns = tuple(breakers)
    if not patterns:
        return lambda _name: True
    cache: dict[str, bool] = {}

    def matches(name: str) -> bool:
        known = cache.get(name)
        if known is None:
            known = any(
                name == pattern or fnmatchcase(name, pattern)
                for pattern in patterns
            )
            if len(cache) < 10_000:
                cache[name] = known
        return known

    return matches


def _time_bound(value: object, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        us = _in_range((moment - _EPOCH) // _ONE_US)
        if us is None:
            msg = f"{what}: outside the years 1 to 9999 UTC: {value!r}"
            raise ValueError(msg)
        return us
    if isinstance(value, str):
        return parse_time(value)
    us = parse_timestamp(value)
    if us is None:
        msg = f"{what}: not a time: {value!r}"
        raise ValueError(msg)
    return us


def summarize(
    sources: Iterable[tuple[str, IO[bytes]]],
    *,
    since: dt.datetime | float | str | None = None,
    until: dt.datetime | float | str | None = None,
    breakers: Iterable[str] | None = None,
    flapping_trips: int = 3,
    flapping_window: float = 600.0,
) -> Summary:
    """Analyse JSON-lines logs of sage_resilience events.

    Args:
        sources: ``(name, binary stream)`` pairs; gzip streams are detected
            by their magic bytes. They are merged in time order, whatever
            their order here. The streams are read, not closed.
        since: Ignore events before this time (a datetime, epoch seconds,
            or text as accepted by :func:`parse_time`).
        until: Ignore events after this time.
        breakers: Only these breakers (names or shell-style patterns).
        flapping_trips: Trips that make a breaker flapping...
        flapping_window: ...when they happen within this many seconds.

    Returns:
        The :class:`Summary`.

    Raises:
        ValueError: *since* or *until* is not a time, *flapping_trips* is
            not an int >= 1, or *flapping_window* is not a number of seconds in
            (0, 1e9].
        OSError: A stream could not be read.

    .. versionadded:: 0.1.0
    """
    _check_flapping(flapping_trips, flapping_window)
    since_us = _time_bound(since, "since")
    until_us = _time_bound(until, "until")
    scratch = _scratch()
    scanned = [
        _Source(name, stream, since_us, until_us, scratch)
        for name, stream in sources
    ]
    aggregator = _aggregate(scanned, _breaker_matcher(breakers))
    start, end = _period_of(scanned, since_us, until_us)
    ordered = sorted(aggregator.transitions, key=itemgetter(0, 1))
    timeline = tuple(t for _, _, t in ordered)
    window = _Window(since_us, start, end, flapping_trips, flapping_window)
    return _summary(
        scanned,
        timeline,
        _breaker_summaries(aggregator, timeline, window),
        window,
        aggregator.events,
    )


def _check_flapping(flapping_trips: int, flapping_window: float) -> None:
    """Refuse flapping options the arithmetic cannot use."""
    if (
        isinstance(flapping_trips, bool)
        or not isinstance(flapping_trips, int)
        or flapping_trips < 1
    ):
        msg = f"flapping_trips must be an int >= 1 (got {flapping_trips!r})"
        raise ValueError(msg)
    if not 0 < flapping_window <= _MAX_WINDOW:
        msg = (
            f"flapping_window must be > 0 and <= {_MAX_WINDOW:.0e} seconds "
            f"(got {flapping_window!r})"
        )
        raise ValueError(msg)


def _aggregate(
    scanned: Sequence[_Source], matches: Callable[[str], bool]
) -> _Aggregator:
    """Feed the events of every source, merged in time order."""
    aggregator = _Aggregator(matches=matches)
    add = aggregator.add
    streams = [source.events() for source in scanned]
    # One file: its events in its order, as merging them would give.
    events = (
        streams[0]
        if len(streams) == 1
        else heapq.merge(*streams, key=itemgetter(0))
    )
    for event in events:
        add(event)
    return aggregator


def _period_of(
    scanned: Sequence[_Source], since: int | None, until: int | None
) -> tuple[int | None, int | None]:
    """The analysed period: the lines' time span, widened to the bounds.

    Widened to --since and --until when the log goes beyond them.
    """
    firsts = [s.first for s in scanned if s.first is not None]
    lasts = [s.last for s in scanned if s.last is not None]
    start = min(firsts) if firsts else None
    end = max(lasts) if lasts else None
    if since is not None and any(s.before_since for s in scanned):
        start = since
    if until is not None and any(s.after_until for s in scanned):
        end = until
    return start, end


@dataclass(frozen=True, slots=True)
class _Window:
    """The analysed period and the flapping rule, shared by all breakers."""

    since: int | None
    start: int | None
    end: int | None
    flapping_trips: int
    flapping_window: float


def _breaker_summaries(
    aggregator: _Aggregator,
    timeline: Sequence[Transition],
    window: _Window,
) -> dict[str, BreakerSummary]:
    """What happened to each breaker seen, sorted by name.

    A breaker seen only before --since appears when it was not closed then.
    """
    per_breaker: dict[str, list[Transition]] = {}
    for transition in timeline:
        per_breaker.setdefault(transition.breaker, []).append(transition)
    names = set(aggregator.counts) | {
        name
        for name, (_, state) in aggregator.before.items()
        if state != _CLOSED
    }
    return {
        name: _summarise_breaker(
            name,
            per_breaker.get(name, []),
            aggregator.counts.get(name, _Counts()),
            aggregator.before.get(name),
            window,
        )
        for name in sorted(names)
    }


def _summary(
    scanned: Sequence[_Source],
    timeline: tuple[Transition, ...],
    breakers: dict[str, BreakerSummary],
    window: _Window,
    events: int,
) -> Summary:
    """The :class:`Summary`, with what the sources hold.

    The "first" lines are taken from the files in time order, not in the
    order given.
    """
    in_time_order = sorted(scanned, key=_file_order)
    return Summary(
        lines=sum(s.lines for s in scanned),
        skipped=sum(s.skipped for s in scanned),
        skipped_examples=_first_examples(scanned),
        breakers=breakers,
        timeline=timeline,
        start_us=window.start,
        end_us=window.end,
        events=events,
        files=tuple(s.name for s in scanned),
        recognised=sum(s.recognised for s in scanned),
        usable=sum(s.usable for s in scanned),
        first_object=next(
            (s.first_object for s in in_time_order if s.first_object), None
        ),
        mention=next((s.mention for s in in_time_order if s.mention), None),
        first_bad_event=next(
            (s.first_bad_event for s in in_time_order if s.first_bad_event),
            None,
        ),
        problems=tuple(
            SkippedLine(s.name, s.lines + 1, s.problem)
            for s in scanned
            if s.problem is not None
        ),
    )


def _summarise_breaker(
    name: str,
    transitions: list[Transition],
    counts: _Counts,
    before: tuple[int, str] | None,
    window: _Window,
) -> BreakerSummary:
    initial: str | None = None
    begin = window.start
    if before is not None:
        initial = before[1]
        # The state is known at --since itself.
        begin = window.since if window.since is not None else window.start
    last_time = transitions[-1].time_us if transitions else begin
    finish = max(
        value
        for value in (window.end, last_time, begin, 0)
        if value is not None
    )
    if not transitions and initial is None:
        # No state change seen: breakers start closed; a rejection means
        # it is open (since an unknown time).
        final = _OPEN if counts.call_rejected else _CLOSED
        segments: list[Segment] = []
        if begin is not None and final == _CLOSED:
            segments = [Segment(begin, finish, final)]
        open_spans: list[int] = []
    else:
        segments = _segments(transitions, initial, begin, finish)
        final = transitions[-1].new_state if transitions else initial or ""
        open_spans = [
            s.end_us - s.start_us for s in segments if s.state == _OPEN
        ]
    trip_times = [t.time_us for t in transitions if t.is_trip]
    causes = Counter(t.cause for t in transitions if t.is_trip and t.cause)
    top = sorted(causes.items(), key=lambda item: (-item[1], item[0]))
    return BreakerSummary(
        name=name,
        trips=len(trip_times),
        time_open_total_s=sum(open_spans) / _US,
        longest_open_s=max(open_spans, default=0) / _US,
        final_state=final,
        rejected=sum(t.rejected for t in transitions),
        retries_scheduled=counts.retries_scheduled,
        retries_exhausted=counts.retries_exhausted,
        flapping=_flapping(
            trip_times, window.flapping_trips, window.flapping_window
        ),
        top_causes=tuple(Cause(c, n) for c, n in top[:_TOP_CAUSES]),
        call_rejected_events=counts.call_rejected,
        segments=tuple(segments),
    )


def _file_order(source: _Source) -> tuple[bool, int, str]:
    """Files in time order; those without any timestamp last, by name."""
    return (source.first is None, source.first or 0, source.name)


def _first_examples(scanned: Sequence[_Source]) -> tuple[SkippedLine, ...]:
    """The first skipped lines, files taken in time order (not argv order)."""
    examples = [
        example
        for source in sorted(scanned, key=_file_order)
        for example in source.examples
    ]
    return tuple(examples[:_EXAMPLES])
