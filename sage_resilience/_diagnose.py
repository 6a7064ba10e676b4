"""Name the cause of a dependency failure, and its fix.

:func:`diagnose` takes whatever the application caught (an asyncpg error, an
httpx error, a builtin ``OSError``, a :class:`CircuitOpenError`, or any of
them chained under another exception or inside an exception group) and
returns a :class:`Diagnosis`: a stable cause code (contract section 8), one
sentence saying what happened and one saying what to do.

:func:`cause_of` is the cheap variant the engine calls on every counted
failure (it fills ``last_cause``): the code only, no message building, and
it never imports httpx or asyncpg -- it only looks at them when the
application already has.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import re
import sys
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sage_resilience._classify import (
    http_status,
    linked,
    parse_retry_after,
    sqlstate,
)
from sage_resilience._redact import (
    MAX_TEXT,
    REDACTED,
    is_secret_key,
    redact,
    secrets_of,
)
from sage_resilience.exceptions import CircuitOpenError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping
    from types import TracebackType

__all__ = [
    "CAUSES",
    "Diagnosis",
    "cause_of",
    "diagnose",
    "parse_retry_after",
]

#: Every cause code, with what it means (the docs and ``doctor`` use it).
CAUSES: dict[str, str] = {
    "ok": "the dependency answered as expected",
    "pg_refused": "nothing listens on the PostgreSQL host and port",
    "pg_unreachable": "connecting to PostgreSQL timed out (filtered port, "
    "firewall, host down)",
    "pg_ipv6_localhost": "localhost resolved to ::1, where PostgreSQL does "
    "not listen",
    "pg_auth_failed": "PostgreSQL rejected the role or its password",
    "pg_database_missing": "the database does not exist",
    "pg_permission_denied": "the role lacks a privilege",
    "pg_too_many_connections": "no connection slot left on the server or "
    "for the role",
    "pgvector_not_installed": "the server lacks the pgvector extension",
    "pgvector_not_enabled": "pgvector is installed but CREATE EXTENSION "
    "vector was not run in this database",
    "pg_query_timeout": "a query hit statement_timeout or the command timeout",
    "http_bad_request": "the API rejected the request (400/422)",
    "http_unauthorized": "the API key is missing, wrong or not allowed "
    "(401/403)",
    "http_not_found": "the URL path does not exist (404)",
    "http_rate_limited": "the API is rate limiting (429)",
    "http_server_error": "the API failed on its side (5xx)",
    "http_timeout": "the API did not answer in time",
    "dns_failure": "the host name does not resolve",
    "tls_failure": "the TLS handshake or certificate check failed",
    "connection_refused": "nothing listens on the host and port",
    "connection_reset": "the peer closed or reset the connection",
    "circuit_open": "the circuit breaker refused the call",
    "unknown": "not a failure diagnose recognises",
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
        cause: A stable code (``pg_refused``, ``http_rate_limited``...; see
            :data:`CAUSES`).
        explanation: One sentence about this very failure, secrets
            redacted.
        fix: One actionable sentence.
        details: What was found: ``error`` (``"Type: message"``), ``kind``
            and, where known, ``host``, ``port``, ``database``, ``user``,
            ``sqlstate``, ``status``, ``url`` (no secrets),
            ``retry_after``, ``last_cause``...

    .. versionadded:: 0.1.0
    """

    cause: str
    explanation: str
    fix: str
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly copy."""
        return {
            "cause": self.cause,
            "explanation": self.explanation,
            "fix": self.fix,
            "details": dict(self.details),
        }


# -- walking the chain --------------------------------------------------------

_MAX_CHAIN = 64


def _chain(exc: BaseException) -> list[BaseException]:
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


def _module(exc: BaseException) -> str:
    return type(exc).__module__ or ""


#: Frames of one traceback read at most: an exception object raised again
#: and again (a cached error) grows its traceback with every raise, and
#: every counted failure reads it.
_MAX_FRAMES = 256


def _frames(tb: TracebackType | None) -> Iterator[tuple[str, str]]:
    for _ in range(_MAX_FRAMES):
        if tb is None:
            return
        code = tb.tb_frame.f_code
        yield str(tb.tb_frame.f_globals.get("__name__", "")), code.co_name
        tb = tb.tb_next


#: Module prefixes of the client libraries, by dependency kind (httpx
#: covers httpx2, httpcore httpcore2, psycopg psycopg2).
_PG_MODULES = ("asyncpg", "psycopg", "sqlalchemy.dialects.postgresql")
_HTTP_MODULES = ("httpx", "httpcore", "openai", "aiohttp", "requests")


def _module_kind(module: str) -> str | None:
    if module.startswith(_PG_MODULES):
        return "postgres"
    if module.startswith(_HTTP_MODULES):
        return "http"
    return None


def _traceback_kind(chain: list[BaseException]) -> str | None:
    """Which client library the failure went through, from its frames."""
    for exc in chain:
        for module, _ in _frames(exc.__traceback__):
            kind = _module_kind(module)
            if kind is not None:
                return kind
    return None


def _infer_kind(chain: list[BaseException]) -> str | None:
    for exc in chain:
        kind = _module_kind(_module(exc))
        if kind is not None:
            return kind
    return _traceback_kind(chain)


def _httpx_library(module: str) -> Any:
    """The httpx or httpx2 module (same classes) that *module* is from."""
    root = module.partition(".")[0]
    if root in {"httpx", "httpx2"}:
        return sys.modules.get(root)
    return None


def _in_pg_connect(chain: list[BaseException]) -> bool:
    """Whether the failure happened while asyncpg was connecting."""
    return any(
        module == "asyncpg.connect_utils"
        for exc in chain
        for module, _ in _frames(exc.__traceback__)
    )


def _pg_timeout_cause(chain: list[BaseException]) -> str:
    """A timeout inside asyncpg: while connecting, or while querying."""
    saw_asyncpg = False
    for exc in chain:
        for module, func in _frames(exc.__traceback__):
            if module == "asyncpg.connect_utils" or (
                module.startswith("asyncpg")
                and func in {"connect", "_connect", "_get_new_connection"}
            ):
                return "pg_unreachable"
            saw_asyncpg = saw_asyncpg or module.startswith("asyncpg")
    return "pg_query_timeout" if saw_asyncpg else "pg_unreachable"


# -- classification -----------------------------------------------------------

_ADDRESS = re.compile(r"\('([0-9A-Fa-f:.]+|[\w.-]+)', (\d+)")
_REFUSED_TEXT = re.compile(
    r"\[Errno (?:111|61|10061)\]|Connect call failed|connection refused",
    re.IGNORECASE,
)
_VECTOR_OPERATORS = ("<->", "<=>", "<#>", "<+>", "<~>", "<%>")


def _refused_addresses(chain: list[BaseException]) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for exc in chain:
        if isinstance(exc, OSError) and _is_refused(exc):
            for host, port in _ADDRESS.findall(_message(exc)):
                if (host, int(port)) not in found:
                    found.append((host, int(port)))
    return found


def _is_refused(exc: OSError) -> bool:
    if isinstance(exc, ConnectionRefusedError):
        return True
    if exc.errno == errno.ECONNREFUSED:
        return True
    # asyncio joins several failed addresses into one OSError(errno None).
    return exc.errno is None and bool(_REFUSED_TEXT.search(_message(exc)))


def _sqlstate_cause(exc: BaseException) -> str | None:
    state = sqlstate(exc)
    message = _message(exc)
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
        _mentions_vector(message, exc)
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


def _mentions_vector(message: str, exc: BaseException) -> bool:
    text = " ".join([message, str(getattr(exc, "detail", "") or "")]).lower()
    return (
        'extension "vector"' in text
        or "vector.control" in text
        or 'type "vector"' in text
        or ("operator does not exist" in text and "vector" in text)
        or any(op in message for op in _VECTOR_OPERATORS)
    )


def _status_cause(status: int) -> str:
    if status in {401, 403}:
        return "http_unauthorized"
    if status == 404:
        return "http_not_found"
    if status == 429:
        return "http_rate_limited"
    if status == 408:
        return "http_timeout"
    if status >= 500:
        return "http_server_error"
    if status >= 400:
        return "http_bad_request"
    return "unknown"


def _httpx_cause(exc: BaseException, httpx: Any) -> tuple[str, bool] | None:
    """Classify an httpx error; the bool says whether it is conclusive."""
    if isinstance(exc, httpx.HTTPStatusError):
        return _status_cause(exc.response.status_code), True
    if isinstance(exc, httpx.TimeoutException):
        return "http_timeout", True
    if isinstance(exc, httpx.ConnectError):
        text = _message(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
            return "tls_failure", False
        if re.search(
            r"Name or service not known|nodename nor servname|"
            r"getaddrinfo failed|Temporary failure in name",
            text,
        ):
            return "dns_failure", False
        return "connection_refused", False
    if isinstance(
        exc,
        (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError),
    ):
        return "connection_reset", False
    return None


def _classify(
    exc: BaseException, kind: str | None, chain: list[BaseException]
) -> tuple[str, bool] | None:
    """One exception's cause code, and whether it settles the question."""
    if isinstance(exc, CircuitOpenError):
        return "circuit_open", True
    module = _module(exc)
    if module.startswith("asyncpg") or sqlstate(exc) is not None:
        pg = _sqlstate_cause(exc)
        if pg is not None:
            return pg, True
    # An HTTP status, whoever carries it: httpx, httpx2, openai, requests,
    # aiohttp (the same attributes as the classification reads).
    status = http_status(exc)
    if status is not None and status >= 400:
        return _status_cause(status), True
    if module.startswith(("httpx", "httpcore")):
        library = _httpx_library(module)
        return None if library is None else _httpx_cause(exc, library)
    for name in ("httpx", "httpx2"):
        library = sys.modules.get(name)
        if library is not None and isinstance(exc, library.HTTPError):
            # A subclass defined elsewhere (our transport's errors).
            return _httpx_cause(exc, library)
    ssl = sys.modules.get("ssl")
    if ssl is not None and isinstance(exc, ssl.SSLError):
        return "tls_failure", True
    socket = sys.modules.get("socket")
    if socket is not None and isinstance(exc, socket.gaierror):
        return "dns_failure", True
    if isinstance(exc, TimeoutError):
        kind = kind or _infer_kind(chain)
        if kind == "postgres":
            return _pg_timeout_cause(chain), True
        if kind == "http":
            return "http_timeout", True
        return None
    if isinstance(exc, OSError):
        return _os_error_cause(exc, kind, chain)
    return None


