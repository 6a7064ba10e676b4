"""What log analysis finds: event names, states, and the result objects.

Shared by the reader (:mod:`.read`), the aggregation (:mod:`.summary`)
and the reports (:mod:`.render`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from sage_resilience._logs.times import _iso
from sage_resilience._names import (
    CALL_REJECTED,
    CLOSED,
    HALF_OPEN,
    OPEN,
    RETRY_EXHAUSTED,
    RETRY_SCHEDULED,
    STATE_CHANGED,
)

# What the package re-exports (sage_resilience._logs): listed once, here.
__all__ = [
    "DEFAULT_HTML_OUTPUT",
    "EVENT_KEYS",
    "MAX_WINDOW",
    "TIME_KEYS",
    "BreakerSummary",
    "Cause",
    "KeysSeen",
    "Segment",
    "SkippedLine",
    "Summary",
    "Transition",
]

_EVENTS: Final = frozenset(
    {STATE_CHANGED, RETRY_SCHEDULED, RETRY_EXHAUSTED, CALL_REJECTED}
)

_CLOSED: Final = CLOSED
_OPEN: Final = OPEN
_HALF_OPEN: Final = HALF_OPEN

# Where a log keeps the event name and the time, in order of preference:
# structlog (event, timestamp), structlog's EventRenamer and
# python-json-logger (message), stdlib JSON formatters (msg, asctime),
# ECS (@timestamp), others (time, ts).
EVENT_KEYS: Final = ("event", "message", "msg")
#: Where ``logs summarize --format html`` writes without ``--output``.
DEFAULT_HTML_OUTPUT: Final = "resilience-report.html"
# The flapping window at most this many seconds (about 31 years): far
# beyond it, the window in µs no longer fits the arithmetic.
MAX_WINDOW: Final = 1e9
TIME_KEYS: Final = ("timestamp", "time", "ts", "@timestamp", "asctime")

#: The attributes a report's JSON shows, in its order: of a transition (in
#: the ``timeline``), of a breaker (before its ``top_causes``).
_TRANSITION_KEYS: Final = ("time", "breaker", "old_state", "new_state")
_BREAKER_KEYS: Final = (
    "trips",
    "time_open_total_s",
    "longest_open_s",
    "final_state",
    "rejected",
    "retries_scheduled",
    "retries_exhausted",
    "flapping",
)


def _entries(obj: object, names: tuple[str, ...]) -> dict[str, Any]:
    """``{name: obj.name}`` for each of *names*, in that order."""
    return {name: getattr(obj, name) for name in names}


@dataclass(frozen=True, slots=True)
class SkippedLine:
    """A line that could not be used, and why.

    Attributes:
        file: The file it is in (``-`` for stdin).
        line: Its 1-based line number in that file.
        reason: Why it was skipped, e.g. ``"not JSON"``.

    .. versionadded:: 0.1.0
    """

    file: str
    line: int
    reason: str


@dataclass(frozen=True, slots=True)
class KeysSeen:
    """The keys of one line, to say what a log holds instead of events.

    Attributes:
        file: The file it is in.
        line: Its 1-based line number.
        keys: Its first keys, in file order (at most 12).
        event_key: For a line naming a resilience event elsewhere than
            under :data:`EVENT_KEYS`, the key whose value is the name (None
            when it is only part of a value).
        reason: For an event line that was skipped, why.

    .. versionadded:: 0.1.0
    """

    file: str
    line: int
    keys: tuple[str, ...]
    event_key: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Transition:
    """One ``circuit_state_changed`` event in the analysed window.

    Attributes:
        time_us: Microseconds since the epoch (UTC).
        breaker: The breaker's name.
        old_state: The state it left (None if the event did not say).
        new_state: The state it entered.
        cause: For a trip, the normalised root cause; else None.
        rejected: ``rejected_while_open`` (on leaving open), else 0.

    .. versionadded:: 0.1.0
    """

    time_us: int
    breaker: str
    old_state: str | None
    new_state: str
    cause: str | None = None
    rejected: int = 0

    @property
    def time(self) -> str:
        """ISO-8601 UTC time of the transition."""
        return _iso(self.time_us)

    @property
    def is_trip(self) -> bool:
        """Whether this is a trip: into open from closed or half-open."""
        return self.new_state == _OPEN and self.old_state in {
            _CLOSED,
            _HALF_OPEN,
        }

    def to_json(self) -> dict[str, Any]:
        """The report's ``timeline`` entry."""
        return _entries(self, _TRANSITION_KEYS)


