"""asyncpg integration: connections, pools and queries under a policy.

Extra ``postgres``. Opening a pool or a connection goes through a policy
(``database_connection`` by default): each attempt is bounded by its
``timeout``, failures are retried and counted, and an open circuit refuses
at once with :class:`~sage_resilience.CircuitOpenError`::

    pool = await create_pool()                  # from the policy's settings
    db = guard(pool)                            # queries under memory_save
    await db.execute("INSERT INTO memories ...", ...)

Without a DSN the connection parameters come from the policy's
``settings`` (``host``, ``port``, ``database``, ``user``), so platform
overrides apply (``platforms.windows...settings.host: 127.0.0.1``). The
password never comes from the YAML: it is taken from the DSN, an explicit
``password=`` argument, the environment variable named by
``settings.password_env``, or else asyncpg's own ``PGPASSWORD`` /
``.pgpass`` look-up.

Query errors that are the query's fault (SQLSTATE classes 22 data, 23
constraint, 42 syntax or access rule, and 25P02 "current transaction is
aborted") pass through :func:`guard` uncounted and unretried; connection
failures, timeouts and every other SQLSTATE count. A statement on a
connection inside a transaction is never retried: the first error aborts
the transaction, so a retry could only fail with 25P02 and hide it.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, Final

from sage_resilience._extras import needs_extra

with needs_extra("sage_resilience.postgres", "asyncpg", "postgres"):
    import asyncpg

from sage_resilience._attempt import acall_once
from sage_resilience._policy import Policy
from sage_resilience._registry import policy as _registered
from sage_resilience.exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Guarded", "connect", "connect_kwargs", "create_pool", "guard"]

#: ``settings`` keys passed on to asyncpg as they are.
_SETTINGS_KEYS: Final = ("host", "port", "database", "user")


def _resolve(policy: Policy | str) -> Policy:
    return policy if isinstance(policy, Policy) else _registered(policy)


def connect_kwargs(
    policy: Policy | str = "database_connection",
    *,
    environ: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The asyncpg connection arguments a policy's ``settings`` describe.

    ``host``, ``port``, ``database`` and ``user`` are taken as they are;
    ``password`` is read from the environment variable named by
    ``settings.password_env`` when that variable is set (otherwise asyncpg
    falls back to ``PGPASSWORD`` and ``~/.pgpass``); the policy's
    ``timeout`` becomes asyncpg's connect ``timeout``.

    Args:
        policy: A policy, or the name of one in the registry.
        environ: Where to read ``password_env`` (``os.environ`` by default).

    Returns:
        Keyword arguments for ``asyncpg.connect``/``create_pool``.

    Raises:
        ConfigError: ``settings`` holds a password (never read from YAML).

    .. versionadded:: 0.1.0
    """
    p = _resolve(policy)
    settings = p.config.settings
    if "password" in settings:
        raise ConfigError(
            "passwords are never read from the configuration; set env "
            "PGPASSWORD, or name a variable in settings.password_env",
            key=f"policies.{p.name}.settings.password",
        )
    kwargs: dict[str, Any] = {
        key: settings[key]
        for key in _SETTINGS_KEYS
        if settings.get(key) is not None
    }
    if "port" in kwargs:
        kwargs["port"] = int(kwargs["port"])
    env_name = settings.get("password_env")
    if env_name:
        password = (os.environ if environ is None else environ).get(
            str(env_name)
        )
        if password is not None:
            kwargs["password"] = password
    if p.config.timeout is not None:
        kwargs["timeout"] = p.config.timeout
    return kwargs


def _arguments(
    p: Policy, dsn: str | None, given: dict[str, Any]
) -> dict[str, Any]:
    """The arguments for asyncpg: explicit ones win over the policy's."""
    if dsn is not None:
        # A DSN says everything; the policy adds only its timeout.
        base = (
            {"timeout": p.config.timeout}
            if p.config.timeout is not None
            else {}
        )
        return {**base, "dsn": dsn, **given}
    return {**connect_kwargs(p), **given}


async def _open_pool(**kwargs: Any) -> Any:
    # A failed or cancelled (policy timeout) attempt must not leave open
    # connections behind: recent asyncpg closes them itself, older ones
    # are told to.
    pool = asyncpg.create_pool(**kwargs)
    try:
        return await pool
    except BaseException:
        with contextlib.suppress(Exception):
            pool.terminate()
        raise