def _os_error_cause(
    exc: OSError, kind: str | None, chain: list[BaseException]
) -> tuple[str, bool] | None:
    if _is_refused(exc):
        kind = kind or _infer_kind(chain)
        if kind != "postgres":
            return "connection_refused", True
        addresses = _refused_addresses(chain)
        if addresses and all(host == "::1" for host, _ in addresses):
            return "pg_ipv6_localhost", True
        return "pg_refused", True
    if isinstance(
        exc, (ConnectionResetError, ConnectionAbortedError, BrokenPipeError)
    ):
        return "connection_reset", True
    if exc.errno == errno.ENOENT and _in_pg_connect(chain):
        return "pg_refused", True  # no Unix socket: nothing listens
    if exc.errno in {
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
    }:
        kind = kind or _infer_kind(chain)
        if kind == "postgres":
            return "pg_unreachable", True
        if exc.errno == errno.ETIMEDOUT:
            return "http_timeout", True
        return "connection_refused", True
    return None


def _find(
    exc: BaseException, kind: str | None
) -> tuple[str, BaseException, list[BaseException]]:
    """The cause code, the exception that tells it, and the whole chain."""
    chain = _chain(exc)
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
        A code of :data:`CAUSES`, ``"unknown"`` when none fits.

    .. versionadded:: 0.1.0
    """
    try:
        return _find(exc, kind)[0]
    except Exception:  # a diagnosis must never break the failure path
        return "unknown"


# -- describing ---------------------------------------------------------------


def _message(exc: BaseException) -> str:
    """The start of *exc*'s message: what diagnosis reads is bounded.

    ``cause_of`` runs on every counted failure; a 10 MB message must cost
    no more than a short one.
    """
    try:
        return str(exc)[:MAX_TEXT]
    except Exception:  # a broken __str__: diagnose without the text
        return ""


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text[: 4 * limit + 64].split())
    if len(text) > limit:
        text = text[: limit - 3].rstrip() + "..."
    return text


def _clause(text: str) -> str:
    """Text to embed in a sentence: no trailing period of its own."""
    return text.rstrip().rstrip(".")


def _error_text(exc: BaseException) -> str:
    message = _one_line(_message(exc).strip().split("\n", 1)[0])
    name = type(exc).__name__
    return redact(f"{name}: {message}" if message else name)


def safe_url(url: str) -> str:
    """*url* without its password, and with secret query values hidden."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = (
            f"{user}:{REDACTED}@{hostport}"
            if ":" in userinfo
            else (f"{user}@{hostport}")
        )
    query = parts.query
    if query:
        pairs = [
            (
                k,
                REDACTED
                if is_secret_key(k) or k.lower() in {"key", "sig"}
                else v,
            )
            for k, v in parse_qsl(query, keep_blank_values=True)
        ]
        query = urlencode(pairs, safe="*")
    return redact(
        urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    )


