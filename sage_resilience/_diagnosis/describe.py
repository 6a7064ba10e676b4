"""Name the cause of a dependency failure, and its fix.

:func:`diagnose` takes whatever the application caught (an asyncpg error, an
httpx error, a builtin ``OSError``, a :class:`CircuitOpenError`, or any of
them chained under another exception or inside an exception group) and
returns a :class:`Diagnosis`: a stable cause code, one sentence saying what
happened and one saying what to do.

The code comes from :mod:`.chain` (the cheap part the engine also uses);
the sentences from :mod:`.postgres`, :mod:`.http` and :mod:`.network`.
This is the only diagnosis module that looks a policy up in the registry
(for its ``kind`` and ``settings``).
"""

from __future__ import annotations

import dataclasses
import enum
from typing import TYPE_CHECKING, Any

from sage_resilience._diagnosis.chain import cause_of, find, infer_kind
from sage_resilience._diagnosis.http import describe_http
from sage_resilience._diagnosis.postgres import describe_pg
from sage_resilience._diagnosis.reading import error_text
from sage_resilience._redact import redact, secrets_of
from sage_resilience._registry import policy as registered_policy
from sage_resilience.exceptions import CircuitOpenError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "CAUSES",
    "NO_CONTEXT",
    "Cause",
    "Context",
    "Diagnosis",
    "diagnose",
    "diagnose_in",
    "diagnosis_for",
]


class Cause(enum.StrEnum):
    """A diagnosis cause code (:attr:`Diagnosis.cause`).

    A ``str``: ``Cause.PG_REFUSED == "pg_refused"``, and it is written as
    its value in JSON, f-strings and ``str()``.

    .. versionadded:: 0.1.0
    """

    OK = "ok"
    PG_REFUSED = "pg_refused"
    PG_UNREACHABLE = "pg_unreachable"
    PG_IPV6_LOCALHOST = "pg_ipv6_localhost"
    PG_AUTH_FAILED = "pg_auth_failed"
    PG_DATABASE_MISSING = "pg_database_missing"
    PG_PERMISSION_DENIED = "pg_permission_denied"
    PG_TOO_MANY_CONNECTIONS = "pg_too_many_connections"
    PGVECTOR_NOT_INSTALLED = "pgvector_not_installed"
    PGVECTOR_NOT_ENABLED = "pgvector_not_enabled"
    PG_QUERY_TIMEOUT = "pg_query_timeout"
    HTTP_BAD_REQUEST = "http_bad_request"
    HTTP_UNAUTHORIZED = "http_unauthorized"
    HTTP_NOT_FOUND = "http_not_found"
    HTTP_RATE_LIMITED = "http_rate_limited"
    HTTP_SERVER_ERROR = "http_server_error"
    HTTP_TIMEOUT = "http_timeout"
    DNS_FAILURE = "dns_failure"
    TLS_FAILURE = "tls_failure"
    CONNECTION_REFUSED = "connection_refused"
    CONNECTION_RESET = "connection_reset"
    CIRCUIT_OPEN = "circuit_open"
    UNKNOWN = "unknown"