async def create_pool(
    dsn: str | None = None,
    *,
    policy: Policy | str = "database_connection",
    **asyncpg_kwargs: Any,
) -> Any:
    """Create an ``asyncpg.Pool`` under *policy*.

    Opening the pool's first ``min_size`` connections is one attempt:
    bounded by the policy's ``timeout``, retried on counted failures
    (refused, timed out, reset...), counted by the breaker. Connections
    the pool opens later are not under the policy; wrap queries with
    :func:`guard` for that.

    Args:
        dsn: A ``postgresql://`` URL; None builds the parameters from the
            policy's ``settings`` (see :func:`connect_kwargs`).
        policy: A policy, or the name of one in the registry.
        **asyncpg_kwargs: Passed to ``asyncpg.create_pool``; they win over
            the DSN and the settings.

    Returns:
        The ready ``asyncpg.Pool``.

    Raises:
        CircuitOpenError: The circuit refused; no connection was tried.
        ConfigError: ``settings`` holds a password.
        TimeoutError: The last attempt exceeded the policy's timeout.
        OSError: The last connection error (``ConnectionRefusedError``
            when nothing listens), retries exhausted.
        asyncpg.PostgresError: The server's refusal (wrong password,
            unknown database...), retries exhausted.

    .. versionadded:: 0.1.0
    """
    p = _resolve(policy)
    return await p.acall(_open_pool, **_arguments(p, dsn, asyncpg_kwargs))


async def connect(
    dsn: str | None = None,
    *,
    policy: Policy | str = "database_connection",
    **kwargs: Any,
) -> Any:
    """Open one ``asyncpg.Connection`` under *policy*.

    Args:
        dsn: A ``postgresql://`` URL; None builds the parameters from the
            policy's ``settings`` (see :func:`connect_kwargs`).
        policy: A policy, or the name of one in the registry.
        **kwargs: Passed to ``asyncpg.connect``; they win over the DSN and
            the settings.

    Returns:
        The connection.

    Raises:
        CircuitOpenError: The circuit refused; no connection was tried.
        ConfigError: ``settings`` holds a password.
        TimeoutError: The last attempt exceeded the policy's timeout.
        OSError: The last connection error, retries exhausted.
        asyncpg.PostgresError: The server's refusal, retries exhausted.

    .. versionadded:: 0.1.0
    """
    p = _resolve(policy)
    return await p.acall(asyncpg.connect, **_arguments(p, dsn, kwargs))


class Guarded:
    """A pool or connection whose queries run under a policy.

    ``execute``, ``executemany``, ``fetch``, ``fetchrow`` and ``fetchval``
    go through the policy (breaker, per-attempt ``timeout``, retries);
    everything else (``acquire``, ``transaction``, ``close``...) is the
    wrapped object's own, unguarded.

    Retries re-run the statement: a write retried after a lost connection
    may have been applied once already. Make writes idempotent (``ON
    CONFLICT``) or give their policy ``retry.attempts: 1``. On a
    connection inside a transaction (``is_in_transaction()``) a statement
    gets one attempt only: its own error is raised, counted or not by its
    SQLSTATE; retry the whole transaction instead.

    Attributes:
        target: The wrapped pool or connection.

    .. versionadded:: 0.1.0
    """

    __slots__ = ("_policy", "target")

    def __init__(self, target: Any, policy: Policy | str) -> None:
        self.target: Any = target
        self._policy = policy

    @property
    def policy(self) -> Policy:
        """The policy queries run under (resolved now if given by name)."""
        return _resolve(self._policy)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)

    def __repr__(self) -> str:
        name = (
            self._policy
            if isinstance(self._policy, str)
            else self._policy.name
        )
        return f"<Guarded {self.target!r} policy={name!r}>"

    async def _run(self, method: Any, *args: Any, **kwargs: Any) -> Any:
        """*method* under the policy; one attempt inside a transaction."""
        p = self.policy
        if _in_transaction(self.target):
            return await acall_once(p, method, *args, **kwargs)
        return await p.acall(method, *args, **kwargs)

    async def execute(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """``execute`` under the policy."""
        return await self._run(self.target.execute, query, *args, **kwargs)

    async def executemany(self, command: str, args: Any, **kwargs: Any) -> Any:
        """``executemany`` under the policy."""
        return await self._run(
            self.target.executemany, command, args, **kwargs
        )

    async def fetch(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """``fetch`` under the policy."""
        return await self._run(self.target.fetch, query, *args, **kwargs)

    async def fetchrow(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """``fetchrow`` under the policy."""
        return await self._run(self.target.fetchrow, query, *args, **kwargs)

    async def fetchval(self, query: str, *args: Any, **kwargs: Any) -> Any:
        """``fetchval`` under the policy."""
        return await self._run(self.target.fetchval, query, *args, **kwargs)


def _in_transaction(target: Any) -> bool:
    """Whether *target* is a connection inside a transaction block.

    Pools hand out connections outside any transaction, and have no such
    method; a connection that cannot tell is treated as outside one.
    """
    check = getattr(target, "is_in_transaction", None)
    if not callable(check):
        return False
    try:
        return bool(check())
    except Exception:
        return False


def guard(target: Any, policy: Policy | str = "memory_save") -> Guarded:
    """Run a pool's or connection's queries under *policy*.

    Args:
        target: An ``asyncpg.Pool`` or ``asyncpg.Connection`` (anything
            with asyncpg's query methods).
        policy: A policy, or the name of one in the registry (looked up on
            every query, so it follows reloads).

    Returns:
        A :class:`Guarded` proxy.

    .. versionadded:: 0.1.0
    """
    return Guarded(target, policy)