@dataclass(frozen=True, slots=True)
class Cause:
    """A root cause and how many trips it caused."""

    cause: str
    count: int


@dataclass(frozen=True, slots=True)
class Segment:
    """A stretch of time a breaker spent in one state (for timelines)."""

    start_us: int
    end_us: int
    state: str


@dataclass(frozen=True, slots=True)
class BreakerSummary:
    """What happened to one breaker.

    Attributes:
        name: The breaker's name.
        trips: Transitions into open from closed or half-open.
        time_open_total_s: Seconds spent open (not half-open), counted up to
            the end of the log for a circuit still open.
        longest_open_s: The longest open period, in seconds.
        final_state: The state at the end of the log.
        rejected: Sum of ``rejected_while_open``.
        retries_scheduled: ``retry_scheduled`` events.
        retries_exhausted: ``retry_exhausted`` events.
        flapping: Whether it tripped ``flapping_trips`` times within
            ``flapping_window`` seconds.
        top_causes: Up to 5 root causes of its trips, most frequent first.
        call_rejected_events: ``call_rejected`` events (one per open
            period; the rest are counted in ``rejected``).
        segments: Its states over the analysed period, in time order.

    .. versionadded:: 0.1.0
    """

    name: str
    trips: int
    time_open_total_s: float
    longest_open_s: float
    final_state: str
    rejected: int
    retries_scheduled: int
    retries_exhausted: int
    flapping: bool
    top_causes: tuple[Cause, ...]
    call_rejected_events: int = 0
    segments: tuple[Segment, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The report's per-breaker object."""
        return {
            **_entries(self, _BREAKER_KEYS),
            "top_causes": [
                _entries(c, ("cause", "count")) for c in self.top_causes
            ],
        }


@dataclass(frozen=True, slots=True)
class Summary:
    """The result of :func:`summarize`.

    Attributes:
        lines: Lines read, in all files (filters do not change it).
        skipped: Lines that could not be used.
        skipped_examples: The first few of them (at most 5).
        breakers: Name -> what happened to it, sorted by name.
        timeline: Transitions of every breaker, in time order.
        start_us: Start of the analysed period (µs since the epoch), or None
            when no line had a timestamp.
        end_us: End of the analysed period, or None.
        events: Resilience events found in the analysed period.
        files: The names of the sources, in the order given.
        recognised: Lines naming a resilience event under one of
            :data:`EVENT_KEYS`, usable or not, before the filters.
        usable: Those of them complete enough to be used (time, breaker,
            state), before the filters.
        first_object: The keys of the first JSON object of the input
            (files in time order), or None.
        mention: The first line naming a resilience event other than as
            an event key's value, or None.
        first_bad_event: The first line naming an event that was skipped.
        problems: Files whose reading stopped early (damaged gzip, a
            decompression bomb), with where and why.

    .. versionadded:: 0.1.0
    """

    lines: int
    skipped: int
    skipped_examples: tuple[SkippedLine, ...]
    breakers: dict[str, BreakerSummary]
    timeline: tuple[Transition, ...]
    start_us: int | None = None
    end_us: int | None = None
    events: int = 0
    files: tuple[str, ...] = ()
    recognised: int = 0
    usable: int = 0
    first_object: KeysSeen | None = None
    mention: KeysSeen | None = None
    first_bad_event: KeysSeen | None = None
    problems: tuple[SkippedLine, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``logs summarize --format json``.

        Returns:
            ``{lines, skipped, skipped_examples, breakers, timeline}``.
        """
        several = len(self.files) > 1
        examples: list[dict[str, Any]] = []
        for example in self.skipped_examples:
            entry: dict[str, Any] = {
                "line": example.line,
                "reason": example.reason,
            }
            if several:
                entry["file"] = example.file
            examples.append(entry)
        return {
            "lines": self.lines,
            "skipped": self.skipped,
            "skipped_examples": examples,
            "breakers": {
                name: summary.to_json()
                for name, summary in self.breakers.items()
            },
            "timeline": [t.to_json() for t in self.timeline],
        }
