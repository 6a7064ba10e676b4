"""PostgreSQL clients: SQLSTATEs, connect versus query, pgvector.

The SQLSTATE is read the way the classification reads it (``sqlstate`` of
asyncpg and psycopg 3, ``pgcode`` of psycopg 2); asyncpg's frames in a
traceback tell a connect timeout from a query timeout. asyncpg itself is
never imported.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

from sage_resilience._classify import sqlstate
from sage_resilience._diagnosis.network import refused_addresses
from sage_resilience._diagnosis.reading import (
    clause,
    error_text,
    frames,
    message,
    one_line,
    where,
)

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

__all__ = [
    "describe_pg",
    "in_pg_connect",
    "pg_timeout_cause",
    "sqlstate_cause",
]

_VECTOR_OPERATORS: Final = ("<->", "<=>", "<#>", "<+>", "<~>", "<%>")
_CONNECT_FUNCTIONS: Final = frozenset(
    {"connect", "_connect", "_get_new_connection"}
)


def in_pg_connect(chain: Sequence[BaseException]) -> bool:
    """Whether the failure happened while asyncpg was connecting."""
    return any(
        module == "asyncpg.connect_utils"
        for exc in chain
        for module, _ in frames(exc.__traceback__)
    )


def pg_timeout_cause(chain: Sequence[BaseException]) -> str:
    """A timeout inside asyncpg: while connecting, or while querying."""
    saw_asyncpg = False
    for exc in chain:
        for module, func in frames(exc.__traceback__):
            if module == "asyncpg.connect_utils" or (
                module.startswith("asyncpg") and func in _CONNECT_FUNCTIONS
            ):
                return "pg_unreachable"
            saw_asyncpg = saw_asyncpg or module.startswith("asyncpg")
    return "pg_query_timeout" if saw_asyncpg else "pg_unreachable"


def sqlstate_cause(exc: BaseException) -> str | None:  # noqa: C901, PLR0911 - one return per SQLSTATE class
    """The cause code of a PostgreSQL error, by its SQLSTATE."""
    state = sqlstate(exc)
    text = message(exc)
    if state is None:
        if type(exc).__name__ == "ConnectionDoesNotExistError":
            return "connection_reset"
        return None
    if state in {"28P01", "28000"}:
        return "pg_auth_failed"
    if state == "3D000":
        return "pg_database_missing"
    if state == "42501":
        return "pg_permission_denied"
    if state == "53300":
        return "pg_too_many_connections"
    if state in {"0A000", "58P01", "42704", "42883"} and (
        _mentions_vector(text, exc)
    ):
        if state in {"0A000", "58P01"}:
            return "pgvector_not_installed"
        return "pgvector_not_enabled"
    if state == "57014":
        return "pg_query_timeout"
    if state == "57P03":
        return "pg_refused"
    if state in {"57P01", "57P02"} or state.startswith("08"):
        return "connection_reset"
    return None


def _mentions_vector(text: str, exc: BaseException) -> bool:
    full = " ".join([text, str(getattr(exc, "detail", "") or "")]).lower()
    return (
        'extension "vector"' in full
        or "vector.control" in full
        or 'type "vector"' in full
        or ("operator does not exist" in full and "vector" in full)
        or any(op in text for op in _VECTOR_OPERATORS)
    )


# -- describing ---------------------------------------------------------------


def _pg_params(
    settings: Mapping[str, Any], exc: BaseException
) -> dict[str, Any]:
    """What the policy's settings and the error say about the server."""
    details: dict[str, Any] = {}
    for key in ("host", "port", "database", "user"):
        value = settings.get(key)
        if value is not None:
            details[key] = value
    state = sqlstate(exc)
    if state is not None:
        details["sqlstate"] = state
    for name in ("detail", "hint"):
        value = getattr(exc, name, None)
        if value:
            details[name] = one_line(str(value))
    return details


def _quoted(text: str, word: str) -> str | None:
    match = re.search(rf'{word} "([^"]+)"', text)
    return match.group(1) if match else None


def _role(details: Mapping[str, Any]) -> str:
    user = details.get("user")
    return f" {user}" if user else ""


