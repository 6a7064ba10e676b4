"""One line of a log: its time without a full parse, its event, its faults.

Used by the scanner (:mod:`.read`) on the few lines it looks at one by
one, and by the aggregation (:mod:`.summary`) for states and counts.
Whatever a line holds, these answer or refuse: never an exception.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any, Final

from sage_resilience._logs.model import (
    _EVENTS,
    EVENT_KEYS,
    TIME_KEYS,
    KeysSeen,
)
from sage_resilience._logs.times import _MAX_US, _moment, parse_timestamp
from sage_resilience._names import STATE_CHANGED

__all__: list[str] = []

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


_DIGITS: Final = b"0123456789"
# json.loads' own decoder (no hooks), called directly.
_decode: Final = json.JSONDecoder().decode


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

    @classmethod
    def of(cls, marker: bytes, unit_us: int, template: str) -> _SortableTime:
        """The shape of *template*'s values (width, skeleton, zone)."""
        sample = cls(marker, 0, b"", b"", unit_us, template).render(0)
        return cls(
            marker=marker,
            width=len(sample),
            skeleton=sample.translate(None, _DIGITS),
            tail=template.rpartition("}")[2].encode(),
            unit_us=unit_us,
            template=template,
        )

    def find(self, line: bytes) -> bytes | None:
        """This shape's value in *line* (``b""`` if it has another shape).

        None when *line* lacks the shape's key.
        """
        i = line.find(self.marker)
        if i < 0:
            return None
        start = i + len(self.marker)
        end = start + self.width
        raw = line[start:end]
        if (
            line[end : end + 1] != b'"'
            or len(raw) != self.width
            or raw[4] != 45  # -
            or raw.translate(None, _DIGITS) != self.skeleton
            or not raw.endswith(self.tail)
        ):
            return b""
        return raw

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
    _SortableTime.of(
        b'"asctime": "',
        1000,
        "{y:04d}-{mo:02d}-{d:02d} {h:02d}:{mi:02d}:{s:02d},{ms:03d}",
    ),
    # ECS (ecs-logging): milliseconds and Z.
    _SortableTime.of(
        b'"@timestamp":"',
        1000,
        "{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{ms:03d}Z",
    ),
    # python-json-logger's timestamp=True: microseconds and +00:00.
    _SortableTime.of(
        b'"timestamp": "',
        1,
        "{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}.{us:06d}+00:00",
    ),
)


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
        if line[:1] == b"{" and line[1:2] != b"\0":
            # What json.loads does with such bytes (they are UTF-8 to its
            # encoding detection), without the detection and the checks.
            return _decode(line.decode("utf-8", "surrogatepass")), None
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
