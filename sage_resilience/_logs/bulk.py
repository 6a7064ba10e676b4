r"""Whole-block checks: the fast path of the line scanner (:mod:`.read`).

Most lines of a structlog log end with the time in structlog's canonical
form: ``{..., "timestamp": "2026-11-27T20:00:00.001150Z"}``. For a block
of such lines a few passes over the whole block in C (``split``,
``join``, ``count``, ``max``, ``min``) show what looking at each line
would find:

* every line is shaped ``{...}`` (no line is skipped);
* the first ``"timestamp": "`` of each line is its only one, and holds a
  value of the canonical shape, which the line scanner compares as bytes;

so the block's time extremes are the largest and smallest of those values,
and only the lines naming a resilience event (found with ``bytes.find``)
are looked at one by one. A block of which this cannot be shown is cut in
two (:meth:`.read._Source._region`), down to a few lines looked at one by
one as before: the results are the same either way.

python-json-logger and ecs-logging write the time first instead, in one of
the sortable shapes of :data:`.lines._SORTABLE`: ``{"asctime": "2026-11-27
20:00:00,001", ...}``, ``{"@timestamp":"2026-11-27T20:00:00.001Z",...}``.
A block of such lines is split at ``}\n{"asctime": "`` (the end of a line,
the start of the next), and the same passes show that

* every line is ``{...}`` and starts with the key (no newline is left
  inside a piece);
* each value has the shape's separators at their places, digits elsewhere
  and its closing quote: what the line scanner's shape check accepts;
* the block holds none of the keys the line scanner looks for before this
  one (``"timestamp": "``, and ``"asctime": "`` before ``@timestamp``),
  so the line scanner takes this value as the line's time.
"""

from __future__ import annotations

from operator import itemgetter
from typing import TYPE_CHECKING, Final, NamedTuple

from sage_resilience._logs.lines import _DIGITS, _SORTABLE

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sage_resilience._logs.lines import _SortableTime

__all__: list[str] = []

# The key of structlog's canonical timestamps. Splitting at it finds the
# first one of each line, as str.find does (a second one overlapping it
# is not found, but it then follows a non-canonical value).
_KEY: Final = b'"timestamp": "'
# A canonical value with its closing quote (the bytes the line scanner
# compares), and the "}\n{" that end its line and start the next one.
_WIDTH: Final = 28
_HEAD: Final = _WIDTH + 3
_HEAD_OF: Final = itemgetter(slice(0, _HEAD))
_REST_OF: Final = itemgetter(slice(_HEAD, None))
# How many pieces' rests are searched together (see _uncounted).
_RESTS: Final = 256
# What each head holds at fixed places: the line scanner's shape check
# (T, the dot, Z, the quote), then the end of the line and the next start.
_FIXED: Final = (
    (10, b"T"),
    (19, b"."),
    (26, b"Z"),
    (27, b'"'),
    (28, b"}"),
    (29, b"\n"),
    (30, b"{"),
)
# A line containing one of these is parsed (a resilience event, or a
# message naming one).
EVENT_MARKS: Final = (
    b'"circuit_state_changed"',
    b'"retry_',
    b'"call_rejected"',
)
# A byte of a mark seen at most this many times in the first _SAMPLE bytes
# of a block is searched for instead of the mark (see _mark_positions).
# (2 KiB: counting each byte of the marks in it costs 13 µs a block, 43 µs
# in 8 KiB.)
_SAMPLE: Final = 2 << 10
_RARE_IN_SAMPLE: Final = 2
_MARK_BYTES: Final = frozenset(b"".join(EVENT_MARKS))
NO_TOP: Final = b""
NO_BOTTOM: Final = b"\x7f"

Extremes = tuple[bytes, bytes, bool, bool]


class Run(NamedTuple):
    """The lines of a regular region, seen at once (see :func:`regular`)."""

    values: list[bytes]  # the value of line i starts values[i]
    width: int  # how many of its bytes the line scanner compares
    slot: int | None  # its index in _SORTABLE; None: canonical
    start: int  # where a line's value starts (-1: after _KEY)

    def value_of(self, line: bytes) -> bytes:
        """The compared bytes of the value of *line*, a line of the run."""
        at = line.find(_KEY) + len(_KEY) if self.start < 0 else self.start
        return line[at : at + self.width]