def _provider_message(response: Any) -> tuple[str | None, dict[str, Any]]:
    """The API's own error message from a response body, and its codes."""
    try:
        content: bytes = response.content
    except Exception:  # a streamed response that was never read
        return None, {}
    if not content:
        return None, {}
    try:
        data = json.loads(content)
    except ValueError:
        text = content.decode("utf-8", errors="replace")
        return (_one_line(text, 300) or None), {}
    extra: dict[str, Any] = {}
    message: Any = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):  # OpenAI style
            message = error.get("message")
            for key in ("type", "code", "param"):
                if error.get(key) is not None:
                    extra[f"provider_{key}"] = error[key]
        elif isinstance(error, str):
            message = error
        if message is None:  # SiliconFlow style {"code":..,"message":..}
            message = data.get("message") or data.get("detail")
            if data.get("code") is not None:
                extra["provider_code"] = data["code"]
    if message is None:
        message = data
    if not isinstance(message, str):
        message = json.dumps(message, ensure_ascii=False)
    return _one_line(message, 300) or None, extra


@dataclasses.dataclass(slots=True)
class _Context:
    kind: str | None
    settings: Mapping[str, Any]
    policy: str | None


def _pg_params(ctx: _Context, exc: BaseException) -> dict[str, Any]:
    details: dict[str, Any] = {}
    for key in ("host", "port", "database", "user"):
        value = ctx.settings.get(key)
        if value is not None:
            details[key] = value
    state = sqlstate(exc)
    if state is not None:
        details["sqlstate"] = state
    for attr in ("detail", "hint"):
        value = getattr(exc, attr, None)
        if value:
            details[attr] = _one_line(str(value))
    return details


