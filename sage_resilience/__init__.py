"""Per-dependency resilience policies for async services.

pybreaker keeps circuit state, tenacity retries; sage_resilience composes
them into one policy per dependency, configured in YAML with platform
overrides, and reports every state change as a structlog event::

    from sage_resilience import policy

    @policy("siliconflow_api")
    async def complete(prompt: str) -> str: ...
"""

from __future__ import annotations

from sage_resilience._config import (
    PolicyConfig,
    ResilienceConfig,
    load_config,
)
from sage_resilience._diagnosis.describe import Diagnosis, diagnose
from sage_resilience._policy import Policy
from sage_resilience._registry import configure, policy
from sage_resilience.exceptions import (
    BulkheadFullError,
    ChaosError,
    CircuitOpenError,
    ConfigError,
    UnknownPolicyError,
)
from sage_resilience.status import breaker_status, health

__all__ = [
    "BulkheadFullError",
    "ChaosError",
    "CircuitOpenError",
    "ConfigError",
    "Diagnosis",
    "Policy",
    "PolicyConfig",
    "ResilienceConfig",
    "UnknownPolicyError",
    "breaker_status",
    "configure",
    "diagnose",
    "health",
    "load_config",
    "policy",
]


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import version  # noqa: PLC0415

        return version("sage-resilience")
    msg = f"module 'sage_resilience' has no attribute {name!r}"
    raise AttributeError(msg)