#: Every cause code, with what it means (the docs and ``doctor`` use it).
CAUSES: dict[Cause, str] = {
    Cause.OK: "the dependency answered as expected",
    Cause.PG_REFUSED: "nothing listens on the PostgreSQL host and port",
    Cause.PG_UNREACHABLE: "connecting to PostgreSQL timed out (filtered "
    "port, firewall, host down)",
    Cause.PG_IPV6_LOCALHOST: "localhost resolved to ::1, where PostgreSQL "
    "does not listen",
    Cause.PG_AUTH_FAILED: "PostgreSQL rejected the role or its password",
    Cause.PG_DATABASE_MISSING: "the database does not exist",
    Cause.PG_PERMISSION_DENIED: "the role lacks a privilege",
    Cause.PG_TOO_MANY_CONNECTIONS: "no connection slot left on the server or "
    "for the role",
    Cause.PGVECTOR_NOT_INSTALLED: "the server lacks the pgvector extension",
    Cause.PGVECTOR_NOT_ENABLED: "pgvector is installed but CREATE EXTENSION "
    "vector was not run in this database",
    Cause.PG_QUERY_TIMEOUT: "a query hit statement_timeout or the command "
    "timeout",
    Cause.HTTP_BAD_REQUEST: "the API rejected the request (400/422)",
    Cause.HTTP_UNAUTHORIZED: "the API key is missing, wrong or not allowed "
    "(401/403)",
    Cause.HTTP_NOT_FOUND: "the URL path does not exist (404)",
    Cause.HTTP_RATE_LIMITED: "the API is rate limiting (429)",
    Cause.HTTP_SERVER_ERROR: "the API failed on its side (5xx)",
    Cause.HTTP_TIMEOUT: "the API did not answer in time",
    Cause.DNS_FAILURE: "the host name does not resolve",
    Cause.TLS_FAILURE: "the TLS handshake or certificate check failed",
    Cause.CONNECTION_REFUSED: "nothing listens on the host and port",
    Cause.CONNECTION_RESET: "the peer closed or reset the connection",
    Cause.CIRCUIT_OPEN: "the circuit breaker refused the call",
    Cause.UNKNOWN: "not a failure diagnose recognises",
}

_FIXES: dict[str, str] = {
    "pg_refused": "Start PostgreSQL (check with pg_isready -h {host} -p "
    "{port}) or point the policy's settings host/port at where it runs.",
    "pg_unreachable": "Make sure {host} is up and that no firewall drops "
    "port {port} (on Windows allow postgres.exe through Windows Defender "
    "Firewall); raise the policy's timeout only if the network is merely "
    "slow.",
    "pg_ipv6_localhost": "Use host 127.0.0.1 (the Windows override in "
    "config/resilience.yaml does), or make PostgreSQL listen on ::1 too "
    "(listen_addresses).",
    "pg_auth_failed": "Check role {user} and its password (env PGPASSWORD "
    "or the variable named by settings.password_env) and the pg_hba.conf "
    "line for this client.",
    "pg_database_missing": "Create it (createdb -O {user} {database}) or "
    "fix settings.database / the DSN.",
    "pg_permission_denied": "Grant role {user} what it needs (GRANT CONNECT "
    "ON DATABASE, GRANT USAGE, CREATE ON SCHEMA public, GRANT SELECT, "
    "INSERT ON the tables) or connect as the owning role.",
    "pg_too_many_connections": "Lower the pool's max_size or close idle "
    "connections, or raise max_connections / the role's CONNECTION LIMIT.",
    "pgvector_not_installed": "Install pgvector on the database server "
    "(e.g. apt install postgresql-{major}-pgvector, or build it from "
    "github.com/pgvector/pgvector), then run CREATE EXTENSION vector; in "
    "database {database}.",
    "pgvector_not_enabled": "Run CREATE EXTENSION vector; in database "
    "{database}.",
    "pg_query_timeout": "Find the slow query (EXPLAIN ANALYZE; an index on "
    "the vector column) or raise statement_timeout / the policy's timeout.",
    "http_bad_request": "Fix what the provider's message points at (model "
    "name, parameters); retrying the same request will not help.",
    "http_unauthorized": "Set a valid API key in the environment variable "
    "named by settings.api_key_env (default SILICONFLOW_API_KEY) and check "
    "that the account may use this model.",
    "http_not_found": "Check settings.base_url (OpenAI-compatible APIs "
    "usually end in /v1) and the endpoint path.",
    "http_rate_limited": "Slow down (wait {retry_after} as Retry-After "
    "asks, lower the concurrency) or raise the account's rate limit.",
    "http_server_error": "Nothing to fix on this side: let the breaker "
    "hold calls off and check the provider's status page if it lasts.",
    "http_timeout": "Raise the policy's timeout if {host} is merely slow, "
    "otherwise check the network path and proxies to it.",
    "dns_failure": "Check the host name {host} (settings.base_url or "
    "settings.host) and the machine's DNS configuration.",
    "tls_failure": "Check the certificate of {host} (expired, self-signed, "
    "wrong name) or point SSL_CERT_FILE at the CA that signed it; do not "
    "turn verification off in production.",
    "connection_refused": "Start the service or fix the host/port "
    "({host}:{port}) in settings.base_url.",
    "connection_reset": "Check proxies, load balancers and the server's "
    "logs for dropped connections; retries cover occasional resets.",
    "circuit_open": "Fix the failure that opened it ({last_cause}); the "
    "breaker lets a probe through after recovery_timeout, or close it by "
    "hand with: sage-resilience breaker close {policy}.",
    "unknown": "Read details['error']; if it is a dependency failure "
    "diagnose should know, report it with the traceback.",
}

