"""Structured log analysis: ``sage-resilience logs summarize``.

Reads JSON-lines logs (structlog's ``JSONRenderer`` output, structlog with
``EventRenamer``, python-json-logger, ecs-logging, stdlib JSON formatters:
the event name under one of :data:`EVENT_KEYS`, the time under one of
:data:`TIME_KEYS`; mixed with any other lines of the application) and
answers "which dependency failed, when, for how long, why, and how many
calls did the breaker shed?".

Design, because logs can be large:

* **Streaming.** Files are read in blocks of 1 MiB and split into lines; no
  line is kept once looked at. Memory grows with the number of breakers and
  transitions only (plus a bounded window used to drop duplicated retry
  events).
* **Cheap pre-filter.** Only lines naming one of the resilience events
  (``"circuit_state_changed"``, ``"retry_scheduled"``, ``"retry_exhausted"``,
  ``"call_rejected"``) are parsed with :func:`json.loads`. Every other line is
  checked for the shape of a JSON object (``{...}``) and its timestamp is
  read with a substring search, so the log's time span is known without
  parsing it (fixed-width times are compared as bytes: _SortableTime).
* **Hostile input.** Whatever a line holds (nesting beyond the recursion
  limit, 5000-digit numbers, times outside the years 1 to 9999, bytes that
  are not UTF-8, lone surrogates), it is used, ignored or skipped with a
  reason; a gzip file expanding more than 100 times is cut short.
* **Merging.** Several files are merged in time order (:func:`heapq.merge`
  over one lazy event stream per file), so the order of the files on the
  command line does not matter and a duplicated event found in two
  overlapping files is counted once. Transitions are sorted by time at the
  end, so lines out of order inside a file are fine too.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import heapq
import html
import json
import math
import os
import re
import sys
import zlib
from collections import Counter, deque
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from operator import itemgetter
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, NoReturn

from sage_resilience._redact import redact

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Sequence

__all__ = [
    "DEFAULT_HTML_OUTPUT",
    "EVENT_KEYS",
    "TIME_KEYS",
    "BreakerSummary",
    "Cause",
    "KeysSeen",
    "Segment",
    "SkippedLine",
    "Summary",
    "Transition",
    "add_summarize_arguments",
    "normalise_cause",
    "parse_time",
    "parse_timestamp",
    "render_html",
    "render_table",
    "summarize",
    "summarize_command",
]

DEFAULT_HTML_OUTPUT: Final = "resilience-report.html"

STATE_CHANGED: Final = "circuit_state_changed"
RETRY_SCHEDULED: Final = "retry_scheduled"
RETRY_EXHAUSTED: Final = "retry_exhausted"
CALL_REJECTED: Final = "call_rejected"
_EVENTS: Final = frozenset(
    {STATE_CHANGED, RETRY_SCHEDULED, RETRY_EXHAUSTED, CALL_REJECTED}
)

_CLOSED: Final = "closed"
_OPEN: Final = "open"
_HALF_OPEN: Final = "half-open"

# Reading: block size (decompressed), the longest line kept (a longer one
# is skipped without being held in memory), how many examples of skipped
# lines each file keeps.
_BLOCK: Final = 1 << 20
# Compressed bytes read at a time from a gzip file.
_GZIP_READ: Final = 1 << 16
_MAX_LINE: Final = 8 << 20
# Decompression bomb guard: past _GZIP_FREE decompressed bytes, a gzip
# file may expand at most _GZIP_MAX_RATIO times (see _Source._gunzip).
_GZIP_FREE: Final = 4 << 20
_GZIP_MAX_RATIO: Final = 100
_EXAMPLES: Final = 5
_TOP_CAUSES: Final = 5

# Duplicated retry and rejection events (log shippers resend lines, rotated
# files overlap) are recognised within this many microseconds of the newest
# event seen, and always among the last _DEDUP_KEEP such events (a copy a
# few lines away, however old its timestamp), remembering at most
# _DEDUP_MAX of them: bounded memory.
_DEDUP_HORIZON_US: Final = 120_000_000
_DEDUP_KEEP: Final = 1_000
_DEDUP_MAX: Final = 100_000
# The flapping window at most this many seconds (about 31 years): far
# beyond it, the window in µs no longer fits the arithmetic.
_MAX_WINDOW: Final = 1e9

_US: Final = 1_000_000
_EPOCH: Final = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_ONE_US: Final = dt.timedelta(microseconds=1)

# Numbers below this are durations, not epoch timestamps (2001-09-09).
_EPOCH_MIN: Final = 1e9
# Epoch numbers from here on are no timestamps in any unit (nanoseconds
# past the year 5138).
_EPOCH_MAX: Final = 1e20
# The times a datetime can hold (years 1 to 9999), in µs since the epoch:
# anything outside is refused on reading, so no later step can overflow.
_MIN_US: Final = (dt.datetime.min.replace(tzinfo=dt.UTC) - _EPOCH) // _ONE_US
_MAX_US: Final = (dt.datetime.max.replace(tzinfo=dt.UTC) - _EPOCH) // _ONE_US

# Where a log keeps the event name and the time, in order of preference:
# structlog (event, timestamp), structlog's EventRenamer and
# python-json-logger (message), stdlib JSON formatters (msg, asctime),
# ECS (@timestamp), others (time, ts).
EVENT_KEYS: Final = ("event", "message", "msg")
TIME_KEYS: Final = ("timestamp", "time", "ts", "@timestamp", "asctime")


# ---------------------------------------------------------------------------
# Timestamps


_NUMERIC = re.compile(r"[-+]?\d+(?:\.\d*)?|[-+]?\.\d+")
_RELATIVE_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_RELATIVE = re.compile(r"(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _epoch_to_us(value: float) -> int | None:
    """Epoch seconds, ms, µs or ns (told apart by magnitude) to µs."""
    # Compared before any float conversion: a 4000-digit int is refused,
    # not an OverflowError.
    if not _EPOCH_MIN <= value < _EPOCH_MAX:  # also refuses NaN
        return None
    if value < 1e11:
        return round(value * _US)
    if value < 1e14:
        return round(value * 1_000)
    if value < 1e17:
        return round(value)
    return round(value / 1_000)


def _numeric_text_to_us(text: str) -> int | None:
    """Epoch number written as text, without float rounding of the seconds."""
    whole, _, frac = text.partition(".")
    whole_value = int(whole) if whole.lstrip("+-") else 0
    if whole_value < _EPOCH_MIN or whole_value >= 1e11 or not frac:
        return _epoch_to_us(float(text))
    # Seconds with a fraction: exact to the microsecond.
    return whole_value * _US + int((frac + "000000")[:6])


def _iso_to_us(text: str) -> int | None:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return _in_range((moment - _EPOCH) // _ONE_US)


def _in_range(us: int) -> int | None:
    """*us* if a datetime can hold it (years 1 to 9999 UTC), else None."""
    return us if _MIN_US <= us <= _MAX_US else None


def parse_timestamp(value: object) -> int | None:
    """Read a log timestamp as microseconds since the epoch (UTC).

    Accepts ISO-8601 with or without a zone (naive means UTC, ``Z`` is
    understood, the fraction may follow a comma as in python logging's
    ``asctime``: ``2026-12-02 11:02:20,123``) and epoch numbers in seconds,
    milliseconds, microseconds or nanoseconds (told apart by magnitude), as
    numbers or as text. Numbers before 2001-09-09 are refused: such a
    ``time`` key holds a duration. So are times outside the years 1 to
    9999.

    Args:
        value: The value of a time key (``timestamp``, ``time``, ``ts``,
            ``@timestamp`` or ``asctime``).

    Returns:
        Microseconds since 1970-01-01T00:00:00Z, or None if *value* is not
        a timestamp.

    .. versionadded:: 0.1.0
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return _epoch_to_us(value)
    if isinstance(value, bytes):
        try:
            value = value.decode()
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str):
        return None
    text = value.strip()
    if not text or len(text) > 64:
        return None
    if _NUMERIC.fullmatch(text):
        return _numeric_text_to_us(text)
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    return _iso_to_us(text)


