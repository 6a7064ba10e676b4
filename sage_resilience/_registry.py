"""The process-wide registry of policies: configure(), policy(), reload.

One locked registry. ``configure()`` builds every policy first and installs
them only when all were valid, so a bad configuration never half-applies;
calling it again is a hot reload in which surviving policies keep their
breaker (and so their circuit state).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from sage_resilience._attempt import Settings
from sage_resilience._config import (
    MAPPING_SOURCE,
    Declaration,
    ResilienceConfig,
)
from sage_resilience._events import logger
from sage_resilience._policy import Policy, RetryHooks
from sage_resilience.exceptions import ConfigError, UnknownPolicyError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import pybreaker

    from sage_resilience._config import PolicyConfig
    from sage_resilience._names import State

T = TypeVar("T")
P = ParamSpec("P")

Record = tuple[type[BaseException], ...] | None

__all__ = [
    "Part",
    "configure",
    "configured",
    "current_config",
    "declare",
    "declared",
    "get_policy",
    "lookup",
    "policies",
    "policy",
    "reset_registry",
    "resolve",
]

_lock = threading.RLock()
_policies: dict[str, Policy] = {}
_config: ResilienceConfig | None = None


@dataclass(slots=True, eq=False)
class Part:
    """One code declaration of a policy: a decorator's arguments.

    ``kind`` tells which part of the policy it declares (``"breaker"``,
    ``"retry"``); two parts of one kind for one name must agree.
    """

    kind: str
    declaration: Declaration
    _: KW_ONLY
    record: Record = None
    hooks: RetryHooks | None = None

    def same_arguments(self, other: Part) -> bool:
        """Whether *other* declares exactly the same."""
        return (
            self.declaration.settings == other.declaration.settings
            and self.record == other.record
            and self.hooks == other.hooks
        )


#: name -> kind -> the code's declaration; re-applied on every reload.
_declared: dict[str, dict[str, Part]] = {}


def _declarations() -> dict[str, list[Declaration]]:
    return {
        name: [part.declaration for part in parts.values()]
        for name, parts in _declared.items()
    }


def _record_of(name: str) -> Record:
    part = _declared.get(name, {}).get("breaker")
    return part.record if part is not None else None


def _hooks_of(name: str) -> RetryHooks | None:
    part = _declared.get(name, {}).get("retry")
    return part.hooks if part is not None else None


def configure(
    config: ResilienceConfig
    | Mapping[str, Any]
    | str
    | os.PathLike[str]
    | None = None,
    *,
    platform: str | None = None,
) -> ResilienceConfig:
    """Build the policies and install them as the process-wide registry.

    Calling it again is a hot reload: policies that survive keep their
    breaker state, changed settings apply at once (functions decorated
    earlier follow them), removed policies leave the registry. An invalid
    configuration raises and the one in force stays, untouched.

    Args:
        config: A :class:`ResilienceConfig`; a mapping in the YAML's shape
            (``{"version": 1, "policies": {...}}``, validated exactly as a
            file, messages naming the caller's file:line); a path to a
            YAML file; or None for ``SAGE_RESILIENCE_CONFIG``, else
            ``./resilience.yaml``, else the shipped default.
        platform: Overrides the detected platform when loading a file or
            a mapping.

    Returns:
        The configuration now in force.

    Raises:
        ConfigError: The configuration is invalid, every problem in its
            ``problems``, or the storage backend's extra is not installed
            (nothing was changed).

    .. versionadded:: 0.1.0
    """
    with _lock:
        source = (
            os.fspath(config)
            if isinstance(config, str | os.PathLike)
            else None
        )
        try:
            resolved = _load(config, platform)
            source = source or resolved.path
            resolved.require_extras()
            resolved = resolved.with_declarations(_declarations())
            staged = _stage(resolved)
        except ConfigError as exc:
            if _config is not None:
                logger.error(
                    "config_reload_failed",
                    path=source
                    or (exc.path if isinstance(config, Mapping) else None)
                    or _config.path,
                    error=str(exc),
                )
            raise
        _install(resolved, staged)
        logger.info(
            "config_loaded",
            path=resolved.path,
            platform=resolved.platform,
            policies=sorted(_policies),
        )
        pending = resolved.pending_env
        if pending:
            logger.warning(
                "config_env_pending",
                policies=sorted(pending),
                variables=sorted(v for vs in pending.values() for v in vs),
            )
        return resolved


def _load(
    config: ResilienceConfig
    | Mapping[str, Any]
    | str
    | os.PathLike[str]
    | None,
    platform: str | None,
) -> ResilienceConfig:
    """*config* resolved: as it is, from a mapping, or from a file."""
    from sage_resilience._config import (  # noqa: PLC0415
        load_config,
        load_config_mapping,
    )

    if isinstance(config, ResilienceConfig):
        return config
    if isinstance(config, Mapping):
        path, line = _caller()
        return load_config_mapping(
            config, source=path, line=line, platform=platform
        )
    return load_config(config, platform=platform)


def _caller() -> tuple[str, int | None]:
    """``(file, line)`` of the first frame outside this package."""
    package = str(Path(__file__).parent) + os.sep
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:  # pragma: no cover - called from the package itself
        return MAPPING_SOURCE, None
    return frame.f_code.co_filename, frame.f_lineno


def _install(
    resolved: ResilienceConfig,
    staged: dict[str, tuple[Policy | None, Settings | None]],
) -> None:
    """Make *resolved* the configuration in force (already validated)."""
    global _config  # noqa: PLW0603 - the registry is process-wide by design
    storage = _storage_name(resolved)
    new: dict[str, Policy] = {}
    for name, (existing, settings) in staged.items():
        if existing is None:
            new[name] = _make_policy(name, resolved, storage)
        else:
            assert settings is not None
            existing._retry_hooks = _hooks_of(name)
            existing._commit(settings, resolved.platform)
            new[name] = existing
    _policies.clear()
    _policies.update(new)
    _config = resolved


def _storage_name(config: ResilienceConfig) -> str:
    return config.storage.backend


def _stage(
    config: ResilienceConfig,
) -> dict[str, tuple[Policy | None, Settings | None]]:
    """Validate every policy of *config* against the registry; apply none."""
    staged: dict[str, tuple[Policy | None, Settings | None]] = {}
    for name, policy_config in config.policies.items():
        record = _record_of(name)
        existing = _policies.get(name)
        if existing is None:
            # Validate now by building the settings of the future policy.
            Settings(name, policy_config, record)
            staged[name] = (None, None)
        else:
            staged[name] = (existing, existing._prepare(policy_config, record))
    return staged


def _make_policy(name: str, config: ResilienceConfig, storage: str) -> Policy:
    from sage_resilience._storage import make_storage  # noqa: PLC0415

    made = Policy(
        name,
        config.policies[name],
        record=_record_of(name),
        platform=config.platform,
        storage=make_storage(config.storage, name),
        storage_name=storage,
    )
    made._retry_hooks = _hooks_of(name)
    return made


def policy(name: str) -> Policy:
    """The policy named *name* from the registry.

    Once a configuration is in force the name must be known. Before that
    (a module decorating at import time, an application that configures
    later, in a FastAPI lifespan say), a handle is returned that resolves
    the name at its first use; that use configures the registry from the
    default configuration if nothing configured it meanwhile.

    Raises:
        UnknownPolicyError: No policy has that name (the message lists the
            known names); for a handle, at its first use.

    .. versionadded:: 0.1.0
    """
    found = _policies.get(name)
    if found is not None:
        return found
    with _lock:
        if _config is None:
            return _LatePolicy(name)
        found = _policies.get(name)
        if found is None:
            raise UnknownPolicyError(name, _policies)
        return found


def resolve(name: str) -> Policy:
    """The registered policy *name*, configuring on first use (strict)."""
    found = _policies.get(name)
    if found is not None:
        return found
    with _lock:
        if _config is None:
            configure()
        found = _policies.get(name)
        if found is None:
            raise UnknownPolicyError(name, _policies)
        return found


class _LatePolicy(Policy):
    """A policy named before any configuration was in force.

    Every use looks the name up (one dict read once configured), so the
    handle follows ``configure()`` calls made after it was created.
    """

    def __init__(self, name: str) -> None:
        # No state of its own: everything is the registered policy's.
        self.name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(resolve(self.name), attribute)

    async def acall(
        self,
        fn: Callable[P, Awaitable[T]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """See :meth:`Policy.acall` (the name is resolved first)."""
        return await resolve(self.name).acall(fn, *args, **kwargs)

    def call(
        self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """See :meth:`Policy.call` (the name is resolved first)."""
        return resolve(self.name).call(fn, *args, **kwargs)

    @property
    def config(self) -> PolicyConfig:
        """See :attr:`Policy.config`."""
        return resolve(self.name).config

    @property
    def breaker(self) -> pybreaker.CircuitBreaker:
        """See :attr:`Policy.breaker`."""
        return resolve(self.name).breaker

    @property
    def state(self) -> State:
        """See :attr:`Policy.state`."""
        return resolve(self.name).state

    def __repr__(self) -> str:
        return f"<Policy {self.name!r} (resolved at first use)>"


get_policy = policy


def declare(name: str, part: Part) -> None:
    """Declare settings of *name* in code (the compat decorators).

    The code's settings sit between ``defaults:`` and ``policies.<name>``
    of the configuration and survive reloads. Declaring costs nothing
    until a configuration is in force: no file is read at import time, and
    a later ``configure()`` logs one ``config_loaded`` for everything.

    Raises:
        ConfigError: Another place declared the same part of *name* with
            different arguments (both places are named), or the settings
            are invalid (nothing is changed).
    """
    with _lock:
        parts = _declared.setdefault(name, {})
        previous = parts.get(part.kind)
        if previous is not None and not previous.same_arguments(part):
            here, there = part.declaration, previous.declaration
            if here.where != there.where:
                raise ConfigError(
                    f"declared at {there.where} with different arguments "
                    f"({_args(there)}; here: {_args(here)}); give one "
                    "place the arguments, or move them to the YAML",
                    path=here.path,
                    line=here.line,
                    key=f"policies.{name}",
                )
        parts[part.kind] = part
        if _config is None:
            return
        try:
            resolved = _config.with_declarations(_declarations())
            staged = _stage(resolved)
        except ConfigError:
            if previous is None:
                del parts[part.kind]
                if not parts:
                    del _declared[name]
            else:
                parts[part.kind] = previous
            raise
        _install(resolved, staged)


def _args(declaration: Declaration) -> str:
    shown = ", ".join(
        f"{k}={v!r}" for k, v in sorted(declaration.settings.items())
    )
    return shown or "no arguments"


def lookup(name: str) -> Policy | None:
    """The policy *name* if it is built already, else None (no locking)."""
    return _policies.get(name)


def declared(name: str) -> bool:
    """Whether code declared *name*."""
    return name in _declared


def policies() -> dict[str, Policy]:
    """A snapshot of the registry (configuring it on first use)."""
    with _lock:
        if _config is None:
            configure()
        return dict(_policies)


def configured() -> bool:
    """Whether the registry holds a configuration (never configures it).

    For callers on an event loop: when False, :func:`current_config` (or
    any first use) reads the configuration file.
    """
    return _config is not None


def current_config() -> ResilienceConfig:
    """The configuration in force (configuring it on first use)."""
    with _lock:
        if _config is None:
            configure()
        assert _config is not None
        return _config


def reset_registry() -> None:
    """Forget every policy and the configuration (for tests)."""
    global _config  # noqa: PLW0603
    with _lock:
        _policies.clear()
        _declared.clear()
        _config = None