class _TimeFirst(NamedTuple):
    """A sortable shape written first on the line, as a regular run's."""

    start: bytes  # ``{`` and the shape's marker
    cut: bytes  # the end of a line and the start of the next
    width: int  # the value's
    head: int  # the value and its closing quote
    fixed: tuple[tuple[int, bytes], ...]  # the non-digits of a head
    earlier: tuple[bytes, ...]  # the keys the line scanner tries first
    slot: int

    @classmethod
    def of(cls, slot: int) -> _TimeFirst:
        shape: _SortableTime = _SORTABLE[slot]
        head = shape.render(0) + b'"'
        return cls(
            start=b"{" + shape.marker,
            cut=b"}\n{" + shape.marker,
            width=shape.width,
            head=len(head),
            fixed=tuple(
                (at, head[at : at + 1])
                for at, byte in enumerate(head)
                if byte not in _DIGITS
            ),
            earlier=(_KEY, *(other.marker for other in _SORTABLE[:slot])),
            slot=slot,
        )


# python-json-logger's asctime and ecs-logging's @timestamp.
_TIME_FIRST: Final = (_TimeFirst.of(0), _TimeFirst.of(1))


def canonical(raw: bytes) -> bool:
    """Whether *raw* (28 bytes after the key) has the canonical shape."""
    return (
        len(raw) == _WIDTH
        and raw[27] == 34  # "
        and raw[26] == 90  # Z
        and raw[19] == 46  # .
        and raw[10] == 84  # T
    )


def regular(data: bytes, count: int | None) -> Run | None:
    """The lines of *data* at once, if its *count* lines are regular.

    Regular: a sortable shape first on every line (:func:`_time_first`)
    or structlog's canonical shape (:func:`canonical_pieces`), tried in
    this order: a block of the first kind holds no time key of structlog's,
    and the search for one is not repeated. *count* is one more than the
    newlines in *data*; None when they were not counted.
    """
    for shape in _TIME_FIRST:
        if data.startswith(shape.start):
            run = _time_first(shape, data, count)
            if run is not None:
                return run
    pieces = canonical_pieces(data, count)
    return None if pieces is None else Run(pieces[1:], _WIDTH, None, -1)


def canonical_pieces(data: bytes, count: int | None) -> list[bytes] | None:
    """*data* split at each time key, if its *count* lines are regular.

    Regular: every line is ``{...}`` and ends with its first time key,
    a value of the canonical shape and ``}``. The pieces after the first
    then start with the lines' values, in line order. *count* is one
    more than the newlines in *data*; None when they were not counted:
    the pieces then show that no other newline is left, and the lines
    are one fewer than the pieces.
    """
    if data[:1] != b"{" or data[-1:] != b"}":
        return None
    pieces = data.split(_KEY)
    counted = count is not None
    if count is None:
        count = len(pieces) - 1
    if (
        not count
        or len(pieces) != count + 1
        or not canonical(pieces[-1][:_WIDTH])
    ):
        return None
    # count - 1 heads, each ending a line: no line holds another key, and
    # no other newline is left for a line without one.
    middle = count - 1
    heads = b"".join(map(_HEAD_OF, pieces[1:-1]))
    if len(heads) != _HEAD * middle:
        return None
    for at, byte in _FIXED:
        if heads[at::_HEAD] != byte * middle:
            return None
    if not counted and not _uncounted(pieces, heads, middle):
        return None
    return pieces


def _time_first(
    shape: _TimeFirst, data: bytes, count: int | None
) -> Run | None:
    """*data*'s lines as a run of *shape*, if each is ``{value, ...}``.

    *data* starts with ``shape.start``. Split at ``shape.cut``, every piece
    is one line from its value on (without the ``}`` ending it, but the
    last): when no newline is left in any, each line started with the key
    and ended with ``}``.
    """
    if data[-1:] != b"}" or any(key in data for key in shape.earlier):
        return None
    pieces = data.split(shape.cut)
    lines = len(pieces)
    if count is not None and lines != count:
        return None
    pieces[0] = pieces[0][len(shape.start) :]
    head = shape.head
    heads = b"".join(map(itemgetter(slice(0, head)), pieces))
    if len(heads) != head * lines or any(
        heads[at::head] != byte * lines for at, byte in shape.fixed
    ):
        return None
    # The fixed bytes at their places, and no other byte but digits.
    if len(heads.translate(None, _DIGITS)) != len(shape.fixed) * lines or (
        count is None and not _no_newline(pieces, 0, lines)
    ):
        return None
    return Run(pieces, shape.width, shape.slot, len(shape.start))


def _uncounted(pieces: list[bytes], heads: bytes, middle: int) -> bool:
    """Whether *pieces* hold no newline but the one of each head.

    What counting the newlines of the whole block would show, found with
    a search for one (memchr) in what follows the heads, copied together:
    less time than counting them (the heads hold one each).
    """
    if (
        pieces[0].find(b"\n") >= 0
        or pieces[-1].find(b"\n") >= 0
        or heads.count(b"\n") != middle
    ):
        return False
    return _no_newline(pieces, 1, middle + 1, _REST_OF)


