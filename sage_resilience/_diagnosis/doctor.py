"""``sage-resilience doctor``: check every configured dependency for real.

For each policy with a ``kind``, the doctor talks to the dependency the way
the application would and names what is wrong with :func:`diagnose`:

- ``postgres``: connect with asyncpg (``--dsn``, or ``settings`` host,
  port, database, user; the password from env ``PGPASSWORD`` or the
  variable named by ``settings.password_env``), then look for pgvector on
  the server (``pg_available_extensions``) and in the database
  (``pg_extension``).
- ``http``: ``GET {base_url}/models`` (``--url`` overrides ``base_url``)
  with the API key from the variable named by ``settings.api_key_env``
  (default ``SILICONFLOW_API_KEY``) as a bearer token when it is set.

Policies pointing at the same target are checked once and reported each.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from sage_resilience._diagnosis.describe import (
    NO_CONTEXT,
    Context,
    Diagnosis,
    diagnose_in,
    diagnosis_for,
)
from sage_resilience._diagnosis.http import safe_url
from sage_resilience._redact import redact

if TYPE_CHECKING:
    from collections.abc import Awaitable, Mapping

    from sage_resilience._config import ResilienceConfig

__all__ = [
    "DEFAULT_API_KEY_ENV",
    "Finding",
    "run_doctor",
]

#: Where the API key is read from when ``settings.api_key_env`` is not set.
DEFAULT_API_KEY_ENV = "SILICONFLOW_API_KEY"


@dataclasses.dataclass(frozen=True, slots=True)
class Finding:
    """The doctor's verdict on one policy's dependency.

    Attributes:
        policy: The policy's name.
        cause: ``"ok"`` when healthy, else a diagnosis code.
        explanation: One sentence, secrets redacted.
        fix: One sentence (empty when ``ok``).

    .. versionadded:: 0.1.0
    """

    policy: str
    cause: str
    explanation: str
    fix: str

    @property
    def ok(self) -> bool:
        """Whether the dependency is healthy."""
        return self.cause == "ok"

    def as_dict(self) -> dict[str, str]:
        """``{policy, cause, explanation, fix}`` for JSON output."""
        return dataclasses.asdict(self)

    def line(self) -> str:
        """``policy: cause - explanation / fix`` (no fix when ok)."""
        text = f"{self.policy}: {self.cause} - {self.explanation}"
        return f"{text} / {self.fix}" if self.fix else text


# -- targets ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class _PgTarget:
    dsn: str | None
    host: str | None
    port: int | None
    database: str | None
    user: str | None
    password_env: str | None

    def settings(self) -> dict[str, Any]:
        """What the explanation may name (never the password)."""
        if self.dsn is not None:
            return _dsn_settings(self.dsn)
        out: dict[str, Any] = {
            "host": self.host or os.environ.get("PGHOST") or "localhost",
            "port": self.port or int(os.environ.get("PGPORT") or 5432),
        }
        if self.database:
            out["database"] = self.database
        if self.user:
            out["user"] = self.user
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class _HttpTarget:
    base_url: str | None
    api_key_env: str


def _dsn_settings(dsn: str) -> dict[str, Any]:
    try:
        parts = urlsplit(dsn)
        port = parts.port
    except ValueError:
        return {}
    out: dict[str, Any] = {}
    if parts.hostname:
        out["host"] = parts.hostname
    if port is not None:
        out["port"] = port
    database = unquote(parts.path.lstrip("/"))
    if database:
        out["database"] = database
    if parts.username:
        out["user"] = unquote(parts.username)
    return out


def _int_or_none(value: Any) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _pg_target(settings: Mapping[str, Any], dsn: str | None) -> _PgTarget:
    if dsn is not None:
        return _PgTarget(dsn, None, None, None, None, None)
    return _PgTarget(
        dsn=None,
        host=_str_or_none(settings.get("host")),
        port=_int_or_none(settings.get("port")),
        database=_str_or_none(settings.get("database")),
        user=_str_or_none(settings.get("user")),
        password_env=_str_or_none(settings.get("password_env")),
    )


def _str_or_none(value: Any) -> str | None:
    return str(value) if value is not None else None


def _http_target(settings: Mapping[str, Any], url: str | None) -> _HttpTarget:
    return _HttpTarget(
        base_url=url or _str_or_none(settings.get("base_url")),
        api_key_env=str(settings.get("api_key_env") or DEFAULT_API_KEY_ENV),
    )


# -- postgres -----------------------------------------------------------------

_PG_PROBE = """
SELECT
  (SELECT default_version FROM pg_available_extensions
    WHERE name = 'vector') AS available,
  (SELECT extversion FROM pg_extension WHERE extname = 'vector')
    AS enabled,
  current_database() AS database,
  current_user AS "user",
  current_setting('server_version') AS server_version