def parse_time(value: str, *, now: float | None = None) -> int:
    """Parse a ``--since``/``--until`` value to microseconds since the epoch.

    Accepts everything :func:`parse_timestamp` does, ``now``, and a time
    relative to now: ``30m``, ``2h``, ``1d``, ``1h30m`` (units s, m, h, d,
    w), optionally followed by ``ago``.

    Args:
        value: The text given on the command line.
        now: Epoch seconds to count relative times from (default: now).

    Returns:
        Microseconds since the epoch.

    Raises:
        ValueError: *value* is not a time, or one outside the years 1 to
            9999.

    .. versionadded:: 0.1.0
    """
    text = value.strip().lower()
    current = dt.datetime.now(dt.UTC).timestamp() if now is None else now
    text = text.removesuffix("ago").strip()
    if text == "now":
        return round(current * _US)
    if len(text) <= 64 and _RELATIVE.fullmatch(text):
        seconds = sum(
            float(number) * _UNIT_SECONDS[unit]
            for number, unit in _RELATIVE_PART.findall(text)
        )
        moment = (current - seconds) * _US
        if not math.isfinite(moment) or _in_range(round(moment)) is None:
            msg = f"{value[:80]!r} is before the year 1"
            raise ValueError(msg)
        return round(moment)
    parsed = parse_timestamp(value)
    if parsed is None:
        msg = (
            f"not a time: {value[:80]!r} (use ISO-8601 such as "
            "2026-11-27T22:00:00Z, epoch seconds, or a relative time "
            "such as 2h or 30m; years 1 to 9999)"
        )
        raise ValueError(msg)
    return parsed


def _iso(us: int) -> str:
    """Microseconds since the epoch as ISO-8601 UTC with a ``Z``."""
    moment = _EPOCH + dt.timedelta(microseconds=us)
    spec = "seconds" if moment.microsecond == 0 else "microseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def _moment(us: int) -> dt.datetime:
    return _EPOCH + dt.timedelta(microseconds=us)


def _canonical(us: int) -> bytes:
    """The 27-byte ``YYYY-MM-DDTHH:MM:SS.ffffffZ`` form of *us*.

    Timestamps written in this one shape (structlog's ``TimeStamper(fmt=
    "iso", utc=True)``) compare as bytes in time order, which lets the hot
    loop compare them without parsing. The year is always four digits
    (``strftime("%Y")`` writes year 500 as ``500`` on glibc, which would
    compare after ``2026``).
    """
    m = _EPOCH + dt.timedelta(microseconds=us)
    return (
        f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:"
        f"{m.minute:02d}:{m.second:02d}.{m.microsecond:06d}Z"
    ).encode()


