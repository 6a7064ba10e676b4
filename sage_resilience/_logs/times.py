"""Log timestamps: reading them, and writing them back as ISO-8601 UTC.

Every time inside the log analysis is an int of microseconds since the
epoch (UTC), limited to what a datetime can hold (years 1 to 9999), so no
later step can overflow.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from typing import Final

__all__ = ["parse_time", "parse_timestamp"]

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
    if type(value) is str:  # the usual case, then the others in order
        return _text_to_us(value)
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
    return _text_to_us(value)


def _text_to_us(value: str) -> int | None:
    """parse_timestamp for a text."""
    text = value.strip()
    if not text or len(text) > 64:
        return None
    if text[-1] in "zZ":  # ISO-8601 UTC, and never a number
        return _iso_to_us(text[:-1] + "+00:00")
    if _NUMERIC.fullmatch(text):
        return _numeric_text_to_us(text)
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