def _quoted(text: str, word: str) -> str | None:
    match = re.search(rf'{word} "([^"]+)"', text)
    return match.group(1) if match else None


def _where(details: Mapping[str, Any]) -> str:
    host = details.get("host")
    port = details.get("port")
    if host is None:
        return "the server"
    host_text = f"[{host}]" if ":" in str(host) else str(host)
    return f"{host_text}:{port}" if port is not None else host_text


def _describe_pg(
    code: str, exc: BaseException, chain: list[BaseException], ctx: _Context
) -> tuple[str, dict[str, Any]]:
    details = _pg_params(ctx, exc)
    message = _clause(_one_line(_message(exc).split("\n", 1)[0]))
    if code in {"pg_refused", "pg_ipv6_localhost"}:
        addresses = _refused_addresses(chain)
        if addresses:
            details["host"], details["port"] = addresses[0]
            details["refused"] = [f"{h}:{p}" for h, p in addresses]
    if code == "pg_refused":
        if isinstance(exc, FileNotFoundError):
            return (
                "PostgreSQL's Unix socket does not exist at "
                f"{details.get('host', 'the socket directory')}: the server "
                "is not running, or uses another socket directory or port."
            ), details
        if details.get("sqlstate") == "57P03":
            return (
                f"PostgreSQL at {_where(details)} refused the connection "
                f"while starting up or shutting down: {message}."
            ), details
        return (
            f"The connection to PostgreSQL at {_where(details)} was "
            "refused: nothing listens there (server stopped, or a "
            "different host/port)."
        ), details
    if code == "pg_ipv6_localhost":
        configured = ctx.settings.get("host")
        via = (
            f"host {configured!r} resolved to ::1"
            if configured
            else "the address is the IPv6 loopback ::1"
        )
        return (
            f"The connection to [::1]:{details.get('port')} was refused: "
            f"{via}, and PostgreSQL listens on IPv4 (127.0.0.1) only."
        ), details
    if code == "pg_unreachable":
        hint = ""
        if str(details.get("host", "")).lower() == "localhost":
            hint = (
                " (with host 'localhost', also try 127.0.0.1: it may "
                "resolve to ::1 first)"
            )
        return (
            f"Connecting to PostgreSQL at {_where(details)} timed out with "
            "no answer: the port is filtered by a firewall, or the host is "
            f"down or unreachable{hint}."
        ), details
    if code == "pg_auth_failed":
        user = _quoted(message, "user") or _quoted(message, "role")
        if user:
            details["user"] = user
        return f"PostgreSQL refused the login: {message}.", details
    if code == "pg_database_missing":
        database = _quoted(message, "database")
        if database:
            details["database"] = database
        return f"PostgreSQL says: {message}.", details
    if code == "pg_permission_denied":
        return (
            f"The role{_role(details)} lacks a privilege: {message}."
        ), details
    if code == "pg_too_many_connections":
        scope = (
            "the role's CONNECTION LIMIT"
            if "for role" in message
            else "the server's max_connections"
        )
        return (
            f"PostgreSQL has no connection slot left ({scope} is "
            f"reached): {message}."
        ), details
    if code == "pgvector_not_installed":
        return (
            "The PostgreSQL server does not have the pgvector extension "
            f"installed: {message}."
        ), details
    if code == "pgvector_not_enabled":
        return (
            "pgvector is not enabled in database "
            f"{details.get('database', 'in use')}: {message}."
        ), details
    if code == "pg_query_timeout":
        if details.get("sqlstate") == "57014":
            return f"PostgreSQL cancelled a query: {message}.", details
        return (
            "A PostgreSQL query did not finish within the command timeout "
            "and was cancelled."
        ), details
    return message, details


