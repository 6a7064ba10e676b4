"""Which exceptions are the dependency's fault, and which are the caller's.

Four verdicts:

* ``COUNTED``: a dependency failure; counts towards opening, is retried.
* ``IGNORED``: the dependency answered and the caller is at fault (HTTP
  4xx other than 408/429, SQLSTATE classes 22/23/42 and 25P02,
  SQLAlchemy's ``NoResultFound`` and ``MultipleResultsFound``, the
  policy's ``ignore_exceptions``): a success for the breaker, never
  retried.
* ``NEUTRAL``: a programming error (``TypeError``, ``AttributeError``...,
  ``acall`` given a function that returns no awaitable, SQLAlchemy's other
  ``InvalidRequestError`` s such as ``PendingRollbackError``): the
  dependency was perhaps never reached; neither success nor failure,
  never retried.
* ``PASSTHROUGH``: cancellation and interpreter exits, or our own refusals:
  never counted, never retried, re-raised untouched.

An exception is judged by the first recognisable fault along its chain
(:func:`fault_chain`): itself, then what it was raised from (a wrapper's
``.orig``, as SQLAlchemy's ``DBAPIError``, or ``__cause__``), else what it
was raised while handling (``__context__``, unless suppressed with
``raise ... from None``). Client libraries are optional: HTTP statuses and
SQLSTATEs are recognised by the attributes that carry them, so nothing is
imported here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Final

from sage_resilience._exception_names import resolve_exception_names
from sage_resilience.exceptions import (
    BulkheadFullError,
    ChaosError,
    CircuitOpenError,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sage_resilience._config import PolicyConfig

__all__ = [
    "COUNTED",
    "IGNORED",
    "MAX_CHAIN",
    "NEUTRAL",
    "PASSTHROUGH",
    "Classifier",
    "caller_sqlstate",
    "fault_chain",
    "http_status",
    "linked",
    "parse_retry_after",
    "retry_after_of",
    "sqlstate",
]

COUNTED: Final = 0
IGNORED: Final = 1
PASSTHROUGH: Final = 2
NEUTRAL: Final = 3

_NEVER_COUNTED: Final = (
    asyncio.CancelledError,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
    CircuitOpenError,
    BulkheadFullError,
)

#: Our own refusals: the dependency was not called. Also recognised down a
#: chain (an SDK that wraps what the transport raised).
_REFUSALS: Final = (CircuitOpenError, BulkheadFullError)

#: Bugs in the calling code, not faults of the dependency. ``await`` on
#: something that is not awaitable (``acall`` given a plain or generator
#: function) is a ``TypeError`` too.
_PROGRAMMING_ERRORS: Final = (
    TypeError,
    NameError,
    AttributeError,
    AssertionError,
    NotImplementedError,
)

#: SQLSTATE classes that mean "the query was wrong", not "the server is":
#: 22 data exception, 23 integrity constraint violation, 42 syntax error or
#: access rule violation.
_CALLER_SQLSTATE_CLASSES: Final = frozenset({"22", "23", "42"})
#: 25P02: a statement after an earlier error in the same transaction (a
#: unique violation, say); the server is fine, the transaction is not.
_IN_FAILED_TRANSACTION: Final = "25P02"

#: How many exceptions of one chain are looked at, at most.
MAX_CHAIN: Final = 16

#: SQLAlchemy's errors raised in the client, known by their class names
#: (nothing is imported). No row or several where one was expected
#: (``scalar_one()``, ``one()``): the dependency answered, the caller's
#: fault. The other ``InvalidRequestError`` s are raised before anything
#: is sent (a session to roll back first, a closed result): neutral.
_SQLALCHEMY_ANSWERED: Final = frozenset(
    {"NoResultFound", "MultipleResultsFound"}
)
_SQLALCHEMY_REFUSED: Final = "InvalidRequestError"


def _type_verdict(exc: BaseException) -> int | None:
    """What the exception's type alone says, if anything.

    NEUTRAL for a programming error, COUNTED for an ``OSError`` (refused,
    reset, timed out: the network), IGNORED or NEUTRAL for SQLAlchemy's
    client-side errors.
    """
    if isinstance(exc, _PROGRAMMING_ERRORS):
        return NEUTRAL
    if isinstance(exc, OSError):
        return COUNTED
    for klass in type(exc).__mro__:
        if klass.__module__.startswith("sqlalchemy."):
            if klass.__name__ in _SQLALCHEMY_ANSWERED:
                return IGNORED
            if klass.__name__ == _SQLALCHEMY_REFUSED:
                return NEUTRAL
    return None


def _attr(obj: object, name: str) -> Any:
    """``getattr`` that never raises (httpx's ``.request`` may)."""
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


def _as_status(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool):
        status = int(value)
        if 100 <= status <= 599:
            return status
    return None


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an exception carries, if any.

    ``status_code`` (openai, FastAPI), ``response.status_code`` (httpx,
    httpx2, requests) or ``status`` (aiohttp); only integers 100-599.
    """
    status = _as_status(_attr(exc, "status_code"))
    if status is None:
        status = _as_status(_attr(_attr(exc, "response"), "status_code"))
    if status is None:
        status = _as_status(_attr(exc, "status"))
    return status


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE an exception carries: ``sqlstate`` or ``pgcode``."""
    for name in ("sqlstate", "pgcode"):
        state = _attr(exc, name)
        if isinstance(state, str) and len(state) == 5:
            return state
    return None


def caller_sqlstate(state: str) -> bool:
    """Whether a SQLSTATE is the query's fault: classes 22, 23, 42, 25P02."""
    return (
        state[:2] in _CALLER_SQLSTATE_CLASSES
        or state == _IN_FAILED_TRANSACTION
    )


def linked(
    exc: BaseException, *, suppressed: bool = False
) -> list[BaseException]:
    """The exceptions *exc* points at, the most telling first.

    A wrapper's ``.orig`` (SQLAlchemy), ``__cause__``, then ``__context__``
    -- unless ``raise ... from`` suppressed it (include it anyway with
    *suppressed*, as the diagnosis does to find more details).
    """
    out: list[BaseException] = []
    orig = _attr(exc, "orig")
    if isinstance(orig, BaseException) and orig is not exc:
        out.append(orig)
    cause = exc.__cause__
    if cause is not None and cause is not orig:
        out.append(cause)
    context = exc.__context__
    if (
        context is not None
        and (suppressed or not exc.__suppress_context__)
        and context is not orig
        and context is not cause
    ):
        out.append(context)
    return out


def fault_chain(exc: BaseException) -> Iterator[BaseException]:
    """*exc*, then what it was raised from or while handling, in turn.

    One line through the chain, the way a traceback prints it: from each
    exception to its ``.orig`` or ``__cause__``, else to its unsuppressed
    ``__context__``. Stops at a cycle and after :data:`MAX_CHAIN`.
    """
    seen: list[int] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < MAX_CHAIN:
        if id(current) in seen:
            return
        seen.append(id(current))
        yield current
        nxt = linked(current)
        current = nxt[0] if nxt else None


def _status_carrier(exc: BaseException) -> tuple[BaseException, int] | None:
    """The first exception of the chain that carries an HTTP status.

    The walk stops at the first recognisable fault of another sort (a
    SQLSTATE, a refusal, a programming or network error): only a status
    that decides the verdict is returned.
    """
    for member in fault_chain(exc):
        if isinstance(member, _REFUSALS):
            return None
        status = http_status(member)
        if status is not None:
            return member, status
        if sqlstate(member) is not None or isinstance(
            member, (*_PROGRAMMING_ERRORS, OSError)
        ):
            return None
    return None


def retry_after_of(exc: BaseException) -> float | None:
    """Seconds a 429/503 answer asked to wait (Retry-After), if any.

    The answer is the one that decides the verdict: the first status along
    the chain (an SDK's own error, or the HTTP error it was raised from).
    """
    explicit = _attr(exc, "retry_after")
    if isinstance(explicit, int | float) and not isinstance(
        exc, CircuitOpenError
    ):
        return float(explicit)
    found = _status_carrier(exc)
    if found is None or found[1] not in {429, 503}:
        return None
    carrier = found[0]
    headers = _attr(_attr(carrier, "response"), "headers")
    if headers is None:
        headers = _attr(carrier, "headers")  # aiohttp
    try:
        value = headers.get("retry-after") if headers is not None else None
    except Exception:  # not a mapping after all
        return None
    return parse_retry_after(value if isinstance(value, str) else None)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait, or None.

    Accepts delta-seconds (``"3"``, ``"1.5"``) and an HTTP-date; a date in
    the past gives 0.

    .. versionadded:: 0.1.0
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return None if math.isnan(seconds) else max(0.0, seconds)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class Classifier:
    """The verdict on one exception, per a policy's configuration.

    Called on the failure path only (a few times per failed attempt): it
    reads a handful of attributes along at most :data:`MAX_CHAIN` links.
    """

    __slots__ = ("_config", "_ignore", "_record")

    def __init__(
        self,
        config: PolicyConfig,
        *,
        name: str,
        record: tuple[type[BaseException], ...] | None = None,
    ) -> None:
        self._config = config
        self._ignore = resolve_exception_names(
            config.ignore_exceptions,
            key=f"policies.{name}.ignore_exceptions",
        )
        self._record = (
            record
            if record is not None or config.record_exceptions is None
            else resolve_exception_names(
                config.record_exceptions,
                key=f"policies.{name}.record_exceptions",
            )
        )

    def __call__(self, exc: BaseException) -> int:
        """COUNTED, IGNORED, NEUTRAL or PASSTHROUGH."""
        if isinstance(exc, _NEVER_COUNTED) or not isinstance(exc, Exception):
            return PASSTHROUGH
        if isinstance(exc, ChaosError):
            return COUNTED  # injected faults count like real ones, always
        if self._ignore and isinstance(exc, self._ignore):
            return IGNORED
        if self._record is not None:
            return COUNTED if isinstance(exc, self._record) else IGNORED
        return self._judge(exc)

    def _judge(self, exc: BaseException) -> int:
        """The verdict of the first recognisable fault along the chain."""
        for member in fault_chain(exc):
            if isinstance(member, _REFUSALS):
                return PASSTHROUGH  # wrapped by an SDK: still not a call
            status = http_status(member)
            if status is not None:
                return (
                    COUNTED
                    if self._config.is_failure_status(status)
                    else IGNORED
                )
            state = sqlstate(member)
            if state is not None:
                return IGNORED if caller_sqlstate(state) else COUNTED
            verdict = _type_verdict(member)
            if verdict is not None:
                return verdict
        return COUNTED