_PLACEHOLDERS = {
    "host": "the host",
    "port": "the port",
    "user": "the role",
    "database": "the application's database",
    "retry_after": "as long",
    "last_cause": "see last_failure",
    "policy": "NAME",
    "major": "NN",
}


@dataclasses.dataclass(frozen=True, slots=True)
class Diagnosis:
    """What went wrong with a dependency, and what to do about it.

    Attributes:
        cause: A stable code (``pg_refused``, ``http_rate_limited``...; a
            :class:`Cause`, equal to its string).
        explanation: One sentence about this very failure, secrets
            redacted.
        fix: One actionable sentence.
        details: What was found: ``error`` (``"Type: message"``), ``kind``
            and, where known, ``host``, ``port``, ``database``, ``user``,
            ``sqlstate``, ``status``, ``url`` (no secrets),
            ``retry_after``, ``last_cause``...

    .. versionadded:: 0.1.0
    """

    cause: Cause
    explanation: str
    fix: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy (``cause`` a plain ``str``)."""
        return {
            "cause": str(self.cause),
            "explanation": self.explanation,
            "fix": self.fix,
            "details": dict(self.details),
        }


@dataclasses.dataclass(frozen=True, slots=True)
class Context:
    """What the policy tells a diagnosis that the exception may not.

    Attributes:
        kind: ``postgres``, ``http`` or None (then inferred).
        settings: The policy's settings (host, port, base_url...).
        policy: The policy's name, for ``details["policy"]``.
    """

    kind: str | None
    settings: Mapping[str, Any]
    policy: str | None


#: No policy: the kind is inferred from the exception alone.
NO_CONTEXT = Context(None, {}, None)


def _describe_circuit(
    exc: CircuitOpenError, ctx: Context
) -> tuple[str, dict[str, Any]]:
    last_cause = exc.last_cause
    if last_cause is None and exc.__cause__ is not None:
        last_cause = cause_of(exc.__cause__, ctx.kind)
    details: dict[str, Any] = {
        "policy": exc.policy,
        "state": exc.state,
        "last_cause": last_cause,
        "last_failure": exc.last_failure,
        "failure_count": exc.failure_count,
        "retry_after": exc.retry_after,
        "forced": exc.forced,
    }
    if exc.forced:
        why = "it was opened by an operator"
    elif exc.state == "half-open":
        why = "it is half-open and every probe slot is taken"
    else:
        why = f"it is open after {exc.failure_count} counted failure(s)"
    last = exc.last_failure or "unknown"
    cause = f" ({last_cause})" if last_cause else ""
    return (
        f"The circuit breaker of policy {exc.policy!r} refused the call "
        f"without calling the dependency: {why}; the last failure was "
        f"{last}{cause}; next probe in {exc.retry_after:.1f}s."
    ), details


def _fix(code: str, params: Mapping[str, Any]) -> str:
    values = dict(_PLACEHOLDERS)
    for key, value in params.items():
        if value is not None and key in values:
            values[key] = f"{value:g}s" if key == "retry_after" else str(value)
    return _FIXES[code].format_map(values)


def _policy_context(policy: str | object | None) -> Context:
    if policy is None:
        return NO_CONTEXT
    if isinstance(policy, str):
        name: str | None = policy
        config: Any = None
        try:
            config = registered_policy(policy).config
        except Exception:  # the registry may not know it: no kind then
            config = None
    else:
        name = getattr(policy, "name", None)
        config = getattr(policy, "config", policy)
    kind = getattr(config, "kind", None)
    settings = getattr(config, "settings", None)
    return Context(
        kind if isinstance(kind, str) else None,
        settings if isinstance(settings, dict) else {},
        name if isinstance(name, str) else None,
    )


def diagnose(
    exc: BaseException, *, policy: str | object | None = None
) -> Diagnosis:
    """Name the cause of a dependency failure and say how to fix it.

    Walks the whole exception chain (``__cause__``, ``__context__`` and the
    members of exception groups) down to the error that tells what really
    happened: an asyncpg error by SQLSTATE, an httpx status or transport
    error, a builtin ``OSError`` (refused, reset, DNS, TLS), a timeout, or
    a :class:`~sage_resilience.CircuitOpenError`.

    Args:
        exc: What the application caught.
        policy: The policy's name or the :class:`Policy` (anything with a
            ``config``); its ``kind`` and ``settings`` tell a bare timeout
            of PostgreSQL from one of an HTTP API, and name the host and
            database in the explanation.

    Returns:
        A :class:`Diagnosis`; ``cause`` is ``"unknown"`` when nothing
        fits. Every text in it has secrets redacted.

    .. versionadded:: 0.1.0
    """
    return diagnose_in(exc, _policy_context(policy))


def diagnose_in(exc: BaseException, ctx: Context) -> Diagnosis:
    """:func:`diagnose` with the context already known (the doctor's)."""
    code, found, chain = find(exc, ctx.kind)
    kind = ctx.kind or infer_kind(chain)
    params: dict[str, Any]
    if code == "circuit_open" and isinstance(found, CircuitOpenError):
        explanation, params = _describe_circuit(found, ctx)
    elif code.startswith("pg") or (
        kind == "postgres" and code == "connection_reset"
    ):
        explanation, params = describe_pg(code, found, chain, ctx.settings)
    elif code == "unknown":
        explanation = f"Not a failure diagnose recognises: {error_text(exc)}."
        params = {}
    else:
        explanation, params = describe_http(code, found, chain, ctx.settings)
    details: dict[str, Any] = {"error": error_text(found), "kind": kind}
    if ctx.policy is not None:
        details.setdefault("policy", ctx.policy)
    details.update(params)
    # The key the request carried, should the provider echo it back.
    known = secrets_of(exc)
    return Diagnosis(
        cause=Cause(code),
        explanation=redact(explanation, known=known),
        fix=redact(_fix(code, details), known=known),
        details=_redact_details(details, known),
    )


def _redact_details(
    details: dict[str, Any], known: tuple[str, ...] = ()
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in details.items():
        if isinstance(value, str):
            out[key] = redact(value, known=known)
        elif isinstance(value, list):
            out[key] = [
                redact(v, known=known) if isinstance(v, str) else v
                for v in value
            ]
        else:
            out[key] = value
    return out


def diagnosis_for(
    cause: str,
    explanation: str,
    *,
    details: Mapping[str, Any] | None = None,
    fix: str | None = None,
) -> Diagnosis:
    """Build a diagnosis for a cause found without an exception.

    ``doctor`` uses it for what a check finds by looking (pgvector missing
    from ``pg_available_extensions``) rather than by failing. The fix is
    the cause's own unless *fix* is given; ``ok`` has none.
    """
    params = dict(details or {})
    if fix is None:
        fix = _fix(cause, params) if cause in _FIXES else ""
    return Diagnosis(
        cause=Cause(cause),
        explanation=redact(explanation),
        fix=redact(fix),
        details=_redact_details(params),
    )