def _no_newline(
    pieces: list[bytes],
    first: int,
    end: int,
    part: Callable[[bytes], bytes] | None = None,
) -> bool:
    """Whether pieces[first:end] (or their *part*) hold no newline.

    Copied some at a time (about 70 KB) and searched with memchr: one copy
    as large as the block costs more than the search saves, and counting
    the newlines more than searching for one.
    """
    for at in range(first, end, _RESTS):
        some = pieces[at : min(at + _RESTS, end)]
        if (
            b"".join(some if part is None else map(part, some)).find(b"\n")
            >= 0
        ):
            return False
    return True


def _mark_positions(
    data: bytes, mark: bytes, rare: dict[int, int]
) -> Iterator[int]:
    """Where *mark* occurs in *data* (at least one per line holding it).

    Through the byte of *mark* rarest in the start of *data* (*rare*: how
    often each byte occurs there), found with memchr, when it is rare
    enough: a short mark made of common letters (``"retry_``) costs a slow
    full search otherwise.
    """
    rarest = min(set(mark), key=rare.__getitem__)
    if rare[rarest] > _RARE_IN_SAMPLE:
        at = data.find(mark)
        while at >= 0:
            yield at
            end = data.find(b"\n", at)
            at = -1 if end < 0 else data.find(mark, end)
        return
    offset = mark.index(rarest)
    byte = bytes((rarest,))
    at = data.find(byte, offset)
    while at >= 0:
        if data.startswith(mark, at - offset):
            yield at - offset
        at = data.find(byte, at + 1)


def marked_starts(data: bytes) -> list[int]:
    """Where the lines of *data* naming a resilience event start, in order.

    Their numbers are not counted here: a line's is wanted only when it
    is reported (see read._Source._parse).
    """
    sample = data[:_SAMPLE].count
    rare = {byte: sample(byte) for byte in _MARK_BYTES}
    rfind = data.rfind
    return sorted(
        {
            rfind(b"\n", 0, at) + 1
            for mark in EVENT_MARKS
            for at in _mark_positions(data, mark, rare)
        }
    )


def line_indices(data: bytes, starts: list[int]) -> list[int]:
    """The index in *data* of the line starting at each of *starts*."""
    indices: list[int] = []
    newlines = done = 0
    count = data.count
    for start in starts:
        newlines += count(b"\n", done, start)
        done = start
        indices.append(newlines)
    return indices


def _without(values: list[bytes], excluded: list[int]) -> list[bytes]:
    """*values* but those at the (increasing) indices *excluded*."""
    kept: list[bytes] = []
    after = 0
    for index in excluded:
        kept += values[after:index]
        after = index + 1
    kept += values[after:]
    return kept


def window_extremes(
    values: list[bytes],
    lo: bytes,
    hi: bytes,
    excluded: list[int],
    width: int = _WIDTH,
) -> Extremes:
    """What the line scanner finds for *values* against [lo, hi].

    (largest value inside, smallest, one below lo, one above hi), values
    compared on their first *width* bytes, as the line scanner compares
    them one at a time: NO_TOP and NO_BOTTOM when none is inside. The
    values at the indices *excluded* (lines parsed instead) are left out.
    """
    # The piece starting with the largest value is the largest piece.
    high = max(values, default=b"")
    low = min(values, default=b"")
    if excluded and any(
        values[index] is high or values[index] is low for index in excluded
    ):
        values = _without(values, excluded)
        excluded = []
        high = max(values, default=b"")
        low = min(values, default=b"")
    if not values:
        return NO_TOP, NO_BOTTOM, False, False
    top = high[:width]
    bottom = low[:width]
    if lo <= bottom and top <= hi:
        return top, bottom, False, False
    if top < lo:
        return NO_TOP, NO_BOTTOM, True, False
    raws = [value[:width] for value in _without(values, excluded)]
    inside = [raw for raw in raws if lo <= raw <= hi]
    before = bottom < lo
    after = any(raw > hi for raw in raws if raw >= lo)
    if not inside:
        return NO_TOP, NO_BOTTOM, before, after
    return max(inside), min(inside), before, after


def block_extremes(
    run: Run,
    lo: bytes,
    hi: bytes,
    marked: set[bytes],
    excluded: Callable[[], list[int]],
) -> Extremes:
    """window_extremes of *run*'s values, excluded() called late.

    *marked*: the values of the lines parsed instead, whose indices
    *excluded* counts (a pass over the block). They matter only when one
    of them is the largest or the smallest value, or when the window cuts
    into the block; otherwise the answer is the extremes themselves.
    """
    values, width = run.values, run.width
    if marked and values:
        top = max(values)[:width]
        bottom = min(values)[:width]
        if (
            top not in marked
            and bottom not in marked
            and lo <= bottom
            and top <= hi
        ):
            return top, bottom, False, False
        return window_extremes(values, lo, hi, excluded(), width)
    return window_extremes(values, lo, hi, [], width)