def _refused(exc: BaseException, details: Mapping[str, Any], said: str) -> str:
    """``pg_refused``: no socket, a server starting or stopping, or none."""
    if isinstance(exc, FileNotFoundError):
        return (
            "PostgreSQL's Unix socket does not exist at "
            f"{details.get('host', 'the socket directory')}: the server "
            "is not running, or uses another socket directory or port."
        )
    if details.get("sqlstate") == "57P03":
        return (
            f"PostgreSQL at {where(details)} refused the connection "
            f"while starting up or shutting down: {said}."
        )
    return (
        f"The connection to PostgreSQL at {where(details)} was "
        "refused: nothing listens there (server stopped, or a "
        "different host/port)."
    )


def _ipv6_localhost(
    details: Mapping[str, Any], settings: Mapping[str, Any]
) -> str:
    configured = settings.get("host")
    via = (
        f"host {configured!r} resolved to ::1"
        if configured
        else "the address is the IPv6 loopback ::1"
    )
    return (
        f"The connection to [::1]:{details.get('port')} was refused: "
        f"{via}, and PostgreSQL listens on IPv4 (127.0.0.1) only."
    )


def _unreachable(details: Mapping[str, Any]) -> str:
    hint = ""
    if str(details.get("host", "")).lower() == "localhost":
        hint = (
            " (with host 'localhost', also try 127.0.0.1: it may "
            "resolve to ::1 first)"
        )
    return (
        f"Connecting to PostgreSQL at {where(details)} timed out with "
        "no answer: the port is filtered by a firewall, or the host is "
        f"down or unreachable{hint}."
    )


def _describe_connect(
    code: str,
    exc: BaseException,
    chain: Sequence[BaseException],
    details: dict[str, Any],
    settings: Mapping[str, Any],
) -> str | None:
    """Failures to reach the server at all; None for other codes."""
    if code in {"pg_refused", "pg_ipv6_localhost"}:
        addresses = refused_addresses(chain)
        if addresses:
            details["host"], details["port"] = addresses[0]
            details["refused"] = [f"{h}:{p}" for h, p in addresses]
    if code == "pg_refused":
        said = clause(one_line(message(exc).split("\n", 1)[0]))
        return _refused(exc, details, said)
    if code == "pg_ipv6_localhost":
        return _ipv6_localhost(details, settings)
    if code == "pg_unreachable":
        return _unreachable(details)
    if code == "connection_reset":
        return (
            f"The connection to PostgreSQL at {where(details)} was "
            f"closed or reset ({error_text(exc)})."
        )
    return None


def _too_many_connections(said: str) -> str:
    scope = (
        "the role's CONNECTION LIMIT"
        if "for role" in said
        else "the server's max_connections"
    )
    return (
        f"PostgreSQL has no connection slot left ({scope} is reached): {said}."
    )


def _describe_answer(code: str, said: str, details: dict[str, Any]) -> str:  # noqa: C901, PLR0911 - one return per answer of the server
    """What the server answered; *said* is its message's first line."""
    if code == "pg_auth_failed":
        user = _quoted(said, "user") or _quoted(said, "role")
        if user:
            details["user"] = user
        return f"PostgreSQL refused the login: {said}."
    if code == "pg_database_missing":
        database = _quoted(said, "database")
        if database:
            details["database"] = database
        return f"PostgreSQL says: {said}."
    if code == "pg_permission_denied":
        return f"The role{_role(details)} lacks a privilege: {said}."
    if code == "pg_too_many_connections":
        return _too_many_connections(said)
    if code == "pgvector_not_installed":
        return (
            "The PostgreSQL server does not have the pgvector extension "
            f"installed: {said}."
        )
    if code == "pgvector_not_enabled":
        return (
            "pgvector is not enabled in database "
            f"{details.get('database', 'in use')}: {said}."
        )
    if code == "pg_query_timeout":
        if details.get("sqlstate") == "57014":
            return f"PostgreSQL cancelled a query: {said}."
        return (
            "A PostgreSQL query did not finish within the command timeout "
            "and was cancelled."
        )
    return said


def describe_pg(
    code: str,
    exc: BaseException,
    chain: Sequence[BaseException],
    settings: Mapping[str, Any],
) -> tuple[str, dict[str, Any]]:
    """The explanation of a PostgreSQL failure, and the details found.

    Args:
        code: The cause code (``pg_*``, ``pgvector_*`` or
            ``connection_reset``).
        exc: The exception that told the code.
        chain: The whole chain, for the refused addresses.
        settings: The policy's settings (host, port, database, user).
    """
    details = _pg_params(settings, exc)
    connecting = _describe_connect(code, exc, chain, details, settings)
    if connecting is not None:
        return connecting, details
    said = clause(one_line(message(exc).split("\n", 1)[0]))
    return _describe_answer(code, said, details), details