def _sortable_bounds(
    shape: _SortableTime, since: int | None, until: int | None
) -> tuple[bytes, bytes]:
    """The bytes bounding the time window for values of *shape*.

    A value v is inside exactly when lo <= v <= hi: *since* is rounded up
    to the shape's resolution, *until* down.
    """
    unit = shape.unit_us
    last = _MAX_US // unit * unit
    lo = (
        b""
        if since is None
        else shape.render(min(-(-since // unit) * unit, last))
    )
    hi = b"\x7f" if until is None else shape.render(until // unit * unit)
    return lo, hi


# ---------------------------------------------------------------------------
# Root causes


_CAUSE_RULES: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (
        re.compile(
            r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-"
            r"[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"
        ),
        "<uuid>",
    ),
    # [::1]:5432, 10.0.0.1:5432, ::1, fe80::1, full eight-group IPv6
    (re.compile(r"\[[0-9a-fA-F:.%\w]*:[0-9a-fA-F:.%\w]*\](?::\d+)?"), "<ip>"),
    (re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b"), "<ip>"),
    (
        re.compile(
            r"(?<![\w:])(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}(?![\w:])"
            r"|(?<![\w:])[0-9a-fA-F:]*::[0-9a-fA-F:]*(?![\w:])"
        ),
        "<ip>",
    ),
    (re.compile(r"\b0[xX][0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{8,}\b"), "<hex>"),
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
# Results


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
        """The contract's ``timeline`` entry."""
        return {
            "time": self.time,
            "breaker": self.breaker,
            "old_state": self.old_state,
            "new_state": self.new_state,
        }


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
        """The contract's per-breaker object."""
        return {
            "trips": self.trips,
            "time_open_total_s": self.time_open_total_s,
            "longest_open_s": self.longest_open_s,
            "final_state": self.final_state,
            "rejected": self.rejected,
            "retries_scheduled": self.retries_scheduled,
            "retries_exhausted": self.retries_exhausted,
            "flapping": self.flapping,
            "top_causes": [
                {"cause": c.cause, "count": c.count} for c in self.top_causes
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
        """The JSON object of ``logs summarize --format json`` (contract 10).

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


# ---------------------------------------------------------------------------
# Reading one source


# An event handed from a file scanner to the merger:
# (time_us, kind, breaker, parsed object). kind is one of _EVENTS, or _PRE
# for a transition before --since (it tells the state at the window start).
_PRE: Final = "pre"
_Event = tuple[int, str, str, dict[str, Any]]

_KEY_RE = re.compile(
    rb'"(timestamp|time|ts|@timestamp|asctime)"\s*:\s*'
    rb'("[^"]{0,64}"|[-+0-9.eE]{1,64})'
)
_TIME_KEYS_BYTES: Final = tuple(key.encode() for key in TIME_KEYS)


def _raw_time_us(line: bytes) -> int | None:
    """The time of a line not worth a full parse, in µs, or None.

    The first of :data:`TIME_KEYS` whose value is a time, as for a parsed
    line (:func:`_object_timestamp`).
    """
    i = line.find(b'"timestamp": "')
    if i >= 0:
        # structlog's JSONRenderer: the first key of the list, so a value
        # that parses is the answer.
        j = line.find(b'"', i + 14, i + 80)
        if j >= 0:
            us = parse_timestamp(line[i + 14 : j])
            if us is not None:
                return us
    # Compact separators, the other keys, numbers: the slow path.
    found: dict[bytes, bytes] = {}
    for match in _KEY_RE.finditer(line):
        found.setdefault(match.group(1), match.group(2))
    if not found:
        return None
    for key in _TIME_KEYS_BYTES:
        raw = found.get(key)
        if raw is not None:
            us = parse_timestamp(raw.strip(b'"'))
            if us is not None:
                return us
    return None


@dataclass(frozen=True, slots=True)
class _SortableTime:
    """A fixed-width time format whose bytes sort in time order.

    Lines whose time has such a shape are compared as bytes in the hot
    loop, like structlog's canonical timestamps, and only a block's
    extremes are parsed. For these lines, which only bound the analysed
    period, the first shape found decides, not the order of TIME_KEYS
    (looking for every other key costs more than the whole rest).
    """

    marker: bytes  # the key, the colon and the opening quote
    width: int  # the value's length
    skeleton: bytes  # the value without its digits
    tail: bytes  # what the value ends with (a fixed zone)
    unit_us: int  # its resolution
    template: str  # the value, from the fields of a datetime

    def render(self, us: int) -> bytes:
        """The value of this shape for *us* (a multiple of unit_us)."""
        m = _moment(us)
        return self.template.format(
            y=m.year,
            mo=m.month,
            d=m.day,
            h=m.hour,
            mi=m.minute,
            s=m.second,
            ms=m.microsecond // 1000,
            us=m.microsecond,
        ).encode()


_SORTABLE: Final = (
    # python logging's asctime, naive (read as UTC): python-json-logger.
    _SortableTime(
        marker=b'"asctime": "',
        width=23,
        skeleton=b"-- ::,",
        tail=b"",
        unit_us=1000,
        template="{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d},{ms:03d}",
    ),
    # ECS (ecs-logging): milliseconds and Z.
    _SortableTime(
        marker=b'"@timestamp":"',
        width=24,
        skeleton=b"--T::.Z",
        tail=b"Z",
        unit_us=1000,
        template="{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{ms:03d}Z",
    ),
    # python-json-logger's timestamp=True: microseconds and +00:00.
    _SortableTime(
        marker=b'"timestamp": "',
        width=32,
        skeleton=b"--T::.+:",
        tail=b"+00:00",
        unit_us=1,
        template=(
            "{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{us:06d}+00:00"
        ),
    ),
)
_DIGITS: Final = b"0123456789"


def _object_timestamp(obj: dict[str, Any]) -> tuple[bool, int | None]:
    """(has a time key, the first time among them in µs) of a parsed line.

    A key whose value is no time (``"time": 0.25``, a duration) does not
    hide the next one.
    """
    has_key = False
    for key in TIME_KEYS:
        if key in obj:
            has_key = True
            us = parse_timestamp(obj[key])
            if us is not None:
                return True, us
    return has_key, None


def _event_name(obj: dict[str, Any]) -> str | None:
    """The resilience event a parsed line is, or None.

    The first of :data:`EVENT_KEYS` holding one of the event names: ECS
    logs keep an object under ``event``, python-json-logger and
    structlog's ``EventRenamer("message")`` the name under ``message``.
    """
    for key in EVENT_KEYS:
        value = obj.get(key)
        if isinstance(value, str) and value in _EVENTS:
            return value
    return None


def _classify_bad_line(line: bytes) -> str | None:
    """Why a line that is not ``{...}`` is skipped (None: ignore it)."""
    text = line.strip()
    if not text:
        return None
    if text[:1] == b"{":
        return "truncated JSON"
    if text[:1] in b'["-0123456789tfn':
        try:
            json.loads(text)
        except RecursionError:
            return "JSON nested too deeply"
        except ValueError:
            return "not JSON"
        return "not a JSON object"
    return "not JSON"


def _loads(line: bytes) -> tuple[Any, str | None]:
    """(the parsed line, None) or (None, why it is not JSON).

    Whatever the line holds: nesting deeper than the interpreter's
    recursion limit, a number of more than 4300 digits, bytes that are
    not UTF-8.
    """
    try:
        return json.loads(line), None
    except RecursionError:
        return None, "JSON nested too deeply"
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except json.JSONDecodeError:
        return None, "invalid JSON"
    except ValueError:  # int("9" * 5000): the int-to-str digits limit
        return None, "invalid JSON (a number too long)"


def _safe_text(text: str) -> str:
    r"""*text* with lone surrogates written as ``\udcxx`` escapes.

    JSON escapes such as ``"\ud800"`` and file names that are not UTF-8
    give strings that cannot be written out as UTF-8 (a
    ``UnicodeEncodeError`` at the very end, when printing the report).
    """
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# At most this many keys of a line are kept for the "no event" message.
_KEYS_SHOWN: Final = 12
# How many lines shaped like {...} are parsed, per file, to find the first
# JSON object, among how many first lines (a log of truncated lines or of
# plain text is not searched to its end).
_OBJECT_TRIES: Final = 20
_OBJECT_LINES: Final = 10_000
# Breaker names, states and counts beyond these are garbage, not events.
_MAX_NAME: Final = 512
_MAX_STATE: Final = 64
_MAX_COUNT: Final = 2**53


def _keys_seen(
    file: str,
    lineno: int,
    obj: dict[str, Any],
    event_key: str | None = None,
    reason: str | None = None,
) -> KeysSeen:
    keys = tuple(_safe_text(str(key)[:60]) for key in list(obj)[:_KEYS_SHOWN])
    return KeysSeen(file, lineno, keys, event_key, reason)


class _Source:
    """Scans one file: counts lines, keeps skipped examples, yields events.

    The time filter is applied here, because the log's time span (``first``
    and ``last``) only counts lines inside it.
    """

    def __init__(
        self,
        name: str,
        stream: IO[bytes],
        since: int | None,
        until: int | None,
    ) -> None:
        self.name = _safe_text(name)
        self.stream = stream
        self.since = since
        self.until = until
        self.lines = 0
        self.skipped = 0
        self.examples: list[SkippedLine] = []
        self.first: int | None = None  # earliest timestamp in the window
        self.last: int | None = None  # latest timestamp in the window
        self.before_since = False  # a line older than --since was seen
        self.after_until = False  # a line newer than --until was seen
        # Canonical timestamps in the window, compared as bytes.
        # (with the closing quote, as the hot loop slices them).
        self._lo = b"" if since is None else _canonical(since) + b'"'
        self._hi = b"\x7f" if until is None else _canonical(until) + b'"'
        # The same for the other sortable shapes: (shape, lo, hi), and the
        # block's largest and smallest value of each.
        self._sortable = [
            (shape, *_sortable_bounds(shape, since, until))
            for shape in _SORTABLE
        ]
        self._extremes = [[b"", b"\x7f"] for _ in _SORTABLE]
        # What the file holds, for the message when no event is found.
        self.recognised = 0  # lines naming an event under an event key
        self.usable = 0  # ...and complete (before --since/--breaker)
        self.first_object: KeysSeen | None = None
        self.mention: KeysSeen | None = None  # an event name elsewhere
        self.first_bad_event: KeysSeen | None = None
        self._object_tries = 0
        # Why reading stopped early (damaged gzip, decompression bomb).
        self.problem: str | None = None

    # -- skipped lines ----------------------------------------------------

    def _skip(self, lineno: int, reason: str) -> None:
        self.skipped += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(SkippedLine(self.name, lineno, reason))

    def _skip_event(
        self, lineno: int, reason: str, obj: dict[str, Any]
    ) -> None:
        """Skip a line that names an event but cannot be used."""
        self._skip(lineno, reason)
        if self.first_bad_event is None:
            self.first_bad_event = _keys_seen(
                self.name, lineno, obj, reason=reason
            )

    # -- the log's time span ------------------------------------------------

    def _see(self, us: int) -> bool:
        """Note a line's time; whether it lies inside the time window."""
        if self.since is not None and us < self.since:
            self.before_since = True
            return False
        if self.until is not None and us > self.until:
            self.after_until = True
            return False
        if self.first is None or us < self.first:
            self.first = us
        if self.last is None or us > self.last:
            self.last = us
        return True

    def _see_line(self, line: bytes) -> None:
        us = _raw_time_us(line)
        if us is not None:
            self._see(us)

    # -- what the file holds --------------------------------------------------

    def _look_for_object(self, lines: list[bytes], lineno: int) -> None:
        """Keep the keys of the first line that is a JSON object."""
        for line in lines:
            lineno += 1
            if self._object_tries >= _OBJECT_TRIES:
                return
            stripped = line.strip()
            if stripped[:1] != b"{" or stripped[-1:] != b"}":
                continue
            self._object_tries += 1
            obj, _ = _loads(stripped)
            if isinstance(obj, dict):
                self.first_object = _keys_seen(self.name, lineno, obj)
                return

    def _note_mention(self, obj: dict[str, Any], lineno: int) -> None:
        """A line naming an event, but not under an event key."""
        event_key = next(
            (
                str(key)
                for key, value in obj.items()
                if isinstance(value, str) and value in _EVENTS
            ),
            None,
        )
        self.mention = _keys_seen(self.name, lineno, obj, event_key)

    # -- reading ------------------------------------------------------------

    def _blocks(self) -> Iterator[bytes]:
        """Decompressed blocks of the stream (gzip told by magic bytes).

        No block is referenced from here while the generator is paused:
        with many files merged, each paused reader would otherwise hold one.
        """
        read = self.stream.read
        pending = [read(_BLOCK)]
        while pending[0] and len(pending[0]) < 2:
            more = read(_BLOCK)
            if not more:
                break
            pending[0] += more
        if pending[0][:2] == b"\x1f\x8b":
            yield from self._gunzip(pending.pop())
            return
        while pending[0]:
            yield pending.pop()
            pending.append(read(_BLOCK))

    def _gunzip(self, data: bytes) -> Iterator[bytes]:
        """Inflate gzip members one after the other, a block at a time.

        Stops at a decompression bomb: once more than ``_GZIP_FREE`` bytes
        came out, the output may be at most ``_GZIP_MAX_RATIO`` times the
        compressed input used so far (logs compress 5 to 20 times; deflate
        reaches 1032 times on a run of one byte).
        """
        inflater = zlib.decompressobj(wbits=31)
        started = False
        consumed = produced = 0
        while True:
            if not data:
                data = self.stream.read(_GZIP_READ)
                if not data:
                    break
            try:
                out = [inflater.decompress(data, _BLOCK)]
            except zlib.error as exc:
                self.problem = f"corrupt gzip data ({exc})"
                return
            rest = inflater.unconsumed_tail
            if inflater.eof:
                rest = inflater.unused_data
            consumed += len(data) - len(rest)
            produced += len(out[0])
            if produced > _GZIP_FREE and produced > _GZIP_MAX_RATIO * consumed:
                self.problem = (
                    f"gzip data expanding more than {_GZIP_MAX_RATIO} times "
                    "(a decompression bomb?): the rest of the file is not "
                    "read"
                )
                return
            started = True
            yield out.pop()
            if inflater.eof:
                data = rest.lstrip(b"\0")
                consumed += len(rest) - len(data)
                inflater = zlib.decompressobj(wbits=31)
                started = False
            else:
                data = rest
        if started and not inflater.eof:
            self.problem = "truncated gzip data"

    def events(self) -> Iterator[_Event]:
        """The resilience events of this source, in file order."""
        tail = b""
        discarding = False  # inside a line longer than _MAX_LINE
        for block in self._blocks():
            if discarding:
                newline = block.find(b"\n")
                if newline < 0:
                    continue
                block = block[newline + 1 :]  # noqa: PLW2901
                discarding = False
            if tail:
                block = tail + block  # noqa: PLW2901
            cut = block.rfind(b"\n")
            if cut < 0:
                tail = block
                if len(tail) > _MAX_LINE:
                    self.lines += 1
                    self._skip(self.lines, "line too long")
                    tail = b""
                    discarding = True
                continue
            tail = block[cut + 1 :]
            found = self._scan(block[:cut].split(b"\n"))
            block = b""  # noqa: PLW2901 (not held while paused)
            yield from found
            if len(tail) > _MAX_LINE:
                self.lines += 1
                self._skip(self.lines, "line too long")
                tail = b""
                discarding = True
        if tail:
            yield from self._scan([tail])
        if self.problem is not None:
            self._skip(self.lines + 1, self.problem)

    def _scan(self, lines: list[bytes]) -> list[_Event]:
        """Look at each line of a block once (the hot loop).

        Lines naming a resilience event are parsed. Of the others, only the
        shape (``{...}``) and the timestamp are looked at; a timestamp in
        structlog's canonical form (``"timestamp": "...Z"``, 27 characters)
        is compared as bytes and only the block's extremes are parsed.
        """
        found: list[_Event] = []
        lineno = self.lines
        if (
            self.first_object is None
            and self._object_tries < _OBJECT_TRIES
            and lineno < _OBJECT_LINES
        ):
            self._look_for_object(lines[: _OBJECT_LINES - lineno], lineno)
        self.lines += len(lines)
        lo, hi = self._lo, self._hi
        top = b""  # the largest canonical timestamp in the window
        bottom = b"\x7f"  # the smallest one
        for line in lines:
            lineno += 1
            if line[:1] != b"{" or line[-1:] != b"}":
                line = line.strip()  # noqa: PLW2901
                if line[:1] != b"{" or line[-1:] != b"}":
                    reason = _classify_bad_line(line)
                    if reason is not None:
                        self._skip(lineno, reason)
                    continue
            if (
                b'"circuit_state_changed"' in line
                or b'"retry_' in line
                or b'"call_rejected"' in line
            ):
                event = self._parse(line, lineno)
                if event is not None:
                    found.append(event)
                continue
            i = line.find(b'"timestamp": "')
            # The value and its closing quote: 28 bytes when canonical.
            raw = line[i + 14 : i + 42] if i >= 0 else b""
            if (
                len(raw) == 28
                and raw[27] == 34  # "
                and raw[26] == 90  # Z
                and raw[19] == 46  # .
                and raw[10] == 84  # T
            ):
                if raw < lo:
                    self.before_since = True
                elif raw > hi:
                    self.after_until = True
                else:
                    # Plain comparisons: max()/min() calls cost more here.
                    if raw > top:  # noqa: PLR1730
                        top = raw
                    if raw < bottom:  # noqa: PLR1730
                        bottom = raw
            else:
                self._see_sortable(line)
        extremes = [(top, bottom)]
        for pair in self._extremes:
            extremes.append((pair[0], pair[1]))
            pair[0], pair[1] = b"", b"\x7f"
        for raw in (value for pair in extremes for value in pair):
            if raw in {b"", b"\x7f"}:
                continue
            us = parse_timestamp(raw.rstrip(b'"'))
            if us is None:
                # Shaped like a timestamp but not one: count exactly.
                self._rescan_times(lines)
                break
            self._see(us)
        return found

    def _see_sortable(self, line: bytes) -> None:
        """A line's time by the shapes of _SORTABLE, else exactly."""
        for index, (shape, lo, hi) in enumerate(self._sortable):
            i = line.find(shape.marker)
            if i < 0:
                continue
            start = i + len(shape.marker)
            end = start + shape.width
            raw = line[start:end]
            if (
                line[end : end + 1] != b'"'
                or len(raw) != shape.width
                or raw[4] != 45  # -
                or raw.translate(None, _DIGITS) != shape.skeleton
                or not raw.endswith(shape.tail)
            ):
                break
            if raw < lo:
                self.before_since = True
            elif raw > hi:
                self.after_until = True
            else:
                pair = self._extremes[index]
                pair[0] = max(pair[0], raw)
                pair[1] = min(pair[1], raw)
            return
        self._see_line(line)

    def _rescan_times(self, lines: list[bytes]) -> None:
        for line in lines:
            stripped = line.strip()
            if stripped[:1] == b"{" and stripped[-1:] == b"}":
                self._see_line(stripped)

    def _parse(self, line: bytes, lineno: int) -> _Event | None:
        """Parse a line that names a resilience event.

        Whatever the line holds, the answer is an event, an ordinary line,
        or a skipped line with its reason: never an exception.
        """
        obj, problem = _loads(line)
        if problem is not None:
            self._skip(lineno, problem)
            return None
        if not isinstance(obj, dict):
            self._skip(lineno, "not a JSON object")
            return None
        has_key, us = _object_timestamp(obj)
        kind = _event_name(obj)
        if kind is None:
            # Named an event in a message: an ordinary line.
            if self.mention is None:
                self._note_mention(obj, lineno)
            if us is not None:
                self._see(us)
            return None
        self.recognised += 1
        if us is None:
            self._skip_event(
                lineno,
                "unparsable timestamp" if has_key else "missing timestamp",
                obj,
            )
            return None
        breaker = obj.get("breaker")
        if not isinstance(breaker, str) or not breaker:
            self._skip_event(lineno, f"{kind} without a breaker", obj)
            return None
        if len(breaker) > _MAX_NAME:
            self._skip_event(
                lineno, f"{kind} with a breaker name too long", obj
            )
            return None
        if not breaker.isascii():
            breaker = _safe_text(breaker)
        if kind == STATE_CHANGED:
            new_state = obj.get("new_state")
            if _state(new_state) is None:
                self._skip_event(
                    lineno,
                    f"{kind} without a new_state"
                    if new_state is None or new_state == ""
                    else f"{kind} with an invalid new_state",
                    obj,
                )
                return None
            if _count(obj.get("rejected_while_open")) is None:
                self._skip_event(
                    lineno,
                    f"{kind} with rejected_while_open out of range",
                    obj,
                )
                return None
        self.usable += 1
        if not self._see(us):
            if (
                kind == STATE_CHANGED
                and self.since is not None
                and us < self.since
            ):
                return (us, _PRE, breaker, obj)
            return None
        return (us, kind, breaker, obj)


def _state(value: object) -> str | None:
    """A state name as the contract spells it (``half-open``), or None."""
    if not isinstance(value, str) or len(value) > _MAX_STATE:
        return None
    text = value.strip().lower().replace("_", "-").replace(" ", "-")
    if not text:
        return None
    return sys.intern(_safe_text(text))


def _count(value: object) -> int | None:
    """A count such as ``rejected_while_open``: None when absurd.

    Missing, negative or non-numeric counts are 0 (lenient, as before);
    a count beyond 2**53 or not finite is no count at all: the line is
    skipped (and no later sum or ``f"{n:,}"`` meets a 5000-digit int).
    """
    if value is None or isinstance(value, bool):
        return 0
    if isinstance(value, int | float):
        if not -_MAX_COUNT <= value <= _MAX_COUNT:  # also refuses NaN
            return None
        return max(int(value), 0)
    return 0


def _hashable(value: object) -> object:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    try:
        return repr(value)
    except (RecursionError, ValueError):
        # Nested too deep for repr here: never a duplicate of anything.
        return object()


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
        key = hash(
            (
                us,
                kind,
                breaker,
                _hashable(obj.get("attempt")),
                _hashable(obj.get("attempts")),
                _hashable(obj.get("max_attempts")),
                _hashable(obj.get("wait")),
                _hashable(obj.get("error")),
                _hashable(obj.get("retry_after")),
            )
        )
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
    since_us = _time_bound(since, "since")
    until_us = _time_bound(until, "until")
    scanned = [
        _Source(name, stream, since_us, until_us) for name, stream in sources
    ]
    aggregator = _Aggregator(matches=_breaker_matcher(breakers))
    add = aggregator.add
    for event in heapq.merge(
        *(source.events() for source in scanned), key=itemgetter(0)
    ):
        add(event)

    # The analysed period: the lines' time span, widened to --since/--until
    # when the log goes beyond them.
    firsts = [s.first for s in scanned if s.first is not None]
    lasts = [s.last for s in scanned if s.last is not None]
    start = min(firsts) if firsts else None
    end = max(lasts) if lasts else None
    if since_us is not None and any(s.before_since for s in scanned):
        start = since_us
    if until_us is not None and any(s.after_until for s in scanned):
        end = until_us

    ordered = sorted(aggregator.transitions, key=itemgetter(0, 1))
    timeline = tuple(t for _, _, t in ordered)
    per_breaker: dict[str, list[Transition]] = {}
    for transition in timeline:
        per_breaker.setdefault(transition.breaker, []).append(transition)

    names = set(aggregator.counts) | {
        name
        for name, (_, state) in aggregator.before.items()
        if state != _CLOSED
    }
    summaries: dict[str, BreakerSummary] = {}
    for name in sorted(names):
        summaries[name] = _summarise_breaker(
            name,
            per_breaker.get(name, []),
            aggregator.counts.get(name, _Counts()),
            aggregator.before.get(name),
            since_us,
            start,
            end,
            flapping_trips,
            flapping_window,
        )

    in_time_order = sorted(scanned, key=_file_order)
    return Summary(
        lines=sum(s.lines for s in scanned),
        skipped=sum(s.skipped for s in scanned),
        skipped_examples=_first_examples(scanned),
        breakers=summaries,
        timeline=timeline,
        start_us=start,
        end_us=end,
        events=aggregator.events,
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
    since: int | None,
    start: int | None,
    end: int | None,
    flapping_trips: int,
    flapping_window: float,
) -> BreakerSummary:
    initial: str | None = None
    begin = start
    if before is not None:
        initial = before[1]
        # The state is known at --since itself.
        begin = since if since is not None else start
    last_time = transitions[-1].time_us if transitions else begin
    finish = max(
        value for value in (end, last_time, begin, 0) if value is not None
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
        flapping=_flapping(trip_times, flapping_trips, flapping_window),
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


# ---------------------------------------------------------------------------
# Rendering


# C0 and C1 controls (ESC, CSI as U+009B), line and paragraph separators,
# bidirectional overrides, marks and isolates (text shown reversed),
# zero-width characters, and lone surrogates (not writable as UTF-8).
_CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069"
    "\ufeff\ud800-\udfff]"
)


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _printable(text: str) -> str:
    r"""Log-derived text made safe for a terminal (no escape sequences).

    Every character that could move the cursor, recolour, retitle or
    clear the terminal, or reorder what is shown, is written as an escape:
    the ESC of ``ESC [2J`` is shown as the four characters ``\x1b``.
    """
    if text.isascii() and text.isprintable():
        return text
    return _CONTROL.sub(_escaped, text)


def _duration(seconds: float) -> str:
    """``1h 02m 03s`` style, or ``450ms`` / ``12.5s`` for short ones."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s".replace(".0s", "s")
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours:02d}h {minutes:02d}m"
    if hours:
        return f"{hours}h {minutes:02d}m {secs:02d}s"
    return f"{minutes}m {secs:02d}s"


def _period(summary: Summary) -> str:
    if summary.start_us is None or summary.end_us is None:
        return "no timestamps"
    length = (summary.end_us - summary.start_us) / _US
    return (
        f"{_iso(summary.start_us)} .. {_iso(summary.end_us)} "
        f"({_duration(length)})"
    )


def _aligned(rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for row in rows:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(row)
        ]
        out.append("  ".join(cells).rstrip())
    return out


def render_table(summary: Summary) -> str:
    """Plain-text report: one aligned row per breaker, causes, timeline.

    Args:
        summary: What :func:`summarize` returned.

    Returns:
        The report, ending with a newline. Control characters from the
        logs are shown escaped.

    .. versionadded:: 0.1.0
    """
    files = ", ".join(_printable(name) for name in summary.files)
    lines = [
        f"Log summary: {files}",
        f"  period:  {_period(summary)}",
        f"  lines:   {summary.lines:,} read, {summary.skipped:,} skipped",
        "",
    ]
    header = [
        "breaker",
        "trips",
        "open total",
        "longest",
        "final",
        "rejected",
        "retries",
        "exhausted",
        "flapping",
    ]
    rows = [header]
    for name, b in summary.breakers.items():
        rows.append(
            [
                _printable(name),
                str(b.trips),
                _duration(b.time_open_total_s),
                _duration(b.longest_open_s),
                _printable(b.final_state),
                f"{b.rejected:,}",
                f"{b.retries_scheduled:,}",
                f"{b.retries_exhausted:,}",
                "YES" if b.flapping else "no",
            ]
        )
    if len(rows) > 1:
        lines.extend(_aligned(rows, right={1, 2, 3, 5, 6, 7}))
    else:
        lines.append("No breaker events in this period.")
    causes = [
        (name, cause)
        for name, b in summary.breakers.items()
        for cause in b.top_causes
    ]
    if causes:
        lines += ["", "Top causes of trips"]
        cause_rows = [
            ["", _printable(name), f"{c.count}x", _printable(c.cause)]
            for name, c in causes
        ]
        lines.extend(_aligned(cause_rows, right={2}))
    if summary.timeline:
        lines += ["", f"Timeline ({len(summary.timeline)} transitions, UTC)"]
        timeline_rows = [
            [
                "",
                t.time,
                _printable(t.breaker),
                (
                    f"{_printable(t.old_state or '?')} -> "
                    f"{_printable(t.new_state)}"
                ),
                f"rejected {t.rejected:,}" if t.rejected else "",
            ]
            for t in summary.timeline
        ]
        lines.extend(_aligned(timeline_rows, right=set()))
    if summary.skipped:
        lines += ["", f"Skipped lines ({summary.skipped:,}; first ones):"]
        lines += [
            f"  {_printable(e.file)}:{e.line}: {e.reason}"
            for e in summary.skipped_examples
        ]
    return "\n".join(lines) + "\n"


_STATE_CLASS = re.compile(r"[^a-z0-9-]")
# The HTML transitions table lists this many rows at most (the SVG and the
# JSON report show every transition).
_HTML_ROWS: Final = 5000
_STATE_COLOURS: Final = {
    _CLOSED: "#3fa34d",
    _HALF_OPEN: "#f0a202",
    _OPEN: "#d7263d",
}
_OTHER_COLOUR: Final = "#8a8f98"

_CSS: Final = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
margin:24px;color:#1d2330;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
p.meta{color:#4c5566;margin:0 0 8px}
table{border-collapse:collapse;margin:4px 0}
th,td{padding:4px 10px;border-bottom:1px solid #e3e6eb;text-align:left;
vertical-align:top}
th{background:#f4f6f9;font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.state-open,td.flapping{color:#b3001b;font-weight:600}
td.state-half-open{color:#a86b00;font-weight:600}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;
font-size:12.5px}
svg.timeline{width:100%;height:auto;max-width:1200px;display:block}
svg text{font:12px system-ui,sans-serif;fill:#1d2330}
svg text.axis{fill:#4c5566;font-size:11px}
.band-closed{fill:#3fa34d}.band-open{fill:#d7263d}
.band-half-open{fill:#f0a202}.band-other{fill:#8a8f98}
details summary{cursor:pointer}
"""


def _e(text: object) -> str:
    """Escape log-derived text for HTML; ``/`` too, so no URL survives."""
    return html.escape(str(text), quote=True).replace("/", "&#47;")


def _state_class(state: str) -> str:
    cleaned = _STATE_CLASS.sub("", state.lower())
    return cleaned if cleaned in _STATE_COLOURS else "other"


_TICK_STEPS: Final = (
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    7200,
    10800,
    21600,
    43200,
    86400,
    172800,
    604800,
)


def _ticks(start: int, end: int, wanted: int = 8) -> list[int]:
    """Round tick times (µs) between *start* and *end*."""
    span = max(end - start, 1)
    step = next(
        (s * _US for s in _TICK_STEPS if span / (s * _US) <= wanted),
        _TICK_STEPS[-1] * _US * max(1, math.ceil(span / (604800 * _US * 8))),
    )
    first = -(-start // step) * step
    return list(range(first, end + 1, step))


def _tick_label(us: int, step_us: int, span_us: int) -> str:
    moment = _EPOCH + dt.timedelta(microseconds=us)
    if span_us > 2 * 86400 * _US:
        return moment.strftime("%m-%d %H:%M")
    if step_us < 60 * _US:
        return moment.strftime("%H:%M:%S")
    return moment.strftime("%H:%M")


def _svg_timeline(summary: Summary) -> str:
    """One row of state bands per breaker on a shared time axis."""
    start = summary.start_us
    end = summary.end_us
    segments_all = [s for b in summary.breakers.values() for s in b.segments]
    if segments_all:
        low = min(s.start_us for s in segments_all)
        high = max(s.end_us for s in segments_all)
        start = low if start is None else min(start, low)
        end = high if end is None else max(end, high)
    if start is None or end is None or not summary.breakers:
        return "<p>No state to draw.</p>"
    span = max(end - start, _US)
    width, gutter, right = 1000, 190, 16
    plot = width - gutter - right
    row_h, band_h, top = 30, 20, 40
    rows = len(summary.breakers)
    axis_y = top + rows * row_h + 4
    height = axis_y + 44

    def x_of(us: int) -> float:
        return gutter + plot * (us - start) / span

    parts = [
        (
            f'<svg class="timeline" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img" '
            'aria-label="Circuit state per breaker over time">'
        ),
        '<g class="legend">',
    ]
    legend_x = gutter
    for state, label in (
        (_CLOSED, "closed"),
        (_HALF_OPEN, "half-open"),
        (_OPEN, "open"),
    ):
        parts.append(
            f'<rect class="swatch swatch-{state}" x="{legend_x}" y="8" '
            f'width="14" height="14" fill="{_STATE_COLOURS[state]}"/>'
            f'<text x="{legend_x + 20}" y="20">{label}</text>'
        )
        legend_x += 110
    parts.append("</g>")
    for index, (name, b) in enumerate(summary.breakers.items()):
        y = top + index * row_h
        parts.append(f'<g class="breaker-row" data-breaker="{_e(name)}">')
        parts.append(
            f'<text x="{gutter - 8}" y="{y + band_h - 5}" '
            f'text-anchor="end">{_e(name)}</text>'
        )
        for segment in b.segments:
            x0 = x_of(segment.start_us)
            x1 = x_of(segment.end_us)
            w = max(x1 - x0, 0.75)
            css = _state_class(segment.state)
            fill = _STATE_COLOURS.get(segment.state, _OTHER_COLOUR)
            label = (
                f"{name}: {segment.state} from {_iso(segment.start_us)} "
                f"to {_iso(segment.end_us)} "
                f"({_duration((segment.end_us - segment.start_us) / _US)})"
            )
            parts.append(
                f'<rect class="band band-{css}" '
                f'data-state="{_e(segment.state)}"'
                f' x="{x0:.2f}" y="{y}" width="{w:.2f}" height="{band_h}"'
                f' fill="{fill}"><title>{_e(label)}</title></rect>'
            )
        parts.append("</g>")
    parts.append(
        f'<line class="axis" x1="{gutter}" y1="{axis_y}" '
        f'x2="{gutter + plot}" y2="{axis_y}" stroke="#4c5566"/>'
    )
    ticks = _ticks(start, end)
    step = ticks[1] - ticks[0] if len(ticks) > 1 else span
    for tick in ticks:
        x = x_of(tick)
        parts.append(
            f'<line x1="{x:.2f}" y1="{axis_y}" x2="{x:.2f}" '
            f'y2="{axis_y + 5}" stroke="#4c5566"/>'
            f'<text class="axis tick" x="{x:.2f}" y="{axis_y + 18}" '
            f'text-anchor="middle">{_tick_label(tick, step, span)}</text>'
        )
    day = (_EPOCH + dt.timedelta(microseconds=start)).strftime("%Y-%m-%d")
    parts.append(
        f'<text class="axis" x="{gutter + plot / 2:.0f}" '
        f'y="{axis_y + 38}" text-anchor="middle">'
        f"time (UTC), from {day}</text>"
    )
    parts.append("</svg>")
    return "\n".join(parts)


def render_html(summary: Summary) -> str:
    """A self-contained HTML report (inline CSS and SVG, no scripts).

    The page loads nothing from anywhere: no scripts, stylesheets, fonts or
    images, and a Content-Security-Policy says so. Every text taken from
    the logs is escaped.

    Args:
        summary: What :func:`summarize` returned.

    Returns:
        The page.

    .. versionadded:: 0.1.0
    """
    out = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        (
            '<meta http-equiv="Content-Security-Policy" '
            "content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        ),
        "<title>Circuit breaker report</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        "<h1>Circuit breaker report</h1>",
        (
            f'<p class="meta">Period: {_e(_period(summary))}<br>'
            f"{summary.lines:,} lines read, {summary.skipped:,} skipped; "
            f"files: {_e(', '.join(summary.files))}</p>"
        ),
        '<section id="timeline"><h2>State timeline</h2>',
        _svg_timeline(summary),
        "</section>",
        '<section id="summary"><h2>Summary</h2>',
        (
            "<table><thead><tr><th>breaker</th><th>trips</th>"
            "<th>time open</th><th>longest open</th><th>final state</th>"
            "<th>rejected</th><th>retries</th><th>retries exhausted</th>"
            "<th>flapping</th></tr></thead><tbody>"
        ),
    ]
    for name, b in summary.breakers.items():
        out.append(
            f"<tr><td><code>{_e(name)}</code></td>"
            f'<td class="num">{b.trips}</td>'
            f'<td class="num">{_e(_duration(b.time_open_total_s))}</td>'
            f'<td class="num">{_e(_duration(b.longest_open_s))}</td>'
            f'<td class="state-{_state_class(b.final_state)}">'
            f"{_e(b.final_state)}</td>"
            f'<td class="num">{b.rejected:,}</td>'
            f'<td class="num">{b.retries_scheduled:,}</td>'
            f'<td class="num">{b.retries_exhausted:,}</td>'
            f'<td class="{"flapping" if b.flapping else ""}">'
            f"{'yes' if b.flapping else 'no'}</td></tr>"
        )
    out.append("</tbody></table></section>")
    out.append('<section id="causes"><h2>Root causes of trips</h2>')
    causes = [
        (name, c) for name, b in summary.breakers.items() for c in b.top_causes
    ]
    if causes:
        out.append(
            "<table><thead><tr><th>breaker</th><th>trips</th><th>cause</th>"
            "</tr></thead><tbody>"
        )
        out.extend(
            f"<tr><td><code>{_e(name)}</code></td>"
            f'<td class="num">{c.count}</td><td><code>{_e(c.cause)}</code>'
            "</td></tr>"
            for name, c in causes
        )
        out.append("</tbody></table>")
    else:
        out.append("<p>No trips.</p>")
    out.append("</section>")
    shown_note = ""
    if len(summary.timeline) > _HTML_ROWS:
        shown_note = (
            f"; the first {_HTML_ROWS:,} are listed (--format json has all)"
        )
    out.append(
        f'<section id="transitions"><h2>Transitions</h2><details open>'
        f"<summary>{len(summary.timeline):,} transitions (UTC)"
        f"{shown_note}</summary>"
        "<table><thead><tr><th>time</th><th>breaker</th><th>from</th>"
        "<th>to</th><th>rejected while open</th></tr></thead><tbody>"
    )
    out.extend(
        f"<tr><td><code>{t.time}</code></td><td><code>{_e(t.breaker)}</code>"
        f"</td><td>{_e(t.old_state or '?')}</td>"
        f'<td class="state-{_state_class(t.new_state)}">{_e(t.new_state)}</td>'
        f'<td class="num">{t.rejected or ""}</td></tr>'
        for t in summary.timeline[:_HTML_ROWS]
    )
    out.append("</tbody></table></details></section>")
    if summary.skipped:
        out.append(
            f'<section id="skipped"><h2>Skipped lines</h2><p>'
            f"{summary.skipped:,} lines skipped; the first ones:</p><ul>"
        )
        out.extend(
            f"<li><code>{_e(e.file)}:{e.line}</code>: {_e(e.reason)}</li>"
            for e in summary.skipped_examples
        )
        out.append("</ul></section>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------
# Command line


def _shown(text: str, limit: int = 80) -> str:
    """An argument as quoted in an error message: short, printable."""
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return _printable(repr(text))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:  # also a 5000-digit number
        value = 0
    if value < 1:
        msg = f"must be an integer >= 1 (got {_shown(text)})"
        raise argparse.ArgumentTypeError(msg)
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= _MAX_WINDOW:  # also refuses NaN and infinity
        msg = (
            f"must be a number of seconds > 0 and <= {_MAX_WINDOW:.0e} "
            f"(got {_shown(text)})"
        )
        raise argparse.ArgumentTypeError(msg)
    return value


def _time_argument(text: str) -> str:
    """``--since``/``--until``: checked here, kept as given.

    Checked by argparse, so that a bad value exits 2 with one line, like
    every other bad argument; parsed again (relative times from now) when
    the command runs.
    """
    try:
        parse_time(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(_printable(str(exc))) from None
    return text


def _one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make *parser* report a usage error in one line, exit status 2.

    argparse prints the whole usage (seven lines here) before the error;
    the error is what the user needs, and ``--help`` has the rest.
    """

    def error(message: str) -> NoReturn:
        parser.exit(2, f"{parser.prog}: error: {message} (see --help)\n")

    parser.error = error  # type: ignore[method-assign]


def add_summarize_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``logs summarize`` to *parser*.

    Every argument is checked by its argparse type: a bad one makes the
    parser exit with status 2 and one line on stderr (*parser* is made to
    print errors so).

    Args:
        parser: The sub-command's parser.

    .. versionadded:: 0.1.0
    """
    _one_line_errors(parser)
    parser.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="JSON-lines log files, plain or gzip-compressed; - for stdin. "
        "Several files are merged in time order.",
    )
    parser.add_argument(
        "--since",
        metavar="T",
        type=_time_argument,
        help="ignore events before T: ISO-8601 (naive means UTC), epoch "
        "seconds/ms, or relative to now such as 2h, 30m, 1d",
    )
    parser.add_argument(
        "--until",
        metavar="T",
        type=_time_argument,
        help="ignore events after T (same forms)",
    )
    parser.add_argument(
        "--breaker",
        metavar="NAME",
        action="append",
        dest="breaker",
        help="only this breaker (repeatable; shell patterns like 'api*')",
    )
    parser.add_argument(
        "--format",
        choices=("table", "json", "html"),
        default="table",
        help="table (default), json (contract section 10) or html",
    )
    parser.add_argument(
        "--output",
        metavar="PATH",
        help="write the report to PATH (default: stdout for table and "
        f"json, {DEFAULT_HTML_OUTPUT} for html); - for stdout",
    )
    parser.add_argument(
        "--flapping-trips",
        type=_positive_int,
        default=3,
        metavar="N",
        help="a breaker is flapping after N trips... (default 3)",
    )
    parser.add_argument(
        "--flapping-window",
        type=_positive_float,
        default=600.0,
        metavar="SECONDS",
        help="...within SECONDS (default 600)",
    )


_PROG: Final = "sage-resilience logs summarize"


def _error(message: str) -> None:
    """Print one line on stderr, control characters shown escaped.

    Text from the logs or argv in it cannot steer a terminal.
    """
    print(_printable(f"{_PROG}: {message}"), file=sys.stderr)


def _names(keys: Iterable[str]) -> str:
    """``"a", "b" or "c"``."""
    quoted = [json.dumps(key, ensure_ascii=False) for key in keys]
    if len(quoted) < 2:
        return "".join(quoted)
    return f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _keys_list(seen: KeysSeen) -> str:
    shown = ", ".join(json.dumps(key, ensure_ascii=False) for key in seen.keys)
    return shown or "no keys"


def _lines_name(count: int) -> str:
    return "1 line names" if count == 1 else f"{count:,} lines name"


def _no_event_message(summary: Summary, args: argparse.Namespace) -> str:
    """Why nothing was found, and what the log holds instead (one line).

    Logs of another shape are the usual reason: the event name or the time
    under keys this command does not read.
    """
    files = ", ".join(args.files)
    counts = f"{summary.lines:,} lines read, {summary.skipped:,} skipped"
    time_keys = f"the time under {_names(TIME_KEYS)}"
    if summary.usable:
        return (
            f"no circuit breaker event found in {files}"
            f"{_describe_filters(args)} ({counts})"
        )
    if summary.recognised and summary.first_bad_event is not None:
        bad = summary.first_bad_event
        return (
            f"no circuit breaker event found in {files} ({counts}): "
            f"{_lines_name(summary.recognised)} one but were skipped; "
            f"the first, {bad.file}:{bad.line}, {bad.reason}; looked for "
            f"{time_keys}; its keys: {_keys_list(bad)}"
        )
    looked = (
        f"looked for the event name ({', '.join(sorted(_EVENTS))}) under "
        f"{_names(EVENT_KEYS)} and {time_keys}"
    )
    mention = summary.mention
    if mention is not None and mention.event_key is not None:
        instead = (
            f"{mention.file}:{mention.line} has an event name under the "
            f"key {json.dumps(mention.event_key, ensure_ascii=False)}; "
            f"its keys: {_keys_list(mention)}"
        )
    elif summary.first_object is not None:
        first = summary.first_object
        instead = (
            f"the first JSON object ({first.file}:{first.line}) has the "
            f"keys {_keys_list(first)}"
        )
    else:
        instead = "no line is a JSON object"
    return (
        f"no circuit breaker event found in {files} ({counts}): {looked}; "
        f"{instead}"
    )


def _describe_filters(args: argparse.Namespace) -> str:
    parts = []
    if args.since:
        parts.append(f"since {args.since}")
    if args.until:
        parts.append(f"until {args.until}")
    if args.breaker:
        parts.append("for breaker " + ", ".join(args.breaker))
    return (" " + " ".join(parts)) if parts else ""


def summarize_command(args: argparse.Namespace) -> int:
    """Run ``logs summarize`` with parsed arguments.

    Args:
        args: From a parser set up by :func:`add_summarize_arguments`.

    Returns:
        0 when the report was written; 1 when no circuit event was found,
        or a file could not be read or written; 2 for bad arguments. Errors
        are one line on stderr, never a traceback.

    .. versionadded:: 0.1.0
    """
    try:
        since = None if args.since is None else parse_time(args.since)
        until = None if args.until is None else parse_time(args.until)
    except ValueError as exc:
        _error(f"--since/--until: {exc}")
        return 2
    if since is not None and until is not None and since > until:
        _error("--since is after --until")
        return 2
    trips = getattr(args, "flapping_trips", 3)
    window = getattr(args, "flapping_window", 600.0)
    if (
        not isinstance(trips, int)
        or trips < 1
        or not 0 < window <= _MAX_WINDOW
    ):
        _error(
            "--flapping-trips must be >= 1 and --flapping-window in "
            f"(0, {_MAX_WINDOW:.0e}]"
        )
        return 2
    with contextlib.ExitStack() as stack:
        sources: list[tuple[str, IO[bytes]]] = []
        for name in args.files:
            if name == "-":
                sources.append(("-", sys.stdin.buffer))
                continue
            try:
                stream = stack.enter_context(Path(name).open("rb"))
            except OSError as exc:
                _error(f"cannot read {name}: {exc.strerror or exc}")
                return 1
            sources.append((name, stream))
        try:
            summary = summarize(
                sources,
                since=None if since is None else _moment(since),
                until=None if until is None else _moment(until),
                breakers=args.breaker,
                flapping_trips=trips,
                flapping_window=window,
            )
        except OSError as exc:
            _error(f"cannot read input: {exc.strerror or exc}")
            return 1
    for problem in summary.problems:
        _error(f"{problem.file}: {problem.reason}")
    if summary.events == 0:
        _error(_no_event_message(summary, args))
        return 1
    return _write_report(summary, args.format, args.output)


def _write_report(summary: Summary, fmt: str, output: str | None) -> int:
    if fmt == "json":
        text = json.dumps(summary.to_json(), indent=2, ensure_ascii=False)
        text += "\n"
    elif fmt == "html":
        text = render_html(summary)
        output = output or DEFAULT_HTML_OUTPUT
    else:
        text = render_table(summary)
    if output is None or output == "-":
        try:
            sys.stdout.write(text)
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader went away (``| head``): no traceback, and none at
            # exit either, when Python flushes stdout again.
            with contextlib.suppress(OSError, ValueError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            return 1
        return 0
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        _error(f"cannot write {output}: {exc.strerror or exc}")
        return 1
    print(f"wrote {output}", file=sys.stderr)
    return 0
