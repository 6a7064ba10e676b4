"""Reading JSON-lines logs: sources, decompression, scanning blocks.

One :class:`_Source` per file turns its bytes into resilience events:

* **Streaming.** Files are read in blocks of 1 MiB (into one buffer shared
  by the files of an analysis); no line is kept once looked at.
* **Cheap pre-filter.** Only lines naming one of the resilience events
  (``"circuit_state_changed"``, ``"retry_``, ``"call_rejected"``) are
  parsed with :func:`json.loads`; they are found in the whole block with
  ``bytes.find``. Every other line is checked for the shape of a JSON
  object (``{...}``) and its timestamp is read with a substring search, so
  the log's time span is known without parsing it (fixed-width times are
  compared as bytes: _SortableTime). Runs of lines ending with structlog's
  canonical timestamp, or starting with python-json-logger's ``asctime``
  or ecs-logging's ``@timestamp``, are checked all at once (:mod:`.bulk`),
  the other lines one at a time (:mod:`.lines`), with the same results.
* **Hostile input.** Whatever a line holds (nesting beyond the recursion
  limit, 5000-digit numbers, times outside the years 1 to 9999, bytes that
  are not UTF-8, lone surrogates), it is used, ignored or skipped with a
  reason; a gzip file expanding more than 100 times is cut short.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from functools import partial
from typing import IO, TYPE_CHECKING, Any, Final

from sage_resilience._logs.bulk import (
    NO_BOTTOM,
    NO_TOP,
    Run,
    block_extremes,
    canonical,
    line_indices,
    marked_starts,
    regular,
)
from sage_resilience._logs.lines import (
    _SORTABLE,
    _classify_bad_line,
    _event_name,
    _event_problem,
    _keys_seen,
    _loads,
    _object_timestamp,
    _raw_time_us,
    _safe_text,
    _sortable_bounds,
)
from sage_resilience._logs.model import (
    _EVENTS,
    KeysSeen,
    SkippedLine,
)
from sage_resilience._logs.times import _canonical, parse_timestamp
from sage_resilience._names import STATE_CHANGED

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
# A block ending with CR, or with a CRLF in its first _CRLF_LOOK bytes, is
# read with LF line ends: the same, since odd lines are looked at stripped.
_CRLF_LOOK: Final = 64 << 10
# Regions of fewer lines that are not regular are read a line at a time.
_FEW_LINES: Final = 64

# An event handed from a file scanner to the merger:
# (time_us, kind, breaker, parsed object). kind is one of _EVENTS, or _PRE
# for a transition before --since (it tells the state at the window start).
_PRE: Final = "pre"
_Event = tuple[int, str, str, dict[str, Any]]

# How many lines shaped like {...} are parsed, per file, to find the first
# JSON object, among how many first lines (a log of truncated lines or of
# plain text is not searched to its end).
_OBJECT_TRIES: Final = 20
_OBJECT_LINES: Final = 10_000


# A line's number, or how to count it (when it is reported: rarely).
_LineNo = int | Callable[[], int]


def _number(lineno: _LineNo) -> int:
    return lineno if isinstance(lineno, int) else lineno()


def _line_at(data: bytes, start: int, before: int) -> int:
    """The number of the line of *data* starting at *start*."""
    return before + data.count(b"\n", 0, start) + 1


def _scratch() -> bytearray:
    """A read buffer for the sources of one analysis (see _Blocks)."""
    return bytearray(_BLOCK)


class _Blocks:
    """The decompressed blocks of one stream, and why reading stopped early.

    gzip is told by its magic bytes. No block is referenced from here while
    the generator is paused: with many files merged, each paused reader
    would otherwise hold one. Plain files are read into *scratch*, one
    buffer for every file of an analysis: the reader copies what it keeps
    before asking for the next block (fresh 1 MiB buffers cost more in
    page faults than the copy).
    """

    def __init__(self, stream: IO[bytes], scratch: bytearray) -> None:
        self.stream = stream
        self.scratch = scratch
        # Why reading stopped early (damaged gzip, decompression bomb).
        self.problem: str | None = None

    def __iter__(self) -> Iterator[bytes | bytearray]:
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
        readinto = getattr(self.stream, "readinto", None)
        buffer = self.scratch
        if readinto is None or len(buffer) != _BLOCK:
            while pending[0]:
                yield pending.pop()
                pending.append(read(_BLOCK))
            return
        if pending[0]:
            yield pending.pop()
            size = readinto(buffer)
            while size:
                yield buffer if size == _BLOCK else bytes(buffer[:size])
                size = readinto(buffer)

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


def _event_key(obj: dict[str, Any]) -> str | None:
    """The key under which *obj* names an event, if any."""
    return next(
        (
            str(key)
            for key, value in obj.items()
            if isinstance(value, str) and value in _EVENTS
        ),
        None,
    )


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
        scratch: bytearray | None = None,
    ) -> None:
        self.name = _safe_text(name)
        self.stream = stream
        self.scratch = scratch  # the read buffer (see _Blocks)
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
        self._extremes = [[NO_TOP, NO_BOTTOM] for _ in _SORTABLE]
        # The block's largest and smallest canonical timestamp.
        self._top = NO_TOP
        self._bottom = NO_BOTTOM
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

    def _skip(self, lineno: _LineNo, reason: str) -> None:
        self.skipped += 1
        if len(self.examples) < _EXAMPLES:
            self.examples.append(
                SkippedLine(self.name, _number(lineno), reason)
            )

    def _skip_event(
        self, lineno: _LineNo, reason: str, obj: dict[str, Any]
    ) -> None:
        """Skip a line that names an event but cannot be used."""
        self._skip(lineno, reason)
        if self.first_bad_event is None:
            self.first_bad_event = _keys_seen(
                self.name, _number(lineno), obj, reason=reason
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

    def _note_mention(self, obj: dict[str, Any], lineno: _LineNo) -> None:
        """A line naming an event, but not under an event key."""
        self.mention = _keys_seen(
            self.name, _number(lineno), obj, _event_key(obj)
        )

    # -- reading ------------------------------------------------------------

    def events(self) -> Iterator[_Event]:
        """The resilience events of this source, in file order."""
        tail = b""
        discarding = False  # inside a line longer than _MAX_LINE
        blocks = _Blocks(self.stream, self.scratch or bytearray(_BLOCK))
        for block in blocks:
            if discarding:
                newline = block.find(b"\n")
                if newline < 0:
                    continue
                block = block[newline + 1 :]  # noqa: PLW2901
                discarding = False
            cut = block.rfind(b"\n")
            if cut < 0:
                tail += block
                if len(tail) > _MAX_LINE:
                    self.lines += 1
                    self._skip(self.lines, "line too long")
                    tail = b""
                    discarding = True
                continue
            # One copy: the lines, from the end of the previous block on.
            data = b"".join((tail, memoryview(block)[:cut]))
            tail = bytes(memoryview(block)[cut + 1 :])
            block = b""  # noqa: PLW2901 (not held while paused)
            found = self._scan(data)
            data = b""
            yield from found
            if len(tail) > _MAX_LINE:
                self.lines += 1
                self._skip(self.lines, "line too long")
                tail = b""
                discarding = True
        if tail:
            yield from self._scan(tail)
        self.problem = blocks.problem
        if self.problem is not None:
            self._skip(self.lines + 1, self.problem)

    def _scan(self, data: bytes) -> list[_Event]:
        """The events of a block's lines (*data*: without its last newline).

        Lines naming a resilience event are parsed. Of the others, only the
        shape (``{...}``) and the timestamp are looked at: whole regions of
        regular lines at once (:mod:`.bulk`), the rest one line at a time.
        Timestamps in a sortable form are compared as bytes and only the
        block's extremes are parsed.
        """
        found: list[_Event] = []
        lineno = self.lines
        if (
            self.first_object is None
            and self._object_tries < _OBJECT_TRIES
            and lineno < _OBJECT_LINES
        ):
            wanted = _OBJECT_LINES - lineno
            self._look_for_object(data.split(b"\n", wanted)[:wanted], lineno)
        # Looked for from the first CR on (memchr): most logs have none.
        cr = data.find(b"\r", 0, _CRLF_LOOK)
        if data.endswith(b"\r") or (
            cr >= 0 and data.find(b"\r\n", cr, _CRLF_LOOK) >= 0
        ):
            # CRLF: each line is looked at stripped anyway.
            data = data.replace(b"\r\n", b"\n").removesuffix(b"\r")
        self._top, self._bottom = NO_TOP, NO_BOTTOM
        # A regular block (the usual one) is seen so without counting its
        # newlines (see bulk.regular); only the others' are counted.
        run = regular(data, None)
        if run is not None:
            self.lines += len(run.values)
            self._regular(data, run, lineno, found, marked_starts(data))
        else:
            count = data.count(b"\n") + 1
            self.lines += count
            self._region(data, lineno, count, found, tried=True)
        extremes = [(self._top, self._bottom)]
        for pair in self._extremes:
            extremes.append((pair[0], pair[1]))
            pair[0], pair[1] = NO_TOP, NO_BOTTOM
        for raw in (value for pair in extremes for value in pair):
            if raw in {NO_TOP, NO_BOTTOM}:
                continue
            us = parse_timestamp(raw.rstrip(b'"'))
            if us is None:
                # Shaped like a timestamp but not one: count exactly.
                self._rescan_times(data.split(b"\n"))
                break
            self._see(us)
        return found

    def _region(
        self,
        data: bytes,
        lineno: int,
        count: int,
        found: list[_Event],
        *,
        tried: bool = False,
    ) -> None:
        """Scan *count* lines: at once if regular, else cut in two.

        Cut only while the first or the last line is regular: a log of
        another shape is read a line at a time straight away. *tried*:
        *data* is known not to be regular.
        """
        run = None if tried else regular(data, count)
        if run is not None:
            self._regular(data, run, lineno, found, marked_starts(data))
            return
        if count > _FEW_LINES and (
            regular(data[: data.find(b"\n")], 1) is not None
            or regular(data[data.rfind(b"\n") + 1 :], 1) is not None
        ):
            half = len(data) // 2
            cut = data.find(b"\n", half)
            if cut < 0:
                cut = data.rfind(b"\n", 0, half)
            left = data[:cut]
            left_count = left.count(b"\n") + 1
            self._region(left, lineno, left_count, found)
            self._region(
                data[cut + 1 :], lineno + left_count, count - left_count, found
            )
            return
        self._lines(data.split(b"\n"), lineno, found)

    def _regular(
        self,
        data: bytes,
        run: Run,
        lineno: int,
        found: list[_Event],
        marked: list[int],
    ) -> None:
        """A regular region: its times at once, its event lines parsed.

        *marked*: where the lines to parse start. Their numbers are
        counted only when one is reported, their indices only when the
        time extremes need them (see bulk.block_extremes).
        """
        marked_values: set[bytes] = set()
        for start in marked:
            end = data.find(b"\n", start)
            line = data[start:] if end < 0 else data[start:end]
            marked_values.add(run.value_of(line))  # values[i], line i's
            event = self._parse(line, partial(_line_at, data, start, lineno))
            if event is not None:
                found.append(event)
        if run.slot is None:
            lo, hi = self._lo, self._hi
        else:
            lo, hi = self._sortable[run.slot][1:]
        top, bottom, before, after_until = block_extremes(
            run, lo, hi, marked_values, lambda: line_indices(data, marked)
        )
        self.before_since = self.before_since or before
        self.after_until = self.after_until or after_until
        if run.slot is None:
            self._top = max(self._top, top)
            self._bottom = min(self._bottom, bottom)
        else:
            pair = self._extremes[run.slot]
            pair[0], pair[1] = max(pair[0], top), min(pair[1], bottom)

    def _lines(  # noqa: C901, PLR0912 - the hot loop, inlined for speed
        self, lines: list[bytes], lineno: int, found: list[_Event]
    ) -> None:
        """Look at each line once: its shape, its event name, its time.

        A timestamp in structlog's canonical form (``"timestamp":
        "...Z"``, 27 characters) is compared as bytes.
        """
        lo, hi = self._lo, self._hi
        top = self._top  # the largest canonical timestamp in the window
        bottom = self._bottom  # the smallest one
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
            if canonical(raw):
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
        self._top, self._bottom = top, bottom

    def _see_sortable(self, line: bytes) -> None:
        """A line's time by the shapes of _SORTABLE, else exactly."""
        for index, (shape, lo, hi) in enumerate(self._sortable):
            raw = shape.find(line)
            if raw is None:
                continue
            if not raw:
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

    def _parse(self, line: bytes, lineno: _LineNo) -> _Event | None:  # noqa: C901, PLR0911 - every way a line can be unusable
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
