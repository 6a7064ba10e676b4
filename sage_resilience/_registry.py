"""The process-wide registry of policies: configure(), policy(), reload.

One locked registry. ``configure()`` builds every policy first and installs
them only when all were valid, so a bad configuration never half-applies;
calling it again is a hot reload in which surviving policies keep their
breaker (and so their circuit state).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from sage_resilience._config import PolicyConfig, ResilienceConfig
from sage_resilience._events import logger
from sage_resilience._policy import Policy
from sage_resilience.exceptions import ConfigError, UnknownPolicyError

if TYPE_CHECKING:
    from sage_resilience._policy import _Settings

Record = tuple[type[BaseException], ...] | None

__all__ = [
    "configure",
    "current_config",
    "get_policy",
    "override",
    "policies",
    "policy",
    "reset_registry",
]

_lock = threading.RLock()
_policies: dict[str, Policy] = {}
_config: ResilienceConfig | None = None
#: Per-name overrides of the compat layer, re-applied on every reload.
_overrides: dict[str, tuple[dict[str, Any], Record]] = {}


def configure(
    config: ResilienceConfig | str | os.PathLike[str] | None = None,
    *,
    platform: str | None = None,
) -> ResilienceConfig:
    """Build the policies and install them as the process-wide registry.

    Calling it again is a hot reload: policies that survive keep their
    breaker state, changed settings apply at once (functions decorated
    earlier follow them), removed policies leave the registry. An invalid
    configuration raises and the one in force stays, untouched.

    Args:
        config: A :class:`ResilienceConfig`, a path to a YAML file, or None
            for ``SAGE_RESILIENCE_CONFIG`` / the shipped default.
        platform: Overrides the detected platform when loading a file.

    Returns:
        The configuration now in force.

    Raises:
        ConfigError: The configuration is invalid (nothing was changed).

    .. versionadded:: 0.1.0
    """
    global _config  # noqa: PLW0603 - the registry is process-wide by design
    with _lock:
        source: str | None = None
        try:
            if isinstance(config, ResilienceConfig):
                resolved = config
            else:
                source = None if config is None else os.fspath(config)
                from sage_resilience._config import (  # noqa: PLC0415
                    load_config,
                )

                resolved = load_config(config, platform=platform)
            staged = _stage(resolved)
        except ConfigError as exc:
            if _config is not None:
                logger.error(
                    "config_reload_failed",
                    path=source or (_config.path if _config else None),
                    error=str(exc),
                )
            raise
        storage = _storage_name(resolved)
        new: dict[str, Policy] = {}
        for name, (existing, settings) in staged.items():
            if existing is None:
                new[name] = _make_policy(name, resolved, storage)
            else:
                assert settings is not None
                existing._commit(settings, resolved.platform)
                new[name] = existing
        _policies.clear()
        _policies.update(new)
        _config = resolved
        logger.info(
            "config_loaded",
            path=resolved.path,
            platform=resolved.platform,
            policies=sorted(new),
        )
        return resolved


def _storage_name(config: ResilienceConfig) -> str:
    return config.storage.backend


def _stage(
    config: ResilienceConfig,
) -> dict[str, tuple[Policy | None, _Settings | None]]:
    """Validate every policy of *config* against the registry; apply none."""
    from sage_resilience._policy import _Settings  # noqa: PLC0415

    staged: dict[str, tuple[Policy | None, _Settings | None]] = {}
    for name in [*config.policies, *_overrides]:
        if name in staged:
            continue
        policy_config = _effective(name, config)
        record = _overrides.get(name, ({}, None))[1]
        existing = _policies.get(name)
        if existing is None:
            # Validate now by building the settings of the future policy.
            _Settings(name, policy_config, record)
            staged[name] = (None, None)
        else:
            existing._record = record
            staged[name] = (existing, existing._prepare(policy_config))
    return staged


def _effective(name: str, config: ResilienceConfig) -> PolicyConfig:
    """The configuration of *name* with the compat overrides applied."""
    base = config.policies.get(name) or PolicyConfig.model_validate({})
    override = _overrides.get(name)
    if override is None or not override[0]:
        return base
    return PolicyConfig.model_validate({**base.model_dump(), **override[0]})


def _make_policy(name: str, config: ResilienceConfig, storage: str) -> Policy:
    from sage_resilience._storage import make_storage  # noqa: PLC0415

    return Policy(
        name,
        _effective(name, config),
        record=_overrides.get(name, ({}, None))[1],
        platform=config.platform,
        storage=make_storage(config.storage, name),
        storage_name=storage,
    )


def policy(name: str) -> Policy:
    """The policy named *name* from the registry.

    The registry configures itself from the default configuration on first
    use.

    Raises:
        UnknownPolicyError: No policy has that name (the message lists the
            known names).

    .. versionadded:: 0.1.0
    """
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


get_policy = policy


def override(name: str, update: dict[str, Any], record: Record) -> Policy:
    """Override settings of *name* for this process (the compat layer).

    The override survives reloads; a policy the configuration does not
    define is built from the built-in defaults plus the override.
    """
    with _lock:
        if _config is None:
            configure()
        assert _config is not None
        previous = _overrides.get(name)
        _overrides[name] = (update, record)
        try:
            configure(_config)
        except Exception:
            if previous is None:
                del _overrides[name]
            else:
                _overrides[name] = previous
            raise
        return _policies[name]


def policies() -> dict[str, Policy]:
    """A snapshot of the registry (configuring it on first use)."""
    with _lock:
        if _config is None:
            configure()
        return dict(_policies)


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
        _overrides.clear()
        _config = None
