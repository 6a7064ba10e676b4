"""Which exceptions are the dependency's fault (contract 4.1 and 4.2).

Three verdicts:

* ``COUNTED``: a dependency failure; counts towards opening, is retried.
* ``IGNORED``: the dependency answered and the caller is at fault (HTTP
  4xx other than 408/429, SQL data/constraint/syntax errors, the policy's
  ``ignore_exceptions``): a success for the breaker, never retried.
* ``PASSTHROUGH``: cancellation and interpreter exits, or our own refusals:
  never counted, never retried, re-raised untouched.

httpx and asyncpg are optional: their exceptions are recognised by duck
typing (module name plus attribute), so nothing is imported here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import math
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Final

from sage_resilience.exceptions import (
    BulkheadFullError,
    ChaosError,
    CircuitOpenError,
    ConfigError,
)

if TYPE_CHECKING:
    from sage_resilience._config import PolicyConfig

__all__ = [
    "COUNTED",
    "IGNORED",
    "PASSTHROUGH",
    "Classifier",
    "parse_retry_after",
    "resolve_exception_names",
    "retry_after_of",
]

COUNTED: Final = 0
IGNORED: Final = 1
PASSTHROUGH: Final = 2

_NEVER_COUNTED: Final = (
    asyncio.CancelledError,
    KeyboardInterrupt,
    SystemExit,
    GeneratorExit,
    CircuitOpenError,
    BulkheadFullError,
)

#: SQLSTATE classes that mean "the query was wrong", not "the server is":
#: 22 data exception, 23 integrity constraint violation, 42 syntax error or
#: access rule violation.
_CALLER_SQLSTATE_CLASSES: Final = frozenset({"22", "23", "42"})
#: 25P02: a statement after an earlier error in the same transaction (a
#: unique violation, say); the server is fine, the transaction is not.
_IN_FAILED_TRANSACTION: Final = "25P02"


def resolve_exception_names(
    names: tuple[str, ...], *, key: str
) -> tuple[type[BaseException], ...]:
    """Import dotted exception class names from the YAML.

    Raises:
        ConfigError: A name cannot be imported or is not an exception.
    """
    resolved: list[type[BaseException]] = []
    for index, dotted in enumerate(names):
        module_name, _, attr = dotted.rpartition(".")
        where = f"{key}[{index}]"
        if not module_name:
            module_name = "builtins"
        try:
            obj = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ConfigError(
                f"cannot import {dotted!r} ({exc})", key=where
            ) from exc
        if not (isinstance(obj, type) and issubclass(obj, BaseException)):
            raise ConfigError(f"{dotted!r} is not an exception", key=where)
        resolved.append(obj)
    return tuple(resolved)


def _http_status(exc: BaseException) -> int | None:
    """The status of an ``httpx.HTTPStatusError`` (or look-alike)."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    return status if isinstance(status, int) else None


def _is_httpx_status_error(exc: BaseException) -> bool:
    return type(exc).__name__ == "HTTPStatusError" and type(
        exc
    ).__module__.startswith("httpx")


def _sqlstate(exc: BaseException) -> str | None:
    if not type(exc).__module__.startswith("asyncpg"):
        return None
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) else None


def retry_after_of(exc: BaseException) -> float | None:
    """Seconds a 429/503 answer asked to wait (Retry-After), if any."""
    explicit = getattr(exc, "retry_after", None)
    if isinstance(explicit, int | float) and not isinstance(
        exc, CircuitOpenError
    ):
        return float(explicit)
    if _http_status(exc) not in {429, 503}:
        return None
    headers = getattr(getattr(exc, "response", None), "headers", None)
    return parse_retry_after(
        headers.get("retry-after") if headers is not None else None
    )


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
    """The verdict on one exception, per a policy's configuration."""

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
        """COUNTED, IGNORED or PASSTHROUGH."""
        if isinstance(exc, _NEVER_COUNTED) or not isinstance(exc, Exception):
            return PASSTHROUGH
        if isinstance(exc, ChaosError):
            return COUNTED  # injected faults count like real ones, always
        if self._ignore and isinstance(exc, self._ignore):
            return IGNORED
        if self._record is not None:
            return COUNTED if isinstance(exc, self._record) else IGNORED
        if _is_httpx_status_error(exc):
            status = _http_status(exc)
            if status is not None and not self._config.is_failure_status(
                status
            ):
                return IGNORED
            return COUNTED
        state = _sqlstate(exc)
        if state is not None and (
            state[:2] in _CALLER_SQLSTATE_CLASSES
            or state == _IN_FAILED_TRANSACTION
        ):
            return IGNORED
        return COUNTED