"""


async def _check_postgres(target: _PgTarget, limit: float) -> Diagnosis:  # noqa: C901, PLR0911 - one finding per step of the check
    settings = target.settings()
    ctx = Context("postgres", settings, None)
    try:
        # Deferred: asyncpg is optional (the postgres extra).
        import asyncpg  # noqa: PLC0415
    except ImportError:
        return diagnosis_for(
            "unknown",
            "asyncpg is not installed, so PostgreSQL cannot be checked.",
            fix="Install it: pip install 'sage-resilience[postgres]'.",
        )
    kwargs: dict[str, Any] = {"timeout": limit}
    if target.dsn is not None:
        kwargs["dsn"] = target.dsn
    else:
        for key in ("host", "port", "database", "user"):
            value = getattr(target, key)
            if value is not None:
                kwargs[key] = value
        password = (
            os.environ.get(target.password_env)
            if target.password_env
            else None
        )
        if password is not None:
            kwargs["password"] = password
    try:
        conn = await asyncpg.connect(**kwargs)
    except Exception as exc:
        found = diagnose_in(exc, ctx)
        if found.cause == "pg_ipv6_localhost":
            return await _confirm_ipv6(found, limit)
        return found
    try:
        row = await conn.fetchrow(_PG_PROBE, timeout=limit)
    except Exception as exc:
        return diagnose_in(exc, ctx)
    finally:
        with contextlib.suppress(Exception):
            await conn.close(timeout=limit)
    assert row is not None
    where = _where(settings)
    database, user = row["database"], row["user"]
    version = row["server_version"]
    found_details = {
        **settings,
        "database": database,
        "user": user,
        "server_version": version,
        "major": str(version).split(".", 1)[0],
    }
    if row["available"] is None:
        return diagnosis_for(
            "pgvector_not_installed",
            f"PostgreSQL {version} at {where} does not have pgvector "
            "installed (no 'vector' in pg_available_extensions).",
            details=found_details,
        )
    if row["enabled"] is None:
        return diagnosis_for(
            "pgvector_not_enabled",
            f"pgvector {row['available']} is installed on PostgreSQL "
            f"{version} at {where} but not enabled in database "
            f"{database} (CREATE EXTENSION vector was not run there).",
            details=found_details,
        )
    return diagnosis_for(
        "ok",
        f"Connected to database {database} as {user} at {where} "
        f"(PostgreSQL {version}); pgvector {row['enabled']} is enabled.",
        details=found_details,
    )


async def _confirm_ipv6(found: Diagnosis, limit: float) -> Diagnosis:
    """Refused on ::1: does PostgreSQL answer on 127.0.0.1 instead?"""
    port = found.details.get("port")
    if not isinstance(port, int):
        return found
    try:
        async with asyncio.timeout(limit):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
    except (OSError, TimeoutError):
        return diagnosis_for(
            "pg_refused",
            f"The connection to PostgreSQL on port {port} was refused on "
            "::1 and on 127.0.0.1: nothing listens there (server "
            "stopped, or a different port).",
            details={**found.details, "host": "::1"},
        )
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return dataclasses.replace(
        found,
        explanation=(
            f"The connection to [::1]:{port} was refused while PostgreSQL "
            f"does answer on 127.0.0.1:{port}: it listens on IPv4 only "
            "and localhost resolved to ::1."
        ),
    )


def _where(settings: Mapping[str, Any]) -> str:
    host = str(settings.get("host", "localhost"))
    if ":" in host:
        host = f"[{host}]"
    port = settings.get("port")
    return f"{host}:{port}" if port is not None else host


# -- http ---------------------------------------------------------------------


async def _check_http(target: _HttpTarget, limit: float) -> Diagnosis:
    if not target.base_url:
        return diagnosis_for(
            "unknown",
            "No settings.base_url is configured, so there is nothing to "
            "check.",
            fix="Set settings.base_url of the policy, or pass --url.",
        )
    try:
        # Deferred: httpx is optional (the http extra).
        import httpx  # noqa: PLC0415
    except ImportError:
        return diagnosis_for(
            "unknown",
            "httpx is not installed, so the API cannot be checked.",
            fix="Install it: pip install 'sage-resilience[http]'.",
        )
    endpoint = target.base_url.rstrip("/") + "/models"
    key = os.environ.get(target.api_key_env) or None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    ctx = Context("http", {"base_url": target.base_url}, None)
    try:
        async with httpx.AsyncClient(timeout=limit) as client:
            response = await client.get(endpoint, headers=headers)
            response.raise_for_status()
    except Exception as exc:
        found = diagnose_in(exc, ctx)
        if found.cause == "http_unauthorized":
            sent = (
                f"the key from env {target.api_key_env} was sent"
                if key
                else f"env {target.api_key_env} is not set, so no key was sent"
            )
            found = dataclasses.replace(
                found, explanation=f"{found.explanation[:-1]} ({sent})."
            )
        return found
    listed = ""
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        models = response.json().get("data")
        if isinstance(models, list):
            listed = f"; {len(models)} model(s) listed"
    return diagnosis_for(
        "ok",
        f"GET {safe_url(endpoint)} answered {response.status_code}{listed}.",
        details={"url": safe_url(endpoint), "status": response.status_code},
    )


# -- running ------------------------------------------------------------------


async def _bounded(check: Awaitable[Diagnosis], limit: float) -> Diagnosis:
    """A last-resort bound, should a client ignore its own timeout."""
    try:
        async with asyncio.timeout(limit * 3 + 1):
            return await check
    except TimeoutError as exc:
        return diagnose_in(exc, NO_CONTEXT)


async def run_doctor(
    config: ResilienceConfig,
    *,
    dsn: str | None = None,
    url: str | None = None,
    timeout: float = 5.0,  # noqa: ASYNC109 - the public signature
) -> list[Finding]:
    """Check every policy with a ``kind`` against its real dependency.

    Args:
        config: A loaded configuration (:func:`load_config`).
        dsn: Overrides the connection settings of ``postgres`` policies.
        url: Overrides ``settings.base_url`` of ``http`` policies.
        timeout: Seconds allowed to each connection and request.

    Returns:
        One finding per checked policy, in configuration order; ``cause``
        is ``"ok"`` for a healthy dependency.

    .. versionadded:: 0.1.0
    """
    targets: dict[object, Awaitable[Diagnosis]] = {}
    assigned: list[tuple[str, object]] = []
    for name, policy in config.policies.items():
        target: _PgTarget | _HttpTarget
        if policy.kind == "postgres":
            target = _pg_target(policy.settings, dsn)
            if target not in targets:
                targets[target] = _check_postgres(target, timeout)
        elif policy.kind == "http":
            target = _http_target(policy.settings, url)
            if target not in targets:
                targets[target] = _check_http(target, timeout)
        else:
            continue
        assigned.append((name, target))
    keys = list(targets)
    results = await asyncio.gather(
        *(_bounded(targets[key], timeout) for key in keys)
    )
    verdicts = dict(zip(keys, results, strict=True))
    return [
        Finding(
            policy=name,
            cause=verdicts[target].cause,
            explanation=redact(verdicts[target].explanation),
            fix=redact(verdicts[target].fix),
        )
        for name, target in assigned
    ]
