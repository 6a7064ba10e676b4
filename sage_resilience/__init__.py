"""Per-dependency resilience policies for async services.

pybreaker keeps circuit state, tenacity retries; sage_resilience composes
them into one policy per dependency, configured in YAML with platform
overrides, and reports every state change as a structlog event::

    from sage_resilience import policy

    @policy("siliconflow_api")
    async def complete(prompt: str) -> str: ...
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sage_resilience._config import (
        PolicyConfig,
        ResilienceConfig,
        load_config,
    )
    from sage_resilience._diagnosis.describe import Cause, Diagnosis, diagnose
    from sage_resilience._names import State
    from sage_resilience._policy import Policy
    from sage_resilience._registry import configure, policy
    from sage_resilience.exceptions import (
        BulkheadFullError,
        ChaosError,
        CircuitOpenError,
        ConfigError,
        UnknownPolicyError,
    )
    from sage_resilience.status import (
        HealthReport,
        StatusEntry,
        breaker_status,
        health,
    )

__all__ = [
    "BulkheadFullError",
    "Cause",
    "ChaosError",
    "CircuitOpenError",
    "ConfigError",
    "Diagnosis",
    "HealthReport",
    "Policy",
    "PolicyConfig",
    "ResilienceConfig",
    "State",
    "StatusEntry",
    "UnknownPolicyError",
    "breaker_status",
    "configure",
    "diagnose",
    "health",
    "load_config",
    "policy",
]


# Where each public name lives. They are imported on first use (PEP 562),
# so that importing a submodule, or ``sage-resilience --version``, does
# not load the engine and its dependencies.
_LAZY: dict[str, str] = {
    "PolicyConfig": "sage_resilience._config",
    "ResilienceConfig": "sage_resilience._config",
    "load_config": "sage_resilience._config",
    "Cause": "sage_resilience._diagnosis.describe",
    "Diagnosis": "sage_resilience._diagnosis.describe",
    "diagnose": "sage_resilience._diagnosis.describe",
    "State": "sage_resilience._names",
    "Policy": "sage_resilience._policy",
    "configure": "sage_resilience._registry",
    "policy": "sage_resilience._registry",
    "BulkheadFullError": "sage_resilience.exceptions",
    "ChaosError": "sage_resilience.exceptions",
    "CircuitOpenError": "sage_resilience.exceptions",
    "ConfigError": "sage_resilience.exceptions",
    "UnknownPolicyError": "sage_resilience.exceptions",
    "HealthReport": "sage_resilience.status",
    "StatusEntry": "sage_resilience.status",
    "breaker_status": "sage_resilience.status",
    "health": "sage_resilience.status",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version  # noqa: PLC0415

        return version("sage-resilience")
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'sage_resilience' has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
