"""Per-dependency resilience policies for async services.

pybreaker keeps circuit state, tenacity retries; sage_resilience composes
them into one policy per dependency, configured in YAML, and reports every
state change as a structlog event.
"""

from __future__ import annotations

from sage_resilience._config import PolicyConfig, ResilienceConfig
from sage_resilience.exceptions import (
    BulkheadFullError,
    ChaosError,
    CircuitOpenError,
    ConfigError,
    UnknownPolicyError,
)

__all__ = [
    "BulkheadFullError",
    "ChaosError",
    "CircuitOpenError",
    "ConfigError",
    "PolicyConfig",
    "ResilienceConfig",
    "UnknownPolicyError",
]


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import version  # noqa: PLC0415

        return version("sage-resilience")
    msg = f"module 'sage_resilience' has no attribute {name!r}"
    raise AttributeError(msg)
