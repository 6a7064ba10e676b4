"""Walk an exception's whole chain and name the cause of the failure.

:func:`cause_of` is what the engine calls on every counted failure (it
fills ``last_cause``): the code only, no message building, and it never
imports httpx or asyncpg -- it only looks at them when the application
already has. This module never looks policies up: the engine imports it,
and the registry imports the engine.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Final

from sage_resilience._classify import http_status, linked, sqlstate
from sage_resilience._diagnosis.http import (
    httpx_base_of,
    httpx_cause,
    httpx_library,
    status_cause,
)
from sage_resilience._diagnosis.network import (
    UNREACHABLE_ERRNOS,
    is_refused,
    is_reset,
    refused_addresses,
    socket_cause,
)
from sage_resilience._diagnosis.postgres import (
    in_pg_connect,
    pg_timeout_cause,
    sqlstate_cause,
)
from sage_resilience._diagnosis.reading import frames, module_of
from sage_resilience.exceptions import CircuitOpenError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["cause_of", "find", "infer_kind", "walk"]

_MAX_CHAIN: Final = 64

#: Module prefixes of the client libraries, by dependency kind (httpx
#: covers httpx2, httpcore httpcore2, psycopg psycopg2).
_PG_MODULES: Final = ("asyncpg", "psycopg", "sqlalchemy.dialects.postgresql")
_HTTP_MODULES: Final = ("httpx", "httpcore", "openai", "aiohttp", "requests")


def walk(exc: BaseException) -> list[BaseException]:
    """The exception and all it links to, breadth first.

    The links of the classification (a wrapper's ``.orig``, ``__cause__``,
    ``__context__``), here also a context that ``raise ... from`` hid, and
    the members of exception groups: a diagnosis looks for every detail.
    """
    seen: set[int] = set()
    out: list[BaseException] = []
    queue: list[BaseException] = [exc]
    while queue and len(out) < _MAX_CHAIN:
        current = queue.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        out.append(current)
        if isinstance(current, BaseExceptionGroup):
            queue.extend(current.exceptions)
        queue.extend(linked(current, suppressed=True))
    return out


def _module_kind(module: str) -> str | None:
    if module.startswith(_PG_MODULES):
        return "postgres"
    if module.startswith(_HTTP_MODULES):
        return "http"
    return None


def _traceback_kind(chain: Sequence[BaseException]) -> str | None:
    """Which client library the failure went through, from its frames."""
    for exc in chain:
        for module, _ in frames(exc.__traceback__):
            kind = _module_kind(module)
            if kind is not None:
                return kind
    return None


def infer_kind(chain: Sequence[BaseException]) -> str | None:
    """``postgres`` or ``http`` from the classes or frames in *chain*."""
    for exc in chain:
        kind = _module_kind(module_of(exc))
        if kind is not None:
            return kind
    return _traceback_kind(chain)


def _classify(  # noqa: C901, PLR0911 - one return per cause
    exc: BaseException, kind: str | None, chain: Sequence[BaseException]
) -> tuple[str, bool] | None:
    """One exception's cause code, and whether it settles the question."""
    if isinstance(exc, CircuitOpenError):
        return "circuit_open", True
    module = module_of(exc)
    if module.startswith("asyncpg") or sqlstate(exc) is not None:
        pg = sqlstate_cause(exc)
        if pg is not None:
            return pg, True
    # An HTTP status, whoever carries it: httpx, httpx2, openai, requests,
    # aiohttp (the same attributes as the classification reads).
    status = http_status(exc)
    if status is not None and status >= 400:
        return status_cause(status), True
    if module.startswith(("httpx", "httpcore")):
        library = httpx_library(module)
        return None if library is None else httpx_cause(exc, library)
    library = httpx_base_of(exc)
    if library is not None:
        return httpx_cause(exc, library)
    code = socket_cause(exc)
    if code is not None:
        return code, True
    if isinstance(exc, TimeoutError):
        kind = kind or infer_kind(chain)
        if kind == "postgres":
            return pg_timeout_cause(chain), True
        if kind == "http":
            return "http_timeout", True
        return None
    if isinstance(exc, OSError):
        return _os_error_cause(exc, kind, chain)
    return None


def _os_error_cause(  # noqa: PLR0911 - one return per socket error
    exc: OSError, kind: str | None, chain: Sequence[BaseException]
) -> tuple[str, bool] | None:
    """A socket error, told apart by the kind of dependency it hit."""
    if is_refused(exc):
        kind = kind or infer_kind(chain)
        if kind != "postgres":
            return "connection_refused", True
        addresses = refused_addresses(chain)
        if addresses and all(host == "::1" for host, _ in addresses):
            return "pg_ipv6_localhost", True
        return "pg_refused", True
    if is_reset(exc):
        return "connection_reset", True
    if exc.errno == errno.ENOENT and in_pg_connect(chain):
        return "pg_refused", True  # no Unix socket: nothing listens
    if exc.errno in UNREACHABLE_ERRNOS:
        kind = kind or infer_kind(chain)
        if kind == "postgres":
            return "pg_unreachable", True
        if exc.errno == errno.ETIMEDOUT:
            return "http_timeout", True
        return "connection_refused", True
    return None


def find(
    exc: BaseException, kind: str | None
) -> tuple[str, BaseException, list[BaseException]]:
    """The cause code, the exception that tells it, and the whole chain."""
    chain = walk(exc)
    fallback: tuple[str, BaseException] | None = None
    for member in chain:
        found = _classify(member, kind, chain)
        if found is None:
            continue
        code, conclusive = found
        if conclusive:
            return code, member, chain
        if fallback is None:
            fallback = (code, member)
    if fallback is not None:
        return fallback[0], fallback[1], chain
    return "unknown", exc, chain


def cause_of(exc: BaseException, kind: str | None = None) -> str:
    """The cause code of a failure, without building any message.

    Cheap enough to call on every counted failure: it only walks the
    exception chain and never imports httpx or asyncpg.

    Args:
        exc: The exception raised by the dependency (or chained under it).
        kind: The dependency's kind (``"postgres"``, ``"http"``) when the
            exception alone cannot tell (a bare ``TimeoutError``).

    Returns:
        A code of :data:`~sage_resilience._diagnosis.describe.CAUSES`,
        ``"unknown"`` when none fits.

    .. versionadded:: 0.1.0
    """
    try:
        return find(exc, kind)[0]
    except Exception:  # a diagnosis must never break the failure path
        return "unknown"