def _role(details: Mapping[str, Any]) -> str:
    user = details.get("user")
    return f" {user}" if user else ""


def _attr(obj: object, name: str) -> Any:
    try:
        return getattr(obj, name, None)
    except Exception:  # httpx raises when the request was never set
        return None


def _http_params(exc: BaseException) -> dict[str, Any]:
    """Method, URL, host and port of the request an error is about.

    ``request`` (httpx, httpx2, openai, requests) or ``request_info``
    (aiohttp); the URL may be an object (httpx, yarl) or a string.
    """
    details: dict[str, Any] = {}
    request = _attr(exc, "request")
    if request is None:
        request = _attr(exc, "request_info")
    url = _attr(request, "url")
    if url is None:
        return details
    text = str(url)
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return details
    method = _attr(request, "method")
    if isinstance(method, str):
        details["method"] = method
    details["url"] = safe_url(text)
    details["host"] = parts.hostname
    details["port"] = (
        port if port is not None else 443 if parts.scheme == "https" else 80
    )
    return details


def _response_facts(
    exc: BaseException,
) -> tuple[str, str | None, dict[str, Any], Any]:
    """Reason phrase, provider message (and codes), headers of an answer.

    From the response an error holds (httpx, httpx2, openai, requests), or
    from the error itself (aiohttp keeps ``message`` and ``headers``).
    """
    response = _attr(exc, "response")
    reason = _attr(response, "reason_phrase") or _attr(response, "reason")
    if response is None:
        reason = _attr(exc, "message")
    headers = _attr(response, "headers")
    if headers is None:
        headers = _attr(exc, "headers")
    message, extra = (
        _provider_message(response) if response is not None else (None, {})
    )
    return str(reason or ""), message, extra, headers


