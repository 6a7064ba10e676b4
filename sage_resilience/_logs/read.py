"""Reading JSON-lines logs: sources, decompression, line parsing.

One :class:`_Source` per file turns its bytes into resilience events:

* **Streaming.** Files are read in blocks of 1 MiB and split into lines; no
  line is kept once looked at.
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
"""

from __future__ import annotations

import json
import re
import sys
import zlib
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Final

from sage_resilience._logs.model import (
    _EVENTS,
    EVENT_KEYS,
    STATE_CHANGED,
    TIME_KEYS,
    KeysSeen,
    SkippedLine,
)
from sage_resilience._logs.times import (
    _MAX_US,
    _canonical,
    _moment,
    parse_timestamp,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__: list[str] = []

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

    def _scan(  # noqa: C901, PLR0912 - the hot loop, inlined for speed
        self, lines: list[bytes]
    ) -> list[_Event]:
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

    def _parse(self, line: bytes, lineno: int) -> _Event | None:  # noqa: C901, PLR0911 - every way a line can be unusable
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
        problem = _event_problem(kind, obj)
        if problem is not None:
            self._skip_event(lineno, problem, obj)
            return None
        breaker = obj["breaker"]
        if not breaker.isascii():
            breaker = _safe_text(breaker)
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


def _event_problem(kind: str, obj: dict[str, Any]) -> str | None:  # noqa: PLR0911 - one return per skip reason
    """Why an event cannot be used (the skip reason), or None."""
    breaker = obj.get("breaker")
    if not isinstance(breaker, str) or not breaker:
        return f"{kind} without a breaker"
    if len(breaker) > _MAX_NAME:
        return f"{kind} with a breaker name too long"
    if kind != STATE_CHANGED:
        return None
    new_state = obj.get("new_state")
    if _state(new_state) is None:
        if new_state is None or new_state == "":
            return f"{kind} without a new_state"
        return f"{kind} with an invalid new_state"
    if _count(obj.get("rejected_while_open")) is None:
        return f"{kind} with rejected_while_open out of range"
    return None


def _state(value: object) -> str | None:
    """A state name as the events spell it (``half-open``), or None."""
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