def _describe_http(
    code: str, exc: BaseException, chain: list[BaseException], ctx: _Context
) -> tuple[str, dict[str, Any]]:
    details: dict[str, Any] = {}
    for member in chain:
        details = _http_params(member)
        if details:
            break
    if not details and ctx.settings.get("base_url"):
        base = str(ctx.settings["base_url"])
        details["url"] = safe_url(base)
        details["host"] = urlsplit(base).hostname
    target = (
        f"{details['method']} {details['url']}"
        if "method" in details
        else details.get("url", "the API")
    )
    host = details.get("host", "the API host")
    status = http_status(exc)
    if code.startswith("http_") and status is not None:
        reason, message, extra, headers = _response_facts(exc)
        details["status"] = status
        details.update(extra)
        if message:
            details["provider_message"] = message
        said = f", the provider says: {_clause(message)}" if message else ""
        answered = f"{host} answered {status} {reason}".rstrip()
        if code == "http_rate_limited":
            value = _attr(headers, "get")
            retry_after = parse_retry_after(
                value("Retry-After") if callable(value) else None
            )
            details["retry_after"] = retry_after
            wait = (
                f"Retry-After asks to wait {retry_after:g}s"
                if retry_after is not None
                else "no Retry-After given"
            )
            return f"{answered} to {target}{said}; {wait}.", details
        if code == "http_unauthorized":
            return (
                f"{answered} to {target}, the API key is missing, wrong or "
                f"not allowed{said}."
            ), details
        if code == "http_not_found":
            return (
                f"{answered} to {target}, no such path (check base_url){said}."
            ), details
        if code == "http_bad_request":
            return (
                f"{answered} to {target}, the provider says: "
                f"{_clause(message or 'no message')}."
            ), details
        return f"{answered} to {target}{said}.", details
    if code == "http_timeout":
        return (
            f"{target} got no answer in time from {host} "
            f"({type(exc).__name__})."
        ), details
    return _describe_network(code, exc, chain, details, target)


def _describe_network(
    code: str,
    exc: BaseException,
    chain: list[BaseException],
    details: dict[str, Any],
    target: str,
) -> tuple[str, dict[str, Any]]:
    host = details.get("host", "the host")
    if code == "dns_failure":
        return (
            f"The host name {host} does not resolve ({_one_line(str(exc))})."
        ), details
    if code == "tls_failure":
        return (
            f"The TLS connection to {host} failed: {_one_line(str(exc))}."
        ), details
    if code == "connection_refused":
        addresses = _refused_addresses(chain)
        if addresses:
            details["host"], details["port"] = addresses[0]
            details["refused"] = [f"{h}:{p}" for h, p in addresses]
        return (
            f"{target} was refused: nothing listens on {_where(details)}."
        ), details
    if code == "connection_reset":
        return (
            f"The connection to {host} was closed or reset by the peer "
            f"before an answer ({_error_text(exc)})."
        ), details
    return _error_text(exc), details


def _describe_circuit(
    exc: CircuitOpenError, ctx: _Context
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


def _policy_context(policy: str | object | None) -> _Context:
    if policy is None:
        return _Context(None, {}, None)
    if isinstance(policy, str):
        name: str | None = policy
        config: Any = None
        try:
            from sage_resilience import _registry  # noqa: PLC0415

            getter: Callable[[str], Any] = (
                getattr(_registry, "get_policy", None) or _registry.policy
            )
            config = getter(policy).config
        except Exception:  # the registry may not know it: no kind then
            config = None
    else:
        name = getattr(policy, "name", None)
        config = getattr(policy, "config", policy)
    kind = getattr(config, "kind", None)
    settings = getattr(config, "settings", None)
    return _Context(
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
    ctx = _policy_context(policy)
    return _diagnose(exc, ctx)


def _diagnose(exc: BaseException, ctx: _Context) -> Diagnosis:
    code, found, chain = _find(exc, ctx.kind)
    kind = ctx.kind or _infer_kind(chain)
    params: dict[str, Any]
    if code == "circuit_open" and isinstance(found, CircuitOpenError):
        explanation, params = _describe_circuit(found, ctx)
    elif code.startswith("pg") or (
        kind == "postgres" and code == "connection_reset"
    ):
        explanation, params = _describe_pg(code, found, chain, ctx)
        if code == "connection_reset":
            explanation = (
                f"The connection to PostgreSQL at {_where(params)} was "
                f"closed or reset ({_error_text(found)})."
            )
    elif code == "unknown":
        explanation = f"Not a failure diagnose recognises: {_error_text(exc)}."
        params = {}
    else:
        explanation, params = _describe_http(code, found, chain, ctx)
    details: dict[str, Any] = {"error": _error_text(found), "kind": kind}
    if ctx.policy is not None:
        details.setdefault("policy", ctx.policy)
    details.update(params)
    # The key the request carried, should the provider echo it back.
    known = secrets_of(exc)
    return Diagnosis(
        cause=code,
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
        cause=cause,
        explanation=redact(explanation),
        fix=redact(fix),
        details=_redact_details(params),
    )
